//! Messages, their deliveries and attempts: ingest and the read side.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{PgExecutor, PgPool};

use super::rows::{self, col, int4, opt_json, opt_ts, unique_violation};
use super::{PgStore, notify, sql, tenants};
use crate::domain::filter;
use crate::domain::model::{App, Attempt, Delivery, DeliveryStatus, Endpoint, Message};
use crate::domain::time::Timestamp;
use crate::store::listing::{
    APP_COLS, APP_NCOLS, ATTEMPT_COLS, DELIVERY_COLS, DELIVERY_NCOLS, ENDPOINT_COLS, Listing, MESSAGE_COLS,
};
use crate::store::sealing::Keyring;
use crate::store::{
    AttemptFilter, CreateMessage, CreatedMessage, DeliveryFilter, MessageFilter, MessageStore, Page,
    PageRequest, StoreError, StoreResult,
};

#[async_trait]
impl MessageStore for PgStore {
    /// Stores the message and its deliveries. Reads (application, endpoints,
    /// idempotency key) go first; then every write is one statement, or one
    /// transaction when an application is created or an old message gives up
    /// its idempotency key. The eventId and idempotency checks are the unique
    /// indexes themselves, so they hold between nodes too.
    async fn create_message(&self, req: CreateMessage) -> StoreResult<CreatedMessage> {
        let mut last = StoreError::Backend("ingest did not run".into());
        for round in 1..=ROUNDS {
            match try_create(&self.pool, &self.keys, &req, round == ROUNDS).await? {
                Round::Done(created) => return Ok(created),
                Round::Raced(e) => last = e,
            }
        }
        Err(last)
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
    let (app, enabled) = app_with_endpoints(pool, keys, &req.app_ref).await?;
    let (app, create_app) = match app {
        Some(app) => (app, None),
        None => {
            let app = req.new_app.clone().ok_or(StoreError::NotFound)?;
            (app.clone(), Some(app))
        }
    };
    let mut message = req.message.clone();
    message.app_id = app.id;

    let mut expired_key_holder = None;
    if let Some(key) = &req.idempotency_key {
        let sql = format!("SELECT {MESSAGE_COLS} FROM messages m WHERE m.app_id = $1 AND m.idem_key = $2");
        let prior = sqlx::query(&sql).bind(&message.app_id).bind(key).fetch_optional(pool).await?;
        match prior.map(|r| rows::message(&r, 0)).transpose()? {
            Some(m) if message.created_at.as_millis() - m.created_at.as_millis() < IDEMPOTENCY_WINDOW_MS => {
                return Ok(Round::Done(CreatedMessage {
                    message: Arc::new(m),
                    endpoints: vec![],
                    leased: false,
                    existing: true,
                }));
            }
            // An old message keeps its key only for the window; freed below.
            Some(m) => expired_key_holder = Some(m.id),
            None => {}
        }
    }

    let endpoints: Vec<Arc<Endpoint>> = match &req.only_endpoint {
        Some(id) => tenants::get_endpoint(pool, &message.app_id, id, keys)
            .await?
            .filter(|e| !e.disabled)
            .map(Arc::new)
            .into_iter()
            .collect(),
        None => enabled
            .into_iter()
            .filter(|ep| filter::wants(ep, &message.event_type, message.channels.as_ref()))
            .map(Arc::new)
            .collect(),
    };

    let first_at = message.deliver_at.unwrap_or(message.created_at).max(message.created_at);
    let lease = req.lease.as_ref().filter(|_| first_at <= message.created_at);
    let ins = Insert {
        message: &message,
        idempotency_key: req.idempotency_key.as_deref(),
        endpoint_ids: endpoints.iter().map(|e| e.id.clone()).collect(),
        first_at,
        due_at: lease.map_or(first_at, |l| l.until),
        lease_owner: lease.map(|l| l.owner.as_str()),
    };

    let written = if create_app.is_none() && expired_key_holder.is_none() {
        ins.run(pool).await
    } else {
        in_transaction(pool, create_app.as_ref(), expired_key_holder.as_deref(), &ins).await
    };
    if let Err(e) = written {
        let constraint = unique_violation(&e).unwrap_or_default().to_owned();
        return match constraint.as_str() {
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
        };
    }
    let leased = lease.is_some();
    Ok(Round::Done(CreatedMessage { message: Arc::new(message), endpoints, leased, existing: false }))
}

/// The application (by id, else uid) and its enabled endpoints, in one
/// round trip: one row per endpoint, or one with NULL endpoint columns.
async fn app_with_endpoints(
    pool: &PgPool,
    keys: &Keyring,
    app_ref: &str,
) -> StoreResult<(Option<App>, Vec<Endpoint>)> {
    let sql = format!(
        "SELECT {APP_COLS}, {ENDPOINT_COLS} FROM apps a
         LEFT JOIN endpoints e ON e.app_id = a.id AND NOT e.disabled
         WHERE a.id = (SELECT x.id FROM apps x WHERE x.id = $1 OR x.uid = $1 ORDER BY x.id = $1 DESC LIMIT 1)
         ORDER BY e.id"
    );
    let found = sqlx::query(&sql).bind(app_ref).fetch_all(pool).await?;
    let Some(first) = found.first() else { return Ok((None, vec![])) };
    let app = rows::app(first, 0)?;
    let mut endpoints = Vec::with_capacity(found.len());
    for r in &found {
        if col::<Option<String>>(r, APP_NCOLS)?.is_some() {
            endpoints.push(rows::endpoint(r, APP_NCOLS, keys)?);
        }
    }
    Ok((Some(app), endpoints))
}

async fn in_transaction(
    pool: &PgPool,
    create_app: Option<&App>,
    expired_key_holder: Option<&str>,
    ins: &Insert<'_>,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    if let Some(app) = create_app {
        tenants::insert_app_row(&mut tx, app).await?;
        notify::changed(&mut tx).await?;
    }
    if let Some(id) = expired_key_holder {
        sqlx::query("UPDATE messages SET idem_key = NULL WHERE id = $1").bind(id).execute(&mut *tx).await?;
    }
    ins.run(&mut *tx).await?;
    tx.commit().await
}

/// The message row and its deliveries, as one statement.
struct Insert<'a> {
    message: &'a Message,
    idempotency_key: Option<&'a str>,
    endpoint_ids: Vec<String>,
    first_at: Timestamp,
    due_at: Timestamp,
    lease_owner: Option<&'a str>,
}

impl Insert<'_> {
    /// Deliveries nobody leased are claimable by any node: say when.
    async fn run<'e>(&self, c: impl PgExecutor<'e>) -> Result<(), sqlx::Error> {
        let m = self.message;
        let json = |v| opt_json(v).map_err(|e| sqlx::Error::Encode(e.to_string().into()));
        let due = (self.lease_owner.is_none() && !self.endpoint_ids.is_empty())
            .then(|| notify::due_payload(self.due_at));
        sqlx::query(
            "WITH m AS (
                INSERT INTO messages (id, app_id, event_type, event_id, channels, tags, payload, created_at,
                    deliver_at, expires_at, idem_key)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ), d AS (
                INSERT INTO deliveries (msg_id, endpoint_id, app_id, status, attempts, next_attempt, due_at,
                    lease_owner, updated_at)
                SELECT $1, e.id, $2, $12, 0, $13, $14, $15, $8 FROM UNNEST($16::text[]) AS e(id)
             )
             SELECT pg_notify($17, $18) WHERE $18::text IS NOT NULL",
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
        .bind(self.idempotency_key)
        .bind(int4(DeliveryStatus::Pending.code()))
        .bind(self.first_at.as_millis())
        .bind(self.due_at.as_millis())
        .bind(self.lease_owner)
        .bind(&self.endpoint_ids)
        .bind(notify::CHANNEL)
        .bind(due)
        .execute(c)
        .await?;
        Ok(())
    }
}
