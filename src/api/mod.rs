//! The HTTP API: Svix v1 paths, shapes, status codes and errors.
//!
//! One file per resource. Handlers parse and validate input, check the
//! caller's scope, call the [`Service`] (or the store, for reads) and render
//! Svix's JSON. Paths work with and without a trailing slash.

mod application;
mod attempt;
mod auth;
mod docs;
mod endpoint;
mod environment;
mod error;
mod event_type;
mod extract;
mod flow;
mod health;
mod idempotency;
mod message;
mod not_offered;
pub mod openapi;
mod operational;
mod pagination;
mod recovery;
mod stats;
mod task;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;

pub use self::error::{ApiError, ApiResult};
use self::extract::Principal;
use crate::domain::model::{App, Endpoint, Message};
use crate::service::Service;

/// Largest message payload accepted (bytes); the whole body may carry a
/// little more for the other fields.
static PAYLOAD_LIMIT: AtomicUsize = AtomicUsize::new(1024 * 1024);
const ENVELOPE_ALLOWANCE: usize = 64 * 1024;

pub fn payload_limit() -> usize {
    PAYLOAD_LIMIT.load(Ordering::Relaxed)
}

pub fn body_limit() -> usize {
    payload_limit() + ENVELOPE_ALLOWANCE
}

#[derive(Clone)]
pub struct ApiState {
    pub service: Arc<Service>,
    /// Base URL for links Hookline hands out (app portal); the request's
    /// Host when unset.
    pub public_url: Option<String>,
}

/// The router: `/api/v1` and `/metrics`. `max_payload` bounds message
/// payloads (413 above).
pub fn router(service: Arc<Service>, max_payload: usize, public_url: Option<String>) -> Router {
    PAYLOAD_LIMIT.store(max_payload, Ordering::Relaxed);
    let state = ApiState { service, public_url };
    let api = Router::new()
        .merge(application::routes())
        .merge(endpoint::routes())
        .merge(recovery::routes())
        .merge(flow::routes())
        .merge(attempt::routes())
        .merge(event_type::routes())
        .merge(auth::routes())
        .merge(task::routes())
        .merge(operational::routes())
        .merge(stats::routes())
        .merge(environment::routes())
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), idempotency::layer));
    // Messages keep their idempotency key in the message row itself (same
    // transaction, unique per application), which is both stronger and far
    // cheaper on the hot path than remembering whole responses.
    Router::new()
        .merge(api)
        .merge(message::routes())
        .merge(health::routes())
        .merge(openapi::routes())
        .merge(not_offered::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit()))
        .layer(CatchPanicLayer::custom(|_| ApiError::internal().into_response()))
        .with_state(state)
}

async fn not_found() -> Response {
    ApiError::no_route().into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::method_not_allowed().into_response()
}

impl ApiState {
    /// The application behind `app_ref` (id or uid) if the caller may see it.
    pub async fn app(&self, who: &Principal, app_ref: &str) -> ApiResult<App> {
        let app =
            self.service.store.get_app(app_ref).await?.ok_or_else(|| ApiError::not_found("Application"))?;
        if !who.0.allows_app(&app.id) {
            // Do not reveal whether another tenant's application exists.
            return Err(ApiError::not_found("Application"));
        }
        Ok(app)
    }

    pub async fn endpoint(&self, app: &App, ep_ref: &str) -> ApiResult<Endpoint> {
        self.service.store.get_endpoint(&app.id, ep_ref).await?.ok_or_else(|| ApiError::not_found("Endpoint"))
    }

    /// The endpoint of an `…/app/{app_id}/endpoint/{endpoint_id}` path, as
    /// the caller may see it.
    pub async fn app_endpoint(
        &self,
        who: &Principal,
        (app_ref, ep_ref): (String, String),
    ) -> ApiResult<Endpoint> {
        let app = self.app(who, &app_ref).await?;
        self.endpoint(&app, &ep_ref).await
    }

    pub async fn message(&self, app: &App, msg_ref: &str) -> ApiResult<Message> {
        self.service.store.get_message(&app.id, msg_ref).await?.ok_or_else(|| ApiError::not_found("Message"))
    }
}
