//! One endpoint: its settings, secret, retry policy, custom headers, the
//! enable/disable switch, and bulk replay of failed messages; its flow and
//! ordering parts are in [`super::flow`].

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use chrono::NaiveDateTime;
use maud::{Markup, html};

use super::Dash;
use super::apps::{app_crumbs, load};
use super::charts::{self, ChartQuery};
use super::flow::{self, FlowPanel};
use super::layout::{Crumb, Flash, Notice, PageError, done, enabled_badge, page};
use super::session::{Post, Session};
use crate::domain::attempt_stats::{Series, Window};
use crate::domain::model::{App, DeliveryStatus, Endpoint, EndpointPatch, EndpointSpec, Headers, NameSet};
use crate::domain::retry::{RetryPolicy, SuccessRule, format_delays, parse_delays};
use crate::domain::signing;
use crate::domain::time::Timestamp;
use crate::domain::validate;
use crate::service::ReplayRequest;
use crate::store::RequeueFilter;

/// The counters at the top cover this many latest messages: bounded work
/// whatever the endpoint's history.
const RECENT: usize = 1000;

async fn load_endpoint(
    d: &Dash,
    session: &Session,
    app_ref: &str,
    ep_ref: &str,
) -> Result<(App, Endpoint), PageError> {
    let app = load(d, session, app_ref).await?;
    let ep = d.service.store.get_endpoint(&app.id, ep_ref).await?.ok_or(PageError::NotFound("Endpoint"))?;
    Ok((app, ep))
}

fn names(text: Option<&str>) -> Result<Option<NameSet>, String> {
    let set: NameSet = text
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if set.is_empty() {
        return Ok(None);
    }
    validate::name_set(&set, validate::EVENT_TYPE_MAX, 1000)?;
    Ok(Some(set))
}

fn joined(set: &Option<NameSet>) -> String {
    set.as_ref().map(|s| s.iter().cloned().collect::<Vec<_>>().join(", ")).unwrap_or_default()
}

pub async fn create(State(d): State<Dash>, Path(app_ref): Path<String>, post: Post) -> Response {
    let back = format!("/apps/{app_ref}");
    let app = match load(&d, &post.session, &app_ref).await {
        Ok(app) => app,
        Err(e) => return e.into_response(),
    };
    let url = post.get("url").unwrap_or_default().trim().to_owned();
    if let Err(e) = validate::endpoint_url(&url) {
        return done(&post, &back, Err(e));
    }
    let event_types = match names(post.get("event_types")) {
        Ok(t) => t,
        Err(e) => return done(&post, &back, Err(format!("Event types: {e}"))),
    };
    if let Err(e) = d.service.check_event_types(event_types.as_ref()).await {
        return done(&post, &back, Err(e.to_string()));
    }
    let retry_policy = (post.get("preset") == Some("fixed")).then(RetryPolicy::fixed_two_minutes);
    let spec = EndpointSpec {
        url,
        description: post.get("description").unwrap_or_default().to_owned(),
        event_types,
        retry_policy,
        ..Default::default()
    };
    match d.service.create_endpoint(&app.id, spec).await {
        Ok(ep) => {
            done(&post, &format!("/apps/{}/endpoints/{}", app.id, ep.id), Ok((Notice::EndpointCreated, 0)))
        }
        Err(e) => done(&post, &back, Err(e.to_string())),
    }
}

pub async fn show(
    State(d): State<Dash>,
    session: Session,
    Path((app_ref, ep_ref)): Path<(String, String)>,
    Query(flash): Query<Flash>,
    Query(chart): Query<ChartQuery>,
) -> Result<Markup, PageError> {
    let (app, ep) = load_endpoint(&d, &session, &app_ref, &ep_ref).await?;
    let now = d.service.now();
    let stats = d.service.store.endpoint_recent(std::slice::from_ref(&ep.id), RECENT).await?;
    let stats = stats.get(&ep.id).cloned().unwrap_or_default();
    let flow = FlowPanel::load(&d.service, &ep).await?;
    let window = chart.window(Window::Hour);
    let mut series = d.service.store.attempt_series(std::slice::from_ref(&ep.id), window, now).await?;
    let series = series.remove(&ep.id).unwrap_or_else(|| Series::empty(window, now));
    let base = format!("/apps/{}/endpoints/{}", app.id, ep.id);
    let csrf = session.csrf();
    let policy = ep.retry_policy.clone();
    let effective = policy.clone().unwrap_or_default();
    let verification = signing::verification_key(&ep.secret).unwrap_or_default();
    let headers: String = ep.headers.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
    let preset = |p: &RetryPolicy| {
        serde_json::json!({
            "schedule": format_delays(&p.schedule),
            "success": if p.success == SuccessRule::Exactly200 { "200" } else { "2xx" },
            "timeout": p.timeout.as_secs(),
        })
        .to_string()
    };
    let mut crumbs = app_crumbs(&session, &app);
    crumbs.push(Crumb(&ep.url, None));
    let body = html! {
        h1 { (ep.url) }
        div #live.card {
            div.row {
                div.grow {
                    (enabled_badge(ep.disabled))
                    @if let Some(since) = ep.failing_since { " " span.small.muted { "failing since " (super::layout::time(since, now)) } }
                }
                form method="post" action={(base) "/toggle"}
                    data-confirm=[(!ep.disabled).then_some("Disable this endpoint? Pending retries stop and nothing more is sent.")] {
                    input type="hidden" name="_csrf" value=(csrf);
                    @if ep.disabled { button type="submit" { "Enable" } } @else { button.danger type="submit" { "Disable" } }
                }
                a.button.secondary href={(base) "/messages"} { "Messages →" }
            }
            div.stats.spaced {
                div { b { (stats.success) } span.small.muted { "delivered" } }
                div { b { (stats.fail) } span.small.muted { "failed" } }
                div { b { (stats.pending + stats.sending) } span.small.muted { "waiting" } }
                div { span.small.muted { "of the latest " (RECENT) " messages" } }
            }
            (flow.state(&ep, now))
            (charts::window_picker(&base, window))
            (charts::endpoint_charts(&series, window))
        }
        (flow.missed_offer(&base, &csrf, now))
        (flow.blocked(&app.id, &base, &csrf, now))

        h2 { "Settings" }
        form.card method="post" action={(base) "/settings"} {
            input type="hidden" name="_csrf" value=(csrf);
            div.row {
                div.grow { label for="url" { "URL" } input #url type="url" name="url" value=(ep.url) required; }
                div.grow { label for="description" { "Description" } input #description type="text" name="description" value=(ep.description); }
            }
            div.row {
                div.grow { label for="event_types" { "Event types (comma-separated; empty = all)" } input #event_types type="text" name="event_types" value=(joined(&ep.event_types)); }
                div.grow { label for="channels" { "Channels (comma-separated; empty = all)" } input #channels type="text" name="channels" value=(joined(&ep.channels)); }
                div { button type="submit" { "Save" } }
            }
        }

        h2 { "Rate limit and ordering" }
        (flow::settings_form(&ep, &base, &csrf))

        h2 { "Signing secret" }
        div.card {
            div.row {
                code.grow.mono #secret data-secret=(verification) data-shown="0" { "••••••••••••••••" }
                button.secondary type="button" data-reveal="secret" { "Reveal" }
                form method="post" action={(base) "/rotate"} data-confirm="Rotate the secret? The current one keeps signing for 24 hours." {
                    input type="hidden" name="_csrf" value=(csrf);
                    button.secondary type="submit" { "Rotate" }
                }
            }
            p.small.muted {
                @if signing::kind_of(&ep.secret) == signing::SecretKind::Ed25519 {
                    "ed25519: receivers verify v1a signatures with this public key."
                } @else {
                    "Receivers verify the webhook-signature header with this secret (Standard Webhooks)."
                }
                @if !ep.old_secrets.is_empty() { " A previous secret still signs too, until " (super::layout::time(ep.old_secrets[0].expires_at, now)) "." }
            }
        }

        h2 { "Retry policy" }
        form.card method="post" action={(base) "/policy"} {
            input type="hidden" name="_csrf" value=(csrf);
            p.small.muted {
                @if policy.is_none() { "Using the server default. " }
                "The first attempt is immediate; then one retry after each delay. Presets: "
                button.secondary type="button" data-preset=(preset(&RetryPolicy::exponential())) { "Exponential (default)" }
                " "
                button.secondary type="button" data-preset=(preset(&RetryPolicy::fixed_two_minutes())) { "Fixed 2 min ×3, only 200" }
            }
            div.row {
                div.grow { label for="schedule" { "Delays after each failure (e.g. 5s, 5m, 30m, 2h)" }
                    input #schedule type="text" name="schedule" value=(format_delays(&effective.schedule)); }
                div { label for="success" { "Success" }
                    select #success name="success" {
                        option value="2xx" selected[effective.success == SuccessRule::Any2xx] { "any 2xx" }
                        option value="200" selected[effective.success == SuccessRule::Exactly200] { "only 200" }
                    } }
                div { label for="timeout" { "Timeout (s)" } input #timeout type="text" name="timeout" value=(effective.timeout.as_secs()) size="4"; }
            }
            div.row.spaced-sm {
                button type="submit" { "Save policy" }
                @if policy.is_some() { button.secondary type="submit" name="reset" value="1" { "Use server default" } }
            }
        }

        h2 { "Custom headers" }
        form.card method="post" action={(base) "/headers"} {
            input type="hidden" name="_csrf" value=(csrf);
            label for="headers" { "One per line, " code { "Name: value" } " — sent with every request" }
            textarea #headers name="headers" { (headers) }
            p { button type="submit" { "Save headers" } }
        }

        h2 { "Replay failed messages" }
        form.card method="post" action={(base) "/replay"} {
            input type="hidden" name="_csrf" value=(csrf);
            input type="hidden" name="step" value="preview";
            p.small.muted { "Send again, with a fresh retry schedule, every message that failed for this endpoint in a time range (UTC). You see how many before anything is sent." }
            div.row {
                div.grow { label for="since" { "From" } input #since type="datetime-local" name="since" required; }
                div.grow { label for="until" { "Until (optional)" } input #until type="datetime-local" name="until"; }
                div { button.secondary type="submit" { "Count failed messages" } }
            }
        }
    };
    Ok(page(&ep.url, Some(&session), &crumbs, &flash, body))
}

/// `datetime-local` values, read as UTC.
fn parse_when(value: Option<&str>) -> Result<Option<Timestamp>, String> {
    let Some(v) = value else { return Ok(None) };
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(v, f).ok())
        .map(|t| Some(Timestamp::from_datetime(t.and_utc())))
        .ok_or_else(|| format!("'{v}' is not a date and time"))
}

fn parse_headers(text: &str) -> Result<Headers, String> {
    let mut headers = Headers::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or_else(|| format!("'{line}' is not 'Name: value'"))?;
        headers.insert(name.trim().to_owned(), value.trim().to_owned());
    }
    validate::custom_headers(&headers)?;
    Ok(headers)
}

fn policy_from(post: &Post) -> Result<Option<RetryPolicy>, String> {
    if post.get("reset").is_some() {
        return Ok(None);
    }
    let schedule = parse_delays(post.get("schedule").unwrap_or_default())?;
    let success =
        if post.get("success") == Some("200") { SuccessRule::Exactly200 } else { SuccessRule::Any2xx };
    let timeout: u64 = post
        .get("timeout")
        .unwrap_or("30")
        .trim()
        .parse()
        .map_err(|_| "timeout must be whole seconds".to_owned())?;
    let policy = RetryPolicy { schedule, success, timeout: Duration::from_secs(timeout) };
    policy.validate()?;
    Ok(Some(policy))
}

pub async fn act(
    State(d): State<Dash>,
    Path((app_ref, ep_ref, action)): Path<(String, String, String)>,
    post: Post,
) -> Response {
    let (app, ep) = match load_endpoint(&d, &post.session, &app_ref, &ep_ref).await {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let back = format!("/apps/{}/endpoints/{}", app.id, ep.id);
    let patch = |p: EndpointPatch| async {
        d.service.update_endpoint(&app.id, &ep.id, p).await.map_err(|e| e.to_string())
    };
    let outcome: Result<Notice, String> = match action.as_str() {
        "toggle" => patch(EndpointPatch { disabled: Some(!ep.disabled), ..Default::default() })
            .await
            .map(|e| if e.disabled { Notice::EndpointDisabled } else { Notice::EndpointEnabled }),
        "settings" => {
            let url = post.get("url").unwrap_or_default().trim().to_owned();
            match (validate::endpoint_url(&url), names(post.get("event_types")), names(post.get("channels")))
            {
                (Err(e), ..) => Err(e),
                (_, Err(e), _) | (_, _, Err(e)) => Err(e),
                (Ok(()), Ok(event_types), Ok(channels)) => {
                    match d.service.check_event_types(event_types.as_ref()).await {
                        Err(e) => Err(e.to_string()),
                        Ok(()) => patch(EndpointPatch {
                            url: Some(url),
                            description: Some(post.get("description").unwrap_or_default().to_owned()),
                            event_types: Some(event_types),
                            channels: Some(channels),
                            ..Default::default()
                        })
                        .await
                        .map(|_| Notice::SettingsSaved),
                    }
                }
            }
        }
        "policy" => match policy_from(&post) {
            Ok(policy) => patch(EndpointPatch { retry_policy: Some(policy), ..Default::default() })
                .await
                .map(|_| Notice::PolicySaved),
            Err(e) => Err(format!("Retry policy: {e}")),
        },
        "flow" => match flow::patch_from(&post) {
            Ok(p) => patch(p).await.map(|_| Notice::SettingsSaved),
            Err(e) => Err(e),
        },
        "skip" => return flow::skip(&d, &ep, &post).await,
        "dismiss-missed" => patch(EndpointPatch { forget_disabled: true, ..Default::default() })
            .await
            .map(|_| Notice::MissedDismissed),
        "backfill" => return flow::backfill(&d, &app, &ep, &post).await,
        "headers" => match parse_headers(post.get("headers").unwrap_or_default()) {
            Ok(headers) => patch(EndpointPatch { headers: Some(headers), ..Default::default() })
                .await
                .map(|_| Notice::HeadersSaved),
            Err(e) => Err(e),
        },
        "rotate" => d
            .service
            .rotate_secret(&ep, None, None, None)
            .await
            .map(|_| Notice::SecretRotated)
            .map_err(|e| e.to_string()),
        "replay" => return replay(&d, &app, &ep, &post).await,
        _ => return PageError::NotFound("Action").into_response(),
    };
    done(&post, &back, outcome.map(|n| (n, 0)))
}

/// Bulk replay of failed deliveries: first a count, then, confirmed, the send.
async fn replay(d: &Dash, app: &App, ep: &Endpoint, post: &Post) -> Response {
    let back = format!("/apps/{}/endpoints/{}", app.id, ep.id);
    let (since, until) = match (parse_when(post.get("since")), parse_when(post.get("until"))) {
        (Ok(Some(s)), Ok(u)) => (s, u),
        (Ok(None), _) => return done(post, &back, Err("Choose where the range starts.".into())),
        (Err(e), _) | (_, Err(e)) => return done(post, &back, Err(e)),
    };
    let confirm = post.get("step") == Some("confirm");
    let request = ReplayRequest {
        filter: RequeueFilter {
            since,
            until,
            statuses: Some(vec![DeliveryStatus::Fail]),
            ..Default::default()
        },
        dry_run: !confirm,
    };
    let count = match d.service.bulk_replay(ep, &request).await {
        Ok((_, n)) => n,
        Err(e) => return done(post, &back, Err(e.to_string())),
    };
    if confirm {
        return done(post, &format!("{back}/messages"), Ok((Notice::ReplayStarted, count)));
    }
    let range = |t: Option<Timestamp>| t.map(|t| t.to_rfc3339()).unwrap_or_else(|| "now".into());
    let body = html! {
        h1 { "Replay failed messages" }
        div.card {
            p { b { (count) } " failed " @if count == 1 { "message" } @else { "messages" } " for " span.mono { (ep.url) }
                " between " (range(Some(since))) " and " (range(until)) "." }
            @if count == 0 {
                p { "Nothing to send. " a href=(back) { "Back to the endpoint" } }
            } @else {
                form method="post" action={(back) "/replay"} {
                    input type="hidden" name="_csrf" value=(post.session.csrf());
                    input type="hidden" name="step" value="confirm";
                    input type="hidden" name="since" value=(post.get("since").unwrap_or_default());
                    input type="hidden" name="until" value=(post.get("until").unwrap_or_default());
                    button type="submit" { "Send " (count) " again" } " "
                    a.button.secondary href=(back) { "Cancel" }
                }
            }
        }
    };
    let mut crumbs = app_crumbs(&post.session, app);
    crumbs.push(Crumb(&ep.url, Some(back.clone())));
    crumbs.push(Crumb("Replay", None));
    page("Replay failed messages", Some(&post.session), &crumbs, &Flash::default(), body).into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn header_lines() {
        let h = parse_headers("X-Tenant: 42\n\n  Authorization: Bearer x  ").unwrap();
        assert_eq!(h["X-Tenant"], "42");
        assert_eq!(h["Authorization"], "Bearer x");
        assert!(parse_headers("no colon").is_err());
        assert!(parse_headers("webhook-id: x").is_err());
    }

    #[test]
    fn datetime_local_is_utc() {
        let t = parse_when(Some("2026-11-23T10:00")).unwrap().unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-23T10:00:00.000Z");
        assert!(parse_when(Some("yesterday")).is_err());
        assert_eq!(parse_when(None), Ok(None));
    }

    #[test]
    fn names_are_trimmed_and_checked() {
        assert_eq!(
            names(Some(" a.b , c ")).unwrap(),
            Some(["a.b".to_string(), "c".to_string()].into_iter().collect::<BTreeSet<_>>())
        );
        assert_eq!(names(Some(" , ")).unwrap(), None);
        assert!(names(Some("bad name")).is_err());
    }
}
