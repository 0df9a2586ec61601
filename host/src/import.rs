//! Desired state from files: identities and their assignments, in TOML or CSV (real feeds are
//! CSV). This is how a deployment (or the demo) feeds the host what should be from its own
//! machine; every error names the file, the line and the column (and in TOML the key). The
//! files are applied as one request through [`crate::app::desired::import`], the function the
//! API's changes go through too.
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
//!
//! A CSV file holds one of the two, told apart by its header: identities have the columns
//! `entity_type`, `key` and optionally `display_name`; assignments `identity`, `resource_type`
//! and optionally `entitlements` (separated by `;`), `valid_from`, `valid_until`. Every other
//! column is an attribute; an empty cell leaves that attribute out.
//!
//! ```csv
//! entity_type,key,display_name,department
//! Directory_User,alice,Alice Martin,Finance
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::app::desired::DesiredRequest;
use crate::config::{Config, Source, SourceError};
use crate::host::Host;
use crate::limits::{self, OverLimit, Part};
use crate::model::ResourceContent;
use crate::operators::ActionError;
use crate::store::{Assignment, DesiredChange, Expect, Identity, Store};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDesired {
    #[serde(default)]
    identities: Vec<RawIdentity>,
    #[serde(default)]
    assignments: Vec<TomlAssignment>,
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
struct TomlAssignment {
    identity: String,
    resource_type: String,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    #[serde(default)]
    entitlements: Vec<String>,
    valid_from: Option<toml::Value>,
    valid_until: Option<toml::Value>,
}

/// An assignment as a file gives it, before it is checked.
struct RawAssignment {
    identity: String,
    resource_type: String,
    attributes: BTreeMap<String, String>,
    // A list, not a set, until checked: an entitlement over its limit is named by its place.
    entitlements: Vec<String>,
    valid_from: Option<String>,
    valid_until: Option<String>,
}

/// Validated desired state from one or more files.
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
    /// Identities in the files.
    pub identities: usize,
    /// Assignments in the files.
    pub assignments: usize,
    /// Identities and assignments that were as the files say already: nothing written.
    pub unchanged: u64,
    /// Assignments withdrawn (with `replace`).
    pub withdrawn: usize,
}

/// Where an item of a file is, to name it in errors.
trait Locator {
    /// An error about `field` of item `index` of `section` (`identities`, `assignments`):
    /// `key`, `attributes.NAME`, `entitlements[3]`.
    fn error(&self, section: &str, index: usize, field: &str, message: &str) -> SourceError;
}

struct TomlLocator<'a>(&'a Source);

impl Locator for TomlLocator<'_> {
    fn error(&self, section: &str, index: usize, field: &str, message: &str) -> SourceError {
        let at = format!("{section}[{index}]");
        let key = if field.is_empty() { at.clone() } else { format!("{at}.{field}") };
        let mut located = self.0.error(key, message);
        // A name the locator cannot follow (one with a dot) is located at its parent.
        let parent = field.split(['.', '[']).next().filter(|p| *p != field).map(|p| format!("{at}.{p}"));
        if located.position.is_none()
            && let Some(parent) = &parent
        {
            located.position = self.0.locate(parent);
        }
        if field.starts_with("attributes.")
            && let Some(parent) = parent
            && located.key.len() > parent.len() + 1 + 64
        {
            // An oversize name is in the message already, cut; the key keeps the error short.
            located.key = parent;
        }
        located
    }
}

struct CsvLocator {
    file: PathBuf,
    /// The columns, by name.
    header: Vec<String>,
    /// Each record's line.
    lines: Vec<usize>,
}

impl Locator for CsvLocator {
    fn error(&self, _section: &str, index: usize, field: &str, message: &str) -> SourceError {
        let column_name = match field.split_once('.') {
            Some(("attributes", name)) => name,
            _ => field.split('[').next().unwrap_or(field),
        };
        let line = self.lines.get(index).copied().unwrap_or(1);
        let column = self.header.iter().position(|c| c == column_name);
        let message = match column {
            Some(_) => format!("column `{column_name}`: {message}"),
            None => message.to_string(),
        };
        SourceError {
            file: self.file.clone(),
            key: String::new(),
            position: Some((line, column.map_or(1, |c| c + 1))),
            message,
        }
    }
}

fn part_field(part: &Part) -> String {
    match part {
        Part::Attribute(name) => format!("attributes.{name}"),
        Part::Attributes => "attributes".into(),
        Part::Entitlement(i) => format!("entitlements[{i}]"),
        Part::Entitlements => "entitlements".into(),
        Part::Content => String::new(),
    }
}

fn over_limit(locator: &dyn Locator, section: &str, index: usize, error: OverLimit) -> SourceError {
    locator.error(section, index, &part_field(&error.part), &error.message)
}

/// Reads and validates a desired-state file against the config (entity and resource types) and
/// the identities the store already knows.
pub fn load(file: &Path, config: &Config, store: &Store) -> Result<Desired, SourceError> {
    load_all(&[file.to_path_buf()], config, store)
}

/// Reads and validates several files (TOML or CSV, by extension) as one desired state: an
/// assignment may name an identity of an earlier file.
pub fn load_all(files: &[PathBuf], config: &Config, store: &Store) -> Result<Desired, SourceError> {
    let mut checker = Checker { config, store, in_files: HashSet::new(), seen: HashSet::new() };
    let mut desired = Desired { identities: Vec::new(), assignments: Vec::new() };
    for file in files {
        let is_csv = file.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        if is_csv {
            let (identities, assignments, locator) = read_csv(file)?;
            checker.add(&locator, identities, assignments, &mut desired)?;
        } else {
            let source = Source::read(file)?;
            let raw: RawDesired = source.parse()?;
            let locator = TomlLocator(&source);
            let mut assignments = Vec::new();
            for (i, a) in raw.assignments.into_iter().enumerate() {
                let text = |field: &str, value: Option<toml::Value>| match value {
                    None => Ok(None),
                    Some(toml::Value::String(s)) => Ok(Some(s)),
                    Some(toml::Value::Datetime(d)) => Ok(Some(d.to_string())),
                    Some(other) => Err(locator.error(
                        "assignments",
                        i,
                        field,
                        &format!("expected a date-time such as 2027-01-01T00:00:00Z, found {}", other.type_str()),
                    )),
                };
                assignments.push(RawAssignment {
                    valid_from: text("valid_from", a.valid_from)?,
                    valid_until: text("valid_until", a.valid_until)?,
                    identity: a.identity,
                    resource_type: a.resource_type,
                    attributes: a.attributes,
                    entitlements: a.entitlements,
                });
            }
            checker.add(&locator, raw.identities, assignments, &mut desired)?;
        }
    }
    Ok(desired)
}

type CsvContent = (Vec<RawIdentity>, Vec<RawAssignment>, CsvLocator);

/// Reads a CSV file of identities or of assignments (its header says which).
fn read_csv(file: &Path) -> Result<CsvContent, SourceError> {
    let fail = |position: Option<(usize, usize)>, message: String| SourceError {
        file: file.to_path_buf(),
        key: String::new(),
        position,
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_path(file)
        .map_err(|e| fail(None, format!("cannot read the file: {e}")))?;
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| fail(Some((1, 1)), format!("cannot read the header: {e}")))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if let Some((i, _)) = header.iter().enumerate().find(|(i, h)| header[..*i].contains(h)) {
        return Err(fail(Some((1, i + 1)), format!("the column `{}` is there twice", header[i])));
    }
    if let Some(i) = header.iter().position(String::is_empty) {
        return Err(fail(Some((1, i + 1)), "a column without a name".into()));
    }
    let has = |name: &str| header.iter().any(|h| h == name);
    let identities = has("entity_type") && has("key");
    let assignments = has("identity") && has("resource_type");
    if identities == assignments {
        return Err(fail(
            Some((1, 1)),
            format!(
                "the header ({}) is neither of identities (entity_type, key, display_name, attribute columns) nor \
                 of assignments (identity, resource_type, entitlements, valid_from, valid_until, attribute columns)",
                header.join(", ")
            ),
        ));
    }
    let known: &[&str] = if identities {
        &["entity_type", "key", "display_name"]
    } else {
        &["identity", "resource_type", "entitlements", "valid_from", "valid_until"]
    };
    let mut locator = CsvLocator { file: file.to_path_buf(), header: header.clone(), lines: Vec::new() };
    let (mut people, mut assigned) = (Vec::new(), Vec::new());
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(1, |p| usize::try_from(p.line()).unwrap_or(usize::MAX));
            let message = match e.kind() {
                csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                    format!("{len} fields, but the header has {expected_len}")
                }
                _ => e.to_string(),
            };
            fail(Some((line, 1)), message)
        })?;
        locator.lines.push(record.position().map_or(1, |p| usize::try_from(p.line()).unwrap_or(usize::MAX)));
        let cell = |name: &str| header.iter().position(|h| h == name).and_then(|i| record.get(i)).map(str::trim);
        let attributes: BTreeMap<String, String> = header
            .iter()
            .zip(record.iter())
            .filter(|(name, value)| !known.contains(&name.as_str()) && !value.trim().is_empty())
            .map(|(name, value)| (name.clone(), value.trim().to_string()))
            .collect();
        let text = |name: &str| cell(name).filter(|v| !v.is_empty()).map(str::to_string);
        if identities {
            people.push(RawIdentity {
                entity_type: cell("entity_type").unwrap_or_default().to_string(),
                key: cell("key").unwrap_or_default().to_string(),
                display_name: text("display_name"),
                attributes,
            });
        } else {
            assigned.push(RawAssignment {
                identity: cell("identity").unwrap_or_default().to_string(),
                resource_type: cell("resource_type").unwrap_or_default().to_string(),
                attributes,
                entitlements: cell("entitlements")
                    .unwrap_or_default()
                    .split(';')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(str::to_string)
                    .collect(),
                valid_from: text("valid_from"),
                valid_until: text("valid_until"),
            });
        }
    }
    Ok((people, assigned, locator))
}

/// Checks items against the config, the store and the files read before.
struct Checker<'a> {
    config: &'a Config,
    store: &'a Store,
    /// Identities of the files so far.
    in_files: HashSet<(String, String)>,
    /// Assignments of the files so far.
    seen: HashSet<(String, String)>,
}

impl Checker<'_> {
    fn add(
        &mut self,
        locator: &dyn Locator,
        identities: Vec<RawIdentity>,
        assignments: Vec<RawAssignment>,
        desired: &mut Desired,
    ) -> Result<(), SourceError> {
        let config = self.config;
        for (i, r) in identities.into_iter().enumerate() {
            let error = |field: &str, message: &str| locator.error("identities", i, field, message);
            if !config.entity_types.contains_key(&r.entity_type) {
                let known = config.entity_types.keys().cloned().collect::<Vec<_>>().join(", ");
                return Err(error(
                    "entity_type",
                    &format!("unknown entity type `{}` (the config defines: {known})", r.entity_type),
                ));
            }
            if r.key.trim().is_empty() {
                return Err(error("key", "must not be empty"));
            }
            limits::check_id("the key", &r.key, limits::IDENTITY_KEY).map_err(|message| error("key", &message))?;
            limits::check_data(r.attributes.iter().map(|(n, v)| (n.as_str(), v.as_str())), [])
                .map_err(|e| over_limit(locator, "identities", i, e))?;
            if !self.in_files.insert((r.entity_type.clone(), r.key.clone())) {
                return Err(error("key", &format!("identity `{}` is listed twice", r.key)));
            }
            desired.identities.push(Identity {
                display_name: r.display_name.unwrap_or_else(|| r.key.clone()),
                entity_type: r.entity_type,
                key: r.key,
                attributes: r.attributes,
            });
        }
        for (i, r) in assignments.into_iter().enumerate() {
            let error = |field: &str, message: &str| locator.error("assignments", i, field, message);
            limits::check_data(
                r.attributes.iter().map(|(n, v)| (n.as_str(), v.as_str())),
                r.entitlements.iter().map(String::as_str),
            )
            .map_err(|e| over_limit(locator, "assignments", i, e))?;
            let Some(rt) = config.resource_types.get(&r.resource_type) else {
                let known = config.resource_types.keys().cloned().collect::<Vec<_>>().join(", ");
                return Err(error(
                    "resource_type",
                    &format!("unknown resource type `{}` (the config defines: {known})", r.resource_type),
                ));
            };
            limits::check_id("the identity", &r.identity, limits::IDENTITY_KEY)
                .map_err(|message| error("identity", &message))?;
            let known = self.in_files.contains(&(rt.entity_type.clone(), r.identity.clone()))
                || self
                    .store
                    .identity_exists(&rt.entity_type, &r.identity)
                    .map_err(|e| error("identity", &e.to_string()))?;
            if !known {
                return Err(error(
                    "identity",
                    &format!(
                        "no identity `{}` of entity type {} (in these files or the database)",
                        r.identity, rt.entity_type
                    ),
                ));
            }
            if !self.seen.insert((r.identity.clone(), r.resource_type.clone())) {
                return Err(error(
                    "identity",
                    &format!(
                        "`{}` is assigned {} twice; an identity has at most one resource of a type",
                        r.identity, r.resource_type
                    ),
                ));
            }
            let time = |field: &str, text: Option<String>| -> Result<Option<i64>, SourceError> {
                text.map(|t| {
                    t.parse::<jiff::Timestamp>().map(|t| t.as_millisecond()).map_err(|e| {
                        error(
                            field,
                            &format!("`{t}` is not a date-time with a UTC offset, such as 2027-01-01T00:00:00Z: {e}"),
                        )
                    })
                })
                .transpose()
            };
            let valid_from = time("valid_from", r.valid_from)?;
            let valid_until = time("valid_until", r.valid_until)?;
            if let (Some(from), Some(until)) = (valid_from, valid_until)
                && until <= from
            {
                return Err(error("valid_until", "must be after valid_from"));
            }
            desired.assignments.push(Assignment {
                identity: r.identity,
                resource_type: r.resource_type,
                content: ResourceContent {
                    attributes: r.attributes,
                    entitlements: r.entitlements.into_iter().collect(),
                },
                valid_from,
                valid_until,
            });
        }
        Ok(())
    }
}

impl Desired {
    /// Writes the identities, then the assignments, as one request (all or nothing) that
    /// history names `actor` (`import:FILE`). With `replace`, assignments not in the files are
    /// withdrawn: the files are then the complete desired state.
    pub fn apply(&self, host: &mut Host, actor: &str, replace: bool) -> Result<Imported, ActionError> {
        let changes = self
            .identities
            .iter()
            .map(|i| DesiredChange::PutIdentity(i.clone(), Expect::Anything))
            .chain(self.assignments.iter().map(|a| DesiredChange::SetAssignment(a.clone(), Expect::Anything)))
            .collect();
        let snapshot = if replace { host.config.resource_types.keys().cloned().collect() } else { Vec::new() };
        let applied = crate::app::desired::import(
            host,
            actor.to_string(),
            DesiredRequest { changes, snapshot, request_id: None },
        )?;
        Ok(Imported {
            identities: self.identities.len(),
            assignments: self.assignments.len(),
            unchanged: applied.unchanged,
            withdrawn: usize::try_from(applied.assignments_withdrawn).unwrap_or(usize::MAX),
        })
    }
}
