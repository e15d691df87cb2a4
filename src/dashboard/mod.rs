//! The dashboard: server-rendered pages (maud) with a little JavaScript,
//! served by the same binary at `/`. It calls the same [`Service`] as the
//! API; no page handler touches a store implementation or SQL.
//!
//! Sign-in exchanges an API token for a short-lived session token kept in an
//! `HttpOnly`, `SameSite=Strict` cookie; every form carries a CSRF token and
//! cross-origin posts are refused. An app-scoped token (the customer portal
//! link) gives the same pages limited to its one application.
//!
//! Pages: applications → application (endpoints) → endpoint (flow state,
//! blocked ordering keys, the missed-while-disabled offer, settings, rate
//! limit and ordering, secret, retry policy, headers, bulk replay) →
//! endpoint messages →
//! message (payload, attempts, Retry / Replay); and the application's
//! message log. Regions marked `#live` refresh themselves (`static/app.js`).

mod apps;
mod charts;
mod endpoints;
mod erasure;
mod flow;
mod layout;
mod messages;
mod session;
mod signin;

use std::sync::Arc;

use axum::Router;
use axum::http::HeaderValue;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::service::Service;

#[derive(Clone)]
pub struct Dash {
    pub service: Arc<Service>,
    /// Users reach the server over https (`--public-url https://…`): the
    /// session cookie is `Secure`.
    pub secure: bool,
}

/// Scripts and styles only from our own files (the pages have no inline
/// script or style), nothing may frame the pages, no page is sniffed as
/// another type, and no URL leaks to other sites in `Referer`
/// (`same-origin`, not `no-referrer`: under that, browsers send
/// `Origin: null` with form posts, which the origin check must refuse).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
                   object-src 'none'";

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

pub fn router(service: Arc<Service>, public_url: Option<&str>) -> Router {
    let secure = public_url.is_some_and(|u| u.to_ascii_lowercase().starts_with("https://"));
    Router::new()
        .route("/", get(|| async { Redirect::to("/apps") }))
        .route("/login", get(signin::login_page).post(signin::login))
        .route("/logout", post(signin::logout))
        .route("/portal", get(signin::portal))
        .route("/assets/app.css", get(|| async { asset("text/css", include_str!("static/app.css")) }))
        .route("/assets/app.js", get(|| async { asset("text/javascript", include_str!("static/app.js")) }))
        .route("/apps", get(apps::list).post(apps::create))
        .route("/apps/{app}", get(apps::show))
        .route("/apps/{app}/erase-by-tag", post(erasure::in_app))
        .route("/erase-by-tag", post(erasure::everywhere))
        .route("/apps/{app}/endpoints", post(endpoints::create))
        .route("/apps/{app}/endpoints/{ep}", get(endpoints::show))
        .route("/apps/{app}/endpoints/{ep}/messages", get(messages::for_endpoint))
        .route("/apps/{app}/endpoints/{ep}/{action}", post(endpoints::act))
        .route("/apps/{app}/messages", get(messages::for_app))
        .route("/apps/{app}/messages/{msg}", get(messages::show))
        .route("/apps/{app}/messages/{msg}/{action}", post(messages::act))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(Dash { service, secure })
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(CONTENT_TYPE, content_type), (CACHE_CONTROL, "public, max-age=300")], body)
}
