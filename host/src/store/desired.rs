//! Identities and their desired assignments, and the per-identity "slot" view compute reads:
//! desired assignment, synchronised resource and current order, side by side.

use std::collections::{BTreeMap, HashMap};

use super::db::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{DesiredBatch, DesiredChange, Expect, Result, Store, StoreError, from_json};
use crate::model::{ProvisioningState, ResourceContent};

/// An owner of resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Identity {
    /// Its entity type, e.g. `Directory_User`.
    pub entity_type: String,
    /// Unique key within the entity type, e.g. `alice`.
    pub key: String,
    /// Name to show.
    pub display_name: String,
    /// Free attributes.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// Desired state: the identity should have a resource of this type with this content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Assignment {
    /// The owner's key (the entity type is the resource type's).
    pub identity: String,
    /// The resource type.
    pub resource_type: String,
    /// Desired attributes and entitlements.
    pub content: ResourceContent,
    /// Start of validity, Unix ms (RFC 3339 in JSON).
    #[serde(default, with = "crate::model::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub valid_from: Option<i64>,
    /// End of validity, Unix ms (RFC 3339 in JSON).
    #[serde(default, with = "crate::model::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub valid_until: Option<i64>,
}

/// The current order of a slot, as compute needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotOrder {
    /// Its id.
    pub id: i64,
    /// Its state.
    pub state: ProvisioningState,
    /// Digest of its change.
    pub fingerprint: String,
    /// Why it was closed, if it was.
    pub closed: Option<String>,
    /// Fulfilment attempts it had.
    pub attempts: u32,
}

/// One identity and one resource type: what should be, what is, and the latest order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The identity's row id.
    pub identity_id: i64,
    /// The identity's key.
    pub owner: String,
    /// The desired assignment, if any.
    pub desired: Option<Assignment>,
    /// The synchronised resource (id and content), if any.
    pub actual: Option<(String, ResourceContent)>,
    /// The slot's latest order, if any.
    pub order: Option<SlotOrder>,
}

impl Store {
    /// Inserts or updates identities, in one transaction (history names the actor `library`).
    pub fn upsert_identities(&mut self, identities: &[Identity]) -> Result<()> {
        let changes = identities.iter().map(|i| DesiredChange::PutIdentity(i.clone(), Expect::Anything)).collect();
        self.apply_desired(&DesiredBatch { changes, actor: "library".into(), ..DesiredBatch::default() })?;
        Ok(())
    }

    /// Sets desired assignments, in one transaction. With `replace`, every assignment not in
    /// `assignments` is withdrawn: the list is the complete desired state. Returns how many
    /// were withdrawn.
    pub fn set_assignments(&mut self, assignments: &[Assignment], replace: bool) -> Result<usize> {
        let changes = assignments.iter().map(|a| DesiredChange::SetAssignment(a.clone(), Expect::Anything)).collect();
        let snapshot = if replace { self.resource_type_names()? } else { Vec::new() };
        let applied =
            self.apply_desired(&DesiredBatch { changes, snapshot, actor: "library".into(), request: None })?;
        Ok(usize::try_from(applied.assignments_withdrawn).unwrap_or(usize::MAX))
    }

    /// Every resource type the store knows.
    pub fn resource_type_names(&self) -> Result<Vec<String>> {
        self.conn
            .prepare_cached("SELECT name FROM resource_types ORDER BY name")?
            .query_map((), |r| r.get(0))?
            .collect::<Result<_, _>>()
    }

    /// The id of every `every`-th identity of the resource type's entity type, in id order:
    /// the bounds of compute's ranges.
    pub fn identity_bounds(&self, resource_type: &str, every: usize) -> Result<Vec<i64>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT i.id FROM identities i INDEXED BY identities_by_type_id
             WHERE i.entity_type = (SELECT entity_type FROM resource_types WHERE name = ?1) ORDER BY i.id",
        )?;
        let ids: Vec<i64> = stmt.query_map([resource_type], |r| r.get(0))?.collect::<Result<_, _>>()?;
        Ok(ids.into_iter().skip(every.saturating_sub(1)).step_by(every.max(1)).collect())
    }

    /// The slots of one resource type for up to `limit` identities with a row id above `after` and at most `upto`,
    /// in row-id order. Compute walks a resource type chunk by chunk so memory stays flat.
    pub fn slots(&self, resource_type: &str, after: i64, upto: i64, limit: usize) -> Result<Vec<Slot>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT i.id, i.key FROM identities i INDEXED BY identities_by_type_id
             WHERE i.entity_type = (SELECT entity_type FROM resource_types WHERE name = ?1)
               AND i.id > ?2 AND i.id <= ?4 ORDER BY i.id LIMIT ?3",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let ids: Vec<(i64, String)> = stmt
            .query_map(params![resource_type, after, limit, upto], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let (Some(first), Some(last)) = (ids.first(), ids.last()) else { return Ok(Vec::new()) };
        let (lo, hi) = (first.0, last.0);

        // The owners' keys come from `ids`: a join to identities here made SQLite drop the
        // range's upper bound and read every assignment above the chunk (O(n²) over a run).
        let keys: HashMap<i64, &str> = ids.iter().map(|(id, key)| (*id, key.as_str())).collect();
        let mut desired: HashMap<i64, Assignment> = HashMap::new();
        let mut stmt = self.conn.prepare_cached(
            "SELECT identity_id, content, valid_from, valid_until FROM assignments
             WHERE resource_type = ?1 AND identity_id BETWEEN ?2 AND ?3",
        )?;
        let mut rows = stmt.query(params![resource_type, lo, hi])?;
        while let Some(row) = rows.next()? {
            let identity_id: i64 = row.get(0)?;
            // An identity of another entity type cannot hold this resource type's assignment.
            let Some(key) = keys.get(&identity_id) else { continue };
            let content: String = row.get(1)?;
            desired.insert(
                identity_id,
                Assignment {
                    identity: (*key).to_string(),
                    resource_type: resource_type.to_string(),
                    content: from_json(&content, "assignment content")?,
                    valid_from: row.get(2)?,
                    valid_until: row.get(3)?,
                },
            );
        }

        let mut actual: HashMap<i64, (String, ResourceContent)> = HashMap::new();
        let mut stmt = self.conn.prepare_cached(
            "SELECT identity_id, id, content FROM resources
             WHERE resource_type = ?1 AND identity_id BETWEEN ?2 AND ?3 ORDER BY identity_id, id",
        )?;
        let mut rows = stmt.query(params![resource_type, lo, hi])?;
        while let Some(row) = rows.next()? {
            let identity: i64 = row.get(0)?;
            let id: String = row.get(1)?;
            let content: String = row.get(2)?;
            if actual.contains_key(&identity) {
                tracing::warn!(resource_type, resource = %id, "a second resource for the same owner; only the first is managed");
                continue;
            }
            actual.insert(identity, (id, from_json(&content, "resource content")?));
        }

        let mut orders: HashMap<i64, SlotOrder> = HashMap::new();
        let mut stmt = self.conn.prepare_cached(
            "SELECT o.identity_id, o.id, o.state, o.fingerprint, o.closed, o.attempts FROM orders o
             JOIN (SELECT MAX(id) AS id FROM orders WHERE resource_type = ?1 AND identity_id BETWEEN ?2 AND ?3
                   GROUP BY identity_id) latest ON latest.id = o.id",
        )?;
        let mut rows = stmt.query(params![resource_type, lo, hi])?;
        while let Some(row) = rows.next()? {
            let state: u8 = row.get(2)?;
            orders.insert(
                row.get(0)?,
                SlotOrder {
                    id: row.get(1)?,
                    state: ProvisioningState::from_number(state)
                        .ok_or_else(|| StoreError::Corrupt(format!("state {state}")))?,
                    fingerprint: row.get(3)?,
                    closed: row.get(4)?,
                    attempts: row.get(5)?,
                },
            );
        }

        Ok(ids
            .into_iter()
            .map(|(identity_id, owner)| Slot {
                identity_id,
                owner,
                desired: desired.remove(&identity_id),
                actual: actual.remove(&identity_id),
                order: orders.remove(&identity_id),
            })
            .collect())
    }

    /// Counts of identities and assignments, for summaries.
    pub fn desired_counts(&self) -> Result<(i64, i64)> {
        self.conn.query_row("SELECT (SELECT COUNT(*) FROM identities), (SELECT COUNT(*) FROM assignments)", (), |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
    }
}

impl Store {
    /// Whether an identity exists.
    pub fn identity_exists(&self, entity_type: &str, key: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM identities WHERE entity_type = ?1 AND key = ?2 AND removed_at IS NULL",
                [entity_type, key],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }
}

/// A resource as synchronised from its managed system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ActualResource {
    /// Its id in the managed system.
    pub id: String,
    /// Its attributes and entitlements.
    #[serde(flatten)]
    pub content: ResourceContent,
}

/// One resource type of an identity: what it should have, what it has, and its orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct IdentitySlot {
    /// The resource type.
    pub resource_type: String,
    /// The desired assignment, if any.
    pub desired: Option<Assignment>,
    /// The synchronised resource, if any.
    pub actual: Option<ActualResource>,
    /// Its orders, newest first.
    pub orders: Vec<crate::model::Order>,
}

/// How many desired-state changes an identity's view shows (the rest: its history, paged).
pub const VIEW_HISTORY: usize = 50;

/// An identity with, per resource type of its entity type, desired and actual state and orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct IdentityView {
    /// The identity.
    pub identity: Identity,
    /// Its version (the `ETag` of `/api/v1/identities/{entity_type}/{key}`).
    pub version: i64,
    /// Its latest desired-state changes, newest first.
    pub history: Vec<super::DesiredRecord>,
    /// Per resource type.
    pub slots: Vec<IdentitySlot>,
}

impl Store {
    /// An identity's page: its assignments, resources and orders per resource type.
    pub fn identity_view(&self, entity_type: &str, key: &str) -> Result<IdentityView> {
        let (id, display_name, attributes, version): (i64, String, String, i64) = self
            .conn
            .prepare_cached(
                "SELECT id, display_name, attributes, version FROM identities
                 WHERE entity_type = ?1 AND key = ?2 AND removed_at IS NULL",
            )?
            .query_row([entity_type, key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("there is no {entity_type} `{key}`")))?;
        let identity = Identity {
            entity_type: entity_type.to_string(),
            key: key.to_string(),
            display_name,
            attributes: from_json(&attributes, "identity attributes")?,
        };
        let resource_types: Vec<String> = self
            .conn
            .prepare_cached("SELECT name FROM resource_types WHERE entity_type = ?1 ORDER BY name")?
            .query_map([entity_type], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut slots = Vec::new();
        for resource_type in resource_types {
            let slot = self.slots(&resource_type, id - 1, id, 1)?.into_iter().find(|s| s.identity_id == id);
            let mut orders = self.orders(&super::OrderFilter {
                owner: Some(key.to_string()),
                resource_types: vec![resource_type.clone()],
                ..Default::default()
            })?;
            orders.reverse();
            let (desired, actual) = slot.map(|s| (s.desired, s.actual)).unwrap_or_default();
            let actual = actual.map(|(id, content)| ActualResource { id, content });
            slots.push(IdentitySlot { resource_type, desired, actual, orders });
        }
        let history = self.desired_history(entity_type, key, None, VIEW_HISTORY)?;
        Ok(IdentityView { identity, version, history, slots })
    }
}
