//! `hookline send`: post a message to a running Hookline from the command
//! line, through the same public API as any client.

use clap::Args;
use serde_json::{Value, json};

#[derive(Args, Debug, Clone)]
pub struct SendArgs {
    /// Hookline's base URL.
    #[arg(long, env = "HOOKLINE_URL", default_value = "http://127.0.0.1:8071")]
    pub server: String,
    /// API token.
    #[arg(long, env = "HOOKLINE_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Application id or uid.
    #[arg(long)]
    pub app: String,
    #[arg(long)]
    pub event_type: String,
    /// JSON object, or `@file` to read it from a file.
    #[arg(long, default_value = "{}")]
    pub payload: String,
    #[arg(long)]
    pub event_id: Option<String>,
    /// Channel (repeatable).
    #[arg(long = "channel")]
    pub channels: Vec<String>,
    /// Messages with the same key reach each endpoint in the order they
    /// were sent (Hookline extension).
    #[arg(long)]
    pub ordering_key: Option<String>,
}

pub async fn run(args: SendArgs) -> anyhow::Result<()> {
    let text = match args.payload.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)?,
        None => args.payload.clone(),
    };
    let payload: Value =
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("--payload is not JSON: {e}"))?;
    let mut body = json!({"eventType": args.event_type, "payload": payload});
    if let Some(id) = &args.event_id {
        body["eventId"] = json!(id);
    }
    if !args.channels.is_empty() {
        body["channels"] = json!(args.channels);
    }
    if let Some(key) = &args.ordering_key {
        body["orderingKey"] = json!(key);
    }
    let url = format!("{}/api/v1/app/{}/msg", args.server.trim_end_matches('/'), args.app);
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&args.token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        anyhow::bail!("{status}: {text}");
    }
    let msg: Value = serde_json::from_str(&text)?;
    println!("{}", msg["id"].as_str().unwrap_or(&text));
    Ok(())
}
