//! The web pages: server-rendered (askama templates compiled into the binary), signed in with
//! an API token (session cookie), every form carrying the session's CSRF token. A page shows
//! only what its user may do.

use std::collections::HashMap;

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum_extra::extract::cookie::{Cookie, SameSite};
use axum_extra::extract::{CookieJar, Form};
use serde::Deserialize;

use super::auth::{Caller, PageCaller, SESSION_COOKIE};
use super::{ApiError, AppState};
use crate::app::WorkAction;
use crate::jobs::Simulation;
use crate::model::{HistoryEntry, ProvisioningState};
use crate::operators::{ListFn, Paging, TotalsFn, WorkItem};
use crate::permissions::{Action, Capability};
use crate::store::{Hold, IdentityRecord, IdentityView, JobRun};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/review", get(review_page).post(review))
        .route("/manual", get(manual_page).post(manual))
        .route("/identities", get(identities))
        .route("/identities/{entity_type}/{key}", get(identity))
        .route("/identities/{entity_type}/{key}/request", post(request_change))
        .route("/jobs", get(jobs_page))
        .route("/jobs/run", post(run_job))
        .route("/jobs/{run}/{decision}", post(decide_run))
        .route("/plugins", get(plugins_page))
        .route("/plugins/{name}/enable", post(enable_plugin))
        .route("/plugins/{name}/reload", post(reload_plugin))
}

/// What the navigation shows.
#[derive(Default)]
struct Nav {
    user: String,
    csrf: String,
    review: bool,
    manual: bool,
    view: bool,
    /// The Directory: someone who may see or change some entity type's identities.
    directory: bool,
}

fn nav(app: &AppState, caller: &Caller) -> Nav {
    let entity_types = || app.config().entity_types.keys();
    Nav {
        user: caller.user.display_name.clone(),
        csrf: caller.csrf.clone().unwrap_or_default(),
        review: entity_types().any(|et| caller.may_act(Action::ReviewProvisioning, et)),
        manual: entity_types().any(|et| caller.may_act(Action::PerformManualProvisioning, et)),
        view: caller.may(Capability::View),
        directory: entity_types().any(|et| caller.principal().may_see_identities(et)),
    }
}

/// The pages' escaper (`host/askama.toml`): askama's HTML escaping, after
/// `text::escape_for_markup`. HTML escaping leaves bidi overrides and other invisible
/// characters alone, and they would make a page's text read otherwise than it is.
#[derive(Clone, Copy)]
pub struct Visible;

impl askama::filters::Escaper for Visible {
    fn write_escaped_str<W: std::fmt::Write>(&self, dest: W, string: &str) -> std::fmt::Result {
        askama::filters::Html.write_escaped_str(dest, &crate::text::escape_for_markup(string))
    }
}

/// An error shown as a page.
struct PageError(ApiError);

impl From<ApiError> for PageError {
    fn from(error: ApiError) -> Self {
        PageError(error)
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    message: Option<String>,
    status: String,
    error: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = ErrorPage { message: None, status: self.0.status.to_string(), error: self.0.message.clone() };
        (self.0.status, render(&page)).into_response()
    }
}

fn render(page: &impl Template) -> Html<String> {
    Html(page.render().unwrap_or_else(|e| format!("<p>cannot render the page: {e}</p>")))
}

fn csrf(caller: &Caller, given: &str) -> Result<(), PageError> {
    let expected = caller.csrf.as_deref().unwrap_or_default();
    // Constant time: the comparison does not tell how much of a guess was right.
    let same =
        expected.len() == given.len() && expected.bytes().zip(given.bytes()).fold(0, |d, (a, b)| d | (a ^ b)) == 0;
    if same && !expected.is_empty() {
        Ok(())
    } else {
        Err(PageError(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            "the form is stale or forged (CSRF token mismatch); reload the page",
        )))
    }
}

fn back(path: &str, message: &str) -> Redirect {
    let encoded: String = url_encode(message);
    Redirect::to(&format!("{path}?message={encoded}"))
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Deserialize, Default)]
struct MessageQuery {
    message: Option<String>,
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    message: Option<String>,
}

async fn login_page(Query(q): Query<MessageQuery>) -> Html<String> {
    render(&LoginPage { message: q.message })
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(
    State(app): State<AppState>,
    jar: CookieJar,
    Form(form): Form<LoginForm>,
) -> Result<Response, PageError> {
    let token = form.token.trim().to_string();
    let login = app.read(move |store| Ok(store.token_user(&token)?)).await?;
    let Some(login) = login else {
        return Ok(back("/login", "That token is not valid (unknown, revoked or expired).").into_response());
    };
    let lifetime = i64::try_from(app.config().serve.session_lifetime.as_millis()).unwrap_or(i64::MAX / 2);
    let session = app.write(move |host| Ok(host.store.create_session(&login, lifetime)?)).await?;
    let cookie = Cookie::build((SESSION_COOKIE, session))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(app.config().serve.secure_cookies)
        .path("/")
        .build();
    Ok((jar.add(cookie), Redirect::to("/")).into_response())
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(app): State<AppState>,
    PageCaller(caller): PageCaller,
    jar: CookieJar,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    csrf(&caller, &form.csrf)?;
    if let Some(id) = jar.get(SESSION_COOKIE).map(|c| c.value().to_string()) {
        app.write(move |host| Ok(host.store.end_session(&id)?)).await?;
    }
    Ok((jar.remove(Cookie::from(SESSION_COOKIE)), Redirect::to("/login")).into_response())
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    nav: Nav,
    here: &'static str,
    message: Option<String>,
    states: Vec<(ProvisioningState, i64)>,
}

async fn home(
    State(app): State<AppState>,
    PageCaller(caller): PageCaller,
    Query(q): Query<MessageQuery>,
) -> Result<Html<String>, PageError> {
    let states = app.read(|store| Ok(store.count_by_state()?)).await?;
    Ok(render(&HomePage { nav: nav(&app, &caller), here: "home", message: q.message, states }))
}

/// Orders per entity type on a work page; the rest is a "next" link away.
const PAGE: usize = 100;

/// A work page's query: a message after an action, and the page of one entity type.
#[derive(Deserialize)]
struct WorkQuery {
    message: Option<String>,
    entity_type: Option<String>,
    after: Option<i64>,
}

/// One page of the work items of one entity type, and whether the user may act on several at once.
struct Group {
    entity_type: String,
    bulk: bool,
    items: Vec<WorkItem>,
    /// How many wait in all.
    total: u64,
    /// Not the first page.
    paged: bool,
    /// Where the next page starts, if there is one.
    next_after: Option<i64>,
}

/// The groups of a work page: every entity type with work for the user, a page of each.
async fn groups(
    app: &AppState,
    caller: &Caller,
    q: &WorkQuery,
    (list, totals): (ListFn, TotalsFn),
    bulk: Action,
) -> Result<Vec<Group>, PageError> {
    let login = caller.user.login.clone();
    let (selected, after) = (q.entity_type.clone(), q.after);
    let pages = app
        .read(move |store| {
            let mut pages = Vec::new();
            for (entity_type, total) in totals(store, &login)? {
                let after = after.filter(|_| selected.as_deref() == Some(entity_type.as_str()));
                let items = list(store, &login, Some(&entity_type), Paging { after, limit: Some(PAGE) })?;
                pages.push((entity_type, total, after.is_some(), items));
            }
            Ok(pages)
        })
        .await?;
    Ok(pages
        .into_iter()
        .map(|(entity_type, total, paged, items)| Group {
            bulk: caller.may_act(bulk, &entity_type),
            next_after: (items.len() == PAGE).then(|| items.last().map(|i| i.order.id)).flatten(),
            entity_type,
            items,
            total,
            paged,
        })
        .collect())
}

#[derive(Template)]
#[template(path = "review.html")]
struct ReviewPage {
    nav: Nav,
    here: &'static str,
    message: Option<String>,
    groups: Vec<Group>,
}

async fn review_page(
    State(app): State<AppState>,
    PageCaller(caller): PageCaller,
    Query(q): Query<WorkQuery>,
) -> Result<Html<String>, PageError> {
    let work = (crate::review::list as ListFn, crate::review::totals as TotalsFn);
    let groups = groups(&app, &caller, &q, work, Action::BulkReviewProvisioning).await?;
    Ok(render(&ReviewPage { nav: nav(&app, &caller), here: "review", message: q.message, groups }))
}

#[derive(Deserialize)]
struct WorkForm {
    csrf: String,
    action: String,
    #[serde(default)]
    orders: Vec<i64>,
    #[serde(default)]
    comment: String,
}

/// Back to a work page after an action: what it did, or why it was refused (a server error is
/// an error page).
fn after_action(page: &str, result: Result<Vec<crate::model::Order>, ApiError>) -> Result<Response, PageError> {
    Ok(match result {
        Ok(orders) => back(page, &done(&orders)),
        Err(error) if error.status.is_client_error() => back(page, &error.message),
        Err(error) => return Err(error.into()),
    }
    .into_response())
}

fn done(orders: &[crate::model::Order]) -> String {
    orders.iter().map(|o| format!("order {} → {}", o.id, o.state)).collect::<Vec<_>>().join(", ")
}

async fn review(
    State(app): State<AppState>,
    PageCaller(caller): PageCaller,
    Form(form): Form<WorkForm>,
) -> Result<Response, PageError> {
    csrf(&caller, &form.csrf)?;
    let action = WorkAction::named(&form.action, WorkAction::REVIEW).map_err(|e| PageError(e.into()))?;
    let who = caller.principal();
    // An empty comment is none (the rules trim it).
    let result = app.act(move |host| Ok(crate::app::act(host, &who, &form.orders, action, Some(&form.comment))?)).await;
    after_action("/review", result)
}

#[derive(Template)]
#[template(path = "manual.html")]
struct ManualPage {
    nav: Nav,
    here: &'static str,
    message: Option<String>,
    groups: Vec<Group>,
}

async fn manual_page(
    State(app): State<AppState>,
    PageCaller(caller): PageCaller,
    Query(q): Query<WorkQuery>,
) -> Result<Html<String>, PageError> {
    let work = (crate::manual::list as ListFn, crate::manual::totals as TotalsFn);
    let groups = groups(&app, &caller, &q, work, Action::BulkPerformManualProvisioning).await?;
    Ok(render(&ManualPage { nav: nav(&app, &caller), here: "manual", message: q.message, groups }))
}

async fn manual(
    State(app): State<AppState>,
    PageCaller(caller): PageCaller,
    Form(form): Form<WorkForm>,
) -> Result<Response, PageError> {
    csrf(&caller, &form.csrf)?;
    let action = WorkAction::named(&form.action, WorkAction::MANUAL).map_err(|e| PageError(e.into()))?;
    let who = caller.principal();
    // An empty comment is none; an empty error report is refused (the rules trim them).
    let result = app.act(move |host| Ok(crate::app::act(host, &who, &form.orders, action, Some(&form.comment))?)).await;
    after_action("/manual", result)
}

#[derive(Template)]
#[template(path = "identities.html")]
struct IdentitiesPage {
    nav: Nav,
    here: &'static str,
    message: Option<String>,
    query: String,
    query_encoded: String,
    /// The entity type searched, if one is.
    selected: Option<String>,
    selected_encoded: String,
    /// The entity types the user may see.
    entity_types: Vec<String>,
    found: Vec<IdentityRecord>,
    next_after: Option<i64>,
    page: usize,
}

/// Identities on a Directory page.
const DIRECTORY_PAGE: usize = 50;

#[derive(Deserialize)]
struct FindQuery {
    q: Option<String>,
    entity_type: Option<String>,
    after: Option<i64>,
    message: Option<String>,
}

/// The Directory: identities of the entity types the user may see whose key, name or an
/// attribute's value contains the text, a page at a time.
async fn identities(
    State(app): State<AppState>,
    PageCaller(caller): PageCaller,
    Query(q): Query<FindQuery>,
) -> Result<Html<String>, PageError> {
    let principal = caller.principal();
    let entity_types: Vec<String> =
        app.config().entity_types.keys().filter(|t| principal.may_see_identities(t)).cloned().collect();
    if entity_types.is_empty() {
        caller.require(Capability::View)?;
    }
    let selected = q.entity_type.filter(|t| !t.is_empty());
    let types = match &selected {
        Some(t) if entity_types.contains(t) => vec![t.clone()],
        Some(t) => {
            return Err(ApiError::bad_request(format!(
                "you may not see {t} identities, or there is no such entity type"
            ))
            .into());
        }
        None => entity_types.clone(),
    };
    let query = q.q.unwrap_or_default();
    crate::limits::check("the search", &query, crate::limits::NAME)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let text = query.trim().to_string();
    let after = q.after;
    let found = app.read(move |store| Ok(store.search_identities(&text, &types, after, DIRECTORY_PAGE)?)).await?;
    let next_after = (found.len() == DIRECTORY_PAGE).then(|| found.last().map(|(id, _)| *id)).flatten();
    Ok(render(&IdentitiesPage {
        nav: nav(&app, &caller),
        here: "identities",
        message: q.message,
        query_encoded: url_encode(&query),
        query,
        selected_encoded: url_encode(selected.as_deref().unwrap_or_default()),
        selected,
        entity_types,
        found: found.into_iter().map(|(_, record)| record).collect(),
        next_after,
        page: DIRECTORY_PAGE,
    }))
}

/// The request form of one resource type, filled with what the identity should have now.
struct SlotForm {
    resource_type: String,
    /// The assignment's version; none when there is none (the request creates it).
    version: Option<i64>,
    attributes: String,
    entitlements: String,
    valid_until: String,
    open: bool,
}

/// One desired-state change as the page shows it.
struct ChangeRow {
    at: String,
    actor: String,
    request: Option<String>,
    what: String,
    before: String,
    after: String,
}

/// A stored row of desired state (identity or assignment) in words.
fn describe(value: &Option<serde_json::Value>) -> String {
    let Some(serde_json::Value::Object(map)) = value else { return String::new() };
    let mut parts = Vec::new();
    if let Some(name) = map.get("display_name").and_then(|v| v.as_str()) {
        parts.push(format!("name {name}"));
    }
    if let Some(serde_json::Value::Object(attributes)) = map.get("attributes") {
        for (k, v) in attributes {
            parts.push(format!("{k} = {}", v.as_str().unwrap_or_default()));
        }
    }
    if let Some(serde_json::Value::Array(entitlements)) = map.get("entitlements") {
        for e in entitlements {
            parts.push(format!("+{}", e.as_str().unwrap_or_default()));
        }
    }
    for bound in ["valid_from", "valid_until"] {
        if let Some(t) = map.get(bound).and_then(|v| v.as_str()) {
            parts.push(format!("{} {t}", bound.replace('_', " ")));
        }
    }
    parts.join(", ")
}

#[derive(Template)]
#[template(path = "identity.html")]
struct IdentityPage<'a> {
    nav: Nav,
    here: &'static str,
    message: Option<String>,
    view: IdentityView,
    histories: HashMap<i64, Vec<HistoryEntry>>,
    empty: &'a Vec<HistoryEntry>,
    /// Request forms, one per resource type (none without `ManageDesiredState`).
    forms: Vec<SlotForm>,
    changes: Vec<ChangeRow>,
    /// Something is under way: the page follows it.
    live: bool,
}

/// Whether a slot is under way: its latest order not yet in a final state, or its desired
/// state changed after its latest order was made (the next compute makes one).
fn under_way(slot: &crate::store::IdentitySlot, history: &[crate::store::DesiredRecord]) -> bool {
    let order = slot.orders.first();
    let moving = [
        ProvisioningState::Pending,
        ProvisioningState::Transmitted,
        ProvisioningState::AwaitingApproval,
        ProvisioningState::Executed,
    ];
    if order.is_some_and(|o| moving.contains(&o.state)) {
        return true;
    }
    let changed = history.iter().find(|h| h.resource_type.as_deref() == Some(slot.resource_type.as_str()));
    changed.is_some_and(|c| order.is_none_or(|o| c.at > o.created_at))
}

async fn identity(
    State(app): State<AppState>,
    PageCaller(caller): PageCaller,
    Path((entity_type, key)): Path<(String, String)>,
    Query(q): Query<MessageQuery>,
) -> Result<Html<String>, PageError> {
    super::desired::may_see(&caller, &entity_type)?;
    let manage = caller.may_act(Action::ManageDesiredState, &entity_type);
    let (view, histories, versions) = app
        .read(move |store| {
            let view = store.identity_view(&entity_type, &key)?;
            let mut histories = HashMap::new();
            for order in view.slots.iter().flat_map(|s| &s.orders) {
                histories.insert(order.id, store.history(order.id)?);
            }
            let versions: HashMap<String, i64> = store
                .assignments_of(&entity_type, &key)?
                .into_iter()
                .map(|a| (a.assignment.resource_type, a.version))
                .collect();
            Ok((view, histories, versions))
        })
        .await?;
    let forms = if manage {
        view.slots
            .iter()
            .map(|slot| {
                let desired = slot.desired.as_ref();
                SlotForm {
                    resource_type: slot.resource_type.clone(),
                    version: versions.get(&slot.resource_type).copied(),
                    attributes: desired
                        .map(|a| a.content.attributes.iter().map(|(k, v)| format!("{k} = {v}\n")).collect())
                        .unwrap_or_default(),
                    entitlements: desired
                        .map(|a| a.content.entitlements.iter().cloned().collect::<Vec<_>>().join(" "))
                        .unwrap_or_default(),
                    valid_until: desired.and_then(|a| a.valid_until).map(crate::model::format_time).unwrap_or_default(),
                    open: false,
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    let changes = view
        .history
        .iter()
        .map(|h| ChangeRow {
            at: crate::model::format_time(h.at),
            actor: h.actor.clone(),
            request: h.request.clone(),
            what: match &h.resource_type {
                Some(rt) => format!("{rt} {}", h.action),
                None => format!("the identity {}", h.action),
            },
            before: describe(&h.before),
            after: describe(&h.after),
        })
        .collect();
    let live = view.slots.iter().any(|slot| under_way(slot, &view.history));
    let empty = Vec::new();
    Ok(render(&IdentityPage {
        nav: nav(&app, &caller),
        here: "identities",
        message: q.message,
        view,
        histories,
        empty: &empty,
        forms,
        changes,
        live,
    }))
}

#[derive(Deserialize)]
struct RequestForm {
    csrf: String,
    resource_type: String,
    /// `set` or `withdraw`.
    action: String,
    /// The assignment's version the form was filled from; empty: there was none.
    #[serde(default)]
    version: String,
    /// One `name = value` per line.
    #[serde(default)]
    attributes: String,
    /// Separated by spaces or commas.
    #[serde(default)]
    entitlements: String,
    #[serde(default)]
    valid_until: String,
}

/// The change a request form asks for, or what is wrong with it, in the user's words.
fn requested(key: &str, form: &RequestForm) -> Result<crate::store::DesiredChange, String> {
    use crate::store::{Assignment, DesiredChange, Expect};
    let expect = match form.version.trim() {
        "" => Expect::Absent,
        v => Expect::Version(
            v.parse().map_err(|_| format!("the form's version `{v}` is not a number: reload the page"))?,
        ),
    };
    match form.action.as_str() {
        "withdraw" => Ok(DesiredChange::WithdrawAssignment {
            identity: key.to_string(),
            resource_type: form.resource_type.clone(),
            expect,
        }),
        "set" => {
            let mut attributes = std::collections::BTreeMap::new();
            for (i, line) in form.attributes.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let Some((name, value)) = line.split_once('=') else {
                    return Err(format!("attributes, line {}: `{line}` is not `name = value`", i + 1));
                };
                let name = name.trim();
                if name.is_empty() {
                    return Err(format!("attributes, line {}: the name is missing", i + 1));
                }
                attributes.insert(name.to_string(), value.trim().to_string());
            }
            let entitlements = form
                .entitlements
                .split(|c: char| c.is_whitespace() || c == ',')
                .filter(|e| !e.is_empty())
                .map(str::to_string)
                .collect();
            let valid_until = match form.valid_until.trim() {
                "" => None,
                text => Some(crate::app::history::parse_time(text).map_err(|e| format!("valid until: {e}"))?),
            };
            Ok(DesiredChange::SetAssignment(
                Assignment {
                    identity: key.to_string(),
                    resource_type: form.resource_type.clone(),
                    content: crate::model::ResourceContent { attributes, entitlements },
                    valid_from: None,
                    valid_until,
                },
                expect,
            ))
        }
        other => Err(format!("unknown action `{other}`: set or withdraw")),
    }
}

/// "Request a change" on an identity's page: the change is recorded with the requester (the
/// same function as the API's), then a compute starts right away when `serve.compute_on_request`
/// (the default) so the review rule decides at once; otherwise the next scheduled run does.
async fn request_change(
    State(app): State<AppState>,
    PageCaller(caller): PageCaller,
    Path((entity_type, key)): Path<(String, String)>,
    Form(form): Form<RequestForm>,
) -> Result<Response, PageError> {
    csrf(&caller, &form.csrf)?;
    let page = format!("/identities/{}/{}", url_encode(&entity_type), url_encode(&key));
    super::desired::same_entity_type(&app, &entity_type, &form.resource_type)?;
    let change = match requested(&key, &form) {
        Ok(change) => change,
        Err(problem) => return Ok(back(&page, &problem).into_response()),
    };
    let who = caller.principal();
    let request = crate::app::desired::DesiredRequest { changes: vec![change], ..Default::default() };
    let result = app.write(move |host| Ok(crate::app::desired::change(host, &who, request)?)).await;
    let what = if form.action == "withdraw" { "withdrawal" } else { "request" };
    let message = match result {
        Ok(applied) if applied.unchanged > 0 => {
            format!("{} is already as requested: nothing changed.", form.resource_type)
        }
        Ok(_) if !app.config().serve.compute_on_request => {
            format!("Your {what} of {} is recorded; the next scheduled run computes its order.", form.resource_type)
        }
        Ok(_) => match app.start_run(super::v1::Step::Compute).await {
            Ok(started) => {
                let run = started.run;
                super::log_run(started, &format!("started by {}'s request on {page}", caller.user.login));
                format!(
                    "Your {what} of {} is recorded; compute run {run} makes its order, whose states show below as they come.",
                    form.resource_type
                )
            }
            Err(error) if error.code == super::error::JOB_RUNNING => format!(
                "Your {what} of {} is recorded; a run is going, so the next one computes its order.",
                form.resource_type
            ),
            Err(error) => return Err(error.into()),
        },
        Err(error) if error.code == "stale" => format!(
            "Someone changed {} of {key} since this page was shown: nothing was changed. Here it is as it is now; request again.",
            form.resource_type
        ),
        Err(error) if error.status.is_client_error() => error.message,
        Err(error) => return Err(error.into()),
    };
    Ok(back(&page, &message).into_response())
}

struct RunRow {
    run: JobRun,
    counters: String,
    holds: Vec<Hold>,
    /// For a running run: its steps as they stand.
    steps: Vec<StepRow>,
    no_worker: bool,
}

struct StepRow {
    step: String,
    units: u64,
    done: u64,
    claimed: u64,
    counters: String,
}

/// Counters by name, the non-zero ones, in words.
fn counters_text(counters: &serde_json::Map<String, serde_json::Value>) -> String {
    counters
        .iter()
        .filter(|(_, v)| v.as_u64().is_some_and(|n| n > 0))
        .map(|(k, v)| format!("{} {v}", k.replace('_', " ")))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    nav: Nav,
    here: &'static str,
    message: Option<String>,
    operate: bool,
    simulation: Option<Simulation>,
    runs: Vec<RunRow>,
    /// A run is going: the page reloads itself every few seconds to follow it.
    refresh: bool,
}

async fn jobs(
    app: &AppState,
    caller: &Caller,
    message: Option<String>,
    simulation: Option<Simulation>,
) -> Result<Html<String>, PageError> {
    caller.require(Capability::View)?;
    let (runs, holds, live) = app
        .read(|store| {
            let runs = store.job_runs(50)?;
            let live = runs
                .iter()
                .filter(|run| run.status == "running")
                .map(|run| crate::jobs::progress(store, run.id))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((runs, store.holds(None)?, live))
        })
        .await?;
    let runs = runs
        .into_iter()
        .map(|run| {
            let progress = live.iter().find(|p| p.run == run.id);
            let steps = progress.map_or_else(Vec::new, |p| {
                p.steps
                    .iter()
                    .map(|s| StepRow {
                        step: s.step.clone(),
                        units: s.units,
                        done: s.done,
                        claimed: s.claimed,
                        counters: serde_json::to_value(&s.counters)
                            .ok()
                            .and_then(|v| v.as_object().map(counters_text))
                            .unwrap_or_default(),
                    })
                    .collect()
            });
            RunRow {
                counters: counters_text(&run.counters),
                holds: holds.iter().filter(|h| h.run == run.id).cloned().collect(),
                no_worker: progress.is_some_and(|p| p.no_worker),
                steps,
                run,
            }
        })
        .collect();
    Ok(render(&JobsPage {
        nav: nav(app, caller),
        here: "jobs",
        message,
        operate: caller.may(Capability::Operate),
        simulation,
        refresh: !live.is_empty(),
        runs,
    }))
}

async fn jobs_page(
    State(app): State<AppState>,
    PageCaller(caller): PageCaller,
    Query(q): Query<MessageQuery>,
) -> Result<Html<String>, PageError> {
    jobs(&app, &caller, q.message, None).await
}

#[derive(Deserialize)]
struct RunForm {
    csrf: String,
    #[serde(default)]
    dry_run: bool,
}

async fn run_job(
    State(app): State<AppState>,
    PageCaller(caller): PageCaller,
    Form(form): Form<RunForm>,
) -> Result<Response, PageError> {
    csrf(&caller, &form.csrf)?;
    caller.require(Capability::Operate)?;
    if form.dry_run {
        let simulation = super::v1::simulate(&app).await?;
        return Ok(jobs(&app, &caller, Some("Dry run done: nothing was written.".into()), Some(simulation))
            .await?
            .into_response());
    }
    // Started, not waited for: the list below shows it running, then how it ended.
    let started = app.start_run(Default::default()).await.map(|started| {
        let message = format!("Run {} started; reload to follow it.", started.run);
        super::log_run(started, &format!("started by {} on the Jobs page", caller.user.login));
        message
    });
    on_jobs_page(started)
}

/// Back to the Jobs page saying what a job action did, or that a run is going (here, or
/// another process's), which refused it; other errors are an error page.
fn on_jobs_page(result: Result<String, ApiError>) -> Result<Response, PageError> {
    match result {
        Ok(message) => Ok(back("/jobs", &message).into_response()),
        Err(error) if error.code == super::error::JOB_RUNNING => Ok(back("/jobs", &error.message).into_response()),
        Err(error) => Err(error.into()),
    }
}

async fn decide_run(
    State(app): State<AppState>,
    PageCaller(caller): PageCaller,
    Path((run, decision)): Path<(i64, String)>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    csrf(&caller, &form.csrf)?;
    caller.require(Capability::Operate)?;
    let actor = format!("user:{}", caller.user.login);
    let message = app
        .write(move |host| match decision.as_str() {
            "resume" => Ok(format!("Run {run} resumed: {} orders released", crate::jobs::resume(host, run, &actor)?)),
            "cancel" => Ok(format!("Run {run} cancelled: {} orders closed", crate::jobs::cancel(host, run, &actor)?)),
            other => Err(ApiError::not_found(format!("no decision `{other}`"))),
        })
        .await;
    on_jobs_page(message)
}

struct PluginRow {
    name: String,
    worlds: String,
    wit: &'static str,
    /// The plugin's own name and version, from `describe`.
    is: String,
    sha256: String,
    size: String,
    health: String,
    disabled: bool,
    calls: u64,
    failures: u64,
    average: String,
    /// The last reload refused, with why: the loaded version keeps running.
    refused: Option<String>,
}

#[derive(Template)]
#[template(path = "plugins.html")]
struct PluginsPage {
    nav: Nav,
    here: &'static str,
    message: Option<String>,
    operate: bool,
    plugins: Vec<PluginRow>,
}

async fn plugins_page(
    State(app): State<AppState>,
    PageCaller(caller): PageCaller,
    Query(q): Query<MessageQuery>,
) -> Result<Html<String>, PageError> {
    caller.require(Capability::View)?;
    // Health as last saved and the shared plugin table: the page never waits for a job.
    let health = app.read(|store| Ok(store.health()?)).await?;
    let plugins: Vec<PluginRow> = app
        .plugins()
        .values()
        .iter()
        .map(|p| {
            let health = health.get(&p.name).cloned().unwrap_or_default();
            let stats = p.stats();
            PluginRow {
                name: p.name.clone(),
                worlds: p.worlds().iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                wit: p.wit_version(),
                is: p.description().map_or_else(String::new, |d| format!("{} {}", d.name, d.version)),
                sha256: p.sha256[..16].to_string(),
                size: format!("{} KiB", p.size / 1024),
                disabled: health.disabled_at.is_some(),
                health: match health.disabled_at {
                    Some(at) => format!(
                        "disabled since {} ({} failures in a row)",
                        crate::model::format_time(at),
                        health.consecutive_failures
                    ),
                    None if health.consecutive_failures > 0 => {
                        format!("{} failures in a row", health.consecutive_failures)
                    }
                    None => "healthy".into(),
                },
                calls: health.calls,
                failures: health.failures,
                average: if stats.calls > 0 {
                    format!("{:.1} ms", stats.call_time.as_secs_f64() * 1000.0 / stats.calls as f64)
                } else {
                    "–".into()
                },
                refused: app
                    .plugins()
                    .refused(&p.name)
                    .map(|(at, why)| format!("new file refused at {}: {why}", crate::model::format_time(at))),
            }
        })
        .collect();
    Ok(render(&PluginsPage {
        nav: nav(&app, &caller),
        here: "plugins",
        message: q.message,
        operate: caller.may(Capability::Operate),
        plugins,
    }))
}

async fn reload_plugin(
    State(app): State<AppState>,
    PageCaller(caller): PageCaller,
    Path(name): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    csrf(&caller, &form.csrf)?;
    caller.require(Capability::Operate)?;
    if !app.plugins().contains_key(&name) {
        return Err(PageError(ApiError::not_found(format!("there is no plugin `{name}`"))));
    }
    let message = match super::reload_plugin(&app, name.clone()).await? {
        Ok(crate::host::Reloaded::Swapped { to, .. }) => format!("Plugin {name} reloaded: now {}", &to[..16]),
        Ok(crate::host::Reloaded::Unchanged) => format!("Plugin {name}: its file holds the loaded component"),
        Err(why) => format!("Plugin {name}: the new file was refused, the loaded version keeps running: {why}"),
    };
    Ok(back("/plugins", &message).into_response())
}

async fn enable_plugin(
    State(app): State<AppState>,
    PageCaller(caller): PageCaller,
    Path(name): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    csrf(&caller, &form.csrf)?;
    caller.require(Capability::Operate)?;
    let shown = name.clone();
    app.write(move |host| Ok(host.enable(&name)?)).await?;
    Ok(back("/plugins", &format!("Plugin {shown} enabled")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_shows_bidi_and_control_characters_from_data_escaped() {
        let page = ErrorPage {
            message: None,
            status: "409".into(),
            error: "order of <b>mallory\u{202e}exe.txt\u{2066}\x1b[2J</b>\nnext".into(),
        };
        let html = page.render().unwrap();
        for raw in ['\u{202e}', '\u{2066}', '\x1b'] {
            assert!(!html.contains(raw), "U+{:04X} raw in the page:\n{html}", raw as u32);
        }
        assert!(html.contains(r"&#60;b&#62;mallory\u{202e}exe.txt\u{2066}\u{1b}[2J&#60;/b&#62;"), "{html}");
        // A line break is markup's whitespace, not a threat: kept.
        assert!(html.contains("&#60;/b&#62;\nnext"), "{html}");
    }
}
