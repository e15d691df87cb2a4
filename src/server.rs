//! Wiring: open the store, start the dispatcher, serve the API.
//!
//! Used by `hookline serve` and by the tests, which start servers in-process
//! with a [`ManualClock`](crate::clock::ManualClock).

use std::fs::File;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::ServiceExt;
use axum::extract::Request;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::Layer;
use tower_http::normalize_path::NormalizePathLayer;

use crate::api;
use crate::clock::SharedClock;
use crate::config::ServerConfig;
use crate::dispatch::Dispatcher;
use crate::domain::model::Scope;
use crate::service::Service;
use crate::store::SharedStore;
use crate::store::sqlite::SqliteStore;

pub struct Server {
    pub addr: SocketAddr,
    pub service: Arc<Service>,
    /// The admin token created on first start, if this was it.
    pub new_admin_token: Option<String>,
    cfg: ServerConfig,
    stop: oneshot::Sender<()>,
    http: JoinHandle<()>,
    /// Held for the server's lifetime: one process per data directory.
    _lock: File,
}

/// Take the data directory for this process alone. Two servers on one
/// SQLite file would both dispatch the same deliveries.
fn lock_data_dir(cfg: &ServerConfig) -> anyhow::Result<File> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data directory {}", cfg.data_dir.display()))?;
    let path = cfg.data_dir.join("serve.lock");
    let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    file.try_lock().map_err(|_| {
        anyhow::anyhow!("another hookline is already serving from {}", cfg.data_dir.display())
    })?;
    Ok(file)
}

impl Server {
    pub async fn start(cfg: ServerConfig, clock: SharedClock) -> anyhow::Result<Server> {
        let lock = lock_data_dir(&cfg)?;
        let store: SharedStore = Arc::new(SqliteStore::open(&cfg.data_dir)?);
        // Embedded store, single node: any lease left over belonged to a
        // previous run of this process, which is gone.
        let released = store.release_all(None).await?;
        if released > 0 {
            tracing::info!(released, "resuming deliveries that were in flight at the last stop");
        }

        let dispatcher = Dispatcher::start(Arc::clone(&store), Arc::clone(&clock), cfg.dispatch.clone());
        let service = Arc::new(Service::new(Arc::clone(&store), dispatcher, clock));
        let new_admin_token = match &cfg.admin_token {
            Some(token) => {
                service.ensure_admin_token(token).await?;
                None
            }
            None if !store.has_admin_token().await? => Some(service.create_token(&Scope::Admin).await?),
            None => None,
        };

        let app = NormalizePathLayer::trim_trailing_slash()
            .layer(api::router(Arc::clone(&service), cfg.max_payload_bytes));
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let http = tokio::spawn(async move {
            let served = axum::serve(listener, ServiceExt::<Request>::into_make_service(app))
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
        tracing::info!(%addr, data_dir = %cfg.data_dir.display(), "hookline serving");
        Ok(Server { addr, service, new_admin_token, cfg, stop, http, _lock: lock })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Graceful stop: no new requests, in-flight requests and attempts get
    /// `shutdown_grace` to finish, queued work goes back to the store.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(self.cfg.shutdown_grace, self.http).await;
        self.service.dispatcher.shutdown(self.cfg.shutdown_grace).await;
    }
}
