//! Signing in and out, and what every signed-in request carries.
//!
//! Signing in trades the API token for a fresh session token (12 h, same
//! scope) held in an `HttpOnly`, `SameSite=Strict` cookie, so the API token
//! itself never sits in the browser. Posts must come from our own origin and
//! carry the session's CSRF token.

use std::time::Duration;

use axum::Form;
use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::header::{COOKIE, HOST, ORIGIN, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::Dash;
use super::layout::{Flash, page};
use crate::domain::model::Scope;

pub const COOKIE_NAME: &str = "hookline_session";
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

pub struct Session {
    pub scope: Scope,
    token: String,
}

impl Session {
    /// The token forms must echo back: derived from the session, so it is
    /// unknown to other sites and needs no storage.
    pub fn csrf(&self) -> String {
        let digest = Sha256::digest(format!("csrf\n{}", self.token).as_bytes());
        digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }

    pub fn is_admin(&self) -> bool {
        self.scope == Scope::Admin
    }

    pub fn sees(&self, app_id: &str) -> bool {
        self.scope.allows_app(app_id)
    }

    pub fn describe(&self) -> &'static str {
        if self.is_admin() { "Administrator" } else { "Application portal" }
    }
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE_NAME)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl FromRequestParts<Dash> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Dash) -> Result<Self, Response> {
        let back = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/apps");
        let to_login = || Redirect::to(&format!("/login?next={}", encode(back))).into_response();
        let token = cookie_token(&parts.headers).ok_or_else(to_login)?;
        match state.service.authenticate(&token).await {
            Ok(Some(scope)) => Ok(Session { scope, token }),
            _ => Err(to_login()),
        }
    }
}

/// Browsers send `Origin` on posts; it must be this server.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers.get(HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    origin.split_once("://").map(|(_, rest)| rest) == Some(host)
}

/// A form post from a signed-in page, checked for origin and CSRF token.
pub struct Post {
    pub session: Session,
    fields: Vec<(String, String)>,
    /// Sent by the page script (stay on the page; answer in plain text).
    pub is_async: bool,
}

impl Post {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    pub fn all(&self, key: &str) -> Vec<&str> {
        self.fields.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
    }
}

impl FromRequest<Dash> for Post {
    type Rejection = Response;

    async fn from_request(req: Request, state: &Dash) -> Result<Self, Response> {
        let forbidden = |why: &str| (StatusCode::FORBIDDEN, why.to_owned()).into_response();
        let (mut parts, body) = req.into_parts();
        if !same_origin(&parts.headers) {
            return Err(forbidden("Cross-origin form posts are refused."));
        }
        let session = Session::from_request_parts(&mut parts, state).await?;
        let is_async = parts.headers.contains_key("x-hookline-async");
        let Form(fields) =
            Form::<Vec<(String, String)>>::from_request(Request::from_parts(parts, body), state)
                .await
                .map_err(|e| (StatusCode::BAD_REQUEST, e.body_text()).into_response())?;
        let post = Post { session, fields, is_async };
        if post.get("_csrf") != Some(post.session.csrf().as_str()) {
            return Err(forbidden("This form has expired; reload the page and try again."));
        }
        Ok(post)
    }
}

/// Answer a post: back to `to` with the outcome as a flash message, or, for
/// the page script, the outcome as text.
pub fn done(post: &Post, to: &str, outcome: Result<String, String>) -> Response {
    match (post.is_async, outcome) {
        (true, Ok(notice)) => notice.into_response(),
        (true, Err(error)) => (StatusCode::CONFLICT, error).into_response(),
        (false, Ok(notice)) => Redirect::to(&with_flash(to, "notice", &notice)).into_response(),
        (false, Err(error)) => Redirect::to(&with_flash(to, "error", &error)).into_response(),
    }
}

fn with_flash(to: &str, kind: &str, text: &str) -> String {
    let sep = if to.contains('?') { '&' } else { '?' };
    format!("{to}{sep}{kind}={}", encode(text))
}

/// Only same-site paths are followed after sign-in.
fn safe_next(next: Option<&str>) -> Option<&str> {
    next.filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.starts_with("/\\"))
}

#[derive(Deserialize, Default)]
pub struct LoginQuery {
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

pub async fn login_page(Query(q): Query<LoginQuery>) -> Markup {
    login_form(q.next.as_deref(), q.error)
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
    page("Sign in", None, &[], &Flash { error, notice: None }, body)
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
    let cookie = format!(
        "{COOKIE_NAME}={session}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    ([(SET_COOKIE, cookie)], Redirect::to(to.unwrap_or(&home))).into_response()
}

pub async fn logout(State(d): State<Dash>, post: Post) -> Response {
    if let Err(e) = d.service.end_session(&post.session.token).await {
        tracing::warn!(error = %e, "could not end a session");
    }
    let clear = format!("{COOKIE_NAME}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    ([(SET_COOKIE, clear)], Redirect::to("/login")).into_response()
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
    use super::*;

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(safe_next(Some("/apps/x")), Some("/apps/x"));
        assert_eq!(safe_next(Some("//evil.example")), None);
        assert_eq!(safe_next(Some("https://evil.example")), None);
        assert_eq!(safe_next(Some("/\\evil.example")), None);
    }

    #[test]
    fn origin_must_match_host() {
        let mut h = HeaderMap::new();
        h.insert(HOST, "127.0.0.1:8071".parse().unwrap());
        assert!(same_origin(&h), "no Origin header: not a browser form post");
        h.insert(ORIGIN, "http://127.0.0.1:8071".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(ORIGIN, "http://evil.example".parse().unwrap());
        assert!(!same_origin(&h));
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, "a=1; hookline_session=hl_abc; b=2".parse().unwrap());
        assert_eq!(cookie_token(&h).as_deref(), Some("hl_abc"));
        h.insert(COOKIE, "hookline_session=".parse().unwrap());
        assert_eq!(cookie_token(&h), None);
    }

    #[test]
    fn csrf_tokens_differ_per_session() {
        let a = Session { scope: Scope::Admin, token: "t1".into() };
        let b = Session { scope: Scope::Admin, token: "t2".into() };
        assert_ne!(a.csrf(), b.csrf());
        assert_eq!(a.csrf().len(), 32);
    }
}
