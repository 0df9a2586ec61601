//! Printing results: tables for people, JSON (`--json`) for scripts.
//!
//! Every text from data that a person is shown goes through here: [`Listing`] (tables) and
//! [`Shown`] (lines) escape it (`provision::text`) and cut it to `provision::limits`, then say
//! that `--json` has the whole text.

use comfy_table::{ContentArrangement, Table, presets::NOTHING};

use provision::jobs::JobReport;
use provision::limits::{SHOWN_CELL, SHOWN_DETAIL};
use provision::model::{HistoryEntry, Order, format_time};
use provision::text;

/// Printed under output that cut a text.
pub const CUT_NOTE: &str = "(… marks a text cut short; --json shows it whole)";

/// One cell: a text, or lines shown one under the other (each escaped on its own).
pub enum Cell {
    /// A text; its line breaks are shown escaped.
    Text(String),
    /// Lines.
    Lines(Vec<String>),
}

impl From<String> for Cell {
    fn from(text: String) -> Cell {
        Cell::Text(text)
    }
}

impl From<&str> for Cell {
    fn from(text: &str) -> Cell {
        Cell::Text(text.to_string())
    }
}

/// A borderless table with a header, wrapping long cells to the terminal's width (120
/// columns when stdout is not a terminal; scripts should use `--json`). Each cell is escaped and
/// cut to [`SHOWN_CELL`] characters (or the listing's own limit): the table library wraps a long
/// word in time quadratic in its length, so an uncut 2 MB comment took it hours.
pub struct Listing {
    table: Table,
    max: usize,
    cut: bool,
}

impl Listing {
    /// Cells of this listing are cut at `max` characters instead.
    pub fn cut_at(mut self, max: usize) -> Listing {
        self.max = max;
        self
    }

    /// Adds a row.
    pub fn row<C: Into<Cell>>(&mut self, cells: impl IntoIterator<Item = C>) {
        let cells: Vec<String> = cells
            .into_iter()
            .map(|cell| match cell.into() {
                Cell::Text(text) => self.shown(&text),
                Cell::Lines(lines) => lines.iter().map(|line| self.shown(line)).collect::<Vec<_>>().join("\n"),
            })
            .collect();
        self.table.add_row(cells);
    }

    fn shown(&mut self, text: &str) -> String {
        let (shown, cut) = text::shown(text, self.max);
        self.cut |= cut;
        shown
    }

    /// The table, and under it a note when a cell was cut.
    pub fn render(&self) -> String {
        let table = self.table.trim_fmt();
        if self.cut { format!("{table}\n{CUT_NOTE}") } else { table }
    }
}

/// A listing with this header.
pub fn table(header: &[&str]) -> Listing {
    let mut table = Table::new();
    let width = console::Term::stdout().size_checked().map_or(120, |(_, columns)| columns);
    table
        .load_style(NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(width)
        .set_header(header.to_vec());
    Listing { table, max: SHOWN_CELL, cut: false }
}

/// Texts from data in lines of output: each escaped and cut to [`SHOWN_DETAIL`] characters,
/// remembering whether one was cut so the output can say so ([`Shown::note`]).
#[derive(Default)]
pub struct Shown {
    cut: bool,
}

impl Shown {
    /// `text` as shown.
    pub fn text(&mut self, text: &str) -> String {
        let (shown, cut) = text::shown(text, SHOWN_DETAIL);
        self.cut |= cut;
        shown
    }

    /// Prints [`CUT_NOTE`] if a text was cut.
    pub fn note(&self) {
        if self.cut {
            println!("{CUT_NOTE}");
        }
    }
}

/// `text` (an error or a warning, whose lines are its own) with each line escaped and cut: data
/// in it cannot drive the terminal.
pub fn message(text: &str) -> String {
    text.lines().map(|line| text::shown(line, SHOWN_DETAIL).0).collect::<Vec<_>>().join("\n")
}

/// Pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A list of orders.
pub fn orders(orders: &[Order], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        // The same shape as the API's and the events' (RFC 3339 times).
        return print_json(&orders);
    }
    if orders.is_empty() {
        println!("No orders.");
        return Ok(());
    }
    let mut t = table(&["ORDER", "OWNER", "RESOURCE TYPE", "CHANGE", "STATE", "UPDATED", "MESSAGE"]);
    for o in orders {
        t.row(vec![
            o.id.to_string(),
            o.owner.clone(),
            o.resource_type.clone(),
            o.change.kind.to_string(),
            o.state.to_string(),
            format_time(o.updated_at),
            o.message.clone().unwrap_or_default(),
        ]);
    }
    println!("{}", t.render());
    Ok(())
}

/// History lines under an order, for people; a reason is cut at [`SHOWN_DETAIL`] characters.
pub fn history_lines(history: &[HistoryEntry]) -> String {
    let mut t = table(&["", "AT", "FROM", "TO", "BY", "WHY"]).cut_at(SHOWN_DETAIL);
    for h in history {
        t.row(vec![
            " ".to_string(),
            format_time(h.at),
            h.from.map_or_else(|| "(new)".to_string(), |s| s.to_string()),
            h.to.to_string(),
            h.actor.clone(),
            h.reason.clone(),
        ]);
    }
    t.render()
}

/// One order with its history.
pub fn order(order: &Order, history: &[HistoryEntry], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        let mut value = serde_json::to_value(order)?;
        value["history"] = serde_json::to_value(history)?;
        return print_json(&value);
    }
    let mut s = Shown::default();
    println!(
        "Order {}: {} {} for {} ({}), state {}",
        order.id,
        order.change.kind,
        s.text(&order.resource_type),
        s.text(&order.owner),
        s.text(&order.entity_type),
        order.state
    );
    let summary = order.change.summary();
    if !summary.is_empty() {
        println!("  change: {}", s.text(&summary));
    }
    if let Some(closed) = &order.closed {
        println!("  closed: {}", s.text(closed));
    }
    // The history's own note covers its cells; the lines above note theirs.
    println!("{}", history_lines(history));
    s.note();
    Ok(())
}

/// What a job run did.
pub fn job_report(report: &JobReport, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return print_json(report);
    }
    let c = &report.counters;
    println!(
        "Job run {}: read {} resources; created {} orders ({} released, {} awaiting approval, {} blocked, {} rule errors, \
         {} already matching); {} superseded, {} inactive; fulfilled: {} executed, {} transmitted, {} errored, \
         {} expired, {} retried, {} resumed after a crash, {} found done after a crash; {} verified; {} held by thresholds; notifications: {} written, \
         {} delivered.",
        report.run,
        c.resources_read,
        c.orders_created,
        c.released,
        c.awaiting_approval,
        c.blocked,
        c.rule_errors,
        c.already_matching,
        c.superseded,
        c.inactive,
        c.executed,
        c.transmitted,
        c.errored,
        c.expired,
        c.retried,
        c.resumed,
        c.recovered,
        c.verified,
        c.held,
        report.notifications.notifications,
        report.notifications.delivered
    );
    for problem in &report.problems {
        println!("problem: {}", message(problem));
    }
    for note in &report.notes {
        println!("note: {}", message(note));
    }
    Ok(())
}
