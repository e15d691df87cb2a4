//! Input rules shared by the API and the dashboard. Each check returns a
//! human-readable reason; the API turns it into a 422 with the field's path.

use url::Url;

use super::model::{Headers, NameSet};

/// `uid`s, event type names, channels, event ids: `^[a-zA-Z0-9\-_.]+$`.
pub fn name(value: &str, max_len: usize) -> Result<(), String> {
    if value.is_empty() || value.len() > max_len {
        return Err(format!("must be between 1 and {max_len} characters"));
    }
    if !value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        return Err("may only contain letters, digits, '-', '_' and '.'".into());
    }
    Ok(())
}

pub const UID_MAX: usize = 256;
pub const EVENT_TYPE_MAX: usize = 256;
pub const CHANNEL_MAX: usize = 128;

pub fn name_set(set: &NameSet, max_len: usize, max_items: usize) -> Result<(), String> {
    if set.is_empty() {
        return Err("must not be empty; omit it or use null for none".into());
    }
    if set.len() > max_items {
        return Err(format!("may have at most {max_items} items"));
    }
    for item in set {
        name(item, max_len).map_err(|e| format!("'{item}' {e}"))?;
    }
    Ok(())
}

/// An endpoint URL: absolute `http` or `https` with a host.
pub fn endpoint_url(value: &str) -> Result<(), String> {
    if value.len() > 65_536 {
        return Err("URL is too long".into());
    }
    let url = Url::parse(value).map_err(|e| format!("invalid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("URL scheme must be http or https".into());
    }
    if url.host().is_none() {
        return Err("URL must have a host".into());
    }
    Ok(())
}

/// Headers Hookline sets itself and an endpoint may not override.
pub const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "svix-id",
    "svix-timestamp",
    "svix-signature",
];

/// Custom headers go out with every delivery: at most this many per endpoint…
pub const MAX_HEADERS: usize = 50;
/// …and this many bytes of names and values together.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

pub fn custom_headers(headers: &Headers) -> Result<(), String> {
    if headers.len() > MAX_HEADERS {
        return Err(format!("at most {MAX_HEADERS} custom headers per endpoint ({} given)", headers.len()));
    }
    let bytes: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_HEADER_BYTES {
        return Err(format!(
            "custom headers may total at most {} KiB of names and values ({bytes} bytes given)",
            MAX_HEADER_BYTES / 1024
        ));
    }
    for (k, v) in headers {
        if http_header_name(k).is_err() {
            return Err(format!("'{k}' is not a valid header name"));
        }
        if RESERVED_HEADERS.contains(&k.to_ascii_lowercase().as_str()) {
            return Err(format!("'{k}' is set by Hookline and cannot be overridden"));
        }
        if v.bytes().any(|b| (b.is_ascii_control() && b != b'\t') || b == 0x7f) {
            return Err(format!("the value of '{k}' contains a control character"));
        }
    }
    Ok(())
}

fn http_header_name(k: &str) -> Result<(), ()> {
    // RFC 9110 token characters.
    let ok = !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok { Ok(()) } else { Err(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(name("invoice.paid", 256).is_ok());
        assert!(name("a-b_c.d9", 256).is_ok());
        assert!(name("", 256).is_err());
        assert!(name("has space", 256).is_err());
        assert!(name("ünicode", 256).is_err());
        assert!(name(&"a".repeat(257), 256).is_err());
    }

    #[test]
    fn urls() {
        assert!(endpoint_url("https://example.com/hook").is_ok());
        assert!(endpoint_url("http://127.0.0.1:9000/").is_ok());
        assert!(endpoint_url("ftp://example.com/").is_err());
        assert!(endpoint_url("not a url").is_err());
        assert!(endpoint_url("/relative").is_err());
    }

    #[test]
    fn headers() {
        let mut h = Headers::new();
        h.insert("X-Tenant".into(), "42".into());
        assert!(custom_headers(&h).is_ok());
        h.insert("Webhook-Signature".into(), "forged".into());
        assert!(custom_headers(&h).is_err());
        let mut bad = Headers::new();
        bad.insert("X-Evil".into(), "a\r\nb".into());
        assert!(custom_headers(&bad).is_err());
        let mut bad_name = Headers::new();
        bad_name.insert("bad name".into(), "v".into());
        assert!(custom_headers(&bad_name).is_err());
    }

    #[test]
    fn header_limits() {
        let many: Headers = (0..=MAX_HEADERS).map(|i| (format!("X-H{i}"), "v".into())).collect();
        let err = custom_headers(&many).unwrap_err();
        assert!(err.contains("at most 50"), "{err}");
        let fifty: Headers = many.into_iter().take(MAX_HEADERS).collect();
        assert!(custom_headers(&fifty).is_ok());
        let mut big = Headers::new();
        big.insert("X-Big".into(), "a".repeat(MAX_HEADER_BYTES));
        let err = custom_headers(&big).unwrap_err();
        assert!(err.contains("16 KiB"), "{err}");
        big.insert("X-Big".into(), "a".repeat(MAX_HEADER_BYTES - "X-Big".len()));
        assert!(custom_headers(&big).is_ok());
    }

    #[test]
    fn name_sets() {
        let s: NameSet = ["a".to_string()].into();
        assert!(name_set(&s, 10, 5).is_ok());
        assert!(name_set(&NameSet::new(), 10, 5).is_err());
        let many: NameSet = (0..6).map(|i| i.to_string()).collect();
        assert!(name_set(&many, 10, 5).is_err());
    }
}
