//! Desired state over the API: identities and their assignments one at a time (with `ETag` and
//! `If-Match`), a directory search, each identity's history, and the bulk endpoint feeds use
//! (all or nothing, idempotent under the client's request id, snapshots per resource type).
//! Every write goes through [`crate::app::desired::change`], as `provision import` does.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::ErrorBody;
use super::v1::{Body, PathOf, QueryOf, page_limit};
use super::{ApiError, AppState, Caller};
use crate::app::desired::DesiredRequest;
use crate::model::ResourceContent;
use crate::permissions::Capability;
use crate::store::{
    Applied, Assignment, AssignmentRecord, DesiredChange, DesiredRecord, Expect, Identity, IdentityRecord, IdentityView,
};

/// The precondition a request's headers state: `If-Match: "12"` (that version), `If-Match: *`
/// (it exists), `If-None-Match: *` (it does not: create only).
fn expect(headers: &HeaderMap) -> Result<Expect, ApiError> {
    let text = |name: &header::HeaderName| -> Result<Option<String>, ApiError> {
        headers
            .get(name)
            .map(|v| {
                v.to_str()
                    .map(|s| s.trim().to_string())
                    .map_err(|_| ApiError::bad_request(format!("the {name} header is not text")))
            })
            .transpose()
    };
    let matching = text(&header::IF_MATCH)?;
    let none_matching = text(&header::IF_NONE_MATCH)?;
    match (matching, none_matching) {
        (Some(_), Some(_)) => Err(ApiError::bad_request("give If-Match or If-None-Match, not both")),
        (None, None) => Ok(Expect::Anything),
        (None, Some(value)) if value == "*" => Ok(Expect::Absent),
        (None, Some(value)) => Err(ApiError::bad_request(format!(
            "If-None-Match: `{value}`: only `*` is understood here (create, never overwrite)"
        ))),
        (Some(value), None) if value == "*" => Ok(Expect::Exists),
        (Some(value), None) => value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .and_then(|v| v.parse::<i64>().ok())
            .map(Expect::Version)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "If-Match: `{value}` is not one ETag such as \"12\" (the ETag this API gave), nor `*`"
                ))
            }),
    }
}

fn etag(version: i64) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(&format!("\"{version}\"")).map_err(ApiError::internal)
}

/// Refuses a caller who may not see identities of `entity_type`.
pub(super) fn may_see(caller: &Caller, entity_type: &str) -> Result<(), ApiError> {
    if caller.principal().may_see_identities(entity_type) {
        return Ok(());
    }
    let message = format!(
        "user `{}` may not see {entity_type} identities: that needs {} or /Custom/ProvisioningPolicy/ManageDesiredState/{entity_type} (or a parent of either)",
        caller.user.login,
        Capability::View.path()
    );
    let mut denied = ApiError::new(StatusCode::FORBIDDEN, "forbidden", message);
    denied.missing_permission = Some(Capability::View.path().to_string());
    Err(denied)
}

/// A page of the directory.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct SearchAnswer {
    identities: Vec<IdentityRecord>,
    /// Where the next page starts (`after`); none on the last page.
    next_after: Option<i64>,
}

/// An identity as written, with its new version.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct IdentityWritten {
    identity: Identity,
    /// Its version (also the `ETag`).
    version: i64,
}

/// What removing an identity did.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Removed {
    removed: bool,
    /// Its assignments withdrawn with it.
    assignments_withdrawn: u64,
}

/// An identity's assignments.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct AssignmentList {
    assignments: Vec<AssignmentRecord>,
}

/// One assignment.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct AssignmentAnswer {
    assignment: AssignmentRecord,
}

/// An assignment as written, with its new version.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct AssignmentWritten {
    assignment: Assignment,
    /// Its version (also the `ETag`).
    version: i64,
}

/// What withdrawing did.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct Withdrawn {
    withdrawn: bool,
}

/// A page of an identity's desired-state history.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct HistoryAnswer {
    /// Newest first.
    history: Vec<DesiredRecord>,
    /// Where the next page starts (`before`); none on the last page.
    next_before: Option<i64>,
}

/// What a bulk request did (or, `replayed`, did when first sent).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct BulkAnswer {
    request_id: String,
    applied: Applied,
}

/// Applies one change as its own request; returns what it did.
async fn apply_one(app: &AppState, caller: &Caller, change: DesiredChange) -> Result<Applied, ApiError> {
    let who = caller.principal();
    let request = DesiredRequest { changes: vec![change], ..DesiredRequest::default() };
    app.write(move |host| {
        crate::app::desired::change(host, &who, request).map_err(|error| match error {
            // One change: its place in the request says nothing.
            crate::operators::ActionError::Invalid(message) => {
                ApiError::bad_request(message.strip_prefix("changes[0]: ").unwrap_or(&message).to_string())
            }
            crate::operators::ActionError::Store(crate::store::StoreError::AtChange { source, .. }) => (*source).into(),
            other => other.into(),
        })
    })
    .await
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct SearchQuery {
    /// Text in the key, the name or an attribute's value.
    q: Option<String>,
    /// Only this entity type.
    entity_type: Option<String>,
    /// Page after this cursor (`next_after` of the previous page).
    after: Option<i64>,
    /// At most this many (default 100, at most 1000).
    limit: Option<usize>,
}

/// The directory: identities the caller may see, paged.
#[utoipa::path(get, path = "/api/v1/identities", tag = "desired state", params(SearchQuery),
    responses((status = 200, body = SearchAnswer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub(super) async fn search(
    app: axum::extract::State<AppState>,
    caller: Caller,
    QueryOf(q): QueryOf<SearchQuery>,
) -> Result<Json<SearchAnswer>, ApiError> {
    let limit = page_limit(q.limit)?;
    let types: Vec<String> = match &q.entity_type {
        Some(entity_type) => {
            if !app.config().entity_types.contains_key(entity_type) {
                return Err(ApiError::bad_request(format!(
                    "entity_type: unknown entity type `{entity_type}` (the config defines: {})",
                    app.config().entity_types.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            may_see(&caller, entity_type)?;
            vec![entity_type.clone()]
        }
        None => {
            let seen: Vec<String> = app
                .config()
                .entity_types
                .keys()
                .filter(|t| caller.principal().may_see_identities(t))
                .cloned()
                .collect();
            if seen.is_empty() {
                caller.require(Capability::View)?;
            }
            seen
        }
    };
    let text = q.q.unwrap_or_default();
    crate::limits::check("q", &text, crate::limits::NAME).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let found = app.read(move |store| Ok(store.search_identities(text.trim(), &types, q.after, limit)?)).await?;
    let next_after = (found.len() == limit).then(|| found.last().map(|(id, _)| *id)).flatten();
    let identities: Vec<_> = found.into_iter().map(|(_, record)| record).collect();
    Ok(Json(SearchAnswer { identities, next_after }))
}

/// An identity with its assignments, resources, orders and latest history; `ETag` its version.
#[utoipa::path(get, path = "/api/v1/identities/{entity_type}/{key}", tag = "desired state", params(EntityType, Key),
    responses((status = 200, body = IdentityView, headers(("ETag" = String, description = "its version"))),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn identity(
    app: axum::extract::State<AppState>,
    caller: Caller,
    PathOf((entity_type, key)): PathOf<(String, String)>,
) -> Result<Response, ApiError> {
    may_see(&caller, &entity_type)?;
    let view = app.read(move |store| Ok(store.identity_view(&entity_type, &key)?)).await?;
    Ok(([(header::ETAG, etag(view.version)?)], Json(view)).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct IdentityBody {
    /// The name to show (the key when absent).
    display_name: Option<String>,
    /// Free attributes.
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

/// Creates or replaces an identity: `201` when created, `200` when replaced; `ETag` its version.
#[utoipa::path(put, path = "/api/v1/identities/{entity_type}/{key}", tag = "desired state",
    params(EntityType, Key, IfMatch, IfNoneMatch), request_body = IdentityBody,
    responses((status = 200, body = IdentityWritten), (status = 201, body = IdentityWritten),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 412, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub(super) async fn put_identity(
    app: axum::extract::State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    PathOf((entity_type, key)): PathOf<(String, String)>,
    Body(body): Body<IdentityBody>,
) -> Result<Response, ApiError> {
    let expect = expect(&headers)?;
    let identity = Identity {
        display_name: body.display_name.unwrap_or_else(|| key.clone()),
        entity_type,
        key,
        attributes: body.attributes,
    };
    let change = DesiredChange::PutIdentity(identity.clone(), expect);
    let applied = apply_one(&app, &caller, change).await?;
    let version = applied.versions.first().copied().flatten().unwrap_or_default();
    let status = if applied.identities_created > 0 { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, [(header::ETAG, etag(version)?)], Json(IdentityWritten { identity, version })).into_response())
}

/// Removes an identity: its assignments are withdrawn (the next compute deletes its resources).
#[utoipa::path(delete, path = "/api/v1/identities/{entity_type}/{key}", tag = "desired state",
    params(EntityType, Key, IfMatch),
    responses((status = 200, body = Removed), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)))]
pub(super) async fn remove_identity(
    app: axum::extract::State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    PathOf((entity_type, key)): PathOf<(String, String)>,
) -> Result<Json<Removed>, ApiError> {
    let expect = expect(&headers)?;
    let change = DesiredChange::RemoveIdentity { entity_type: entity_type.clone(), key: key.clone(), expect };
    let applied = apply_one(&app, &caller, change).await?;
    if applied.identities_removed == 0 {
        return Err(ApiError::not_found(format!("there is no {entity_type} `{key}`")));
    }
    Ok(Json(Removed { removed: true, assignments_withdrawn: applied.assignments_withdrawn }))
}

/// An identity's assignments, each with its version.
#[utoipa::path(get, path = "/api/v1/identities/{entity_type}/{key}/assignments", tag = "desired state",
    params(EntityType, Key),
    responses((status = 200, body = AssignmentList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub(super) async fn assignments(
    app: axum::extract::State<AppState>,
    caller: Caller,
    PathOf((entity_type, key)): PathOf<(String, String)>,
) -> Result<Json<AssignmentList>, ApiError> {
    may_see(&caller, &entity_type)?;
    let list = app.read(move |store| Ok(store.assignments_of(&entity_type, &key)?)).await?;
    Ok(Json(AssignmentList { assignments: list }))
}

/// One assignment; `ETag` its version.
#[utoipa::path(get, path = "/api/v1/identities/{entity_type}/{key}/assignments/{resource_type}", tag = "desired state",
    params(EntityType, Key, ResourceType),
    responses((status = 200, body = AssignmentAnswer, headers(("ETag" = String, description = "its version"))),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn assignment(
    app: axum::extract::State<AppState>,
    caller: Caller,
    PathOf((entity_type, key, resource_type)): PathOf<(String, String, String)>,
) -> Result<Response, ApiError> {
    may_see(&caller, &entity_type)?;
    let record = app.read(move |store| Ok(store.assignment(&entity_type, &key, &resource_type)?)).await?;
    Ok(([(header::ETAG, etag(record.version)?)], Json(AssignmentAnswer { assignment: record })).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AssignmentBody {
    /// Desired attributes.
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    /// Desired entitlements.
    #[serde(default)]
    entitlements: BTreeSet<String>,
    /// Start of validity (RFC 3339).
    #[serde(default, with = "crate::model::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    valid_from: Option<i64>,
    /// End of validity (RFC 3339).
    #[serde(default, with = "crate::model::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    valid_until: Option<i64>,
}

/// The resource type must belong to the path's entity type.
pub(super) fn same_entity_type(app: &AppState, entity_type: &str, resource_type: &str) -> Result<(), ApiError> {
    match app.config().resource_types.get(resource_type) {
        Some(rt) if rt.entity_type == entity_type => Ok(()),
        Some(rt) => Err(ApiError::bad_request(format!(
            "resource type {resource_type} belongs to entity type {}, not {entity_type}",
            rt.entity_type
        ))),
        None => Err(ApiError::not_found(format!(
            "unknown resource type `{resource_type}` (the config defines: {})",
            app.config().resource_types.keys().cloned().collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Sets one assignment: `201` when created, `200` when replaced; `ETag` its version.
#[utoipa::path(put, path = "/api/v1/identities/{entity_type}/{key}/assignments/{resource_type}", tag = "desired state",
    params(EntityType, Key, ResourceType, IfMatch, IfNoneMatch), request_body = AssignmentBody,
    responses((status = 200, body = AssignmentWritten), (status = 201, body = AssignmentWritten),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 412, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody)))]
pub(super) async fn put_assignment(
    app: axum::extract::State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    PathOf((entity_type, key, resource_type)): PathOf<(String, String, String)>,
    Body(body): Body<AssignmentBody>,
) -> Result<Response, ApiError> {
    let expect = expect(&headers)?;
    same_entity_type(&app, &entity_type, &resource_type)?;
    let assignment = Assignment {
        identity: key,
        resource_type,
        content: ResourceContent { attributes: body.attributes, entitlements: body.entitlements },
        valid_from: body.valid_from,
        valid_until: body.valid_until,
    };
    let applied = apply_one(&app, &caller, DesiredChange::SetAssignment(assignment.clone(), expect)).await?;
    let version = applied.versions.first().copied().flatten().unwrap_or_default();
    let status = if applied.assignments_created > 0 { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, [(header::ETAG, etag(version)?)], Json(AssignmentWritten { assignment, version })).into_response())
}

/// Withdraws one assignment (the next compute deletes the resource).
#[utoipa::path(delete, path = "/api/v1/identities/{entity_type}/{key}/assignments/{resource_type}", tag = "desired state",
    params(EntityType, Key, ResourceType, IfMatch),
    responses((status = 200, body = Withdrawn), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)))]
pub(super) async fn withdraw_assignment(
    app: axum::extract::State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    PathOf((entity_type, key, resource_type)): PathOf<(String, String, String)>,
) -> Result<Json<Withdrawn>, ApiError> {
    let expect = expect(&headers)?;
    same_entity_type(&app, &entity_type, &resource_type)?;
    let change =
        DesiredChange::WithdrawAssignment { identity: key.clone(), resource_type: resource_type.clone(), expect };
    let applied = apply_one(&app, &caller, change).await?;
    if applied.assignments_withdrawn == 0 {
        return Err(ApiError::not_found(format!("{entity_type} `{key}` has no assignment of {resource_type}")));
    }
    Ok(Json(Withdrawn { withdrawn: true }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct HistoryQuery {
    /// Changes before this one (`next_before` of the previous page).
    before: Option<i64>,
    /// At most this many (default 100, at most 1000).
    limit: Option<usize>,
}

/// An identity's desired-state history, newest first, paged.
#[utoipa::path(get, path = "/api/v1/identities/{entity_type}/{key}/history", tag = "desired state",
    params(EntityType, Key, HistoryQuery),
    responses((status = 200, body = HistoryAnswer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub(super) async fn history(
    app: axum::extract::State<AppState>,
    caller: Caller,
    PathOf((entity_type, key)): PathOf<(String, String)>,
    QueryOf(q): QueryOf<HistoryQuery>,
) -> Result<Json<HistoryAnswer>, ApiError> {
    may_see(&caller, &entity_type)?;
    let limit = page_limit(q.limit)?;
    let list = app.read(move |store| Ok(store.desired_history(&entity_type, &key, q.before, limit)?)).await?;
    let next_before = (list.len() == limit).then(|| list.last().map(|r| r.id)).flatten();
    Ok(Json(HistoryAnswer { history: list, next_before }))
}

/// One change of a bulk request.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub(super) enum BulkChange {
    /// Create or replace an identity.
    PutIdentity {
        entity_type: String,
        key: String,
        display_name: Option<String>,
        #[serde(default)]
        attributes: BTreeMap<String, String>,
        if_version: Option<i64>,
    },
    /// Remove an identity (and withdraw its assignments).
    RemoveIdentity { entity_type: String, key: String, if_version: Option<i64> },
    /// Set an assignment.
    SetAssignment {
        identity: String,
        resource_type: String,
        #[serde(default)]
        attributes: BTreeMap<String, String>,
        #[serde(default)]
        entitlements: BTreeSet<String>,
        #[serde(default, with = "crate::model::rfc3339::option")]
        #[schema(value_type = Option<String>, format = DateTime)]
        valid_from: Option<i64>,
        #[serde(default, with = "crate::model::rfc3339::option")]
        #[schema(value_type = Option<String>, format = DateTime)]
        valid_until: Option<i64>,
        if_version: Option<i64>,
    },
    /// Withdraw an assignment.
    WithdrawAssignment { identity: String, resource_type: String, if_version: Option<i64> },
}

impl BulkChange {
    fn into_change(self) -> DesiredChange {
        let expect = |v: Option<i64>| v.map(Expect::Version).unwrap_or_default();
        match self {
            BulkChange::PutIdentity { entity_type, key, display_name, attributes, if_version } => {
                DesiredChange::PutIdentity(
                    Identity {
                        display_name: display_name.unwrap_or_else(|| key.clone()),
                        entity_type,
                        key,
                        attributes,
                    },
                    expect(if_version),
                )
            }
            BulkChange::RemoveIdentity { entity_type, key, if_version } => {
                DesiredChange::RemoveIdentity { entity_type, key, expect: expect(if_version) }
            }
            BulkChange::SetAssignment {
                identity,
                resource_type,
                attributes,
                entitlements,
                valid_from,
                valid_until,
                if_version,
            } => DesiredChange::SetAssignment(
                Assignment {
                    identity,
                    resource_type,
                    content: ResourceContent { attributes, entitlements },
                    valid_from,
                    valid_until,
                },
                expect(if_version),
            ),
            BulkChange::WithdrawAssignment { identity, resource_type, if_version } => {
                DesiredChange::WithdrawAssignment { identity, resource_type, expect: expect(if_version) }
            }
        }
    }
}

/// A bulk request.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BulkBody {
    /// The client's id for this request: sending it again changes nothing twice.
    request_id: String,
    /// Resource types this request gives completely.
    #[serde(default)]
    snapshot: Vec<String>,
    /// The changes, in order.
    changes: Vec<BulkChange>,
}

/// Many changes at once, all or nothing, idempotent under `request_id`.
#[utoipa::path(post, path = "/api/v1/desired", tag = "desired state", request_body = BulkBody,
    responses((status = 200, body = BulkAnswer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 412, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub(super) async fn bulk(
    app: axum::extract::State<AppState>,
    caller: Caller,
    Body(body): Body<BulkBody>,
) -> Result<Json<BulkAnswer>, ApiError> {
    let request = DesiredRequest {
        changes: body.changes.into_iter().map(BulkChange::into_change).collect(),
        snapshot: body.snapshot,
        request_id: Some(body.request_id.clone()),
    };
    let who = caller.principal();
    let applied = app.write(move |host| Ok(crate::app::desired::change(host, &who, request)?)).await?;
    Ok(Json(BulkAnswer { request_id: body.request_id, applied }))
}

/// Path and header parameters, described once (for the document only: handlers take them
/// from `PathOf` and the headers).
#[allow(dead_code)]
#[derive(utoipa::IntoParams)]
#[into_params(names("entity_type"), parameter_in = Path)]
pub(super) struct EntityType(
    /// The identity's entity type, e.g. `Directory_User`.
    String,
);

#[allow(dead_code)]
#[derive(utoipa::IntoParams)]
#[into_params(names("key"), parameter_in = Path)]
pub(super) struct Key(
    /// The identity's key within its entity type.
    String,
);

#[allow(dead_code)]
#[derive(utoipa::IntoParams)]
#[into_params(names("resource_type"), parameter_in = Path)]
pub(super) struct ResourceType(
    /// The resource type, of the identity's entity type.
    String,
);

#[allow(dead_code)]
#[derive(utoipa::IntoParams)]
#[into_params(names("If-Match"), parameter_in = Header)]
pub(super) struct IfMatch(
    /// The version read (`"12"`, the `ETag`) or `*`: the change applies only if it still holds.
    Option<String>,
);

#[allow(dead_code)]
#[derive(utoipa::IntoParams)]
#[into_params(names("If-None-Match"), parameter_in = Header)]
pub(super) struct IfNoneMatch(
    /// `*`: create only, never overwrite.
    Option<String>,
);
