//! The sign-in pages: the login form and what it posts to, signing out, and
//! the customer portal's landing page. The session they start or end is
//! `session.rs`'s.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::Dash;
use super::layout::{Flash, page};
use super::session::{Post, SESSION_TTL, cleared_cookie, same_origin, session_cookie};
use crate::domain::model::Scope;

/// Only same-origin paths are followed after sign-in: one leading `/`, no
/// `//` or backslash anywhere (browsers read `/\\host` and `/<TAB>/host` as
/// another site), and no control or whitespace character, whether written
/// plainly or percent-encoded. Anything else goes to the default page.
fn safe_next(next: Option<&str>) -> Option<&str> {
    next.filter(|n| {
        let decoded: Vec<u8> = percent_decode(n.as_bytes());
        [n.as_bytes(), decoded.as_slice()].iter().all(|s| {
            s.first() == Some(&b'/')
                && !s.windows(2).any(|w| w == b"//")
                && !s.iter().any(|b| *b == b'\\' || b.is_ascii_control() || b.is_ascii_whitespace())
                && std::str::from_utf8(s).is_ok_and(|t| !t.chars().any(char::is_whitespace))
        })
    })
}

fn percent_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match (s[i], s.get(i + 1).copied().and_then(hex), s.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 3;
            }
            (b, ..) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

#[derive(Deserialize, Default)]
pub struct LoginQuery {
    #[serde(default)]
    next: Option<String>,
}

pub async fn login_page(Query(q): Query<LoginQuery>) -> Markup {
    login_form(q.next.as_deref(), None)
}

fn login_form(next: Option<&str>, error: Option<String>) -> Markup {
    let body = html! {
        div.card.login {
            h1 { "Sign in to Hookline" }
            p.muted.small { "Paste an API token: the admin token printed when the server first started, or one made with "
                code { "hookline token create" } "." }
            form method="post" action="/login" {
                input type="hidden" name="next" value=(next.unwrap_or("/apps"));
                label for="token" { "API token" }
                input #token type="password" name="token" autocomplete="off" required autofocus;
                p { button type="submit" { "Sign in" } }
            }
        }
    };
    let flash = error.map(Flash::error).unwrap_or_default();
    page("Sign in", None, &[], &flash, body)
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    #[serde(default)]
    next: Option<String>,
}

pub async fn login(State(d): State<Dash>, headers: HeaderMap, Form(form): Form<LoginForm>) -> Response {
    if !same_origin(&headers) {
        return (StatusCode::FORBIDDEN, "Cross-origin form posts are refused.").into_response();
    }
    let scope = match d.service.authenticate(form.token.trim()).await {
        Ok(Some(scope)) => scope,
        Ok(None) => {
            let page =
                login_form(form.next.as_deref(), Some("That token is not valid (or has expired).".into()));
            return (StatusCode::UNAUTHORIZED, page).into_response();
        }
        Err(e) => {
            tracing::error!(error = %e, "sign-in failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "Sign-in failed; try again.").into_response();
        }
    };
    let session = match d.service.create_token(&scope, Some(SESSION_TTL)).await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "could not create a session");
            return (StatusCode::INTERNAL_SERVER_ERROR, "Sign-in failed; try again.").into_response();
        }
    };
    let home = match &scope {
        Scope::Admin => "/apps".to_owned(),
        Scope::App(id) => format!("/apps/{id}"),
    };
    let to = safe_next(form.next.as_deref()).filter(|n| scope == Scope::Admin || n.starts_with(&home));
    ([(SET_COOKIE, session_cookie(&session, d.secure))], Redirect::to(to.unwrap_or(&home))).into_response()
}

pub async fn logout(State(d): State<Dash>, post: Post) -> Response {
    if let Err(e) = d.service.end_session(post.session.token()).await {
        tracing::warn!(error = %e, "could not end a session");
    }
    ([(SET_COOKIE, cleared_cookie(d.secure))], Redirect::to("/login")).into_response()
}

/// The customer portal link (`/portal#token=…`): the script hands the token
/// from the fragment to this form, which signs in like anyone else.
pub async fn portal() -> Markup {
    let body = html! {
        div.card.login {
            h1 { "Opening your webhooks…" }
            form #portal-login method="post" action="/login" {
                input type="hidden" name="token";
                noscript { p { "This link needs JavaScript; or sign in with your token below." } }
            }
            p.small.muted { "If nothing happens, the link may have expired. " a href="/login" { "Sign in" } }
        }
    };
    page("Portal", None, &[], &Flash::default(), body)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever `next` holds, sign-in follows only a same-origin path
        /// that is a valid `Location` (so never a 5xx, never off-site).
        #[test]
        fn next_is_followed_only_when_safe(next in "(/|%|\\\\|\\PC|[\\t\\n\\r\\x00\\x1b\\x7f ]){0,24}") {
            if let Some(n) = safe_next(Some(&next)) {
                prop_assert!(n.starts_with('/') && !n.contains("//") && !n.contains('\\'));
                prop_assert!(!n.chars().any(|c| c.is_control() || c.is_whitespace()));
                prop_assert!(axum::http::HeaderValue::try_from(n).is_ok());
            }
        }
    }

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(safe_next(Some("/apps/x")), Some("/apps/x"));
        assert_eq!(safe_next(Some("//evil.example")), None);
        assert_eq!(safe_next(Some("https://evil.example")), None);
        assert_eq!(safe_next(Some("/\\evil.example")), None);
        assert_eq!(safe_next(Some("/apps?page=2")), Some("/apps?page=2"));
        for bad in [
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r/x",
            "/\u{b}x",
            "/\0x",
            "/\u{1b}x",
            "/\u{7f}x",
            "/%09/evil.example",
            "/%2F/evil.example",
            "/%5Cevil.example",
            "/apps/\u{a0}x",
            "/a//b",
            "apps",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), None, "{bad:?}");
        }
    }
}
