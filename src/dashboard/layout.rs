//! The page shell and the small pieces every page uses: breadcrumbs, flash
//! messages, status badges, times, empty states, errors.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::session::Session;
use crate::domain::model::DeliveryStatus;
use crate::domain::time::Timestamp;
use crate::service::ServiceError;
use crate::store::StoreError;

pub struct Crumb<'a>(pub &'a str, pub Option<String>);

/// A whole page.
pub fn page(title: &str, session: Option<&Session>, crumbs: &[Crumb], flash: &Flash, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Hookline" }
                link rel="stylesheet" href="/assets/app.css";
            }
            body {
                header.top {
                    a.brand href="/apps" { "Hookline" }
                    @if let Some(s) = session {
                        div.who {
                            span { (s.describe()) }
                            form method="post" action="/logout" {
                                input type="hidden" name="_csrf" value=(s.csrf());
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main {
                    @if !crumbs.is_empty() {
                        nav.crumbs aria-label="Breadcrumb" {
                            @for (i, Crumb(label, href)) in crumbs.iter().enumerate() {
                                @if i > 0 { span.sep { "›" } }
                                @match href {
                                    Some(h) => a href=(h) { (label) },
                                    None => span { (label) },
                                }
                            }
                        }
                    }
                    (flash.render())
                    (body)
                }
                div #toast role="status" {}
                script src="/assets/app.js" defer {}
            }
        }
    }
}

/// `?error=` / `?notice=` left by a redirect after a form post.
#[derive(Default, serde::Deserialize)]
pub struct Flash {
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub notice: Option<String>,
}

impl Flash {
    fn render(&self) -> Markup {
        html! {
            @if let Some(e) = &self.error { div.flash.error role="alert" { (e) } }
            @if let Some(n) = &self.notice { div.flash.notice role="status" { (n) } }
        }
    }
}

pub fn status_badge(status: DeliveryStatus) -> Markup {
    let text = status.as_str();
    html! { span class={"badge st-" (text)} { (text) } }
}

pub fn enabled_badge(disabled: bool) -> Markup {
    if disabled {
        html! { span.badge.st-disabled { "disabled" } }
    } else {
        html! { span.badge.st-enabled { "enabled" } }
    }
}

/// A status code, coloured by class; 0 means no response.
pub fn code(c: Option<u16>) -> Markup {
    match c {
        None => html! { span.muted { "—" } },
        Some(0) => html! { span.code-0 title="No response (timeout, connection or TLS error)" { "none" } },
        Some(c) => html! { span class={"mono code-" (c / 100)} { (c) } },
    }
}

/// A time shown relative to `now` ("in 4 min"), exact on hover; the script
/// keeps the relative text fresh.
pub fn time(t: Timestamp, now: Timestamp) -> Markup {
    let exact = t.to_rfc3339();
    html! { time datetime=(exact) title=(exact) { (relative(t, now)) } }
}

pub fn opt_time(t: Option<Timestamp>, now: Timestamp) -> Markup {
    match t {
        Some(t) => time(t, now),
        None => html! { span.muted { "—" } },
    }
}

pub fn relative(t: Timestamp, now: Timestamp) -> String {
    let (secs, future) =
        if t >= now { (t.since(now).as_secs(), true) } else { (now.since(t).as_secs(), false) };
    let text = match secs {
        0..=4 => return "now".into(),
        5..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min", (secs + 30) / 60),
        3600..=86_399 => format!("{} h", (secs + 1800) / 3600),
        _ => format!("{} d", (secs + 43_200) / 86_400),
    };
    if future { format!("in {text}") } else { format!("{text} ago") }
}

pub fn empty(title: &str, hint: Markup) -> Markup {
    html! { div.empty { strong { (title) } (hint) } }
}

/// JSON pretty-printed for people; raw text if it is not JSON.
pub fn pretty_json(bytes: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// A page-level failure, rendered as a page.
#[derive(Debug)]
pub enum PageError {
    NotFound(&'static str),
    /// Anything else: logged, and a 500 page.
    Failed(ServiceError),
}

impl From<ServiceError> for PageError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound => PageError::NotFound("Page"),
            other => PageError::Failed(other),
        }
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        ServiceError::from(e).into()
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, detail) = match &self {
            PageError::NotFound(what) => (
                StatusCode::NOT_FOUND,
                format!("{what} not found"),
                "It does not exist, or this sign-in cannot see it.".to_owned(),
            ),
            PageError::Failed(e) => {
                tracing::error!(error = %e, "dashboard page failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong".into(),
                    "The error was logged; try again.".into(),
                )
            }
        };
        let body = html! {
            h1 { (title) }
            p { (detail) }
            p { a href="/apps" { "Back to applications" } }
        };
        (status, page(&title, None, &[], &Flash::default(), body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn relative_times() {
        let now = Timestamp::from_millis(1_000_000_000);
        assert_eq!(relative(now, now), "now");
        assert_eq!(relative(now.plus(Duration::from_secs(240)), now), "in 4 min");
        assert_eq!(relative(now.minus(Duration::from_secs(3 * 3600)), now), "3 h ago");
        assert_eq!(relative(now.plus(Duration::from_secs(30)), now), "in 30 s");
        assert_eq!(relative(now.minus(Duration::from_secs(2 * 86_400)), now), "2 d ago");
    }

    #[test]
    fn user_text_is_escaped() {
        let flash = Flash { error: Some("<script>alert(1)</script>".into()), notice: None };
        let html = flash.render().into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"));
    }
}
