//! Ingest with group commit.
//!
//! One message used to cost PostgreSQL two statements and a commit of its
//! own: the read of its application and endpoints, and the insert. Here
//! each `create_message` call hands its request to one background task per
//! store, which takes whatever requests are waiting (at most
//! [`MAX_BATCH`]; none is held back for company: batches form while the
//! previous statement runs) and stores the plain ones with one statement
//! and one commit, answering each caller only after that commit.
//!
//! *Plain* means: the application exists, no delivery waits for an
//! ordering key or a flow (those need the locks of the per-message
//! transaction), and no specific endpoint was asked for. Everything else,
//! and whatever the batch statement did not insert (an idempotency key or
//! eventId already taken: `ON CONFLICT DO NOTHING`), goes through the
//! per-message path ([`super::messages::create_one`]), which gives the
//! same answers as before.
//!
//! Applications and their enabled endpoints come from a cache, so a batch
//! reads nothing first. The cache is only as new as `config_version`, a
//! counter that triggers bump on every change to an application or to an
//! endpoint's settings, on any node; the batch statement inserts nothing
//! unless the counter still has the cache's value (and none of the batch's
//! endpoints has grown a flow row meanwhile), so a stale cache costs one
//! retry through the per-message path, never a delivery to an endpoint
//! that was disabled, or a missed one that was created, before the
//! statement began.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::messages;
use super::notify;
use super::rows::{int4, opt_json, opt_ts};
use crate::domain::model::{App, DeliveryStatus, Endpoint};
use crate::domain::time::Timestamp;
use crate::domain::{filter, ordering};
use crate::store::sealing::Keyring;
use crate::store::{CreateMessage, CreatedMessage, DeliveryTask, StoreError, StoreResult};

/// Messages per statement at most.
pub const MAX_BATCH: usize = 256;
/// Applications cached at most; past it the cache starts over.
const MAX_CACHED_APPS: usize = 100_000;

type IngestRequest = (CreateMessage, oneshot::Sender<StoreResult<CreatedMessage>>);

/// The store's side of the ingest task. The task ends once this is
/// dropped (with the store) and what was queued is stored.
pub struct Ingest {
    jobs: mpsc::UnboundedSender<IngestRequest>,
}

impl Ingest {
    pub fn start(pool: PgPool, keys: Arc<Keyring>) -> Ingest {
        let (jobs, queue) = mpsc::unbounded_channel();
        let ctx = Arc::new(Context { pool, keys, cache: Mutex::new(Cache::default()) });
        tokio::spawn(run(ctx, queue));
        Ingest { jobs }
    }

    pub async fn create(&self, req: CreateMessage) -> StoreResult<CreatedMessage> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Backend("the ingest task stopped".into());
        self.jobs.send((req, reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

struct Context {
    pool: PgPool,
    keys: Arc<Keyring>,
    cache: Mutex<Cache>,
}

/// An application and its enabled endpoints, each with whether it has a
/// flow row, as of `Cache::version`.
type Tenant = Arc<(App, Vec<(Arc<Endpoint>, bool)>)>;

#[derive(Default)]
struct Cache {
    /// `config_version` when every entry was read; `None` before the first.
    version: Option<i64>,
    /// By the reference messages use (id or uid).
    apps: HashMap<String, Tenant>,
}

impl Context {
    fn cached(&self, app_ref: &str) -> Option<(i64, Tenant)> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        Some((cache.version?, Arc::clone(cache.apps.get(app_ref)?)))
    }

    /// The tenant from the cache, else read (with the version it was read
    /// at); `None` when the application does not exist.
    async fn tenant(&self, app_ref: &str) -> StoreResult<Option<(i64, Tenant)>> {
        if let Some(hit) = self.cached(app_ref) {
            return Ok(Some(hit));
        }
        self.read_into_cache(&[app_ref]).await?;
        Ok(self.cached(app_ref))
    }

    /// Read the applications of `batch` the cache lacks, in one round trip
    /// (two when that read finds the configuration changed: it empties the
    /// cache of what the batch had found there).
    async fn warm(&self, batch: &[IngestRequest]) -> StoreResult<()> {
        let mut asked: HashSet<&str> = HashSet::new();
        for _ in 0..2 {
            let missing: HashSet<&str> = {
                let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                let known = |r: &str| cache.version.is_some() && cache.apps.contains_key(r);
                batch
                    .iter()
                    .map(|(req, _)| req.app_ref.as_str())
                    .filter(|r| !known(r) && !asked.contains(r))
                    .collect()
            };
            if missing.is_empty() {
                break;
            }
            let missing: Vec<&str> = missing.into_iter().collect();
            self.read_into_cache(&missing).await?;
            asked.extend(missing);
        }
        Ok(())
    }

    async fn read_into_cache(&self, refs: &[&str]) -> StoreResult<()> {
        let (version, found) = messages::apps_with_endpoints(&self.pool, &self.keys, refs).await?;
        if found.is_empty() {
            return Ok(()); // nothing to keep, and no version read with it
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.version != Some(version) || cache.apps.len() + found.len() > MAX_CACHED_APPS {
            cache.apps.clear();
            cache.version = Some(version);
        }
        for (app_ref, (app, endpoints)) in found {
            let tenant: Tenant =
                Arc::new((app, endpoints.into_iter().map(|(ep, f)| (Arc::new(ep), f)).collect()));
            cache.apps.insert(app_ref, tenant);
        }
        Ok(())
    }

    fn forget(&self, version: i64) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.version == Some(version) {
            cache.apps.clear();
            cache.version = None;
        }
    }
}

async fn run(ctx: Arc<Context>, mut queue: mpsc::UnboundedReceiver<IngestRequest>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let batch: Vec<IngestRequest> = std::mem::take(&mut jobs);
        let others = ingest_batch(&ctx, batch).await;
        for (req, reply) in others {
            // Off the batch loop: these take their own round trips.
            let ctx = Arc::clone(&ctx);
            tokio::spawn(async move {
                let _ = reply.send(messages::create_one(&ctx.pool, &ctx.keys, &req).await);
            });
        }
    }
}

/// A message of the batch and where its deliveries go.
struct Planned {
    req: CreateMessage,
    reply: oneshot::Sender<StoreResult<CreatedMessage>>,
    tenant: Tenant,
    /// Indexes into the tenant's endpoints.
    endpoints: Vec<usize>,
    first_at: i64,
    leased: bool,
}

/// Store the plain requests of `batch` in one statement and answer them;
/// return the others, for the per-message path.
async fn ingest_batch(ctx: &Context, batch: Vec<IngestRequest>) -> Vec<IngestRequest> {
    let mut others = Vec::new();
    let mut planned = Vec::with_capacity(batch.len());
    let mut version = None;
    // What the cache lacks after this does not exist (or goes the
    // per-message way); if the read failed, each request reads its own.
    let warmed = match ctx.warm(&batch).await {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(error = %e, "reading a batch's applications failed");
            false
        }
    };
    for (req, reply) in batch {
        match plan(ctx, &req, warmed).await {
            Ok(Some((v, tenant, endpoints))) if version.is_none_or(|b| b == v) => {
                version = Some(v);
                let first_at = req.message.first_attempt_at();
                let leased = req.lease.is_some() && first_at <= req.message.created_at;
                planned.push(Planned {
                    req,
                    reply,
                    tenant,
                    endpoints,
                    first_at: first_at.as_millis(),
                    leased,
                });
            }
            Ok(_) => others.push((req, reply)),
            Err(e) => drop(reply.send(Err(e))),
        }
    }
    let Some(version) = version else { return others };
    match insert(ctx, version, &planned).await {
        Ok(Some(inserted)) => {
            let inserted: HashSet<String> = inserted.into_iter().collect();
            for p in planned {
                if inserted.contains(&p.req.message.id) {
                    let created = created(&p);
                    let _ = p.reply.send(Ok(created));
                } else {
                    others.push((p.req, p.reply));
                }
            }
        }
        Ok(None) => {
            // The configuration changed since the cache was read.
            ctx.forget(version);
            others.extend(planned.into_iter().map(|p| (p.req, p.reply)));
        }
        Err(e) => {
            tracing::debug!(error = %e, messages = planned.len(), "ingest batch failed, storing one by one");
            others.extend(planned.into_iter().map(|p| (p.req, p.reply)));
        }
    }
    others
}

/// Where a plain request's deliveries go; `None` if it is not plain.
async fn plan(
    ctx: &Context,
    req: &CreateMessage,
    warmed: bool,
) -> StoreResult<Option<(i64, Tenant, Vec<usize>)>> {
    if req.only_endpoint.is_some() {
        return Ok(None);
    }
    let tenant = if warmed { ctx.cached(&req.app_ref) } else { ctx.tenant(&req.app_ref).await? };
    let Some((version, tenant)) = tenant else { return Ok(None) };
    let (app, endpoints) = &*tenant;
    let m = &req.message;
    let mut chosen = Vec::new();
    for (i, (ep, has_flow)) in endpoints.iter().enumerate() {
        if !filter::wants(ep, &m.event_type, m.channels.as_ref()) {
            continue;
        }
        let gated = ordering::key_for(m.ordering_key.as_deref(), ep.fifo).is_some()
            || *has_flow
            || ep.throttle_rate.or(app.throttle_rate).is_some();
        if gated {
            return Ok(None);
        }
        chosen.push(i);
    }
    Ok(Some((version, tenant, chosen)))
}

/// The batch as one statement: nothing unless `config_version` is still
/// `version` and none of the endpoints has a flow row; then the messages
/// (those whose id, eventId and idempotency key are free), their
/// deliveries, and one `due:` notification for the earliest unleased one.
/// `None` when the version check failed, else the ids inserted.
async fn insert(ctx: &Context, version: i64, batch: &[Planned]) -> Result<Option<Vec<String>>, StoreError> {
    let n = batch.len();
    let mut m_id = Vec::with_capacity(n);
    let mut m_app = Vec::with_capacity(n);
    let mut m_type = Vec::with_capacity(n);
    let mut m_event = Vec::with_capacity(n);
    let mut m_channels = Vec::with_capacity(n);
    let mut m_tags = Vec::with_capacity(n);
    let mut m_payload = Vec::with_capacity(n);
    let mut m_created = Vec::with_capacity(n);
    let mut m_deliver = Vec::with_capacity(n);
    let mut m_expires = Vec::with_capacity(n);
    let mut m_okey = Vec::with_capacity(n);
    let mut m_idem = Vec::with_capacity(n);
    let mut m_tp = Vec::with_capacity(n);
    let mut m_ts = Vec::with_capacity(n);
    let (mut d_msg, mut d_ep, mut d_app, mut d_next, mut d_due, mut d_owner, mut d_at) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut endpoint_ids: Vec<&str> = Vec::new();
    let mut wake: Option<i64> = None;
    let mut woken: Vec<&str> = Vec::new();
    for p in batch {
        let m = &p.req.message;
        let app_id = &p.tenant.0.id;
        m_id.push(m.id.as_str());
        m_app.push(app_id.as_str());
        m_type.push(m.event_type.as_str());
        m_event.push(m.event_id.as_deref());
        m_channels.push(opt_json(&m.channels)?);
        m_tags.push(opt_json(&m.tags)?);
        m_payload.push(m.payload.as_deref().map(|b| std::str::from_utf8(b).unwrap_or("{}")));
        m_created.push(m.created_at.as_millis());
        m_deliver.push(opt_ts(m.deliver_at));
        m_expires.push(opt_ts(m.expires_at));
        m_okey.push(m.ordering_key.as_deref());
        m_idem.push(p.req.idempotency_key.as_deref());
        m_tp.push(m.trace.as_ref().map(|t| t.traceparent.as_str()));
        m_ts.push(m.trace.as_ref().and_then(|t| t.tracestate.as_deref()));
        for &i in &p.endpoints {
            let ep = &p.tenant.1[i].0;
            endpoint_ids.push(ep.id.as_str());
            d_msg.push(m.id.as_str());
            d_ep.push(ep.id.as_str());
            d_app.push(app_id.as_str());
            d_next.push(p.first_at);
            d_at.push(m.created_at.as_millis());
            match p.req.lease.as_ref().filter(|_| p.leased && !p.req.busy_endpoints.contains(&ep.id)) {
                Some(lease) => {
                    d_due.push(lease.until.as_millis());
                    d_owner.push(Some(lease.owner.as_str()));
                }
                None => {
                    d_due.push(p.first_at);
                    d_owner.push(None);
                    wake = Some(wake.map_or(p.first_at, |w| w.min(p.first_at)));
                    woken.push(ep.id.as_str());
                }
            }
        }
    }
    endpoint_ids.sort_unstable();
    endpoint_ids.dedup();
    // `config_version` is read by its key (here and in
    // `APPS_WITH_ENDPOINTS`): every API write updates its one row, and
    // until autovacuum comes by, a read without the key scans the page of
    // every dead version; with the key it is one index probe.
    let row: (bool, Vec<String>) = sqlx::query_as(
        "WITH ok AS (
            SELECT 1 FROM config_version WHERE id = 1 AND v = $1
                AND NOT EXISTS (SELECT 1 FROM endpoint_flow WHERE endpoint_id = ANY($2::text[]))
         ), m AS (
            INSERT INTO messages (id, app_id, event_type, event_id, channels, tags, payload, created_at,
                deliver_at, expires_at, ordering_key, idem_key, traceparent, tracestate)
            SELECT * FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                $9::text[], $10::int8[], $11::int8[], $12::int8[], $13::text[], $14::text[], $15::text[],
                $16::text[])
            WHERE EXISTS (SELECT 1 FROM ok)
            ON CONFLICT DO NOTHING
            RETURNING id
         ), d AS (
            INSERT INTO deliveries (msg_id, endpoint_id, app_id, status, attempts, next_attempt, due_at,
                lease_owner, updated_at)
            SELECT e.msg_id, e.endpoint_id, e.app_id, $17, 0, e.next, e.due, e.owner, e.at
            FROM UNNEST($18::text[], $19::text[], $20::text[], $21::int8[], $22::int8[], $23::text[],
                $24::int8[]) AS e(msg_id, endpoint_id, app_id, next, due, owner, at)
            JOIN m ON m.id = e.msg_id
         )
         SELECT EXISTS (SELECT 1 FROM ok),
            ARRAY(SELECT id FROM m),
            (SELECT count(*) FROM (SELECT pg_notify($25, $26) WHERE $26::text IS NOT NULL
                AND EXISTS (SELECT 1 FROM m)) s)",
    )
    .bind(version)
    .bind(&endpoint_ids)
    .bind(&m_id)
    .bind(&m_app)
    .bind(&m_type)
    .bind(&m_event)
    .bind(&m_channels)
    .bind(&m_tags)
    .bind(&m_payload)
    .bind(&m_created)
    .bind(&m_deliver)
    .bind(&m_expires)
    .bind(&m_okey)
    .bind(&m_idem)
    .bind(&m_tp)
    .bind(&m_ts)
    .bind(int4(DeliveryStatus::Pending.code()))
    .bind(&d_msg)
    .bind(&d_ep)
    .bind(&d_app)
    .bind(&d_next)
    .bind(&d_due)
    .bind(&d_owner)
    .bind(&d_at)
    .bind(notify::CHANNEL)
    .bind(wake.map(|w| notify::due_payload_for(Timestamp::from_millis(w), woken.iter().copied())))
    .fetch_one(&ctx.pool)
    .await
    .map(|(ok, ids, _): (bool, Vec<String>, i64)| (ok, ids))?;
    let (ok, ids) = row;
    Ok(ok.then_some(ids))
}

/// The answer for a request the batch stored.
fn created(p: &Planned) -> CreatedMessage {
    let (app, endpoints) = &*p.tenant;
    let mut message = p.req.message.clone();
    message.app_id = app.id.clone();
    let message = Arc::new(message);
    let chosen: Vec<Arc<Endpoint>> = p.endpoints.iter().map(|&i| Arc::clone(&endpoints[i].0)).collect();
    let (leased, unleased): (Vec<&Arc<Endpoint>>, Vec<&Arc<Endpoint>>) =
        chosen.iter().partition(|ep| p.leased && !p.req.busy_endpoints.contains(&ep.id));
    let send_now = leased
        .into_iter()
        .map(|ep| DeliveryTask { message: Arc::clone(&message), endpoint: Arc::clone(ep), paced: false })
        .collect();
    let wake = (!unleased.is_empty()).then(|| Timestamp::from_millis(p.first_at));
    CreatedMessage { message, endpoints: chosen, send_now, wake, existing: false }
}
