//! The page shell and the small pieces every page uses: breadcrumbs, flash
//! messages, status badges, times, empty states, errors.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};

use super::session::{Post, Session};
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

/// What a page shows above its body: `?notice=<code>` (and `&n=<count>`)
/// left by a redirect after a form post, or an error the handler renders in
/// place. Notices come from [`Notice`]'s fixed set, so a link can never
/// make a page say something of its author's choosing.
#[derive(Default, serde::Deserialize)]
pub struct Flash {
    #[serde(skip)]
    pub error: Option<String>,
    #[serde(default)]
    notice: Option<String>,
    /// A count (text: pages flatten this into their own query, where serde
    /// sees every value as a string).
    #[serde(default)]
    n: Option<String>,
}

impl Flash {
    pub fn error(text: impl Into<String>) -> Self {
        Flash { error: Some(text.into()), ..Flash::default() }
    }

    fn render(&self) -> Markup {
        let count = self.n.as_deref().and_then(|n| n.parse().ok()).unwrap_or(0);
        let notice = self.notice.as_deref().and_then(Notice::from_code).map(|n| n.text(count));
        html! {
            @if let Some(e) = &self.error { div.flash.error role="alert" { (e) } }
            @if let Some(n) = notice { div.flash.notice role="status" { (n) } }
        }
    }
}

/// The outcomes a form post reports after its redirect.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    AppCreated,
    EndpointCreated,
    EndpointDisabled,
    EndpointEnabled,
    SettingsSaved,
    PolicySaved,
    HeadersSaved,
    SecretRotated,
    /// `n` failed messages are being sent again.
    ReplayStarted,
    /// Sent again to `n` endpoints.
    Resent,
    /// The content of `n` messages was erased (by tag).
    Erased,
    /// A blocked ordering key moved on past its failed message.
    KeySkipped,
    /// `n` messages missed while the endpoint was disabled are being sent.
    MissedSent,
    /// The offer to send what the endpoint missed while disabled is gone.
    MissedDismissed,
}

impl Notice {
    const ALL: [Notice; 14] = [
        Notice::AppCreated,
        Notice::EndpointCreated,
        Notice::EndpointDisabled,
        Notice::EndpointEnabled,
        Notice::SettingsSaved,
        Notice::PolicySaved,
        Notice::HeadersSaved,
        Notice::SecretRotated,
        Notice::ReplayStarted,
        Notice::Resent,
        Notice::Erased,
        Notice::KeySkipped,
        Notice::MissedSent,
        Notice::MissedDismissed,
    ];

    fn code(self) -> &'static str {
        match self {
            Notice::AppCreated => "app-created",
            Notice::EndpointCreated => "endpoint-created",
            Notice::EndpointDisabled => "endpoint-disabled",
            Notice::EndpointEnabled => "endpoint-enabled",
            Notice::SettingsSaved => "settings-saved",
            Notice::PolicySaved => "policy-saved",
            Notice::HeadersSaved => "headers-saved",
            Notice::SecretRotated => "secret-rotated",
            Notice::ReplayStarted => "replay-started",
            Notice::Resent => "resent",
            Notice::Erased => "erased",
            Notice::KeySkipped => "key-skipped",
            Notice::MissedSent => "missed-sent",
            Notice::MissedDismissed => "missed-dismissed",
        }
    }

    fn from_code(code: &str) -> Option<Notice> {
        Notice::ALL.into_iter().find(|n| n.code() == code)
    }

    pub fn text(self, n: u64) -> String {
        match self {
            Notice::AppCreated => "Application created.".into(),
            Notice::EndpointCreated => "Endpoint created.".into(),
            Notice::EndpointDisabled => "Endpoint disabled: nothing more will be sent to it.".into(),
            Notice::EndpointEnabled => "Endpoint enabled.".into(),
            Notice::SettingsSaved => "Settings saved.".into(),
            Notice::PolicySaved => "Retry policy saved.".into(),
            Notice::HeadersSaved => "Headers saved.".into(),
            Notice::SecretRotated => "Secret rotated; the previous one keeps signing for 24 hours.".into(),
            Notice::ReplayStarted => format!("{n} failed messages are being sent again."),
            Notice::Resent => format!("Sent again to {n} {}.", if n == 1 { "endpoint" } else { "endpoints" }),
            Notice::Erased => format!(
                "Erased the content of {n} {} (payloads and response bodies); Background tasks has the details.",
                if n == 1 { "message" } else { "messages" }
            ),
            Notice::KeySkipped => {
                "Key skipped: its next message goes now; the failed one stays failed.".into()
            }
            Notice::MissedSent => format!(
                "{n} missed {} being sent, at the endpoint's rate limit.",
                if n == 1 { "message is" } else { "messages are" }
            ),
            Notice::MissedDismissed => {
                "Dismissed: what it missed while disabled will not be offered again.".into()
            }
        }
    }
}

/// Answer a post. Success: back to `to` with the notice's code (and count)
/// in the query. Failure: the error on a page of its own, with a link back,
/// so nothing the user typed ever travels in a `Location` header. The page
/// script gets both as plain text.
pub fn done(post: &Post, to: &str, outcome: Result<(Notice, u64), String>) -> Response {
    match (post.is_async, outcome) {
        (true, Ok((notice, n))) => notice.text(n).into_response(),
        (true, Err(error)) => (StatusCode::CONFLICT, error).into_response(),
        (false, Ok((notice, n))) => {
            let sep = if to.contains('?') { '&' } else { '?' };
            let counted = if n > 0 { format!("&n={n}") } else { String::new() };
            redirect(&format!("{to}{sep}notice={}{counted}", notice.code()))
        }
        (false, Err(error)) => {
            let body = html! {
                h1 { "That did not work" }
                p { a.button.secondary href=(to) { "Back" } }
            };
            let page = page("Not done", Some(&post.session), &[], &Flash::error(error), body);
            (StatusCode::UNPROCESSABLE_ENTITY, page).into_response()
        }
    }
}

/// A 303 to a path of ours; never a panic, whatever the path holds (a path
/// that is not a valid header value goes to the applications page).
pub fn redirect(to: &str) -> Response {
    match axum::http::HeaderValue::try_from(to) {
        Ok(_) => Redirect::to(to).into_response(),
        Err(_) => Redirect::to("/apps").into_response(),
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
        let flash = Flash::error("<script>alert(1)</script>");
        let html = flash.render().into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"));
    }

    #[test]
    fn notices_come_from_a_fixed_set() {
        let from_query = |q: &str| serde_urlencoded::from_str::<Flash>(q).unwrap().render().into_string();
        assert!(from_query("notice=headers-saved").contains("Headers saved."));
        assert!(from_query("notice=replay-started&n=3").contains("3 failed messages are being sent again."));
        let forged = from_query("notice=Your+account+is+locked&error=call+%2B1-555");
        assert!(!forged.contains("locked") && !forged.contains("555"), "{forged}");
        for n in Notice::ALL {
            assert_eq!(Notice::from_code(n.code()), Some(n));
        }
    }
}
