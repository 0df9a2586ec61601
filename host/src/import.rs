//! Desired state from a file: identities and their assignments, in TOML. This is how a
//! deployment (or the demo) feeds the host what should be; every error names file, key, line.
//!
//! ```toml
//! [[identities]]
//! entity_type = "Directory_User"
//! key = "alice"
//! display_name = "Alice Martin"
//! attributes = { department = "Finance" }
//!
//! [[assignments]]
//! identity = "alice"
//! resource_type = "SaaS_Account"
//! attributes = { userName = "alice", email = "alice@example.com" }
//! entitlements = ["Users"]
//! valid_until = 2027-01-01T00:00:00Z   # optional, as is valid_from
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::Deserialize;

use crate::config::{Config, Source, SourceError};
use crate::limits::{self, OverLimit, Part};
use crate::model::ResourceContent;
use crate::store::{Assignment, Identity, Store, StoreError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDesired {
    #[serde(default)]
    identities: Vec<RawIdentity>,
    #[serde(default)]
    assignments: Vec<RawAssignment>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    entity_type: String,
    key: String,
    display_name: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAssignment {
    identity: String,
    resource_type: String,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    // A list, not a set, until checked: an entitlement over its limit is named by its place.
    #[serde(default)]
    entitlements: Vec<String>,
    valid_from: Option<toml::Value>,
    valid_until: Option<toml::Value>,
}

/// A validated desired-state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Identities to create or update.
    pub identities: Vec<Identity>,
    /// Assignments to set.
    pub assignments: Vec<Assignment>,
}

/// What an import changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Imported {
    /// Identities written.
    pub identities: usize,
    /// Assignments written.
    pub assignments: usize,
    /// Assignments withdrawn (with `replace`).
    pub withdrawn: usize,
}

fn timestamp(source: &Source, key: String, value: Option<toml::Value>) -> Result<Option<i64>, SourceError> {
    let Some(value) = value else { return Ok(None) };
    let text = match value {
        toml::Value::String(s) => s,
        toml::Value::Datetime(d) => d.to_string(),
        other => {
            return Err(source
                .error(key, format!("expected a date-time such as 2027-01-01T00:00:00Z, found {}", other.type_str())));
        }
    };
    text.parse::<jiff::Timestamp>().map(|t| Some(t.as_millisecond())).map_err(|e| {
        source.error(key, format!("`{text}` is not a date-time with a UTC offset, such as 2027-01-01T00:00:00Z: {e}"))
    })
}

/// An error about data over a limit, at the key of the part at fault: `{at}.attributes.NAME`,
/// `{at}.entitlements[3]`. A name the locator cannot follow (one with a dot) is located at
/// `{at}.attributes`, so the error still has its line.
fn over_limit(source: &Source, at: &str, error: OverLimit) -> SourceError {
    let (key, parent) = match &error.part {
        Part::Attribute(name) => (format!("{at}.attributes.{name}"), format!("{at}.attributes")),
        Part::Attributes => (format!("{at}.attributes"), at.to_string()),
        Part::Entitlement(i) => (format!("{at}.entitlements[{i}]"), format!("{at}.entitlements")),
        Part::Entitlements => (format!("{at}.entitlements"), at.to_string()),
        Part::Content => (at.to_string(), at.to_string()),
    };
    let mut located = source.error(key, &error.message);
    if located.position.is_none() {
        located.position = source.locate(&parent);
    }
    if matches!(error.part, Part::Attribute(_)) && located.key.len() > parent.len() + 1 + 64 {
        // An oversize name is in the message already, cut; the key keeps the error short.
        located.key = parent;
    }
    located
}

/// Reads and validates a desired-state file against the config (entity and resource types) and
/// the identities the store already knows.
pub fn load(file: &Path, config: &Config, store: &Store) -> Result<Desired, SourceError> {
    let source = Source::read(file)?;
    let raw: RawDesired = source.parse()?;
    let mut identities = Vec::new();
    let mut in_file = HashSet::new();
    for (i, r) in raw.identities.into_iter().enumerate() {
        if !config.entity_types.contains_key(&r.entity_type) {
            let known = config.entity_types.keys().cloned().collect::<Vec<_>>().join(", ");
            return Err(source.error(
                format!("identities[{i}].entity_type"),
                format!("unknown entity type `{}` (the config defines: {known})", r.entity_type),
            ));
        }
        if r.key.trim().is_empty() {
            return Err(source.error(format!("identities[{i}].key"), "must not be empty"));
        }
        limits::check_id("the key", &r.key, limits::IDENTITY_KEY)
            .map_err(|message| source.error(format!("identities[{i}].key"), message))?;
        limits::check_data(r.attributes.iter().map(|(n, v)| (n.as_str(), v.as_str())), [])
            .map_err(|e| over_limit(&source, &format!("identities[{i}]"), e))?;
        if !in_file.insert((r.entity_type.clone(), r.key.clone())) {
            return Err(source.error(format!("identities[{i}].key"), format!("identity `{}` is listed twice", r.key)));
        }
        identities.push(Identity {
            display_name: r.display_name.unwrap_or_else(|| r.key.clone()),
            entity_type: r.entity_type,
            key: r.key,
            attributes: r.attributes,
        });
    }
    let mut assignments = Vec::new();
    let mut seen = HashSet::new();
    for (i, r) in raw.assignments.into_iter().enumerate() {
        let key = |field: &str| format!("assignments[{i}].{field}");
        limits::check_data(
            r.attributes.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            r.entitlements.iter().map(String::as_str),
        )
        .map_err(|e| over_limit(&source, &format!("assignments[{i}]"), e))?;
        let Some(rt) = config.resource_types.get(&r.resource_type) else {
            let known = config.resource_types.keys().cloned().collect::<Vec<_>>().join(", ");
            return Err(source.error(
                key("resource_type"),
                format!("unknown resource type `{}` (the config defines: {known})", r.resource_type),
            ));
        };
        limits::check_id("the identity", &r.identity, limits::IDENTITY_KEY)
            .map_err(|message| source.error(key("identity"), message))?;
        let known = in_file.contains(&(rt.entity_type.clone(), r.identity.clone()))
            || store.identity_exists(&rt.entity_type, &r.identity).map_err(|e| source.error(key("identity"), e))?;
        if !known {
            return Err(source.error(
                key("identity"),
                format!(
                    "no identity `{}` of entity type {} (in this file or the database)",
                    r.identity, rt.entity_type
                ),
            ));
        }
        if !seen.insert((r.identity.clone(), r.resource_type.clone())) {
            return Err(source.error(
                key("identity"),
                format!(
                    "`{}` is assigned {} twice; an identity has at most one resource of a type",
                    r.identity, r.resource_type
                ),
            ));
        }
        let valid_from = timestamp(&source, key("valid_from"), r.valid_from)?;
        let valid_until = timestamp(&source, key("valid_until"), r.valid_until)?;
        if let (Some(from), Some(until)) = (valid_from, valid_until)
            && until <= from
        {
            return Err(source.error(key("valid_until"), "must be after valid_from"));
        }
        assignments.push(Assignment {
            identity: r.identity,
            resource_type: r.resource_type,
            content: ResourceContent { attributes: r.attributes, entitlements: r.entitlements.into_iter().collect() },
            valid_from,
            valid_until,
        });
    }
    Ok(Desired { identities, assignments })
}

impl Desired {
    /// Writes the identities, then the assignments. With `replace`, assignments not in the file
    /// are withdrawn: the file is then the complete desired state.
    pub fn apply(&self, store: &mut Store, replace: bool) -> Result<Imported, StoreError> {
        store.upsert_identities(&self.identities)?;
        let withdrawn = store.set_assignments(&self.assignments, replace)?;
        Ok(Imported { identities: self.identities.len(), assignments: self.assignments.len(), withdrawn })
    }
}
