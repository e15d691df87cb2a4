//! Applications: the list (search, counts) and one application with its
//! endpoints.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::charts::{self, ChartQuery};
use super::layout::{Crumb, Flash, Notice, PageError, done, empty, enabled_badge, opt_time, page};
use super::session::{Post, Session};
use super::{Dash, erasure};
use crate::domain::attempt_stats::Window;
use crate::domain::model::{App, AppSpec, Scope};
use crate::domain::validate;
use crate::store::{AppFilter, Cursor, Order, PageRequest};

const PAGE_SIZE: usize = 50;
/// Messages are counted up to this, then shown as "1000+".
const COUNT_CAP: u64 = 1000;
/// Success rate over this many latest deliveries.
const RATE_WINDOW: usize = 1000;
/// Endpoints charted on the application page at most: each costs an index
/// range of the chart minutes.
const MULTIPLES: usize = 24;

/// The application `app_ref` names, if this session may see it.
pub async fn load(d: &Dash, session: &Session, app_ref: &str) -> Result<App, PageError> {
    match d.service.store.get_app(app_ref).await? {
        Some(app) if session.sees(&app.id) => Ok(app),
        _ => Err(PageError::NotFound("Application")),
    }
}

/// Breadcrumbs down to `app`; the portal (one application) has no list above it.
pub fn app_crumbs<'a>(session: &Session, app: &'a App) -> Vec<Crumb<'a>> {
    let this = Crumb(&app.name, Some(format!("/apps/{}", app.id)));
    if session.is_admin() { vec![Crumb("Applications", Some("/apps".into())), this] } else { vec![this] }
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    after: Option<String>,
    #[serde(flatten)]
    flash: Flash,
}

pub async fn list(
    State(d): State<Dash>,
    session: Session,
    Query(q): Query<ListQuery>,
) -> Result<Response, PageError> {
    if let Scope::App(id) = &session.scope {
        return Ok(Redirect::to(&format!("/apps/{id}")).into_response());
    }
    let filter = AppFilter { search: q.q.clone() };
    let request =
        PageRequest { limit: PAGE_SIZE, cursor: q.after.clone().map(Cursor::After), order: Order::Ascending };
    let apps = d.service.store.list_apps(&filter, &request).await?;
    let ids: Vec<String> = apps.items.iter().map(|a| a.id.clone()).collect();
    let summaries = d.service.store.app_summaries(&ids, COUNT_CAP).await?;
    let now = d.service.now();
    let search = q.q.clone().unwrap_or_default();
    let body = html! {
        h1 { "Applications" }
        div.card {
            div.row {
                form.grow method="get" action="/apps" {
                    label for="q" { "Search by name, uid or id" }
                    div.row { input.grow #q type="search" name="q" value=(search); button.secondary type="submit" { "Search" } }
                }
            }
        }
        @if apps.items.is_empty() {
            div.card { (empty(
                if search.is_empty() { "No applications yet" } else { "No application matches" },
                html! { p { "Create one below, or with " code { "POST /api/v1/app" } " or a Svix SDK." } },
            )) }
        } @else {
            div.table-wrap { table.stack {
                thead { tr { th { "Name" } th { "uid" } th.opt { "id" } th { "Endpoints" } th { "Messages" } th.opt { "Last message" } } }
                tbody { @for app in &apps.items {
                    @let s = summaries.get(&app.id).cloned().unwrap_or_default();
                    tr {
                        td data-label="Name" { a href={"/apps/" (app.id)} { (app.name) } }
                        td.mono data-label="uid" { (app.uid.as_deref().unwrap_or("—")) }
                        td.mono.opt data-label="id" { (app.id) }
                        td data-label="Endpoints" { (s.endpoints) }
                        td data-label="Messages" { (s.messages) @if s.messages >= COUNT_CAP { "+" } }
                        td.opt data-label="Last message" { (opt_time(s.last_message_at, now)) }
                    }
                } }
            } }
            @if apps.more {
                div.pager { @if let Some(last) = apps.items.last() {
                    a.button.secondary href={"/apps?after=" (last.id) "&q=" (search)} { "Next page →" }
                } }
            }
        }
        h2 { "New application" }
        form.card method="post" action="/apps" {
            input type="hidden" name="_csrf" value=(session.csrf());
            div.row {
                div.grow { label for="name" { "Name" } input #name type="text" name="name" required; }
                div.grow { label for="uid" { "uid (optional)" } input #uid type="text" name="uid" pattern="[a-zA-Z0-9\\-_.]+"; }
                div { button type="submit" { "Create" } }
            }
        }
        (erasure::form("/erase-by-tag", &session.csrf(), "every application's messages"))
    };
    Ok(page("Applications", Some(&session), &[Crumb("Applications", None)], &q.flash, body).into_response())
}

pub async fn create(State(d): State<Dash>, post: Post) -> Response {
    if !post.session.is_admin() {
        return done(&post, "/apps", Err("Only administrators can create applications.".into()));
    }
    let name = post.get("name").unwrap_or_default().trim().to_owned();
    let uid = post.get("uid").map(str::trim).map(str::to_owned);
    if name.is_empty() {
        return done(&post, "/apps", Err("A name is required.".into()));
    }
    if let Some(Err(e)) = uid.as_deref().map(|u| validate::name(u, validate::UID_MAX)) {
        return done(&post, "/apps", Err(format!("uid {e}")));
    }
    match d.service.create_app(AppSpec { name, uid, ..Default::default() }).await {
        Ok(app) => done(&post, &format!("/apps/{}", app.id), Ok((Notice::AppCreated, 0))),
        Err(e) => done(&post, "/apps", Err(e.to_string())),
    }
}

pub async fn show(
    State(d): State<Dash>,
    session: Session,
    Path(app_ref): Path<String>,
    Query(flash): Query<Flash>,
    Query(chart): Query<ChartQuery>,
) -> Result<Markup, PageError> {
    let app = load(&d, &session, &app_ref).await?;
    let endpoints = d.service.all_endpoints(&app.id).await?;
    let ids: Vec<String> = endpoints.iter().map(|e| e.id.clone()).collect();
    let recent = d.service.store.endpoint_recent(&ids, RATE_WINDOW).await?;
    let base = format!("/apps/{}", app.id);
    let window = chart.window(Window::Day);
    let charted = &endpoints[..endpoints.len().min(MULTIPLES)];
    let charted_ids: Vec<String> = charted.iter().map(|e| e.id.clone()).collect();
    let series = d.service.store.attempt_series(&charted_ids, window, d.service.now()).await?;
    let body = html! {
        h1 { (app.name) }
        div.card { dl.kv {
            dt { "id" } dd.mono { (app.id) }
            dt { "uid" } dd.mono { (app.uid.as_deref().unwrap_or("—")) }
            dt { "Messages" } dd { a href={(base) "/messages"} { "Message log →" } }
        } }
        h2 { "Endpoints" }
        div #live {
            @if endpoints.is_empty() {
                div.card { (empty("No endpoints yet", html! { p { "Add the URL that should receive this application's webhooks below." } })) }
            } @else {
                div.table-wrap { table.stack {
                    thead { tr { th { "URL" } th { "Status" } th { "Success rate" } th.opt { "Event types" } th { "" } } }
                    tbody { @for ep in &endpoints {
                        @let c = recent.get(&ep.id).cloned().unwrap_or_default();
                        @let (ok, failed) = (c.success, c.fail);
                        tr {
                            td data-label="URL" { a href={(base) "/endpoints/" (ep.id)} { (ep.url) } @if !ep.description.is_empty() { div.small.muted { (ep.description) } } }
                            td data-label="Status" { (enabled_badge(ep.disabled)) }
                            td data-label="Success rate" { @if ok + failed == 0 { span.muted { "—" } } @else {
                                span title={(ok) " delivered, " (failed) " failed (latest " (RATE_WINDOW) ")"} {
                                    (format!("{:.1} %", 100.0 * ok as f64 / (ok + failed) as f64))
                                }
                            } }
                            td.opt.small data-label="Event types" { @match &ep.event_types { Some(t) => (t.iter().cloned().collect::<Vec<_>>().join(", ")), None => span.muted { "all" } } }
                            td data-label="" { a href={(base) "/endpoints/" (ep.id) "/messages"} { "Messages" } }
                        }
                    } }
                } }
            }
        }
        @if !charted.is_empty() {
            h2 { "Success rate by endpoint" }
            div.card {
                (charts::window_picker(&base, window))
                div.multiples {
                    @for ep in charted {
                        @if let Some(s) = series.get(&ep.id) {
                            (charts::success_rate_multiple(&ep.url, &format!("{base}/endpoints/{}", ep.id), s))
                        }
                    }
                }
                @if endpoints.len() > charted.len() {
                    p.small.muted { "The first " (MULTIPLES) " of " (endpoints.len()) " endpoints." }
                }
            }
        }
        h2 { "New endpoint" }
        form.card method="post" action={(base) "/endpoints"} {
            input type="hidden" name="_csrf" value=(session.csrf());
            div.row {
                div.grow { label for="url" { "URL" } input #url type="url" name="url" placeholder="https://example.com/webhooks" required; }
                div.grow { label for="event_types" { "Event types (comma-separated; empty = all)" } input #event_types type="text" name="event_types"; }
            }
            div.row {
                div.grow { label for="description" { "Description" } input #description type="text" name="description"; }
                div {
                    label for="preset" { "Retry policy" }
                    select #preset name="preset" {
                        option value="default" { "Exponential: 8 attempts over ~28 h, any 2xx" }
                        option value="fixed" { "Fixed: 4 attempts 2 min apart, only 200" }
                    }
                }
                div { button type="submit" { "Add endpoint" } }
            }
        }
        (erasure::form(&format!("{base}/erase-by-tag"), &session.csrf(), "this application's messages"))
    };
    Ok(page(&app.name, Some(&session), &app_crumbs(&session, &app), &flash, body))
}
