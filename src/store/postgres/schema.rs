//! Schema and migrations, applied in order at connect (and by `hookline
//! migrate`); `hookline_schema_migrations` records which have run. Append
//! new migrations, never edit old ones.
//!
//! The tables mirror the SQLite schema column for column: timestamps are
//! BIGINT milliseconds, JSON is TEXT, flags are BOOLEAN. Identifiers use the
//! "C" collation whatever the database's default: ids sort by creation time
//! only byte-wise, and cursor pagination compares them with `<` and `>`.

use sqlx::{Connection, PgConnection};

use crate::domain::time::Timestamp;
use crate::store::{StoreError, StoreResult};

/// Held (per transaction) while migrating, so nodes starting together
/// migrate one after the other: "hookline" in ASCII.
const MIGRATION_LOCK: i64 = 0x686f_6f6b_6c69_6e65;

const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    r#"
    CREATE TABLE apps (
        id            TEXT COLLATE "C" PRIMARY KEY,
        uid           TEXT COLLATE "C" UNIQUE,
        name          TEXT NOT NULL,
        metadata      TEXT NOT NULL,
        throttle_rate INTEGER,
        created_at    BIGINT NOT NULL,
        updated_at    BIGINT NOT NULL
    );

    CREATE TABLE endpoints (
        id            TEXT COLLATE "C" PRIMARY KEY,
        app_id        TEXT COLLATE "C" NOT NULL,
        uid           TEXT COLLATE "C",
        url           TEXT NOT NULL,
        description   TEXT NOT NULL,
        disabled      BOOLEAN NOT NULL,
        event_types   TEXT,
        channels      TEXT,
        metadata      TEXT NOT NULL,
        headers       TEXT NOT NULL,
        throttle_rate INTEGER,
        secret        TEXT NOT NULL,
        old_secrets   TEXT NOT NULL,
        retry_policy  TEXT,
        failing_since BIGINT,
        created_at    BIGINT NOT NULL,
        updated_at    BIGINT NOT NULL
    );
    CREATE INDEX endpoints_by_app ON endpoints (app_id, id);
    CREATE UNIQUE INDEX endpoints_uid ON endpoints (app_id, uid) WHERE uid IS NOT NULL;

    CREATE TABLE messages (
        id          TEXT COLLATE "C" PRIMARY KEY,
        app_id      TEXT COLLATE "C" NOT NULL,
        event_type  TEXT NOT NULL,
        event_id    TEXT COLLATE "C",
        channels    TEXT,
        tags        TEXT,
        payload     TEXT,
        created_at  BIGINT NOT NULL,
        deliver_at  BIGINT,
        expires_at  BIGINT,
        idem_key    TEXT COLLATE "C"
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
        msg_id       TEXT COLLATE "C" NOT NULL,
        endpoint_id  TEXT COLLATE "C" NOT NULL,
        app_id       TEXT COLLATE "C" NOT NULL,
        status       INTEGER NOT NULL,
        attempts     INTEGER NOT NULL,
        next_attempt BIGINT,
        due_at       BIGINT,
        lease_owner  TEXT,
        updated_at   BIGINT NOT NULL,
        -- What the dashboard lists per delivery, kept here so a page of
        -- messages needs no lookup into attempts.
        total_attempts  INTEGER NOT NULL DEFAULT 0,
        last_code       INTEGER,
        last_attempt_at BIGINT,
        PRIMARY KEY (msg_id, endpoint_id)
    );
        CREATE INDEX deliveries_due ON deliveries (due_at) WHERE due_at IS NOT NULL;
    -- Lease renewal and per-node release: only leased rows are indexed.
    CREATE INDEX deliveries_leased ON deliveries (lease_owner) WHERE lease_owner IS NOT NULL;
    CREATE INDEX deliveries_by_endpoint ON deliveries (endpoint_id, msg_id);

    CREATE TABLE attempts (
        id          TEXT COLLATE "C" PRIMARY KEY,
        msg_id      TEXT COLLATE "C" NOT NULL,
        endpoint_id TEXT COLLATE "C" NOT NULL,
        app_id      TEXT COLLATE "C" NOT NULL,
        url         TEXT NOT NULL,
        status      INTEGER NOT NULL,
        status_code INTEGER NOT NULL,
        response    TEXT NOT NULL,
        duration_ms BIGINT NOT NULL,
        trigger     INTEGER NOT NULL,
        error       TEXT,
        created_at  BIGINT NOT NULL
    );
    CREATE INDEX attempts_by_msg ON attempts (msg_id, id);
    CREATE INDEX attempts_by_endpoint ON attempts (endpoint_id, id);
    -- Retention: only attempts still holding a response body are indexed.
    CREATE INDEX attempts_expiry ON attempts (created_at) WHERE response <> '';

    CREATE TABLE tokens (
        hash       TEXT COLLATE "C" PRIMARY KEY,
        app_id     TEXT COLLATE "C",
        expires_at BIGINT,
        created_at BIGINT NOT NULL
    );

    CREATE TABLE event_types (
        name          TEXT COLLATE "C" PRIMARY KEY,
        description   TEXT NOT NULL,
        archived      BOOLEAN NOT NULL,
        deprecated    BOOLEAN NOT NULL,
        schemas       TEXT,
        group_name    TEXT,
        feature_flags TEXT,
        created_at    BIGINT NOT NULL,
        updated_at    BIGINT NOT NULL
    );

    CREATE TABLE tasks (
        id         TEXT COLLATE "C" PRIMARY KEY,
        kind       TEXT NOT NULL,
        status     TEXT NOT NULL,
        data       TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );

    -- Responses to requests carrying an `idempotency-key`. While a request
    -- runs, `done` is false and `expires_at` is when its lock lapses.
    CREATE TABLE idempotency (
        key          TEXT COLLATE "C" PRIMARY KEY,
        done         BOOLEAN NOT NULL,
        status       INTEGER,
        content_type TEXT,
        body         BYTEA,
        expires_at   BIGINT NOT NULL
    );
    CREATE INDEX idempotency_expiry ON idempotency (expires_at);
    "#,
    // 2: flow control and ordered delivery (issues 17 and 18). Columns are
    // added, never rebuilt: existing rows read as unlimited, unordered.
    r#"
    ALTER TABLE endpoints ADD COLUMN max_in_flight INTEGER;
    ALTER TABLE endpoints ADD COLUMN fifo BOOLEAN NOT NULL DEFAULT false;
    ALTER TABLE endpoints ADD COLUMN ordering_on_failure TEXT NOT NULL DEFAULT 'skip';
    ALTER TABLE messages ADD COLUMN ordering_key TEXT COLLATE "C";

    -- `gate`: why a pending delivery is not due although nothing failed.
    -- NULL: it is not gated (`due_at` says when it is due). 1: parked,
    -- waiting for its endpoint's flow (bucket or pause; `endpoint_flow`
    -- says when). 2: held behind an earlier message of its ordering key
    -- (`okey`, by `seq`; `ordering_keys` says which is the head). Gated
    -- rows have no `due_at`, so the due index never sees them, and only
    -- gated rows are in the two partial indexes: unthrottled, unordered
    -- traffic pays nothing for either.
    ALTER TABLE deliveries ADD COLUMN gate INTEGER;
    ALTER TABLE deliveries ADD COLUMN okey TEXT COLLATE "C";
    ALTER TABLE deliveries ADD COLUMN seq BIGINT;
    CREATE INDEX deliveries_parked ON deliveries (endpoint_id, msg_id) WHERE gate = 1;
    CREATE INDEX deliveries_held ON deliveries (endpoint_id, okey, seq) WHERE gate = 2;

    -- An endpoint's flow state (`domain::flow::FlowState`), only while it
    -- has one: a throttle's bucket, a pause, a backoff, or parked
    -- deliveries, which may be claimed from `wake_at` on.
    CREATE TABLE endpoint_flow (
        endpoint_id   TEXT COLLATE "C" PRIMARY KEY,
        tat_us        BIGINT NOT NULL,
        paused_until  BIGINT,
        pause_reason  TEXT,
        backoff_rate  DOUBLE PRECISION,
        recover_to    DOUBLE PRECISION,
        last_decrease BIGINT,
        wake_at       BIGINT
    );
    CREATE INDEX endpoint_flow_wake ON endpoint_flow (wake_at) WHERE wake_at IS NOT NULL;

    -- Ordering keys with something waiting or in progress (the row goes
    -- once the key is idle): the last sequence number given out, the head
    -- (the one delivery of the key that may be attempted), and whether the
    -- head failed for good on an endpoint that blocks.
    CREATE TABLE ordering_keys (
        endpoint_id TEXT COLLATE "C" NOT NULL,
        okey        TEXT COLLATE "C" NOT NULL,
        last_seq    BIGINT NOT NULL,
        head_seq    BIGINT NOT NULL,
        head_msg_id TEXT COLLATE "C" NOT NULL,
        blocked_at  BIGINT,
        PRIMARY KEY (endpoint_id, okey)
    );
    CREATE INDEX ordering_keys_blocked ON ordering_keys (endpoint_id, okey) WHERE blocked_at IS NOT NULL;
    "#,
    // 3, issue 22 (traces and charts): the trace context a message was
    // created in, which its attempts join; and per endpoint and minute, the
    // counts the dashboard's charts read (see `domain::attempt_stats`),
    // kept as attempts are recorded.
    r#"
    ALTER TABLE messages ADD COLUMN traceparent TEXT;
    ALTER TABLE messages ADD COLUMN tracestate TEXT;

    CREATE TABLE attempt_minutes (
        endpoint_id TEXT COLLATE "C" NOT NULL,
        minute      BIGINT NOT NULL,
        app_id      TEXT COLLATE "C" NOT NULL,
        success     BIGINT NOT NULL,
        failure     BIGINT NOT NULL,
        timeout     BIGINT NOT NULL,
        l0          BIGINT NOT NULL,
        l1          BIGINT NOT NULL,
        l2          BIGINT NOT NULL,
        l3          BIGINT NOT NULL,
        l4          BIGINT NOT NULL,
        l5          BIGINT NOT NULL,
        l6          BIGINT NOT NULL,
        l7          BIGINT NOT NULL,
        l8          BIGINT NOT NULL,
        l9          BIGINT NOT NULL,
        l10         BIGINT NOT NULL,
        l11         BIGINT NOT NULL,
        l12         BIGINT NOT NULL,
        l13         BIGINT NOT NULL,
        PRIMARY KEY (endpoint_id, minute)
    );
    CREATE INDEX attempt_minutes_age ON attempt_minutes (minute);
    "#,
    // 4, issue 17 (the dashboard's re-enable backfill offer): when the endpoint
    // was last disabled, kept once it is enabled again, so the messages it
    // missed meanwhile can be counted and offered. Set by a trigger, so every
    // path that disables an endpoint (a user, auto-disable in the attempt
    // recorder) records it; the time is the disabling write's `updated_at`,
    // which comes from the injected clock.
    r#"
    ALTER TABLE endpoints ADD COLUMN disabled_at BIGINT;
    CREATE FUNCTION hookline_endpoint_disabled_at() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.disabled AND (TG_OP = 'INSERT' OR NOT OLD.disabled) THEN
            NEW.disabled_at := NEW.updated_at;
        END IF;
        RETURN NEW;
    END
    $$;
    CREATE TRIGGER endpoints_disabled_at BEFORE INSERT OR UPDATE ON endpoints
        FOR EACH ROW EXECUTE FUNCTION hookline_endpoint_disabled_at();
    "#,
    // 5, issue 21 (ingest with group commit): a counter that every change to
    // an application, or to an endpoint's settings, bumps, on any node. The
    // ingest cache of applications and endpoints is as new as the counter it
    // was read with, and a batch inserts nothing if the counter moved. Health
    // columns (failing_since, and the disabled_at/updated_at that go with
    // them) change with attempts and do not count; `disabled` does.
    r#"
    CREATE TABLE config_version (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        v  BIGINT NOT NULL
    );
    INSERT INTO config_version (id, v) VALUES (1, 0);
    CREATE FUNCTION hookline_config_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE config_version SET v = v + 1 WHERE id = 1;
        RETURN NULL;
    END
    $$;
    CREATE TRIGGER apps_config AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON apps
        FOR EACH STATEMENT EXECUTE FUNCTION hookline_config_changed();
    CREATE TRIGGER endpoints_config_rows AFTER INSERT OR DELETE OR TRUNCATE ON endpoints
        FOR EACH STATEMENT EXECUTE FUNCTION hookline_config_changed();
    CREATE TRIGGER endpoints_config_settings AFTER UPDATE ON endpoints FOR EACH ROW
        WHEN ((to_jsonb(OLD) - 'failing_since' - 'disabled_at' - 'updated_at')
            IS DISTINCT FROM (to_jsonb(NEW) - 'failing_since' - 'disabled_at' - 'updated_at'))
        EXECUTE FUNCTION hookline_config_changed();
    "#,
    // 6, issue 21: every lease (claim, ingest) and every settling wrote an
    // entry of this index, for the one statement that used it (a node's
    // release of all its leases, at start and stop). A leased row's
    // `due_at` is its lease's expiry, so that statement walks the due index
    // instead. Measured: a claim of 512 deliveries 19.8 → 14.4 ms.
    r#"
    DROP INDEX deliveries_leased;
    "#,
    // 7, issue 21: each recorder (one per node) adds its counts to rows of
    // its own (`shard`, the next number of `chart_shards` when it starts),
    // so two nodes recording attempts to one endpoint in the same minute no
    // longer wait for each other's commit on one row (measured with two
    // nodes: 6 ms a batch). The charts' reads sum the shards with the
    // minutes.
    r#"
    CREATE SEQUENCE chart_shards AS SMALLINT MINVALUE 1 CYCLE;
    ALTER TABLE attempt_minutes ADD COLUMN shard SMALLINT NOT NULL DEFAULT 0;
    ALTER TABLE attempt_minutes DROP CONSTRAINT attempt_minutes_pkey;
    ALTER TABLE attempt_minutes ADD PRIMARY KEY (endpoint_id, minute, shard);
    "#,
];

/// Bring the schema up to date; returns how many migrations ran.
///
/// Everything happens in one transaction holding an advisory lock: a node
/// that starts while another migrates waits, then finds nothing to do; a
/// failing migration leaves the schema as it was.
pub async fn migrate(conn: &mut PgConnection) -> StoreResult<usize> {
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK).execute(&mut *tx).await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS hookline_schema_migrations (
            version    INTEGER PRIMARY KEY,
            applied_at BIGINT NOT NULL
        )",
    )
    .execute(&mut *tx)
    .await?;
    let current: i32 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM hookline_schema_migrations")
        .fetch_one(&mut *tx)
        .await?;
    let current = usize::try_from(current).unwrap_or(0);
    if current > MIGRATIONS.len() {
        return Err(StoreError::Backend(format!(
            "database schema version {current} is newer than this binary ({}); upgrade Hookline",
            MIGRATIONS.len()
        )));
    }
    let now = Timestamp::from_datetime(chrono::Utc::now());
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO hookline_schema_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(i32::try_from(i + 1).unwrap_or(i32::MAX))
            .bind(now.as_millis())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(MIGRATIONS.len() - current)
}
