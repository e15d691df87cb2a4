//! An endpoint's flow control and ordered delivery on its page (issues 17
//! and 18): the flow state now, the rate limit / in-flight / ordering
//! settings, ordering keys blocked behind a failed message (with Skip), and
//! the offer to send what the endpoint missed while it was disabled.

use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::Dash;
use super::apps::app_crumbs;
use super::layout::{Crumb, Flash, Notice, done, page, time};
use super::session::Post;
use crate::domain::flow::MAX_IN_FLIGHT;
use crate::domain::model::{App, Endpoint, EndpointPatch};
use crate::domain::ordering::{FIFO_KEY, OnFailure};
use crate::domain::time::Timestamp;
use crate::service::{Missed, Service, ServiceError, ServiceResult};
use crate::store::{BlockedKey, FlowView, Order, Page, PageRequest};

/// Blocked keys listed on the page; the API pages through all of them.
const BLOCKED_SHOWN: usize = 50;
/// The missed-while-disabled count stops here (bounded work per page view);
/// beyond, the page says "at least".
const MISSED_CAP: usize = 10_000;

/// What the endpoint page shows about flow and ordering.
pub struct FlowPanel {
    view: FlowView,
    in_flight: usize,
    blocked: Page<BlockedKey>,
    /// Enabled again after being disabled: what it missed meanwhile.
    missed: Option<Missed>,
}

impl FlowPanel {
    pub async fn load(service: &Service, ep: &Endpoint) -> ServiceResult<FlowPanel> {
        let (view, in_flight) = service.endpoint_flow(ep).await?;
        let blocked = service.blocked_keys(ep, &PageRequest::first(BLOCKED_SHOWN, Order::Ascending)).await?;
        let missed = service.missed_while_disabled(ep, Some(MISSED_CAP)).await?;
        Ok(FlowPanel { view, in_flight, blocked, missed })
    }

    /// The flow state now: limit, allowed rate, backoff, pause, counts.
    pub fn state(&self, ep: &Endpoint, now: Timestamp) -> Markup {
        let v = &self.view;
        html! {
            dl.kv.spaced #flow {
                dt { "Rate limit" }
                dd { @match v.limit {
                    Some(l) => { (l) " messages/s" @if ep.throttle_rate.is_none() { span.muted { " (the application's)" } } },
                    None => "no limit",
                } }
                dt { "Allowed now" }
                dd {
                    @match v.allowed_rate { Some(r) => { (rate(r)) " messages/s" }, None => "unlimited" }
                    @if v.backing_off { " " span.badge.st-pending { "backing off" } }
                }
                @if let Some(until) = v.paused_until {
                    dt { "Paused" }
                    dd.paused { "paused until " (until.to_datetime().format("%H:%M:%S UTC")) " (" (time(until, now)) ") — "
                        (v.pause_reason.as_deref().unwrap_or("the receiver asked to wait")) }
                }
                dt { "Deliveries" }
                dd {
                    b { (v.waiting) } " waiting for the rate limit or a pause · "
                    b { (v.held) } " held behind an earlier message of their ordering key · "
                    b { (self.in_flight) } " in flight here (at most "
                    @match ep.max_in_flight { Some(n) => (n), None => "the server's default" } ")"
                }
            }
        }
    }

    /// Ordering keys blocked behind a head that failed for good, each with
    /// the message it waits on and a Skip button; nothing when none is.
    pub fn blocked(&self, app_id: &str, base: &str, csrf: &str, now: Timestamp) -> Markup {
        html! {
            @if !self.blocked.items.is_empty() {
                h2 { "Blocked ordering keys" }
                p.small.muted { "Each waits on a message that failed for good. Retry that message (its page), or skip it: the key moves on and the message stays failed." }
                div.table-wrap { table.stack #blocked-keys {
                    thead { tr { th { "Key" } th { "Waits on" } th { "Since" } th { "" } } }
                    tbody { @for b in &self.blocked.items {
                        tr {
                            td.mono data-label="Key" { @if b.key == FIFO_KEY { span.muted { "(FIFO: every message)" } } @else { (b.key) } }
                            td.mono data-label="Waits on" { a href={"/apps/" (app_id) "/messages/" (b.head_msg_id)} { (b.head_msg_id) } }
                            td data-label="Since" { (time(b.since, now)) }
                            td data-label="" {
                                form.inline method="post" action={(base) "/skip"}
                                    data-confirm="Skip the failed message? The key moves on to its next message; the failed one stays failed." {
                                    input type="hidden" name="_csrf" value=(csrf);
                                    input type="hidden" name="key" value=(b.key);
                                    button.secondary type="submit" { "Skip" }
                                }
                            }
                        }
                    } }
                } }
                @if self.blocked.more {
                    p.small.muted { "More keys are blocked; " code { "GET …/ordering/blocked" } " lists them all." }
                }
            }
        }
    }

    /// After a re-enable: how many messages it missed while disabled, and
    /// a button to review and send them.
    pub fn missed_offer(&self, base: &str, csrf: &str, now: Timestamp) -> Markup {
        html! {
            @if let Some(m) = self.missed {
                div.card.offer #missed {
                    p { "This endpoint missed " @if m.more { "at least " } b { (m.count) } " " (messages(m.count))
                        " while it was disabled (disabled " (time(m.since, now)) ")." }
                    div.row {
                        form method="post" action={(base) "/backfill"} {
                            input type="hidden" name="_csrf" value=(csrf);
                            input type="hidden" name="step" value="preview";
                            button.secondary type="submit" { "Send the missed messages…" }
                        }
                        form method="post" action={(base) "/dismiss-missed"} {
                            input type="hidden" name="_csrf" value=(csrf);
                            button.secondary type="submit" { "Dismiss" }
                        }
                    }
                }
            }
        }
    }
}

fn rate(r: f64) -> String {
    if r.fract() == 0.0 { format!("{r:.0}") } else { format!("{r:.1}") }
}

fn messages(n: u64) -> &'static str {
    if n == 1 { "message" } else { "messages" }
}

/// The rate limit, in-flight cap and ordering settings.
pub fn settings_form(ep: &Endpoint, base: &str, csrf: &str) -> Markup {
    let opt = |n: Option<u16>| n.map(|n| n.to_string()).unwrap_or_default();
    html! {
        form.card method="post" action={(base) "/flow"} {
            input type="hidden" name="_csrf" value=(csrf);
            div.row {
                div.grow { label for="throttleRate" { "Rate limit (messages/s; empty = the application's, else none)" }
                    input #throttleRate type="text" name="throttleRate" value=(opt(ep.throttle_rate)) inputmode="numeric"; }
                div.grow { label for="maxInFlight" { "Max in flight (1–" (MAX_IN_FLIGHT) "; empty = server default)" }
                    input #maxInFlight type="text" name="maxInFlight" value=(opt(ep.max_in_flight)) inputmode="numeric"; }
                div.grow { label for="orderingOnFailure" { "When an ordered message fails for good" }
                    select #orderingOnFailure name="orderingOnFailure" {
                        option value="skip" selected[ep.ordering_on_failure == OnFailure::Skip] { "skip it: its key moves on" }
                        option value="block" selected[ep.ordering_on_failure == OnFailure::Block] { "block its key until retried or skipped" }
                    } }
            }
            div.row.spaced-sm {
                label.plain.grow { input #fifo type="checkbox" name="fifo" value="1" checked[ep.fifo];
                    " FIFO: deliver every message in the order it was accepted, as if all had one ordering key" }
                button type="submit" { "Save" }
            }
        }
    }
}

/// The settings form's fields as a patch, or what is wrong with them.
pub fn patch_from(post: &Post) -> Result<EndpointPatch, String> {
    let throttle_rate = whole(post, "throttleRate", "Rate limit", u16::MAX)?;
    let max_in_flight = whole(post, "maxInFlight", "Max in flight", MAX_IN_FLIGHT)?;
    let on_failure = post.get("orderingOnFailure").unwrap_or("skip");
    let on_failure = OnFailure::parse(on_failure)
        .ok_or_else(|| "When an ordered message fails: choose skip or block.".to_owned())?;
    Ok(EndpointPatch {
        throttle_rate: Some(throttle_rate),
        max_in_flight: Some(max_in_flight),
        fifo: Some(post.get("fifo").is_some()),
        ordering_on_failure: Some(on_failure),
        ..Default::default()
    })
}

/// An optional whole number from 1 to `max`; empty is `None`.
fn whole(post: &Post, field: &str, label: &str, max: u16) -> Result<Option<u16>, String> {
    let Some(text) = post.get(field).map(str::trim).filter(|t| !t.is_empty()) else { return Ok(None) };
    match text.parse::<u16>() {
        Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
        _ => Err(format!("{label}: '{text}' is not a whole number from 1 to {max}.")),
    }
}

/// Skip a blocked key: its next message goes now.
pub async fn skip(d: &Dash, ep: &Endpoint, post: &Post) -> Response {
    let back = format!("/apps/{}/endpoints/{}", ep.app_id, ep.id);
    // `""` (a FIFO endpoint's order) is a key too, so not `Post::get`.
    let Some(key) = post.all("key").first().copied() else {
        return done(post, &back, Err("Which key? None was given.".into()));
    };
    let outcome = match d.service.skip_blocked_key(ep, key).await {
        Ok(()) => Ok((Notice::KeySkipped, 0)),
        Err(ServiceError::NotFound) => Err("That key is not blocked (any more).".into()),
        Err(e) => Err(e.to_string()),
    };
    done(post, &back, outcome)
}

/// Send what the endpoint missed while it was disabled: first the count to
/// confirm, then, confirmed, the send (through the endpoint's flow).
pub async fn backfill(d: &Dash, app: &App, ep: &Endpoint, post: &Post) -> Response {
    let back = format!("/apps/{}/endpoints/{}", app.id, ep.id);
    let Some(since) = ep.disabled_at.filter(|_| !ep.disabled) else {
        return done(post, &back, Err("This endpoint has not been disabled and enabled again.".into()));
    };
    if post.get("step") == Some("confirm") {
        return match d.service.replay_missing(ep, since, None, false).await {
            Ok(task) => {
                let n = task.data.get("count").and_then(|c| c.as_u64()).unwrap_or(0);
                done(post, &format!("{back}/messages"), Ok((Notice::MissedSent, n)))
            }
            Err(e) => done(post, &back, Err(e.to_string())),
        };
    }
    // Counted in full: this page is asked for, not shown on every visit.
    let count = match d.service.missed_while_disabled(ep, None).await {
        Ok(missed) => missed.map_or(0, |m| m.count),
        Err(e) => return done(post, &back, Err(e.to_string())),
    };
    let now = d.service.now();
    let body = html! {
        h1 { "Send the missed messages" }
        div.card {
            p { b { (count) } " " (messages(count)) " for " span.mono { (ep.url) } " were created while it was disabled (disabled "
                (time(since, now)) ") and never sent to it." }
            @if count == 0 {
                p { "Nothing to send. " a href=(back) { "Back to the endpoint" } }
            } @else {
                p.small.muted { "They go through the endpoint's rate limit and ordering like any other message; nothing is sent until you confirm." }
                form method="post" action={(back) "/backfill"} {
                    input type="hidden" name="_csrf" value=(post.session.csrf());
                    input type="hidden" name="step" value="confirm";
                    button type="submit" { "Send " (count) " " (messages(count)) } " "
                    a.button.secondary href=(back) { "Cancel" }
                }
            }
        }
    };
    let mut crumbs = app_crumbs(&post.session, app);
    crumbs.push(Crumb(&ep.url, Some(back.clone())));
    crumbs.push(Crumb("Missed messages", None));
    page("Send the missed messages", Some(&post.session), &crumbs, &Flash::default(), body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_as_people_write_them() {
        assert_eq!(rate(10.0), "10");
        assert_eq!(rate(2.5), "2.5");
        assert_eq!(rate(1.25), "1.2");
        assert_eq!(messages(1), "message");
        assert_eq!(messages(0), "messages");
    }
}
