//! Changes to desired state, whoever sends them: the API (one identity or assignment at a
//! time), a feed's bulk request, `provision import`, a person's request in the pages. One
//! function authorises (`ManageDesiredState` per entity type, the same [`authorize`] as
//! everything else), checks every change against the config, and applies all of them in one
//! transaction or none.

use sha2::{Digest, Sha256};

use super::Principal;
use crate::config::Config;
use crate::host::Host;
use crate::operators::ActionError;
use crate::permissions::{Action, Capability};
use crate::store::{Applied, DesiredBatch, DesiredChange, StoreError};

/// The most changes one request may carry (a `413` over it): one transaction holds SQLite's
/// writer for the whole request, so it must stay short.
pub const MAX_CHANGES: usize = 50_000;

/// A request to change desired state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredRequest {
    /// The changes, applied in order, all or none.
    pub changes: Vec<DesiredChange>,
    /// Resource types the request gives completely (what it does not set is withdrawn).
    pub snapshot: Vec<String>,
    /// The client's id for the request: a retry under it changes nothing twice.
    pub request_id: Option<String>,
}

/// A change that cannot be made, and where it is in its request.
fn at(index: usize, error: ActionError) -> ActionError {
    match error {
        ActionError::Invalid(message) => ActionError::Invalid(format!("changes[{index}]: {message}")),
        ActionError::UnknownName { what, name, known } => ActionError::Invalid(format!(
            "changes[{index}]: unknown {what} `{name}` (the config defines: {})",
            known.join(", ")
        )),
        other => other,
    }
}

/// The entity type a change is about, checked against the config.
fn entity_type_of(config: &Config, change: &DesiredChange) -> Result<String, ActionError> {
    let unknown_resource = |name: &str| ActionError::UnknownName {
        what: "resource type",
        name: name.to_string(),
        known: config.resource_types.keys().cloned().collect(),
    };
    let entity = |name: &str| {
        if config.entity_types.contains_key(name) {
            Ok(name.to_string())
        } else {
            Err(ActionError::UnknownName {
                what: "entity type",
                name: name.to_string(),
                known: config.entity_types.keys().cloned().collect(),
            })
        }
    };
    match change {
        DesiredChange::PutIdentity(identity, _) => {
            if identity.key.trim().is_empty() {
                return Err(ActionError::Invalid("the identity's key must not be empty".into()));
            }
            entity(&identity.entity_type)
        }
        DesiredChange::RemoveIdentity { entity_type, .. } => entity(entity_type),
        DesiredChange::SetAssignment(a, _) => config
            .resource_types
            .get(&a.resource_type)
            .map(|rt| rt.entity_type.clone())
            .ok_or_else(|| unknown_resource(&a.resource_type)),
        DesiredChange::WithdrawAssignment { resource_type, .. } => config
            .resource_types
            .get(resource_type)
            .map(|rt| rt.entity_type.clone())
            .ok_or_else(|| unknown_resource(resource_type)),
    }
}

/// Applies a request: every change must be allowed (`ManageDesiredState` on its entity type)
/// and valid, or nothing is written. Under a `request_id` already used by this caller for the
/// same changes, returns that request's outcome (`replayed`) and writes nothing.
pub fn change(host: &mut Host, who: &Principal, request: DesiredRequest) -> Result<Applied, ActionError> {
    apply(host, who.actor(), Some(who), request)
}

/// The same for a file import run by the host's operator on its machine (no user: the file's
/// name is the actor history keeps).
pub fn import(host: &mut Host, actor: String, request: DesiredRequest) -> Result<Applied, ActionError> {
    apply(host, actor, None, request)
}

fn apply(
    host: &mut Host,
    actor: String,
    who: Option<&Principal>,
    request: DesiredRequest,
) -> Result<Applied, ActionError> {
    // A file on the host's own machine may be as large as the operator likes.
    if who.is_some() && request.changes.len() > MAX_CHANGES {
        return Err(ActionError::TooMany(format!(
            "{} changes in one request; at most {MAX_CHANGES}: split it (a snapshot must be one request)",
            request.changes.len()
        )));
    }
    let config = &host.config;
    let mut allowed: Vec<String> = Vec::new();
    for (index, change) in request.changes.iter().enumerate() {
        let entity_type = entity_type_of(config, change).map_err(|e| at(index, e))?;
        if let Some(who) = who
            && !allowed.contains(&entity_type)
        {
            crate::permissions::authorize(
                who.login(),
                &who.user().permissions,
                Action::ManageDesiredState,
                &entity_type,
            )?;
            allowed.push(entity_type);
        }
    }
    for resource_type in &request.snapshot {
        let Some(rt) = config.resource_types.get(resource_type) else {
            return Err(ActionError::Invalid(format!(
                "snapshot: unknown resource type `{resource_type}` (the config defines: {})",
                config.resource_types.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        };
        if let Some(who) = who {
            crate::permissions::authorize(
                who.login(),
                &who.user().permissions,
                Action::ManageDesiredState,
                &rt.entity_type,
            )?;
        }
    }
    let request_id = match request.request_id {
        Some(id) => {
            crate::limits::check("the request id", &id, crate::limits::NAME)?;
            if id.trim().is_empty() {
                return Err(ActionError::Invalid("the request id must not be empty".into()));
            }
            Some((id, digest(&request.changes, &request.snapshot)))
        }
        None => None,
    };
    let batch = DesiredBatch { changes: request.changes, snapshot: request.snapshot, actor, request: request_id };
    host.store.apply_desired(&batch).map_err(|error| match error {
        // What the config cannot know (an identity that does not exist) is the request's fault.
        StoreError::AtChange { index, source }
            if matches!(*source, StoreError::Invalid(_) | StoreError::OverLimit(_)) =>
        {
            ActionError::Invalid(format!("changes[{index}]: {source}"))
        }
        other => ActionError::Store(other),
    })
}

/// What identifies a request's content: a retry must send the same.
fn digest(changes: &[DesiredChange], snapshot: &[String]) -> String {
    let text = serde_json::to_string(&(changes, snapshot)).unwrap_or_default();
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl Principal {
    /// Whether the user may see identities of `entity_type` (their desired state, resources and
    /// orders): `View`, or changing that entity type's desired state.
    pub fn may_see_identities(&self, entity_type: &str) -> bool {
        self.may(Capability::View) || self.may_act(Action::ManageDesiredState, entity_type)
    }
}
