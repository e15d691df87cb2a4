//! Erasure by subject tag: a form on an application's page (its messages)
//! and, for administrators, on the applications list (every application).
//! Both call the same service operation as the API's `expunge-by-tag`.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::Dash;
use super::layout::{Notice, PageError, done};
use super::session::Post;
use crate::domain::model::{App, Task};
use crate::domain::validate;

/// The form, posting to `action`; `scope` says what it erases in.
pub fn form(action: &str, csrf: &str, scope: &str) -> Markup {
    html! {
        h2 { "Erase by tag" }
        form.card method="post" action=(action) {
            input type="hidden" name="_csrf" value=(csrf);
            p.small.muted { "Erases the payload and every response body of " (scope) " tagged with this subject. The messages stay, with their tags, so the log shows what was erased." }
            div.row {
                div.grow { label for="erase_tag" { "Tag" } input #erase_tag type="text" name="tag" pattern="[a-zA-Z0-9\\-_.]+" required; }
                div { button.danger type="submit" { "Erase content" } }
            }
        }
    }
}

/// One application's messages.
pub async fn in_app(State(d): State<Dash>, Path(app_ref): Path<String>, post: Post) -> Response {
    // As `apps::load` (which renders this form, so it is not used here).
    let app = match d.service.store.get_app(&app_ref).await {
        Ok(Some(app)) if post.session.sees(&app.id) => app,
        Ok(_) => return PageError::NotFound("Application").into_response(),
        Err(e) => return PageError::from(e).into_response(),
    };
    erase(&d, &post, Some(&app), &format!("/apps/{}", app.id)).await
}

/// Every application's messages (administrators only).
pub async fn everywhere(State(d): State<Dash>, post: Post) -> Response {
    if !post.session.is_admin() {
        return done(&post, "/apps", Err("Only administrators can erase across applications.".into()));
    }
    erase(&d, &post, None, "/apps").await
}

async fn erase(d: &Dash, post: &Post, app: Option<&App>, back: &str) -> Response {
    let tag = post.get("tag").unwrap_or_default().trim().to_owned();
    if let Err(e) = validate::name(&tag, validate::CHANNEL_MAX) {
        return done(post, back, Err(format!("Tag {e}")));
    }
    match d.service.expunge_by_tag(app, &tag).await {
        Ok(task) => done(post, back, Ok((Notice::Erased, count(&task, "messages")))),
        Err(e) => done(post, back, Err(e.to_string())),
    }
}

/// One of the erasure task's counts (messages, payloads, responses).
fn count(task: &Task, what: &str) -> u64 {
    task.data.get(what).and_then(serde_json::Value::as_u64).unwrap_or(0)
}
