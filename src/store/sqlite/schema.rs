//! Schema and migrations, applied in order at open; `PRAGMA user_version`
//! records how many have run. Append new migrations, never edit old ones.

use rusqlite::Connection;

use crate::store::{StoreError, StoreResult};

const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    r#"
    CREATE TABLE apps (
        id            TEXT PRIMARY KEY,
        uid           TEXT UNIQUE,
        name          TEXT NOT NULL,
        metadata      TEXT NOT NULL,
        throttle_rate INTEGER,
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL
    );

    CREATE TABLE endpoints (
        id            TEXT PRIMARY KEY,
        app_id        TEXT NOT NULL,
        uid           TEXT,
        url           TEXT NOT NULL,
        description   TEXT NOT NULL,
        disabled      INTEGER NOT NULL,
        event_types   TEXT,
        channels      TEXT,
        metadata      TEXT NOT NULL,
        headers       TEXT NOT NULL,
        throttle_rate INTEGER,
        secret        TEXT NOT NULL,
        old_secrets   TEXT NOT NULL,
        retry_policy  TEXT,
        failing_since INTEGER,
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL
    );
    CREATE INDEX endpoints_by_app ON endpoints (app_id, id);
    CREATE UNIQUE INDEX endpoints_uid ON endpoints (app_id, uid) WHERE uid IS NOT NULL;

    CREATE TABLE messages (
        id          TEXT PRIMARY KEY,
        app_id      TEXT NOT NULL,
        event_type  TEXT NOT NULL,
        event_id    TEXT,
        channels    TEXT,
        tags        TEXT,
        payload     TEXT,
        created_at  INTEGER NOT NULL,
        deliver_at  INTEGER,
        expires_at  INTEGER,
        idem_key    TEXT
    );
    CREATE INDEX messages_by_app ON messages (app_id, id);
    CREATE UNIQUE INDEX messages_event_id ON messages (app_id, event_id) WHERE event_id IS NOT NULL;
    CREATE UNIQUE INDEX messages_idem_key ON messages (app_id, idem_key) WHERE idem_key IS NOT NULL;
    -- Retention: only messages still holding a payload are indexed.
    CREATE INDEX messages_expiry ON messages (expires_at) WHERE payload IS NOT NULL;

    -- One row per message x endpoint. `due_at` is when a dispatcher may
    -- next claim the row: the next attempt time, or the lease expiry while
    -- a node holds it. NULL once the delivery is settled.
    CREATE TABLE deliveries (
        msg_id       TEXT NOT NULL,
        endpoint_id  TEXT NOT NULL,
        app_id       TEXT NOT NULL,
        status       INTEGER NOT NULL,
        attempts     INTEGER NOT NULL,
        next_attempt INTEGER,
                due_at       INTEGER,
        lease_owner  TEXT,
        updated_at   INTEGER NOT NULL,
        -- What the dashboard lists per delivery, kept here so a page of
        -- messages needs no lookup into attempts.
        total_attempts  INTEGER NOT NULL DEFAULT 0,
        last_code       INTEGER,
        last_attempt_at INTEGER,
        PRIMARY KEY (msg_id, endpoint_id)
    ) WITHOUT ROWID;
    CREATE INDEX deliveries_due ON deliveries (due_at) WHERE due_at IS NOT NULL;
    CREATE INDEX deliveries_by_endpoint ON deliveries (endpoint_id, msg_id);

    CREATE TABLE attempts (
        id          TEXT PRIMARY KEY,
        msg_id      TEXT NOT NULL,
        endpoint_id TEXT NOT NULL,
        app_id      TEXT NOT NULL,
        url         TEXT NOT NULL,
        status      INTEGER NOT NULL,
        status_code INTEGER NOT NULL,
        response    TEXT NOT NULL,
        duration_ms INTEGER NOT NULL,
        trigger     INTEGER NOT NULL,
        error       TEXT,
        created_at  INTEGER NOT NULL
    );
        CREATE INDEX attempts_by_msg ON attempts (msg_id, id);
    CREATE INDEX attempts_by_endpoint ON attempts (endpoint_id, id);
    -- Retention: only attempts still holding a response body are indexed.
    CREATE INDEX attempts_expiry ON attempts (created_at) WHERE response != '';

    CREATE TABLE tokens (
        hash       TEXT PRIMARY KEY,
        app_id     TEXT,
        expires_at INTEGER,
        created_at INTEGER NOT NULL
    );

    CREATE TABLE event_types (
        name          TEXT PRIMARY KEY,
        description   TEXT NOT NULL,
        archived      INTEGER NOT NULL,
        deprecated    INTEGER NOT NULL,
        schemas       TEXT,
        group_name    TEXT,
        feature_flags TEXT,
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL
    );

    CREATE TABLE tasks (
        id         TEXT PRIMARY KEY,
        kind       TEXT NOT NULL,
        status     TEXT NOT NULL,
        data       TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );

    -- Responses to requests carrying an `idempotency-key`. While a request
    -- runs, `done` is 0 and `expires_at` is when its lock lapses.
    CREATE TABLE idempotency (
        key          TEXT PRIMARY KEY,
        done         INTEGER NOT NULL,
        status       INTEGER,
        content_type TEXT,
        body         BLOB,
        expires_at   INTEGER NOT NULL
    );
    CREATE INDEX idempotency_expiry ON idempotency (expires_at);

    
    "#,
];

/// Bring the schema up to date; returns how many migrations ran.
pub fn migrate(conn: &mut Connection) -> StoreResult<usize> {
    let current: usize = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    if current > MIGRATIONS.len() {
        return Err(StoreError::Backend(format!(
            "database schema version {current} is newer than this binary ({}); upgrade Hookline",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(MIGRATIONS.len() - current)
}
