//! Secrets at rest, on both backends: with a main key, endpoint secrets,
//! rotated-out secrets and credential header values are stored sealed
//! (never as plaintext in the database), read back opened by any store
//! holding the key, and moved to a new key on the next write; rows written
//! before a key was set are still read, and sealed when written again.
//!
//! These checks reopen one database with different keys, so they have
//! their own harness: a backend here is a way to open the same database
//! again and to read its endpoint columns raw.

use std::sync::Arc;

use hookline::domain::model::{EndpointPatch, OldSecret};
use hookline::store::sealing::Keyring;

use super::*;

const K1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const K2: &str = "HxoZGBcWFRQTEhEQDw4NDAsKCQgHBgUEAwIBAB8eHRw=";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OLD: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const CREDENTIAL: &str = "Bearer s3cr3t-t0ken";

#[async_trait::async_trait(?Send)]
pub trait Reopen {
    async fn open(&self, keys: Keyring) -> SharedStore;
    /// The `secret`, `old_secrets` and `headers` columns as stored.
    async fn raw(&self) -> Vec<String>;
}

fn secret_endpoint(app_id: &str) -> Endpoint {
    let mut ep = endpoint(app_id);
    ep.secret = SECRET.into();
    ep.old_secrets = vec![OldSecret { secret: OLD.into(), expires_at: at(86_400) }];
    ep.headers.insert("Authorization".into(), CREDENTIAL.into());
    ep
}

fn keys(current: &str, old: &[&str]) -> Keyring {
    Keyring::new(current, &old.iter().map(|k| k.to_string()).collect::<Vec<_>>()).unwrap()
}

pub async fn secrets_are_sealed_at_rest(db: impl Reopen) {
    let store = db.open(keys(K1, &[])).await;
    let a = app(None);
    store.insert_app(&a).await.unwrap();
    let ep = secret_endpoint(&a.id);
    store.insert_endpoint(&ep).await.unwrap();
    assert_eq!(store.get_endpoint(&a.id, &ep.id).await.unwrap().unwrap(), ep);
    let listed = store.list_endpoints(&a.id, &PageRequest::first(10, Order::Ascending)).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0], ep);
    drop(store);
    let raw = db.raw().await.join(" ");
    for plain in [SECRET, OLD, CREDENTIAL] {
        assert!(!raw.contains(plain), "{plain} stored in the clear: {raw}");
    }
    assert!(raw.contains("X-A"), "ordinary headers stay plain: {raw}");

    // Without the key nothing sealed can be read.
    let keyless = db.open(Keyring::none()).await;
    let err = keyless.get_endpoint(&a.id, &ep.id).await.unwrap_err().to_string();
    assert!(err.contains("main key"), "{err}");
    drop(keyless);

    // Rotation: the new key reads with the old one configured, and seals
    // what it writes; then the old key is no longer needed.
    let rotated = db.open(keys(K2, &[K1])).await;
    assert_eq!(rotated.get_endpoint(&a.id, &ep.id).await.unwrap().unwrap(), ep);
    rotated.update_endpoint(&a.id, &ep.id, EndpointPatch::default(), T0).await.unwrap();
    drop(rotated);
    let only_new = db.open(keys(K2, &[])).await;
    let read = only_new.get_endpoint(&a.id, &ep.id).await.unwrap().unwrap();
    assert_eq!((read.secret.as_str(), read.headers["Authorization"].as_str()), (SECRET, CREDENTIAL));
    drop(only_new);
    let only_old = db.open(keys(K1, &[])).await;
    assert!(only_old.get_endpoint(&a.id, &ep.id).await.is_err(), "resealed with K2");
}

pub async fn plaintext_rows_are_read_and_sealed_on_write(db: impl Reopen) {
    let before = db.open(Keyring::none()).await;
    let a = app(None);
    before.insert_app(&a).await.unwrap();
    let ep = secret_endpoint(&a.id);
    before.insert_endpoint(&ep).await.unwrap();
    drop(before);
    assert!(db.raw().await.join(" ").contains(SECRET), "no key: stored as given");

    let keyed = db.open(keys(K1, &[])).await;
    assert_eq!(keyed.get_endpoint(&a.id, &ep.id).await.unwrap().unwrap(), ep);
    let patch = EndpointPatch { description: Some("sealed now".into()), ..Default::default() };
    keyed.update_endpoint(&a.id, &ep.id, patch, T0).await.unwrap();
    drop(keyed);
    let raw = db.raw().await.join(" ");
    assert!(!raw.contains(SECRET) && !raw.contains(CREDENTIAL), "{raw}");
}

struct SqliteDb(tempfile::TempDir);

#[async_trait::async_trait(?Send)]
impl Reopen for SqliteDb {
    async fn open(&self, keys: Keyring) -> SharedStore {
        Arc::new(SqliteStore::open_with_keys(self.0.path(), Arc::new(keys)).unwrap())
    }

    async fn raw(&self) -> Vec<String> {
        let conn = rusqlite::Connection::open(self.0.path().join("hookline.db")).unwrap();
        let mut stmt = conn.prepare("SELECT secret, old_secrets, headers FROM endpoints").unwrap();
        let rows = stmt
            .query_map([], |r| {
                Ok(format!(
                    "{} {} {}",
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?
                ))
            })
            .unwrap();
        rows.map(Result::unwrap).collect()
    }
}

struct PgDb(String);

#[async_trait::async_trait(?Send)]
impl Reopen for PgDb {
    async fn open(&self, keys: Keyring) -> SharedStore {
        Arc::new(PgStore::connect(&self.0).await.unwrap().with_keys(Arc::new(keys)))
    }

    async fn raw(&self) -> Vec<String> {
        use sqlx::{Connection, Row};
        let mut conn = sqlx::PgConnection::connect(&self.0).await.unwrap();
        let rows = sqlx::query("SELECT secret, old_secrets, headers FROM endpoints")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        rows.iter()
            .map(|r| format!("{} {} {}", r.get::<String, _>(0), r.get::<String, _>(1), r.get::<String, _>(2)))
            .collect()
    }
}

macro_rules! sealing {
    ($backend:ident, $db:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn secrets_are_sealed_at_rest() {
                super::secrets_are_sealed_at_rest($db).await;
            }

            #[tokio::test]
            async fn plaintext_rows_are_read_and_sealed_on_write() {
                super::plaintext_rows_are_read_and_sealed_on_write($db).await;
            }
        }
    };
}

sealing!(sqlite, SqliteDb(tempfile::tempdir().unwrap()));
sealing!(postgres, PgDb(crate::pg::fresh_database().await));

/// The data directory and the database files are the owner's alone.
#[cfg(unix)]
#[test]
fn the_data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    // Open while checking: the WAL and shared-memory files exist then.
    let _store = SqliteStore::open(&dir).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}
