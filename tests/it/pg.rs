//! PostgreSQL for tests: a fresh database per test on the server named by
//! `HOOKLINE_TEST_DATABASE_URL` (`scripts/test` starts a throwaway cluster
//! and sets it). Without it the PostgreSQL tests fail rather than skip.

use sqlx::Connection;

pub const ENV: &str = "HOOKLINE_TEST_DATABASE_URL";

pub fn server_url() -> String {
    let url = std::env::var(ENV).unwrap_or_else(|_| {
        panic!(
            "{ENV} is not set. The PostgreSQL tests need a server: run `scripts/test`, which starts \
             a throwaway cluster, or set {ENV}=postgres://user@host:port"
        )
    });
    url.trim_end_matches('/').to_owned()
}

/// A new, empty database; returns its URL. Databases are left behind: they
/// live in a throwaway cluster.
pub async fn fresh_database() -> String {
    let server = server_url();
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {server}: {e}"));
    let name = format!("hookline_test_{}", rand::random::<u64>());
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.unwrap();
    admin.close().await.ok();
    format!("{server}/{name}")
}
