//! Secrets at rest: endpoint signing secrets, rotated-out secrets and the
//! values of credential headers ([`is_sensitive_header`]) are sealed with
//! XChaCha20-Poly1305 when a main key is configured (`--main-key`), in the
//! row mapping of both stores, so nothing above the store ever sees a
//! sealed value and nothing below it a plain one.
//!
//! A sealed value is `$hl1$<key id>$<base64 of nonce ‖ ciphertext>`: the
//! key id (8 hex digits of the key's SHA-256) says which key sealed it, so
//! old keys can stay configured for reading (`--old-main-keys`) while the
//! current one seals every write. The associated data binds each value to
//! its endpoint and field, so a sealed value copied to another row or
//! column does not open. Values without the prefix are plaintext rows from
//! before a key was configured: they are read as they are and sealed on
//! the next write (`hookline rekey` rewrites every endpoint at once).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

use super::{StoreError, StoreResult};
use crate::domain::model::{Endpoint, is_sensitive_header};

const PREFIX: &str = "$hl1$";

struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl Key {
    fn parse(text: &str) -> Result<Key, String> {
        let bytes = STANDARD.decode(text.trim()).map_err(|_| {
            "a main key is the base64 of 32 random bytes (`openssl rand -base64 32`)".to_owned()
        })?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| {
            "a main key is the base64 of exactly 32 bytes (`openssl rand -base64 32`)".to_owned()
        })?;
        let digest = Sha256::digest([b"hookline main key\n".as_slice(), &key].concat());
        let id = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
        Ok(Key { id, cipher: XChaCha20Poly1305::new(&key.into()) })
    }
}

/// The main keys: the one that seals (if any) and older ones that still
/// open what they sealed.
#[derive(Default)]
pub struct Keyring {
    current: Option<Key>,
    old: Vec<Key>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.current.iter().chain(&self.old).map(|k| k.id.as_str()).collect();
        write!(f, "Keyring({ids:?})")
    }
}

impl Keyring {
    /// No key: values are stored as they are (and sealed ones cannot be read).
    pub fn none() -> Keyring {
        Keyring::default()
    }

    /// `current` seals; `old` keys only open.
    pub fn new(current: &str, old: &[String]) -> Result<Keyring, String> {
        Ok(Keyring {
            current: Some(Key::parse(current)?),
            old: old.iter().map(|k| Key::parse(k)).collect::<Result<_, _>>()?,
        })
    }

    /// The id of the key that seals, for the operator's log.
    pub fn current_id(&self) -> Option<&str> {
        self.current.as_ref().map(|k| k.id.as_str())
    }

    fn seal(&self, aad: &str, plain: &str) -> String {
        let Some(key) = &self.current else { return plain.to_owned() };
        let nonce: [u8; 24] = rand::random();
        let sealed = key
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain.as_bytes(), aad: aad.as_bytes() })
            .expect("XChaCha20-Poly1305 seals any length we store");
        format!("{PREFIX}{}${}", key.id, STANDARD.encode([nonce.as_slice(), &sealed].concat()))
    }

    fn open(&self, aad: &str, stored: &str) -> StoreResult<String> {
        let Some(rest) = stored.strip_prefix(PREFIX) else { return Ok(stored.to_owned()) };
        let fail = |why: &str| StoreError::Backend(format!("cannot read a sealed secret ({aad}): {why}"));
        let (id, data) = rest.split_once('$').ok_or_else(|| fail("malformed"))?;
        let key = self.current.iter().chain(&self.old).find(|k| k.id == id).ok_or_else(|| {
            fail(&format!(
                "it was sealed with main key {id}, which is not configured (--main-key / --old-main-keys)"
            ))
        })?;
        let data = STANDARD.decode(data).map_err(|_| fail("malformed"))?;
        if data.len() < 24 {
            return Err(fail("malformed"));
        }
        let (nonce, sealed) = data.split_at(24);
        let plain = key
            .cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad: aad.as_bytes() })
            .map_err(|_| fail("it does not open with its key (altered, or moved from another row)"))?;
        String::from_utf8(plain).map_err(|_| fail("not text"))
    }

    /// The endpoint as stored: secrets and credential header values sealed.
    pub fn seal_endpoint(&self, ep: &Endpoint) -> Endpoint {
        let mut sealed = ep.clone();
        sealed.secret = self.seal(&aad(ep, "secret"), &ep.secret);
        for old in &mut sealed.old_secrets {
            old.secret = self.seal(&aad(ep, "old-secret"), &old.secret);
        }
        for (name, value) in sealed.headers.iter_mut() {
            if is_sensitive_header(name) {
                *value = self.seal(&aad(ep, &header_field(name)), value);
            }
        }
        sealed
    }

    /// The endpoint as read: sealed values opened, plaintext ones (rows
    /// from before a key was set) as they are.
    pub fn open_endpoint(&self, mut ep: Endpoint) -> StoreResult<Endpoint> {
        ep.secret = self.open(&aad(&ep, "secret"), &ep.secret)?;
        let old_aad = aad(&ep, "old-secret");
        for old in &mut ep.old_secrets {
            old.secret = self.open(&old_aad, &old.secret)?;
        }
        let fields: Vec<(String, String)> =
            ep.headers.keys().map(|name| (name.clone(), aad(&ep, &header_field(name)))).collect();
        for (name, field) in fields {
            if let Some(value) = ep.headers.get_mut(&name) {
                *value = self.open(&field, value)?;
            }
        }
        Ok(ep)
    }
}

/// What a listing shows of an endpoint: everything but its secrets and the
/// values of its credential headers (no key needed to read it).
pub fn redacted(mut ep: Endpoint) -> Endpoint {
    ep.secret = String::new();
    ep.old_secrets.clear();
    ep.headers.retain(|name, _| !is_sensitive_header(name));
    ep
}

fn aad(ep: &Endpoint, field: &str) -> String {
    format!("{}/{field}", ep.id)
}

fn header_field(name: &str) -> String {
    format!("header/{}", name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures;
    use crate::domain::model::OldSecret;
    use crate::domain::time::Timestamp;

    const K1: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "HxoZGBcWFRQTEhEQDw4NDAsKCQgHBgUEAwIBAB8eHRw=";

    fn endpoint() -> Endpoint {
        let mut ep = fixtures::endpoint("ep_1");
        ep.secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into();
        ep.old_secrets =
            vec![OldSecret { secret: "whsec_old".into(), expires_at: Timestamp::from_millis(1) }];
        ep.headers.insert("Authorization".into(), "Bearer s3cr3t".into());
        ep.headers.insert("X-Tenant".into(), "42".into());
        ep
    }

    #[test]
    fn sealed_values_open_and_say_nothing() {
        let keys = Keyring::new(K1, &[]).unwrap();
        let ep = endpoint();
        let sealed = keys.seal_endpoint(&ep);
        let stored = format!("{sealed:?}");
        assert!(!stored.contains("MfKQ9r8") && !stored.contains("s3cr3t") && !stored.contains("whsec_old"));
        assert!(sealed.secret.starts_with("$hl1$"), "{}", sealed.secret);
        assert_eq!(sealed.headers["X-Tenant"], "42", "ordinary headers stay readable");
        assert_eq!(keys.open_endpoint(sealed).unwrap(), ep);
    }

    #[test]
    fn plaintext_rows_are_read_as_they_are() {
        let keys = Keyring::new(K1, &[]).unwrap();
        assert_eq!(keys.open_endpoint(endpoint()).unwrap(), endpoint());
        assert_eq!(Keyring::none().seal_endpoint(&endpoint()), endpoint());
    }

    #[test]
    fn rotation_old_keys_open_new_key_seals() {
        let before = Keyring::new(K1, &[]).unwrap();
        let sealed = before.seal_endpoint(&endpoint());
        let after = Keyring::new(K2, &[K1.to_owned()]).unwrap();
        let opened = after.open_endpoint(sealed.clone()).unwrap();
        assert_eq!(opened, endpoint());
        let resealed = after.seal_endpoint(&opened);
        assert!(resealed.secret.contains(after.current_id().unwrap()));
        let only_new = Keyring::new(K2, &[]).unwrap();
        let err = only_new.open_endpoint(sealed).unwrap_err().to_string();
        assert!(err.contains(before.current_id().unwrap()), "{err}");
        assert!(Keyring::none().open_endpoint(resealed).is_err());
    }

    #[test]
    fn a_sealed_value_moved_to_another_endpoint_does_not_open() {
        let keys = Keyring::new(K1, &[]).unwrap();
        let mut moved = keys.seal_endpoint(&endpoint());
        moved.id = "ep_2".into();
        assert!(keys.open_endpoint(moved).is_err());
    }

    #[test]
    fn bad_keys_are_refused_with_a_hint() {
        for bad in ["", "not base64!", "AAEC"] {
            assert!(Keyring::new(bad, &[]).unwrap_err().contains("32"), "{bad}");
        }
    }

    #[test]
    fn redaction_keeps_only_what_listings_show() {
        let r = redacted(endpoint());
        assert!(r.secret.is_empty() && r.old_secrets.is_empty());
        assert_eq!(r.headers.keys().collect::<Vec<_>>(), ["X-Tenant"]);
    }
}
