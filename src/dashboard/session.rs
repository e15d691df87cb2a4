//! What every signed-in request carries: the session cookie, and the
//! checks on posts.
//!
//! Signing in (`signin.rs`) trades the API token for a fresh session token
//! (12 h, same scope) held in an `HttpOnly`, `SameSite=Strict` cookie, so
//! the API token itself never sits in the browser. Posts must come from our
//! own origin and carry the session's CSRF token. Nothing here renders a
//! page, so the page shell (`layout.rs`) can show who is signed in.

use std::time::Duration;

use axum::Form;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{COOKIE, HOST, ORIGIN};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};

use super::Dash;
use crate::domain::model::Scope;

pub const COOKIE_NAME: &str = "hookline_session";
/// How long a session lasts: its token's lifetime and its cookie's.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

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

    /// The session token itself (to end the session).
    pub fn token(&self) -> &str {
        &self.token
    }
}

/// The `Set-Cookie` value that makes `token` the browser's session;
/// `Secure` when the server is reached over https.
pub fn session_cookie(token: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE_NAME}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        SESSION_TTL.as_secs()
    )
}

/// The `Set-Cookie` value that ends the browser's session.
pub fn cleared_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE_NAME}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}")
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
pub fn same_origin(headers: &HeaderMap) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

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
