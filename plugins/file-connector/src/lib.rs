//! `file-connector`: a connector whose managed system is a directory of JSON-lines journals.
//!
//! Each order becomes one JSON line appended to `{dir}/{resource-type}.jsonl` in the directory
//! the host granted it. The journal is the managed system: `read` replays it to list the
//! resources it describes, so synchronisation moves Executed orders to Verified. Useful as a
//! drop for systems that import files, as an audit trail, and as the reference connector for
//! plugin authors.
//!
//! It refuses, with a permanent error, an order it cannot apply: creating a resource that
//! already exists, or changing or deleting one that does not. An order whose idempotency key is
//! already in the journal was written by an earlier attempt: it is reported executed again and
//! not written twice. A last line cut short by a crash (no newline) was never reported
//! executed: it is cut off before the next write, and the order, sent again, is written whole.
//!
//! Config: `dir` (the guest path of the granted directory, default `/data`), `page-size`
//! (resources per `read` page, default 500).

wit_bindgen::generate!({ path: "../../wit", world: "synchronising-connector" });

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, ErrorKind, Write};

use exports::provision::plugin::fulfil::{self, ErrorKind as Kind, Failure, Outcome};
use exports::provision::plugin::read::{self, ManagedResource, Page};
use provision::plugin::config;
use provision::plugin::log::{self, Level};
use provision::plugin::types::{Attribute, ChangeKind, Order};
use serde::{Deserialize, Serialize};

struct FileConnector;

/// One journal line: an order as written.
#[derive(Serialize, Deserialize)]
struct Line {
    /// The order's idempotency key.
    key: String,
    order: u64,
    change: Change,
    /// The resource's id in this managed system (the owner's key).
    id: String,
    owner: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    attributes: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    cleared: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    granted: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    revoked: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Change {
    Added,
    Modified,
    Deleted,
}

/// A resource as the journal describes it after replay.
#[derive(Default)]
struct Resource {
    owner: String,
    attributes: BTreeMap<String, String>,
    entitlements: BTreeSet<String>,
}

/// The state of one resource type's journal.
#[derive(Default)]
struct Journal {
    resources: BTreeMap<String, Resource>,
    keys: HashSet<String>,
}

impl Journal {
    fn path(resource_type: &str) -> Result<String, String> {
        // Resource type names come from the host's config; refuse anything that could leave
        // the directory even though the sandbox would stop it anyway.
        if resource_type.is_empty() || !resource_type.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!("resource type `{resource_type}` is not a safe file name"));
        }
        let dir = config::get("dir").unwrap_or_else(|| "/data".to_string());
        Ok(format!("{}/{resource_type}.jsonl", dir.trim_end_matches('/')))
    }

    /// Replays the journal. With `repair`, a torn last line (a write cut short) is cut off
    /// the file; without, it is only skipped.
    fn load(resource_type: &str, repair: bool) -> Result<Journal, String> {
        let path = Journal::path(resource_type)?;
        let mut text = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Journal::default()),
            Err(e) => return Err(format!("cannot read {path}: {e}")),
        };
        let complete = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if complete < text.len() {
            log::write(
                Level::Warn,
                "the journal ends with a torn line (an interrupted write); it is ignored",
                &[("file".to_string(), path.clone()), ("bytes".to_string(), (text.len() - complete).to_string())],
            );
            if repair {
                let file =
                    OpenOptions::new().write(true).open(&path).map_err(|e| format!("cannot open {path}: {e}"))?;
                file.set_len(complete as u64).map_err(|e| format!("cannot cut the torn line off {path}: {e}"))?;
            }
            text.truncate(complete);
        }
        let mut journal = Journal::default();
        for (n, line) in BufReader::new(&text[..]).lines().enumerate() {
            let line = line.map_err(|e| format!("cannot read {path}: {e}"))?;
            if line.trim().is_empty() {
                continue;
            }
            let line: Line =
                serde_json::from_str(&line).map_err(|e| format!("{path} line {}: not a journal line: {e}", n + 1))?;
            journal.apply(&line);
        }
        Ok(journal)
    }

    fn apply(&mut self, line: &Line) {
        self.keys.insert(line.key.clone());
        match line.change {
            Change::Deleted => {
                self.resources.remove(&line.id);
            }
            Change::Added | Change::Modified => {
                let resource = self.resources.entry(line.id.clone()).or_default();
                resource.owner = line.owner.clone();
                for (name, value) in &line.attributes {
                    resource.attributes.insert(name.clone(), value.clone());
                }
                for name in &line.cleared {
                    resource.attributes.remove(name);
                }
                resource.entitlements.extend(line.granted.iter().cloned());
                for entitlement in &line.revoked {
                    resource.entitlements.remove(entitlement);
                }
            }
        }
    }

    /// Checks an order against the current state and turns it into a journal line.
    fn prepare(&self, order: &Order) -> Result<Line, String> {
        let id = order.resource_id.clone().unwrap_or_else(|| order.owner.clone());
        let exists = self.resources.contains_key(&id);
        let change = match order.change {
            ChangeKind::Added if exists => {
                return Err(format!("{} `{id}` already exists", order.resource_type));
            }
            ChangeKind::Modified | ChangeKind::Deleted if !exists => {
                return Err(format!("{} `{id}` does not exist", order.resource_type));
            }
            ChangeKind::Added => Change::Added,
            ChangeKind::Modified => Change::Modified,
            ChangeKind::Deleted => Change::Deleted,
        };
        Ok(Line {
            key: order.idempotency_key.clone(),
            order: order.id,
            change,
            id,
            owner: order.owner.clone(),
            attributes: order.attributes.iter().map(|a| (a.name.clone(), a.value.clone())).collect(),
            cleared: order.attributes_cleared.clone(),
            granted: order.entitlements_added.clone(),
            revoked: order.entitlements_removed.clone(),
        })
    }
}

fn permanent(message: String) -> Outcome {
    Outcome::Failed(Failure { kind: Kind::Permanent, message, retry_after_seconds: None })
}

fn transient(message: String) -> Outcome {
    Outcome::Failed(Failure { kind: Kind::Transient, message, retry_after_seconds: None })
}

/// Fulfils the orders of one resource type; `slots` are their positions in the batch.
fn fulfil_type(resource_type: &str, orders: &[&Order], outcomes: &mut [Option<Outcome>], slots: &[usize]) {
    let mut journal = match Journal::load(resource_type, true) {
        Ok(journal) => journal,
        Err(message) => {
            for &slot in slots {
                outcomes[slot] = Some(transient(message.clone()));
            }
            return;
        }
    };
    let mut text = String::new();
    let mut written = Vec::new();
    for (order, &slot) in orders.iter().zip(slots) {
        if journal.keys.contains(&order.idempotency_key) {
            log::write(
                Level::Info,
                "order already in the journal; not written again",
                &[("order".to_string(), order.id.to_string())],
            );
            let id = order.resource_id.clone().unwrap_or_else(|| order.owner.clone());
            outcomes[slot] = Some(Outcome::Executed(Some(id)));
            continue;
        }
        match journal.prepare(order) {
            Ok(line) => {
                // serde_json cannot fail on this type (string keys, no floats).
                text.push_str(&serde_json::to_string(&line).unwrap_or_default());
                text.push('\n');
                journal.apply(&line);
                written.push((slot, line.id));
            }
            Err(message) => outcomes[slot] = Some(permanent(message)),
        }
    }
    if written.is_empty() {
        return;
    }
    let result = Journal::path(resource_type).and_then(|path| {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("cannot open {path} for writing: {e}"))?;
        file.write_all(text.as_bytes()).and_then(|()| file.sync_data()).map_err(|e| format!("cannot write {path}: {e}"))
    });
    for (slot, id) in written {
        outcomes[slot] = Some(match &result {
            Ok(()) => Outcome::Executed(Some(id)),
            Err(message) => transient(message.clone()),
        });
    }
}

impl fulfil::Guest for FileConnector {
    fn fulfil(orders: Vec<Order>) -> Vec<Outcome> {
        let mut by_type: BTreeMap<&str, (Vec<&Order>, Vec<usize>)> = BTreeMap::new();
        for (slot, order) in orders.iter().enumerate() {
            let entry = by_type.entry(order.resource_type.as_str()).or_default();
            entry.0.push(order);
            entry.1.push(slot);
        }
        let mut outcomes: Vec<Option<Outcome>> = orders.iter().map(|_| None).collect();
        for (resource_type, (group, slots)) in &by_type {
            fulfil_type(resource_type, group, &mut outcomes, slots);
        }
        outcomes.into_iter().map(|o| o.unwrap_or_else(|| permanent("order was not processed".to_string()))).collect()
    }
}

impl read::Guest for FileConnector {
    fn read(resource_type: String, cursor: Option<String>) -> Result<Page, Failure> {
        let page_size = config::get("page-size").and_then(|v| v.parse::<usize>().ok()).unwrap_or(500).max(1);
        let journal = Journal::load(&resource_type, false).map_err(|message| Failure {
            kind: Kind::Transient,
            message,
            retry_after_seconds: None,
        })?;
        let start = match &cursor {
            Some(after) => std::ops::Bound::Excluded(after.clone()),
            None => std::ops::Bound::Unbounded,
        };
        let mut resources: Vec<ManagedResource> = journal
            .resources
            .range((start, std::ops::Bound::Unbounded))
            .take(page_size + 1)
            .map(|(id, r)| ManagedResource {
                id: id.clone(),
                owner: Some(r.owner.clone()),
                attributes: r
                    .attributes
                    .iter()
                    .map(|(name, value)| Attribute { name: name.clone(), value: value.clone() })
                    .collect(),
                entitlements: r.entitlements.iter().cloned().collect(),
            })
            .collect();
        let next_cursor = if resources.len() > page_size {
            resources.truncate(page_size);
            resources.last().map(|r| r.id.clone())
        } else {
            None
        };
        Ok(Page { resources, next_cursor })
    }
}

impl exports::provision::plugin::describe::Guest for FileConnector {
    fn describe() -> exports::provision::plugin::describe::Description {
        exports::provision::plugin::describe::Description {
            name: env!("CARGO_PKG_NAME").to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            summary: "Writes orders as JSON lines to a granted directory and reads them back.".to_string(),
            resource_types: Vec::new(),
        }
    }
}

export!(FileConnector);
