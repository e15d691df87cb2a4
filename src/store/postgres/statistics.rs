//! Planner statistics while the busiest tables are young.
//!
//! sqlx prepares each statement once per connection, and after a few runs
//! PostgreSQL keeps one generic plan for it, made from the statistics of
//! that moment. Autovacuum refreshes statistics at most once a minute and
//! only after a tenth of a table changed. On a fresh database the first
//! plans are therefore made for empty tables, where a sequential scan is
//! the cheapest way to find a row, and they are kept while the tables grow:
//! measured at 1,000 messages/s on a new database, the attempt recorder's
//! locking read scanned every delivery (5.1 million rows read for 10,000
//! messages, 1.9 ms a batch). A fresh `ANALYZE` invalidates those plans.
//!
//! So while `messages`, `deliveries` or `attempts` is small, this task
//! looks once a second and analyzes a table whenever it has doubled since
//! its last analysis; once all three passed [`GROWN`] rows, or after
//! [`LIFETIME`] (autovacuum has analyzed whatever grew by then, and keeps
//! doing so each time a tenth of a table changed), the task ends. An
//! established database never needs it: its first look finds them grown.
//!
//! Nodes started together look in step, and each would analyze the same
//! doubled table in the same second (measured with two nodes on a fresh
//! database: six `ANALYZE` runs instead of three, ~35 µs of database time
//! per message over 10,000 messages). A look therefore holds an advisory
//! lock for its transaction; a node that cannot take it skips that second,
//! and its next look sees the statistics the other node wrote.

use std::time::Duration;

use sqlx::PgPool;
use tokio::task::AbortHandle;

/// The tables written for every message.
const TABLES: [&str; 3] = ["messages", "deliveries", "attempts"];
/// Rows past which a table's plans no longer change with its size.
const GROWN: f64 = 100_000.0;
/// Rows a table needs before it is worth analyzing at all.
const SMALL: f64 = 1_000.0;
const EVERY: Duration = Duration::from_secs(1);
/// Held (per transaction) by the node that is looking: "hl-stats" in ASCII.
pub const LOOK_LOCK: i64 = 0x686c_2d73_7461_7473;
/// How long a store looks after it started, at most.
const LIFETIME: Duration = Duration::from_secs(600);

pub fn start(pool: PgPool) -> AbortHandle {
    tokio::spawn(async move {
        let until = tokio::time::Instant::now() + LIFETIME;
        while tokio::time::Instant::now() < until {
            match look(&pool).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::debug!(error = %e, "reading table statistics failed"),
            }
            tokio::time::sleep(EVERY).await;
        }
    })
    .abort_handle()
}

/// Analyze the tables that doubled; whether all of them have grown. Does
/// nothing while another node is looking. (The task's one look; public so
/// that a test can look without waiting for the task's next second.)
pub async fn look(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mine: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(LOOK_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !mine {
        return Ok(false);
    }
    // `reltuples` is what the planner knows (−1: never analyzed),
    // `n_live_tup` what the table holds now.
    let sizes: Vec<(String, f32, i64)> = sqlx::query_as(
        "SELECT c.relname::text, c.reltuples, s.n_live_tup
         FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
         WHERE s.schemaname = current_schema() AND c.relname = ANY($1)",
    )
    .bind(&TABLES[..])
    .fetch_all(&mut *tx)
    .await?;
    let mut grown = sizes.len() == TABLES.len();
    for (table, known, live) in sizes {
        let (known, live) = (f64::from(known.max(0.0)), live as f64);
        grown &= known >= GROWN;
        if live >= SMALL && live >= 2.0 * known {
            tracing::debug!(table, rows = live, "refreshing planner statistics of a young table");
            // The name comes from `TABLES`, not from the database.
            if let Some(name) = TABLES.iter().find(|t| **t == table) {
                sqlx::query(&format!("ANALYZE {name}")).execute(&mut *tx).await?;
            }
        }
    }
    tx.commit().await?;
    Ok(grown)
}
