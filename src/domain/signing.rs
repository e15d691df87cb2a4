//! Webhook signatures (Standard Webhooks / Svix `v1`).
//!
//! `webhook-signature: v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))>`
//! where `key` is the base64-decoded part of the endpoint's `whsec_` secret.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const SECRET_PREFIX: &str = "whsec_";
/// Svix's default key size.
const KEY_BYTES: usize = 24;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("secret must be base64 of 24 to 64 bytes, optionally prefixed with `whsec_`")]
pub struct InvalidSecret;

/// A fresh random `whsec_` secret.
pub fn generate_secret() -> String {
    let key: [u8; KEY_BYTES] = rand::random();
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// Validate a user-supplied secret and return it in canonical `whsec_` form.
pub fn normalize_secret(s: &str) -> Result<String, InvalidSecret> {
    let key = decode_key(s)?;
    if !(KEY_BYTES..=64).contains(&key.len()) {
        return Err(InvalidSecret);
    }
    Ok(format!("{SECRET_PREFIX}{}", STANDARD.encode(key)))
}

/// The HMAC key bytes of a `whsec_` secret.
pub fn decode_key(secret: &str) -> Result<Vec<u8>, InvalidSecret> {
    let b64 = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    STANDARD.decode(b64).map_err(|_| InvalidSecret)
}

/// The `v1,…` signature of one request.
pub fn sign(key: &[u8], msg_id: &str, timestamp_secs: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // From the Standard Webhooks specification's test vectors.
        let key = decode_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn generated_secrets_are_valid_and_distinct() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a, b);
        assert!(a.starts_with("whsec_"));
        assert_eq!(decode_key(&a).unwrap().len(), 24);
        assert_eq!(normalize_secret(&a).unwrap(), a);
    }

    #[test]
    fn normalize_accepts_unprefixed_and_rejects_garbage() {
        let raw = STANDARD.encode([7u8; 32]);
        assert_eq!(normalize_secret(&raw).unwrap(), format!("whsec_{raw}"));
        assert_eq!(normalize_secret("whsec_not base64!"), Err(InvalidSecret));
        assert_eq!(normalize_secret(&STANDARD.encode([1u8; 8])), Err(InvalidSecret));
    }
}
