//! `idempotency-key` on POST requests: a repeat of a request that succeeded
//! within 24 hours gets the first response again, byte for byte, and does
//! nothing else. The Svix SDKs send a key with every POST and retry on
//! network errors, so this is what keeps a retried send from becoming two
//! messages.
//!
//! Keys are scoped to the caller's credentials and the path. Only 2xx
//! responses are kept: a rejected request (4xx) can be corrected and
//! retried under the same key. While a request runs, a repeat gets 409.
//!
//! Message creation does not go through this layer: the key is stored with
//! the message (see `Store::create_message`), and a repeat returns the
//! message created first.

use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::{ApiError, ApiState};
use crate::store::{IdempotencyBegin, StoredResponse};

const HEADER: &str = "idempotency-key";
/// Set (to `true`) on a response that repeats an earlier one.
pub const REPLAYED: &str = "idempotent-replayed";
const MAX_KEY_LEN: usize = 256;
const KEEP_FOR: Duration = Duration::from_secs(24 * 3600);
/// A request that crashed mid-way frees its key after this long.
const LOCK_FOR: Duration = Duration::from_secs(60);
/// Responses larger than this are not kept (ours are all far smaller).
const MAX_KEPT_BODY: usize = 4 * 1024 * 1024;

/// The request's idempotency key, if it has a usable one.
pub fn key_of(headers: &HeaderMap) -> Option<String> {
    let key = headers.get(HEADER)?.to_str().ok()?.trim();
    (!key.is_empty() && key.len() <= MAX_KEY_LEN).then(|| key.to_owned())
}

fn scoped_key(headers: &HeaderMap, path: &str, key: &str) -> String {
    let mut h = Sha256::new();
    h.update(headers.get(AUTHORIZATION).map(HeaderValue::as_bytes).unwrap_or_default());
    h.update(b"\n");
    h.update(path.as_bytes());
    h.update(b"\n");
    h.update(key.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

pub async fn layer(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(key) = key_of(req.headers()) else {
        return next.run(req).await;
    };
    let scoped = scoped_key(req.headers(), req.uri().path(), &key);
    let service = &s.service;
    let now = service.now();
    match service.idempotency_begin(&scoped, now, now.plus(LOCK_FOR)).await {
        Err(e) => ApiError::from(e).into_response(),
        Ok(IdempotencyBegin::InProgress) => {
            ApiError::conflict("a request with this idempotency-key is still in progress").into_response()
        }
        Ok(IdempotencyBegin::Done(stored)) => replay(stored),
        Ok(IdempotencyBegin::Started) => {
            let response = next.run(req).await;
            let (parts, body) = response.into_parts();
            let bytes = match to_bytes(body, MAX_KEPT_BODY).await {
                Ok(b) => b,
                Err(_) => {
                    let _ = service.idempotency_abort(&scoped).await;
                    return ApiError::internal().into_response();
                }
            };
            let kept = if parts.status.is_success() {
                let stored = StoredResponse {
                    status: parts.status.as_u16(),
                    content_type: parts
                        .headers
                        .get(CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned),
                    body: bytes.to_vec(),
                };
                service.idempotency_finish(&scoped, &stored, now.plus(KEEP_FOR)).await
            } else {
                service.idempotency_abort(&scoped).await
            };
            if let Err(e) = kept {
                tracing::warn!(error = %e, "could not record an idempotency key");
            }
            Response::from_parts(parts, Body::from(bytes))
        }
    }
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = (status, stored.body).into_response();
    let headers = response.headers_mut();
    if let Some(ct) = stored.content_type.and_then(|ct| HeaderValue::from_str(&ct).ok()) {
        headers.insert(CONTENT_TYPE, ct);
    }
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    response
}
