//! Wiring: open the store, start the dispatcher and the background work,
//! serve the API.
//!
//! Used by `hookline serve` and by the tests, which start servers in-process
//! with a [`ManualClock`](crate::clock::ManualClock).

use std::fs::File;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use anyhow::Context;
use axum::ServiceExt;
use axum::extract::Request;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tower::Layer;
use tower_http::normalize_path::NormalizePathLayer;

use crate::api;
use crate::clock::SharedClock;
use crate::config::ServerConfig;
use crate::dashboard;
use crate::dispatch::Dispatcher;
use crate::domain::model::{AppSpec, EndpointSpec, Scope};
use crate::maintenance::Maintenance;
use crate::operational::{self, Emitter};
use crate::service::Service;

use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{SharedStore, StoreError, StoreEvent};
use crate::telemetry;

pub struct Server {
    pub addr: SocketAddr,
    pub service: Arc<Service>,
    /// The admin token created on first start, if this was it.
    pub new_admin_token: Option<String>,
    pub maintenance: Maintenance,
    cfg: ServerConfig,
    stop: watch::Sender<bool>,
    /// Set once the HTTP server and the dispatcher have stopped: the tasks
    /// that forward their events may finish.
    drained: watch::Sender<bool>,
    http: JoinHandle<()>,
    background: TaskTracker,
    /// Held for the server's lifetime: one process per data directory
    /// (none on PostgreSQL, which nodes share by design).
    _lock: Option<File>,
}

/// Open the store the configuration names. The embedded store belongs to
/// this process alone: leases left over are from a previous run and are
/// released. On PostgreSQL they may belong to live nodes, so they are left
/// to be renewed or to expire.
async fn open_store(cfg: &ServerConfig) -> anyhow::Result<(SharedStore, Option<File>)> {
    if let Some(db) = &cfg.database {
        let store =
            PgStore::connect_with(&db.url, db.pool).await.context("cannot open the PostgreSQL store")?;
        return Ok((Arc::new(store), None));
    }
    let lock = lock_data_dir(cfg)?;
    let store: SharedStore = Arc::new(SqliteStore::open(&cfg.data_dir)?);
    let released = store.release_all(None).await?;
    if released > 0 {
        tracing::info!(released, "resuming deliveries that were in flight at the last stop");
    }
    Ok((store, Some(lock)))
}

/// React to what other nodes sharing the store did: look for newly due
/// work, forget cached tokens.
async fn follow_store(
    mut events: broadcast::Receiver<StoreEvent>,
    service: Weak<Service>,
    mut drained: watch::Receiver<bool>,
) {
    loop {
        let received = tokio::select! {
            received = events.recv() => received,
            // Nothing left to wake or invalidate.
            _ = drained.wait_for(|d| *d) => break,
        };
        let event = match received {
            Ok(event) => event,
            // Missed some: assume the worst of what they could have said.
            Err(broadcast::error::RecvError::Lagged(_)) => StoreEvent::Changed,
            Err(broadcast::error::RecvError::Closed) => break,
        };
        let Some(service) = service.upgrade() else { break };
        match event {
            StoreEvent::Due(at) => service.dispatcher.wake_at(at),
            StoreEvent::Changed => service.forget_cached(),
        }
    }
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
        telemetry::install();
        let (store, lock) = open_store(&cfg).await?;

        let (events, event_rx) = Emitter::channel();
        let dispatcher =
            Dispatcher::start(store.clone(), Arc::clone(&clock), cfg.dispatch.clone(), events.clone());
        let service = Arc::new(Service::new(
            Arc::clone(&store),
            dispatcher.clone(),
            Arc::clone(&clock),
            cfg.service.clone(),
            events,
        ));
        let (stop, stopped) = watch::channel(false);
        let (drained, drained_rx) = watch::channel(false);
        let background = TaskTracker::new();
        background.spawn(operational::forward(event_rx, Arc::downgrade(&service), drained_rx.clone()));
        if let Some(events) = store.subscribe() {
            background.spawn(follow_store(events, Arc::downgrade(&service), drained_rx));
        }
        let maintenance =
            Maintenance { store: Arc::clone(&store), clock, dispatcher, retention: cfg.service.retention };
        maintenance.clone().spawn(&background, stopped.clone());

        let new_admin_token = match &cfg.admin_token {
            Some(token) => {
                service.ensure_admin_token(token).await?;
                None
            }
            None if !store.has_admin_token().await? => Some(service.create_token(&Scope::Admin, None).await?),
            None => None,
        };
        if let Some(url) = &cfg.operational_webhook_url {
            ensure_operational_endpoint(&service, url).await?;
        }

        let app = NormalizePathLayer::trim_trailing_slash().layer(
            api::router(Arc::clone(&service), cfg.max_payload_bytes, cfg.public_url.clone())
                .merge(dashboard::router(Arc::clone(&service))),
        );
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        let mut http_stopped = stopped;
        let http = tokio::spawn(async move {
            let served = axum::serve(listener, ServiceExt::<Request>::into_make_service(app))
                .with_graceful_shutdown(async move {
                    let _ = http_stopped.changed().await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
        match &cfg.database {
            Some(_) => {
                tracing::info!(%addr, node_id = %cfg.dispatch.node_id, "hookline serving on PostgreSQL")
            }
            None => tracing::info!(%addr, data_dir = %cfg.data_dir.display(), "hookline serving"),
        }
        Ok(Server {
            addr,
            service,
            new_admin_token,
            maintenance,
            cfg,
            stop,
            drained,
            http,
            background,
            _lock: lock,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Graceful stop: no new requests, in-flight requests and attempts get
    /// `shutdown_grace` to finish, queued work goes back to the store.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(self.cfg.shutdown_grace, self.http).await;
        self.service.dispatcher.shutdown(self.cfg.shutdown_grace).await;
        let _ = self.drained.send(true);
        self.background.close();
        let _ = tokio::time::timeout(self.cfg.shutdown_grace, self.background.wait()).await;
    }
}

/// The operational-webhook application, with an endpoint for `url`.
async fn ensure_operational_endpoint(service: &Service, url: &str) -> anyhow::Result<()> {
    let app = match service.store.get_app(operational::APP_UID).await? {
        Some(app) => app,
        None => {
            let spec = AppSpec {
                uid: Some(operational::APP_UID.into()),
                name: "Hookline operational webhooks".into(),
                ..Default::default()
            };
            match service.create_app(spec).await {
                Ok(app) => app,
                // Another node starting at the same time created it.
                Err(StoreError::Conflict(_)) => service
                    .store
                    .get_app(operational::APP_UID)
                    .await?
                    .context("operational application vanished")?,
                Err(e) => return Err(e.into()),
            }
        }
    };
    if !service.all_endpoints(&app.id).await?.iter().any(|e| e.url == url) {
        // A uid derived from the URL: nodes starting together on one
        // database create one endpoint between them, not one each.
        let digest = <sha2::Sha256 as sha2::Digest>::digest(url.as_bytes());
        let uid = format!("op-{}", digest.iter().take(12).map(|b| format!("{b:02x}")).collect::<String>());
        let spec = EndpointSpec { uid: Some(uid), url: url.to_owned(), ..Default::default() };
        match service.create_endpoint(&app.id, spec).await {
            Ok(ep) => tracing::info!(endpoint_id = %ep.id, url, "operational webhook endpoint created"),
            Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
