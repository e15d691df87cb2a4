//! `hookline listen`: a webhook receiver for development. Prints every
//! request it gets, checks its signature when given the endpoint's secret
//! (or `whpk_` public key), and answers with a chosen status.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use clap::Args;

use crate::clock::{Clock, SystemClock};
use crate::domain::signing::{self, Verdict};

#[derive(Args, Debug, Clone)]
pub struct ListenArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// The endpoint's secret (`whsec_…`) or public key (`whpk_…`), to
    /// verify signatures.
    #[arg(long, env = "HOOKLINE_LISTEN_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// HTTP status to answer with.
    #[arg(long, default_value_t = 200)]
    pub status: u16,
    /// Accepted clock difference for `webhook-timestamp`, in seconds.
    #[arg(long, default_value_t = 300)]
    pub tolerance: i64,
}

struct Listener {
    secret: Option<String>,
    status: StatusCode,
    tolerance: i64,
}

pub async fn run(args: ListenArgs) -> anyhow::Result<()> {
    let status =
        StatusCode::from_u16(args.status).map_err(|_| anyhow::anyhow!("invalid status {}", args.status))?;
    if let Some(s) = &args.secret
        && !s.starts_with(signing::ED25519_PUBLIC_PREFIX)
    {
        signing::normalize_secret(s).map_err(|e| anyhow::anyhow!("--secret: {e}"))?;
    }
    let state = Arc::new(Listener { secret: args.secret, status, tolerance: args.tolerance });
    let app = axum::Router::new().fallback(receive).with_state(state);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!(
        "Listening for webhooks on http://{} (any path), answering {}",
        listener.local_addr()?,
        status.as_u16()
    );
    axum::serve(listener, app).await?;
    Ok(())
}

async fn receive(
    State(l): State<Arc<Listener>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let verdict = match &l.secret {
        None => "signature not checked (start with --secret to verify)",
        Some(key) => match signing::check_request(
            key,
            header("webhook-id"),
            header("webhook-timestamp"),
            header("webhook-signature"),
            &body,
            SystemClock.now().as_secs(),
            l.tolerance,
        ) {
            Verdict::Verified => "signature verified",
            Verdict::MissingHeaders => "signature INVALID: webhook-id/-timestamp/-signature headers missing",
            Verdict::StaleTimestamp => "signature INVALID: timestamp outside tolerance",
            Verdict::BadSignature => "signature INVALID",
        },
    };
    println!(
        "[{}] {method} {uri} id={} type-hint={} — {verdict}",
        SystemClock.now().to_rfc3339(),
        header("webhook-id").unwrap_or("-"),
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
            .unwrap_or_else(|| "-".into()),
    );
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(json) => println!("{}", serde_json::to_string_pretty(&json).unwrap_or_default()),
        Err(_) => println!("{}", String::from_utf8_lossy(&body)),
    }
    (l.status, "ok")
}
