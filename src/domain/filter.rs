//! Which endpoints a message goes to.

use super::model::{Endpoint, NameSet};

/// Does `ep` want a message of `event_type` on `channels`?
///
/// - A disabled endpoint wants nothing.
/// - `event_types = None` means every event type.
/// - An endpoint with channels only receives messages carrying at least one
///   of them; an endpoint without channels receives every message.
pub fn wants(ep: &Endpoint, event_type: &str, channels: Option<&NameSet>) -> bool {
    if ep.disabled {
        return false;
    }
    let type_ok = ep.event_types.as_ref().is_none_or(|types| types.contains(event_type));
    let channel_ok = match (&ep.channels, channels) {
        (None, _) => true,
        (Some(want), Some(have)) => want.intersection(have).next().is_some(),
        (Some(_), None) => false,
    };
    type_ok && channel_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> NameSet {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn endpoint() -> Endpoint {
        crate::domain::fixtures::endpoint("ep_1")
    }

    #[test]
    fn no_filters_means_everything() {
        let ep = endpoint();
        assert!(wants(&ep, "a.b", None));
        assert!(wants(&ep, "a.b", Some(&set(&["x"]))));
    }

    #[test]
    fn event_type_filter() {
        let ep = Endpoint { event_types: Some(set(&["invoice.paid"])), ..endpoint() };
        assert!(wants(&ep, "invoice.paid", None));
        assert!(!wants(&ep, "invoice.created", None));
    }

    #[test]
    fn channel_filter() {
        let ep = Endpoint { channels: Some(set(&["eu", "us"])), ..endpoint() };
        assert!(wants(&ep, "t", Some(&set(&["us", "apac"]))));
        assert!(!wants(&ep, "t", Some(&set(&["apac"]))));
        assert!(!wants(&ep, "t", None));
    }

    #[test]
    fn disabled_wants_nothing() {
        let ep = Endpoint { disabled: true, ..endpoint() };
        assert!(!wants(&ep, "t", None));
    }
}
