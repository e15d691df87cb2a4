//! The PostgreSQL server behind a bench run (`--database-url`): a fresh
//! database for every scenario, so runs never see each other's rows, and
//! the cluster's processes, so the database's CPU per message can be read
//! from `/proc` beside the nodes'.

use sqlx::Connection;

/// A new, empty database on the server `url` names; returns its URL and
/// the server's postmaster process id when the server runs on this
/// machine (its CPU can then be measured).
pub async fn fresh(url: &str) -> anyhow::Result<(String, Option<u32>)> {
    let mut admin = sqlx::PgConnection::connect(url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach PostgreSQL at --database-url: {e}"))?;
    let name = format!("hookline_bench_{:016x}", rand::random::<u64>());
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.map_err(|e| {
        anyhow::anyhow!("cannot create a database for the run (the user needs CREATEDB): {e}")
    })?;
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut admin).await?;
    admin.close().await.ok();
    let mut fresh = url::Url::parse(url)?;
    fresh.set_path(&format!("/{name}"));
    Ok((fresh.into(), postmaster_of(backend as u32)))
}

/// The parent of a local backend process, if `/proc` shows one that is a
/// PostgreSQL process (a remote server's backend id means nothing here).
fn postmaster_of(backend: u32) -> Option<u32> {
    let (comm, ppid) = comm_and_ppid(&std::fs::read_to_string(format!("/proc/{backend}/stat")).ok()?)?;
    (comm == "postgres").then_some(ppid)
}

/// A `stat` line's command name and parent process id (the field after
/// the state, which follows the parenthesised name).
pub(super) fn comm_and_ppid(stat: &str) -> Option<(String, u32)> {
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let ppid = stat.get(close + 1..)?.split_whitespace().nth(1)?.parse().ok()?;
    Some((stat.get(open + 1..close)?.to_owned(), ppid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_command_and_parent() {
        let stat = "4242 (postgres) S 77 4242 4242 0 -1 4194560 10 0 0 0 25 13 0 0 20 0 1 0";
        assert_eq!(comm_and_ppid(stat), Some(("postgres".into(), 77)));
        assert_eq!(comm_and_ppid("1 (a (b)) R 0 1"), Some(("a (b)".into(), 0)));
        assert_eq!(comm_and_ppid("1 (x) R"), None);
    }
}
