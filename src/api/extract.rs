//! Request extractors that fail in Svix's error shapes: JSON bodies
//! (413, 422 with the failing field's path), query strings, and the bearer
//! token.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::ApiState;
use super::error::{ApiError, ApiResult, ValidationItem};
use crate::domain::model::{DeliveryStatus, Scope};
use crate::domain::time::Timestamp;
use crate::store::{Cursor, Order, PageRequest};

/// Input bodies check their own field rules after parsing.
pub trait Validate {
    fn validate(&self) -> ApiResult<()>;
}

/// A JSON body: parsed (422 naming the field on a type error), validated.
pub struct SvixJson<T>(pub T);

impl<T, S> FromRequest<S> for SvixJson<T>
where
    T: DeserializeOwned + Validate,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> ApiResult<Self> {
        let value = parse_json::<T>(&body_bytes(req, state).await?)?;
        value.validate()?;
        Ok(SvixJson(value))
    }
}

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> ApiResult<Bytes> {
    Bytes::from_request(req, state).await.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large(super::body_limit())
        } else {
            ApiError::bad_request(rej.body_text())
        }
    })
}

/// Like [`SvixJson`], but an empty body is `T::default()`.
pub struct SvixJsonOrDefault<T>(pub T);

impl<T, S> FromRequest<S> for SvixJsonOrDefault<T>
where
    T: DeserializeOwned + Validate + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> ApiResult<Self> {
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(SvixJsonOrDefault(T::default()));
        }
        let value = parse_json::<T>(&bytes)?;
        value.validate()?;
        Ok(SvixJsonOrDefault(value))
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    // Every body is a JSON object; serde would also take a struct written
    // as an array of its fields in order.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|b| *b != b'{') {
        return Err(ApiError::invalid(&["body"], "must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let mut loc = vec!["body".to_owned()];
        if path != "." && path != "?" {
            loc.extend(path.split('.').map(str::to_owned));
        }
        ApiError::Validation(vec![ValidationItem {
            loc,
            msg: e.inner().to_string(),
            ty: "value_error.jsondecode".into(),
        }])
    })?;
    de.end().map_err(|e| ApiError::invalid(&["body"], e.to_string()))?;
    Ok(value)
}

/// Query parameters, parsed by hand: Svix lists arrive both as repeated
/// keys and comma-joined (which is what the SDKs send).
pub struct QueryParams(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> ApiResult<Self> {
        let raw = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(raw)
            .map(QueryParams)
            .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))
    }
}

impl QueryParams {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn string(&self, key: &str) -> Option<String> {
        self.get(key).filter(|v| !v.is_empty()).map(str::to_owned)
    }

    pub fn bool(&self, key: &str, default: bool) -> ApiResult<bool> {
        match self.get(key) {
            None => Ok(default),
            Some("true") | Some("1") => Ok(true),
            Some("false") | Some("0") => Ok(false),
            Some(_) => Err(ApiError::invalid(&["query", key], "must be true or false")),
        }
    }

    pub fn timestamp(&self, key: &str) -> ApiResult<Option<Timestamp>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => Timestamp::parse_rfc3339(v)
                .map(Some)
                .ok_or_else(|| ApiError::invalid(&["query", key], "must be an RFC 3339 date-time")),
        }
    }

    /// Repeated and/or comma-separated values.
    pub fn list(&self, key: &str) -> Option<Vec<String>> {
        let values: Vec<String> = self
            .0
            .iter()
            .filter(|(k, _)| k == key || k.strip_suffix("[]") == Some(key))
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect();
        (!values.is_empty()).then_some(values)
    }

    pub fn status(&self, key: &str) -> ApiResult<Option<DeliveryStatus>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .and_then(DeliveryStatus::from_code)
                .map(Some)
                .ok_or_else(|| ApiError::invalid(&["query", key], "must be 0, 1, 2 or 3")),
        }
    }

    pub fn status_code_class(&self) -> ApiResult<Option<u16>> {
        match self.get("status_code_class") {
            None => Ok(None),
            Some(v) => match v.parse::<u16>() {
                Ok(c @ (0 | 100 | 200 | 300 | 400 | 500)) => Ok(Some(c)),
                _ => Err(ApiError::invalid(
                    &["query", "status_code_class"],
                    "must be 0, 100, 200, 300, 400 or 500",
                )),
            },
        }
    }

    /// `limit` (1..=250, default 50), `iterator` (`-` prefix = backwards)
    /// and `order`.
    pub fn page(&self, default_order: Order) -> ApiResult<PageRequest> {
        let limit = match self.get("limit") {
            None => 50,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=250).contains(&n) => n,
                _ => return Err(ApiError::invalid(&["query", "limit"], "must be an integer from 1 to 250")),
            },
        };
        let order = match self.get("order") {
            None => default_order,
            Some("ascending") => Order::Ascending,
            Some("descending") => Order::Descending,
            Some(_) => return Err(ApiError::invalid(&["query", "order"], "must be ascending or descending")),
        };
        let cursor = self.string("iterator").map(|it| match it.strip_prefix('-') {
            Some(prev) => Cursor::Before(prev.to_owned()),
            None => Cursor::After(it),
        });
        Ok(PageRequest { limit, cursor, order })
    }
}

/// The caller, from `Authorization: Bearer <token>`.
pub struct Principal(pub Scope);

impl FromRequestParts<ApiState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> ApiResult<Self> {
        let header = parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let token = match header.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(ApiError::unauthorized()),
        };
        if token.is_empty() {
            return Err(ApiError::unauthorized());
        }
        match state.service.authenticate(token).await? {
            Some(scope) => Ok(Principal(scope)),
            None => Err(ApiError::unauthorized()),
        }
    }
}

impl Principal {
    pub fn require_admin(&self) -> ApiResult<()> {
        match self.0 {
            Scope::Admin => Ok(()),
            Scope::App(_) => Err(ApiError::forbidden()),
        }
    }
}

/// For PATCH bodies: a missing field is `None`, an explicit `null` is
/// `Some(None)`. Use with `#[serde(default, deserialize_with = ...)]`.
pub fn double_option<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

/// Path parameters; a malformed one (bad percent-encoding, invalid UTF-8)
/// is a Svix-shaped 400 instead of axum's plain-text rejection.
pub struct SvixPath<T>(pub T);

impl<T, S> FromRequestParts<S> for SvixPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| SvixPath(p.0))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}
