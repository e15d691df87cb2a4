//! `hookline import`: copy what a user configured in a Svix-compatible
//! server (Svix's cloud, a self-hosted Svix, another Hookline) into a
//! Hookline, through both servers' public APIs.
//!
//! Copied: event types (with schemas), applications (uid, name, metadata,
//! throttle rate), endpoints (url, uid, description, filters, channels,
//! headers, disabled, metadata, throttle rate, retry policy where the
//! source has one, and the signing secret, so receivers keep verifying),
//! and with `--messages-since` the messages created since then, with their
//! payloads, stored without being sent again.
//!
//! Idempotent: objects are matched by uid, and an application or endpoint
//! that has none at the source gets its source id as uid (so code that
//! names it by its old id keeps working); a message is matched by its
//! eventId, or its source id when it has none. A second run updates what
//! changed and creates nothing twice. `--dry-run` reads both sides and
//! writes nothing.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[derive(Args, Debug, Clone)]
pub struct ImportArgs {
    /// The source: base URL of a Svix-compatible server.
    #[arg(long)]
    pub from: String,
    /// API token of the source.
    #[arg(long, env = "HOOKLINE_IMPORT_FROM_TOKEN", hide_env_values = true)]
    pub from_token: String,
    /// The Hookline to write into.
    #[arg(long, alias = "server", env = "HOOKLINE_URL", default_value = "http://127.0.0.1:8071")]
    pub url: String,
    /// Admin API token of that Hookline.
    #[arg(long, env = "HOOKLINE_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Also copy the messages created since this time (RFC 3339), with
    /// their payloads; they are stored, not sent again.
    #[arg(long)]
    pub messages_since: Option<chrono::DateTime<chrono::Utc>>,
    /// Print what would be created or updated; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// No progress bar (it is drawn only on a terminal anyway).
    #[arg(long)]
    pub quiet: bool,
}

/// One side of the copy: a base URL and a token.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
    name: &'static str,
}

impl Api {
    fn new(http: &reqwest::Client, base: &str, token: &str, name: &'static str) -> Self {
        Api { http: http.clone(), base: base.trim_end_matches('/').to_owned(), token: token.to_owned(), name }
    }

    /// Status and JSON body (Null when empty).
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut req =
            self.http.request(method.clone(), format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.with_context(|| format!("{} {method} {path}: no answer", self.name))?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Ok((status, json))
    }

    /// A 2xx body, or an error naming `what` and the answer.
    async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> anyhow::Result<Value> {
        let (status, json) = self.call(method, path, body).await?;
        if !status.is_success() {
            bail!("the {} refused {what}: {status} {json}", self.name);
        }
        Ok(json)
    }

    /// The object, or `None` on a 404.
    async fn find(&self, path: &str, what: &str) -> anyhow::Result<Option<Value>> {
        match self.call(Method::GET, path, None).await? {
            (StatusCode::NOT_FOUND, _) => Ok(None),
            (s, json) if s.is_success() => Ok(Some(json)),
            (s, json) => bail!("the {} refused reading {what}: {s} {json}", self.name),
        }
    }

    /// Every item of a Svix list, following `iterator` until `done`.
    async fn list(&self, path: &str, what: &str) -> anyhow::Result<Vec<Value>> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut iterator: Option<String> = None;
        loop {
            let page = match &iterator {
                Some(it) => format!("{path}{sep}limit=250&iterator={it}"),
                None => format!("{path}{sep}limit=250"),
            };
            let json = self.expect(Method::GET, &page, None, &format!("listing {what}")).await?;
            let data = json["data"].as_array().cloned().unwrap_or_default();
            let done = json["done"].as_bool().unwrap_or(true) || data.is_empty();
            items.extend(data);
            iterator = json["iterator"].as_str().map(str::to_owned);
            if done || iterator.is_none() {
                return Ok(items);
            }
        }
    }
}

/// What happened to each kind of object.
#[derive(Default)]
struct Tally {
    created: u64,
    updated: u64,
    unchanged: u64,
}

#[derive(Default)]
struct Summary {
    kinds: BTreeMap<&'static str, Tally>,
    warnings: Vec<String>,
    errors: Vec<String>,
}

#[derive(Clone, Copy)]
enum Outcome {
    Created,
    Updated,
    Unchanged,
}

impl Summary {
    fn count(&mut self, kind: &'static str, outcome: Outcome) {
        let t = self.kinds.entry(kind).or_default();
        match outcome {
            Outcome::Created => t.created += 1,
            Outcome::Updated => t.updated += 1,
            Outcome::Unchanged => t.unchanged += 1,
        }
    }
}

/// Everything read from the source, before anything is written.
struct Source {
    event_types: Vec<Value>,
    apps: Vec<(Value, Vec<SourceEndpoint>, Vec<Value>)>,
}

struct SourceEndpoint {
    endpoint: Value,
    secret: String,
    headers: Value,
}

pub async fn run(args: ImportArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60)).build()?;
    let src = Api::new(&http, &args.from, &args.from_token, "source");
    let dst = Api::new(&http, &args.url, &args.token, "destination");
    dst.expect(Method::GET, "/api/v1/event-type?limit=1", None, "the token (it must be an admin token)")
        .await?;

    println!("Reading {} …", src.base);
    let source = read_source(&src, &args).await?;
    let total = source.event_types.len()
        + source.apps.iter().map(|(_, eps, msgs)| 1 + eps.len() + msgs.len()).sum::<usize>();
    let bar = if args.quiet { ProgressBar::hidden() } else { ProgressBar::new(total as u64) };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut summary = Summary::default();
    let verb = if args.dry_run { "would " } else { "" };

    for et in &source.event_types {
        let name = et["name"].as_str().unwrap_or_default();
        bar.set_message(format!("event type {name}"));
        match import_event_type(&dst, et, args.dry_run).await {
            Ok(o) => {
                note(&bar, &mut summary, "event types", o, verb, &format!("event type {name}"), args.dry_run)
            }
            Err(e) => summary.errors.push(format!("event type {name}: {e:#}")),
        }
        bar.inc(1);
    }
    for (app, endpoints, messages) in &source.apps {
        let app_key = key_of(app);
        bar.set_message(format!("application {app_key}"));
        let outcome = import_app(&dst, app, &app_key, args.dry_run).await;
        bar.inc(1);
        match outcome {
            Ok(o) => note(
                &bar,
                &mut summary,
                "applications",
                o,
                verb,
                &format!("application {app_key}"),
                args.dry_run,
            ),
            Err(e) => {
                summary.errors.push(format!("application {app_key}: {e:#}"));
                bar.inc((endpoints.len() + messages.len()) as u64);
                continue;
            }
        }
        // Messages before endpoints, so a first run's history reaches no
        // endpoint even by fan-out (they are stored undelivered anyway).
        for msg in messages {
            let id = msg["id"].as_str().unwrap_or_default();
            let what = format!("message {id} of application {app_key}");
            match import_message(&dst, &app_key, msg, args.dry_run).await {
                Ok(o) => note(&bar, &mut summary, "messages", o, verb, &what, args.dry_run),
                Err(e) => summary.errors.push(format!("{what}: {e:#}")),
            }
            bar.inc(1);
        }
        for ep in endpoints {
            let ep_key = key_of(&ep.endpoint);
            let what = format!("endpoint {ep_key} of application {app_key}");
            bar.set_message(what.clone());
            if let Some(names) = ep.headers["sensitive"].as_array().filter(|s| !s.is_empty()) {
                let names: Vec<&str> = names.iter().filter_map(Value::as_str).collect();
                summary.warnings.push(format!(
                    "{what}: the source does not reveal the values of headers {}; set them again",
                    names.join(", ")
                ));
            }
            match import_endpoint(&dst, &app_key, &ep_key, ep, args.dry_run).await {
                Ok(o) => note(&bar, &mut summary, "endpoints", o, verb, &what, args.dry_run),
                Err(e) => summary.errors.push(format!("{what}: {e:#}")),
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    print_summary(&summary, args.dry_run);
    if !summary.errors.is_empty() {
        bail!("{} object(s) could not be imported (listed above)", summary.errors.len());
    }
    Ok(())
}

/// Count the outcome; on a dry run, say what would change.
fn note(
    bar: &ProgressBar,
    s: &mut Summary,
    kind: &'static str,
    o: Outcome,
    verb: &str,
    what: &str,
    dry_run: bool,
) {
    s.count(kind, o);
    if dry_run {
        match o {
            Outcome::Created => bar.suspend(|| println!("{verb}create {what}")),
            Outcome::Updated => bar.suspend(|| println!("{verb}update {what}")),
            Outcome::Unchanged => {}
        }
    }
}

fn print_summary(s: &Summary, dry_run: bool) {
    println!("{}", if dry_run { "Dry run: nothing was written." } else { "Import finished." });
    for kind in ["event types", "applications", "endpoints", "messages"] {
        let t = s.kinds.get(kind).map_or((0, 0, 0), |t| (t.created, t.updated, t.unchanged));
        let (c, u) = if dry_run { ("to create", "to update") } else { ("created", "updated") };
        println!("  {kind}: {} {c}, {} {u}, {} unchanged", t.0, t.1, t.2);
    }
    for w in &s.warnings {
        println!("warning: {w}");
    }
    for e in &s.errors {
        eprintln!("error: {e}");
    }
}

/// How an application or endpoint is found again: its uid, else its id at
/// the source.
fn key_of(obj: &Value) -> String {
    obj["uid"].as_str().or(obj["id"].as_str()).unwrap_or_default().to_owned()
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn read_source(src: &Api, args: &ImportArgs) -> anyhow::Result<Source> {
    let event_types =
        src.list("/api/v1/event-type?include_archived=true&with_content=true", "the event types").await?;
    let mut apps = Vec::new();
    for app in src.list("/api/v1/app", "the applications").await? {
        let id = app["id"].as_str().unwrap_or_default().to_owned();
        let mut endpoints = Vec::new();
        for ep in src
            .list(&format!("/api/v1/app/{id}/endpoint"), &format!("the endpoints of application {id}"))
            .await?
        {
            let ep_id = ep["id"].as_str().unwrap_or_default();
            let what = format!("endpoint {ep_id} of application {id}");
            let base = format!("/api/v1/app/{id}/endpoint/{ep_id}");
            let secret = src
                .expect(Method::GET, &format!("{base}/secret"), None, &format!("the secret of {what}"))
                .await?;
            let headers = src
                .expect(Method::GET, &format!("{base}/headers"), None, &format!("the headers of {what}"))
                .await?;
            let secret = secret["key"].as_str().unwrap_or_default().to_owned();
            endpoints.push(SourceEndpoint { endpoint: ep, secret, headers });
        }
        let messages = match args.messages_since {
            Some(since) => {
                let after = enc(&since.to_rfc3339());
                let path = format!("/api/v1/app/{id}/msg?with_content=true&after={after}");
                let mut msgs = src.list(&path, &format!("the messages of application {id}")).await?;
                msgs.reverse(); // oldest first, as they were sent
                msgs
            }
            None => Vec::new(),
        };
        apps.push((app, endpoints, messages));
    }
    Ok(Source { event_types, apps })
}

/// The fields of `obj` named in `keys`, with absent ones as null (so two
/// objects compare by what the import sets).
fn pick(obj: &Value, keys: &[&str]) -> Value {
    Value::Object(keys.iter().map(|k| (k.to_string(), obj.get(*k).cloned().unwrap_or(Value::Null))).collect())
}

/// Svix's old name for the throttle rate was `rateLimit`.
fn throttle(obj: &Value) -> Value {
    obj.get("throttleRate").filter(|v| !v.is_null()).or(obj.get("rateLimit")).cloned().unwrap_or(Value::Null)
}

async fn import_event_type(dst: &Api, et: &Value, dry_run: bool) -> anyhow::Result<Outcome> {
    let name = et["name"].as_str().unwrap_or_default();
    let keys = ["description", "archived", "deprecated", "schemas", "groupName", "featureFlags"];
    let mut want = pick(et, &keys);
    want["archived"] = json!(et["archived"].as_bool().unwrap_or(false));
    want["deprecated"] = json!(et["deprecated"].as_bool().unwrap_or(false));
    want["description"] = json!(et["description"].as_str().unwrap_or_default());
    let path = format!("/api/v1/event-type/{}", enc(name));
    // Archived types read as 404 without the flag (on Hookline).
    let read = format!("{path}?include_archived=true");
    let outcome = match dst.find(&read, &format!("event type {name}")).await? {
        None => Outcome::Created,
        Some(have) if pick(&have, &keys) == want => return Ok(Outcome::Unchanged),
        Some(_) => Outcome::Updated,
    };
    if !dry_run {
        dst.expect(Method::PUT, &path, Some(&want), &format!("writing event type {name}")).await?;
    }
    Ok(outcome)
}

async fn import_app(dst: &Api, app: &Value, key: &str, dry_run: bool) -> anyhow::Result<Outcome> {
    let want = json!({
        "name": app["name"].as_str().unwrap_or(key),
        "uid": key,
        "metadata": object_or_empty(app, "metadata"),
        "throttleRate": throttle(app),
    });
    let path = format!("/api/v1/app/{}", enc(key));
    let outcome = match dst.find(&path, &format!("application {key}")).await? {
        None => Outcome::Created,
        Some(have) => {
            let have = json!({"name": have["name"], "uid": have["uid"], "metadata": object_or_empty(&have, "metadata"),
                "throttleRate": throttle(&have)});
            if have == want {
                return Ok(Outcome::Unchanged);
            }
            Outcome::Updated
        }
    };
    if !dry_run {
        match outcome {
            Outcome::Created => dst.expect(Method::POST, "/api/v1/app", Some(&want), "creating it").await?,
            _ => dst.expect(Method::PUT, &path, Some(&want), "updating it").await?,
        };
    }
    Ok(outcome)
}

fn object_or_empty(obj: &Value, key: &str) -> Value {
    obj.get(key).filter(|m| m.is_object()).cloned().unwrap_or(json!({}))
}

/// A list of names, sorted, or null (Svix sends sets in any order).
fn names(v: Option<&Value>) -> Value {
    match v.and_then(Value::as_array) {
        Some(items) => {
            let mut names: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
            names.sort_unstable();
            json!(names)
        }
        None => Value::Null,
    }
}

/// An endpoint as the import sets it (what two sides are compared by).
fn endpoint_fields(ep: &Value, key: &str, headers: &Value) -> Value {
    let filter = ep.get("filterTypes").filter(|v| !v.is_null()).or(ep.get("eventTypes"));
    let mut fields = json!({
        "url": ep["url"],
        "uid": key,
        "description": ep["description"].as_str().unwrap_or_default(),
        "filterTypes": names(filter),
        "channels": names(ep.get("channels")),
        "disabled": ep["disabled"].as_bool().unwrap_or(false),
        "metadata": object_or_empty(ep, "metadata"),
        "throttleRate": throttle(ep),
        "headers": object_or_empty(headers, "headers"),
    });
    // A Hookline source has retry policies (an extension Svix lacks).
    if let Some(policy) = ep.get("retryPolicy") {
        fields["retryPolicy"] = policy.clone();
    }
    fields
}

async fn import_endpoint(
    dst: &Api,
    app_key: &str,
    key: &str,
    src: &SourceEndpoint,
    dry_run: bool,
) -> anyhow::Result<Outcome> {
    if !src.secret.starts_with("whsec_") {
        bail!(
            "the source shows only the public key of its secret (`{}…`); the signing key cannot be copied",
            src.secret.chars().take(5).collect::<String>()
        );
    }
    let want = endpoint_fields(&src.endpoint, key, &src.headers);
    let base = format!("/api/v1/app/{}/endpoint/{}", enc(app_key), enc(key));
    let Some(have) = dst.find(&base, "it").await? else {
        if !dry_run {
            let mut body = want.clone();
            body["secret"] = json!(src.secret);
            let path = format!("/api/v1/app/{}/endpoint", enc(app_key));
            dst.expect(Method::POST, &path, Some(&body), "creating it").await?;
        }
        return Ok(Outcome::Created);
    };
    let headers = dst.expect(Method::GET, &format!("{base}/headers"), None, "reading its headers").await?;
    let mut have_fields = endpoint_fields(&have, key, &headers);
    if want.get("retryPolicy").is_none() {
        have_fields.as_object_mut().map(|o| o.remove("retryPolicy"));
    }
    let secret = dst.expect(Method::GET, &format!("{base}/secret"), None, "reading its secret").await?;
    let same_fields = have_fields == want;
    let same_secret = secret["key"].as_str() == Some(src.secret.as_str());
    if same_fields && same_secret {
        return Ok(Outcome::Unchanged);
    }
    if !dry_run {
        if !same_fields {
            dst.expect(Method::PUT, &base, Some(&want), "updating it").await?;
        }
        if !same_secret {
            let rotate = json!({"key": src.secret, "gracePeriodSeconds": 0});
            dst.expect(Method::POST, &format!("{base}/secret/rotate"), Some(&rotate), "setting its secret")
                .await?;
        }
    }
    Ok(Outcome::Updated)
}

async fn import_message(dst: &Api, app_key: &str, msg: &Value, dry_run: bool) -> anyhow::Result<Outcome> {
    let key = msg["eventId"].as_str().or(msg["id"].as_str()).unwrap_or_default();
    let app = enc(app_key);
    if dst.find(&format!("/api/v1/app/{app}/msg/{}", enc(key)), "it").await?.is_some() {
        return Ok(Outcome::Unchanged);
    }
    if !dry_run {
        let body = json!({
            "eventType": msg["eventType"],
            "payload": msg.get("payload").filter(|p| p.is_object()).cloned().unwrap_or(json!({})),
            "eventId": key,
            "channels": msg["channels"],
            "tags": msg["tags"],
        });
        dst.expect(Method::POST, &format!("/api/v1/app/{app}/msg?deliver=false"), Some(&body), "storing it")
            .await?;
    }
    Ok(Outcome::Created)
}
