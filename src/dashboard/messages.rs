//! Messages: an endpoint's messages, an application's message log, and one
//! message with every attempt and the Retry / Replay buttons.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::Dash;
use super::apps::{app_crumbs, load};
use super::layout::{
    Crumb, Flash, Notice, PageError, code, done, empty, opt_time, page, pretty_json, status_badge, time,
};
use super::session::{Post, Session};
use crate::domain::model::{App, Delivery, DeliveryStatus, Endpoint, Trigger};
use crate::domain::time::Timestamp;
use crate::store::{AttemptFilter, Cursor, DeliveryFilter, MessageFilter, Order, PageRequest};

const PAGE_SIZE: usize = 50;

/// Filters and paging shared by the two message lists.
#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    event_type: Option<String>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
    /// Continue after (older than) this message id.
    #[serde(default)]
    after: Option<String>,
    /// Go back: newer than this message id.
    #[serde(default)]
    before: Option<String>,
    #[serde(flatten)]
    flash: Flash,
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl ListQuery {
    fn page(&self) -> PageRequest {
        let cursor = match (nonempty(&self.after), nonempty(&self.before)) {
            (Some(a), _) => Some(Cursor::After(a.to_owned())),
            (None, Some(b)) => Some(Cursor::Before(b.to_owned())),
            _ => None,
        };
        PageRequest { limit: PAGE_SIZE, cursor, order: Order::Descending }
    }

    fn status(&self) -> Option<DeliveryStatus> {
        match nonempty(&self.status)? {
            "success" => Some(DeliveryStatus::Success),
            "fail" => Some(DeliveryStatus::Fail),
            "pending" => Some(DeliveryStatus::Pending),
            "sending" => Some(DeliveryStatus::Sending),
            _ => None,
        }
    }

    fn event_types(&self) -> Option<Vec<String>> {
        nonempty(&self.event_type)
            .map(|t| t.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
    }

    fn when(value: &Option<String>) -> Option<Timestamp> {
        let v = nonempty(value)?;
        ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
            .iter()
            .find_map(|f| chrono::NaiveDateTime::parse_from_str(v, f).ok())
            .map(|t| Timestamp::from_datetime(t.and_utc()))
    }

    /// The query string without paging, to build page links.
    fn filters(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("status", &self.status),
            ("event_type", &self.event_type),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if let Some(v) = nonempty(v) {
                q.append_pair(k, v);
            }
        }
        q.finish()
    }

    fn form(&self, action: &str, with_status: bool) -> Markup {
        let value = |v: &Option<String>| nonempty(v).unwrap_or_default().to_owned();
        let status = value(&self.status);
        html! {
            form.card method="get" action=(action) {
                div.row {
                    @if with_status {
                        div { label for="status" { "Status" }
                            select #status name="status" {
                                option value="" { "any" }
                                @for s in ["fail", "pending", "sending", "success"] { option value=(s) selected[status == s] { (s) } }
                            } }
                    }
                    div.grow { label for="event_type" { "Event type" } input #event_type type="text" name="event_type" value=(value(&self.event_type)); }
                    div { label for="since" { "From (UTC)" } input #since type="datetime-local" name="since" value=(value(&self.since)); }
                    div { label for="until" { "Until (UTC)" } input #until type="datetime-local" name="until" value=(value(&self.until)); }
                    div { button.secondary type="submit" { "Filter" } }
                }
            }
        }
    }
}

fn pager(base: &str, q: &ListQuery, first: Option<&str>, last: Option<&str>, more: bool) -> Markup {
    let filters = q.filters();
    let paging = q.after.is_some() || q.before.is_some();
    // Going backwards, `more` means there are newer pages; forwards, older ones.
    let (newer, older) = if nonempty(&q.before).is_some() { (more, true) } else { (paging, more) };
    html! {
        div.pager {
            @if newer { @if let Some(f) = first { a.button.secondary href={(base) "?" (filters) "&before=" (f)} { "← Newer" } } }
            @if older { @if let Some(l) = last { a.button.secondary href={(base) "?" (filters) "&after=" (l)} { "Older →" } } }
        }
    }
}

/// A delivery held back by ordering: the message of its key it waits for.
fn waiting_for(app_id: &str, delivery: &Delivery) -> Markup {
    html! {
        @if let Some(head) = &delivery.waiting_for {
            div.small.muted.waiting { "waiting for " a.mono href={"/apps/" (app_id) "/messages/" (head)} { (head) } }
        }
    }
}

pub async fn for_endpoint(
    State(d): State<Dash>,
    session: Session,
    Path((app_ref, ep_ref)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> Result<Markup, PageError> {
    let app = load(&d, &session, &app_ref).await?;
    let ep = d.service.store.get_endpoint(&app.id, &ep_ref).await?.ok_or(PageError::NotFound("Endpoint"))?;
    let filter = DeliveryFilter {
        status: q.status(),
        event_types: q.event_types(),
        channel: None,
        before: ListQuery::when(&q.until),
        after: ListQuery::when(&q.since),
    };
    let rows = d.service.store.list_endpoint_deliveries(&app.id, &ep.id, &filter, &q.page()).await?;
    let now = d.service.now();
    let app_base = format!("/apps/{}", app.id);
    let base = format!("{app_base}/endpoints/{}/messages", ep.id);
    let mut crumbs = app_crumbs(&session, &app);
    crumbs.push(Crumb(&ep.url, Some(format!("{app_base}/endpoints/{}", ep.id))));
    crumbs.push(Crumb("Messages", None));
    let body = html! {
        h1 { "Messages sent to " span.mono { (ep.url) } }
        (q.form(&base, true))
        div #live {
            @if rows.items.is_empty() {
                div.card { (empty("No messages here", html! {
                    @if q.filters().is_empty() { p { "Messages sent to this application that match the endpoint's filters show up here." } }
                    @else { p { "Nothing matches these filters; widen them." } }
                })) }
            } @else {
                div.table-wrap { table.stack {
                    thead { tr { th { "Status" } th { "Event type" } th { "Attempts" } th { "Last response" } th { "Next retry" } th { "Sent" } th.opt { "Message" } } }
                    tbody { @for (delivery, msg) in &rows.items {
                        tr {
                            td data-label="Status" { (status_badge(delivery.status)) (waiting_for(&app.id, delivery)) }
                            td data-label="Event type" { a href={(app_base) "/messages/" (msg.id)} { (msg.event_type) } }
                            td data-label="Attempts" { (delivery.total_attempts) }
                            td data-label="Last response" { (code(delivery.last_code)) }
                            td data-label="Next retry" { @if matches!(delivery.status, DeliveryStatus::Pending | DeliveryStatus::Sending) { (opt_time(delivery.next_attempt, now)) } @else { span.muted { "—" } } }
                            td data-label="Sent" { (time(msg.created_at, now)) }
                            td.opt.mono.small data-label="Message" { a href={(app_base) "/messages/" (msg.id)} { (msg.id) } }
                        }
                    } }
                } }
                (pager(&base, &q, rows.items.first().map(|r| r.1.id.as_str()), rows.items.last().map(|r| r.1.id.as_str()), rows.more))
            }
        }
    };
    Ok(page("Messages", Some(&session), &crumbs, &q.flash, body))
}

pub async fn for_app(
    State(d): State<Dash>,
    session: Session,
    Path(app_ref): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Markup, PageError> {
    let app = load(&d, &session, &app_ref).await?;
    let filter = MessageFilter {
        event_types: q.event_types(),
        before: ListQuery::when(&q.until),
        after: ListQuery::when(&q.since),
        ..Default::default()
    };
    let messages = d.service.store.list_messages(&app.id, &filter, &q.page()).await?;
    let ids: Vec<String> = messages.items.iter().map(|m| m.id.clone()).collect();
    let counts = d.service.store.message_delivery_counts(&ids).await?;
    let now = d.service.now();
    let base = format!("/apps/{}/messages", app.id);
    let mut crumbs = app_crumbs(&session, &app);
    crumbs.push(Crumb("Message log", None));
    let body = html! {
        h1 { "Message log" }
        (q.form(&base, false))
        div #live {
            @if messages.items.is_empty() {
                div.card { (empty("No messages yet", html! { p { "Send one with " code { "POST /api/v1/app/" (app.id) "/msg" } " or a Svix SDK." } })) }
            } @else {
                div.table-wrap { table.stack {
                    thead { tr { th { "Event type" } th { "Deliveries" } th { "Sent" } th.opt { "Message" } } }
                    tbody { @for m in &messages.items {
                        @let c = counts.get(&m.id).cloned().unwrap_or_default();
                        tr {
                            td data-label="Event type" { a href={(base) "/" (m.id)} { (m.event_type) } }
                            td data-label="Deliveries" {
                                @if c.success > 0 { span.badge.st-success { (c.success) " delivered" } " " }
                                @if c.fail > 0 { span.badge.st-fail { (c.fail) " failed" } " " }
                                @if c.pending + c.sending > 0 { span.badge.st-pending { (c.pending + c.sending) " waiting" } }
                                @if c.success + c.fail + c.pending + c.sending == 0 { span.muted.small { "no endpoint" } }
                            }
                            td data-label="Sent" { (time(m.created_at, now)) }
                            td.opt.mono.small data-label="Message" { (m.id) }
                        }
                    } }
                } }
                (pager(&base, &q, messages.items.first().map(|m| m.id.as_str()), messages.items.last().map(|m| m.id.as_str()), messages.more))
            }
        }
    };
    Ok(page("Message log", Some(&session), &crumbs, &q.flash, body))
}

pub async fn show(
    State(d): State<Dash>,
    session: Session,
    Path((app_ref, msg_ref)): Path<(String, String)>,
    Query(flash): Query<Flash>,
) -> Result<Markup, PageError> {
    let app = load(&d, &session, &app_ref).await?;
    let msg = d.service.store.get_message(&app.id, &msg_ref).await?.ok_or(PageError::NotFound("Message"))?;
    let deliveries = d
        .service
        .store
        .list_message_deliveries(&app.id, &msg.id, &PageRequest::first(250, Order::Ascending))
        .await?;
    let attempts = d
        .service
        .store
        .list_attempts(
            &app.id,
            &AttemptFilter { msg_id: Some(msg.id.clone()), ..Default::default() },
            &PageRequest::first(250, Order::Descending),
        )
        .await?;
    let endpoints = d.service.all_endpoints(&app.id).await?;
    let url_of = |id: &str| {
        endpoints
            .iter()
            .find(|e| e.id == id)
            .map(|e| e.url.clone())
            .unwrap_or_else(|| "(deleted endpoint)".into())
    };
    let now = d.service.now();
    let base = format!("/apps/{}/messages/{}", app.id, msg.id);
    let csrf = session.csrf();
    let mut crumbs = app_crumbs(&session, &app);
    crumbs.push(Crumb("Message log", Some(format!("/apps/{}/messages", app.id))));
    crumbs.push(Crumb(&msg.event_type, None));
    let body = html! {
        h1 { (msg.event_type) " " span.small.muted.mono { (msg.id) } }
        div.card { dl.kv {
            dt { "Sent" } dd { (time(msg.created_at, now)) }
            @if let Some(id) = &msg.event_id { dt { "eventId" } dd.mono { (id) } }
            @if let Some(ch) = &msg.channels { dt { "Channels" } dd { (ch.iter().cloned().collect::<Vec<_>>().join(", ")) } }
            @if let Some(tags) = &msg.tags { dt { "Tags" } dd.mono { (tags.iter().cloned().collect::<Vec<_>>().join(", ")) } }
            @if let Some(t) = msg.deliver_at { dt { "Deliver at" } dd { (time(t, now)) } }
        } }
        h2 { "Payload" }
        @match &msg.payload {
            Some(bytes) => pre.payload { (pretty_json(bytes)) },
            None => div.card { p.muted { "The payload was erased (retention, or a request to expunge it or its tag)." } },
        }
        div #live {
            h2 { "Endpoints" }
            @if deliveries.items.is_empty() {
                div.card { (empty("Sent to no endpoint", html! { p { "No endpoint wanted this event type or channel when it was sent. Use Replay to send it now." } })) }
            } @else {
                div.table-wrap { table.stack {
                    thead { tr { th { "Endpoint" } th { "Status" } th { "Attempts" } th { "Last response" } th { "Next retry" } th { "" } } }
                    tbody { @for (delivery, ep) in &deliveries.items {
                        tr {
                            td data-label="Endpoint" { a href={"/apps/" (app.id) "/endpoints/" (ep.id)} { (ep.url) } }
                            td data-label="Status" { (status_badge(delivery.status)) (waiting_for(&app.id, delivery)) }
                            td data-label="Attempts" { (delivery.total_attempts) }
                            td data-label="Last response" { (code(delivery.last_code)) }
                            td data-label="Next retry" { @if matches!(delivery.status, DeliveryStatus::Pending | DeliveryStatus::Sending) { (opt_time(delivery.next_attempt, now)) } @else { span.muted { "—" } } }
                            td data-label="" { @if !ep.disabled && msg.payload.is_some() {
                                form.inline method="post" action={(base) "/retry"} data-async="Retry sent" {
                                    input type="hidden" name="_csrf" value=(csrf);
                                    input type="hidden" name="endpoint" value=(ep.id);
                                    button.secondary type="submit" { "Retry" }
                                }
                            } @else if ep.disabled { span.small.muted { "endpoint disabled" } } }
                        }
                    } }
                } }
            }
            h2 { "Attempts (" (attempts.items.len()) ")" }
            @if attempts.items.is_empty() {
                div.card { (empty("No attempt yet", html! { p { "Attempts appear here as they happen." } })) }
            } @else {
                div.table-wrap { table.stack {
                    thead { tr { th { "When" } th { "Endpoint" } th { "Trigger" } th { "Status" } th { "Code" } th { "Duration" } th { "Response" } } }
                    tbody { @for a in &attempts.items {
                        tr {
                            td data-label="When" { (time(a.created_at, now)) }
                            td.small data-label="Endpoint" { (url_of(&a.endpoint_id)) }
                            td data-label="Trigger" { @if a.trigger == Trigger::Manual { "manual" } @else { "scheduled" } }
                            td data-label="Status" { (status_badge(a.status)) }
                            td data-label="Code" { (code(Some(a.status_code))) }
                            td data-label="Duration" { (a.duration_ms) " ms" }
                            td data-label="Response" {
                                @if let Some(e) = &a.error { div.small.code-0 { (e) } }
                                @if a.response.is_empty() { @if a.error.is_none() { span.muted.small { "(empty)" } } } @else {
                                    details id={"resp-" (a.id)} { summary { "body (" (a.response.len()) " bytes)" } pre { (a.response) } }
                                }
                            }
                        }
                    } }
                } }
            }
        }
        @if msg.payload.is_some() {
            h2 { "Replay" }
            form.card method="post" action={(base) "/replay"} data-async="Replay sent" {
                input type="hidden" name="_csrf" value=(csrf);
                p.small.muted { "Send this message again now, as a manual attempt (the retry schedule is not affected)." }
                @for ep in endpoints.iter().filter(|e| !e.disabled) {
                    label.plain { input type="checkbox" name="endpoint" value=(ep.id) checked; " " (ep.url) }
                }
                p { button type="submit" { "Replay to selected endpoints" } }
            }
        }
    };
    Ok(page(&msg.event_type, Some(&session), &crumbs, &flash, body))
}

pub async fn act(
    State(d): State<Dash>,
    Path((app_ref, msg_ref, action)): Path<(String, String, String)>,
    post: Post,
) -> Response {
    let app: App = match load(&d, &post.session, &app_ref).await {
        Ok(app) => app,
        Err(e) => return e.into_response(),
    };
    let msg = match d.service.store.get_message(&app.id, &msg_ref).await {
        Ok(Some(m)) => m,
        Ok(None) => return PageError::NotFound("Message").into_response(),
        Err(e) => return PageError::from(e).into_response(),
    };
    let back = format!("/apps/{}/messages/{}", app.id, msg.id);
    let chosen: Vec<&str> = match action.as_str() {
        "retry" | "replay" => post.all("endpoint"),
        _ => return PageError::NotFound("Action").into_response(),
    };
    if chosen.is_empty() {
        return done(&post, &back, Err("Choose at least one endpoint.".into()));
    }
    let mut sent = 0;
    for id in chosen {
        let ep: Endpoint = match d.service.store.get_endpoint(&app.id, id).await {
            Ok(Some(ep)) => ep,
            Ok(None) => return done(&post, &back, Err("That endpoint no longer exists.".into())),
            Err(e) => return done(&post, &back, Err(e.to_string())),
        };
        if let Err(e) = d.service.resend(msg.clone(), ep).await {
            return done(&post, &back, Err(e.to_string()));
        }
        sent += 1;
    }
    done(&post, &back, Ok((Notice::Resent, sent)))
}
