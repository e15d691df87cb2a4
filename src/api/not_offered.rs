//! The paths of Svix products a self-hosted sender does not have
//! (destinations, integrations, autoconfig, pollers, streams, connectors,
//! transformations, Ingest). The official SDKs can call them; Hookline
//! answers each with a 403 in Svix's error shape that names the product, so
//! a caller learns why instead of meeting a missing route.

use axum::Router;
use axum::extract::OriginalUri;
use axum::response::{IntoResponse, Response};
use axum::routing::any;

use super::extract::Principal;
use super::{ApiError, ApiState};

/// (path, the product it belongs to). A `{*rest}` path covers everything
/// below it.
const PATHS: &[(&str, &str)] = &[
    ("/api/v1/app/{app_id}/destination", "destinations"),
    ("/api/v1/app/{app_id}/destination/{*rest}", "destinations"),
    ("/api/v1/app/{app_id}/integration", "integrations"),
    ("/api/v1/app/{app_id}/integration/{*rest}", "integrations"),
    ("/api/v1/app/{app_id}/autoconfig", "autoconfig"),
    ("/api/v1/app/{app_id}/autoconfig/{*rest}", "autoconfig"),
    ("/api/v1/app/{app_id}/endpoint/{endpoint_id}/auto-config", "autoconfig"),
    ("/api/v1/app/{app_id}/poller/{*rest}", "pollers"),
    ("/api/v1/app/{app_id}/polling-endpoint/{*rest}", "pollers"),
    ("/api/v1/app/{app_id}/events/subscription/{*rest}", "pollers"),
    ("/api/v1/stream", "streams"),
    ("/api/v1/stream/{*rest}", "streams"),
    ("/api/v1/auth/stream-logout", "streams"),
    ("/api/v1/auth/stream-portal-access/{stream_id}", "streams"),
    ("/api/v1/auth/stream/{*rest}", "streams"),
    ("/api/v1/connector", "connectors"),
    ("/api/v1/connector/{*rest}", "connectors"),
    ("/api/v1/app/{app_id}/endpoint/{endpoint_id}/transformation", "transformations"),
    ("/ingest/api/v1/{*rest}", "Ingest"),
];

pub fn routes() -> Router<ApiState> {
    PATHS.iter().fold(Router::new(), |r, (path, _)| r.route(path, any(refuse)))
}

/// The product a path belongs to, if it is one Hookline does not offer.
pub fn product(path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    PATHS.iter().find_map(|(pattern, product)| {
        let pattern: Vec<&str> = pattern.split('/').collect();
        let fits = match pattern.last() {
            Some(last) if last.starts_with("{*") => {
                segments.len() >= pattern.len() && matches(&pattern[..pattern.len() - 1], &segments)
            }
            _ => segments.len() == pattern.len() && matches(&pattern, &segments),
        };
        fits.then_some(*product)
    })
}

fn matches(pattern: &[&str], segments: &[&str]) -> bool {
    pattern.iter().zip(segments).all(|(p, s)| p.starts_with('{') || p == s)
}

/// What every such path answers (after authentication, as any route).
pub fn error(product: &str) -> ApiError {
    ApiError::not_offered(product)
}

async fn refuse(_who: Principal, OriginalUri(uri): OriginalUri) -> Response {
    error(product(uri.path()).unwrap_or("this feature")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_product() {
        assert_eq!(product("/api/v1/app/a/destination"), Some("destinations"));
        assert_eq!(product("/api/v1/app/a/destination/d/secret/rotate"), Some("destinations"));
        assert_eq!(product("/api/v1/app/a/endpoint/e/transformation"), Some("transformations"));
        assert_eq!(product("/api/v1/stream/s/sink/k/events/"), Some("streams"));
        assert_eq!(product("/ingest/api/v1/source"), Some("Ingest"));
        assert_eq!(product("/api/v1/app/a/endpoint/e"), None);
        assert_eq!(product("/api/v1/app/a/events"), None);
    }
}
