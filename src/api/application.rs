//! `/api/v1/app`: applications (tenants).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::error::Checks;
use super::extract::{Principal, QueryParams, SvixJson, SvixPath, Validate, double_option};
use super::pagination::ListResponse;
use super::{ApiError, ApiResult, ApiState};
use crate::domain::id;
use crate::domain::model::{App, AppPatch, AppSpec, Metadata};
use crate::domain::number::{opt_whole, patch_whole};
use crate::domain::validate;
use crate::service::ServiceError;
use crate::store::{AppFilter, Order};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/app", get(list).post(create))
        .route("/api/v1/app/{app_id}", get(read).put(upsert).patch(patch).delete(remove))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationIn {
    name: String,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default, deserialize_with = "opt_whole")]
    throttle_rate: Option<u16>,
    /// The older name; `throttleRate` wins when both are given.
    #[serde(default, deserialize_with = "opt_whole")]
    rate_limit: Option<u16>,
}

impl Validate for ApplicationIn {
    fn validate(&self) -> ApiResult<()> {
        let mut c = Checks::default();
        c.check(
            &["body", "name"],
            if self.name.is_empty() { Err("must not be empty".into()) } else { Ok(()) },
        );
        c.uid(self.uid.as_deref());
        c.rate("throttleRate", self.throttle_rate);
        c.rate("rateLimit", self.rate_limit);
        c.finish()
    }
}

impl ApplicationIn {
    pub fn into_spec(self) -> AppSpec {
        AppSpec {
            uid: self.uid,
            name: self.name,
            metadata: self.metadata.unwrap_or_default(),
            throttle_rate: self.throttle_rate.or(self.rate_limit),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApplicationPatchIn {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    uid: Option<Option<String>>,
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default, deserialize_with = "patch_whole")]
    throttle_rate: Option<Option<u16>>,
    #[serde(default, deserialize_with = "patch_whole")]
    rate_limit: Option<Option<u16>>,
}

impl Validate for ApplicationPatchIn {
    fn validate(&self) -> ApiResult<()> {
        let mut c = Checks::default();
        if self.name.as_deref() == Some("") {
            c.check(&["body", "name"], Err("must not be empty".into()));
        }
        c.uid(self.uid.as_ref().and_then(Option::as_deref));
        c.rate("throttleRate", self.throttle_rate.flatten());
        c.rate("rateLimit", self.rate_limit.flatten());
        c.finish()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationOut {
    id: String,
    uid: Option<String>,
    name: String,
    metadata: Metadata,
    throttle_rate: Option<u16>,
    created_at: String,
    updated_at: String,
}

impl From<App> for ApplicationOut {
    fn from(a: App) -> Self {
        ApplicationOut {
            id: a.id,
            uid: a.uid,
            name: a.name,
            metadata: a.metadata,
            throttle_rate: a.throttle_rate,
            created_at: a.created_at.to_rfc3339(),
            updated_at: a.updated_at.to_rfc3339(),
        }
    }
}

async fn list(
    State(s): State<ApiState>,
    who: Principal,
    q: QueryParams,
) -> ApiResult<Json<ListResponse<ApplicationOut>>> {
    who.require_admin()?;
    let filter = AppFilter { search: q.string("search") };
    let page = s.service.store.list_apps(&filter, &q.page(Order::Ascending)?).await?;
    Ok(Json(ListResponse::from_page(page, |a| a.id.clone(), ApplicationOut::from)))
}

async fn create(
    State(s): State<ApiState>,
    who: Principal,
    q: QueryParams,
    SvixJson(body): SvixJson<ApplicationIn>,
) -> ApiResult<(StatusCode, Json<ApplicationOut>)> {
    who.require_admin()?;
    if q.bool("get_if_exists", false)?
        && let Some(uid) = &body.uid
        && let Some(app) = s.service.store.get_app(uid).await?.filter(|a| a.uid.as_ref() == Some(uid))
    {
        return Ok((StatusCode::OK, Json(app.into())));
    }
    let app = s.service.create_app(body.into_spec()).await?;
    Ok((StatusCode::CREATED, Json(app.into())))
}

async fn read(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(app_id): SvixPath<String>,
) -> ApiResult<Json<ApplicationOut>> {
    Ok(Json(s.app(&who, &app_id).await?.into()))
}

/// PUT: replace, or create with the path as uid when it does not exist.
/// Addressed by its uid, an application keeps that uid when the body names
/// none, so the same PUT repeated (a deploy script ensuring its tenants)
/// updates one application instead of orphaning it and creating another.
async fn upsert(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(app_ref): SvixPath<String>,
    SvixJson(body): SvixJson<ApplicationIn>,
) -> ApiResult<(StatusCode, Json<ApplicationOut>)> {
    let mut spec = body.into_spec();
    match s.app(&who, &app_ref).await {
        Ok(app) => {
            if spec.uid.is_none() && app.uid.as_deref() == Some(app_ref.as_str()) {
                spec.uid = app.uid.clone();
            }
            let updated = s.service.update_app(&app.id, AppPatch::replace_all(spec)).await?;
            Ok((StatusCode::OK, Json(updated.into())))
        }
        Err(ApiError::Http { status: StatusCode::NOT_FOUND, .. }) => {
            who.require_admin()?;
            if id::has_prefix(&app_ref, id::APP) || validate::name(&app_ref, validate::UID_MAX).is_err() {
                return Err(ApiError::not_found("Application"));
            }
            spec.uid.get_or_insert(app_ref);
            let app = s.service.create_app(spec).await?;
            Ok((StatusCode::CREATED, Json(app.into())))
        }
        Err(e) => Err(e),
    }
}

async fn patch(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(app_ref): SvixPath<String>,
    SvixJson(body): SvixJson<ApplicationPatchIn>,
) -> ApiResult<Json<ApplicationOut>> {
    let app = s.app(&who, &app_ref).await?;
    let patch = AppPatch {
        uid: body.uid,
        name: body.name,
        metadata: body.metadata,
        throttle_rate: body.throttle_rate.or(body.rate_limit),
    };
    Ok(Json(s.service.update_app(&app.id, patch).await?.into()))
}

async fn remove(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(app_ref): SvixPath<String>,
) -> ApiResult<StatusCode> {
    let app = s.app(&who, &app_ref).await?;
    match s.service.delete_app(&app).await {
        Ok(()) | Err(ServiceError::NotFound) => Ok(StatusCode::NO_CONTENT),
        Err(e) => Err(e.into()),
    }
}
