//! Messages, their deliveries and attempts: ingest and the read side.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use sqlx::{PgExecutor, PgPool};

use super::rows::{self, col, int4, opt_json, opt_ts, unique_violation};
use super::{PgStore, flow, notify, sql, tenants};
use crate::domain::model::{App, Attempt, Delivery, DeliveryStatus, Endpoint, Message};
use crate::domain::time::Timestamp;
use crate::domain::{filter, ordering};
use crate::store::listing::{
    APP_COLS, APP_NCOLS, ATTEMPT_COLS, DELIVERY_COLS, DELIVERY_NCOLS, ENDPOINT_COLS, ENDPOINT_NCOLS, Listing,
    MESSAGE_COLS,
};
use crate::store::sealing::Keyring;
use crate::store::{
    AttemptFilter, CreateMessage, CreatedMessage, DeliveryFilter, DeliveryTask, Lease, MessageFilter,
    MessageStore, Page, PageRequest, StoreError, StoreResult,
};

#[async_trait]
impl MessageStore for PgStore {
    /// Stores the message and its deliveries: plain messages in batches
    /// (see [`super::ingest`]), the others one by one ([`create_one`]).
    async fn create_message(&self, req: CreateMessage) -> StoreResult<CreatedMessage> {
        self.ingest.create(req).await
    }

    async fn get_message(&self, app_id: &str, id_or_event_id: &str) -> StoreResult<Option<Message>> {
        let sql = format!(
            "SELECT {MESSAGE_COLS} FROM messages m WHERE m.app_id = $1 AND (m.id = $2 OR m.event_id = $2)
             ORDER BY m.id = $2 DESC LIMIT 1"
        );
        let row = sqlx::query(&sql).bind(app_id).bind(id_or_event_id).fetch_optional(&self.pool).await?;
        row.map(|r| rows::message(&r, 0)).transpose()
    }

    async fn list_messages(
        &self,
        app_id: &str,
        filter: &MessageFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Message>> {
        sql::page(&self.pool, &Listing::messages(app_id, filter), page, |r| rows::message(r, 0)).await
    }

    async fn get_delivery(&self, msg_id: &str, endpoint_id: &str) -> StoreResult<Option<Delivery>> {
        let sql =
            format!("SELECT {DELIVERY_COLS} FROM deliveries d WHERE d.msg_id = $1 AND d.endpoint_id = $2");
        let row = sqlx::query(&sql).bind(msg_id).bind(endpoint_id).fetch_optional(&self.pool).await?;
        row.map(|r| rows::delivery(&r, 0)).transpose()
    }

    async fn list_message_deliveries(
        &self,
        app_id: &str,
        msg_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<(Delivery, Endpoint)>> {
        let listing = Listing::message_deliveries(app_id, msg_id);
        sql::page(&self.pool, &listing, page, |r| {
            Ok((rows::delivery(r, 0)?, rows::endpoint_redacted(r, DELIVERY_NCOLS)?))
        })
        .await
    }

    async fn list_endpoint_deliveries(
        &self,
        app_id: &str,
        endpoint_id: &str,
        filter: &DeliveryFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<(Delivery, Message)>> {
        let listing = Listing::endpoint_deliveries(app_id, endpoint_id, filter);
        sql::page(&self.pool, &listing, page, |r| {
            Ok((rows::delivery(r, 0)?, rows::message(r, DELIVERY_NCOLS)?))
        })
        .await
    }

    async fn list_attempts(
        &self,
        app_id: &str,
        filter: &AttemptFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Attempt>> {
        sql::page(&self.pool, &Listing::attempts(app_id, filter), page, |r| rows::attempt(r, 0)).await
    }

    async fn get_attempt(
        &self,
        app_id: &str,
        msg_id: &str,
        attempt_id: &str,
    ) -> StoreResult<Option<Attempt>> {
        let sql = format!(
            "SELECT {ATTEMPT_COLS} FROM attempts t WHERE t.app_id = $1 AND t.msg_id = $2 AND t.id = $3"
        );
        let row =
            sqlx::query(&sql).bind(app_id).bind(msg_id).bind(attempt_id).fetch_optional(&self.pool).await?;
        row.map(|r| rows::attempt(&r, 0)).transpose()
    }
}

/// Store one message and its deliveries (the per-message path). Reads
/// (application, endpoints, idempotency key) go first; then every write is
/// one statement, or one transaction when an application is created, an old
/// message gives up its idempotency key, or a delivery waits for an
/// ordering key or a flow. The eventId and idempotency checks are the
/// unique indexes themselves, so they hold between nodes too.
pub(super) async fn create_one(
    pool: &PgPool,
    keys: &Keyring,
    req: &CreateMessage,
) -> StoreResult<CreatedMessage> {
    let mut last = StoreError::Backend("ingest did not run".into());
    for round in 1..=ROUNDS {
        match try_create(pool, keys, req, round == ROUNDS).await? {
            Round::Done(created) => return Ok(created),
            Round::Raced(e) => last = e,
        }
    }
    Err(last)
}

/// How long an idempotency key holds on to the message it created.
const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;
/// Unique indexes a racing node can make the insert trip over.
const IDEM_KEY: &str = "messages_idem_key";
const EVENT_ID: &str = "messages_event_id";
/// Rounds of [`try_create`]: the first can lose a race, the second sees its winner.
const ROUNDS: usize = 2;

/// What one round of ingest came to.
enum Round {
    Done(CreatedMessage),
    /// Another node committed the same idempotency key, or created the
    /// application, between our read and our write: read again.
    Raced(StoreError),
}

/// One round: the same checks, in the same order, as SQLite's ingest
/// (idempotency key, then eventId), the latter by the unique index.
async fn try_create(
    pool: &PgPool,
    keys: &Keyring,
    req: &CreateMessage,
    last_round: bool,
) -> StoreResult<Round> {
    let (_, mut found) = apps_with_endpoints(pool, keys, &[req.app_ref.as_str()]).await?;
    let (app, enabled, create_app) = match found.remove(&req.app_ref) {
        Some((app, enabled)) => (app, enabled, None),
        None => {
            let app = req.new_app.clone().ok_or(StoreError::NotFound)?;
            (app.clone(), vec![], Some(app))
        }
    };
    let mut message = req.message.clone();
    message.app_id = app.id.clone();

    let mut expired_key_holder = None;
    if let Some(key) = &req.idempotency_key {
        let sql = format!("SELECT {MESSAGE_COLS} FROM messages m WHERE m.app_id = $1 AND m.idem_key = $2");
        let prior = sqlx::query(&sql).bind(&message.app_id).bind(key).fetch_optional(pool).await?;
        match prior.map(|r| rows::message(&r, 0)).transpose()? {
            Some(m) if message.created_at.as_millis() - m.created_at.as_millis() < IDEMPOTENCY_WINDOW_MS => {
                return Ok(Round::Done(CreatedMessage {
                    message: Arc::new(m),
                    endpoints: vec![],
                    send_now: vec![],
                    wake: None,
                    existing: true,
                }));
            }
            // An old message keeps its key only for the window; freed below.
            Some(m) => expired_key_holder = Some(m.id),
            None => {}
        }
    }

    let endpoints: Vec<(Arc<Endpoint>, bool)> = match &req.only_endpoint {
        Some(id) => tenants::get_endpoint(pool, &message.app_id, id, keys)
            .await?
            .filter(|e| !e.disabled)
            .map(|e| (Arc::new(e), true))
            .into_iter()
            .collect(),
        None => enabled
            .into_iter()
            .filter(|(ep, _)| filter::wants(ep, &message.event_type, message.channels.as_ref()))
            .map(|(ep, has_flow)| (Arc::new(ep), has_flow))
            .collect(),
    };

    let first_at = message.first_attempt_at();
    let lease = req.lease.as_ref().filter(|_| first_at <= message.created_at);
    let busy = &req.busy_endpoints;
    let message = Arc::new(message);
    // Ordering keys and bounded flows need a transaction around the
    // insert; plain traffic is the one statement.
    let gated = endpoints.iter().any(|(ep, has_flow)| {
        ordering::key_for(message.ordering_key.as_deref(), ep.fifo).is_some()
            || *has_flow
            || ep.throttle_rate.or(app.throttle_rate).is_some()
    });
    let mut ins = Insert::new(&message, req.idempotency_key.as_deref(), first_at);
    let written = if !gated && create_app.is_none() && expired_key_holder.is_none() {
        for (ep, _) in &endpoints {
            let lease = lease.filter(|_| !busy.contains(&ep.id));
            ins.push(&ep.id, lease.map_or(Placed::Later(first_at), |l| Placed::Now(l, false)));
        }
        ins.run(pool).await.map_err(Failed::Sql)
    } else {
        let setup =
            Setup { create_app: create_app.as_ref(), expired_key_holder: expired_key_holder.as_deref() };
        in_transaction(pool, setup, &mut ins, &endpoints, app.throttle_rate, lease, busy).await
    };
    let e = match written {
        Ok(()) => {
            return Ok(Round::Done(ins.created(endpoints.iter().map(|(ep, _)| Arc::clone(ep)).collect())));
        }
        Err(Failed::Store(e)) => return Err(e),
        Err(Failed::Sql(e)) => e,
    };
    let constraint = unique_violation(&e).unwrap_or_default().to_owned();
    match constraint.as_str() {
        EVENT_ID => {
            let event_id = message.event_id.as_deref().unwrap_or_default();
            Err(StoreError::Conflict(format!("a message with eventId '{event_id}' already exists")))
        }
        IDEM_KEY | tenants::APP_UID if !last_round => Ok(Round::Raced(e.into())),
        tenants::APP_UID => {
            let uid = create_app.and_then(|a| a.uid);
            Err(StoreError::Conflict(tenants::app_uid_taken(&uid)()))
        }
        _ => Err(e.into()),
    }
}

/// Why ingest failed: SQL errors are looked at for the unique indexes a
/// racing node can trip; store errors are final.
enum Failed {
    Sql(sqlx::Error),
    Store(StoreError),
}

impl From<sqlx::Error> for Failed {
    fn from(e: sqlx::Error) -> Self {
        Failed::Sql(e)
    }
}

impl From<StoreError> for Failed {
    fn from(e: StoreError) -> Self {
        Failed::Store(e)
    }
}

/// An application and its enabled endpoints, each with whether it has a flow row.
pub(super) type AppWithEndpoints = (App, Vec<(Endpoint, bool)>);

/// The applications `$1` names (each reference by id, else by uid; each
/// application once) with their enabled endpoints: one row per endpoint,
/// or one with NULL endpoint columns, and the `config_version` read with
/// them. Public so that a test can read its plan.
///
/// Every lookup goes through a unique index whatever the statistics say:
/// a scalar equality on a unique column is never planned as a scan, and
/// `OFFSET 0` keeps the planner from flattening the endpoints' lateral
/// join (so they are read by `endpoints_by_app`). Right after many
/// applications and endpoints are created, before autovacuum analyzes
/// them, the plain join with `id = ANY(…) OR uid = ANY(…)` was planned as
/// scans of both tables per batch (measured: 7 ms a call, half of the
/// database's CPU per message in the `tenants` scenario).
pub static APPS_WITH_ENDPOINTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {APP_COLS}, {ENDPOINT_COLS}, COALESCE(e.flowing, false),
            (SELECT v FROM config_version WHERE id = 1)
         FROM (
            SELECT DISTINCT ON (named.id) named.* FROM unnest($1::text[]) AS r(ref)
            CROSS JOIN LATERAL (
                (SELECT * FROM apps WHERE id = r.ref) UNION ALL (SELECT * FROM apps WHERE uid = r.ref) LIMIT 1
            ) named
         ) a
         LEFT JOIN LATERAL (
            SELECT e.*, EXISTS (SELECT 1 FROM endpoint_flow f WHERE f.endpoint_id = e.id) AS flowing
            FROM endpoints e WHERE e.app_id = a.id AND NOT e.disabled OFFSET 0
         ) e ON true
         ORDER BY a.id, e.id"
    )
});

/// [`APPS_WITH_ENDPOINTS`] by reference, with the version (0 when none
/// exists). Ingest reads a batch's uncached applications at once: with
/// many tenants most messages name one it has not seen yet.
pub(super) async fn apps_with_endpoints(
    pool: &PgPool,
    keys: &Keyring,
    refs: &[&str],
) -> StoreResult<(i64, HashMap<String, AppWithEndpoints>)> {
    let found = sqlx::query(&APPS_WITH_ENDPOINTS).bind(refs).fetch_all(pool).await?;
    let mut version = 0;
    let mut by_id: HashMap<String, AppWithEndpoints> = HashMap::new();
    for r in &found {
        version = col(r, APP_NCOLS + ENDPOINT_NCOLS + 1)?;
        let app = rows::app(r, 0)?;
        let (_, endpoints) = by_id.entry(app.id.clone()).or_insert_with(|| (app, Vec::new()));
        if col::<Option<String>>(r, APP_NCOLS)?.is_some() {
            endpoints.push((rows::endpoint(r, APP_NCOLS, keys)?, col(r, APP_NCOLS + ENDPOINT_NCOLS)?));
        }
    }
    let mut named = HashMap::new();
    for &r in refs {
        let app = by_id.get(r).or_else(|| by_id.values().find(|(a, _)| a.uid.as_deref() == Some(r)));
        if let Some(app) = app {
            named.insert(r.to_owned(), app.clone());
        }
    }
    Ok((version, named))
}

/// What the transaction does before the insert.
struct Setup<'a> {
    create_app: Option<&'a App>,
    expired_key_holder: Option<&'a str>,
}

/// Ingest in a transaction: create the application, free an expired
/// idempotency key, and place each delivery: held behind its ordering key
/// (keys taken in endpoint order, so two ingests lock them alike), parked
/// behind its endpoint's flow, or leased.
async fn in_transaction<'a>(
    pool: &PgPool,
    setup: Setup<'_>,
    ins: &mut Insert<'a>,
    endpoints: &'a [(Arc<Endpoint>, bool)],
    app_limit: Option<u16>,
    lease: Option<&'a Lease>,
    busy: &[String],
) -> Result<(), Failed> {
    let mut tx = pool.begin().await?;
    if let Some(app) = setup.create_app {
        tenants::insert_app_row(&mut tx, app).await?;
        notify::changed(&mut tx).await?;
    }
    if let Some(id) = setup.expired_key_holder {
        sqlx::query("UPDATE messages SET idem_key = NULL WHERE id = $1").bind(id).execute(&mut *tx).await?;
    }
    let m = ins.message;
    let now = m.created_at;
    let mut eps: Vec<&(Arc<Endpoint>, bool)> = endpoints.iter().collect();
    eps.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    let mut placed = Vec::with_capacity(eps.len());
    for (ep, has_flow) in eps.iter().copied() {
        let okey = ordering::key_for(m.ordering_key.as_deref(), ep.fifo);
        let queued = match okey {
            Some(k) => Some((k, super::ordering::enqueue(&mut tx, &ep.id, k, &m.id).await?)),
            None => None,
        };
        placed.push((ep, *has_flow, queued));
    }
    let paced: Vec<&str> = placed
        .iter()
        .filter(|(ep, has_flow, q)| {
            q.as_ref().is_none_or(|(_, q)| q.head) && (*has_flow || ep.throttle_rate.or(app_limit).is_some())
        })
        .map(|(ep, _, _)| ep.id.as_str())
        .collect();
    let mut flows = if paced.is_empty() || ins.first_at > now {
        flow::Flows::default()
    } else {
        flow::lock(&mut tx, &paced).await?
    };
    for (ep, _, queued) in placed {
        let (okey, seq) = match &queued {
            Some((k, q)) => (Some(*k), Some(q.seq)),
            None => (None, None),
        };
        let limit = ep.throttle_rate.or(app_limit).map(u32::from);
        let decision = match queued {
            Some((_, q)) if !q.head => Placed::Held,
            _ if ins.first_at > now => Placed::Later(ins.first_at),
            _ if paced.contains(&ep.id.as_str()) => {
                let f = flows.get(&ep.id);
                let bounded = f.is_limited(limit, now);
                if bounded && !f.admit_one(limit, now) {
                    f.parked(limit, now);
                    Placed::Parked(f.wake_at.unwrap_or(now))
                } else {
                    lease.map_or(Placed::Later(now), |l| Placed::Now(l, bounded))
                }
            }
            // Paced work above is charged to the bucket here, so it is
            // leased even to a full lane; plain work is not.
            _ => {
                lease.filter(|_| !busy.contains(&ep.id)).map_or(Placed::Later(now), |l| Placed::Now(l, false))
            }
        };
        ins.push_ordered(&ep.id, decision, okey, seq);
    }
    flows.save(&mut tx, now).await?;
    ins.run(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Where a new delivery stands.
enum Placed<'a> {
    /// Leased to this node (`bool`: paced, see `DeliveryTask`).
    Now(&'a Lease, bool),
    /// Claimable by anyone from then on.
    Later(Timestamp),
    /// Parked behind its endpoint's flow, which wakes then.
    Parked(Timestamp),
    /// Held behind an earlier message of its ordering key.
    Held,
}

/// The message row and its deliveries, as one statement.
struct Insert<'a> {
    message: &'a Arc<Message>,
    idempotency_key: Option<&'a str>,
    first_at: Timestamp,
    ids: Vec<String>,
    due: Vec<Option<i64>>,
    owner: Vec<Option<&'a str>>,
    gate: Vec<Option<i32>>,
    okey: Vec<Option<&'a str>>,
    seq: Vec<Option<i64>>,
    /// The earliest time a delivery nobody leased becomes claimable.
    wake: Option<Timestamp>,
    /// The endpoints of those deliveries.
    woken: Vec<String>,
    send_now: Vec<(String, bool)>,
}

impl<'a> Insert<'a> {
    fn new(message: &'a Arc<Message>, idempotency_key: Option<&'a str>, first_at: Timestamp) -> Self {
        Insert {
            message,
            idempotency_key,
            first_at,
            ids: vec![],
            due: vec![],
            owner: vec![],
            gate: vec![],
            okey: vec![],
            seq: vec![],
            wake: None,
            woken: vec![],
            send_now: vec![],
        }
    }

    fn push(&mut self, endpoint_id: &str, placed: Placed<'a>) {
        self.push_ordered(endpoint_id, placed, None, None);
    }

    fn push_ordered(
        &mut self,
        endpoint_id: &str,
        placed: Placed<'a>,
        okey: Option<&'a str>,
        seq: Option<i64>,
    ) {
        let (due, owner, gate) = match placed {
            Placed::Now(l, paced) => {
                self.send_now.push((endpoint_id.to_owned(), paced));
                (Some(l.until), Some(l.owner.as_str()), None)
            }
            Placed::Later(at) => {
                self.wake_for(endpoint_id, at);
                (Some(at), None, None)
            }
            Placed::Parked(at) => {
                self.wake_for(endpoint_id, at);
                (None, None, Some(flow::PARKED))
            }
            Placed::Held => (None, None, Some(super::ordering::HELD)),
        };
        self.ids.push(endpoint_id.to_owned());
        self.due.push(due.map(Timestamp::as_millis));
        self.owner.push(owner);
        self.gate.push(gate);
        self.okey.push(okey);
        self.seq.push(seq);
    }

    fn wake_for(&mut self, endpoint_id: &str, at: Timestamp) {
        self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
        self.woken.push(endpoint_id.to_owned());
    }

    fn created(&self, endpoints: Vec<Arc<Endpoint>>) -> CreatedMessage {
        let send_now = self
            .send_now
            .iter()
            .filter_map(|(id, paced)| {
                let ep = endpoints.iter().find(|e| &e.id == id)?;
                Some(DeliveryTask {
                    message: Arc::clone(self.message),
                    endpoint: Arc::clone(ep),
                    paced: *paced,
                })
            })
            .collect();
        CreatedMessage {
            message: Arc::clone(self.message),
            endpoints,
            send_now,
            wake: self.wake,
            existing: false,
        }
    }

    /// Deliveries nobody leased are claimable by any node: say when.
    async fn run<'e>(&self, c: impl PgExecutor<'e>) -> Result<(), sqlx::Error> {
        let m = self.message;
        let json = |v| opt_json(v).map_err(|e| sqlx::Error::Encode(e.to_string().into()));
        sqlx::query(
            "WITH m AS (
                INSERT INTO messages (id, app_id, event_type, event_id, channels, tags, payload, created_at,
                    deliver_at, expires_at, ordering_key, idem_key, traceparent, tracestate)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $23, $24)
             ), d AS (
                INSERT INTO deliveries (msg_id, endpoint_id, app_id, status, attempts, next_attempt, due_at,
                    lease_owner, updated_at, gate, okey, seq)
                SELECT $1, e.id, $2, $13, 0, $14, e.due, e.owner, $8, e.gate, e.okey, e.seq
                FROM UNNEST($15::text[], $16::int8[], $17::text[], $18::int4[], $19::text[], $20::int8[])
                    AS e(id, due, owner, gate, okey, seq)
             )
             SELECT pg_notify($21, $22) WHERE $22::text IS NOT NULL",
        )
        .bind(&m.id)
        .bind(&m.app_id)
        .bind(&m.event_type)
        .bind(&m.event_id)
        .bind(json(&m.channels)?)
        .bind(json(&m.tags)?)
        .bind(m.payload.as_deref().map(|b| std::str::from_utf8(b).unwrap_or("{}")))
        .bind(m.created_at.as_millis())
        .bind(opt_ts(m.deliver_at))
        .bind(opt_ts(m.expires_at))
        .bind(&m.ordering_key)
        .bind(self.idempotency_key)
        .bind(int4(DeliveryStatus::Pending.code()))
        .bind(self.first_at.as_millis())
        .bind(&self.ids)
        .bind(&self.due)
        .bind(&self.owner)
        .bind(&self.gate)
        .bind(&self.okey)
        .bind(&self.seq)
        .bind(notify::CHANNEL)
        .bind(self.wake.map(|at| notify::due_payload_for(at, self.woken.iter().map(String::as_str))))
        .bind(m.trace.as_ref().map(|t| t.traceparent.as_str()))
        .bind(m.trace.as_ref().and_then(|t| t.tracestate.as_deref()))
        .execute(c)
        .await?;
        Ok(())
    }
}
