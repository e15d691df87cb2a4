//! Server settings, independent of where they came from (CLI flags and
//! `HOOKLINE_*` variables in `cli`, or code in tests).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::dispatch::DispatchConfig;
use crate::service::ServiceConfig;
use crate::store::sealing::Keyring;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Where the embedded store keeps its files.
    pub data_dir: PathBuf,
    /// Use PostgreSQL (shared by every node given the same URL) instead of
    /// the embedded store.
    pub database: Option<DatabaseConfig>,
    /// Make sure this token exists as an admin token (instead of creating a
    /// random one on first start).
    pub admin_token: Option<String>,
    /// Largest message payload accepted, in bytes (413 above).
    pub max_payload_bytes: usize,
    pub dispatch: DispatchConfig,
    pub service: ServiceConfig,
    /// Base URL of this server as users reach it (for app-portal links).
    pub public_url: Option<String>,
    /// Make sure the operational-webhook application has an endpoint for
    /// this URL.
    pub operational_webhook_url: Option<String>,
    /// Seals endpoint secrets at rest (`--main-key`, `--old-main-keys`).
    pub keys: Arc<Keyring>,
    /// How long in-flight attempts get to finish on shutdown; those still
    /// running then are recorded as interrupted (`--shutdown-grace-secs`).
    pub shutdown_grace: Duration,
    /// Settled messages, their deliveries and attempts older than this are
    /// deleted (`--record-retention`); payloads go earlier, after
    /// `service.retention`.
    pub record_retention: Duration,
}

#[derive(Clone, Debug)]
pub struct DatabaseConfig {
    /// `postgres://user:password@host:port/database`
    pub url: String,
    /// Connections this node keeps open at most.
    pub pool: u32,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8071";
pub const DEFAULT_DATA_DIR: &str = "./hookline-data";
/// How much longer than their payloads records are kept by default.
pub const RECORDS_OUTLIVE_PAYLOADS: Duration = Duration::from_secs(90 * 24 * 3600);
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

impl ServerConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let service = ServiceConfig::default();
        ServerConfig {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            data_dir: data_dir.into(),
            database: None,
            admin_token: None,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD,
            dispatch: DispatchConfig::default(),
            record_retention: service.retention + RECORDS_OUTLIVE_PAYLOADS,
            service,
            public_url: None,
            operational_webhook_url: None,
            keys: Arc::new(Keyring::none()),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}
