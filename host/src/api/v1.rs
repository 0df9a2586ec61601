//! The JSON API, `/api/v1`: every CLI action, authorised by the caller's permissions. Errors are
//! `{"error": {"code", "message", "missing_permission"?}}` with 400, 401, 403, 404, 409 or 500.

use std::collections::BTreeMap;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use indicatif::ProgressBar;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::ErrorBody;
use super::{ApiError, AppState, Caller};
use crate::app::{RetrySelection, WorkAction};
use crate::host::Host;
use crate::model::ProvisioningState;
use crate::operators::{ListFn, Paging, TotalsFn, WorkItem};
use crate::permissions::Capability;
use crate::store::OrderFilter;

/// A JSON body whose problems are 400s naming what is wrong.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|media| {
                let media = media.trim();
                media.eq_ignore_ascii_case("application/json")
                    || (media.starts_with("application/") && media.to_ascii_lowercase().ends_with("+json"))
            });
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "the body must be JSON, sent with Content-Type: application/json",
            ));
        }
        let bytes = bytes::Bytes::from_request(request, state)
            .await
            .map_err(|rejection| ApiError::bad_request(format!("the request body: {}", rejection.body_text())))?;
        // Every body is an object; serde would also read a struct from a list of its fields.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::bad_request("the request body: expected a JSON object ({...})"));
        }
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
            let at = error.path().to_string();
            let message = super::error::plain(&error.into_inner().to_string());
            if at == "." {
                ApiError::bad_request(format!("the request body: {message}"))
            } else {
                ApiError::bad_request(format!("`{at}`: {message}"))
            }
        })?;
        deserializer
            .end()
            .map_err(|e| ApiError::bad_request(format!("the request body: {}", super::error::plain(&e.to_string()))))?;
        Ok(Body(value))
    }
}

/// Path parameters whose problems are 400s.
pub struct PathOf<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathOf<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(PathOf(value)),
            Err(rejection) => {
                Err(ApiError::bad_request(format!("the path: {}", super::error::plain(&rejection.body_text()))))
            }
        }
    }
}

/// Query parameters whose problems are 400s.
pub struct QueryOf<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryOf<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(QueryOf(value)),
            Err(rejection) => {
                Err(ApiError::bad_request(format!("the query: {}", super::error::plain(&rejection.body_text()))))
            }
        }
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(super::openapi::serve))
        .route("/me", get(me))
        .route("/orders", get(orders))
        .route("/orders/retry", post(retry))
        .route("/orders/{id}", get(order))
        .route("/reviews", get(reviews))
        .route("/reviews/{decision}", post(review))
        .route("/manual", get(manual))
        .route("/manual/confirm", post(confirm))
        .route("/manual/report-error", post(report_error))
        .route("/jobs", get(jobs))
        .route("/jobs/run", post(run_job))
        .route("/jobs/{run}", get(job))
        .route("/jobs/{run}/resume", post(resume))
        .route("/jobs/{run}/cancel", post(cancel))
        .route("/plugins", get(plugins))
        .route("/plugins/{name}/enable", post(enable))
        .route("/plugins/{name}/reload", post(reload))
        .route("/notifications", get(notifications))
        .route("/identities", get(super::desired::search))
        .route(
            "/identities/{entity_type}/{key}",
            get(super::desired::identity).put(super::desired::put_identity).delete(super::desired::remove_identity),
        )
        .route("/identities/{entity_type}/{key}/history", get(super::desired::history))
        .route("/identities/{entity_type}/{key}/assignments", get(super::desired::assignments))
        .route(
            "/identities/{entity_type}/{key}/assignments/{resource_type}",
            get(super::desired::assignment)
                .put(super::desired::put_assignment)
                .delete(super::desired::withdraw_assignment),
        )
        .route("/desired", post(super::desired::bulk))
        .route("/history", get(super::export::history))
        .fallback(|| async { ApiError::not_found("no such endpoint (see the README's API section)") })
        .method_not_allowed_fallback(|request: Request| async move {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                format!("{} is not allowed on {}", request.method(), request.uri().path()),
            )
        })
}

#[utoipa::path(get, path = "/api/v1/me", tag = "people",
    responses((status = 200, body = MeAnswer), (status = 401, body = ErrorBody)))]
async fn me(caller: Caller) -> Json<MeAnswer> {
    Json(MeAnswer {
        login: caller.user.login,
        display_name: caller.user.display_name,
        profiles: caller.user.profiles,
        permissions: caller.user.permissions,
    })
}

fn list(text: &Option<String>) -> Vec<String> {
    text.iter().flat_map(|t| t.split(',')).map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct OrdersQuery {
    /// Comma-separated states, numbers or names.
    state: Option<String>,
    /// Comma-separated resource types.
    resource_type: Option<String>,
    owner: Option<String>,
    /// Page after this order id.
    after: Option<i64>,
    /// At most this many (default 100, at most 1000).
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/orders", tag = "orders", params(OrdersQuery),
    responses((status = 200, body = OrdersPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn orders(
    app: axum::extract::State<AppState>,
    caller: Caller,
    QueryOf(q): QueryOf<OrdersQuery>,
) -> Result<Json<OrdersPage>, ApiError> {
    caller.require(Capability::View)?;
    let states = list(&q.state)
        .iter()
        .map(|s| s.parse::<ProvisioningState>().map_err(|e| ApiError::bad_request(format!("state: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let limit = page_limit(q.limit)?;
    let filter = OrderFilter {
        states,
        resource_types: list(&q.resource_type),
        owner: q.owner,
        after: q.after,
        limit: Some(limit),
        ..OrderFilter::default()
    };
    let orders = app.read(move |store| Ok(store.orders(&filter)?)).await?;
    let next_after = (orders.len() == limit).then(|| orders.last().map(|o| o.id)).flatten();
    Ok(Json(OrdersPage { orders, next_after }))
}

#[utoipa::path(get, path = "/api/v1/orders/{id}", tag = "orders", params(("id" = i64, Path, description = "The order")),
    responses((status = 200, body = OrderAnswer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn order(
    app: axum::extract::State<AppState>,
    caller: Caller,
    PathOf(id): PathOf<i64>,
) -> Result<Json<OrderAnswer>, ApiError> {
    caller.require(Capability::View)?;
    let (order, history, attempts) =
        app.read(move |store| Ok((store.order(id)?, store.history(id)?, store.attempts(id)?))).await?;
    Ok(Json(OrderAnswer { order, history, attempts }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RetryBody {
    /// Order ids; or:
    orders: Option<Vec<i64>>,
    /// `errored` (the only state that can be retried), with:
    #[schema(value_type = Option<String>)]
    state: Option<ProvisioningState>,
    resource_types: Option<Vec<String>>,
}

#[utoipa::path(post, path = "/api/v1/orders/retry", tag = "orders",
    request_body = RetryBody,
    responses((status = 200, body = OrdersChanged), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
async fn retry(
    app: axum::extract::State<AppState>,
    caller: Caller,
    Body(body): Body<RetryBody>,
) -> Result<Json<OrdersChanged>, ApiError> {
    let selection = match (body.orders, body.state) {
        (Some(ids), None) => RetrySelection::Orders(ids),
        (None, Some(ProvisioningState::Errored)) => {
            RetrySelection::Errored { resource_types: body.resource_types.unwrap_or_default() }
        }
        (None, Some(other)) => {
            return Err(ApiError::bad_request(format!("only Errored orders can be retried, not {other}")));
        }
        _ => return Err(ApiError::bad_request("give either `orders` or `state` (with `resource_types`, or all)")),
    };
    let who = caller.principal();
    let retried = app.write(move |host| Ok(crate::app::retry(host, &who, selection)?)).await?;
    Ok(Json(OrdersChanged { orders: retried }))
}

/// A page size from a query: 100 unless given, from 1 to 1000.
pub(super) fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be from 1 to 1000"));
    }
    Ok(limit)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct WorkQuery {
    entity_type: Option<String>,
    /// Page after this order id.
    after: Option<i64>,
    /// At most this many (default 100, at most 1000).
    limit: Option<usize>,
}

/// A page of a work list, with the totals per entity type and where the next page starts.
async fn work_page(
    app: &AppState,
    login: String,
    q: WorkQuery,
    list: ListFn,
    totals: TotalsFn,
) -> Result<(Vec<WorkItem>, BTreeMap<String, u64>, Option<i64>), ApiError> {
    let limit = page_limit(q.limit)?;
    let paging = Paging { after: q.after, limit: Some(limit) };
    let (items, totals) = app
        .read(move |store| {
            let items = list(store, &login, q.entity_type.as_deref(), paging)?;
            let mut totals = totals(store, &login)?;
            if let Some(entity_type) = &q.entity_type {
                totals.retain(|t, _| t == entity_type);
            }
            Ok((items, totals))
        })
        .await?;
    let next_after = (items.len() == limit).then(|| items.last().map(|i| i.order.id)).flatten();
    Ok((items, totals, next_after))
}

#[utoipa::path(get, path = "/api/v1/reviews", tag = "review", params(WorkQuery),
    responses((status = 200, body = ReviewsPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn reviews(
    app: axum::extract::State<AppState>,
    caller: Caller,
    QueryOf(q): QueryOf<WorkQuery>,
) -> Result<Json<ReviewsPage>, ApiError> {
    let (items, totals, next_after) =
        work_page(&app, caller.user.login, q, crate::review::list, crate::review::totals).await?;
    Ok(Json(ReviewsPage { reviews: items, totals, next_after }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DecideBody {
    orders: Vec<i64>,
    comment: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/reviews/{decision}", tag = "review", params(("decision" = String, Path, description = "approve, decline or postpone")),
    request_body = DecideBody,
    responses((status = 200, body = OrdersChanged), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
async fn review(
    app: axum::extract::State<AppState>,
    caller: Caller,
    PathOf(decision): PathOf<String>,
    Body(body): Body<DecideBody>,
) -> Result<Json<OrdersChanged>, ApiError> {
    let action = WorkAction::named(&decision, WorkAction::REVIEW).map_err(|e| ApiError::not_found(e.to_string()))?;
    let who = caller.principal();
    let orders =
        app.act(move |host| Ok(crate::app::act(host, &who, &body.orders, action, body.comment.as_deref())?)).await?;
    Ok(Json(OrdersChanged { orders }))
}

#[utoipa::path(get, path = "/api/v1/manual", tag = "manual provisioning", params(WorkQuery),
    responses((status = 200, body = ManualPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn manual(
    app: axum::extract::State<AppState>,
    caller: Caller,
    QueryOf(q): QueryOf<WorkQuery>,
) -> Result<Json<ManualPage>, ApiError> {
    let (items, totals, next_after) =
        work_page(&app, caller.user.login, q, crate::manual::list, crate::manual::totals).await?;
    Ok(Json(ManualPage { manual: items, totals, next_after }))
}

#[utoipa::path(post, path = "/api/v1/manual/confirm", tag = "manual provisioning",
    request_body = DecideBody,
    responses((status = 200, body = OrdersChanged), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
async fn confirm(
    app: axum::extract::State<AppState>,
    caller: Caller,
    Body(body): Body<DecideBody>,
) -> Result<Json<OrdersChanged>, ApiError> {
    let who = caller.principal();
    let orders = app
        .act(move |host| Ok(crate::app::act(host, &who, &body.orders, WorkAction::Confirm, body.comment.as_deref())?))
        .await?;
    Ok(Json(OrdersChanged { orders }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ReportBody {
    orders: Vec<i64>,
    message: String,
}

#[utoipa::path(post, path = "/api/v1/manual/report-error", tag = "manual provisioning",
    request_body = ReportBody,
    responses((status = 200, body = OrdersChanged), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
async fn report_error(
    app: axum::extract::State<AppState>,
    caller: Caller,
    Body(body): Body<ReportBody>,
) -> Result<Json<OrdersChanged>, ApiError> {
    let who = caller.principal();
    let orders = app
        .act(move |host| Ok(crate::app::act(host, &who, &body.orders, WorkAction::ReportError, Some(&body.message))?))
        .await?;
    Ok(Json(OrdersChanged { orders }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct LimitQuery {
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(LimitQuery),
    responses((status = 200, body = JobsAnswer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn jobs(
    app: axum::extract::State<AppState>,
    caller: Caller,
    QueryOf(q): QueryOf<LimitQuery>,
) -> Result<Json<JobsAnswer>, ApiError> {
    caller.require(Capability::View)?;
    let limit = q.limit.unwrap_or(20).clamp(1, 1000);
    let (runs, holds) = app.read(move |store| Ok((store.job_runs(limit)?, store.holds(None)?))).await?;
    let runs = runs
        .into_iter()
        .map(|run| {
            let held = holds.iter().filter(|h| h.run == run.id).cloned().collect();
            RunWithHolds { run, holds: held }
        })
        .collect();
    Ok(Json(JobsAnswer { runs }))
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum Step {
    #[default]
    Complete,
    Synchronise,
    Compute,
    Fulfil,
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RunBody {
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    only: Step,
}

/// Simulates the next run (on a read-only database, beside the server's host).
pub(super) async fn simulate(app: &AppState) -> Result<crate::jobs::Simulation, ApiError> {
    let config = app.config().clone();
    tokio::task::spawn_blocking(move || {
        let mut host = Host::open_for_simulation(config).map_err(ApiError::internal)?;
        Ok(crate::jobs::simulate(&mut host, &ProgressBar::hidden())?)
    })
    .await
    .map_err(ApiError::internal)?
}

/// Starts the complete job, or one step of it: `202 Accepted` with the run and where to follow
/// it (`Location`) as soon as the run is recorded; the run goes on on the job host. A dry run is
/// a simulation, answered when done.
#[utoipa::path(post, path = "/api/v1/jobs/run", tag = "jobs",
    request_body = RunBody,
    responses((status = 202, body = RunStarted, headers(("Location" = String, description = "the run"))), (status = 200, description = "a dry run: the simulation", body = SimulationAnswer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn run_job(
    app: axum::extract::State<AppState>,
    caller: Caller,
    Body(body): Body<RunBody>,
) -> Result<Response, ApiError> {
    caller.require(Capability::Operate)?;
    if body.dry_run {
        return Ok(Json(SimulationAnswer { simulation: simulate(&app).await? }).into_response());
    }
    let started = app.start_run(body.only).await?;
    let (run, href) = (started.run, format!("/api/v1/jobs/{}", started.run));
    super::log_run(started, &format!("started by {}", caller.user.login));
    let location = HeaderValue::from_str(&href).map_err(ApiError::internal)?;
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(RunStarted { run, href })).into_response())
}

/// One run: its row (status, counters once it ended, message), its holds, and its live
/// progress: per step of its plan the units planned, done and at work and the counters the done
/// units recorded; `no_worker` when it is running but nobody holds any of its units.
#[utoipa::path(get, path = "/api/v1/jobs/{run}", tag = "jobs", params(("run" = i64, Path, description = "The run")),
    responses((status = 200, body = JobAnswer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn job(
    app: axum::extract::State<AppState>,
    caller: Caller,
    PathOf(run): PathOf<i64>,
) -> Result<Json<JobAnswer>, ApiError> {
    caller.require(Capability::View)?;
    let (run, holds, progress) = app
        .read(move |store| Ok((store.job_run(run)?, store.holds(Some(run))?, crate::jobs::progress(store, run)?)))
        .await?;
    Ok(Json(JobAnswer { run, holds, progress }))
}

#[utoipa::path(post, path = "/api/v1/jobs/{run}/resume", tag = "jobs", params(("run" = i64, Path, description = "The run")),
    responses((status = 200, body = HoldDecided), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn resume(
    app: axum::extract::State<AppState>,
    caller: Caller,
    PathOf(run): PathOf<i64>,
) -> Result<Json<HoldDecided>, ApiError> {
    caller.require(Capability::Operate)?;
    let actor = format!("user:{}", caller.user.login);
    let released = app.write(move |host| Ok(crate::jobs::resume(host, run, &actor)?)).await?;
    Ok(Json(HoldDecided { run, released: Some(released), cancelled: None }))
}

#[utoipa::path(post, path = "/api/v1/jobs/{run}/cancel", tag = "jobs", params(("run" = i64, Path, description = "The run")),
    responses((status = 200, body = HoldDecided), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn cancel(
    app: axum::extract::State<AppState>,
    caller: Caller,
    PathOf(run): PathOf<i64>,
) -> Result<Json<HoldDecided>, ApiError> {
    caller.require(Capability::Operate)?;
    let actor = format!("user:{}", caller.user.login);
    let cancelled = app.write(move |host| Ok(crate::jobs::cancel(host, run, &actor)?)).await?;
    Ok(Json(HoldDecided { run, released: None, cancelled: Some(cancelled) }))
}

/// Every loaded plugin with its health, call statistics and last refused reload. Read beside a
/// running job: health as last saved, plugins from the shared table.
pub(super) async fn plugin_list(app: &AppState) -> Result<Vec<Value>, ApiError> {
    let health = app.read(|store| Ok(store.health()?)).await?;
    app.plugins()
        .values()
        .iter()
        .map(|p| {
            let view = crate::app::PluginView::of(
                p,
                health.get(&p.name).cloned().unwrap_or_default(),
                true,
                app.plugins().refused(&p.name),
            );
            serde_json::to_value(view).map_err(ApiError::internal)
        })
        .collect()
}

#[utoipa::path(post, path = "/api/v1/plugins/{name}/reload", tag = "plugins", params(("name" = String, Path, description = "The plugin")),
    responses((status = 200, body = Reloaded), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn reload(
    app: axum::extract::State<AppState>,
    caller: Caller,
    PathOf(name): PathOf<String>,
) -> Result<Json<Reloaded>, ApiError> {
    caller.require(Capability::Operate)?;
    if !app.plugins().contains_key(&name) {
        return Err(ApiError::not_found(format!("there is no plugin `{name}`")));
    }
    match super::reload_plugin(&app, name.clone()).await? {
        Ok(crate::host::Reloaded::Swapped { from, to }) => {
            Ok(Json(Reloaded { plugin: name, reloaded: true, from: Some(from), to: Some(to) }))
        }
        Ok(crate::host::Reloaded::Unchanged) => {
            Ok(Json(Reloaded { plugin: name, reloaded: false, from: None, to: None }))
        }
        Err(why) => Err(ApiError::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "reload-refused",
            format!("the new component of `{name}` was refused; the loaded version keeps running: {why}"),
        )),
    }
}

#[utoipa::path(get, path = "/api/v1/plugins", tag = "plugins",
    responses((status = 200, body = PluginsAnswer), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn plugins(app: axum::extract::State<AppState>, caller: Caller) -> Result<Json<PluginsAnswer>, ApiError> {
    caller.require(Capability::View)?;
    Ok(Json(PluginsAnswer { plugins: plugin_list(&app).await? }))
}

#[utoipa::path(post, path = "/api/v1/plugins/{name}/enable", tag = "plugins", params(("name" = String, Path, description = "The plugin")),
    responses((status = 200, body = Enabled), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn enable(
    app: axum::extract::State<AppState>,
    caller: Caller,
    PathOf(name): PathOf<String>,
) -> Result<Json<Enabled>, ApiError> {
    caller.require(Capability::Operate)?;
    let enabled = app
        .write(move |host| {
            if !host.plugins.contains_key(&name) {
                return Err(ApiError::not_found(format!("there is no plugin `{name}`")));
            }
            Ok(host.enable(&name)?)
        })
        .await?;
    Ok(Json(Enabled { was_disabled: enabled }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct NotificationsQuery {
    status: Option<String>,
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/v1/notifications", tag = "notifications", params(NotificationsQuery),
    responses((status = 200, body = NotificationsAnswer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn notifications(
    app: axum::extract::State<AppState>,
    caller: Caller,
    QueryOf(q): QueryOf<NotificationsQuery>,
) -> Result<Json<NotificationsAnswer>, ApiError> {
    caller.require(Capability::View)?;
    if let Some(status) = &q.status
        && !["pending", "sent", "failed"].contains(&status.as_str())
    {
        return Err(ApiError::bad_request(format!("status `{status}`: expected pending, sent or failed")));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let list = app.read(move |store| Ok(store.notifications(q.status.as_deref(), Some(limit))?)).await?;
    Ok(Json(NotificationsAnswer { notifications: list }))
}

/// The caller.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct MeAnswer {
    login: String,
    display_name: String,
    profiles: Vec<String>,
    /// Every permission path the profiles give.
    permissions: Vec<String>,
}

/// A page of orders.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct OrdersPage {
    orders: Vec<crate::model::Order>,
    /// Where the next page starts (`after`); none on the last page.
    next_after: Option<i64>,
}

/// One order with its history and fulfilment attempts.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct OrderAnswer {
    order: crate::model::Order,
    history: Vec<crate::model::HistoryEntry>,
    attempts: Vec<crate::store::Attempt>,
}

/// Orders as an action left them.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct OrdersChanged {
    orders: Vec<crate::model::Order>,
}

/// A page of the review list.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct ReviewsPage {
    reviews: Vec<WorkItem>,
    /// Orders awaiting the caller's review, per entity type.
    totals: BTreeMap<String, u64>,
    next_after: Option<i64>,
}

/// A page of the manual provisioning list.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct ManualPage {
    manual: Vec<WorkItem>,
    /// Orders waiting for the caller, per entity type.
    totals: BTreeMap<String, u64>,
    next_after: Option<i64>,
}

/// A run with the holds it placed.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct RunWithHolds {
    run: crate::store::JobRun,
    holds: Vec<crate::store::Hold>,
}

/// The latest runs.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct JobsAnswer {
    runs: Vec<RunWithHolds>,
}

/// A run started (or joined).
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct RunStarted {
    run: i64,
    /// Where to follow it.
    href: String,
}

/// What a dry run found.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct SimulationAnswer {
    simulation: crate::jobs::Simulation,
}

/// One run, its holds and its live progress.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct JobAnswer {
    run: crate::store::JobRun,
    holds: Vec<crate::store::Hold>,
    progress: crate::jobs::RunProgress,
}

/// Orders a held run released (resume) or closed (cancel).
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct HoldDecided {
    run: i64,
    /// Orders a resume released to fulfilment.
    #[serde(skip_serializing_if = "Option::is_none")]
    released: Option<usize>,
    /// Orders a cancel closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    cancelled: Option<usize>,
}

/// What a reload did.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Reloaded {
    plugin: String,
    /// Whether a new component took over (false: the file had not changed).
    reloaded: bool,
    /// The old component's sha256.
    from: Option<String>,
    /// The new one's.
    to: Option<String>,
}

/// The loaded plugins.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct PluginsAnswer {
    #[schema(value_type = Vec<crate::app::PluginView>)]
    plugins: Vec<Value>,
}

/// Whether enabling changed anything.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Enabled {
    was_disabled: bool,
}

/// The outbox.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct NotificationsAnswer {
    notifications: Vec<crate::store::Notification>,
}
