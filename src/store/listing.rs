//! Listings described once: what a filtered, cursor-paginated listing
//! reads, as a head (SELECT … FROM … JOIN), conditions with their
//! parameters, and the id column pages are cut by, in terms that do not
//! depend on the SQL dialect. Each backend renders them (`sqlite/sql.rs`,
//! `postgres/sql.rs`) with its own placeholders, JSON containment, IN-lists
//! and case-insensitive matching, then decodes the rows.
//!
//! Both schemas use the same table and column names, so the column lists
//! below are shared too. Queries with a fixed shape (claims, ingest,
//! attempt recording) are written per backend, on purpose: that is where
//! each database is tuned.

use crate::domain::model::DeliveryStatus;
use crate::domain::time::Timestamp;

use super::{
    AppFilter, AttemptFilter, DeliveryFilter, MessageFilter, PageRequest, RequeueFilter, status_code_range,
};

pub const APP_COLS: &str = "a.id, a.uid, a.name, a.metadata, a.throttle_rate, a.created_at, a.updated_at";
pub const APP_NCOLS: usize = 7;
pub const ENDPOINT_COLS: &str = "e.id, e.app_id, e.uid, e.url, e.description, e.disabled, \
    e.event_types, e.channels, e.metadata, e.headers, e.throttle_rate, e.secret, e.old_secrets, \
    e.retry_policy, e.failing_since, e.created_at, e.updated_at, e.max_in_flight, e.fifo, e.ordering_on_failure, e.disabled_at";
pub const ENDPOINT_NCOLS: usize = 21;
pub const MESSAGE_COLS: &str = "m.id, m.app_id, m.event_type, m.event_id, m.channels, m.tags, m.payload, \
    m.created_at, m.deliver_at, m.expires_at, m.ordering_key, m.traceparent, m.tracestate";
pub const DELIVERY_COLS: &str = "d.msg_id, d.endpoint_id, d.app_id, d.status, d.attempts, d.next_attempt, \
    d.lease_owner, d.updated_at, d.total_attempts, d.last_code, d.last_attempt_at, \
    CASE WHEN d.gate = 2 THEN (SELECT k.head_msg_id FROM ordering_keys k \
        WHERE k.endpoint_id = d.endpoint_id AND k.okey = d.okey) END";
pub const DELIVERY_NCOLS: usize = 12;
pub const ATTEMPT_COLS: &str = "t.id, t.msg_id, t.endpoint_id, t.app_id, t.url, t.status, \
    t.status_code, t.response, t.duration_ms, t.trigger, t.error, t.created_at";
pub const EVENT_TYPE_COLS: &str = "name, description, archived, deprecated, schemas, group_name, \
    feature_flags, created_at, updated_at";
/// The counters of an `attempt_minutes` row, in the order of
/// `domain::attempt_stats::COUNTERS`.
pub const ATTEMPT_STAT_COLS: [&str; crate::domain::attempt_stats::COUNTERS] = [
    "success", "failure", "timeout", "l0", "l1", "l2", "l3", "l4", "l5", "l6", "l7", "l8", "l9", "l10",
    "l11", "l12", "l13",
];
pub const TASK_COLS: &str = "id, kind, status, data, created_at, updated_at";

/// Deliveries (`d`) with their messages (`m`). Messages are keyed by
/// `(app_id, id)` (SQLite has no index on `id` alone), so every join on
/// them names the application.
pub const DELIVERIES_WITH_MESSAGES: &str =
    "deliveries d JOIN messages m ON m.app_id = d.app_id AND m.id = d.msg_id";
/// Appended to a query over attempts (`t`) to reach their messages (`m`).
pub const JOIN_ATTEMPT_MESSAGES: &str = " JOIN messages m ON m.app_id = t.app_id AND m.id = t.msg_id";
/// The status of the latest attempt of delivery `d` (NULL before any).
const LATEST_ATTEMPT_STATUS: &str = "(SELECT t.status FROM attempts t WHERE t.msg_id = d.msg_id \
    AND t.endpoint_id = d.endpoint_id ORDER BY t.id DESC LIMIT 1)";
/// The status code of the latest attempt of delivery `d`.
const LATEST_STATUS_CODE: &str = "(SELECT t.status_code FROM attempts t WHERE t.msg_id = d.msg_id \
    AND t.endpoint_id = d.endpoint_id ORDER BY t.id DESC LIMIT 1)";

/// Record retention: message `m` may be deleted, as no delivery of it is
/// still to be attempted (pending, leased or due, parked or held: anything
/// but succeeded or failed for good, or with a `due_at` or a gate) and no
/// ordering key has it as its head (a blocked key waits on its failed
/// head). Both lookups go through the deliveries' `(msg_id, …)` key and
/// the ordering keys' `(endpoint_id, okey)` key.
pub fn message_settled() -> String {
    let (success, fail) = (DeliveryStatus::Success as i64, DeliveryStatus::Fail as i64);
    format!(
        "NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.msg_id = m.id \
            AND (d.status NOT IN ({success}, {fail}) OR d.due_at IS NOT NULL OR d.gate IS NOT NULL)) \
         AND NOT EXISTS (SELECT 1 FROM deliveries d JOIN ordering_keys k \
            ON k.endpoint_id = d.endpoint_id AND k.okey = d.okey \
            WHERE d.msg_id = m.id AND k.head_msg_id = m.id)"
    )
}

/// A bound value.
#[derive(Clone, Debug, PartialEq)]
pub enum Param {
    Text(String),
    /// A BIGINT column (times in ms, counts).
    Int(i64),
    /// An INTEGER column (statuses, status codes).
    Int4(i32),
    Bool(bool),
}

impl Param {
    /// The value as text (for a list bound as one text array).
    pub fn to_text(&self) -> String {
        match self {
            Param::Text(s) => s.clone(),
            Param::Int(i) => i.to_string(),
            Param::Int4(i) => i.to_string(),
            Param::Bool(b) => b.to_string(),
        }
    }
}

impl From<&str> for Param {
    fn from(s: &str) -> Self {
        Param::Text(s.to_owned())
    }
}

impl From<String> for Param {
    fn from(s: String) -> Self {
        Param::Text(s)
    }
}

impl From<Timestamp> for Param {
    fn from(t: Timestamp) -> Self {
        Param::Int(t.as_millis())
    }
}

impl From<DeliveryStatus> for Param {
    fn from(s: DeliveryStatus) -> Self {
        Param::Int4(s.code() as i32)
    }
}

/// One condition of a WHERE clause (they are joined with AND).
#[derive(Clone, Debug, PartialEq)]
pub enum Cond {
    /// `<column or expression> <op> <param>`.
    Cmp(&'static str, &'static str, Param),
    /// `<column> IN (<params>)`.
    In(&'static str, Vec<Param>),
    /// `<column> NOT IN (<params>)` (nothing when empty).
    NotIn(&'static str, Vec<Param>),
    /// The JSON array stored as text in `<column>` contains the string.
    JsonContains(&'static str, String),
    /// `<column>` contains the text, ignoring case.
    ContainsText(&'static str, String),
    /// At least one of these holds.
    Or(Vec<Cond>),
    /// SQL that reads the same in both dialects, without parameters.
    Sql(&'static str),
}

impl Cond {
    pub fn eq(col: &'static str, v: impl Into<Param>) -> Cond {
        Cond::Cmp(col, "=", v.into())
    }
}

/// One listing: the rows `head` reads where every condition holds, a page
/// at a time by `id_col`.
#[derive(Clone, Debug, PartialEq)]
pub struct Listing {
    /// Everything up to (not including) WHERE.
    pub head: String,
    pub conds: Vec<Cond>,
    /// The column pages are ordered and cut by (a unique id).
    pub id_col: &'static str,
}

impl Listing {
    fn new(head: String, id_col: &'static str) -> Self {
        Listing { head, conds: Vec::new(), id_col }
    }

    pub fn and(mut self, cond: Cond) -> Self {
        self.conds.push(cond);
        self
    }

    /// The conditions for one page (the listing's, plus the cursor's bound),
    /// the ORDER BY clause, and how many rows to read.
    pub fn page(&self, page: &PageRequest) -> (Vec<Cond>, String, usize) {
        let scan = page.scan();
        let mut conds = self.conds.clone();
        if let Some((op, id)) = scan.bound {
            conds.push(Cond::Cmp(self.id_col, op, Param::Text(id.to_owned())));
        }
        let dir = if scan.ascending { "ASC" } else { "DESC" };
        (conds, format!(" ORDER BY {} {dir}", self.id_col), page.rows_to_read())
    }

    pub fn apps(f: &AppFilter) -> Listing {
        let mut l = Listing::new(format!("SELECT {APP_COLS} FROM apps a"), "a.id");
        if let Some(search) = f.search.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            l = l.and(Cond::Or(vec![
                Cond::eq("a.id", search),
                Cond::ContainsText("a.name", search.to_owned()),
                Cond::ContainsText("a.uid", search.to_owned()),
            ]));
        }
        l
    }

    pub fn endpoints(app_id: &str) -> Listing {
        Listing::new(format!("SELECT {ENDPOINT_COLS} FROM endpoints e"), "e.id")
            .and(Cond::eq("e.app_id", app_id))
    }

    /// An endpoint's ordering keys blocked behind a failed head, by key.
    pub fn blocked_keys(endpoint_id: &str) -> Listing {
        Listing::new("SELECT okey, head_msg_id, blocked_at FROM ordering_keys".into(), "okey")
            .and(Cond::eq("endpoint_id", endpoint_id))
            .and(Cond::Sql("blocked_at IS NOT NULL"))
    }

    pub fn event_types(include_archived: bool) -> Listing {
        let l = Listing::new(format!("SELECT {EVENT_TYPE_COLS} FROM event_types"), "name");
        if include_archived { l } else { l.and(Cond::eq("archived", Param::Bool(false))) }
    }

    pub fn tasks() -> Listing {
        Listing::new(format!("SELECT {TASK_COLS} FROM tasks"), "id")
    }

    pub fn messages(app_id: &str, f: &MessageFilter) -> Listing {
        let mut l = Listing::new(format!("SELECT {MESSAGE_COLS} FROM messages m"), "m.id")
            .and(Cond::eq("m.app_id", app_id));
        l.conds.extend(message_filters(&f.event_types, &f.channel));
        if let Some(tag) = &f.tag {
            l = l.and(Cond::JsonContains("m.tags", tag.clone()));
        }
        l.conds.extend(time_range("m.created_at", f.before, f.after));
        l
    }

    /// A message's deliveries with their endpoints.
    pub fn message_deliveries(app_id: &str, msg_id: &str) -> Listing {
        let head = format!(
            "SELECT {DELIVERY_COLS}, {ENDPOINT_COLS} FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id"
        );
        Listing::new(head, "d.endpoint_id")
            .and(Cond::eq("d.app_id", app_id))
            .and(Cond::eq("d.msg_id", msg_id))
    }

    /// An endpoint's deliveries with their messages.
    pub fn endpoint_deliveries(app_id: &str, endpoint_id: &str, f: &DeliveryFilter) -> Listing {
        let head = format!("SELECT {DELIVERY_COLS}, {MESSAGE_COLS} FROM {DELIVERIES_WITH_MESSAGES}");
        let mut l = Listing::new(head, "d.msg_id")
            .and(Cond::eq("d.app_id", app_id))
            .and(Cond::eq("d.endpoint_id", endpoint_id));
        l.conds.extend(status_filter(f.status));
        l.conds.extend(message_filters(&f.event_types, &f.channel));
        l.conds.extend(time_range("m.created_at", f.before, f.after));
        l
    }

    /// What a recover sends again: the endpoint's deliveries of messages
    /// created in [since, until) whose latest attempt failed, whether they
    /// are settled as failed or still waiting for a retry; not those that
    /// have succeeded since, never attempted, being attempted right now
    /// (leased), or whose payload is gone. Each row is the message.
    pub fn recoverable(
        app_id: &str,
        endpoint_id: &str,
        since: Timestamp,
        until: Option<Timestamp>,
    ) -> Listing {
        let head = format!("SELECT {MESSAGE_COLS} FROM {DELIVERIES_WITH_MESSAGES}");
        let mut l = Listing::new(head, "d.msg_id")
            .and(Cond::eq("d.app_id", app_id))
            .and(Cond::eq("d.endpoint_id", endpoint_id))
            .and(Cond::Cmp("m.created_at", ">=", since.into()));
        if let Some(until) = until {
            l = l.and(Cond::Cmp("m.created_at", "<", until.into()));
        }
        l.and(Cond::In("d.status", vec![DeliveryStatus::Pending.into(), DeliveryStatus::Fail.into()]))
            .and(Cond::Sql("d.lease_owner IS NULL"))
            .and(Cond::Sql("m.payload IS NOT NULL"))
            .and(Cond::eq(LATEST_ATTEMPT_STATUS, DeliveryStatus::Fail))
    }

    pub fn attempts(app_id: &str, f: &AttemptFilter) -> Listing {
        let needs_message = f.event_types.is_some() || f.channel.is_some();
        let join = if needs_message { JOIN_ATTEMPT_MESSAGES } else { "" };
        let mut l = Listing::new(format!("SELECT {ATTEMPT_COLS} FROM attempts t{join}"), "t.id")
            .and(Cond::eq("t.app_id", app_id));
        if let Some(id) = &f.msg_id {
            l = l.and(Cond::eq("t.msg_id", id.clone()));
        }
        if let Some(id) = &f.endpoint_id {
            l = l.and(Cond::eq("t.endpoint_id", id.clone()));
        }
        if let Some(s) = f.status {
            l = l.and(Cond::eq("t.status", s));
        }
        if let Some(class) = f.status_code_class {
            l.conds.extend(status_code_class("t.status_code", class));
        }
        l.conds.extend(message_filters(&f.event_types, &f.channel));
        l.conds.extend(time_range("t.created_at", f.before, f.after));
        l
    }
}

/// The endpoint's deliveries (`d`, joined to their messages `m`) that a
/// recover or bulk replay sends again.
pub fn requeue_matching(app_id: &str, endpoint_id: &str, f: &RequeueFilter) -> Vec<Cond> {
    let mut conds = vec![
        Cond::eq("d.app_id", app_id),
        Cond::eq("d.endpoint_id", endpoint_id),
        Cond::Cmp("m.created_at", ">=", f.since.into()),
    ];
    if let Some(until) = f.until {
        conds.push(Cond::Cmp("m.created_at", "<", until.into()));
    }
    conds.push(Cond::In("d.status", f.statuses().into_iter().map(Param::from).collect()));
    // Settled ones only: a pending delivery someone holds is being sent.
    conds.push(Cond::Sql("d.lease_owner IS NULL"));
    conds.push(Cond::Sql("m.payload IS NOT NULL"));
    conds.extend(message_filters(&f.event_types, &f.channel));
    if let Some(tag) = &f.tag {
        conds.push(Cond::JsonContains("m.tags", tag.clone()));
    }
    if let Some(class) = f.status_code_class {
        conds.extend(status_code_class(LATEST_STATUS_CODE, class));
    }
    if let Some(ids) = &f.msg_ids {
        conds.push(Cond::In("d.msg_id", ids.iter().cloned().map(Param::Text).collect()));
    }
    conds
}

/// Messages (`m`) of the endpoint's application in [since, until), with
/// their payload, that the endpoint has no delivery of: what replay-missing
/// looks at (the endpoint's filters are applied to them afterwards).
pub fn missing_for(app_id: &str, since: Timestamp, until: Option<Timestamp>) -> Vec<Cond> {
    let mut conds = vec![Cond::eq("m.app_id", app_id), Cond::Cmp("m.created_at", ">=", since.into())];
    if let Some(until) = until {
        conds.push(Cond::Cmp("m.created_at", "<", until.into()));
    }
    conds.push(Cond::Sql("m.payload IS NOT NULL"));
    conds
}

/// An endpoint's deliveries (`d`, joined to their messages `m`) of messages
/// created in [since, until): what its statistics count.
pub fn endpoint_stats(
    app_id: &str,
    endpoint_id: &str,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
) -> Vec<Cond> {
    let mut conds = vec![Cond::eq("d.app_id", app_id), Cond::eq("d.endpoint_id", endpoint_id)];
    if let Some(s) = since {
        conds.push(Cond::Cmp("m.created_at", ">=", s.into()));
    }
    conds.extend(time_range("m.created_at", until, None));
    conds
}

/// Event type and channel filters on messages `m`.
fn message_filters(event_types: &Option<Vec<String>>, channel: &Option<String>) -> Vec<Cond> {
    let mut conds = Vec::new();
    if let Some(types) = event_types.as_ref().filter(|t| !t.is_empty()) {
        conds.push(Cond::In("m.event_type", types.iter().cloned().map(Param::Text).collect()));
    }
    if let Some(ch) = channel {
        conds.push(Cond::JsonContains("m.channels", ch.clone()));
    }
    conds
}

/// Delivery status filter on `d`; `Sending` is a pending delivery under lease.
fn status_filter(status: Option<DeliveryStatus>) -> Vec<Cond> {
    match status {
        None => vec![],
        Some(DeliveryStatus::Sending) => {
            vec![Cond::eq("d.status", DeliveryStatus::Pending), Cond::Sql("d.lease_owner IS NOT NULL")]
        }
        Some(DeliveryStatus::Pending) => {
            vec![Cond::eq("d.status", DeliveryStatus::Pending), Cond::Sql("d.lease_owner IS NULL")]
        }
        Some(s) => vec![Cond::eq("d.status", s)],
    }
}

/// Strictly before `before` and strictly after `after`.
fn time_range(col: &'static str, before: Option<Timestamp>, after: Option<Timestamp>) -> Vec<Cond> {
    let mut conds = Vec::new();
    if let Some(b) = before {
        conds.push(Cond::Cmp(col, "<", b.into()));
    }
    if let Some(a) = after {
        conds.push(Cond::Cmp(col, ">", a.into()));
    }
    conds
}

/// Status codes of a class (0 = no response, 100, …, 500).
fn status_code_class(col: &'static str, class: u16) -> Vec<Cond> {
    let (lo, hi) = status_code_range(class);
    vec![Cond::Cmp(col, ">=", Param::Int4(lo)), Cond::Cmp(col, "<", Param::Int4(hi))]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sending_is_pending_under_lease() {
        let l = Listing::endpoint_deliveries(
            "app",
            "ep",
            &DeliveryFilter { status: Some(DeliveryStatus::Sending), ..Default::default() },
        );
        assert!(l.conds.contains(&Cond::Sql("d.lease_owner IS NOT NULL")));
        assert!(l.conds.contains(&Cond::eq("d.status", DeliveryStatus::Pending)));
    }

    #[test]
    fn attempts_join_messages_only_when_filtering_on_them() {
        let plain = Listing::attempts("app", &AttemptFilter::default());
        assert!(!plain.head.contains("JOIN"));
        let typed = Listing::attempts(
            "app",
            &AttemptFilter { event_types: Some(vec!["a.b".into()]), ..Default::default() },
        );
        assert!(typed.head.ends_with(JOIN_ATTEMPT_MESSAGES));
        assert!(typed.conds.contains(&Cond::In("m.event_type", vec![Param::Text("a.b".into())])));
    }

    #[test]
    fn an_empty_search_lists_everything() {
        assert!(Listing::apps(&AppFilter { search: Some("  ".into()) }).conds.is_empty());
        assert_eq!(Listing::apps(&AppFilter { search: Some("x".into()) }).conds.len(), 1);
    }
}
