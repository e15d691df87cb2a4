//! `/api/v1/event-type`: the event type catalogue. Deleting archives (the
//! type disappears from listings but keeps working); `?expunge=true`
//! deletes for good. Application-scoped tokens may read it, not change it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::Checks;
use super::extract::{Principal, QueryParams, SvixJson, SvixPath, Validate, double_option};
use super::pagination::ListResponse;
use super::{ApiError, ApiResult, ApiState};
use crate::domain::model::{EventType, EventTypePatch, NameSet};
use crate::domain::time::Timestamp;
use crate::domain::{openapi_import, validate};
use crate::service::ServiceError;
use crate::store::Order;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/event-type", get(list).post(create))
        .route("/api/v1/event-type/{event_type_name}", get(read).put(upsert).patch(patch).delete(remove))
        .route("/api/v1/event-type/import/openapi", post(import_openapi))
}

/// Svix's `EventTypeImportOpenApiIn`: the document as JSON (`spec`) or as
/// text (`specRaw`; Hookline reads JSON text, not YAML).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ImportOpenApiIn {
    #[serde(default)]
    spec: Option<Value>,
    #[serde(default)]
    spec_raw: Option<String>,
    #[serde(default)]
    replace_all: bool,
    #[serde(default)]
    dry_run: bool,
}

impl Validate for ImportOpenApiIn {
    fn validate(&self) -> ApiResult<()> {
        Ok(())
    }
}

#[derive(Serialize)]
struct ImportOpenApiOut {
    data: ImportOpenApiData,
}

#[derive(Serialize)]
struct ImportOpenApiData {
    modified: Vec<String>,
    /// On a dry run: what would be created or changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    to_modify: Option<Vec<Value>>,
}

/// Create or update an event type per webhook of an OpenAPI document
/// (`replaceAll` archives the others; `dryRun` changes nothing).
async fn import_openapi(
    State(s): State<ApiState>,
    who: Principal,
    SvixJson(body): SvixJson<ImportOpenApiIn>,
) -> ApiResult<Json<ImportOpenApiOut>> {
    who.require_admin()?;
    let spec = match (body.spec, body.spec_raw) {
        (Some(spec), None) => spec,
        (None, Some(raw)) => serde_json::from_str(&raw).map_err(|e| {
            ApiError::invalid(&["body", "specRaw"], format!("must be an OpenAPI document in JSON: {e}"))
        })?,
        _ => {
            return Err(ApiError::invalid(
                &["body", "spec"],
                "send the OpenAPI document as exactly one of spec and specRaw",
            ));
        }
    };
    let found = openapi_import::event_types(&spec).map_err(|e| ApiError::invalid(&["body", "spec"], e))?;
    let types: Vec<EventType> = found
        .into_iter()
        .map(|t| EventType {
            name: t.name,
            description: t.description,
            archived: false,
            deprecated: t.deprecated,
            schemas: t.schemas,
            group_name: t.group_name,
            feature_flags: t.feature_flags,
            created_at: Timestamp::default(),
            updated_at: Timestamp::default(),
        })
        .collect();
    let modified = s.service.import_event_types(types.clone(), body.replace_all, body.dry_run).await?;
    let to_modify = body.dry_run.then(|| {
        types
            .into_iter()
            .filter(|t| modified.contains(&t.name))
            .map(|t| {
                json!({"name": t.name, "description": t.description, "schemas": t.schemas,
                    "deprecated": t.deprecated, "groupName": t.group_name, "featureFlags": t.feature_flags})
            })
            .collect()
    });
    Ok(Json(ImportOpenApiOut { data: ImportOpenApiData { modified, to_modify } }))
}

/// Create (with `name`) and PUT (name from the path) bodies.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct EventTypeIn {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    archived: Option<bool>,
    #[serde(default)]
    deprecated: Option<bool>,
    #[serde(default)]
    schemas: Option<Value>,
    #[serde(default)]
    group_name: Option<String>,
    #[serde(default, deserialize_with = "crate::domain::model::unique_names")]
    feature_flags: Option<NameSet>,
    /// Older clients send one flag.
    #[serde(default)]
    feature_flag: Option<String>,
}

fn check_schemas(c: &mut Checks, schemas: Option<&Value>) {
    if let Some(s) = schemas
        && !s.is_object()
    {
        c.check(&["body", "schemas"], Err("must be an object of JSON Schemas keyed by version".into()));
    }
}

fn check_flags(c: &mut Checks, group: Option<&str>, flags: Option<&NameSet>) {
    if let Some(g) = group {
        c.check(&["body", "groupName"], validate::name(g, validate::EVENT_TYPE_MAX));
    }
    if let Some(f) = flags {
        c.check(&["body", "featureFlags"], validate::name_set(f, validate::EVENT_TYPE_MAX, 100));
    }
}

impl Validate for EventTypeIn {
    fn validate(&self) -> ApiResult<()> {
        let mut c = Checks::default();
        if let Some(name) = &self.name {
            c.check(&["body", "name"], validate::name(name, validate::EVENT_TYPE_MAX));
        }
        check_schemas(&mut c, self.schemas.as_ref());
        check_flags(&mut c, self.group_name.as_deref(), self.feature_flags.as_ref());
        c.finish()
    }
}

impl EventTypeIn {
    pub(super) fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The event type, when the body names one.
    pub(super) fn into_named(self) -> Option<EventType> {
        let name = self.name.clone()?;
        Some(self.into_event_type(name))
    }

    fn into_event_type(self, name: String) -> EventType {
        let flags = self.feature_flags.or(self.feature_flag.map(|f| NameSet::from([f])));
        EventType {
            name,
            description: self.description,
            archived: self.archived.unwrap_or(false),
            deprecated: self.deprecated.unwrap_or(false),
            schemas: self.schemas,
            group_name: self.group_name,
            feature_flags: flags,
            created_at: Timestamp::default(),
            updated_at: Timestamp::default(),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventTypePatchIn {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    archived: Option<bool>,
    #[serde(default)]
    deprecated: Option<bool>,
    #[serde(default, deserialize_with = "double_option")]
    schemas: Option<Option<Value>>,
    #[serde(default, deserialize_with = "double_option")]
    group_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::domain::model::patch_unique_names")]
    feature_flags: Option<Option<NameSet>>,
}

impl Validate for EventTypePatchIn {
    fn validate(&self) -> ApiResult<()> {
        let mut c = Checks::default();
        check_schemas(&mut c, self.schemas.as_ref().and_then(Option::as_ref));
        check_flags(
            &mut c,
            self.group_name.as_ref().and_then(Option::as_deref),
            self.feature_flags.as_ref().and_then(Option::as_ref),
        );
        c.finish()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct EventTypeOut {
    name: String,
    description: String,
    archived: bool,
    deprecated: bool,
    schemas: Option<Value>,
    group_name: Option<String>,
    feature_flags: Option<NameSet>,
    feature_flag: Option<String>,
    created_at: String,
    updated_at: String,
}

impl EventTypeOut {
    fn new(et: EventType, with_schemas: bool) -> Self {
        EventTypeOut {
            feature_flag: et.feature_flags.as_ref().and_then(|f| f.iter().next().cloned()),
            name: et.name,
            description: et.description,
            archived: et.archived,
            deprecated: et.deprecated,
            schemas: if with_schemas { et.schemas } else { None },
            group_name: et.group_name,
            feature_flags: et.feature_flags,
            created_at: et.created_at.to_rfc3339(),
            updated_at: et.updated_at.to_rfc3339(),
        }
    }
}

impl From<EventType> for EventTypeOut {
    fn from(et: EventType) -> Self {
        EventTypeOut::new(et, true)
    }
}

async fn list(
    State(s): State<ApiState>,
    _who: Principal,
    q: QueryParams,
) -> ApiResult<Json<ListResponse<EventTypeOut>>> {
    let with_content = q.bool("with_content", false)?;
    let page = s
        .service
        .store
        .list_event_types(q.bool("include_archived", false)?, &q.page(Order::Ascending)?)
        .await?;
    Ok(Json(ListResponse::from_page(page, |e| e.name.clone(), |e| EventTypeOut::new(e, with_content))))
}

async fn create(
    State(s): State<ApiState>,
    who: Principal,
    SvixJson(body): SvixJson<EventTypeIn>,
) -> ApiResult<(StatusCode, Json<EventTypeOut>)> {
    who.require_admin()?;
    let name = body.name.clone().ok_or_else(|| ApiError::invalid(&["body", "name"], "field required"))?;
    let et = s.service.create_event_type(body.into_event_type(name)).await?;
    Ok((StatusCode::CREATED, Json(et.into())))
}

/// An archived (deleted) event type is gone for readers unless they ask
/// for archived ones too, as in the list.
async fn read(
    State(s): State<ApiState>,
    _who: Principal,
    SvixPath(name): SvixPath<String>,
    q: QueryParams,
) -> ApiResult<Json<EventTypeOut>> {
    let include_archived = q.bool("include_archived", false)?;
    match s.service.store.get_event_type(&name).await? {
        Some(et) if include_archived || !et.archived => Ok(Json(et.into())),
        _ => Err(ApiError::not_found("Event type")),
    }
}

/// PUT: replace the definition, or create the type (201).
async fn upsert(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(name): SvixPath<String>,
    SvixJson(body): SvixJson<EventTypeIn>,
) -> ApiResult<(StatusCode, Json<EventTypeOut>)> {
    who.require_admin()?;
    validate::name(&name, validate::EVENT_TYPE_MAX)
        .map_err(|e| ApiError::invalid(&["path", "event_type_name"], e))?;
    let et = body.into_event_type(name.clone());
    match s.service.store.get_event_type(&name).await? {
        Some(_) => {
            let patch = EventTypePatch {
                description: Some(et.description),
                archived: Some(et.archived),
                deprecated: Some(et.deprecated),
                schemas: Some(et.schemas),
                group_name: Some(et.group_name),
                feature_flags: Some(et.feature_flags),
            };
            Ok((StatusCode::OK, Json(s.service.update_event_type(&name, patch).await?.into())))
        }
        None => Ok((StatusCode::CREATED, Json(s.service.create_event_type(et).await?.into()))),
    }
}

async fn patch(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(name): SvixPath<String>,
    SvixJson(body): SvixJson<EventTypePatchIn>,
) -> ApiResult<Json<EventTypeOut>> {
    who.require_admin()?;
    let patch = EventTypePatch {
        description: body.description,
        archived: body.archived,
        deprecated: body.deprecated,
        schemas: body.schemas,
        group_name: body.group_name,
        feature_flags: body.feature_flags,
    };
    match s.service.update_event_type(&name, patch).await {
        Err(ServiceError::NotFound) => Err(ApiError::not_found("Event type")),
        other => Ok(Json(other?.into())),
    }
}

async fn remove(
    State(s): State<ApiState>,
    who: Principal,
    SvixPath(name): SvixPath<String>,
    q: QueryParams,
) -> ApiResult<StatusCode> {
    who.require_admin()?;
    let expunge = q.bool("expunge", false)?;
    if !expunge && s.service.store.get_event_type(&name).await?.is_none_or(|et| et.archived) {
        return Err(ApiError::not_found("Event type"));
    }
    match s.service.delete_event_type(&name, expunge).await {
        Err(ServiceError::NotFound) => Err(ApiError::not_found("Event type")),
        other => other.map(|()| StatusCode::NO_CONTENT).map_err(Into::into),
    }
}
