//! Cross-node notifications over LISTEN/NOTIFY.
//!
//! Each node's dispatcher sleeps until the next delivery it knows of, and
//! caches applications, endpoints and tokens. Another node's writes must
//! wake the one or clear the other, so every such write also runs
//! `pg_notify('hookline', …)` in its own transaction (PostgreSQL delivers
//! it at commit, and not at all on rollback):
//!
//! * `due:<millis>[:<endpoint id>,…]`: deliveries became claimable at that
//!   time without a lease held by the writer (released, requeued, replayed,
//!   a retry scheduled, a message whose deliveries the writer did not
//!   lease), of these endpoints when at most [`MAX_NAMED`] (of any
//!   otherwise). A node whose lanes for all of them are full does not look:
//!   a saturated endpoint's backlog would otherwise wake every node's
//!   scheduler with each ingest batch, to skip it again;
//! * `changed`: applications, endpoints, event types or tokens changed.
//!
//! One background task per store listens and forwards them, parsed, to a
//! broadcast channel. Notifications sent while its connection is down are
//! lost, so after reconnecting it reports both kinds of change, the
//! conservative answer to "what did I miss?".

use std::collections::BTreeSet;
use std::time::Duration;

use sqlx::PgConnection;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use tokio::task::AbortHandle;

use crate::domain::time::Timestamp;
use crate::store::{StoreEvent, StoreResult};

pub const CHANNEL: &str = "hookline";
/// Events buffered per subscriber before the slowest one starts losing them.
pub const CAPACITY: usize = 1024;
const CHANGED: &str = "changed";
const DUE: &str = "due:";

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Endpoints a `due:` notification names at most; with more it names none.
pub const MAX_NAMED: usize = 16;

/// `due:` for deliveries of any endpoint.
pub fn due_payload(at: Timestamp) -> String {
    format!("{DUE}{}", at.as_millis())
}

/// `due:` for deliveries of these endpoints (of any, when there are more
/// than [`MAX_NAMED`] or none is given).
pub fn due_payload_for<'a>(at: Timestamp, endpoints: impl IntoIterator<Item = &'a str>) -> String {
    let named: BTreeSet<&str> = endpoints.into_iter().collect();
    if named.is_empty() || named.len() > MAX_NAMED {
        return due_payload(at);
    }
    format!("{}:{}", due_payload(at), named.into_iter().collect::<Vec<_>>().join(","))
}

pub fn parse(payload: &str) -> Option<StoreEvent> {
    if payload == CHANGED {
        return Some(StoreEvent::Changed);
    }
    let due = payload.strip_prefix(DUE)?;
    let (millis, endpoints) = match due.split_once(':') {
        Some((millis, named)) => (millis, Some(named.split(',').map(str::to_owned).collect())),
        None => (due, None),
    };
    Some(StoreEvent::Due { at: Timestamp::from_millis(millis.parse().ok()?), endpoints })
}

/// Tell the other nodes, when `tx` commits, that configuration changed.
pub async fn changed(tx: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(CHANGED).execute(tx).await?;
    Ok(())
}

/// Tell the other nodes, when `tx` commits, that deliveries fall due at `at`.
pub async fn due(tx: &mut PgConnection, at: Timestamp) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(due_payload(at)).execute(tx).await?;
    Ok(())
}

/// `stmt`, an UPDATE or INSERT ending in `RETURNING due_at, endpoint_id`,
/// as one statement that also sends `due:<earliest due_at>` (naming the
/// endpoints, as [`due_payload_for`] does) if it touched any row. The
/// result is the number of rows touched (a BIGINT). Done in SQL so the
/// common writes stay one round trip; the sub-select keeps `pg_notify`
/// from being optimised away (volatile outputs are never pruned).
pub fn with_due(stmt: &str) -> String {
    format!(
        "WITH changed AS ({stmt})
         SELECT c.n, (SELECT count(*) FROM (
             SELECT pg_notify('{CHANNEL}', '{DUE}' || c.first || c.named) WHERE c.n > 0) s)
         FROM (SELECT count(*) AS n, min(due_at) AS first,
                CASE WHEN count(DISTINCT endpoint_id) <= {MAX_NAMED}
                    THEN ':' || string_agg(DISTINCT endpoint_id, ',' ORDER BY endpoint_id) ELSE '' END AS named
               FROM changed) c"
    )
}

/// Start listening on `url`. Returns once LISTEN is in place, so nothing
/// committed after `connect` returns is missed; the task runs until aborted.
pub async fn start(url: &str, events: broadcast::Sender<StoreEvent>) -> StoreResult<AbortHandle> {
    let listener = listen(url).await?;
    let url = url.to_owned();
    Ok(tokio::spawn(run(url, listener, events)).abort_handle())
}

async fn listen(url: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    // Reconnections are ours (with backoff, and reporting what may have
    // been missed), not sqlx's silent ones.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

async fn run(url: String, mut listener: PgListener, events: broadcast::Sender<StoreEvent>) {
    loop {
        forward(&mut listener, &events).await;
        drop(listener);
        listener = reconnect(&url).await;
        // Whatever was sent while we were away is lost: assume everything.
        let _ = events.send(StoreEvent::Changed);
        let _ = events.send(StoreEvent::Due { at: Timestamp::from_millis(0), endpoints: None });
    }
}

/// Forward notifications until the connection is lost.
async fn forward(listener: &mut PgListener, events: &broadcast::Sender<StoreEvent>) {
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) => match parse(n.payload()) {
                // No receivers is fine: nobody is interested yet.
                Some(event) => drop(events.send(event)),
                None => tracing::debug!(payload = n.payload(), "ignoring unknown notification"),
            },
            Ok(None) => {
                tracing::warn!("lost the PostgreSQL notification connection");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "PostgreSQL notification connection failed");
                return;
            }
        }
    }
}

async fn reconnect(url: &str) -> PgListener {
    let mut backoff = MIN_BACKOFF;
    loop {
        tokio::time::sleep(backoff).await;
        match listen(url).await {
            Ok(listener) => {
                tracing::info!("PostgreSQL notification connection re-established");
                return listener;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "cannot reconnect for notifications");
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let at = Timestamp::from_millis(1_800_000_000_123);
        assert_eq!(parse(&due_payload(at)), Some(StoreEvent::Due { at, endpoints: None }));
        let named = due_payload_for(at, ["ep_b", "ep_a", "ep_b"]);
        assert_eq!(named, "due:1800000000123:ep_a,ep_b");
        let endpoints = Some(vec!["ep_a".to_owned(), "ep_b".to_owned()]);
        assert_eq!(parse(&named), Some(StoreEvent::Due { at, endpoints }));
        // Too many to name, or none given: any endpoint.
        let many: Vec<String> = (0..=MAX_NAMED).map(|i| format!("ep_{i}")).collect();
        assert_eq!(due_payload_for(at, many.iter().map(String::as_str)), due_payload(at));
        assert_eq!(due_payload_for(at, []), due_payload(at));
        assert_eq!(parse("changed"), Some(StoreEvent::Changed));
        assert_eq!(parse("due:soon"), None);
        assert_eq!(parse("other"), None);
    }
}
