//! Tokens, applications and endpoints: the slowly changing configuration.
//!
//! Every write notifies `changed` in its transaction, so other nodes drop
//! what they cached. Updates lock the row they patch (`FOR UPDATE`): the
//! patch is applied to the stored value, and two nodes patching different
//! fields of one row cannot undo each other's change.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::{PgConnection, PgPool};

use super::rows::{self, EndpointValues, col, conflict_on, opt_ts, to_json};
use super::{PgStore, notify, sql};
use crate::domain::model::{App, AppPatch, AppSummary, DeliveryStatus, Endpoint, EndpointPatch, Scope};
use crate::domain::time::Timestamp;
use crate::store::listing::{APP_COLS, ENDPOINT_COLS, Listing};
use crate::store::sealing::Keyring;
use crate::store::{AppFilter, Page, PageRequest, StoreError, StoreResult, TenantStore};

#[async_trait]
impl TenantStore for PgStore {
    async fn insert_token(
        &self,
        hash: &str,
        scope: &Scope,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreResult<()> {
        let app_id = match scope {
            Scope::Admin => None,
            Scope::App(id) => Some(id.as_str()),
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO tokens (hash, app_id, expires_at, created_at) VALUES ($1, $2, $3, $4)")
            .bind(hash)
            .bind(app_id)
            .bind(opt_ts(expires_at))
            .bind(now.as_millis())
            .execute(&mut *tx)
            .await?;
        notify::changed(&mut tx).await?;
        Ok(tx.commit().await?)
    }

    async fn find_token(&self, hash: &str, now: Timestamp) -> StoreResult<Option<Scope>> {
        let row: Option<Option<String>> = sqlx::query_scalar(
            "SELECT app_id FROM tokens WHERE hash = $1 AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(hash)
        .bind(now.as_millis())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|app| app.map_or(Scope::Admin, Scope::App)))
    }

    async fn delete_token(&self, hash: &str) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query("DELETE FROM tokens WHERE hash = $1").bind(hash).execute(&mut *tx).await?;
        if n.rows_affected() == 0 {
            return Ok(false);
        }
        notify::changed(&mut tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn expire_app_tokens(&self, app_id: &str, at: Timestamp) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE tokens SET expires_at = $1 WHERE app_id = $2 AND (expires_at IS NULL OR expires_at > $1)",
        )
        .bind(at.as_millis())
        .bind(app_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // Other nodes drop the tokens they trust from memory.
        notify::changed(&mut tx).await?;
        tx.commit().await?;
        Ok(n)
    }

    async fn has_admin_token(&self) -> StoreResult<bool> {
        Ok(sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tokens WHERE app_id IS NULL)")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn insert_app(&self, app: &App) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        insert_app_row(&mut tx, app).await.map_err(|e| conflict_on(e, APP_UID, app_uid_taken(&app.uid)))?;
        notify::changed(&mut tx).await?;
        Ok(tx.commit().await?)
    }

    /// By id or, failing that, by uid: one index lookup each, one round trip.
    async fn get_app(&self, id_or_uid: &str) -> StoreResult<Option<App>> {
        let sql = format!(
            "SELECT {APP_COLS} FROM apps a WHERE a.id = $1 OR a.uid = $1 ORDER BY a.id = $1 DESC LIMIT 1"
        );
        let row = sqlx::query(&sql).bind(id_or_uid).fetch_optional(&self.pool).await?;
        row.map(|r| rows::app(&r, 0)).transpose()
    }

    async fn list_apps(&self, filter: &AppFilter, page: &PageRequest) -> StoreResult<Page<App>> {
        sql::page(&self.pool, &Listing::apps(filter), page, |r| rows::app(r, 0)).await
    }

    async fn app_summaries(&self, app_ids: &[String], cap: u64) -> StoreResult<HashMap<String, AppSummary>> {
        // Ids sort by creation time: the newest message is the largest id, an
        // index lookup, where MAX(created_at) would read every message.
        let rows = sqlx::query(
            "SELECT k.id,
                (SELECT count(*) FROM endpoints e WHERE e.app_id = k.id),
                (SELECT count(*) FROM (SELECT 1 FROM messages m WHERE m.app_id = k.id LIMIT $2) x),
                (SELECT m.created_at FROM messages m WHERE m.app_id = k.id ORDER BY m.id DESC LIMIT 1)
             FROM UNNEST($1::text[]) AS k(id)",
        )
        .bind(app_ids)
        .bind(i64::try_from(cap).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let mut out = HashMap::new();
        for r in &rows {
            let summary = AppSummary {
                endpoints: col::<i64>(r, 1)?.max(0) as u64,
                messages: col::<i64>(r, 2)?.max(0) as u64,
                last_message_at: col::<Option<i64>>(r, 3)?.map(Timestamp::from_millis),
            };
            out.insert(col(r, 0)?, summary);
        }
        Ok(out)
    }

    async fn update_app(&self, id: &str, patch: AppPatch, now: Timestamp) -> StoreResult<App> {
        let mut tx = self.pool.begin().await?;
        let sql = format!("SELECT {APP_COLS} FROM apps a WHERE a.id = $1 FOR UPDATE");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&mut *tx).await?.ok_or(StoreError::NotFound)?;
        let mut app = rows::app(&row, 0)?;
        patch.apply(&mut app, now);
        sqlx::query(
            "UPDATE apps SET uid = $1, name = $2, metadata = $3, throttle_rate = $4, updated_at = $5
             WHERE id = $6",
        )
        .bind(&app.uid)
        .bind(&app.name)
        .bind(to_json(&app.metadata)?)
        .bind(app.throttle_rate.map(i32::from))
        .bind(app.updated_at.as_millis())
        .bind(&app.id)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict_on(e, APP_UID, app_uid_taken(&app.uid)))?;
        notify::changed(&mut tx).await?;
        tx.commit().await?;
        Ok(app)
    }

    async fn delete_app(&self, id: &str) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query("DELETE FROM apps WHERE id = $1").bind(id).execute(&mut *tx).await?;
        if n.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        // Endpoints before deliveries: the order every writer locks them in.
        let endpoints: Vec<String> =
            sqlx::query_scalar("DELETE FROM endpoints WHERE app_id = $1 RETURNING id")
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
        for table in ["deliveries", "attempts", "messages", "tokens"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE app_id = $1")).bind(id).execute(&mut *tx).await?;
        }
        forget_gates(&mut tx, &endpoints).await?;
        notify::changed(&mut tx).await?;
        Ok(tx.commit().await?)
    }

    async fn insert_endpoint(&self, ep: &Endpoint) -> StoreResult<()> {
        let sql = format!(
            "INSERT INTO endpoints ({}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
             $15, $16, $17, $18, $19, $20, $21)",
            ENDPOINT_COLS.replace("e.", "")
        );
        let sealed = self.keys.seal_endpoint(ep);
        let values = EndpointValues::of(&sealed)?;
        let mut tx = self.pool.begin().await?;
        values
            .bind(&sealed, sqlx::query(&sql))
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict_on(e, ENDPOINT_UID, endpoint_uid_taken(&ep.uid)))?;
        notify::changed(&mut tx).await?;
        Ok(tx.commit().await?)
    }

    async fn get_endpoint(&self, app_id: &str, id_or_uid: &str) -> StoreResult<Option<Endpoint>> {
        get_endpoint(&self.pool, app_id, id_or_uid, &self.keys).await
    }

    async fn list_endpoints(&self, app_id: &str, page: &PageRequest) -> StoreResult<Page<Endpoint>> {
        sql::page(&self.pool, &Listing::endpoints(app_id), page, |r| rows::endpoint(r, 0, &self.keys)).await
    }

    async fn update_endpoint(
        &self,
        app_id: &str,
        id: &str,
        patch: EndpointPatch,
        now: Timestamp,
    ) -> StoreResult<Endpoint> {
        let mut tx = self.pool.begin().await?;
        let sql =
            format!("SELECT {ENDPOINT_COLS} FROM endpoints e WHERE e.app_id = $1 AND e.id = $2 FOR UPDATE");
        let row = sqlx::query(&sql)
            .bind(app_id)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let mut ep = rows::endpoint(&row, 0, &self.keys)?;
        let was_disabled = ep.disabled;
        patch.apply(&mut ep, now);
        let sql = "UPDATE endpoints SET id = $1, app_id = $2, uid = $3, url = $4, description = $5,
                disabled = $6, event_types = $7, channels = $8, metadata = $9, headers = $10,
                throttle_rate = $11, secret = $12, old_secrets = $13, retry_policy = $14, failing_since = $15,
                created_at = $16, updated_at = $17, max_in_flight = $18, fifo = $19,
                ordering_on_failure = $20, disabled_at = $21
             WHERE id = $1";
        let sealed = self.keys.seal_endpoint(&ep);
        EndpointValues::of(&sealed)?
            .bind(&sealed, sqlx::query(sql))
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict_on(e, ENDPOINT_UID, endpoint_uid_taken(&ep.uid)))?;
        if ep.disabled && !was_disabled {
            settle_pending(&mut tx, &ep.id, now, None).await?;
        }
        notify::changed(&mut tx).await?;
        tx.commit().await?;
        Ok(ep)
    }

    async fn delete_endpoint(&self, app_id: &str, id: &str) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query("DELETE FROM endpoints WHERE app_id = $1 AND id = $2")
            .bind(app_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if n.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query("DELETE FROM deliveries WHERE endpoint_id = $1").bind(id).execute(&mut *tx).await?;
        forget_gates(&mut tx, &[id.to_owned()]).await?;
        notify::changed(&mut tx).await?;
        Ok(tx.commit().await?)
    }
}

/// The unique constraints whose violation has its own message.
pub(super) const APP_UID: &str = "apps_uid_key";
const ENDPOINT_UID: &str = "endpoints_uid";

pub(super) fn app_uid_taken(uid: &Option<String>) -> impl FnOnce() -> String + '_ {
    move || format!("an application with uid '{}' already exists", uid.as_deref().unwrap_or_default())
}

/// Insert without notifying (the caller does, in its transaction). A taken
/// uid is caught by its unique index, so two nodes cannot both take it;
/// the caller maps the raw error (see [`app_uid_taken`]).
pub(super) async fn insert_app_row(c: &mut PgConnection, app: &App) -> Result<(), sqlx::Error> {
    let metadata = serde_json::to_string(&app.metadata).map_err(|e| sqlx::Error::Encode(e.into()))?;
    sqlx::query(
        "INSERT INTO apps (id, uid, name, metadata, throttle_rate, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&app.id)
    .bind(&app.uid)
    .bind(&app.name)
    .bind(metadata)
    .bind(app.throttle_rate.map(i32::from))
    .bind(app.created_at.as_millis())
    .bind(app.updated_at.as_millis())
    .execute(c)
    .await?;
    Ok(())
}

fn endpoint_uid_taken(uid: &Option<String>) -> impl FnOnce() -> String + '_ {
    move || format!("an endpoint with uid '{}' already exists", uid.as_deref().unwrap_or_default())
}

/// No more attempts for the endpoint's pending deliveries: they fail now.
/// `except` is a delivery (by message id) its caller settles itself.
pub(super) async fn settle_pending(
    c: &mut PgConnection,
    endpoint_id: &str,
    now: Timestamp,
    except: Option<&str>,
) -> StoreResult<()> {
    // Locked in key order, like every multi-row update of deliveries (see
    // `dispatch::lock_keys`), so a node releasing some of them concurrently
    // queues instead of deadlocking.
    sqlx::query(
        "WITH l AS (
            SELECT msg_id, endpoint_id FROM deliveries
            WHERE endpoint_id = $3 AND status = $4 AND msg_id IS DISTINCT FROM $5
            ORDER BY msg_id, endpoint_id FOR UPDATE
         )
         UPDATE deliveries d SET status = $1, next_attempt = NULL, due_at = NULL, lease_owner = NULL,
            updated_at = $2, gate = NULL
         FROM l WHERE d.msg_id = l.msg_id AND d.endpoint_id = l.endpoint_id",
    )
    .bind(rows::int4(DeliveryStatus::Fail.code()))
    .bind(now.as_millis())
    .bind(endpoint_id)
    .bind(rows::int4(DeliveryStatus::Pending.code()))
    .bind(except)
    .execute(&mut *c)
    .await?;
    // Its ordering keys go with its pending deliveries (after them: the
    // lock order is deliveries, then keys).
    sqlx::query("DELETE FROM ordering_keys WHERE endpoint_id = $1").bind(endpoint_id).execute(c).await?;
    Ok(())
}

/// By id or, failing that, by uid: one index lookup each, one round trip.
pub(super) async fn get_endpoint(
    pool: &PgPool,
    app_id: &str,
    id_or_uid: &str,
    keys: &Keyring,
) -> StoreResult<Option<Endpoint>> {
    let sql = format!(
        "SELECT {ENDPOINT_COLS} FROM endpoints e WHERE e.app_id = $1 AND (e.id = $2 OR e.uid = $2)
         ORDER BY e.id = $2 DESC LIMIT 1"
    );
    let row = sqlx::query(&sql).bind(app_id).bind(id_or_uid).fetch_optional(pool).await?;
    row.map(|r| rows::endpoint(&r, 0, keys)).transpose()
}

/// Deleted endpoints' ordering keys and flows (last: keys and flows are
/// locked after deliveries everywhere).
async fn forget_gates(c: &mut PgConnection, endpoint_ids: &[String]) -> StoreResult<()> {
    for table in ["ordering_keys", "endpoint_flow"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE endpoint_id = ANY($1)"))
            .bind(endpoint_ids)
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}
