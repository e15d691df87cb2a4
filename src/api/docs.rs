//! `/api/v1/docs`: the OpenAPI document rendered as one HTML page, with no
//! external assets (it must work offline, behind firewalls).

use std::fmt::Write as _;

use serde_json::Value;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A short type description, with schema references as links.
fn type_of(schema: &Value) -> String {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        return format!("<a href=\"#schema-{0}\">{0}</a>", esc(name));
    }
    if let Some(one_of) = schema.get("oneOf").and_then(Value::as_array) {
        return one_of.iter().map(type_of).collect::<Vec<_>>().join(" | ");
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return values.iter().map(|v| esc(&v.to_string())).collect::<Vec<_>>().join(" | ");
    }
    let ty = match schema.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" | "),
        _ => "any".into(),
    };
    match schema.get("items") {
        Some(items) => format!("{} of {}", esc(&ty), type_of(items)),
        None => esc(&ty),
    }
}

fn described(schema: &Value) -> String {
    let mut out = schema.get("description").and_then(Value::as_str).map(esc).unwrap_or_default();
    if schema.get("x-hookline").is_some() {
        out.push_str(" <span class=\"ext\">Hookline extension</span>");
    }
    out
}

pub fn page(doc: &Value) -> String {
    let mut html = String::from(concat!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<title>Hookline API reference</title><style>",
        "body{font:15px/1.5 system-ui,sans-serif;max-width:1000px;margin:0 auto;padding:1rem;color:#1d2330}",
        "h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2.5rem}",
        ".op{border:1px solid #e3e6ec;border-radius:6px;padding:.6rem .9rem;margin:.8rem 0}",
        ".m{display:inline-block;min-width:4.2rem;font-weight:700;font-family:monospace}",
        ".get{color:#1769aa}.post{color:#287d3c}.put{color:#a15c00}.patch{color:#7b4bb3}.delete{color:#b3261e}",
        "code{background:#f3f4f7;padding:0 .2rem;border-radius:3px}table{border-collapse:collapse;width:100%;margin:.4rem 0}",
        "td,th{text-align:left;border-top:1px solid #eee;padding:.2rem .4rem;vertical-align:top;font-size:14px}",
        ".ext{background:#fff3cd;color:#7a5a00;border-radius:3px;padding:0 .3rem;font-size:12px}",
        "</style></head><body>",
    ));
    let info = &doc["info"];
    let _ = write!(
        html,
        "<h1>{} <small>{}</small></h1><p>{}</p><p>Machine-readable: <a href=\"/api/v1/openapi.json\">/api/v1/openapi.json</a></p>",
        esc(info["title"].as_str().unwrap_or_default()),
        esc(info["version"].as_str().unwrap_or_default()),
        esc(info["description"].as_str().unwrap_or_default()),
    );

    // Operations, grouped by tag in first-seen order.
    let mut tags: Vec<&str> = Vec::new();
    let mut ops: Vec<(&str, &str, &str, &Value)> = Vec::new();
    for (path, methods) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in methods.as_object().into_iter().flatten() {
            let tag = op["tags"][0].as_str().unwrap_or("Other");
            if !tags.contains(&tag) {
                tags.push(tag);
            }
            ops.push((tag, method, path, op));
        }
    }
    for tag in &tags {
        let _ = write!(html, "<h2>{}</h2>", esc(tag));
        for (_, method, path, op) in ops.iter().filter(|(t, ..)| t == tag) {
            let _ = write!(
                html,
                "<div class=\"op\" id=\"{}\"><span class=\"m {method}\">{}</span> <code>{}</code>{}<br>{}",
                esc(op["operationId"].as_str().unwrap_or_default()),
                method.to_uppercase(),
                esc(path),
                if op.get("x-hookline").is_some() {
                    " <span class=\"ext\">Hookline extension</span>"
                } else {
                    ""
                },
                esc(op["summary"].as_str().unwrap_or_default()),
            );
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            if !params.is_empty() {
                html.push_str("<table><tr><th>Parameter</th><th>In</th><th>Type</th><th></th></tr>");
                for p in &params {
                    let _ = write!(
                        html,
                        "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(p["name"].as_str().unwrap_or_default()),
                        esc(p["in"].as_str().unwrap_or_default()),
                        type_of(&p["schema"]),
                        described(p),
                    );
                }
                html.push_str("</table>");
            }
            if let Some(body) = op.pointer("/requestBody/content/application~1json/schema") {
                let _ = write!(html, "Body: {}<br>", type_of(body));
            }
            let mut answers = Vec::new();
            for (status, r) in op["responses"].as_object().into_iter().flatten() {
                let schema = r.pointer("/content/application~1json/schema").map(type_of);
                answers.push(match schema {
                    Some(s) if status.starts_with('2') => format!("<b>{status}</b> {s}"),
                    _ => status.clone(),
                });
            }
            let _ = write!(html, "Responses: {}</div>", answers.join(", "));
        }
    }

    html.push_str("<h2>Schemas</h2>");
    for (name, schema) in doc["components"]["schemas"].as_object().into_iter().flatten() {
        let _ =
            write!(html, "<div class=\"op\" id=\"schema-{0}\"><b>{0}</b> {1}", esc(name), described(schema));
        match schema.get("properties").and_then(Value::as_object) {
            Some(props) => {
                let required: Vec<&str> =
                    schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                html.push_str("<table><tr><th>Field</th><th>Type</th><th></th></tr>");
                for (field, s) in props {
                    let _ = write!(
                        html,
                        "<tr><td><code>{}</code>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(field),
                        if required.contains(&field.as_str()) { " *" } else { "" },
                        type_of(s),
                        described(s),
                    );
                }
                html.push_str("</table>");
            }
            None => {
                let _ = write!(html, " — {}", type_of(schema));
            }
        }
        html.push_str("</div>");
    }
    html.push_str("</body></html>");
    html
}
