//! The audit export: every order state change in a time range, as JSON lines or CSV, written as
//! it is read (a page of rows at a time), so memory stays flat over millions of rows. The CLI
//! (`provision history export`) writes to a file or stdout, the API (`GET /api/v1/history`)
//! into the response as it goes.

use std::io::Write;

use crate::store::{AuditRow, Store, StoreError};

/// Rows read per page.
const PAGE: usize = 2000;

/// The export's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per line.
    #[default]
    Jsonl,
    /// A header, then one row per change.
    Csv,
}

impl Format {
    /// The media type of the format.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Jsonl => "application/jsonl",
            Format::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// What went wrong in an export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing failed (the file, or the client went away).
    #[error("cannot write the export: {0}")]
    Write(#[from] std::io::Error),
}

/// The CSV columns, in order.
const COLUMNS: [&str; 11] =
    ["id", "at", "order", "entity_type", "owner", "resource_type", "from", "to", "event", "actor", "reason"];

fn csv_row(row: &AuditRow) -> [String; 11] {
    [
        row.id.to_string(),
        jiff::Timestamp::from_millisecond(row.at).map(|t| t.to_string()).unwrap_or_else(|_| row.at.to_string()),
        row.order.to_string(),
        row.entity_type.clone(),
        row.owner.clone(),
        row.resource_type.clone(),
        row.from.map(|s| s.name().to_string()).unwrap_or_default(),
        row.to.name().to_string(),
        row.event.clone(),
        row.actor.clone(),
        row.reason.clone(),
    ]
}

/// Writes every state change at or after `since` and before `until` (Unix ms) to `out`, in
/// history order; `progress` hears the count after each page. Returns how many rows it wrote.
pub fn export(
    store: &Store,
    since: i64,
    until: i64,
    format: Format,
    out: impl Write,
    mut progress: impl FnMut(u64),
) -> Result<u64, ExportError> {
    // One way to write a row per format; the paging is the same for both.
    enum Sink<W: Write> {
        Lines(std::io::BufWriter<W>),
        Csv(Box<csv::Writer<W>>),
    }
    let mut sink = match format {
        Format::Jsonl => Sink::Lines(std::io::BufWriter::new(out)),
        Format::Csv => {
            let mut writer = csv::Writer::from_writer(out);
            writer.write_record(COLUMNS).map_err(std::io::Error::other)?;
            Sink::Csv(Box::new(writer))
        }
    };
    let mut written = 0u64;
    let mut after = 0;
    loop {
        let page = store.audit_page(since, until, after, PAGE)?;
        for row in &page {
            match &mut sink {
                Sink::Lines(out) => {
                    serde_json::to_writer(&mut *out, row).map_err(std::io::Error::other)?;
                    out.write_all(b"\n")?;
                }
                Sink::Csv(out) => out.write_record(csv_row(row)).map_err(std::io::Error::other)?,
            }
        }
        written += page.len() as u64;
        progress(written);
        match page.last() {
            Some(last) if page.len() == PAGE => after = last.id,
            _ => break,
        }
    }
    match &mut sink {
        Sink::Lines(out) => out.flush()?,
        Sink::Csv(out) => out.flush()?,
    }
    Ok(written)
}

/// A time as the export's bounds take it: RFC 3339 (`2026-12-01T00:00:00Z`) or a date
/// (`2026-12-01`, midnight UTC); Unix ms.
pub fn parse_time(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    if let Ok(date) = text.parse::<jiff::civil::Date>()
        && let Ok(zoned) = date.to_zoned(jiff::tz::TimeZone::UTC)
    {
        return Ok(zoned.timestamp().as_millisecond());
    }
    Err(format!("`{text}` is not a date-time with a UTC offset (2026-12-01T00:00:00Z) nor a date (2026-12-01)"))
}
