//! Erasing content: on request (a message, an attempt, a whole
//! application) and by retention age. Metadata stays; payloads and
//! response bodies go. Then, past the record retention, the records
//! themselves: settled messages with their deliveries and attempts.
//!
//! Deleted rows' pages go to SQLite's free list and later inserts reuse
//! them, so under a steady load the file stops growing once retention
//! deletes as much as comes in (no `auto_vacuum`: it can only be turned on
//! by rebuilding the whole database, and giving pages back to the file
//! system only for the next inserts to ask for them again buys nothing).

use async_trait::async_trait;

use super::SqliteStore;
use crate::domain::time::Timestamp;
use crate::store::listing;
use crate::store::{RetentionStore, StoreError, StoreResult, Sweep};

#[async_trait]
impl RetentionStore for SqliteStore {
    /// Every call is a job of the single writer, and every acknowledgement
    /// committed in the same group waits for it. Measured in 10-minute
    /// soaks at 2,268 messages/s (BENCHMARKS.md, "Soak"): with 500 per call
    /// record retention raised ingest's p99 from 6 to 20–25 ms, with 100 to
    /// 11–13 ms, with 25 to 8–9 ms, for about the same writer CPU.
    fn retention_batch(&self) -> usize {
        25
    }

    async fn expunge_message(&self, app_id: &str, msg_id: &str) -> StoreResult<()> {
        let (app_id, msg_id) = (app_id.to_owned(), msg_id.to_owned());
        self.write(move |c| {
            match c
                .prepare_cached("UPDATE messages SET payload = NULL WHERE app_id = ? AND id = ?")?
                .execute([app_id, msg_id])?
            {
                0 => Err(StoreError::NotFound),
                _ => Ok(()),
            }
        })
        .await
    }

    async fn expunge_attempt(&self, app_id: &str, msg_id: &str, attempt_id: &str) -> StoreResult<()> {
        let (app_id, msg_id, attempt_id) = (app_id.to_owned(), msg_id.to_owned(), attempt_id.to_owned());
        self.write(move |c| {
            match c
                .prepare_cached(
                    "UPDATE attempts SET response = '' WHERE msg_id = ? AND id = ? AND app_id = ?",
                )?
                .execute([msg_id, attempt_id, app_id])?
            {
                0 => Err(StoreError::NotFound),
                _ => Ok(()),
            }
        })
        .await
    }

    async fn expunge_app_content(&self, app_id: &str) -> StoreResult<u64> {
        let app_id = app_id.to_owned();
        self.write(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE messages SET payload = NULL WHERE app_id = ? AND payload IS NOT NULL",
                )?
                .execute([&app_id])?;
            c.prepare_cached("UPDATE attempts SET response = '' WHERE app_id = ? AND response != ''")?
                .execute([&app_id])?;
            Ok(n as u64)
        })
        .await
    }

    async fn expunge_messages(&self, app_id: &str, msg_ids: &[String]) -> StoreResult<(u64, u64)> {
        let (app_id, ids) = (app_id.to_owned(), msg_ids.to_vec());
        self.write(move |c| {
            let mut payload = c.prepare_cached(
                "UPDATE messages SET payload = NULL WHERE app_id = ? AND id = ? AND payload IS NOT NULL",
            )?;
            let mut bodies = c.prepare_cached(
                "UPDATE attempts SET response = '' WHERE msg_id = ? AND app_id = ? AND response != ''",
            )?;
            let (mut payloads, mut responses) = (0, 0);
            for id in &ids {
                payloads += payload.execute([&app_id, id])? as u64;
                responses += bodies.execute([id, &app_id])? as u64;
            }
            Ok((payloads, responses))
        })
        .await
    }

    /// Both statements use partial indexes that hold only rows with content
    /// left, so each run touches what is due and nothing else.
    async fn expunge_expired(
        &self,
        now: Timestamp,
        attempts_before: Timestamp,
        limit: usize,
    ) -> StoreResult<(u64, u64)> {
        let limit = limit as i64;
        // Every error here is SQLite's own (see `Guard::ChecksFirst`), and a
        // savepoint's page copies showed: ingest's p99 in the soak above was
        // 10–13 ms with one around each job, 8–9 ms without.
        self.write_checked_first(move |c| {
            let payloads = c.prepare_cached(ERASE_PAYLOADS)?.execute([now.as_millis(), limit])?;
            let bodies = c.prepare_cached(ERASE_BODIES)?.execute([attempts_before.as_millis(), limit])?;
            c.prepare_cached("DELETE FROM idempotency WHERE expires_at <= ?")?.execute([now.as_millis()])?;
            Ok((payloads as u64, bodies as u64))
        })
        .await
    }

    /// Messages are a rowid table whose rowids grow with insertion, so the
    /// oldest come first in the table's own B-tree: the pass walks it from
    /// the cursor (a rowid) and stops at the first message young enough to
    /// keep. Deliveries and attempts go through their `msg_id` keys.
    async fn delete_settled(
        &self,
        before: Timestamp,
        after: Option<String>,
        limit: usize,
    ) -> StoreResult<Sweep> {
        let after: i64 = after.and_then(|a| a.parse().ok()).unwrap_or(0);
        // As above: nothing here can fail but SQLite itself.
        self.write_checked_first(move |c| {
            let mut sweep = Sweep::default();
            let oldest: Vec<(i64, String, i64)> = c
                .prepare_cached(OLDEST)?
                .query_map([after, limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            let mut settled = c.prepare_cached(&settled())?;
            let mut attempts = c.prepare_cached(DELETE_ATTEMPTS)?;
            let mut deliveries = c.prepare_cached(DELETE_DELIVERIES)?;
            let mut message = c.prepare_cached(DELETE_MESSAGE)?;
            let mut reached_young = oldest.len() < limit;
            for (rowid, id, created_at) in &oldest {
                if *created_at >= before.as_millis() {
                    reached_young = true;
                    break;
                }
                sweep.examined += 1;
                sweep.next = Some(rowid.to_string());
                if !settled.query_row([rowid], |r| r.get::<_, bool>(0))? {
                    continue;
                }
                sweep.attempts += attempts.execute([id])? as u64;
                sweep.deliveries += deliveries.execute([id])? as u64;
                sweep.messages += message.execute([rowid])? as u64;
            }
            if reached_young {
                sweep.next = None;
            }
            Ok(sweep)
        })
        .await
    }
}

// Each of these is an index search (the test below checks): retention
// touches what is due and nothing else, however large the tables.
const ERASE_PAYLOADS: &str = "UPDATE messages SET payload = NULL WHERE rowid IN (
    SELECT rowid FROM messages WHERE payload IS NOT NULL AND expires_at <= ? LIMIT ?)";
const ERASE_BODIES: &str = "UPDATE attempts SET response = '' WHERE rowid IN (
    SELECT rowid FROM attempts WHERE response != '' AND created_at < ? LIMIT ?)";
const OLDEST: &str = "SELECT rowid, id, created_at FROM messages WHERE rowid > ? ORDER BY rowid LIMIT ?";
const DELETE_ATTEMPTS: &str = "DELETE FROM attempts WHERE msg_id = ?";
const DELETE_DELIVERIES: &str = "DELETE FROM deliveries WHERE msg_id = ?";
const DELETE_MESSAGE: &str = "DELETE FROM messages WHERE rowid = ?";

fn settled() -> String {
    format!("SELECT {} FROM messages m WHERE m.rowid = ?", listing::message_settled())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_searches_indexes_only() {
        let mut c = rusqlite::Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut c).unwrap();
        for sql in [ERASE_PAYLOADS, ERASE_BODIES, OLDEST, DELETE_ATTEMPTS, DELETE_DELIVERIES, DELETE_MESSAGE]
            .map(str::to_owned)
            .into_iter()
            .chain([settled()])
        {
            let explain = format!("EXPLAIN QUERY PLAN {}", sql.replace('?', "1"));
            let mut stmt = c.prepare(&explain).unwrap();
            let plan: Vec<String> =
                stmt.query_map([], |r| r.get::<_, String>(3)).unwrap().map(Result::unwrap).collect();
            assert!(!plan.is_empty(), "{sql}");
            assert!(plan.iter().all(|step| !step.starts_with("SCAN")), "{sql}: {plan:?}");
        }
    }
}
