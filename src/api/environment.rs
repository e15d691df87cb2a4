//! `/api/v1/environment`: Svix's export and import of an environment's
//! configuration. A Hookline server is one environment; what it exports is
//! its event type catalogue (it has no connectors and no settings to carry).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::event_type::{EventTypeIn, EventTypeOut};
use super::extract::{Principal, SvixJsonOrDefault, Validate};
use super::not_offered;
use super::{ApiError, ApiResult, ApiState};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/environment/export", post(export))
        .route("/api/v1/environment/import", post(import))
}

/// Svix's `EnvironmentOut`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EnvironmentOut {
    version: u32,
    created_at: String,
    event_types: Vec<EventTypeOut>,
    settings: Option<Value>,
    connectors: Vec<Value>,
}

async fn export(State(s): State<ApiState>, who: Principal) -> ApiResult<Json<EnvironmentOut>> {
    who.require_admin()?;
    let types = s.service.all_event_types(false).await?;
    Ok(Json(EnvironmentOut {
        version: 1,
        created_at: s.service.now().to_rfc3339(),
        event_types: types.into_iter().map(EventTypeOut::from).collect(),
        settings: None,
        connectors: Vec::new(),
    }))
}

/// Svix's `EnvironmentIn`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct EnvironmentIn {
    #[serde(default)]
    event_types: Option<Vec<EventTypeIn>>,
    /// Svix's environment settings (branding, portal options) have no
    /// counterpart in Hookline; they are accepted and left alone.
    #[serde(default)]
    settings: Option<Value>,
    #[serde(default)]
    connectors: Option<Vec<Value>>,
}

impl Validate for EnvironmentIn {
    fn validate(&self) -> ApiResult<()> {
        if self.settings.as_ref().is_some_and(|s| !s.is_object() && !s.is_null()) {
            return Err(ApiError::invalid(&["body", "settings"], "must be an object"));
        }
        for (i, et) in self.event_types.iter().flatten().enumerate() {
            et.validate()?;
            if et.name().is_none() {
                return Err(ApiError::invalid(
                    &["body", "eventTypes", &i.to_string(), "name"],
                    "field required",
                ));
            }
        }
        Ok(())
    }
}

/// Create or update every event type listed (others stay as they are).
async fn import(
    State(s): State<ApiState>,
    who: Principal,
    SvixJsonOrDefault(body): SvixJsonOrDefault<EnvironmentIn>,
) -> ApiResult<StatusCode> {
    who.require_admin()?;
    if body.connectors.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(not_offered::error("connectors"));
    }
    let types =
        body.event_types.unwrap_or_default().into_iter().filter_map(EventTypeIn::into_named).collect();
    s.service.import_event_types(types, false, false).await?;
    Ok(StatusCode::NO_CONTENT)
}
