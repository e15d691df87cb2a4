//! Errors in Svix's shapes: `{"code", "detail"}` for most statuses and
//! `{"detail": [{"loc", "msg", "type"}]}` for 422 validation errors.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::service::ServiceError;
use crate::store::StoreError;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ValidationItem {
    pub loc: Vec<String>,
    pub msg: String,
    #[serde(rename = "type")]
    pub ty: String,
}

impl ValidationItem {
    pub fn new(loc: &[&str], msg: impl Into<String>) -> Self {
        ValidationItem {
            loc: loc.iter().map(|s| s.to_string()).collect(),
            msg: msg.into(),
            ty: "value_error".into(),
        }
    }
}

#[derive(Debug)]
pub enum ApiError {
    Http { status: StatusCode, code: &'static str, detail: String },
    Validation(Vec<ValidationItem>),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    fn http(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::Http { status, code, detail: detail.into() }
    }

    pub fn not_found(what: &str) -> Self {
        Self::http(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    /// No route matches the path (as opposed to a missing object).
    pub fn no_route() -> Self {
        Self::http(StatusCode::NOT_FOUND, "not_found", "No route for this path")
    }

    /// A Svix product Hookline does not have (destinations, streams, …).
    pub fn not_offered(product: &str) -> Self {
        Self::http(
            StatusCode::FORBIDDEN,
            "not_offered",
            format!(
                "Hookline does not offer Svix {product}: it is a self-hosted webhook sender, \
                 and this feature belongs to Svix's hosted service"
            ),
        )
    }

    pub fn unauthorized() -> Self {
        Self::http(
            StatusCode::UNAUTHORIZED,
            "authentication_failed",
            "Incorrect authentication credentials: send `Authorization: Bearer <token>`",
        )
    }

    pub fn forbidden() -> Self {
        Self::http(
            StatusCode::FORBIDDEN,
            "insufficient_access",
            "Insufficient access for the given operation",
        )
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::http(StatusCode::CONFLICT, "conflict", detail)
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::http(StatusCode::BAD_REQUEST, "bad_request", detail)
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::http(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::http(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "Method not allowed on this path")
    }

    pub fn internal() -> Self {
        Self::http(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "Internal server error")
    }

    pub fn invalid(loc: &[&str], msg: impl Into<String>) -> Self {
        ApiError::Validation(vec![ValidationItem::new(loc, msg)])
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found("Entity"),
            StoreError::Conflict(detail) => ApiError::conflict(detail),
            StoreError::Backend(detail) => {
                tracing::error!(error = %detail, "storage failure");
                ApiError::internal()
            }
        }
    }
}

/// A business rule's refusal is a 409 with its text; the rest as the
/// store's errors.
impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Refused(detail) => ApiError::conflict(detail),
            ServiceError::NotFound => ApiError::not_found("Entity"),
            ServiceError::Invalid { field, why } => {
                ApiError::Validation(vec![ValidationItem::new(&["body", field], why)])
            }
            ServiceError::Store(e) => e.into(),
        }
    }
}

#[derive(Serialize)]
struct HttpBody<'a> {
    code: &'a str,
    detail: &'a str,
}

#[derive(Serialize)]
struct ValidationBody<'a> {
    detail: &'a [ValidationItem],
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Http { status, code, detail } => {
                (*status, Json(HttpBody { code, detail })).into_response()
            }
            ApiError::Validation(items) => {
                (StatusCode::UNPROCESSABLE_ENTITY, Json(ValidationBody { detail: items })).into_response()
            }
        }
    }
}

/// Collects validation failures so a request reports all of them at once.
#[derive(Default)]
pub struct Checks(Vec<ValidationItem>);

impl Checks {
    pub fn check(&mut self, loc: &[&str], result: Result<(), String>) {
        if let Err(msg) = result {
            self.0.push(ValidationItem::new(loc, msg));
        }
    }

    /// An optional `uid` follows the name rules.
    pub fn uid(&mut self, uid: Option<&str>) {
        if let Some(uid) = uid {
            self.check(
                &["body", "uid"],
                crate::domain::validate::name(uid, crate::domain::validate::UID_MAX),
            );
        }
    }

    /// A rate (`throttleRate`, `rateLimit`), when given, is at least 1
    /// message per second.
    pub fn rate(&mut self, field: &str, rate: Option<u16>) {
        if rate == Some(0) {
            self.check(&["body", field], Err("must be at least 1".into()));
        }
    }

    pub fn finish(self) -> ApiResult<()> {
        if self.0.is_empty() { Ok(()) } else { Err(ApiError::Validation(self.0)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(e: impl Into<ApiError>) -> (u16, &'static str, String) {
        match e.into() {
            ApiError::Http { status, code, detail } => (status.as_u16(), code, detail),
            ApiError::Validation(items) => panic!("not a validation error: {items:?}"),
        }
    }

    #[test]
    fn service_errors_answer_as_the_store_errors_they_replace() {
        let why = "the endpoint is disabled; enable it to resend";
        assert_eq!(answer(ServiceError::Refused(why.into())), (409, "conflict", why.to_owned()));
        assert_eq!(answer(ServiceError::Refused(why.into())), answer(StoreError::Conflict(why.into())));
        assert_eq!(answer(ServiceError::NotFound), (404, "not_found", "Entity not found".to_owned()));
        assert_eq!(answer(ServiceError::from(StoreError::NotFound)), answer(StoreError::NotFound));
        let taken = StoreError::Conflict("uid taken".into());
        assert_eq!(answer(ServiceError::from(taken)), (409, "conflict", "uid taken".to_owned()));
        let failed = ServiceError::from(StoreError::Backend("disk full".into()));
        assert_eq!(answer(failed), (500, "server_error", "Internal server error".to_owned()));
    }
}
