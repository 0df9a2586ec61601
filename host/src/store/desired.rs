//! Identities and their desired assignments, and the per-identity "slot" view compute reads:
//! desired assignment, synchronised resource and current order, side by side.

use std::collections::{BTreeMap, HashMap};

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{Result, Store, StoreError, from_json, json};
use crate::model::{ProvisioningState, ResourceContent};

/// An owner of resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The owner's key (the entity type is the resource type's).
    pub identity: String,
    /// The resource type.
    pub resource_type: String,
    /// Desired attributes and entitlements.
    pub content: ResourceContent,
    /// Start of validity, Unix ms.
    pub valid_from: Option<i64>,
    /// End of validity, Unix ms.
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
    /// Inserts or updates identities, in one transaction.
    pub fn upsert_identities(&mut self, identities: &[Identity]) -> Result<()> {
        let tx = self.write_tx()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO identities (entity_type, key, display_name, attributes) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (entity_type, key) DO UPDATE SET display_name = excluded.display_name,
                    attributes = excluded.attributes",
            )?;
            for identity in identities {
                crate::limits::check_id("the key", &identity.key, crate::limits::IDENTITY_KEY)
                    .map_err(|e| StoreError::OverLimit(format!("identity of {}: {e}", identity.entity_type)))?;
                crate::limits::check_data(identity.attributes.iter().map(|(n, v)| (n.as_str(), v.as_str())), [])
                    .map_err(|e| StoreError::OverLimit(format!("identity `{}`: {e}", identity.key)))?;
                stmt.execute(params![
                    identity.entity_type,
                    identity.key,
                    identity.display_name,
                    json(&identity.attributes)
                ])
                .map_err(|e| match e {
                    rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                        StoreError::Invalid(format!(
                            "identity `{}`: unknown entity type `{}`",
                            identity.key, identity.entity_type
                        ))
                    }
                    e => e.into(),
                })?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Sets desired assignments, in one transaction. With `replace`, every assignment not in
    /// `assignments` is withdrawn: the list is the complete desired state.
    pub fn set_assignments(&mut self, assignments: &[Assignment], replace: bool) -> Result<usize> {
        let now = self.clock.now_ms();
        let tx = self.write_tx()?;
        let mut withdrawn = 0;
        {
            // With `replace`, the pairs seen are kept aside to withdraw every other one after.
            tx.execute("CREATE TEMP TABLE IF NOT EXISTS kept (identity_id INTEGER, resource_type TEXT)", [])?;
            tx.execute("DELETE FROM temp.kept", [])?;
            let mut find = tx.prepare_cached(
                "SELECT i.id FROM identities i JOIN resource_types t ON t.entity_type = i.entity_type
                 WHERE t.name = ?1 AND i.key = ?2",
            )?;
            let mut upsert = tx.prepare_cached(
                "INSERT INTO assignments (identity_id, resource_type, content, valid_from, valid_until, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (identity_id, resource_type) DO UPDATE SET content = excluded.content,
                    valid_from = excluded.valid_from, valid_until = excluded.valid_until,
                    updated_at = excluded.updated_at
                 WHERE content IS NOT excluded.content OR valid_from IS NOT excluded.valid_from
                    OR valid_until IS NOT excluded.valid_until",
            )?;
            let mut keep = tx.prepare_cached("INSERT INTO temp.kept VALUES (?1, ?2)")?;
            for a in assignments {
                // The import checks too, naming file and line; this holds for every caller.
                crate::limits::check_data(
                    a.content.attributes.iter().map(|(n, v)| (n.as_str(), v.as_str())),
                    a.content.entitlements.iter().map(String::as_str),
                )
                .map_err(|e| {
                    StoreError::OverLimit(format!("assignment of {} to `{}`: {e}", a.resource_type, a.identity))
                })?;
                let identity: Option<i64> =
                    find.query_row(params![a.resource_type, a.identity], |r| r.get(0)).optional()?;
                let identity = identity.ok_or_else(|| {
                    StoreError::Invalid(format!(
                        "assignment of {} to `{}`: no such identity for that resource type's entity type",
                        a.resource_type, a.identity
                    ))
                })?;
                upsert.execute(params![
                    identity,
                    a.resource_type,
                    json(&a.content),
                    a.valid_from,
                    a.valid_until,
                    now
                ])?;
                if replace {
                    keep.execute(params![identity, a.resource_type])?;
                }
            }
            if replace {
                withdrawn = tx.execute(
                    "DELETE FROM assignments WHERE NOT EXISTS (SELECT 1 FROM temp.kept k
                        WHERE k.identity_id = assignments.identity_id AND k.resource_type = assignments.resource_type)",
                    [],
                )?;
            }
        }
        tx.commit()?;
        Ok(withdrawn)
    }

    /// Withdraws one assignment: the identity should no longer have that resource.
    pub fn withdraw_assignment(&mut self, identity: &str, resource_type: &str) -> Result<bool> {
        let removed = self.conn.execute(
            "DELETE FROM assignments WHERE resource_type = ?2 AND identity_id =
                (SELECT i.id FROM identities i JOIN resource_types t ON t.entity_type = i.entity_type
                 WHERE t.name = ?2 AND i.key = ?1)",
            params![identity, resource_type],
        )?;
        Ok(removed > 0)
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
        Ok(self.conn.query_row(
            "SELECT (SELECT COUNT(*) FROM identities), (SELECT COUNT(*) FROM assignments)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }
}

impl Store {
    /// Whether an identity exists.
    pub fn identity_exists(&self, entity_type: &str, key: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row("SELECT 1 FROM identities WHERE entity_type = ?1 AND key = ?2", [entity_type, key], |_| Ok(()))
            .optional()?
            .is_some())
    }
}

/// One resource type of an identity: what it should have, what it has, and its orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdentitySlot {
    /// The resource type.
    pub resource_type: String,
    /// The desired assignment, if any.
    pub desired: Option<Assignment>,
    /// The synchronised resource (id, content), if any.
    pub actual: Option<(String, ResourceContent)>,
    /// Its orders, newest first.
    pub orders: Vec<crate::model::Order>,
}

/// An identity with, per resource type of its entity type, desired and actual state and orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdentityView {
    /// The identity.
    pub identity: Identity,
    /// Per resource type.
    pub slots: Vec<IdentitySlot>,
}

impl Store {
    /// An identity's page: its assignments, resources and orders per resource type.
    pub fn identity_view(&self, entity_type: &str, key: &str) -> Result<IdentityView> {
        let (id, display_name, attributes): (i64, String, String) = self
            .conn
            .prepare_cached("SELECT id, display_name, attributes FROM identities WHERE entity_type = ?1 AND key = ?2")?
            .query_row([entity_type, key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
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
            slots.push(IdentitySlot { resource_type, desired, actual, orders });
        }
        Ok(IdentityView { identity, slots })
    }

    /// Identities whose key or name contains `text`, of every entity type (at most `limit`).
    pub fn find_identities(&self, text: &str, limit: usize) -> Result<Vec<Identity>> {
        let pattern = format!("%{}%", text.replace('%', "\\%").replace('_', "\\_"));
        let mut stmt = self.conn.prepare_cached(
            "SELECT entity_type, key, display_name, attributes FROM identities
             WHERE key LIKE ?1 ESCAPE '\\' OR display_name LIKE ?1 ESCAPE '\\' ORDER BY entity_type, key LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![pattern, i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?))
        })?;
        let mut found = Vec::new();
        for row in rows {
            let (entity_type, key, display_name, attributes) = row?;
            found.push(Identity {
                entity_type,
                key,
                display_name,
                attributes: from_json(&attributes, "identity attributes")?,
            });
        }
        Ok(found)
    }
}
