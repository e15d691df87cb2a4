//! Wiring: open the store, start the dispatcher and the background work,
//! serve the API. `store.rs` opens the store and follows what other nodes
//! sharing it do; `operational.rs` sends the operational events that the
//! dispatcher and the service emit.
//!
//! Used by `hookline serve` and by the tests, which start servers in-process
//! with a [`ManualClock`](crate::clock::ManualClock).

mod operational;
mod store;

use std::fs::File;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::ServiceExt;
use axum::extract::Request;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tower::Layer;
use tower_http::normalize_path::NormalizePathLayer;

use crate::api;
use crate::clock::SharedClock;
use crate::config::ServerConfig;
use crate::dashboard;
use crate::dispatch::Dispatcher;
use crate::domain::model::Scope;
use crate::maintenance::Maintenance;
use crate::operational::Emitter;
use crate::service::Service;
use crate::telemetry;
use crate::traces;

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

impl Server {
    pub async fn start(cfg: ServerConfig, clock: SharedClock) -> anyhow::Result<Server> {
        telemetry::install();
        let (store, lock) = store::open_store(&cfg).await?;

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
            background.spawn(store::follow_store(events, Arc::downgrade(&service), drained_rx));
        }
        let maintenance = Maintenance {
            store: Arc::clone(&store),
            clock,
            dispatcher,
            retention: cfg.service.retention,
            record_retention: cfg.record_retention,
        };
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
            operational::ensure_endpoint(&service, url).await?;
        }

        let app = NormalizePathLayer::trim_trailing_slash().layer(
            api::router(Arc::clone(&service), cfg.max_payload_bytes, cfg.public_url.clone())
                .merge(dashboard::router(Arc::clone(&service), cfg.public_url.as_deref()))
                .layer(axum::middleware::from_fn(traces::spans::http_request)),
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
