//! Webhook signatures (Standard Webhooks, which Svix uses).
//!
//! The signed content is `"{msg_id}.{timestamp}.{body}"`. Two kinds of keys:
//! - `whsec_<base64 key>`: HMAC-SHA256, header entry `v1,<base64 mac>`;
//! - `whsk_<base64 ed25519 key>`: asymmetric, header entry `v1a,<base64
//!   signature>`; receivers verify with the public key `whpk_<base64>`.
//!
//! During a secret rotation the previous key still signs, so the header is a
//! space-separated list: `v1,<new> v1,<old>`. Receivers accept the request
//! if any entry verifies with the key they hold.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer as _, Verifier as _};
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const HMAC_PREFIX: &str = "whsec_";
pub const ED25519_SECRET_PREFIX: &str = "whsk_";
pub const ED25519_PUBLIC_PREFIX: &str = "whpk_";
/// Svix's default HMAC key size.
const HMAC_KEY_BYTES: usize = 24;

#[derive(Copy, Clone, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretKind {
    #[default]
    Hmac,
    Ed25519,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "secret must be `whsec_` + base64 of 24 to 64 bytes (or that base64 alone), \
     or `whsk_` + base64 of a 32- or 64-byte ed25519 key"
)]
pub struct InvalidSecret;

/// A parsed signing key.
enum Key {
    Hmac(Vec<u8>),
    Ed25519(Box<ed25519_dalek::SigningKey>),
}

fn parse(secret: &str) -> Result<Key, InvalidSecret> {
    if let Some(b64) = secret.strip_prefix(ED25519_SECRET_PREFIX) {
        let bytes = STANDARD.decode(b64).map_err(|_| InvalidSecret)?;
        // A 64-byte key is seed || public key (libsodium / tweetnacl layout).
        let seed: [u8; 32] = match bytes.len() {
            32 | 64 => bytes[..32].try_into().expect("length checked"),
            _ => return Err(InvalidSecret),
        };
        return Ok(Key::Ed25519(Box::new(ed25519_dalek::SigningKey::from_bytes(&seed))));
    }
    let b64 = secret.strip_prefix(HMAC_PREFIX).unwrap_or(secret);
    let key = STANDARD.decode(b64).map_err(|_| InvalidSecret)?;
    if !(HMAC_KEY_BYTES..=64).contains(&key.len()) {
        return Err(InvalidSecret);
    }
    Ok(Key::Hmac(key))
}

/// A fresh random secret of the given kind.
pub fn generate_secret(kind: SecretKind) -> String {
    match kind {
        SecretKind::Hmac => {
            let key: [u8; HMAC_KEY_BYTES] = rand::random();
            format!("{HMAC_PREFIX}{}", STANDARD.encode(key))
        }
        SecretKind::Ed25519 => {
            let seed: [u8; 32] = rand::random();
            let key = ed25519_dalek::SigningKey::from_bytes(&seed);
            format!("{ED25519_SECRET_PREFIX}{}", STANDARD.encode(key.to_keypair_bytes()))
        }
    }
}

/// Validate a user-supplied secret and return its canonical form.
pub fn normalize_secret(s: &str) -> Result<String, InvalidSecret> {
    Ok(match parse(s)? {
        Key::Hmac(key) => format!("{HMAC_PREFIX}{}", STANDARD.encode(key)),
        Key::Ed25519(key) => format!("{ED25519_SECRET_PREFIX}{}", STANDARD.encode(key.to_keypair_bytes())),
    })
}

pub fn kind_of(secret: &str) -> SecretKind {
    if secret.starts_with(ED25519_SECRET_PREFIX) { SecretKind::Ed25519 } else { SecretKind::Hmac }
}

/// What a receiver needs to verify: the secret itself for HMAC, the
/// `whpk_` public key for ed25519.
pub fn verification_key(secret: &str) -> Result<String, InvalidSecret> {
    Ok(match parse(secret)? {
        Key::Hmac(_) => normalize_secret(secret)?,
        Key::Ed25519(key) => {
            format!("{ED25519_PUBLIC_PREFIX}{}", STANDARD.encode(key.verifying_key().to_bytes()))
        }
    })
}

fn signed_content(msg_id: &str, timestamp_secs: i64, body: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(msg_id.len() + body.len() + 24);
    content.extend_from_slice(msg_id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp_secs.to_string().as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    content
}

fn hmac(key: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length")
}

/// One header entry (`v1,…` or `v1a,…`) for one secret.
pub fn sign(secret: &str, msg_id: &str, timestamp_secs: i64, body: &[u8]) -> Result<String, InvalidSecret> {
    let content = signed_content(msg_id, timestamp_secs, body);
    Ok(match parse(secret)? {
        Key::Hmac(key) => {
            let mut mac = hmac(&key);
            mac.update(&content);
            format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
        }
        Key::Ed25519(key) => format!("v1a,{}", STANDARD.encode(key.sign(&content).to_bytes())),
    })
}

/// The full `webhook-signature` value: one entry per secret, space-separated.
pub fn signature_header<'a>(
    secrets: impl IntoIterator<Item = &'a str>,
    msg_id: &str,
    timestamp_secs: i64,
    body: &[u8],
) -> Result<String, InvalidSecret> {
    let entries: Result<Vec<String>, _> =
        secrets.into_iter().map(|s| sign(s, msg_id, timestamp_secs, body)).collect();
    Ok(entries?.join(" "))
}

/// Does any entry of `header` verify with `key` (a `whsec_` secret or a
/// `whpk_` public key)? Timestamps are the caller's business.
pub fn verify(key: &str, msg_id: &str, timestamp_secs: i64, body: &[u8], header: &str) -> bool {
    let content = signed_content(msg_id, timestamp_secs, body);
    let decode = |sig: &str| STANDARD.decode(sig).ok();
    if let Some(b64) = key.strip_prefix(ED25519_PUBLIC_PREFIX) {
        let Some(Ok(public)) = decode(b64).map(|b| <[u8; 32]>::try_from(b.as_slice())) else {
            return false;
        };
        let Ok(public) = ed25519_dalek::VerifyingKey::from_bytes(&public) else {
            return false;
        };
        return header.split_whitespace().filter_map(|e| e.strip_prefix("v1a,")).filter_map(decode).any(
            |sig| {
                <[u8; 64]>::try_from(sig.as_slice())
                    .map(|s| public.verify(&content, &ed25519_dalek::Signature::from_bytes(&s)).is_ok())
                    .unwrap_or(false)
            },
        );
    }
    let Ok(Key::Hmac(secret)) = parse(key) else {
        return false;
    };
    header.split_whitespace().filter_map(|e| e.strip_prefix("v1,")).filter_map(decode).any(|sig| {
        let mut mac = hmac(&secret);
        mac.update(&content);
        mac.verify_slice(&sig).is_ok()
    })
}

/// What a receiver concludes about one request.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Verified,
    /// `webhook-id`, `webhook-timestamp` or `webhook-signature` is missing
    /// or malformed.
    MissingHeaders,
    /// Signed correctly, but too old or too far in the future (replay?).
    StaleTimestamp,
    BadSignature,
}

/// Check a received request the way Standard Webhooks receivers do: the
/// signature, and a timestamp within `tolerance_secs` of `now_secs`.
pub fn check_request(
    key: &str,
    id: Option<&str>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_secs: i64,
    tolerance_secs: i64,
) -> Verdict {
    let (Some(id), Some(ts), Some(sig)) = (id, timestamp.and_then(|t| t.parse::<i64>().ok()), signature)
    else {
        return Verdict::MissingHeaders;
    };
    if !verify(key, id, ts, body, sig) {
        Verdict::BadSignature
    } else if (now_secs - ts).abs() > tolerance_secs {
        Verdict::StaleTimestamp
    } else {
        Verdict::Verified
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        assert_eq!(sign(SECRET, ID, TS, BODY).unwrap(), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(verify(SECRET, ID, TS, BODY, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="));
        assert!(!verify(SECRET, ID, TS + 1, BODY, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="));
    }

    #[test]
    fn generated_secrets_are_valid_and_distinct() {
        let a = generate_secret(SecretKind::Hmac);
        assert_ne!(a, generate_secret(SecretKind::Hmac));
        assert!(a.starts_with("whsec_"));
        assert_eq!(normalize_secret(&a).unwrap(), a);
        let e = generate_secret(SecretKind::Ed25519);
        assert!(e.starts_with("whsk_"));
        assert_eq!(normalize_secret(&e).unwrap(), e);
        assert_eq!(kind_of(&e), SecretKind::Ed25519);
        assert!(verification_key(&e).unwrap().starts_with("whpk_"));
        assert_eq!(verification_key(&a).unwrap(), a);
    }

    #[test]
    fn normalize_accepts_unprefixed_and_rejects_garbage() {
        let raw = STANDARD.encode([7u8; 32]);
        assert_eq!(normalize_secret(&raw).unwrap(), format!("whsec_{raw}"));
        assert_eq!(normalize_secret("whsec_not base64!"), Err(InvalidSecret));
        assert_eq!(normalize_secret(&STANDARD.encode([1u8; 8])), Err(InvalidSecret));
        assert_eq!(normalize_secret(&format!("whsk_{}", STANDARD.encode([1u8; 31]))), Err(InvalidSecret));
        // A bare 32-byte ed25519 seed is accepted and stored as a keypair.
        let seed = format!("whsk_{}", STANDARD.encode([9u8; 32]));
        assert_eq!(STANDARD.decode(&normalize_secret(&seed).unwrap()[5..]).unwrap().len(), 64);
    }

    #[test]
    fn ed25519_signatures_verify_with_the_public_key_only() {
        let secret = generate_secret(SecretKind::Ed25519);
        let header = sign(&secret, ID, TS, BODY).unwrap();
        assert!(header.starts_with("v1a,"));
        let public = verification_key(&secret).unwrap();
        assert!(verify(&public, ID, TS, BODY, &header));
        assert!(!verify(&public, ID, TS, b"{}", &header));
        let other = verification_key(&generate_secret(SecretKind::Ed25519)).unwrap();
        assert!(!verify(&other, ID, TS, BODY, &header));
    }

    #[test]
    fn request_checks() {
        let sig = sign(SECRET, ID, TS, BODY).unwrap();
        let check =
            |now, sig: Option<&str>| check_request(SECRET, Some(ID), Some("1614265330"), sig, BODY, now, 300);
        assert_eq!(check(TS + 10, Some(&sig)), Verdict::Verified);
        assert_eq!(check(TS + 301, Some(&sig)), Verdict::StaleTimestamp);
        assert_eq!(check(TS, Some("v1,AAAA")), Verdict::BadSignature);
        assert_eq!(check(TS, None), Verdict::MissingHeaders);
    }

    #[test]
    fn rotation_header_lists_every_key_and_either_verifies() {
        let new = generate_secret(SecretKind::Hmac);
        let header = signature_header([new.as_str(), SECRET], ID, TS, BODY).unwrap();
        assert_eq!(header.split(' ').count(), 2);
        assert!(verify(&new, ID, TS, BODY, &header));
        assert!(verify(SECRET, ID, TS, BODY, &header));
        assert!(!verify(&generate_secret(SecretKind::Hmac), ID, TS, BODY, &header));
    }
}
