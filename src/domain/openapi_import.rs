//! Event types from an OpenAPI document, as Svix's
//! `POST /api/v1/event-type/import/openapi` reads them: each entry of the
//! top-level `webhooks` object is an event type named by its key, described
//! by its operation's `description` (or `summary`), deprecated when the
//! operation is, grouped by `x-svix-group-name`, flagged by
//! `x-svix-feature-flags`, and its JSON request body's schema (with
//! `$ref`s into `components/schemas` resolved) becomes schema version `1`.

use serde_json::{Map, Value, json};

use super::model::NameSet;
use super::validate;

/// One event type found in the document.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportedEventType {
    pub name: String,
    pub description: String,
    pub deprecated: bool,
    pub schemas: Option<Value>,
    pub group_name: Option<String>,
    pub feature_flags: Option<NameSet>,
}

/// How deep `$ref`s are followed (a self-referencing schema stops there).
const MAX_REF_DEPTH: usize = 16;

/// The event types a document's `webhooks` define, by name. Errors say
/// what is wrong with the document, for the caller.
pub fn event_types(spec: &Value) -> Result<Vec<ImportedEventType>, String> {
    let Some(doc) = spec.as_object() else {
        return Err("the spec must be a JSON object (an OpenAPI document)".into());
    };
    let Some(webhooks) = doc.get("webhooks").and_then(Value::as_object) else {
        return Err("the spec has no `webhooks` object (OpenAPI 3.1) to read event types from".into());
    };
    let components = doc.get("components").and_then(|c| c.get("schemas")).and_then(Value::as_object);
    let mut out = Vec::new();
    for (name, item) in webhooks {
        validate::name(name, validate::EVENT_TYPE_MAX).map_err(|e| format!("webhook `{name}`: {e}"))?;
        let op = item.get("post").or_else(|| item.as_object().and_then(|o| o.values().next()));
        let op = op.and_then(Value::as_object).cloned().unwrap_or_default();
        let text = |key: &str| op.get(key).and_then(Value::as_str).map(str::to_owned);
        let schema = op
            .get("requestBody")
            .and_then(|b| b.get("content"))
            .and_then(|c| c.get("application/json"))
            .and_then(|j| j.get("schema"))
            .map(|s| resolve(s, components, 0));
        let flags: Option<NameSet> = op
            .get("x-svix-feature-flags")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect());
        out.push(ImportedEventType {
            name: name.clone(),
            description: text("description").or_else(|| text("summary")).unwrap_or_default(),
            deprecated: op.get("deprecated").and_then(Value::as_bool).unwrap_or(false),
            schemas: schema.map(|s| json!({ "1": s })),
            group_name: text("x-svix-group-name"),
            feature_flags: flags.filter(|f| !f.is_empty()),
        });
    }
    Ok(out)
}

/// `schema` with `#/components/schemas/…` references replaced by what
/// they name (up to [`MAX_REF_DEPTH`] deep; deeper ones stay references).
fn resolve(schema: &Value, components: Option<&Map<String, Value>>, depth: usize) -> Value {
    match schema {
        Value::Object(o) => {
            let target = o
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
                .and_then(|name| components?.get(name));
            match target {
                Some(t) if depth < MAX_REF_DEPTH => resolve(t, components, depth + 1),
                _ => {
                    Value::Object(o.iter().map(|(k, v)| (k.clone(), resolve(v, components, depth))).collect())
                }
            }
        }
        Value::Array(a) => Value::Array(a.iter().map(|v| resolve(v, components, depth)).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhooks_become_event_types_with_resolved_schemas() {
        let spec = json!({
            "openapi": "3.1.0",
            "webhooks": {
                "invoice.paid": {"post": {
                    "description": "An invoice was paid",
                    "x-svix-group-name": "invoice",
                    "x-svix-feature-flags": ["beta"],
                    "requestBody": {"content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Invoice"}}}}
                }},
                "user.gone": {"post": {"summary": "A user left", "deprecated": true}}
            },
            "components": {"schemas": {
                "Invoice": {"type": "object", "properties": {"amount": {"$ref": "#/components/schemas/Amount"}}},
                "Amount": {"type": "integer"}
            }}
        });
        let types = event_types(&spec).unwrap();
        assert_eq!(types.len(), 2);
        let paid = &types[0];
        assert_eq!((paid.name.as_str(), paid.description.as_str()), ("invoice.paid", "An invoice was paid"));
        assert_eq!(paid.group_name.as_deref(), Some("invoice"));
        assert_eq!(paid.feature_flags, Some(NameSet::from(["beta".to_string()])));
        assert_eq!(
            paid.schemas,
            Some(json!({"1": {"type": "object", "properties": {"amount": {"type": "integer"}}}}))
        );
        let gone = &types[1];
        assert_eq!(
            (gone.description.as_str(), gone.deprecated, gone.schemas.clone()),
            ("A user left", true, None)
        );
    }

    #[test]
    fn bad_documents_say_why() {
        assert!(event_types(&json!([])).unwrap_err().contains("JSON object"));
        assert!(event_types(&json!({"paths": {}})).unwrap_err().contains("webhooks"));
        assert!(event_types(&json!({"webhooks": {"bad name!": {}}})).unwrap_err().contains("bad name!"));
    }

    #[test]
    fn self_references_stop() {
        let spec = json!({
            "webhooks": {"a.b": {"post": {"requestBody": {"content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Node"}}}}}}},
            "components": {"schemas": {"Node": {"type": "object", "properties": {
                "next": {"$ref": "#/components/schemas/Node"}}}}}
        });
        let schema = event_types(&spec).unwrap()[0].schemas.clone().unwrap();
        assert!(schema.to_string().contains("$ref"), "the cycle is cut, not followed forever");
    }
}
