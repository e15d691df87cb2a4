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
    // 2: messages and attempts drop their separate index on `id`. Every
    // lookup also knows the application (messages) or the message
    // (attempts), so the unique (app_id, id) and (msg_id, id) indexes serve
    // it; one B-tree less per insert is about a sixth fewer pages per
    // commit on the ingest and attempt paths (see BENCHMARKS.md).
    r#"
    CREATE TABLE messages_v2 (
        id          TEXT NOT NULL,
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
    INSERT INTO messages_v2 (id, app_id, event_type, event_id, channels, tags, payload, created_at,
            deliver_at, expires_at, idem_key)
        SELECT id, app_id, event_type, event_id, channels, tags, payload, created_at,
            deliver_at, expires_at, idem_key
        FROM messages ORDER BY rowid;
    DROP TABLE messages;
    ALTER TABLE messages_v2 RENAME TO messages;
    CREATE UNIQUE INDEX messages_by_app ON messages (app_id, id);
    CREATE UNIQUE INDEX messages_event_id ON messages (app_id, event_id) WHERE event_id IS NOT NULL;
    CREATE UNIQUE INDEX messages_idem_key ON messages (app_id, idem_key) WHERE idem_key IS NOT NULL;
    CREATE INDEX messages_expiry ON messages (expires_at) WHERE payload IS NOT NULL;

    CREATE TABLE attempts_v2 (
        id          TEXT NOT NULL,
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
    INSERT INTO attempts_v2 (id, msg_id, endpoint_id, app_id, url, status, status_code, response,
            duration_ms, trigger, error, created_at)
        SELECT id, msg_id, endpoint_id, app_id, url, status, status_code, response,
            duration_ms, trigger, error, created_at
        FROM attempts ORDER BY rowid;
    DROP TABLE attempts;
    ALTER TABLE attempts_v2 RENAME TO attempts;
    CREATE UNIQUE INDEX attempts_by_msg ON attempts (msg_id, id);
    CREATE INDEX attempts_by_endpoint ON attempts (endpoint_id, id);
    CREATE INDEX attempts_expiry ON attempts (created_at) WHERE response != '';
    "#,
    // 3: flow control and ordered delivery (issues 17 and 18). Columns are
    // added, never rebuilt: existing rows read as unlimited, unordered.
    r#"
    ALTER TABLE endpoints ADD COLUMN max_in_flight INTEGER;
    ALTER TABLE endpoints ADD COLUMN fifo INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE endpoints ADD COLUMN ordering_on_failure TEXT NOT NULL DEFAULT 'skip';
    ALTER TABLE messages ADD COLUMN ordering_key TEXT;

    -- `gate`: why a pending delivery is not due although nothing failed.
    -- NULL: it is not gated (`due_at` says when it is due). 1: parked,
    -- waiting for its endpoint's flow (bucket or pause; `endpoint_flow`
    -- says when). 2: held behind an earlier message of its ordering key
    -- (`okey`, by `seq`; `ordering_keys` says which is the head). Gated
    -- rows have no `due_at`, so the due index never sees them, and only
    -- gated rows are in the two partial indexes: unthrottled, unordered
    -- traffic pays nothing for either.
    ALTER TABLE deliveries ADD COLUMN gate INTEGER;
    ALTER TABLE deliveries ADD COLUMN okey TEXT;
    ALTER TABLE deliveries ADD COLUMN seq INTEGER;
    CREATE INDEX deliveries_parked ON deliveries (endpoint_id, msg_id) WHERE gate = 1;
    CREATE INDEX deliveries_held ON deliveries (endpoint_id, okey, seq) WHERE gate = 2;

    -- An endpoint's flow state (`domain::flow::FlowState`), only while it
    -- has one: a throttle's bucket, a pause, a backoff, or parked
    -- deliveries, which may be claimed from `wake_at` on.
    CREATE TABLE endpoint_flow (
        endpoint_id   TEXT PRIMARY KEY,
        tat_us        INTEGER NOT NULL,
        paused_until  INTEGER,
        pause_reason  TEXT,
        backoff_rate  REAL,
        recover_to    REAL,
        last_decrease INTEGER,
        wake_at       INTEGER
    ) WITHOUT ROWID;
    CREATE INDEX endpoint_flow_wake ON endpoint_flow (wake_at) WHERE wake_at IS NOT NULL;

    -- Ordering keys with something waiting or in progress (the row goes
    -- once the key is idle): the last sequence number given out, the head
    -- (the one delivery of the key that may be attempted), and whether the
    -- head failed for good on an endpoint that blocks.
    CREATE TABLE ordering_keys (
        endpoint_id TEXT NOT NULL,
        okey        TEXT NOT NULL,
        last_seq    INTEGER NOT NULL,
        head_seq    INTEGER NOT NULL,
        head_msg_id TEXT NOT NULL,
        blocked_at  INTEGER,
        PRIMARY KEY (endpoint_id, okey)
    ) WITHOUT ROWID;
    CREATE INDEX ordering_keys_blocked ON ordering_keys (endpoint_id, okey) WHERE blocked_at IS NOT NULL;
    "#,
    // 4, issue 22 (traces and charts): the trace context a message was
    // created in, which its attempts join; and per endpoint and minute, the
    // counts the dashboard's charts read (see `domain::attempt_stats`),
    // kept as attempts are recorded.
    r#"
    ALTER TABLE messages ADD COLUMN traceparent TEXT;
    ALTER TABLE messages ADD COLUMN tracestate TEXT;

    CREATE TABLE attempt_minutes (
        endpoint_id TEXT NOT NULL,
        minute      INTEGER NOT NULL,
        app_id      TEXT NOT NULL,
        success     INTEGER NOT NULL,
        failure     INTEGER NOT NULL,
        timeout     INTEGER NOT NULL,
        l0          INTEGER NOT NULL,
        l1          INTEGER NOT NULL,
        l2          INTEGER NOT NULL,
        l3          INTEGER NOT NULL,
        l4          INTEGER NOT NULL,
        l5          INTEGER NOT NULL,
        l6          INTEGER NOT NULL,
        l7          INTEGER NOT NULL,
        l8          INTEGER NOT NULL,
        l9          INTEGER NOT NULL,
        l10         INTEGER NOT NULL,
        l11         INTEGER NOT NULL,
        l12         INTEGER NOT NULL,
        l13         INTEGER NOT NULL,
        PRIMARY KEY (endpoint_id, minute)
    ) WITHOUT ROWID;
    -- Pruning by age; a row is inserted once per endpoint and minute, and
    -- updates never touch this index.
    CREATE INDEX attempt_minutes_age ON attempt_minutes (minute);
    "#,
    // 5, issue 17 (the dashboard's re-enable backfill offer): when the endpoint
    // was last disabled, kept once it is enabled again, so the messages it
    // missed meanwhile can be counted and offered. Set by triggers, so every
    // path that disables an endpoint (a user, auto-disable in the attempt
    // recorder) records it; the time is the disabling write's `updated_at`,
    // which comes from the injected clock.
    r#"
    ALTER TABLE endpoints ADD COLUMN disabled_at INTEGER;
    CREATE TRIGGER endpoints_disabled_at_insert AFTER INSERT ON endpoints
    WHEN NEW.disabled
    BEGIN
        UPDATE endpoints SET disabled_at = NEW.updated_at WHERE id = NEW.id;
    END;
    CREATE TRIGGER endpoints_disabled_at_update AFTER UPDATE OF disabled ON endpoints
    WHEN NEW.disabled AND NOT OLD.disabled
    BEGIN
        UPDATE endpoints SET disabled_at = NEW.updated_at WHERE id = NEW.id;
    END;
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
        // Some rebuild whole tables: say why start-up waits.
        tracing::info!(migration = i + 1, "applying sqlite schema migration");
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(MIGRATIONS.len() - current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_version(v: usize) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..v] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", v as i64).unwrap();
        conn
    }

    fn count(c: &Connection, sql: &str) -> i64 {
        c.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn dropping_the_id_indexes_keeps_every_row() {
        let mut c = at_version(1);
        c.execute_batch(
            "INSERT INTO messages (id, app_id, event_type, payload, created_at, idem_key)
                 VALUES ('msg_1', 'app_1', 't', '{}', 1, 'k'), ('msg_2', 'app_1', 't', NULL, 2, NULL);
             INSERT INTO attempts (id, msg_id, endpoint_id, app_id, url, status, status_code, response,
                 duration_ms, trigger, created_at)
                 VALUES ('atmpt_1', 'msg_1', 'ep_1', 'app_1', 'http://x', 0, 200, 'ok', 3, 0, 5);",
        )
        .unwrap();
        assert_eq!(migrate(&mut c).unwrap(), MIGRATIONS.len() - 1);

        let kept: (String, Option<String>, Option<String>) = c
            .query_row(
                "SELECT id, payload, idem_key FROM messages WHERE app_id = 'app_1' AND id = 'msg_1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(kept, ("msg_1".into(), Some("{}".into()), Some("k".into())));
        assert_eq!(count(&c, "SELECT COUNT(*) FROM messages"), 2);
        assert_eq!(count(&c, "SELECT COUNT(*) FROM attempts WHERE msg_id = 'msg_1' AND response = 'ok'"), 1);
        let autoindexes = "SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'sqlite_autoindex_messages%'
                           OR name LIKE 'sqlite_autoindex_attempts%'";
        assert_eq!(count(&c, autoindexes), 0);
        // Still unique, through the indexes that replace the primary keys.
        assert!(
            c.execute(
                "INSERT INTO messages (id, app_id, event_type, created_at) VALUES ('msg_1', 'app_1', 't', 3)",
                []
            )
            .is_err()
        );
        assert!(
            c.execute(
                "INSERT INTO attempts (id, msg_id, endpoint_id, app_id, url, status, status_code, response,
                     duration_ms, trigger, created_at) VALUES ('atmpt_1', 'msg_1', 'ep_1', 'app_1', '', 0, 0, '', 0, 0, 6)",
                [],
            )
            .is_err()
        );
    }

    /// The lookups by id that lost their primary key must still be index
    /// searches (the joins are the store's own; the lookups mirror it).
    #[test]
    fn id_lookups_search_an_index() {
        use crate::store::listing::{DELIVERIES_WITH_MESSAGES, JOIN_ATTEMPT_MESSAGES};
        let c = at_version(MIGRATIONS.len());
        for sql in [
            "SELECT * FROM messages m WHERE m.app_id = ? AND m.id = ?".to_owned(),
            "SELECT * FROM attempts t WHERE t.msg_id = ? AND t.id = ? AND t.app_id = ?".to_owned(),
            "UPDATE attempts SET response = '' WHERE msg_id = ? AND id = ? AND app_id = ?".to_owned(),
            format!(
                "SELECT * FROM {DELIVERIES_WITH_MESSAGES}
                 WHERE d.app_id = ? AND d.endpoint_id = ? ORDER BY d.msg_id DESC LIMIT 10"
            ),
            format!(
                "SELECT * FROM attempts t{JOIN_ATTEMPT_MESSAGES}
                 WHERE t.app_id = ? AND t.msg_id = ? ORDER BY t.id DESC LIMIT 10"
            ),
        ] {
            let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {}", sql.replace('?', "'x'"))).unwrap();
            let plan: Vec<String> =
                stmt.query_map([], |r| r.get::<_, String>(3)).unwrap().map(Result::unwrap).collect();
            assert!(
                plan.iter().all(|step| !step.starts_with("SCAN") || step.contains("INDEX")),
                "{sql}: {plan:?}"
            );
        }
    }
}
