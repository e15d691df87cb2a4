//! Hookline's own OpenAPI 3.1 document, served at `/api/v1/openapi.json`
//! and rendered at `/api/v1/docs`.
//!
//! Built from one table of operations ([`OPS`]) and the schemas below, so a
//! route added to the router and not here shows up in the coverage test
//! (`tests/it/openapi.rs`). Hookline extensions are marked `x-hookline`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use super::ApiState;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/openapi.json", get(|| async { Json(document().clone()) }))
        .route("/api/v1/docs", get(|| async { Html(super::docs::page(document())).into_response() }))
}

/// Query parameter groups, by name.
#[derive(Clone, Copy)]
enum Q {
    Page,
    WithContent,
    MessageFilters,
    /// A delivery status filter (an endpoint's messages).
    Status,
    AttemptFilters,
    WithMsg,
    EndpointId,
    Range,
    GetIfExists,
    EventTypeList,
    IncludeArchived,
    Expunge,
    Deliver,
}

struct Op {
    method: &'static str,
    path: &'static str,
    id: &'static str,
    tag: &'static str,
    summary: &'static str,
    /// Request body schema.
    body: Option<&'static str>,
    /// Success status and response schema (`[X]` = Svix list of X).
    ok: (u16, Option<&'static str>),
    /// Another success status and what it means (a PUT that creates, a
    /// create that finds).
    also: Option<(u16, &'static str)>,
    /// The body may be left out (its defaults apply).
    body_optional: bool,
    query: &'static [Q],
    /// A Hookline extension, not part of Svix's API.
    extension: bool,
}

const fn op(
    method: &'static str,
    path: &'static str,
    id: &'static str,
    tag: &'static str,
    summary: &'static str,
) -> Op {
    Op {
        method,
        path,
        id,
        tag,
        summary,
        body: None,
        ok: (200, None),
        also: None,
        body_optional: false,
        query: &[],
        extension: false,
    }
}

impl Op {
    const fn body(mut self, schema: &'static str) -> Self {
        self.body = Some(schema);
        self
    }
    const fn ok(mut self, status: u16, schema: Option<&'static str>) -> Self {
        self.ok = (status, schema);
        self
    }
    const fn upsert(self) -> Self {
        self.also(201, "Created (nothing had this name or uid yet)")
    }
    const fn also(mut self, status: u16, meaning: &'static str) -> Self {
        self.also = Some((status, meaning));
        self
    }
    const fn body_optional(mut self) -> Self {
        self.body_optional = true;
        self
    }
    const fn query(mut self, q: &'static [Q]) -> Self {
        self.query = q;
        self
    }
    const fn ext(mut self) -> Self {
        self.extension = true;
        self
    }
}

const APP: &str = "/api/v1/app/{app_id}";
const EP: &str = "/api/v1/app/{app_id}/endpoint/{endpoint_id}";
const OPW: &str = "/api/v1/operational-webhook/endpoint/{endpoint_id}";

#[rustfmt::skip]
const OPS: &[Op] = &[
    // Applications
    op("get", "/api/v1/app", "v1.application.list", "Application", "List applications").ok(200, Some("[ApplicationOut]")).query(&[Q::Page]),
    op("post", "/api/v1/app", "v1.application.create", "Application", "Create an application").body("ApplicationIn").ok(201, Some("ApplicationOut")).also(200, "It existed (get_if_exists=true)").query(&[Q::GetIfExists]),
    op("get", APP, "v1.application.get", "Application", "Get an application by id or uid").ok(200, Some("ApplicationOut")),
    op("put", APP, "v1.application.update", "Application", "Replace an application (creates it, 201, when the uid is new)").body("ApplicationIn").ok(200, Some("ApplicationOut")).upsert(),
    op("patch", APP, "v1.application.patch", "Application", "Change some fields of an application").body("ApplicationPatch").ok(200, Some("ApplicationOut")),
    op("delete", APP, "v1.application.delete", "Application", "Delete an application with its endpoints, messages and attempts").ok(204, None),
    // Endpoints
    op("get", "/api/v1/app/{app_id}/endpoint", "v1.endpoint.list", "Endpoint", "List endpoints").ok(200, Some("[EndpointOut]")).query(&[Q::Page]),
    op("post", "/api/v1/app/{app_id}/endpoint", "v1.endpoint.create", "Endpoint", "Create an endpoint").body("EndpointIn").ok(201, Some("EndpointOut")),
    op("get", EP, "v1.endpoint.get", "Endpoint", "Get an endpoint by id or uid").ok(200, Some("EndpointOut")),
    op("put", EP, "v1.endpoint.update", "Endpoint", "Replace an endpoint (creates it, 201, when the uid is new)").body("EndpointUpdate").ok(200, Some("EndpointOut")).upsert(),
    op("patch", EP, "v1.endpoint.patch", "Endpoint", "Change some fields of an endpoint; disabling stops all its attempts").body("EndpointPatch").ok(200, Some("EndpointOut")),
    op("delete", EP, "v1.endpoint.delete", "Endpoint", "Delete an endpoint; its pending attempts stop, its attempt log stays").ok(204, None),
    op("get", "/api/v1/app/{app_id}/endpoint/{endpoint_id}/secret", "v1.endpoint.get-secret", "Endpoint", "The key receivers verify with (`whsec_`, or `whpk_` for ed25519)").ok(200, Some("EndpointSecretOut")),
    op("post", "/api/v1/app/{app_id}/endpoint/{endpoint_id}/secret/rotate", "v1.endpoint.rotate-secret", "Endpoint", "Rotate the secret; the old one keeps signing for 24 h").body("EndpointSecretRotateIn").ok(200, Some("EndpointSecretOut")),
    op("get", "/api/v1/app/{app_id}/endpoint/{endpoint_id}/headers", "v1.endpoint.get-headers", "Endpoint", "Custom headers sent with every request").ok(200, Some("EndpointHeadersOut")),
    op("put", "/api/v1/app/{app_id}/endpoint/{endpoint_id}/headers", "v1.endpoint.update-headers", "Endpoint", "Replace the custom headers").body("EndpointHeadersIn").ok(204, None),
    op("patch", "/api/v1/app/{app_id}/endpoint/{endpoint_id}/headers", "v1.endpoint.patch-headers", "Endpoint", "Add, change or delete custom headers").body("EndpointHeadersPatchIn").ok(204, None),
    op("get", "/api/v1/app/{app_id}/endpoint/{endpoint_id}/stats", "v1.endpoint.get-stats", "Endpoint", "Deliveries by status over a time range").ok(200, Some("EndpointStats")).query(&[Q::Range]),
    op("post", "/api/v1/app/{app_id}/endpoint/{endpoint_id}/send-example", "v1.endpoint.send-example", "Endpoint", "Send an example event to this endpoint only").body("EventExampleIn").ok(200, Some("MessageOut")),
    op("get", "/api/v1/app/{app_id}/endpoint/{endpoint_id}/flow", "v1.endpoint.get-flow", "Endpoint", "Flow control now: rate limit, allowed rate, backoff, pause, deliveries waiting or held, in flight").ok(200, Some("EndpointFlowOut")).ext(),
    op("get", "/api/v1/app/{app_id}/endpoint/{endpoint_id}/ordering/blocked", "v1.endpoint.list-blocked-keys", "Endpoint", "Ordering keys blocked behind a message that failed for good (orderingOnFailure: block)").ok(200, Some("[BlockedKeyOut]")).query(&[Q::Page]).ext(),
    op("post", "/api/v1/app/{app_id}/endpoint/{endpoint_id}/ordering/skip", "v1.endpoint.skip-blocked-key", "Endpoint", "Let a blocked key move on past its failed message (which stays failed); 404 unless blocked").body("OrderingSkipIn").ok(204, None).ext(),
    op("post", "/api/v1/app/{app_id}/endpoint/{endpoint_id}/recover", "v1.endpoint.recover", "Endpoint", "Send every failed delivery since a time again").body("RecoverIn").ok(202, Some("BackgroundTaskOut")),
    op("post", "/api/v1/app/{app_id}/endpoint/{endpoint_id}/replay-missing", "v1.endpoint.replay-missing", "Endpoint", "Send what the endpoint never received since a time (dryRun: count only)").body("ReplayIn").ok(202, Some("BackgroundTaskOut")),
    op("get", "/api/v1/app/{app_id}/endpoint/{endpoint_id}/attempt-stats", "v1.endpoint.get-attempt-stats", "Endpoint", "Attempts by outcome over a time range").ok(200, Some("EndpointAttemptStats")).query(&[Q::Range]),
    op("post", "/api/v1/app/{app_id}/endpoint/{endpoint_id}/bulk-replay", "v1.endpoint.bulk-replay", "Endpoint", "Send settled deliveries matching a filter again (dryRun: count only)").body("BulkReplayIn").ok(202, Some("BackgroundTaskOut")),
    // Messages
    op("get", "/api/v1/app/{app_id}/msg", "v1.message.list", "Message", "List messages, newest first").ok(200, Some("[MessageOut]")).query(&[Q::Page, Q::MessageFilters, Q::WithContent]),
    op("post", "/api/v1/app/{app_id}/msg", "v1.message.create", "Message", "Send a message: 202 once durably stored; delivery follows").body("MessageIn").ok(202, Some("MessageOut")).query(&[Q::WithContent, Q::Deliver]),
    op("get", "/api/v1/app/{app_id}/msg/{msg_id}", "v1.message.get", "Message", "Get a message by id or eventId").ok(200, Some("MessageOut")).query(&[Q::WithContent]),
    op("delete", "/api/v1/app/{app_id}/msg/{msg_id}/content", "v1.message.expunge-content", "Message", "Erase the message's payload").ok(204, None),
    op("post", "/api/v1/app/{app_id}/msg/expunge-all-contents", "v1.message.expunge-all-contents", "Message", "Erase every payload and response body of the application").ok(202, Some("BackgroundTaskOut")),
    op("post", "/api/v1/app/{app_id}/msg/precheck/active", "v1.message.precheck", "Message", "Would a message of this type reach any enabled endpoint?").body("MessagePrecheckIn").ok(200, Some("MessagePrecheckOut")),
    op("get", "/api/v1/app/{app_id}/events", "v1.message.events", "Message", "The application's messages as a stream, oldest first, from an iterator").ok(200, Some("MessageEventsOut")).query(&[Q::Page, Q::MessageFilters]),
    op("post", "/api/v1/app/{app_id}/msg/expunge-by-tag", "v1.message.expunge-by-tag", "Message", "Erase the payloads and response bodies of the application's messages with this tag").body("ExpungeByTagIn").ok(202, Some("BackgroundTaskOut")).ext(),
    op("post", "/api/v1/msg/expunge-by-tag", "v1.message.expunge-by-tag-everywhere", "Message", "Erase the payloads and response bodies of every application's messages with this tag (admin)").body("ExpungeByTagIn").ok(202, Some("BackgroundTaskOut")).ext(),
    op("post", "/api/v1/app/{app_id}/msg/bulk-expunge", "v1.message.bulk-expunge-content", "Message", "Erase the payloads of the given messages").body("BulkExpungeIn").ok(200, Some("BulkExpungeOut")),
    // Attempts
    op("get", "/api/v1/app/{app_id}/attempt/msg/{msg_id}", "v1.message-attempt.list-by-msg", "Message attempt", "A message's attempts, newest first").ok(200, Some("[MessageAttemptOut]")).query(&[Q::Page, Q::AttemptFilters, Q::EndpointId, Q::WithContent]),
    op("get", "/api/v1/app/{app_id}/attempt/endpoint/{endpoint_id}", "v1.message-attempt.list-by-endpoint", "Message attempt", "An endpoint's attempts, newest first").ok(200, Some("[MessageAttemptOut]")).query(&[Q::Page, Q::AttemptFilters, Q::WithMsg, Q::WithContent]),
    op("get", "/api/v1/app/{app_id}/msg/{msg_id}/attempt/{attempt_id}", "v1.message-attempt.get", "Message attempt", "One attempt").ok(200, Some("MessageAttemptOut")),
    op("delete", "/api/v1/app/{app_id}/msg/{msg_id}/attempt/{attempt_id}/content", "v1.message-attempt.expunge-content", "Message attempt", "Erase the attempt's response body").ok(204, None),
    op("get", "/api/v1/app/{app_id}/msg/{msg_id}/endpoint", "v1.message-attempt.list-attempted-destinations", "Message attempt", "Where a message goes: each endpoint with status and next attempt").ok(200, Some("[MessageEndpointOut]")).query(&[Q::Page]),
    op("get", "/api/v1/app/{app_id}/endpoint/{endpoint_id}/msg", "v1.message-attempt.list-attempted-messages", "Message attempt", "An endpoint's messages with status and next attempt").ok(200, Some("[EndpointMessageOut]")).query(&[Q::Page, Q::MessageFilters, Q::Status, Q::WithContent]),
    op("post", "/api/v1/app/{app_id}/msg/{msg_id}/endpoint/{endpoint_id}/resend", "v1.message-attempt.resend", "Message attempt", "Send again now, as a manual attempt (failed or succeeded)").ok(202, Some("EmptyResponse")),
    // Event types
    op("get", "/api/v1/event-type", "v1.event-type.list", "Event type", "List event types").ok(200, Some("[EventTypeOut]")).query(&[Q::Page, Q::EventTypeList]),
    op("post", "/api/v1/event-type", "v1.event-type.create", "Event type", "Create an event type").body("EventTypeIn").ok(201, Some("EventTypeOut")),
    op("get", "/api/v1/event-type/{event_type_name}", "v1.event-type.get", "Event type", "Get an event type (404 once archived, unless include_archived=true)").ok(200, Some("EventTypeOut")).query(&[Q::IncludeArchived]),
    op("post", "/api/v1/event-type/import/openapi", "v1.event-type.import-openapi", "Event type", "Create or update an event type per webhook of an OpenAPI document").body("EventTypeImportOpenApiIn").ok(200, Some("EventTypeImportOpenApiOut")),
    op("put", "/api/v1/event-type/{event_type_name}", "v1.event-type.update", "Event type", "Replace an event type (creates it, 201)").body("EventTypeUpdate").ok(200, Some("EventTypeOut")).upsert(),
    op("patch", "/api/v1/event-type/{event_type_name}", "v1.event-type.patch", "Event type", "Change some fields of an event type").body("EventTypePatch").ok(200, Some("EventTypeOut")),
    op("delete", "/api/v1/event-type/{event_type_name}", "v1.event-type.delete", "Event type", "Archive an event type (expunge=true deletes it)").ok(204, None).query(&[Q::Expunge]),
    // Authentication
    op("post", "/api/v1/auth/app-portal-access/{app_id}", "v1.authentication.app-portal-access", "Authentication", "A token and link for one application only (customer portal)").body("AppPortalAccessIn").body_optional().ok(200, Some("AppPortalAccessOut")),
    op("post", "/api/v1/auth/dashboard-access/{app_id}", "v1.authentication.dashboard-access", "Authentication", "Same as app-portal-access (older Svix clients)").body("AppPortalAccessIn").body_optional().ok(200, Some("AppPortalAccessOut")),
    op("post", "/api/v1/auth/app/{app_id}/expire-all", "v1.authentication.expire-all", "Authentication", "Every token scoped to the application stops working (now, or after expiry seconds)").body("ApplicationTokenExpireIn").body_optional().ok(204, None),
    op("get", "/api/v1/auth/whoami", "v1.authentication.whoami", "Authentication", "Who the token is: admin, or scoped to one application").ok(200, Some("WhoamiOut")),
    op("post", "/api/v1/auth/logout", "v1.authentication.logout", "Authentication", "Invalidate the app-scoped token used for this request").ok(204, None),
    // Background tasks
    op("get", "/api/v1/background-task", "v1.background-task.list", "Background task", "Results of bulk operations").ok(200, Some("[BackgroundTaskOut]")).query(&[Q::Page]),
    op("get", "/api/v1/background-task/{task_id}", "v1.background-task.get", "Background task", "One bulk operation's result").ok(200, Some("BackgroundTaskOut")),
    // Statistics and the environment
    op("post", "/api/v1/stats/usage/app", "v1.statistics.aggregate-app-stats", "Statistics", "Messages per application over a time range, as a background task").body("AppUsageStatsIn").ok(202, Some("AppUsageStatsOut")),
    op("put", "/api/v1/stats/usage/event-types", "v1.statistics.aggregate-event-types", "Statistics", "The event types endpoints subscribe to, as a background task").ok(202, Some("BackgroundTaskOut")),
    op("post", "/api/v1/environment/export", "v1.environment.export", "Environment", "The event type catalogue, to import elsewhere").ok(200, Some("EnvironmentOut")),
    op("post", "/api/v1/environment/import", "v1.environment.import", "Environment", "Create or update the event types listed").body("EnvironmentIn").body_optional().ok(204, None),
    // Operational webhooks
    op("get", "/api/v1/operational-webhook/endpoint", "v1.operational-webhook-endpoint.list", "Operational webhook", "Endpoints receiving Hookline's own events").ok(200, Some("[EndpointOut]")).query(&[Q::Page]),
    op("post", "/api/v1/operational-webhook/endpoint", "v1.operational-webhook-endpoint.create", "Operational webhook", "Subscribe an endpoint to endpoint.disabled, message.attempt.exhausted, …").body("EndpointIn").ok(201, Some("EndpointOut")),
    op("get", OPW, "v1.operational-webhook-endpoint.get", "Operational webhook", "Get an operational endpoint").ok(200, Some("EndpointOut")),
    op("put", OPW, "v1.operational-webhook-endpoint.update", "Operational webhook", "Replace an operational endpoint").body("EndpointUpdate").ok(200, Some("EndpointOut")),
    op("delete", OPW, "v1.operational-webhook-endpoint.delete", "Operational webhook", "Delete an operational endpoint").ok(204, None),
    op("get", "/api/v1/operational-webhook/endpoint/{endpoint_id}/secret", "v1.operational-webhook-endpoint.get-secret", "Operational webhook", "Its verification key").ok(200, Some("EndpointSecretOut")),
    op("post", "/api/v1/operational-webhook/endpoint/{endpoint_id}/secret/rotate", "v1.operational-webhook-endpoint.rotate-secret", "Operational webhook", "Rotate its secret").body("EndpointSecretRotateIn").ok(200, Some("EndpointSecretOut")),
    op("get", "/api/v1/operational-webhook/endpoint/{endpoint_id}/headers", "v1.operational-webhook-endpoint.get-headers", "Operational webhook", "Its custom headers").ok(200, Some("EndpointHeadersOut")),
    op("put", "/api/v1/operational-webhook/endpoint/{endpoint_id}/headers", "v1.operational-webhook-endpoint.update-headers", "Operational webhook", "Replace its custom headers").body("EndpointHeadersIn").ok(204, None),
    // Health and documentation
    op("get", "/api/v1/health", "v1.health.get", "Health", "204 while the server and its store answer (no token needed)").ok(204, None),
    op("get", "/api/v1/health/ping", "v1.health.ping", "Health", "204 while the server answers (no token needed)").ok(204, None),
    op("get", "/api/v1/openapi.json", "openapi", "Documentation", "This document (no token needed)").ok(200, None).ext(),
    op("get", "/api/v1/docs", "docs", "Documentation", "This document, rendered (no token needed)").ok(200, None).ext(),
];

/// Every documented operation as `(METHOD, path)`.
pub fn operations() -> impl Iterator<Item = (&'static str, &'static str)> {
    OPS.iter().map(|o| (o.method, o.path))
}

pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

fn build() -> Value {
    let mut paths: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    let mut list_schemas = Map::new();
    for o in OPS {
        let mut operation = json!({
            "operationId": o.id,
            "tags": [o.tag],
            "summary": o.summary,
            "parameters": parameters(o),
            "responses": responses(o, &mut list_schemas),
        });
        if let Some(body) = o.body {
            operation["requestBody"] = json!({"required": !o.body_optional,
                "content": {"application/json": {"schema": reference(body)}}});
        }
        if o.extension {
            operation["x-hookline"] = json!(true);
        }
        if o.tag == "Health" || o.tag == "Documentation" {
            operation["security"] = json!([]);
        }
        paths.entry(o.path).or_default().insert(o.method.into(), operation);
    }
    let mut schemas = schemas();
    for (name, keep) in REQUEST_SCHEMAS {
        if let Some(schema) = schemas.get_mut(*name) {
            nullable_optionals(schema, keep);
        }
    }
    schemas.extend(list_schemas);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Hookline API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Webhook delivery with a Svix v1 compatible API. Operations and fields marked \
                `x-hookline` are Hookline extensions; everything else behaves as in Svix, so the official \
                Svix SDKs work unchanged. Authenticate with `Authorization: Bearer <token>`. Errors are \
                `{\"code\", \"detail\"}`, or `{\"detail\": [{\"loc\", \"msg\", \"type\"}]}` for 422. Lists \
                page with `limit` (1 to 250), `iterator` and `done`; a query parameter given with an empty \
                or malformed value is a 422. Metrics: `GET /metrics` (Prometheus).\n\n\
                Where Svix's own OpenAPI document and its official SDKs disagree, Hookline follows the SDKs \
                and this document says what the server does: endpoints take `eventTypes` and `throttleRate` \
                (the older `filterTypes` and `rateLimit` are accepted too; `throttleRate` wins when both \
                are given), `secret/rotate` answers 200 with the new key (Svix documents 204 with no body), \
                PUT answers 201 when it creates. Deleting an event type archives it: it then reads as 404 \
                unless `include_archived=true`, and `?expunge=true` deletes it for good. A range whose \
                `until` is not after `since` is empty, not an error. This document is checked against the \
                server by schemathesis in CI.",
        },
        "servers": [{"url": "/"}],
        "security": [{"HTTPBearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"HTTPBearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
    })
}

/// Request bodies, and the optional fields of each the server refuses as
/// `null` (every other optional field means "not given" when `null`, as
/// serde's `Option` reads it).
const REQUEST_SCHEMAS: &[(&str, &[&str])] = &[
    ("ApplicationIn", &[]),
    ("ApplicationPatch", &[]),
    ("EndpointIn", &[]),
    ("EndpointUpdate", &[]),
    ("EndpointPatch", &[]),
    ("EndpointSecretRotateIn", &[]),
    ("EndpointHeadersPatchIn", &[]),
    ("RecoverIn", &[]),
    ("ReplayIn", &["dryRun"]),
    ("BulkReplayIn", &["dryRun"]),
    ("EventExampleIn", &[]),
    ("MessageIn", &[]),
    ("EventTypeIn", &["description"]),
    ("EventTypeUpdate", &["description"]),
    ("EventTypePatch", &[]),
    ("AppPortalAccessIn", &[]),
    ("BulkExpungeIn", &[]),
    ("OrderingSkipIn", &[]),
];

/// Let `null` through for every optional property not in `keep`.
fn nullable_optionals(schema: &mut Value, keep: &[&str]) {
    let required: Vec<String> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let Some(props) = schema["properties"].as_object_mut() else { return };
    for (name, prop) in props.iter_mut() {
        if required.contains(name) || keep.contains(&name.as_str()) {
            continue;
        }
        if let Some(ty) = prop.get("type").cloned() {
            let mut types: Vec<Value> = match ty {
                Value::Array(types) => types,
                other => vec![other],
            };
            if !types.contains(&json!("null")) {
                types.push(json!("null"));
            }
            prop["type"] = Value::Array(types);
            if let Some(values) = prop.get_mut("enum").and_then(Value::as_array_mut)
                && !values.contains(&Value::Null)
            {
                values.push(Value::Null);
            }
        } else if let Some(values) = prop.get_mut("enum").and_then(Value::as_array_mut) {
            if !values.contains(&Value::Null) {
                values.push(Value::Null);
            }
        } else if let Some(options) = prop.get_mut("oneOf").and_then(Value::as_array_mut) {
            if !options.contains(&json!({"type": "null"})) {
                options.push(json!({"type": "null"}));
            }
        } else if prop.get("$ref").is_some() {
            *prop = json!({"oneOf": [prop.clone(), {"type": "null"}]});
        }
    }
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn responses(o: &Op, lists: &mut Map<String, Value>) -> Value {
    let (status, schema) = o.ok;
    let ok = match schema {
        None => json!({"description": "Success"}),
        Some(list) if list.starts_with('[') => {
            let item = list.trim_matches(['[', ']']);
            let name = format!("ListResponse_{item}_");
            lists.insert(
                name.clone(),
                json!({
                    "type": "object",
                    "required": ["data", "done"],
                    "properties": {
                        "data": {"type": "array", "items": reference(item)},
                        "iterator": {"type": ["string", "null"]},
                        "prevIterator": {"type": ["string", "null"]},
                        "done": {"type": "boolean"},
                    },
                }),
            );
            json!({"description": "Success", "content": {"application/json": {"schema": reference(&name)}}})
        }
        Some(name) => {
            json!({"description": "Success", "content": {"application/json": {"schema": reference(name)}}})
        }
    };
    let mut r = json!({ status.to_string(): ok.clone() });
    if let Some((status, meaning)) = o.also {
        let mut other = ok;
        other["description"] = json!(meaning);
        r[status.to_string()] = other;
    }
    let error = |d: &str| json!({"description": d, "content": {"application/json": {"schema": reference("HttpErrorOut")}}});
    if o.tag != "Health" && o.tag != "Documentation" {
        r["400"] = error("Bad request");
        r["401"] = error("Missing or invalid token");
        r["403"] = error("The token may not do this");
        r["404"] = error("Not found");
        r["409"] = error("Conflict (uid, eventId, state)");
        r["413"] = error("Body too large");
        r["422"] = json!({"description": "Validation error",
            "content": {"application/json": {"schema": reference("HTTPValidationError")}}});
    }
    r
}

fn param(name: &str, location: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": location, "required": location == "path", "schema": schema, "description": description})
}

fn parameters(o: &Op) -> Value {
    let mut params: Vec<Value> = o
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| match name {
            "event_type_name" => param(name, "path", self::name(256), "The event type's name"),
            _ => param(
                name,
                "path",
                json!({"type": "string"}),
                "id, or uid / eventId where the object has one",
            ),
        })
        .collect();
    let string = || json!({"type": "string"});
    let boolean = || json!({"type": "boolean"});
    let time = dt;
    for q in o.query {
        match q {
            Q::Page => params.extend([
                param(
                    "limit",
                    "query",
                    json!({"type": "integer", "minimum": 1, "maximum": 250}),
                    "Page size (50)",
                ),
                param("iterator", "query", string(), "Where to continue; `-` prefix goes backwards"),
                param("order", "query", json!({"enum": ["ascending", "descending"]}), "Sort order"),
            ]),
            Q::WithContent => {
                params.push(param("with_content", "query", boolean(), "Include payloads / bodies"))
            }
            Q::MessageFilters => params.extend([
                param("event_types", "query", string(), "Comma-separated or repeated"),
                param("channel", "query", string(), "Only this channel"),
                param("tag", "query", string(), "Only this tag"),
                param("before", "query", time(), "Created before"),
                param("after", "query", time(), "Created after"),
            ]),
            Q::Status => params.push(param("status", "query", reference("MessageStatus"), "Delivery status")),
            Q::AttemptFilters => params.extend([
                param("status", "query", reference("MessageStatus"), "Attempt status"),
                param("status_code_class", "query", reference("StatusCodeClass"), "Response code class"),
                param("event_types", "query", string(), "Comma-separated or repeated"),
                param("channel", "query", string(), "Only this channel"),
                param("before", "query", time(), "Made before"),
                param("after", "query", time(), "Made after"),
            ]),
            Q::WithMsg => {
                params.push(param("with_msg", "query", boolean(), "Include the message (without payload)"))
            }
            Q::EndpointId => {
                params.push(param("endpoint_id", "query", string(), "Only attempts to this endpoint"))
            }
            Q::Range => params.extend([
                param("since", "query", time(), "From (default: 28 days ago)"),
                param("until", "query", time(), "Until"),
            ]),
            Q::GetIfExists => params.push(param(
                "get_if_exists",
                "query",
                boolean(),
                "Return the application with this uid if it exists",
            )),
            Q::EventTypeList => params.extend([
                param("include_archived", "query", boolean(), "Include archived types"),
                param("with_content", "query", boolean(), "Include schemas"),
            ]),
            Q::IncludeArchived => {
                params.push(param("include_archived", "query", boolean(), "Also an archived type"))
            }
            Q::Expunge => params.push(param("expunge", "query", boolean(), "Delete instead of archiving")),
            Q::Deliver => params.push(ext(
                param(
                    "deliver",
                    "query",
                    boolean(),
                    "false: store only, send to no endpoint (imported history)",
                ),
                "Store only, send to no endpoint (imported history)",
            )),
        }
    }
    Value::Array(params)
}

// --- schemas ---

fn object(required: &[&str], props: &[(&str, Value)]) -> Value {
    let properties: Map<String, Value> = props.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    json!({"type": "object", "required": required, "properties": properties})
}

fn t(ty: &str) -> Value {
    json!({"type": ty})
}

/// `orderingKey`: 1 to 256 characters, none of them a control character
/// (`domain::ordering::validate_key`).
fn ordering_key() -> Value {
    json!({"type": ["string", "null"], "minLength": 1, "maxLength": 256,
        "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"})
}

fn opt(ty: &str) -> Value {
    json!({"type": [ty, "null"]})
}

/// RFC 3339 date-times. `format` alone is only an annotation in JSON Schema
/// 2020-12, so the pattern says what the server parses: a real calendar
/// date (leap days included), a time, optional fractions and an offset.
fn dt() -> Value {
    json!({"type": "string", "format": "date-time", "pattern": DATE_TIME})
}

const DATE_TIME: &str = concat!(
    "^(?:[0-9]{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)",
    "|02-(?:0[1-9]|1[0-9]|2[0-8]))|(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)",
    "-02-29)T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,9})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
);

fn opt_dt() -> Value {
    let mut t = dt();
    t["type"] = json!(["string", "null"]);
    t
}

fn strings() -> Value {
    json!({"type": ["array", "null"], "items": {"type": "string"}, "uniqueItems": true})
}

fn map() -> Value {
    json!({"type": "object", "additionalProperties": {"type": "string"}})
}

fn ext(mut schema: Value, description: &str) -> Value {
    schema["x-hookline"] = json!(true);
    schema["description"] = json!(description);
    schema
}

/// `uid`s, event type names, channels, tags, event ids.
fn name(max_len: usize) -> Value {
    json!({"type": "string", "pattern": NAME_PATTERN, "minLength": 1, "maxLength": max_len})
}

const NAME_PATTERN: &str = "^[a-zA-Z0-9\\-_.]+$";

/// A set of names: absent or null for none, never empty, no item twice.
fn names(max_len: usize, max_items: usize) -> Value {
    json!({"type": ["array", "null"], "items": name(max_len), "minItems": 1, "maxItems": max_items,
        "uniqueItems": true})
}

/// A per-second rate: at least 1, a 16-bit number.
fn rate() -> Value {
    json!({"type": ["integer", "null"], "minimum": 1, "maximum": 65535})
}

/// A signing secret as the server accepts it: `whsec_` (optional) + the
/// canonical base64 of 24 to 64 bytes, or `whsk_` + that of a 32- or 64-byte
/// ed25519 key.
fn secret_pattern() -> String {
    const B: &str = "[A-Za-z0-9+/]";
    // The last character before `=` padding carries only zero bits.
    let two = format!("{B}[AQgw]==");
    let three = format!("{B}{B}[AEIMQUYcgkosw048]=");
    let hmac = format!("(?:{B}{{4}}){{8,20}}(?:{two}|{three})?|(?:{B}{{4}}){{21}}(?:{two})?");
    let ed25519 = format!("(?:{B}{{4}}){{10}}{three}|(?:{B}{{4}}){{21}}{two}");
    format!("^(?:(?:whsec_)?(?:{hmac})|whsk_(?:{ed25519}))$")
}

/// Custom headers: RFC 9110 token names other than the ones Hookline sets,
/// values without control characters; at most 50, and 16 KiB of names and
/// values together (the server says so in a 422 beyond).
fn header_map() -> Value {
    let reserved: Vec<String> = crate::domain::validate::RESERVED_HEADERS
        .iter()
        .map(|h| {
            h.chars()
                .map(|c| {
                    if c.is_ascii_alphabetic() {
                        format!("[{}{}]", c.to_ascii_lowercase(), c.to_ascii_uppercase())
                    } else if c == '-' {
                        "\\-".into()
                    } else {
                        c.to_string()
                    }
                })
                .collect()
        })
        .collect();
    json!({
        "type": "object",
        "maxProperties": crate::domain::validate::MAX_HEADERS,
        "propertyNames": {"pattern": format!("^(?!(?:{})$)[!#$%&'*+\\-.^_`|~0-9A-Za-z]+$", reserved.join("|"))},
        "additionalProperties": {"type": "string", "pattern": "^[^\\x00-\\x08\\x0a-\\x1f\\x7f]*$"},
        "description": "At most 50 headers and 16 KiB of names and values in total (422 beyond). Values of \
            credential headers (Authorization, Cookie, names containing token, secret, password, api-key, \
            signature) are never shown again and are encrypted at rest with the main key.",
    })
}

fn schemas() -> Map<String, Value> {
    let uid = || {
        let mut n = name(256);
        n["type"] = json!(["string", "null"]);
        n
    };
    let retry = || {
        ext(
            json!({"oneOf": [reference("RetryPolicy"), {"type": "null"}]}),
            "Per-endpoint retry policy; null = server default",
        )
    };
    let secret_kind = || ext(json!({"enum": ["hmac", "ed25519", null]}), "Kind of secret to generate");
    let app_fields = |name_required: bool| {
        let mut o = object(
            if name_required { &["name"] } else { &[] },
            &[
                ("name", json!({"type": "string", "minLength": 1})),
                ("uid", uid()),
                ("metadata", map()),
                ("throttleRate", rate()),
            ],
        );
        o["properties"]["rateLimit"] =
            ext(rate(), "Older name of throttleRate; throttleRate wins if both are given");
        o
    };
    let url = || {
        json!({"type": "string", "format": "uri", "pattern": "^[hH][tT][tT][pP][sS]?://[^/?#]", "maxLength": 65536,
            "description": "http or https. A host that is an IP address in a private, loopback, link-local or \
                otherwise reserved range is refused (422) unless the server allows it; names are checked \
                after resolution, at delivery time."})
    };
    let endpoint_fields: Vec<(&str, Value)> = vec![
        ("url", url()),
        ("description", t("string")),
        ("disabled", t("boolean")),
        ("uid", uid()),
        ("eventTypes", names(256, 1000)),
        ("channels", names(128, 10)),
        ("metadata", map()),
        ("throttleRate", rate()),
        ("retryPolicy", retry()),
        (
            "maxInFlight",
            ext(
                json!({"type": ["integer", "null"], "minimum": 1, "maximum": 1000}),
                "Requests to this endpoint in flight at once, per node; null = the server's --endpoint-concurrency",
            ),
        ),
        (
            "fifo",
            ext(
                opt("boolean"),
                "Every message to this endpoint in the order the API accepted it, as if all had one orderingKey",
            ),
        ),
        (
            "orderingOnFailure",
            ext(
                json!({"enum": ["skip", "block", null]}),
                "When the first message of an ordering key fails for good: skip it (default) or block the key \
                 until it succeeds or is skipped (POST …/ordering/skip)",
            ),
        ),
    ];
    let with = |base: &[(&str, Value)], more: &[(&str, Value)]| -> Vec<(String, Value)> {
        base.iter().chain(more).map(|(k, v)| (k.to_string(), v.clone())).collect()
    };
    let obj = |required: &[&str], props: Vec<(String, Value)>| {
        let props: Vec<(&str, Value)> = props.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        object(required, &props)
    };
    let status = || reference("MessageStatus");
    let status_text = || json!({"enum": ["success", "pending", "fail", "sending"]});
    let message_fields: Vec<(&str, Value)> = vec![
        ("id", t("string")),
        ("eventType", t("string")),
        ("eventId", opt("string")),
        ("payload", t("object")),
        ("channels", strings()),
        ("tags", strings()),
        ("timestamp", dt()),
        ("deliverAt", opt_dt()),
        ("orderingKey", ext(t("string"), "Its ordering key, if it has one")),
    ];
    let delivery_fields: Vec<(&str, Value)> = vec![
        ("status", status()),
        ("statusText", status_text()),
        ("nextAttempt", opt_dt()),
        (
            "waitingFor",
            ext(
                t("string"),
                "Held back until this earlier message of its ordering key has succeeded or settled",
            ),
        ),
    ];
    let endpoint_out: Vec<(&str, Value)> = endpoint_fields
        .iter()
        .cloned()
        .chain([
            ("id", t("string")),
            ("filterTypes", ext(strings(), "Same as eventTypes, for older clients")),
            ("version", t("integer")),
            ("createdAt", dt()),
            ("updatedAt", dt()),
        ])
        .collect();
    let event_type_fields: Vec<(&str, Value)> = vec![
        ("description", t("string")),
        ("archived", t("boolean")),
        ("deprecated", t("boolean")),
        (
            "schemas",
            json!({"type": ["object", "null"], "description": "JSON Schemas by version, each may carry `examples`"}),
        ),
        ("groupName", {
            let mut n = name(256);
            n["type"] = json!(["string", "null"]);
            n
        }),
        ("featureFlags", names(256, 100)),
    ];
    let range = || {
        object(
            &["since"],
            &[
                ("since", dt()),
                ("until", {
                    let mut t = opt_dt();
                    t["description"] = json!("Exclusive; at or before since, the range is empty");
                    t
                }),
            ],
        )
    };

    let mut s = Map::new();
    let mut add = |name: &str, schema: Value| {
        s.insert(name.to_owned(), schema);
    };
    add("ApplicationIn", app_fields(true));
    add("ApplicationPatch", app_fields(false));
    add("ApplicationOut", {
        let mut o = app_fields(true);
        o["required"] = json!(["id", "name", "metadata", "createdAt", "updatedAt"]);
        o["properties"]["id"] = t("string");
        o["properties"]["createdAt"] = dt();
        o["properties"]["updatedAt"] = dt();
        o
    });
    add(
        "EndpointIn",
        obj(
            &["url"],
            with(
                &endpoint_fields,
                &[
                    (
                        "secret",
                        json!({"type": ["string", "null"], "pattern": secret_pattern(), "description": "`whsec_` + base64 of 24 to 64 bytes (HMAC) or `whsk_` + base64 of a 32- or 64-byte key (ed25519); generated when absent"}),
                    ),
                    ("secretKind", secret_kind()),
                    ("headers", header_map()),
                ],
            ),
        ),
    );
    add("EndpointUpdate", obj(&["url"], with(&endpoint_fields, &[])));
    add("EndpointPatch", obj(&[], with(&endpoint_fields, &[])));
    add(
        "EndpointOut",
        obj(&["id", "url", "description", "metadata", "createdAt", "updatedAt"], with(&endpoint_out, &[])),
    );
    add("RetryPolicy", {
        let mut p = ext(
            object(
                &["schedule"],
                &[
                    (
                        "schedule",
                        json!({"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 2_592_000}, "maxItems": 50,
            "description": "Seconds to wait after each failed attempt (at most 30 days each); the first attempt is immediate"}),
                    ),
                    ("success", json!({"enum": ["2xx", "200"], "default": "2xx"})),
                    (
                        "timeout",
                        json!({"type": "integer", "minimum": 1, "maximum": 300, "default": 30, "description": "Seconds per attempt"}),
                    ),
                ],
            ),
            "Default: [5, 300, 1800, 7200, 18000, 36000, 36000], 2xx, 30 s",
        );
        p["additionalProperties"] = json!(false);
        p
    });

    add("EndpointSecretOut", object(&["key"], &[("key", t("string"))]));
    add(
        "EndpointSecretRotateIn",
        object(
            &[],
            &[
                ("key", json!({"type": ["string", "null"], "pattern": secret_pattern()})),
                (
                    "gracePeriodSeconds",
                    json!({"type": ["integer", "null"], "minimum": 0, "maximum": 604_800, "description": "How long the old secret keeps signing (86400; at most 7 days)"}),
                ),
                ("secretKind", secret_kind()),
            ],
        ),
    );
    add("EndpointHeadersIn", object(&["headers"], &[("headers", header_map())]));
    add(
        "EndpointHeadersPatchIn",
        object(
            &["headers"],
            &[
                ("headers", header_map()),
                ("deleteHeaders", json!({"type": ["array", "null"], "items": {"type": "string"}})),
            ],
        ),
    );
    add(
        "EndpointHeadersOut",
        object(&["headers", "sensitive"], &[("headers", map()), ("sensitive", strings())]),
    );
    add(
        "EndpointStats",
        object(
            &["success", "pending", "sending", "fail"],
            &[
                ("success", t("integer")),
                ("pending", t("integer")),
                ("sending", t("integer")),
                ("fail", t("integer")),
                ("canceled", t("integer")),
            ],
        ),
    );
    add("RecoverIn", range());
    add("ReplayIn", {
        let mut o = range();
        o["properties"]["dryRun"] = ext(t("boolean"), "Only count what would be sent (the task's count)");
        o
    });
    add("BulkReplayIn", {
        let mut o = range();
        o["properties"]["eventTypes"] = names(256, 1000);
        o["properties"]["channel"] = opt("string");
        o["properties"]["tag"] = opt("string");
        o["properties"]["status"] =
            json!({"type": ["integer", "null"], "enum": [0, 2, null], "description": "0 success, 2 fail"});
        o["properties"]["statusCodeClass"] = reference("StatusCodeClass");
        o["properties"]["dryRun"] = ext(t("boolean"), "Only count what would be sent");
        o
    });
    add(
        "BackgroundTaskOut",
        object(
            &["id", "status", "task", "updatedAt"],
            &[
                ("id", t("string")),
                ("status", json!({"enum": ["running", "finished", "failed"]})),
                (
                    "task",
                    json!({"enum": ["endpoint.recover", "endpoint.replay", "endpoint.bulk-replay", "application.purge_content", "application.stats", "event-type.aggregate"]}),
                ),
                ("data", t("object")),
                ("updatedAt", dt()),
                ("count", ext(t("integer"), "How many deliveries or messages the task touched")),
            ],
        ),
    );
    add(
        "EndpointFlowOut",
        object(
            &["allowedRate", "backingOff", "waiting", "held", "inFlight"],
            &[
                ("throttleRate", opt("integer")),
                (
                    "allowedRate",
                    json!({"type": ["number", "null"], "description": "Starts per second now; null: unbounded"}),
                ),
                ("backingOff", t("boolean")),
                ("pausedUntil", opt_dt()),
                ("pauseReason", opt("string")),
                ("waiting", json!({"type": "integer", "minimum": 0})),
                ("held", json!({"type": "integer", "minimum": 0})),
                ("inFlight", json!({"type": "integer", "minimum": 0})),
                ("maxInFlight", opt("integer")),
            ],
        ),
    );
    add(
        "BlockedKeyOut",
        object(
            &["key", "msgId", "blockedSince"],
            &[("key", t("string")), ("msgId", t("string")), ("blockedSince", dt())],
        ),
    );
    add(
        "OrderingSkipIn",
        object(
            &["key"],
            &[(
                "key",
                json!({"type": "string", "maxLength": 256, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$",
                    "description": "The blocked key; \"\" for a FIFO endpoint"}),
            )],
        ),
    );
    add(
        "EventExampleIn",
        object(
            &["eventType"],
            &[
                ("eventType", name(256)),
                ("exampleIndex", json!({"type": ["integer", "null"], "minimum": 0})),
                ("payload", json!({"type": ["object", "null"]})),
            ],
        ),
    );
    add(
        "MessageIn",
        object(
            &["eventType", "payload"],
            &[
                ("eventType", name(256)),
                ("payload", json!({"type": "object", "description": "Delivered byte for byte as sent"})),
                ("eventId", uid()),
                ("channels", names(128, 5)),
                ("tags", names(128, 5)),
                ("application", reference("ApplicationIn")),
                ("deliverAt", opt_dt()),
                ("payloadRetentionPeriod", json!({"type": ["integer", "null"], "minimum": 1, "maximum": 90})),
                (
                    "payloadRetentionHours",
                    json!({"type": ["integer", "null"], "minimum": 1, "maximum": 2160}),
                ),
                (
                    "orderingKey",
                    ext(
                        ordering_key(),
                        "Messages with the same key reach each endpoint in the order the API accepted them; \
                         different keys go in parallel. A manual resend is outside the order.",
                    ),
                ),
            ],
        ),
    );
    add("MessageOut", object(&["id", "eventType", "payload", "timestamp"], &message_fields));
    add(
        "EndpointMessageOut",
        obj(
            &["id", "eventType", "payload", "timestamp", "status", "statusText"],
            with(&message_fields, &delivery_fields),
        ),
    );
    add(
        "MessageEndpointOut",
        obj(
            &["id", "url", "status", "statusText", "createdAt", "updatedAt"],
            with(&endpoint_out, &delivery_fields),
        ),
    );
    add(
        "MessageAttemptOut",
        object(
            &[
                "id",
                "msgId",
                "endpointId",
                "url",
                "response",
                "responseStatusCode",
                "responseDurationMs",
                "status",
                "statusText",
                "triggerType",
                "timestamp",
            ],
            &[
                ("id", t("string")),
                ("msgId", t("string")),
                ("endpointId", t("string")),
                ("url", t("string")),
                ("response", json!({"type": "string", "description": "First 64 KiB of the response body"})),
                (
                    "responseStatusCode",
                    json!({"type": "integer", "description": "0 when no response arrived"}),
                ),
                ("responseDurationMs", t("integer")),
                ("status", status()),
                ("statusText", status_text()),
                ("triggerType", reference("MessageAttemptTriggerType")),
                ("timestamp", dt()),
                ("msg", reference("MessageOut")),
                (
                    "error",
                    ext(opt("string"), "Why no response arrived: timeout, connection, TLS, refused target"),
                ),
            ],
        ),
    );
    // Svix requires `description`; Hookline takes "" when it is left out.
    add("EventTypeIn", obj(&["name"], with(&event_type_fields, &[("name", name(256))])));
    add("EventTypeUpdate", obj(&[], with(&event_type_fields, &[])));
    add("EventTypePatch", obj(&[], with(&event_type_fields, &[])));
    add(
        "EventTypeOut",
        obj(
            &["name", "description", "deprecated", "createdAt", "updatedAt"],
            with(
                &event_type_fields,
                &[
                    ("name", t("string")),
                    ("featureFlag", opt("string")),
                    ("createdAt", dt()),
                    ("updatedAt", dt()),
                ],
            ),
        ),
    );
    add(
        "AppPortalAccessIn",
        object(
            &[],
            &[
                ("application", reference("ApplicationIn")),
                (
                    "expiry",
                    json!({"type": ["integer", "null"], "minimum": 1, "maximum": 31_536_000, "description": "Token lifetime in seconds (7 days; at most 365 days)"}),
                ),
            ],
        ),
    );
    add("AppPortalAccessOut", object(&["url", "token"], &[("url", t("string")), ("token", t("string"))]));
    add(
        "BulkExpungeIn",
        object(
            &[],
            &[("ids", json!({"type": ["array", "null"], "items": {"type": "string"}, "maxItems": 1000}))],
        ),
    );
    add(
        "BulkExpungeOut",
        object(
            &["results"],
            &[(
                "results",
                json!({"type": "object", "additionalProperties": {"enum": ["expunged", "not-found"]}}),
            )],
        ),
    );
    add("EmptyResponse", t("object"));
    add(
        "MessageStatus",
        json!({"type": "integer", "enum": [0, 1, 2, 3], "description": "0 success, 1 pending, 2 fail, 3 sending"}),
    );
    add(
        "MessageAttemptTriggerType",
        json!({"type": "integer", "enum": [0, 1], "description": "0 scheduled, 1 manual"}),
    );
    add("StatusCodeClass", json!({"type": "integer", "enum": [0, 100, 200, 300, 400, 500]}));
    add("HttpErrorOut", object(&["code", "detail"], &[("code", t("string")), ("detail", t("string"))]));
    add(
        "ValidationErrorItem",
        object(
            &["loc", "msg", "type"],
            &[
                ("loc", json!({"type": "array", "items": {"type": "string"}})),
                ("msg", t("string")),
                ("type", t("string")),
            ],
        ),
    );
    add(
        "HTTPValidationError",
        object(
            &["detail"],
            &[("detail", json!({"type": "array", "items": reference("ValidationErrorItem")}))],
        ),
    );
    sdk_schemas(&mut s);
    s
}

/// The bodies of the operations the SDKs 2.9 added (and erasure by tag).
fn sdk_schemas(s: &mut Map<String, Value>) {
    let mut add = |name: &str, schema: Value| {
        s.insert(name.to_owned(), schema);
    };
    let count = || json!({"type": "integer", "minimum": 0});
    add(
        "EndpointAttemptStats",
        object(
            &["success", "fail", "canceled"],
            &[("success", count()), ("fail", count()), ("canceled", count())],
        ),
    );
    add(
        "MessagePrecheckIn",
        object(&["eventType"], &[("eventType", name(256)), ("channels", names(128, 5))]),
    );
    add("MessagePrecheckOut", object(&["active"], &[("active", t("boolean"))]));
    add(
        "MessageEventsOut",
        object(
            &["data", "done", "iterator"],
            &[
                ("data", json!({"type": "array", "items": reference("MessageOut")})),
                ("done", t("boolean")),
                ("iterator", t("string")),
            ],
        ),
    );
    add("ExpungeByTagIn", object(&["tag"], &[("tag", name(128))]));
    add(
        "ApplicationTokenExpireIn",
        object(
            &[],
            &[
                ("expiry", json!({"type": ["integer", "null"], "minimum": 0, "maximum": 365 * 86_400})),
                ("sessionIds", json!({"type": ["array", "null"], "items": {"type": "string"}})),
            ],
        ),
    );
    add(
        "WhoamiOut",
        object(
            &["permissionSource"],
            &[
                ("envId", opt("string")),
                ("appId", opt("string")),
                ("streamAppId", opt("string")),
                ("permissionSource", json!({"enum": ["GlobalAuthToken", "SvixJwt"]})),
                ("sessionId", opt("string")),
            ],
        ),
    );
    add(
        "AppUsageStatsIn",
        object(
            &["since", "until"],
            &[
                ("since", dt()),
                ("until", dt()),
                ("appIds", json!({"type": ["array", "null"], "items": {"type": "string"}, "maxItems": 1000})),
            ],
        ),
    );
    add(
        "AppUsageStatsOut",
        object(
            &["id", "status", "task", "updatedAt", "unresolvedAppIds"],
            &[
                ("id", t("string")),
                ("status", json!({"enum": ["running", "finished", "failed"]})),
                ("task", t("string")),
                ("updatedAt", dt()),
                ("unresolvedAppIds", json!({"type": "array", "items": {"type": "string"}})),
            ],
        ),
    );
    add(
        "EventTypeImportOpenApiIn",
        object(
            &[],
            &[
                ("spec", json!({"type": ["object", "null"]})),
                ("specRaw", json!({"type": ["string", "null"], "description": "The document as JSON text"})),
                ("replaceAll", t("boolean")),
                ("dryRun", t("boolean")),
            ],
        ),
    );
    add(
        "EventTypeImportOpenApiOut",
        object(
            &["data"],
            &[(
                "data",
                object(
                    &["modified"],
                    &[
                        ("modified", json!({"type": "array", "items": {"type": "string"}})),
                        ("to_modify", json!({"type": "array", "items": {"type": "object"}})),
                    ],
                ),
            )],
        ),
    );
    add(
        "EnvironmentOut",
        object(
            &["createdAt", "eventTypes", "connectors"],
            &[
                ("version", t("integer")),
                ("createdAt", dt()),
                ("eventTypes", json!({"type": "array", "items": reference("EventTypeOut")})),
                ("settings", json!({"type": ["object", "null"]})),
                ("connectors", json!({"type": "array", "maxItems": 0})),
            ],
        ),
    );
    add(
        "EnvironmentIn",
        object(
            &[],
            &[
                ("eventTypes", json!({"type": ["array", "null"], "items": reference("EventTypeIn")})),
                ("settings", json!({"type": ["object", "null"]})),
                ("connectors", json!({"type": ["array", "null"], "maxItems": 0})),
            ],
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let text = doc.to_string();
        for part in text.split("\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "dangling reference to {name}");
        }
    }

    #[test]
    fn operation_ids_are_unique_and_paths_have_their_parameters() {
        let mut ids = std::collections::HashSet::new();
        for o in OPS {
            assert!(ids.insert(o.id), "duplicate operationId {}", o.id);
            let params = parameters(o);
            let in_path = params.as_array().unwrap().iter().filter(|p| p["in"] == "path").count();
            assert_eq!(in_path, o.path.matches('{').count(), "{}", o.path);
        }
    }
}
