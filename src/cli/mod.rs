//! Command line: `hookline serve | migrate | token create | listen | send |
//! import`.
//! Every flag can also be set with its `HOOKLINE_*` environment variable.

mod import;
mod listen;
mod send;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;

use crate::clock::{Clock, SystemClock};
use crate::config::{
    DEFAULT_DATA_DIR, DEFAULT_LISTEN, DEFAULT_MAX_PAYLOAD, DatabaseConfig, RECORDS_OUTLIVE_PAYLOADS,
    ServerConfig,
};
use crate::dispatch::DispatchConfig;
use crate::dispatch::ssrf::TargetPolicy;
use crate::domain::duration;
use crate::domain::model::EndpointPatch;
use crate::domain::model::Scope;
use crate::server::Server;
use crate::service;
use crate::store::postgres::{self, PgStore};
use crate::store::sealing::Keyring;
use crate::store::sqlite::SqliteStore;
use crate::store::{Cursor, Order, PageRequest, SharedStore};
use crate::traces::{self, OtlpConfig};

#[derive(Parser, Debug)]
#[command(name = "hookline", version, about = "Webhook delivery with a Svix-compatible API")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log filter (tracing's env-filter syntax), e.g. `info` or `hookline=debug`.
    /// (sqlx logs PostgreSQL's notices at info: harmless "already exists, skipping".)
    #[arg(long, global = true, env = "HOOKLINE_LOG", default_value = "info,sqlx=warn")]
    pub log: String,
    #[arg(long, global = true, env = "HOOKLINE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Export traces over OTLP/HTTP to this collector (base URL, e.g.
    /// `http://localhost:4318`; spans go to `/v1/traces`). The standard
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
    /// `OTEL_SERVICE_NAME` and `OTEL_TRACES_SAMPLER`(`_ARG`) work too.
    /// Off when none is set.
    #[arg(long, global = true, env = "HOOKLINE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the API and the delivery workers.
    Serve(ServeArgs),
    /// Create or upgrade the database schema, then exit.
    Migrate(DataArgs),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Run a local webhook receiver that prints and verifies what it gets.
    Listen(listen::ListenArgs),
    /// Send a message to a running Hookline.
    Send(send::SendArgs),
    /// Copy applications, endpoints (with their secrets), event types and
    /// optionally messages from Svix (or another Hookline) into a Hookline.
    Import(import::ImportArgs),
    /// Measure: `hookline bench <scenario> --help`.
    Bench(crate::bench::BenchArgs),
    /// Deterministic simulation of delivery under faults, by seed:
    /// `hookline sim --seed N` replays a run exactly.
    Sim(crate::sim::SimArgs),
    /// Rewrite every endpoint so its secrets are encrypted with the current
    /// --main-key (after a key rotation, before dropping --old-main-keys).
    /// Run it with the server stopped, or on PostgreSQL from any node.
    Rekey(DataArgs),
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token and print it (it is not shown again).
    Create {
        #[command(flatten)]
        data: DataArgs,
        /// Scope the token to one application (id or uid); admin otherwise.
        #[arg(long)]
        app: Option<String>,
        /// Expire the token after this many days.
        #[arg(long)]
        expires_in_days: Option<u64>,
    },
}

#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Directory of the embedded store.
    #[arg(long, env = "HOOKLINE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Use PostgreSQL instead of the embedded store
    /// (`postgres://user:password@host:port/database`); every node given
    /// the same URL shares the work.
    #[arg(long, env = "HOOKLINE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// PostgreSQL connections this node keeps open at most.
    #[arg(long, env = "HOOKLINE_DATABASE_POOL", default_value_t = 16)]
    pub database_pool: u32,
    /// Encrypt endpoint secrets and credential header values at rest with
    /// this key: the base64 of 32 random bytes (`openssl rand -base64 32`).
    #[arg(long, env = "HOOKLINE_MAIN_KEY", hide_env_values = true)]
    pub main_key: Option<String>,
    /// Earlier main keys, still used to read what they encrypted while
    /// rows move to the current key (comma-separated; see `hookline rekey`).
    #[arg(long, env = "HOOKLINE_OLD_MAIN_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub old_main_keys: Vec<String>,
}

impl DataArgs {
    fn database(&self) -> Option<DatabaseConfig> {
        self.database_url.clone().map(|url| DatabaseConfig { url, pool: self.database_pool })
    }

    /// Where the data lives, for messages to the operator (never the
    /// database password).
    fn describe(&self) -> String {
        match &self.database_url {
            Some(url) => match url::Url::parse(url) {
                Ok(u) => format!("PostgreSQL {}{}", u.host_str().unwrap_or(""), u.path()),
                Err(_) => "PostgreSQL".into(),
            },
            None => self.data_dir.display().to_string(),
        }
    }

    fn keys(&self) -> anyhow::Result<Arc<Keyring>> {
        match &self.main_key {
            Some(key) => Ok(Arc::new(
                Keyring::new(key, &self.old_main_keys).map_err(|e| anyhow::anyhow!("--main-key: {e}"))?,
            )),
            None if !self.old_main_keys.is_empty() => {
                anyhow::bail!("--old-main-keys needs a current --main-key to re-encrypt with")
            }
            None => Ok(Arc::new(Keyring::none())),
        }
    }

    async fn open(&self) -> anyhow::Result<SharedStore> {
        let keys = self.keys()?;
        Ok(match &self.database_url {
            Some(url) => Arc::new(PgStore::connect_with(url, self.database_pool).await?.with_keys(keys)),
            None => Arc::new(SqliteStore::open_with_keys(&self.data_dir, keys)?),
        })
    }
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "HOOKLINE_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub data: DataArgs,
    /// Use this admin token (created if missing) instead of a random one.
    #[arg(long, env = "HOOKLINE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Allow webhooks to loopback, private and link-local addresses
    /// (local development only).
    #[arg(long, env = "HOOKLINE_ALLOW_PRIVATE_TARGETS")]
    pub allow_private_targets: bool,
    /// Allow webhooks to this internal subnet (repeatable, or comma-separated).
    #[arg(long = "allow-subnet", env = "HOOKLINE_ALLOW_SUBNETS", value_delimiter = ',')]
    pub allow_subnets: Vec<IpNet>,
    /// Largest message payload accepted, in bytes.
    #[arg(long, env = "HOOKLINE_MAX_PAYLOAD_BYTES", default_value_t = DEFAULT_MAX_PAYLOAD)]
    pub max_payload_bytes: usize,
    /// Attempts in flight at once per endpoint.
    #[arg(long, env = "HOOKLINE_ENDPOINT_CONCURRENCY", default_value_t = 64)]
    pub endpoint_concurrency: usize,
    /// Keep message payloads and response bodies this long (`90d`, `12h`,
    /// `10m`, `30s`; default 90 days).
    #[arg(long, env = "HOOKLINE_RETENTION", value_parser = duration::parse)]
    pub retention: Option<Duration>,
    /// The same in days (the older form; give one of the two).
    #[arg(long, env = "HOOKLINE_RETENTION_DAYS")]
    pub retention_days: Option<u64>,
    /// Keep messages, deliveries and attempts themselves this long, then
    /// delete those whose deliveries are all settled (default: the payload
    /// retention plus 90 days; at least the payload retention).
    #[arg(long, env = "HOOKLINE_RECORD_RETENTION", value_parser = duration::parse)]
    pub record_retention: Option<Duration>,
    /// Spread retry delays randomly by up to this fraction (0 to 0.5).
    #[arg(long, env = "HOOKLINE_RETRY_JITTER", default_value_t = 0.2)]
    pub retry_jitter: f64,
    /// Disable an endpoint after every attempt has failed for this many
    /// days (0: never).
    #[arg(long, env = "HOOKLINE_AUTO_DISABLE_DAYS", default_value_t = 5)]
    pub auto_disable_days: u64,
    /// Send Hookline's operational webhooks (endpoint.disabled, …) here.
    #[arg(long, env = "HOOKLINE_OPERATIONAL_WEBHOOK_URL")]
    pub operational_webhook_url: Option<String>,
    /// This server's URL as users reach it (for app-portal links).
    #[arg(long, env = "HOOKLINE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Name of this node's leases on a shared database (default: host
    /// name, process id and a random suffix; must differ between nodes).
    #[arg(long, env = "HOOKLINE_NODE_ID")]
    pub node_id: Option<String>,
    /// How long a claimed delivery stays this node's without renewal, in
    /// seconds: after a node dies, others take its work this late at most
    /// (default 30 on PostgreSQL, 600 on the embedded store).
    #[arg(long, env = "HOOKLINE_LEASE_SECS")]
    pub lease_secs: Option<u64>,
    /// On SIGTERM, how long requests and attempts in flight get to finish,
    /// in seconds; attempts still running then are recorded as interrupted
    /// (no response) and retried later.
    #[arg(long, env = "HOOKLINE_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
}

/// Unique enough between the nodes of one cluster, and readable in
/// `deliveries.lease_owner` when an operator looks.
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    format!("{host}-{}-{:04x}", std::process::id(), rand::random::<u16>())
}

impl ServeArgs {
    pub fn config(&self) -> anyhow::Result<ServerConfig> {
        let mut cfg = ServerConfig::new(self.data.data_dir.clone());
        cfg.keys = self.data.keys()?;
        cfg.database = self.data.database();
        let lease_secs = self.lease_secs.unwrap_or(if cfg.database.is_some() { 30 } else { 600 });
        cfg.listen = self.listen;
        cfg.admin_token = self.admin_token.clone();
        cfg.max_payload_bytes = self.max_payload_bytes;
        const DAY: u64 = 24 * 3600;
        cfg.dispatch = DispatchConfig {
            node_id: self.node_id.clone().unwrap_or_else(default_node_id),
            lease: Duration::from_secs(lease_secs.max(3)),
            endpoint_concurrency: self.endpoint_concurrency,
            jitter: self.retry_jitter.clamp(0.0, 0.5),
            auto_disable_after: (self.auto_disable_days > 0)
                .then(|| Duration::from_secs(self.auto_disable_days * DAY)),
            targets: TargetPolicy {
                allow_private: self.allow_private_targets,
                allowed: self.allow_subnets.clone(),
            },
            ..DispatchConfig::default()
        };
        cfg.service.retention = match (self.retention, self.retention_days) {
            (Some(_), Some(_)) => anyhow::bail!(
                "--retention and --retention-days (HOOKLINE_RETENTION_DAYS) are both set: give one of them"
            ),
            (Some(d), None) => d,
            (None, Some(days)) => Duration::from_secs(days.max(1) * DAY),
            (None, None) => cfg.service.retention,
        };
        cfg.record_retention =
            self.record_retention.unwrap_or(cfg.service.retention + RECORDS_OUTLIVE_PAYLOADS);
        if cfg.record_retention < cfg.service.retention {
            anyhow::bail!(
                "--record-retention ({}) is shorter than the payload retention ({}): records must outlive their content",
                duration::format(cfg.record_retention),
                duration::format(cfg.service.retention)
            );
        }
        cfg.operational_webhook_url = self.operational_webhook_url.clone();
        cfg.public_url = self.public_url.clone();
        cfg.shutdown_grace = Duration::from_secs(self.shutdown_grace_secs);
        Ok(cfg)
    }
}

/// Logs to stderr, and traces over OTLP when configured: the returned
/// exporter (if any) must be shut down at exit, outside the runtime, to
/// send its last spans.
pub fn init_logging(cli: &Cli) -> Option<traces::Exporter> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};

    let filter = EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match cli.log_format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let otlp = OtlpConfig::resolve(cli.otlp_endpoint.as_deref(), |name| std::env::var(name).ok());
    let exporter = otlp.and_then(|cfg| match traces::Exporter::start(&cfg) {
        Ok(exporter) => Some((exporter, cfg.traces_url)),
        Err(e) => {
            eprintln!("hookline: traces are off: cannot export to {}: {e}", cfg.traces_url);
            None
        }
    });
    match &exporter {
        // Hookline's spans go to the collector whatever the log filter
        // says; that filter only decides what is printed.
        Some((e, _)) => tracing_subscriber::registry().with(fmt.with_filter(filter)).with(e.layer()).init(),
        None => tracing_subscriber::registry().with(fmt).with(filter).init(),
    }
    exporter.map(|(exporter, url)| {
        tracing::info!(url = %url, "exporting traces over OTLP/HTTP");
        exporter
    })
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate(data) => {
            match &data.database_url {
                Some(url) => {
                    let ran = postgres::migrate(url).await?;
                    println!("{ran} migration(s) applied");
                }
                None => drop(SqliteStore::open(&data.data_dir)?),
            }
            println!("schema of {} is up to date", data.describe());
            Ok(())
        }
        Command::Listen(args) => listen::run(args).await,
        Command::Send(args) => send::run(args).await,
        Command::Import(args) => import::run(args).await,
        Command::Bench(args) => crate::bench::run(args).await,
        Command::Sim(args) => crate::sim::command(args).await,
        Command::Rekey(data) => rekey(&data).await,
        Command::Token(TokenCommand::Create { data, app, expires_in_days }) => {
            let store = data.open().await?;
            let scope = match app {
                None => Scope::Admin,
                Some(app_ref) => {
                    let app = store
                        .get_app(&app_ref)
                        .await?
                        .ok_or_else(|| anyhow::anyhow!("no application {app_ref}"))?;
                    Scope::App(app.id)
                }
            };
            let now = SystemClock.now();
            let expires = expires_in_days.map(|d| now.plus(Duration::from_secs(d * 24 * 3600)));
            let token = service::create_token(&*store, &scope, expires, now).await?;
            println!("{token}");
            Ok(())
        }
    }
}

/// Read and write back every endpoint: opened with any configured key,
/// sealed with the current one.
async fn rekey(data: &DataArgs) -> anyhow::Result<()> {
    let keys = data.keys()?;
    let Some(id) = keys.current_id().map(str::to_owned) else {
        anyhow::bail!("rekey needs --main-key (the key to encrypt with)");
    };
    let store = data.open().await?;
    let now = SystemClock.now();
    let mut apps = PageRequest::first(250, Order::Ascending);
    let mut count = 0u64;
    loop {
        let page = store.list_apps(&Default::default(), &apps).await?;
        for app in &page.items {
            let mut eps = PageRequest::first(250, Order::Ascending);
            loop {
                let listed = store.list_endpoints(&app.id, &eps).await?;
                for ep in &listed.items {
                    store.update_endpoint(&app.id, &ep.id, EndpointPatch::default(), now).await?;
                    count += 1;
                }
                match (listed.more, listed.items.last()) {
                    (true, Some(last)) => eps.cursor = Some(Cursor::After(last.id.clone())),
                    _ => break,
                }
            }
        }
        match (page.more, page.items.last()) {
            (true, Some(last)) => apps.cursor = Some(Cursor::After(last.id.clone())),
            _ => break,
        }
    }
    println!("{count} endpoint(s) now encrypted with main key {id}");
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let server = Server::start(args.config()?, Arc::new(SystemClock)).await?;
    let url = server.url();
    println!("Hookline {} listening on {url} (data in {})", env!("CARGO_PKG_VERSION"), args.data.describe());
    match &server.new_admin_token {
        Some(token) => {
            println!("Admin API token (shown once, keep it): {token}");
            println!("Try: curl -H 'Authorization: Bearer {token}' {url}/api/v1/app");
        }
        None if args.admin_token.is_some() => println!("Admin API token: the one given by --admin-token"),
        None if args.data.database_url.is_some() => println!(
            "Admin token: printed at first start; create another with `hookline token create --database-url …`"
        ),
        None => println!(
            "Admin token: printed at first start; create another with `hookline token create --data-dir {}`",
            args.data.data_dir.display()
        ),
    }
    match server.service.store.as_ref() {
        _ if args.data.main_key.is_some() => {
            println!("Endpoint secrets are encrypted at rest with the main key")
        }
        _ => println!("Endpoint secrets are stored unencrypted (set --main-key to encrypt them)"),
    }
    if args.allow_private_targets {
        println!("Warning: --allow-private-targets lets webhooks reach this machine's network");
    }
    wait_for_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> anyhow::Result<ServerConfig> {
        let cli = Cli::try_parse_from(["hookline", "serve"].iter().chain(args))?;
        match cli.command {
            Command::Serve(serve) => serve.config(),
            _ => unreachable!("parsed a serve command"),
        }
    }

    fn retentions(args: &[&str]) -> (Duration, Duration) {
        let cfg = config(args).unwrap();
        (cfg.service.retention, cfg.record_retention)
    }

    const MIN: Duration = Duration::from_secs(60);
    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn retentions_as_durations_or_days() {
        assert_eq!(retentions(&[]), (90 * DAY, 180 * DAY));
        assert_eq!(retentions(&["--retention", "5m", "--record-retention", "10m"]), (5 * MIN, 10 * MIN));
        assert_eq!(retentions(&["--retention", "12h"]), (DAY / 2, DAY / 2 + 90 * DAY));
        assert_eq!(retentions(&["--retention-days", "3"]), (3 * DAY, 93 * DAY));
        assert_eq!(retentions(&["--record-retention", "365d"]), (90 * DAY, 365 * DAY));
    }

    #[test]
    fn retentions_that_cannot_be_meant_are_refused() {
        let both = config(&["--retention", "5m", "--retention-days", "3"]).unwrap_err().to_string();
        assert!(both.contains("both set"), "{both}");
        let short = config(&["--retention", "1h", "--record-retention", "30m"]).unwrap_err().to_string();
        assert!(short.contains("shorter than the payload retention (1h)"), "{short}");
        let bad = config(&["--retention", "10x"]).unwrap_err().to_string();
        assert!(bad.contains("end with a unit"), "{bad}");
    }
}
