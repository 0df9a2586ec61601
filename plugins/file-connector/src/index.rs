//! The journal's index: a hash table in a file next to the journal (`{resource-type}.index`),
//! so that an order is checked against the managed system with a few small reads instead of a
//! replay of the whole journal, and a plugin instance (fresh for every batch) needs memory for
//! its batch only, whatever the size of the managed system.
//!
//! The index is derived: the journal is the truth. The header records how much of the journal
//! the index covers and fingerprints of the journal's first bytes and of the bytes just before
//! that point; an index that does not match its journal (deleted, truncated or replaced
//! journal; missing or foreign index) is rebuilt from the journal, and journal lines past the
//! covered point (written just before a crash) are replayed into it. Deleting the index is
//! always safe.
//!
//! Layout: a 64-byte header, then `2^bits + OVERFLOW` slots of 32 bytes. A resource's home
//! slot is the top `bits` bits of the 128-bit hash of its id; collisions probe forward, never
//! wrapping (the overflow slots catch the end). The table doubles when half full.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, ErrorKind};

use xxhash_rust::xxh3::{xxh3_64, xxh3_128};

use crate::pio;

const MAGIC: &[u8; 8] = b"PFCIDX01";
const HEADER: u64 = 64;
const SLOT: usize = 32;
/// Bytes per read and write of the table: small, because a batch touches scattered slots.
const PAGE: usize = 1024;
const SLOTS_PER_PAGE: u64 = (PAGE / SLOT) as u64;
/// Slots past the end of the table, so that probing never wraps around.
const OVERFLOW: u64 = 1024;
const MIN_BITS: u32 = 12;
/// Table pages kept in memory before dirty ones are written out (4 MiB).
const MAX_PAGES: usize = 4096;
/// Bytes of the journal fingerprinted at its start and before the covered point.
const PRINT: u64 = 64;

/// What the journal says about one resource.
#[derive(Clone, Copy, Default, PartialEq, Debug)]
pub struct Slot {
    /// Hash of the resource id; never 0 (0 marks an empty slot).
    pub id: u128,
    /// Hash of the idempotency key of the last line written for the resource.
    pub key: u64,
    /// Journal offset of that line.
    pub latest: u64,
    /// False after a deletion (the slot stays, so a repeated deletion is still recognised).
    pub exists: bool,
}

const EXISTS: u64 = 1 << 63;

impl Slot {
    fn encode(&self, out: &mut [u8]) {
        out[..16].copy_from_slice(&self.id.to_le_bytes());
        out[16..24].copy_from_slice(&self.key.to_le_bytes());
        let latest = self.latest | if self.exists { EXISTS } else { 0 };
        out[24..32].copy_from_slice(&latest.to_le_bytes());
    }

    fn decode(bytes: &[u8]) -> Slot {
        let word = |range: std::ops::Range<usize>| u64::from_le_bytes(bytes[range].try_into().unwrap_or_default());
        let id = u128::from_le_bytes(bytes[..16].try_into().unwrap_or_default());
        let latest = word(24..32);
        Slot { id, key: word(16..24), latest: latest & !EXISTS, exists: latest & EXISTS != 0 }
    }
}

/// The hash a resource id is filed under.
pub fn id_hash(id: &str) -> u128 {
    xxh3_128(id.as_bytes()).max(1)
}

/// The hash an idempotency key is recorded as.
pub fn key_hash(key: &str) -> u64 {
    xxh3_64(key.as_bytes())
}

/// The fields of a journal line the index needs.
#[derive(serde::Deserialize)]
pub struct LineHead<'a> {
    #[serde(borrow)]
    pub key: std::borrow::Cow<'a, str>,
    pub change: super::Change,
    #[serde(borrow)]
    pub id: std::borrow::Cow<'a, str>,
}

#[derive(Clone, Copy, Default)]
struct Header {
    bits: u32,
    used: u64,
    covered: u64,
    head: u64,
    tail: u64,
}

pub struct Index {
    file: File,
    path: String,
    header: Header,
    /// Table pages read in this call, and whether they changed.
    pages: HashMap<u64, (Vec<u8>, bool)>,
}

fn io(path: &str, what: &str) -> impl Fn(std::io::Error) -> String {
    let path = path.to_string();
    let what = what.to_string();
    move |e| format!("cannot {what} {path}: {e}")
}

impl Index {
    fn slots(&self) -> u64 {
        (1u64 << self.header.bits) + OVERFLOW
    }

    /// Opens the index of `journal` (`len` bytes of whole lines), brought up to date with it.
    pub fn open(path: &str, journal: &File, journal_path: &str, len: u64) -> Result<Index, String> {
        let mut index = match Index::load(path)? {
            Some(index) if index.header.covered <= len && index.matches(journal, journal_path)? => index,
            _ => return Index::rebuild(path, journal, journal_path, len, MIN_BITS),
        };
        if index.header.covered < len {
            let from = index.header.covered;
            index.replay(journal, journal_path, from, len)?;
            index.commit(journal, journal_path, len)?;
        }
        Ok(index)
    }

    /// The index as stored, if there is one with a readable header.
    fn load(path: &str) -> Result<Option<Index>, String> {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot open {path}: {e}")),
        };
        let mut bytes = [0u8; HEADER as usize];
        if pio::read_exact_at(&file, &mut bytes, 0).is_err() || &bytes[..8] != MAGIC {
            return Ok(None);
        }
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
        let header = Header { bits: word(8) as u32, used: word(16), covered: word(24), head: word(32), tail: word(40) };
        if !(MIN_BITS..=40).contains(&header.bits) {
            return Ok(None);
        }
        let index = Index { file, path: path.to_string(), header, pages: HashMap::new() };
        let size = index.file.metadata().map_err(io(path, "inspect"))?.len();
        Ok((size == HEADER + index.slots() * SLOT as u64).then_some(index))
    }

    /// Whether the journal still starts and continues the way it did when last indexed.
    fn matches(&self, journal: &File, journal_path: &str) -> Result<bool, String> {
        let (head, tail) = fingerprints(journal, journal_path, self.header.covered)?;
        Ok(head == self.header.head && tail == self.header.tail)
    }

    /// A fresh index of the first `len` bytes of the journal, written beside the old one and
    /// renamed over it, so a crash mid-way leaves the old one (and a rebuild next time).
    fn rebuild(path: &str, journal: &File, journal_path: &str, len: u64, bits: u32) -> Result<Index, String> {
        let mut index = Index::create(&format!("{path}.new"), bits)?;
        index.replay(journal, journal_path, 0, len)?;
        index.install(journal, journal_path, len)
    }

    /// An empty table of `2^bits` slots at `fresh`.
    fn create(fresh: &str, bits: u32) -> Result<Index, String> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(fresh)
            .map_err(io(fresh, "create"))?;
        let index = Index {
            file,
            path: fresh.to_string(),
            header: Header { bits, ..Header::default() },
            pages: HashMap::new(),
        };
        let size = HEADER + index.slots() * SLOT as u64;
        index.file.set_len(size).map_err(io(&index.path, "size"))?;
        Ok(index)
    }

    /// Commits a table made by `create` and moves it into place.
    fn install(mut self, journal: &File, journal_path: &str, len: u64) -> Result<Index, String> {
        self.commit(journal, journal_path, len)?;
        let target = self.path.trim_end_matches(".new").to_string();
        std::fs::rename(&self.path, &target).map_err(|e| format!("cannot move {} to {target}: {e}", self.path))?;
        self.path = target;
        Ok(self)
    }

    /// Applies the whole lines of the journal in `from..to`.
    fn replay(&mut self, journal: &File, journal_path: &str, from: u64, to: u64) -> Result<(), String> {
        let mut failure = None;
        for_each_line(journal, journal_path, from, to, |offset, line| {
            let head: LineHead = match serde_json::from_slice(line) {
                Ok(head) => head,
                Err(e) => {
                    failure = Some(format!("{journal_path} at byte {offset}: not a journal line: {e}"));
                    return Ok(false);
                }
            };
            self.reserve(1)?;
            let exists = head.change != super::Change::Deleted;
            self.put(Slot { id: id_hash(&head.id), key: key_hash(&head.key), latest: offset, exists })?;
            Ok(true)
        })?;
        failure.map_or(Ok(()), Err)
    }

    /// Makes room for `more` resources, doubling the table while it would be over half full.
    pub fn reserve(&mut self, more: u64) -> Result<(), String> {
        let mut bits = self.header.bits;
        while (self.header.used + more) * 2 > 1 << bits {
            bits += 1;
        }
        if bits == self.header.bits {
            return Ok(());
        }
        self.flush()?;
        // Built beside this table and renamed over it (this one may itself be a rebuild's
        // `.new`, moved into place later).
        let mut grown = Index::create(&format!("{}.grow", self.path), bits)?;
        grown.header = Header { bits, used: 0, ..self.header };
        let mut page = vec![0u8; PAGE];
        for first in (0..self.slots()).step_by(SLOTS_PER_PAGE as usize) {
            self.read_page(first / SLOTS_PER_PAGE, &mut page)?;
            for slot in page.chunks_exact(SLOT).map(Slot::decode).filter(|s| s.id != 0) {
                grown.put(slot)?;
            }
            grown.trim()?;
        }
        grown.flush()?;
        grown.write_header()?;
        std::fs::rename(&grown.path, &self.path)
            .map_err(|e| format!("cannot move {} to {}: {e}", grown.path, self.path))?;
        grown.path = self.path.clone();
        *self = grown;
        Ok(())
    }

    /// The slot of a resource, if the journal has ever written it.
    pub fn find(&mut self, id: u128) -> Result<Option<Slot>, String> {
        Ok(self.probe(id)?.1)
    }

    /// Records a resource's slot.
    pub fn put(&mut self, slot: Slot) -> Result<(), String> {
        let (at, found) = self.probe(slot.id)?;
        if found.is_none() {
            self.header.used += 1;
        }
        let page = self.page(at / SLOTS_PER_PAGE)?;
        let start = (at % SLOTS_PER_PAGE) as usize * SLOT;
        slot.encode(&mut page.0[start..start + SLOT]);
        page.1 = true;
        Ok(())
    }

    /// The position of `id`'s slot, or of the empty slot it would take, and the slot if found.
    fn probe(&mut self, id: u128) -> Result<(u64, Option<Slot>), String> {
        let mut at = (id >> (128 - self.header.bits)) as u64;
        let end = self.slots();
        while at < end {
            let page = self.page(at / SLOTS_PER_PAGE)?;
            for n in (at % SLOTS_PER_PAGE) as usize..SLOTS_PER_PAGE as usize {
                let slot = Slot::decode(&page.0[n * SLOT..(n + 1) * SLOT]);
                if slot.id == id {
                    return Ok((at, Some(slot)));
                }
                if slot.id == 0 {
                    return Ok((at, None));
                }
                at += 1;
            }
        }
        // Half full at most, so a run of a thousand occupied slots means a broken table.
        Err(format!("{}: no free slot after the end of the table; delete it to rebuild it", self.path))
    }

    fn page(&mut self, number: u64) -> Result<&mut (Vec<u8>, bool), String> {
        if !self.pages.contains_key(&number) {
            self.trim()?;
            let mut bytes = vec![0u8; PAGE];
            self.read_page(number, &mut bytes)?;
            self.pages.insert(number, (bytes, false));
        }
        self.pages.get_mut(&number).ok_or_else(|| "index page vanished".to_string())
    }

    fn read_page(&mut self, number: u64, into: &mut [u8]) -> Result<(), String> {
        if let Some((bytes, _)) = self.pages.get(&number) {
            into.copy_from_slice(bytes);
            return Ok(());
        }
        pio::read_exact_at(&self.file, into, HEADER + number * PAGE as u64).map_err(io(&self.path, "read"))
    }

    /// Keeps the page cache within bounds.
    fn trim(&mut self) -> Result<(), String> {
        if self.pages.len() >= MAX_PAGES {
            self.flush()?;
            self.pages.clear();
        }
        Ok(())
    }

    /// Writes the changed pages.
    fn flush(&mut self) -> Result<(), String> {
        let mut dirty: Vec<(&u64, &mut (Vec<u8>, bool))> = self.pages.iter_mut().filter(|(_, p)| p.1).collect();
        dirty.sort_by_key(|(n, _)| **n);
        for (number, page) in dirty {
            pio::write_all_at(&self.file, &page.0, HEADER + number * PAGE as u64).map_err(io(&self.path, "write"))?;
            page.1 = false;
        }
        Ok(())
    }

    fn write_header(&mut self) -> Result<(), String> {
        let mut bytes = [0u8; HEADER as usize];
        bytes[..8].copy_from_slice(MAGIC);
        let h = self.header;
        for (at, word) in [(8, h.bits as u64), (16, h.used), (24, h.covered), (32, h.head), (40, h.tail)] {
            bytes[at..at + 8].copy_from_slice(&word.to_le_bytes());
        }
        pio::write_all_at(&self.file, &bytes, 0).map_err(io(&self.path, "write"))
    }

    /// Records that the index now covers the first `len` bytes of the journal. Pages go first,
    /// the header last: a crash in between leaves the old covered point, and the lines after
    /// it are replayed again next time (replaying a line twice gives the same slot).
    pub fn commit(&mut self, journal: &File, journal_path: &str, len: u64) -> Result<(), String> {
        self.flush()?;
        let (head, tail) = fingerprints(journal, journal_path, len)?;
        self.header.covered = len;
        self.header.head = head;
        self.header.tail = tail;
        self.write_header()
    }
}

/// Hashes of the journal's first bytes and of the bytes before `len`.
fn fingerprints(journal: &File, path: &str, len: u64) -> Result<(u64, u64), String> {
    let read = |from: u64| -> Result<u64, String> {
        let mut bytes = vec![0u8; (len - from).min(PRINT) as usize];
        pio::read_exact_at(journal, &mut bytes, from).map_err(io(path, "read"))?;
        Ok(xxh3_64(&bytes))
    };
    Ok((read(0)?, read(len.saturating_sub(PRINT))?))
}

/// Calls `f` with the offset and bytes of each whole line of the journal in `from..to`, while
/// it returns true. A line without its newline (a torn write) is not whole.
pub fn for_each_line(
    journal: &File,
    path: &str,
    from: u64,
    to: u64,
    mut f: impl FnMut(u64, &[u8]) -> Result<bool, String>,
) -> Result<(), String> {
    let mut reader = BufReader::with_capacity(1 << 18, pio::Section::new(journal, from, to));
    let mut line = Vec::new();
    let mut offset = from;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(io(path, "read"))?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok(());
        }
        let text = &line[..n - 1];
        if !text.iter().all(u8::is_ascii_whitespace) && !f(offset, text)? {
            return Ok(());
        }
        offset += n as u64;
    }
}

/// The whole line that starts at `offset`.
pub fn line_at(journal: &File, path: &str, offset: u64) -> Result<Vec<u8>, String> {
    let mut reader = BufReader::with_capacity(4096, pio::Section::new(journal, offset, u64::MAX));
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).map_err(io(path, "read"))?;
    if line.pop() != Some(b'\n') {
        return Err(format!("{path}: no whole line at byte {offset}; delete the index to rebuild it"));
    }
    Ok(line)
}
