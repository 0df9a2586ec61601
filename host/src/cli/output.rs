//! Printing results: tables for people, JSON (`--json`) for scripts.

use comfy_table::{ContentArrangement, Table, presets::NOTHING};
use serde_json::json;

use provision::jobs::JobReport;
use provision::model::{HistoryEntry, Order, format_time};

/// A borderless table with a header, wrapping long cells to the terminal's width (120
/// columns when stdout is not a terminal; scripts should use `--json`).
pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    let width = console::Term::stdout().size_checked().map_or(120, |(_, columns)| columns);
    table
        .load_style(NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(width)
        .set_header(header.to_vec());
    table
}

/// Pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn order_json(order: &Order) -> serde_json::Value {
    json!({
        "id": order.id,
        "owner": order.owner,
        "entity_type": order.entity_type,
        "resource_type": order.resource_type,
        "resource_id": order.resource_id,
        "change": order.change,
        "state": { "number": order.state.number(), "name": order.state.name() },
        "closed": order.closed,
        "message": order.message,
        "attempts": order.attempts,
        "created_at": format_time(order.created_at),
        "updated_at": format_time(order.updated_at),
    })
}

fn history_json(entry: &HistoryEntry) -> serde_json::Value {
    json!({
        "at": format_time(entry.at),
        "from": entry.from.map(|s| json!({ "number": s.number(), "name": s.name() })),
        "to": { "number": entry.to.number(), "name": entry.to.name() },
        "event": entry.event,
        "actor": entry.actor,
        "reason": entry.reason,
    })
}

/// A list of orders.
pub fn orders(orders: &[Order], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return print_json(&orders.iter().map(order_json).collect::<Vec<_>>());
    }
    if orders.is_empty() {
        println!("No orders.");
        return Ok(());
    }
    let mut t = table(&["ORDER", "OWNER", "RESOURCE TYPE", "CHANGE", "STATE", "UPDATED", "MESSAGE"]);
    for o in orders {
        t.add_row(vec![
            o.id.to_string(),
            o.owner.clone(),
            o.resource_type.clone(),
            o.change.kind.to_string(),
            o.state.to_string(),
            format_time(o.updated_at),
            o.message.clone().unwrap_or_default(),
        ]);
    }
    println!("{}", t.trim_fmt());
    Ok(())
}

/// History lines under an order, for people.
pub fn history_lines(history: &[HistoryEntry]) -> String {
    let mut t = table(&["", "AT", "FROM", "TO", "BY", "WHY"]);
    for h in history {
        t.add_row(vec![
            " ".to_string(),
            format_time(h.at),
            h.from.map_or_else(|| "(new)".to_string(), |s| s.to_string()),
            h.to.to_string(),
            h.actor.clone(),
            h.reason.clone(),
        ]);
    }
    t.trim_fmt()
}

/// One order with its history.
pub fn order(order: &Order, history: &[HistoryEntry], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        let mut value = order_json(order);
        value["history"] = history.iter().map(history_json).collect();
        return print_json(&value);
    }
    println!(
        "Order {}: {} {} for {} ({}), state {}",
        order.id, order.change.kind, order.resource_type, order.owner, order.entity_type, order.state
    );
    let summary = order.change.summary();
    if !summary.is_empty() {
        println!("  change: {summary}");
    }
    if let Some(closed) = &order.closed {
        println!("  closed: {closed}");
    }
    println!("{}", history_lines(history));
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
        println!("problem: {problem}");
    }
    Ok(())
}
