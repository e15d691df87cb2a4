//! Messages, their deliveries and attempts: ingest and the read side.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::rows::{self, opt_json, opt_ts_value};
use super::{SqliteStore, flow, sql, tenants};
use crate::domain::model::{App, Attempt, Delivery, DeliveryStatus, Endpoint, Message};
use crate::domain::time::Timestamp;
use crate::domain::{filter, ordering};
use crate::store::listing::{ATTEMPT_COLS, DELIVERY_COLS, DELIVERY_NCOLS, Listing, MESSAGE_COLS};
use crate::store::sealing::Keyring;
use crate::store::{
    AttemptFilter, CreateMessage, CreatedMessage, DeliveryFilter, DeliveryKey, DeliveryTask, Lease,
    MessageFilter, MessageStore, Page, PageRequest, StoreError, StoreResult,
};

#[async_trait]
impl MessageStore for SqliteStore {
    async fn create_message(&self, req: CreateMessage) -> StoreResult<CreatedMessage> {
        let cache = Arc::clone(&self.cache);
        self.write_checked_first(move |c| create_message(c, req, &cache)).await
    }

    async fn get_message(&self, app_id: &str, id_or_event_id: &str) -> StoreResult<Option<Message>> {
        let (app_id, key) = (app_id.to_owned(), id_or_event_id.to_owned());
        self.read(move |c| get_message(c, &app_id, &key)).await
    }

    async fn list_messages(
        &self,
        app_id: &str,
        filter: &MessageFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Message>> {
        let (listing, page) = (Listing::messages(app_id, filter), page.clone());
        self.read(move |c| sql::page(c, &listing, &page, |r| rows::message(r, 0))).await
    }

    async fn get_delivery(&self, msg_id: &str, endpoint_id: &str) -> StoreResult<Option<Delivery>> {
        let (msg_id, endpoint_id) = (msg_id.to_owned(), endpoint_id.to_owned());
        self.read(move |c| {
            let sql =
                format!("SELECT {DELIVERY_COLS} FROM deliveries d WHERE d.msg_id = ? AND d.endpoint_id = ?");
            Ok(c.prepare_cached(&sql)?
                .query_row([msg_id, endpoint_id], |r| rows::delivery(r, 0))
                .optional()?)
        })
        .await
    }

    async fn list_message_deliveries(
        &self,
        app_id: &str,
        msg_id: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<(Delivery, Endpoint)>> {
        let (listing, page) = (Listing::message_deliveries(app_id, msg_id), page.clone());
        self.read(move |c| {
            sql::page(c, &listing, &page, |r| {
                Ok((rows::delivery(r, 0)?, rows::endpoint_redacted(r, DELIVERY_NCOLS)?))
            })
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
        let (listing, page) = (Listing::endpoint_deliveries(app_id, endpoint_id, filter), page.clone());
        self.read(move |c| {
            sql::page(c, &listing, &page, |r| Ok((rows::delivery(r, 0)?, rows::message(r, DELIVERY_NCOLS)?)))
        })
        .await
    }

    async fn list_attempts(
        &self,
        app_id: &str,
        filter: &AttemptFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Attempt>> {
        let (listing, page) = (Listing::attempts(app_id, filter), page.clone());
        self.read(move |c| sql::page(c, &listing, &page, |r| rows::attempt(r, 0))).await
    }

    async fn get_attempt(
        &self,
        app_id: &str,
        msg_id: &str,
        attempt_id: &str,
    ) -> StoreResult<Option<Attempt>> {
        let (app_id, msg_id, attempt_id) = (app_id.to_owned(), msg_id.to_owned(), attempt_id.to_owned());
        self.read(move |c| {
            let sql = format!(
                "SELECT {ATTEMPT_COLS} FROM attempts t WHERE t.msg_id = ? AND t.id = ? AND t.app_id = ?"
            );
            Ok(c.prepare_cached(&sql)?
                .query_row([msg_id, attempt_id, app_id], |r| rows::attempt(r, 0))
                .optional()?)
        })
        .await
    }
}

/// How long an idempotency key holds on to the message it created.
const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// What ingest reads for every message, kept in memory by the writer:
/// applications by id and uid, and each application's enabled endpoints.
/// Every change to applications and endpoints is a writer job too and
/// clears it, so it is never stale (see `SqliteStore::write_config`).
pub struct IngestCache {
    apps: HashMap<String, App>,
    endpoints: HashMap<String, Arc<Vec<Arc<Endpoint>>>>,
    /// Opens the endpoints' secrets (`store::sealing`).
    keys: Arc<Keyring>,
}

impl IngestCache {
    pub fn new(keys: Arc<Keyring>) -> Self {
        IngestCache { apps: HashMap::new(), endpoints: HashMap::new(), keys }
    }

    pub fn clear(&mut self) {
        self.apps.clear();
        self.endpoints.clear();
    }

    fn app(&mut self, c: &Connection, app_ref: &str) -> StoreResult<Option<App>> {
        if let Some(app) = self.apps.get(app_ref) {
            return Ok(Some(app.clone()));
        }
        let found = tenants::get_app(c, app_ref)?;
        if let Some(app) = &found {
            self.apps.insert(app_ref.to_owned(), app.clone());
        }
        Ok(found)
    }

    fn endpoints(&mut self, c: &Connection, app_id: &str) -> StoreResult<Arc<Vec<Arc<Endpoint>>>> {
        if let Some(eps) = self.endpoints.get(app_id) {
            return Ok(Arc::clone(eps));
        }
        let eps = Arc::new(
            tenants::enabled_endpoints(c, app_id, &self.keys)?.into_iter().map(Arc::new).collect::<Vec<_>>(),
        );
        self.endpoints.insert(app_id.to_owned(), Arc::clone(&eps));
        Ok(eps)
    }
}

fn create_message(
    c: &Connection,
    req: CreateMessage,
    cache: &Mutex<IngestCache>,
) -> StoreResult<CreatedMessage> {
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    let CreateMessage {
        app_ref,
        new_app,
        mut message,
        lease,
        only_endpoint,
        idempotency_key,
        busy_endpoints,
    } = req;
    let app = match cache.app(c, &app_ref)? {
        Some(app) => app,
        None => {
            let app = new_app.ok_or(StoreError::NotFound)?;
            tenants::insert_app(c, &app)?;
            app
        }
    };
    message.app_id = app.id;

    let mut expired_key_holder = None;
    if let Some(key) = &idempotency_key {
        let sql = format!("SELECT {MESSAGE_COLS} FROM messages m WHERE m.app_id = ? AND m.idem_key = ?");
        let prior =
            c.prepare_cached(&sql)?.query_row([&message.app_id, key], |r| rows::message(r, 0)).optional()?;
        match prior {
            Some(m) if message.created_at.as_millis() - m.created_at.as_millis() < IDEMPOTENCY_WINDOW_MS => {
                return Ok(CreatedMessage {
                    message: Arc::new(m),
                    endpoints: vec![],
                    send_now: vec![],
                    wake: None,
                    existing: true,
                });
            }
            // An old message keeps its key only for the window; freed below.
            Some(m) => expired_key_holder = Some(m.id),
            None => {}
        }
    }

    if let Some(event_id) = &message.event_id {
        let taken: bool = c
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM messages WHERE app_id = ? AND event_id = ?)")?
            .query_row([&message.app_id, event_id], |r| r.get(0))?;
        if taken {
            return Err(StoreError::Conflict(format!("a message with eventId '{event_id}' already exists")));
        }
    }

    // Every check is made: from here on only SQLite itself can fail (this
    // job runs without a savepoint; see `writer::Guard::ChecksFirst`).
    if let Some(id) = expired_key_holder {
        c.prepare_cached("UPDATE messages SET idem_key = NULL WHERE app_id = ? AND id = ?")?
            .execute([&message.app_id, &id])?;
    }

    let cols = MESSAGE_COLS.replace("m.", "");
    c.prepare_cached(&format!(
        "INSERT INTO messages ({cols}, idem_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))?
    .execute(params![
        message.id,
        message.app_id,
        message.event_type,
        message.event_id,
        opt_json(&message.channels),
        opt_json(&message.tags),
        message.payload.as_deref().map(|b| std::str::from_utf8(b).unwrap_or("{}")),
        message.created_at.as_millis(),
        opt_ts_value(message.deliver_at),
        opt_ts_value(message.expires_at),
        message.ordering_key,
        message.trace.as_ref().map(|t| t.traceparent.as_str()),
        message.trace.as_ref().and_then(|t| t.tracestate.as_deref()),
        idempotency_key,
    ])?;

    let endpoints: Vec<Arc<Endpoint>> = match &only_endpoint {
        Some(id) => tenants::get_endpoint(c, &message.app_id, id, &cache.keys)?
            .filter(|e| !e.disabled)
            .map(Arc::new)
            .into_iter()
            .collect(),
        None => cache
            .endpoints(c, &message.app_id)?
            .iter()
            .filter(|ep| filter::wants(ep, &message.event_type, message.channels.as_ref()))
            .cloned()
            .collect(),
    };

    let first_at = message.first_attempt_at();
    let message = Arc::new(message);
    let mut created = CreatedMessage {
        message: Arc::clone(&message),
        endpoints: Vec::new(),
        send_now: Vec::new(),
        wake: None,
        existing: false,
    };
    for ep in endpoints {
        let lane_full = busy_endpoints.contains(&ep.id);
        let placed = place(
            c,
            &message,
            &ep,
            app.throttle_rate,
            first_at,
            lease.as_ref(),
            lane_full,
            message.created_at,
        )?;
        match placed {
            Placed::Now { paced } => created.send_now.push(DeliveryTask {
                message: Arc::clone(&message),
                endpoint: Arc::clone(&ep),
                paced,
            }),
            Placed::Later(at) => created.wake = Some(created.wake.map_or(at, |w| w.min(at))),
            Placed::Held => {}
        }
        created.endpoints.push(ep);
    }
    Ok(created)
}

/// Where a new delivery stands.
pub(super) enum Placed {
    /// Leased to the caller: send it now (`paced`: see `DeliveryTask`).
    Now { paced: bool },
    /// Claimable from then on (a delayed message, a parked delivery, or no
    /// lease was asked for).
    Later(Timestamp),
    /// Held behind an earlier message of its ordering key.
    Held,
}

/// Insert a new pending delivery of `message` to `ep`, first attempt at
/// `first_at`, and decide where it stands: held behind its ordering key,
/// parked behind its endpoint's flow, or leased to `lease` when it may go
/// at once. `app_limit` is the application's `throttleRate`. When
/// `lane_full` (the creating node's lane for `ep` is full), unpaced work is
/// left due now instead of leased; paced work, charged to the bucket here,
/// is leased all the same.
#[allow(clippy::too_many_arguments)]
pub(super) fn place(
    c: &Connection,
    message: &Message,
    ep: &Endpoint,
    app_limit: Option<u16>,
    first_at: Timestamp,
    lease: Option<&Lease>,
    lane_full: bool,
    now: Timestamp,
) -> StoreResult<Placed> {
    let key = DeliveryKey { msg_id: message.id.clone(), endpoint_id: ep.id.clone() };
    let mut row =
        NewDelivery { gate: None, okey: None, seq: None, due_at: Some(first_at), lease_owner: None };
    let placed = 'decide: {
        if let Some(okey) = ordering::key_for(message.ordering_key.as_deref(), ep.fifo) {
            let q = super::ordering::enqueue(c, &ep.id, okey, &message.id)?;
            (row.okey, row.seq) = (Some(okey), Some(q.seq));
            if !q.head {
                (row.gate, row.due_at) = (Some(super::ordering::HELD), None);
                break 'decide Placed::Held;
            }
        }
        if first_at > now {
            break 'decide Placed::Later(first_at); // the claim looks at its flow then
        }
        let limit = ep.throttle_rate.or(app_limit).map(u32::from);
        let mut flow = flow::load(c, &ep.id)?;
        let paced = flow.is_limited(limit, now);
        if paced && !flow.admit_one(limit, now) {
            flow.parked(limit, now);
            flow::save(c, &ep.id, &flow, now)?;
            (row.gate, row.due_at) = (Some(flow::PARKED), None);
            break 'decide Placed::Later(flow.wake_at.unwrap_or(now));
        }
        if paced {
            flow::save(c, &ep.id, &flow, now)?;
        }
        match lease.filter(|_| paced || !lane_full) {
            Some(l) => {
                (row.due_at, row.lease_owner) = (Some(l.until), Some(l.owner.as_str()));
                Placed::Now { paced }
            }
            None => Placed::Later(now),
        }
    };
    c.prepare_cached(
        "INSERT INTO deliveries (msg_id, endpoint_id, app_id, status, attempts, next_attempt, due_at,
            lease_owner, updated_at, gate, okey, seq)
         VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        key.msg_id,
        key.endpoint_id,
        message.app_id,
        DeliveryStatus::Pending.code(),
        first_at.as_millis(),
        opt_ts_value(row.due_at),
        row.lease_owner,
        now.as_millis(),
        row.gate,
        row.okey,
        row.seq,
    ])?;
    Ok(placed)
}

/// The columns of a new delivery row that `place` decides.
struct NewDelivery<'a> {
    gate: Option<i64>,
    okey: Option<&'a str>,
    seq: Option<i64>,
    due_at: Option<Timestamp>,
    lease_owner: Option<&'a str>,
}

fn get_message(c: &Connection, app_id: &str, id_or_event_id: &str) -> StoreResult<Option<Message>> {
    for col in ["id", "event_id"] {
        let sql = format!("SELECT {MESSAGE_COLS} FROM messages m WHERE m.app_id = ? AND m.{col} = ?");
        let found = c
            .prepare_cached(&sql)?
            .query_row([app_id, id_or_event_id], |r| rows::message(r, 0))
            .optional()?;
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}
