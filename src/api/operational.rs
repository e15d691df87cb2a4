//! `/api/v1/operational-webhook/endpoint`: where operators subscribe to
//! Hookline's own events (`endpoint.disabled`, `message.attempt.exhausted`,
//! …). These are the endpoints of the reserved operational application, so
//! the handlers are the ordinary endpoint ones. Admin only.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::endpoint::{self, EndpointIn, EndpointOut, HeadersIn, HeadersOut, RotateIn, SecretOut};
use super::extract::{Principal, QueryParams, SvixJson, SvixPath};
use super::pagination::ListResponse;
use super::{ApiResult, ApiState};
use crate::domain::model::{App, AppSpec};
use crate::operational::APP_UID;

pub fn routes() -> Router<ApiState> {
    let ep = "/api/v1/operational-webhook/endpoint/{endpoint_id}";
    Router::new()
        .route("/api/v1/operational-webhook/endpoint", get(list).post(create))
        .route(ep, get(read).put(upsert).delete(remove))
        .route(&format!("{ep}/secret"), get(secret))
        .route(&format!("{ep}/secret/rotate"), post(rotate))
        .route(&format!("{ep}/headers"), get(headers).put(put_headers))
}

/// The operational application, created on first use.
async fn app(s: &ApiState, who: &Principal) -> ApiResult<App> {
    who.require_admin()?;
    if let Some(app) = s.service.store.get_app(APP_UID).await? {
        return Ok(app);
    }
    let spec = AppSpec {
        uid: Some(APP_UID.into()),
        name: "Hookline operational webhooks".into(),
        ..Default::default()
    };
    Ok(s.service.create_app(spec).await?)
}

async fn list(
    State(s): State<ApiState>,
    who: Principal,
    q: QueryParams,
) -> ApiResult<Json<ListResponse<EndpointOut>>> {
    endpoint::list_in(&s, &app(&s, &who).await?, &q).await
}

async fn create(
    State(s): State<ApiState>,
    who: Principal,
    SvixJson(body): SvixJson<EndpointIn>,
) -> ApiResult<(StatusCode, Json<EndpointOut>)> {
    endpoint::create_in(&s, &app(&s, &who).await?, body).await
}

async fn read(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(id): SvixPath<String>,
) -> ApiResult<Json<EndpointOut>> {
    let app = app(&s, &who).await?;
    Ok(Json(s.endpoint(&app, &id).await?.into()))
}

async fn upsert(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(id): SvixPath<String>,
    SvixJson(body): SvixJson<EndpointIn>,
) -> ApiResult<(StatusCode, Json<EndpointOut>)> {
    endpoint::upsert_in(&s, &app(&s, &who).await?, id, body).await
}

async fn remove(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(id): SvixPath<String>,
) -> ApiResult<StatusCode> {
    endpoint::remove_in(&s, &app(&s, &who).await?, &id).await
}

async fn secret(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(id): SvixPath<String>,
) -> ApiResult<Json<SecretOut>> {
    endpoint::secret_in(&s, &app(&s, &who).await?, &id).await
}

async fn rotate(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(id): SvixPath<String>,
    SvixJson(body): SvixJson<RotateIn>,
) -> ApiResult<Json<SecretOut>> {
    endpoint::rotate_in(&s, &app(&s, &who).await?, &id, body).await
}

async fn headers(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(id): SvixPath<String>,
) -> ApiResult<Json<HeadersOut>> {
    endpoint::headers_in(&s, &app(&s, &who).await?, &id).await
}

async fn put_headers(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(id): SvixPath<String>,
    SvixJson(body): SvixJson<HeadersIn>,
) -> ApiResult<StatusCode> {
    endpoint::write_headers(&s, &app(&s, &who).await?, &id, body, true).await
}
