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
//! the last one written for its resource was written by an earlier attempt (the host keeps one
//! open order per resource): it is reported executed again and not written twice. A last line
//! cut short by a crash (no newline) was never reported executed: it is cut off before the next
//! write, and the order, sent again, is written whole.
//!
//! Next to each journal, `{resource-type}.index` (see `index`) says where each resource's last
//! line is, so a batch costs reads of the slots it touches and `read` follows the journal from
//! its cursor: both stay fast and small however long the journal grows. Each line carries
//! `prev`, the offset of the resource's previous line, to rebuild a resource changed over
//! several lines.
//!
//! Config: `dir` (the guest path of the granted directory, default `/data`), `page-size`
//! (resources per `read` page, default 500).

wit_bindgen::generate!({ path: "../../wit", world: "synchronising-connector" });

mod index;
mod pio;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;

use exports::provision::plugin::fulfil::{self, ErrorKind as Kind, Failure, Outcome};
use exports::provision::plugin::read::{self, ManagedResource, Page};
use index::{Index, LineHead, Slot, for_each_line, id_hash, key_hash, line_at};
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
    /// Offset in the journal of the resource's previous line; none on an `added` line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prev: Option<u64>,
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Change {
    Added,
    Modified,
    Deleted,
}

/// A resource as the journal describes it.
#[derive(Default)]
struct Resource {
    owner: String,
    attributes: BTreeMap<String, String>,
    entitlements: BTreeSet<String>,
}

impl Resource {
    fn apply(&mut self, line: Line) {
        self.owner = line.owner;
        self.attributes.extend(line.attributes);
        for name in &line.cleared {
            self.attributes.remove(name);
        }
        self.entitlements.extend(line.granted);
        for entitlement in &line.revoked {
            self.entitlements.remove(entitlement);
        }
    }
}

/// One resource type's journal, opened with its index.
struct Journal {
    file: File,
    path: String,
    /// Bytes of whole lines.
    len: u64,
    index: Index,
}

fn paths(resource_type: &str) -> Result<(String, String), String> {
    // Resource type names come from the host's config; refuse anything that could leave the
    // directory even though the sandbox would stop it anyway.
    if resource_type.is_empty() || !resource_type.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(format!("resource type `{resource_type}` is not a safe file name"));
    }
    let dir = config::get("dir").unwrap_or_else(|| "/data".to_string());
    let base = format!("{}/{resource_type}", dir.trim_end_matches('/'));
    Ok((format!("{base}.jsonl"), format!("{base}.index")))
}

impl Journal {
    /// Opens the journal for writing (created if missing), cutting off a torn last line.
    fn for_writing(resource_type: &str) -> Result<Journal, String> {
        let (path, index) = paths(resource_type)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("cannot open {path}: {e}"))?;
        let len = file.metadata().map_err(|e| format!("cannot inspect {path}: {e}"))?.len();
        let whole = whole_lines(&file, &path, len)?;
        if whole < len {
            log::write(
                Level::Warn,
                "the journal ends with a torn line (an interrupted write); it is cut off",
                &[("file".to_string(), path.clone()), ("bytes".to_string(), (len - whole).to_string())],
            );
            file.set_len(whole).map_err(|e| format!("cannot cut the torn line off {path}: {e}"))?;
        }
        let index = Index::open(&index, &file, &path, whole)?;
        Ok(Journal { file, path, len: whole, index })
    }

    /// Opens the journal for reading; none if it does not exist. A torn last line is skipped.
    fn for_reading(resource_type: &str) -> Result<Option<Journal>, String> {
        let (path, index) = paths(resource_type)?;
        // The index is a cache the reader may bring up to date, hence read-write.
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot open {path}: {e}")),
        };
        let len = file.metadata().map_err(|e| format!("cannot inspect {path}: {e}"))?.len();
        let len = whole_lines(&file, &path, len)?;
        let index = Index::open(&index, &file, &path, len)?;
        Ok(Some(Journal { file, path, len, index }))
    }

    fn line(&mut self, offset: u64) -> Result<Line, String> {
        let bytes = line_at(&self.file, &self.path, offset)?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{} at byte {offset}: not a journal line: {e}", self.path))
    }

    /// The resource whose last line is the `added` or `modified` line at `offset`, following
    /// `prev` back to the line that added it.
    fn resource(&mut self, offset: u64, last: Line) -> Result<Resource, String> {
        let mut lines = vec![last];
        let mut at = offset;
        while let Some(line) = lines.last() {
            match (line.change, line.prev) {
                // Strictly backwards, so a damaged `prev` cannot loop.
                (Change::Modified, Some(prev)) if prev < at => {
                    at = prev;
                    lines.push(self.line(prev)?);
                }
                _ => break,
            }
        }
        let mut resource = Resource::default();
        for line in lines.into_iter().rev() {
            resource.apply(line);
        }
        Ok(resource)
    }
}

/// The length of the journal's whole lines (up to its last newline).
fn whole_lines(file: &File, path: &str, len: u64) -> Result<u64, String> {
    let mut end = len;
    let mut chunk = [0u8; 4096];
    while end > 0 {
        let from = end.saturating_sub(chunk.len() as u64);
        let part = &mut chunk[..(end - from) as usize];
        pio::read_exact_at(file, part, from).map_err(|e| format!("cannot read {path}: {e}"))?;
        if let Some(at) = part.iter().rposition(|b| *b == b'\n') {
            return Ok(from + at as u64 + 1);
        }
        end = from;
    }
    Ok(0)
}

fn permanent(message: String) -> Outcome {
    Outcome::Failed(Failure { kind: Kind::Permanent, message, retry_after_seconds: None })
}

fn transient(message: String) -> Outcome {
    Outcome::Failed(Failure { kind: Kind::Transient, message, retry_after_seconds: None })
}

/// Fulfils the orders of one resource type; `slots` are their positions in the batch.
fn fulfil_type(resource_type: &str, orders: &[&Order], outcomes: &mut [Option<Outcome>], slots: &[usize]) {
    if let Err(message) = write_type(resource_type, orders, outcomes, slots) {
        for &slot in slots {
            if outcomes[slot].is_none() {
                outcomes[slot] = Some(transient(message.clone()));
            }
        }
    }
}

/// Checks each order against the index, appends the lines of those that apply in one write,
/// then records them in the index. An error leaves the index as it was (its lines, if written,
/// are replayed next time) and fails the orders not yet refused.
fn write_type(
    resource_type: &str,
    orders: &[&Order],
    outcomes: &mut [Option<Outcome>],
    slots: &[usize],
) -> Result<(), String> {
    let mut journal = Journal::for_writing(resource_type)?;
    journal.index.reserve(orders.len() as u64)?;
    let mut text = String::new();
    let mut written = Vec::new();
    for (order, &slot) in orders.iter().zip(slots) {
        let id = order.resource_id.clone().unwrap_or_else(|| order.owner.clone());
        let (id_hash, key) = (id_hash(&id), key_hash(&order.idempotency_key));
        let known = journal.index.find(id_hash)?;
        if known.is_some_and(|s| s.key == key) {
            log::write(
                Level::Info,
                "order already in the journal; not written again",
                &[("order".to_string(), order.id.to_string())],
            );
            outcomes[slot] = Some(Outcome::Executed(Some(id)));
            continue;
        }
        let exists = known.is_some_and(|s| s.exists);
        let change = match order.change {
            ChangeKind::Added if exists => {
                outcomes[slot] = Some(permanent(format!("{} `{id}` already exists", order.resource_type)));
                continue;
            }
            ChangeKind::Modified | ChangeKind::Deleted if !exists => {
                outcomes[slot] = Some(permanent(format!("{} `{id}` does not exist", order.resource_type)));
                continue;
            }
            ChangeKind::Added => Change::Added,
            ChangeKind::Modified => Change::Modified,
            ChangeKind::Deleted => Change::Deleted,
        };
        let line = Line {
            key: order.idempotency_key.clone(),
            order: order.id,
            change,
            id: id.clone(),
            owner: order.owner.clone(),
            attributes: order.attributes.iter().map(|a| (a.name.clone(), a.value.clone())).collect(),
            cleared: order.attributes_cleared.clone(),
            granted: order.entitlements_added.clone(),
            revoked: order.entitlements_removed.clone(),
            prev: known.filter(|_| change != Change::Added).map(|s| s.latest),
        };
        let offset = journal.len + text.len() as u64;
        // serde_json cannot fail on this type (string keys, no floats).
        text.push_str(&serde_json::to_string(&line).unwrap_or_default());
        text.push('\n');
        journal.index.put(Slot { id: id_hash, key, latest: offset, exists: change != Change::Deleted })?;
        written.push((slot, id));
    }
    if written.is_empty() {
        return Ok(());
    }
    let path = journal.path.clone();
    pio::write_all_at(&journal.file, text.as_bytes(), journal.len)
        .and_then(|()| journal.file.sync_data())
        .map_err(|e| format!("cannot write {path}: {e}"))?;
    for (slot, id) in written {
        outcomes[slot] = Some(Outcome::Executed(Some(id)));
    }
    let len = journal.len + text.len() as u64;
    if let Err(message) = journal.index.commit(&journal.file, &path, len) {
        // The lines are written; the index catches up from the journal next time.
        log::write(Level::Warn, "the index was not updated", &[("error".to_string(), message)]);
    }
    Ok(())
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
        let failure = |kind, message| Failure { kind, message, retry_after_seconds: None };
        let start = match &cursor {
            None => 0,
            Some(text) => text.parse::<u64>().map_err(|_| {
                failure(Kind::Permanent, format!("`{text}` is not a cursor of this connector (a journal offset)"))
            })?,
        };
        let page = read_page(&resource_type, start, page_size).map_err(|message| failure(Kind::Transient, message))?;
        Ok(page)
    }
}

/// Follows the journal from `start`; a line is a resource of the page when it is its
/// resource's last line and the resource exists. The cursor is the offset after the last line
/// taken, so lines appended between pages are seen once, at the end.
fn read_page(resource_type: &str, start: u64, page_size: usize) -> Result<Page, String> {
    let Some(mut journal) = Journal::for_reading(resource_type)? else {
        return Ok(Page { resources: Vec::new(), next_cursor: None });
    };
    if start > journal.len {
        return Err(format!("cursor {start} is past the end of {}", journal.path));
    }
    let mut last: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut next = start;
    let (path, len) = (journal.path.clone(), journal.len);
    let mut failure = None;
    for_each_line(&journal.file, &path, start, len, |offset, line| {
        next = offset + line.len() as u64 + 1;
        let head: LineHead = match serde_json::from_slice(line) {
            Ok(head) => head,
            Err(e) => {
                failure = Some(format!("{path} at byte {offset}: not a journal line: {e}"));
                return Ok(false);
            }
        };
        let slot = journal.index.find(id_hash(&head.id))?;
        if slot.is_some_and(|s| s.exists && s.latest == offset) {
            last.push((offset, line.to_vec()));
        }
        Ok(last.len() < page_size)
    })?;
    if let Some(message) = failure {
        return Err(message);
    }
    let mut resources = Vec::with_capacity(last.len());
    for (offset, bytes) in last {
        let line: Line = serde_json::from_slice(&bytes).map_err(|e| format!("{path} at byte {offset}: {e}"))?;
        let id = line.id.clone();
        let resource = journal.resource(offset, line)?;
        resources.push(ManagedResource {
            id,
            owner: Some(resource.owner),
            attributes: resource.attributes.into_iter().map(|(name, value)| Attribute { name, value }).collect(),
            entitlements: resource.entitlements.into_iter().collect(),
        });
    }
    let next_cursor = (next < len).then(|| next.to_string());
    Ok(Page { resources, next_cursor })
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
