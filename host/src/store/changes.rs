//! Changes to desired state, from every source alike (the API, a feed's bulk request, a file
//! import): each applied under an optional version precondition, all of a request in one
//! transaction, each effective change kept as a row of `desired_history` whose id becomes the
//! changed row's version. A request under a client's id is recorded with its outcome in the
//! same transaction, so a retry changes nothing twice.

use std::collections::BTreeMap;

use super::db::{Db, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{Assignment, Identity, Result, Store, StoreError, from_json, json};
use crate::model::ResourceContent;

/// What the writer expects of the row it changes (HTTP's `If-Match` / `If-None-Match`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Expect {
    /// Nothing: the change applies whatever is stored.
    #[default]
    Anything,
    /// The row exists, at this version.
    Version(i64),
    /// The row exists, at any version (`If-Match: *`).
    Exists,
    /// The row does not exist (`If-None-Match: *`): create, never overwrite.
    Absent,
}

/// One change to desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum DesiredChange {
    /// Creates or replaces an identity (a removed one comes back).
    PutIdentity(Identity, Expect),
    /// Removes an identity: its assignments are withdrawn, so the next compute deletes what it
    /// has; the row stays, hidden, for the orders that name it.
    RemoveIdentity {
        /// Its entity type.
        entity_type: String,
        /// Its key.
        key: String,
        /// The precondition.
        expect: Expect,
    },
    /// Sets one assignment (creates or replaces it).
    SetAssignment(Assignment, Expect),
    /// Withdraws one assignment.
    WithdrawAssignment {
        /// The owner's key.
        identity: String,
        /// The resource type.
        resource_type: String,
        /// The precondition.
        expect: Expect,
    },
}

/// A request's changes: applied together or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredBatch {
    /// The changes, in order.
    pub changes: Vec<DesiredChange>,
    /// Resource types this request gives completely: every assignment of one of them that the
    /// request does not set is withdrawn.
    pub snapshot: Vec<String>,
    /// Who asks, as history names them (`user:rita`, `import:data.csv`).
    pub actor: String,
    /// The client's request id with a digest of what it asked: a second request under the id
    /// returns the first one's outcome and changes nothing; a different request under it is a
    /// conflict.
    pub request: Option<(String, String)>,
}

/// What a request changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Applied {
    /// Identities created (or brought back after a removal).
    pub identities_created: u64,
    /// Identities whose name or attributes changed.
    pub identities_replaced: u64,
    /// Identities removed.
    pub identities_removed: u64,
    /// Assignments created.
    pub assignments_created: u64,
    /// Assignments whose content or validity changed.
    pub assignments_replaced: u64,
    /// Assignments withdrawn (one at a time, by a removal or by a snapshot).
    pub assignments_withdrawn: u64,
    /// Changes that found the row as asked already: nothing written.
    pub unchanged: u64,
    /// Per change, the version of its row afterwards (none once removed or withdrawn).
    pub versions: Vec<Option<i64>>,
    /// Whether this is the recorded outcome of an earlier request under the same id.
    #[serde(default)]
    pub replayed: bool,
}

/// One effective change, as history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DesiredRecord {
    /// Its id: the version it gave its row.
    pub id: i64,
    /// When (Unix ms; RFC 3339 in JSON).
    #[serde(with = "crate::model::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: i64,
    /// Who.
    pub actor: String,
    /// The client's request id, if it came with one.
    pub request: Option<String>,
    /// The identity's entity type.
    pub entity_type: String,
    /// The identity's key.
    pub identity: String,
    /// The assignment's resource type; none for a change of the identity itself.
    pub resource_type: Option<String>,
    /// `created`, `replaced`, `removed` (identities); `created`, `replaced`, `withdrawn`
    /// (assignments).
    pub action: String,
    /// The row before (JSON), if there was one.
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    /// The row after (JSON), if there is one.
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
}

/// An identity with its version (the id of the last change to it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct IdentityRecord {
    /// The identity.
    #[serde(flatten)]
    pub identity: Identity,
    /// Its version: the `ETag` a writer sends back in `If-Match`.
    pub version: i64,
}

/// An assignment with its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AssignmentRecord {
    /// The assignment.
    #[serde(flatten)]
    pub assignment: Assignment,
    /// Its version.
    pub version: i64,
}

/// Where a change went wrong: the error of the change at `index` of its request.
fn at(index: usize, error: StoreError) -> StoreError {
    StoreError::AtChange { index, source: Box::new(error) }
}

fn stale(what: String, expect: Expect, found: Option<i64>) -> StoreError {
    let expected = match expect {
        Expect::Version(v) => format!("version {v}"),
        Expect::Exists => "it to exist".to_string(),
        Expect::Absent => "it not to exist".to_string(),
        Expect::Anything => "anything".to_string(),
    };
    let found = match found {
        Some(v) => format!("it is at version {v}"),
        None => "it does not exist".to_string(),
    };
    StoreError::Stale(format!("{what}: the request expected {expected}, but {found} (someone changed it meanwhile)"))
}

fn check(what: impl FnOnce() -> String, expect: Expect, found: Option<i64>) -> Result<()> {
    let holds = match expect {
        Expect::Anything => true,
        Expect::Version(v) => found == Some(v),
        Expect::Exists => found.is_some(),
        Expect::Absent => found.is_none(),
    };
    if holds { Ok(()) } else { Err(stale(what(), expect, found)) }
}

/// The stored shape of an assignment, for history.
#[derive(Serialize)]
struct Stored<'a> {
    #[serde(flatten)]
    content: &'a ResourceContent,
    #[serde(with = "crate::model::rfc3339::option", skip_serializing_if = "Option::is_none")]
    valid_from: Option<i64>,
    #[serde(with = "crate::model::rfc3339::option", skip_serializing_if = "Option::is_none")]
    valid_until: Option<i64>,
}

/// Appends a history row; its id is the version of the changed row.
#[allow(clippy::too_many_arguments)]
fn record(
    tx: &Db,
    batch: &DesiredBatch,
    now: i64,
    entity_type: &str,
    key: &str,
    resource_type: Option<&str>,
    action: &str,
    before: Option<&str>,
    after: Option<&str>,
) -> Result<i64> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO desired_history (at, actor, request, entity_type, identity_key, resource_type, action, before, after)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) RETURNING id",
    )?;
    let request = batch.request.as_ref().map(|(id, _)| id.as_str());
    stmt.query_row(params![now, batch.actor, request, entity_type, key, resource_type, action, before, after], |r| {
        r.get(0)
    })
}

impl Store {
    /// Applies a request's changes in one transaction: all of them, or (on the first that is
    /// invalid, over a limit or stale) none. Returns what changed; under a request id already
    /// recorded, the recorded outcome, with nothing written.
    pub fn apply_desired(&mut self, batch: &DesiredBatch) -> Result<Applied> {
        let now = self.clock.now_ms();
        let tx = self.write_tx()?;
        if let Some((id, digest)) = &batch.request {
            let earlier: Option<(String, String)> = tx
                .prepare_cached("SELECT digest, outcome FROM desired_requests WHERE actor = ?1 AND id = ?2")?
                .query_row(params![batch.actor, id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if let Some((earlier, outcome)) = earlier {
                if &earlier != digest {
                    return Err(StoreError::Conflict(format!(
                        "request id `{id}` was used already for a different request; a retry must send the same \
                         changes, a new request a new id"
                    )));
                }
                let mut applied: Applied = from_json(&outcome, "request outcome")?;
                applied.replayed = true;
                return Ok(applied);
            }
        }
        let mut applied = Applied::default();
        tx.execute(
            "CREATE TEMP TABLE IF NOT EXISTS snapshot_kept (identity_id BIGINT, resource_type TEXT,
                PRIMARY KEY (identity_id, resource_type))",
            (),
        )?;
        tx.execute("DELETE FROM snapshot_kept", ())?;
        for (index, change) in batch.changes.iter().enumerate() {
            let version = apply_one(&tx, batch, now, change, &mut applied).map_err(|e| at(index, e))?;
            applied.versions.push(version);
        }
        for resource_type in &batch.snapshot {
            applied.assignments_withdrawn += withdraw_unlisted(&tx, batch, now, resource_type)?;
        }
        if let Some((id, digest)) = &batch.request {
            tx.prepare_cached(
                "INSERT INTO desired_requests (actor, id, digest, at, outcome) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![batch.actor, id, digest, now, json(&applied)])?;
        }
        tx.commit()?;
        Ok(applied)
    }

    /// An identity that is not removed, with its version.
    pub fn identity(&self, entity_type: &str, key: &str) -> Result<IdentityRecord> {
        self.conn
            .prepare_cached(
                "SELECT display_name, attributes, version FROM identities
                 WHERE entity_type = ?1 AND key = ?2 AND removed_at IS NULL",
            )?
            .query_row([entity_type, key], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?)))
            .optional()?
            .map(|(display_name, attributes, version)| -> Result<IdentityRecord> {
                Ok(IdentityRecord {
                    identity: Identity {
                        entity_type: entity_type.to_string(),
                        key: key.to_string(),
                        display_name,
                        attributes: from_json(&attributes, "identity attributes")?,
                    },
                    version,
                })
            })
            .transpose()?
            .ok_or_else(|| StoreError::NotFound(format!("there is no {entity_type} `{key}`")))
    }

    /// An identity's assignments, by resource type.
    pub fn assignments_of(&self, entity_type: &str, key: &str) -> Result<Vec<AssignmentRecord>> {
        let id = self.identity_row(entity_type, key)?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT resource_type, content, valid_from, valid_until, version FROM assignments
             WHERE identity_id = ?1 ORDER BY resource_type",
        )?;
        let rows = stmt.query_map([id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?;
        let mut list = Vec::new();
        for row in rows {
            let (resource_type, content, valid_from, valid_until, version) = row?;
            list.push(AssignmentRecord {
                assignment: Assignment {
                    identity: key.to_string(),
                    resource_type,
                    content: from_json(&content, "assignment content")?,
                    valid_from,
                    valid_until,
                },
                version,
            });
        }
        Ok(list)
    }

    /// One assignment with its version.
    pub fn assignment(&self, entity_type: &str, key: &str, resource_type: &str) -> Result<AssignmentRecord> {
        self.assignments_of(entity_type, key)?
            .into_iter()
            .find(|a| a.assignment.resource_type == resource_type)
            .ok_or_else(|| StoreError::NotFound(format!("{entity_type} `{key}` has no assignment of {resource_type}")))
    }

    fn identity_row(&self, entity_type: &str, key: &str) -> Result<i64> {
        self.conn
            .prepare_cached("SELECT id FROM identities WHERE entity_type = ?1 AND key = ?2 AND removed_at IS NULL")?
            .query_row([entity_type, key], |r| r.get(0))
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("there is no {entity_type} `{key}`")))
    }

    /// An identity's desired-state history, newest first: at most `limit` changes before the
    /// change `before` (none: from the newest).
    pub fn desired_history(
        &self,
        entity_type: &str,
        key: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<DesiredRecord>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, at, actor, request, entity_type, identity_key, resource_type, action, before, after
             FROM desired_history WHERE entity_type = ?1 AND identity_key = ?2 AND id < ?3
             ORDER BY id DESC LIMIT ?4",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![entity_type, key, before.unwrap_or(i64::MAX), limit], |r| {
            Ok((
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?),
                (r.get(5)?, r.get(6)?, r.get(7)?, r.get::<_, Option<String>>(8)?, r.get::<_, Option<String>>(9)?),
            ))
        })?;
        let mut list = Vec::new();
        for row in rows {
            let ((id, at, actor, request, entity_type), (identity, resource_type, action, before, after)) = row?;
            let parse = |text: Option<String>| text.map(|t| from_json(&t, "desired history")).transpose();
            list.push(DesiredRecord {
                id,
                at,
                actor,
                request,
                entity_type,
                identity,
                resource_type,
                action,
                before: parse(before)?,
                after: parse(after)?,
            });
        }
        Ok(list)
    }

    /// A page of the directory: identities (not removed) of `entity_types` whose key, name or
    /// an attribute value contains `text`, in row order after the row `after`; with the row id
    /// of each, for the next page.
    pub fn search_identities(
        &self,
        text: &str,
        entity_types: &[String],
        after: Option<i64>,
        limit: usize,
    ) -> Result<Vec<(i64, IdentityRecord)>> {
        let pattern = format!("%{}%", text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        // SQLite's LIKE ignores ASCII case; PostgreSQL's ILIKE does. Each has its own JSON.
        let mut stmt = self.conn.prepare_cached(match self.conn.backend() {
            super::Backend::Sqlite => {
                "SELECT id, entity_type, key, display_name, attributes, version FROM identities
                 WHERE removed_at IS NULL AND id > ?1
                   AND entity_type IN (SELECT value FROM json_each(?2))
                   AND (?3 = '%%' OR key LIKE ?3 ESCAPE '\\' OR display_name LIKE ?3 ESCAPE '\\'
                        OR EXISTS (SELECT 1 FROM json_each(identities.attributes) a WHERE a.value LIKE ?3 ESCAPE '\\'))
                 ORDER BY id LIMIT ?4"
            }
            super::Backend::Postgres => {
                "SELECT id, entity_type, key, display_name, attributes, version FROM identities
                 WHERE removed_at IS NULL AND id > ?1
                   AND entity_type IN (SELECT value FROM jsonb_array_elements_text(?2::text::jsonb))
                   AND (?3::text = '%%' OR key ILIKE ?3 ESCAPE '\\' OR display_name ILIKE ?3 ESCAPE '\\'
                        OR EXISTS (SELECT 1 FROM jsonb_each_text(identities.attributes::jsonb) a
                                   WHERE a.value ILIKE ?3 ESCAPE '\\'))
                 ORDER BY id LIMIT ?4"
            }
        })?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![after.unwrap_or(0), json(&entity_types), pattern, limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })?;
        let mut found = Vec::new();
        for row in rows {
            let (id, entity_type, key, display_name, attributes, version) = row?;
            let attributes: BTreeMap<String, String> = from_json(&attributes, "identity attributes")?;
            found.push((
                id,
                IdentityRecord { identity: Identity { entity_type, key, display_name, attributes }, version },
            ));
        }
        Ok(found)
    }
}

/// Applies one change; returns the version of its row afterwards.
fn apply_one(
    tx: &Db,
    batch: &DesiredBatch,
    now: i64,
    change: &DesiredChange,
    applied: &mut Applied,
) -> Result<Option<i64>> {
    match change {
        DesiredChange::PutIdentity(identity, expect) => {
            crate::limits::check_id("the key", &identity.key, crate::limits::IDENTITY_KEY)
                .map_err(|e| StoreError::OverLimit(format!("identity of {}: {e}", identity.entity_type)))?;
            crate::limits::check_data(identity.attributes.iter().map(|(n, v)| (n.as_str(), v.as_str())), [])
                .map_err(|e| StoreError::OverLimit(format!("identity `{}`: {e}", identity.key)))?;
            let known: bool = tx
                .prepare_cached("SELECT 1 FROM entity_types WHERE name = ?1")?
                .query_row([&identity.entity_type], |_| Ok(()))
                .optional()?
                .is_some();
            if !known {
                return Err(StoreError::Invalid(format!(
                    "identity `{}`: unknown entity type `{}`",
                    identity.key, identity.entity_type
                )));
            }
            let found: Option<(i64, String, String, i64, Option<i64>)> = tx
                .prepare_cached(
                    "SELECT id, display_name, attributes, version, removed_at FROM identities
                     WHERE entity_type = ?1 AND key = ?2",
                )?
                .query_row([&identity.entity_type, &identity.key], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .optional()?;
            let live = found.as_ref().filter(|f| f.4.is_none());
            check(|| format!("{} `{}`", identity.entity_type, identity.key), *expect, live.map(|f| f.3))?;
            let attributes = json(&identity.attributes);
            let after = json(&IdentityBody { display_name: &identity.display_name, attributes: &identity.attributes });
            match found {
                Some((_, ref name, ref attrs, version, None))
                    if *name == identity.display_name && *attrs == attributes =>
                {
                    applied.unchanged += 1;
                    Ok(Some(version))
                }
                Some((id, name, attrs, _, removed)) => {
                    let before = removed.is_none().then(|| {
                        let attrs: BTreeMap<String, String> = serde_json::from_str(&attrs).unwrap_or_default();
                        json(&IdentityBody { display_name: &name, attributes: &attrs })
                    });
                    let action = if removed.is_some() { "created" } else { "replaced" };
                    let version = record(
                        tx,
                        batch,
                        now,
                        &identity.entity_type,
                        &identity.key,
                        None,
                        action,
                        before.as_deref(),
                        Some(&after),
                    )?;
                    tx.prepare_cached(
                        "UPDATE identities SET display_name = ?2, attributes = ?3, version = ?4, removed_at = NULL
                         WHERE id = ?1",
                    )?
                    .execute(params![id, identity.display_name, attributes, version])?;
                    if removed.is_some() {
                        applied.identities_created += 1;
                    } else {
                        applied.identities_replaced += 1;
                    }
                    Ok(Some(version))
                }
                None => {
                    let version = record(
                        tx,
                        batch,
                        now,
                        &identity.entity_type,
                        &identity.key,
                        None,
                        "created",
                        None,
                        Some(&after),
                    )?;
                    tx.prepare_cached(
                        "INSERT INTO identities (entity_type, key, display_name, attributes, version)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![
                        identity.entity_type,
                        identity.key,
                        identity.display_name,
                        attributes,
                        version
                    ])?;
                    applied.identities_created += 1;
                    Ok(Some(version))
                }
            }
        }
        DesiredChange::RemoveIdentity { entity_type, key, expect } => {
            let found: Option<(i64, String, String, i64)> = tx
                .prepare_cached(
                    "SELECT id, display_name, attributes, version FROM identities
                     WHERE entity_type = ?1 AND key = ?2 AND removed_at IS NULL",
                )?
                .query_row([entity_type, key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .optional()?;
            check(|| format!("{entity_type} `{key}`"), *expect, found.as_ref().map(|f| f.3))?;
            let Some((id, name, attrs, _)) = found else {
                applied.unchanged += 1;
                return Ok(None);
            };
            let held: Vec<(String, String, Option<i64>, Option<i64>)> = tx
                .prepare_cached(
                    "SELECT resource_type, content, valid_from, valid_until FROM assignments WHERE identity_id = ?1",
                )?
                .query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<_, _>>()?;
            for (resource_type, content, valid_from, valid_until) in held {
                let content: ResourceContent = from_json(&content, "assignment content")?;
                let before = json(&Stored { content: &content, valid_from, valid_until });
                record(tx, batch, now, entity_type, key, Some(&resource_type), "withdrawn", Some(&before), None)?;
                applied.assignments_withdrawn += 1;
            }
            tx.prepare_cached("DELETE FROM assignments WHERE identity_id = ?1")?.execute([id])?;
            let attrs: BTreeMap<String, String> = from_json(&attrs, "identity attributes")?;
            let before = json(&IdentityBody { display_name: &name, attributes: &attrs });
            let version = record(tx, batch, now, entity_type, key, None, "removed", Some(&before), None)?;
            tx.prepare_cached("UPDATE identities SET removed_at = ?2, version = ?3 WHERE id = ?1")?
                .execute(params![id, now, version])?;
            applied.identities_removed += 1;
            Ok(None)
        }
        DesiredChange::SetAssignment(a, expect) => {
            crate::limits::check_data(
                a.content.attributes.iter().map(|(n, v)| (n.as_str(), v.as_str())),
                a.content.entitlements.iter().map(String::as_str),
            )
            .map_err(|e| {
                StoreError::OverLimit(format!("assignment of {} to `{}`: {e}", a.resource_type, a.identity))
            })?;
            if let (Some(from), Some(until)) = (a.valid_from, a.valid_until)
                && until <= from
            {
                return Err(StoreError::Invalid(format!(
                    "assignment of {} to `{}`: valid_until must be after valid_from",
                    a.resource_type, a.identity
                )));
            }
            let (identity_id, entity_type) = owner(tx, &a.identity, &a.resource_type)?;
            let found: Option<(String, Option<i64>, Option<i64>, i64)> = tx
                .prepare_cached(
                    "SELECT content, valid_from, valid_until, version FROM assignments
                     WHERE identity_id = ?1 AND resource_type = ?2",
                )?
                .query_row(params![identity_id, a.resource_type], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .optional()?;
            check(
                || format!("the assignment of {} to `{}`", a.resource_type, a.identity),
                *expect,
                found.as_ref().map(|f| f.3),
            )?;
            if !batch.snapshot.is_empty() {
                tx.prepare_cached("INSERT INTO snapshot_kept VALUES (?1, ?2) ON CONFLICT DO NOTHING")?
                    .execute(params![identity_id, a.resource_type])?;
            }
            let content = json(&a.content);
            if let Some((ref c, from, until, version)) = found
                && *c == content
                && from == a.valid_from
                && until == a.valid_until
            {
                applied.unchanged += 1;
                return Ok(Some(version));
            }
            let after = json(&Stored { content: &a.content, valid_from: a.valid_from, valid_until: a.valid_until });
            let before = match &found {
                Some((c, from, until, _)) => {
                    let c: ResourceContent = from_json(c, "assignment content")?;
                    Some(json(&Stored { content: &c, valid_from: *from, valid_until: *until }))
                }
                None => None,
            };
            let action = if found.is_some() { "replaced" } else { "created" };
            let version = record(
                tx,
                batch,
                now,
                &entity_type,
                &a.identity,
                Some(&a.resource_type),
                action,
                before.as_deref(),
                Some(&after),
            )?;
            tx.prepare_cached(
                "INSERT INTO assignments (identity_id, resource_type, content, valid_from, valid_until, updated_at, version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (identity_id, resource_type) DO UPDATE SET content = excluded.content,
                    valid_from = excluded.valid_from, valid_until = excluded.valid_until,
                    updated_at = excluded.updated_at, version = excluded.version",
            )?
            .execute(params![identity_id, a.resource_type, content, a.valid_from, a.valid_until, now, version])?;
            if found.is_some() {
                applied.assignments_replaced += 1;
            } else {
                applied.assignments_created += 1;
            }
            Ok(Some(version))
        }
        DesiredChange::WithdrawAssignment { identity, resource_type, expect } => {
            let (identity_id, entity_type) = owner(tx, identity, resource_type)?;
            let found: Option<(String, Option<i64>, Option<i64>, i64)> = tx
                .prepare_cached(
                    "SELECT content, valid_from, valid_until, version FROM assignments
                     WHERE identity_id = ?1 AND resource_type = ?2",
                )?
                .query_row(params![identity_id, resource_type], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .optional()?;
            check(
                || format!("the assignment of {resource_type} to `{identity}`"),
                *expect,
                found.as_ref().map(|f| f.3),
            )?;
            let Some((content, valid_from, valid_until, _)) = found else {
                applied.unchanged += 1;
                return Ok(None);
            };
            let content: ResourceContent = from_json(&content, "assignment content")?;
            let before = json(&Stored { content: &content, valid_from, valid_until });
            record(tx, batch, now, &entity_type, identity, Some(resource_type), "withdrawn", Some(&before), None)?;
            tx.prepare_cached("DELETE FROM assignments WHERE identity_id = ?1 AND resource_type = ?2")?
                .execute(params![identity_id, resource_type])?;
            applied.assignments_withdrawn += 1;
            Ok(None)
        }
    }
}

#[derive(Serialize)]
struct IdentityBody<'a> {
    display_name: &'a str,
    attributes: &'a BTreeMap<String, String>,
}

/// The row id and entity type of the identity `key` of `resource_type`'s entity type.
fn owner(tx: &Db, key: &str, resource_type: &str) -> Result<(i64, String)> {
    let entity_type: Option<String> = tx
        .prepare_cached("SELECT entity_type FROM resource_types WHERE name = ?1")?
        .query_row([resource_type], |r| r.get(0))
        .optional()?;
    let Some(entity_type) = entity_type else {
        return Err(StoreError::Invalid(format!("unknown resource type `{resource_type}`")));
    };
    let id: Option<i64> = tx
        .prepare_cached("SELECT id FROM identities WHERE entity_type = ?1 AND key = ?2 AND removed_at IS NULL")?
        .query_row([&entity_type, key], |r| r.get(0))
        .optional()?;
    let id = id.ok_or_else(|| {
        StoreError::Invalid(format!("assignment of {resource_type} to `{key}`: there is no {entity_type} `{key}`"))
    })?;
    Ok((id, entity_type))
}

/// Withdraws every assignment of `resource_type` the request did not set; returns how many.
fn withdraw_unlisted(tx: &Db, batch: &DesiredBatch, now: i64, resource_type: &str) -> Result<u64> {
    // identity id, entity type, key, content, validity
    type Gone = (i64, String, String, String, Option<i64>, Option<i64>);
    let gone: Vec<Gone> = tx
        .prepare_cached(
            "SELECT a.identity_id, i.entity_type, i.key, a.content, a.valid_from, a.valid_until
             FROM assignments a JOIN identities i ON i.id = a.identity_id
             WHERE a.resource_type = ?1 AND NOT EXISTS (SELECT 1 FROM snapshot_kept k
                WHERE k.identity_id = a.identity_id AND k.resource_type = a.resource_type)",
        )?
        .query_map([resource_type], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?
        .collect::<Result<_, _>>()?;
    let mut delete = tx.prepare_cached("DELETE FROM assignments WHERE identity_id = ?1 AND resource_type = ?2")?;
    for (identity_id, entity_type, key, content, valid_from, valid_until) in &gone {
        let content: ResourceContent = from_json(content, "assignment content")?;
        let before = json(&Stored { content: &content, valid_from: *valid_from, valid_until: *valid_until });
        record(tx, batch, now, entity_type, key, Some(resource_type), "withdrawn", Some(&before), None)?;
        delete.execute(params![identity_id, resource_type])?;
    }
    Ok(gone.len() as u64)
}
