//! `/api/v1/auth`: application-scoped access (the customer portal) and
//! logging such a token out.

use std::time::Duration;

use axum::extract::State;
use axum::http::header::{AUTHORIZATION, HOST};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::application::ApplicationIn;
use super::extract::{Principal, SvixJsonOrDefault, SvixPath, Validate};
use super::{ApiError, ApiResult, ApiState};
use crate::domain::id;
use crate::domain::model::{App, Scope};
use crate::domain::validate;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/auth/app-portal-access/{app_id}", post(portal_access))
        // The name Svix's v1 clients use for the same thing.
        .route("/api/v1/auth/dashboard-access/{app_id}", post(portal_access))
        .route("/api/v1/auth/logout", post(logout))
        .route("/api/v1/auth/app/{app_id}/expire-all", post(expire_all))
        .route("/api/v1/auth/whoami", get(whoami))
}

/// Svix's `ApplicationTokenExpireIn`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ExpireAllIn {
    /// Seconds from now until the tokens stop working (default: now).
    #[serde(default, deserialize_with = "crate::domain::number::opt_whole")]
    expiry: Option<u64>,
    /// Hookline's tokens have no sessions: all of the application's tokens
    /// are expired whatever this says (the safe reading of the request).
    #[serde(default)]
    #[allow(dead_code)]
    session_ids: Option<Vec<String>>,
}

impl Validate for ExpireAllIn {
    fn validate(&self) -> ApiResult<()> {
        if self.expiry.is_some_and(|e| e > 365 * 86_400) {
            return Err(ApiError::invalid(&["body", "expiry"], "may be at most 365 days"));
        }
        Ok(())
    }
}

/// Every token scoped to the application (app-portal links, `hookline
/// token create --app`) stops working, now or after `expiry` seconds.
async fn expire_all(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(app_ref): SvixPath<String>,
    SvixJsonOrDefault(body): SvixJsonOrDefault<ExpireAllIn>,
) -> ApiResult<StatusCode> {
    who.require_admin()?;
    let app = s.app(&who, &app_ref).await?;
    s.service.expire_app_tokens(&app, body.expiry.map(Duration::from_secs)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Svix's `WhoamiOut`: Hookline has one environment; app-scoped tokens
/// name their application.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WhoamiOut {
    env_id: &'static str,
    app_id: Option<String>,
    stream_app_id: Option<String>,
    permission_source: &'static str,
    session_id: Option<String>,
}

async fn whoami(who: Principal) -> Json<WhoamiOut> {
    let (app_id, permission_source) = match who.0 {
        Scope::Admin => (None, "GlobalAuthToken"),
        Scope::App(id) => (Some(id), "SvixJwt"),
    };
    Json(WhoamiOut { env_id: ENV_ID, app_id, stream_app_id: None, permission_source, session_id: None })
}

/// The one environment a Hookline deployment is.
pub const ENV_ID: &str = "env_hookline";

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PortalAccessIn {
    /// Create the application if the path does not name one yet.
    #[serde(default)]
    application: Option<ApplicationIn>,
    /// Token lifetime in seconds (default 7 days).
    #[serde(default, deserialize_with = "crate::domain::number::opt_whole")]
    expiry: Option<u64>,
}

impl Validate for PortalAccessIn {
    fn validate(&self) -> ApiResult<()> {
        if self.expiry.is_some_and(|e| e == 0 || e > 365 * 86_400) {
            return Err(ApiError::invalid(&["body", "expiry"], "must be between 1 second and 365 days"));
        }
        match &self.application {
            Some(app) => app.validate(),
            None => Ok(()),
        }
    }
}

#[derive(Serialize)]
struct PortalAccessOut {
    url: String,
    token: String,
}

/// A token that can see and act on one application only, and a link that
/// opens the dashboard with it.
async fn portal_access(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(app_ref): SvixPath<String>,
    headers: HeaderMap,
    SvixJsonOrDefault(body): SvixJsonOrDefault<PortalAccessIn>,
) -> ApiResult<Json<PortalAccessOut>> {
    who.require_admin()?;
    let app = match (s.service.store.get_app(&app_ref).await?, body.application) {
        (Some(app), _) => app,
        (None, Some(spec)) => create_for_portal(&s, &app_ref, spec).await?,
        (None, None) => return Err(ApiError::not_found("Application")),
    };
    let token = s.service.app_portal_access(&app, body.expiry.map(Duration::from_secs)).await?;
    let url = format!("{}/portal#token={token}", base_url(&s, &headers));
    Ok(Json(PortalAccessOut { url, token }))
}

async fn create_for_portal(s: &ApiState, app_ref: &str, spec: ApplicationIn) -> ApiResult<App> {
    let mut spec = spec.into_spec();
    if spec.uid.is_none()
        && !id::has_prefix(app_ref, id::APP)
        && validate::name(app_ref, validate::UID_MAX).is_ok()
    {
        spec.uid = Some(app_ref.to_owned());
    }
    Ok(s.service.create_app(spec).await?)
}

/// Where the dashboard is reached: `--public-url`, else the Host the caller
/// used.
fn base_url(s: &ApiState, headers: &HeaderMap) -> String {
    if let Some(url) = &s.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = headers.get(HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1:8071");
    format!("http://{host}")
}

/// Invalidate the app-scoped token this request carries.
async fn logout(State(s): State<ApiState>, who: Principal, headers: HeaderMap) -> ApiResult<StatusCode> {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .map(|(_, t)| t.trim())
        .unwrap_or_default();
    s.service.logout(token, &who.0).await?;
    Ok(StatusCode::NO_CONTENT)
}
