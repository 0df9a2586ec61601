//! Fulfil: carry out Pending orders, connection by connection, in batches. A connector
//! connection calls its plugin's `fulfil`; a manual-ticket connection hands the orders to people
//! (Transmitted), who confirm them later.
//!
//! Before a batch is sent, an attempt is recorded for each of its orders; an attempt still open
//! at the start of a run was cut short by a crash, and its order, still Pending, simply goes out
//! again with the same idempotency key. A transient error puts the order in Errored with its
//! next attempt time from the connection's retry policy; once due, the next run makes it Pending
//! again. A permanent error, or the last attempt, waits for an operator.

use indicatif::ProgressBar;

use super::isolate::{self, Item};
use super::{JobError, JobReport};
use crate::config::{Connection, ConnectionKind};
use crate::host::Host;
use crate::machine::Event;
use crate::model::{Order, ProvisioningState, format_time};
use crate::plugins::Outcome;
use crate::store::{BatchOutcome, OrderFilter, Transition, Unit, UnitKind, UnitSpec};

/// Runs fulfil alone, as a job run.
pub fn fulfil(host: &mut Host, progress: &ProgressBar) -> Result<JobReport, JobError> {
    super::work::run(host, super::Step::Fulfil, progress)
}

/// The plan unit of one connection: attempts cut short by a dead worker, Transmitted orders
/// past their validity, due retries; then one fulfil unit per batch of its Pending orders.
pub(super) fn plan_unit(
    host: &mut Host,
    unit: &Unit,
    report: &mut JobReport,
    spawn: &mut Vec<UnitSpec>,
) -> Result<(), JobError> {
    let Some(connection) = host.config.connections.get(&unit.target).cloned() else { return Ok(()) };
    let resource_types: Vec<String> =
        host.config.resource_types_of(&connection.name).map(|rt| rt.name.clone()).collect();
    if resource_types.is_empty() {
        return Ok(());
    }
    // No live worker holds these attempts' units: their worker died between recording them
    // and recording the outcomes. The orders, still Pending, go out again in this run.
    let interrupted = host.store.close_orphaned_attempts(&connection.name)?;
    if !interrupted.is_empty() {
        tracing::warn!(
            connection = %connection.name,
            "{} orders had an attempt cut short (a crash?); they are sent again with their idempotency keys",
            interrupted.len()
        );
        report.counters.resumed += interrupted.len() as u64;
    }
    if let Some(validity) = connection.transmitted_validity {
        expire_transmitted(host, &resource_types, validity, report)?;
    }
    retry_due(host, &connection, &resource_types, report)?;
    if let ConnectionKind::Connector { plugin } = &connection.kind
        && let Some(failure) = host.unavailable(plugin)
    {
        report.problems.push(format!("connection {}: {failure}; its Pending orders wait", connection.name));
        return Ok(());
    }
    let pending = host.store.order_ids(&pending_of(&resource_types))?;
    let mut lo = 0;
    for batch in pending.chunks(connection.batch_size) {
        let hi = batch.last().copied().unwrap_or(lo);
        spawn.push(UnitSpec {
            kind: UnitKind::Fulfil,
            target: connection.name.clone(),
            range: Some((lo, hi)),
            held: false,
            page: None,
        });
        lo = hi;
    }
    Ok(())
}

/// The Pending orders of these resource types that no threshold holds.
fn pending_of(resource_types: &[String]) -> OrderFilter {
    OrderFilter {
        states: vec![ProvisioningState::Pending],
        resource_types: resource_types.to_vec(),
        held: Some(false),
        ..OrderFilter::default()
    }
}

/// A fulfil unit: one batch of one connection's Pending orders, to its connector (or to people,
/// for a manual-ticket connection).
///
/// Taken over from a worker whose lease lapsed, its open attempts are closed first: their orders,
/// still Pending, go out again with the same idempotency keys; those the dead worker did record
/// an outcome for are no longer Pending and are not sent again.
pub(super) fn batch_unit(host: &mut Host, unit: &Unit, report: &mut JobReport) -> Result<(), JobError> {
    let (Some(connection), Some((lo, hi))) = (host.config.connections.get(&unit.target).cloned(), unit.range) else {
        return Ok(());
    };
    if unit.taken_over {
        let interrupted = host.store.close_unit_attempts(unit.id)?;
        if !interrupted.is_empty() {
            tracing::warn!(
                connection = %connection.name,
                unit = unit.id,
                "took over a batch whose worker died: {} orders are sent again with their idempotency keys",
                interrupted.len()
            );
            report.counters.resumed += interrupted.len() as u64;
        }
    }
    let resource_types: Vec<String> =
        host.config.resource_types_of(&connection.name).map(|rt| rt.name.clone()).collect();
    let batch = host.store.orders(&OrderFilter {
        after: Some(lo),
        upto: Some(hi),
        limit: Some(connection.batch_size),
        ..pending_of(&resource_types)
    })?;
    if batch.is_empty() {
        return Ok(());
    }
    let count = batch.len();
    let progress = ProgressBar::hidden();
    match &connection.kind {
        ConnectionKind::ManualTicket => {
            let transitions: Vec<Transition> =
                batch.iter().map(|o| Transition::new(o.id, Event::HandOver, "handed to manual provisioning")).collect();
            write(host, &transitions, "job:fulfil", report, &progress)?;
        }
        ConnectionKind::Connector { plugin } => {
            if let Some(failure) = host.unavailable(plugin) {
                report.problems.push(format!("connection {}: {failure}; its Pending orders wait", connection.name));
                return Ok(());
            }
            let (batch, refused) = within_limits(batch);
            report.problems.extend(refused.iter().map(|t| format!("order {}: {}", t.order, t.reason)));
            write(host, &refused, "job:fulfil", report, &progress)?;
            if !batch.is_empty() {
                let transitions = send(host, unit, &connection, plugin, &batch, report)?;
                write(host, &transitions, &format!("plugin:{plugin}"), report, &progress)?;
            }
        }
    }
    tracing::info!(connection = %connection.name, orders = count, "fulfilled a batch");
    Ok(())
}

/// Splits off the orders over a data limit (`limits::check_order`): they are not sent, since a
/// connector carrying one out would write what no `read` accepts back; each goes to Errored,
/// permanently, with the limit in its history. Only orders from before the limits can be.
fn within_limits(batch: Vec<Order>) -> (Vec<Order>, Vec<Transition>) {
    let mut refused = Vec::new();
    let batch = batch
        .into_iter()
        .filter(|order| match crate::limits::check_order(order) {
            Ok(()) => true,
            Err(problem) => {
                tracing::warn!(order = order.id, "not sent, over a data limit: {problem}");
                refused.push(Transition::new(
                    order.id,
                    Event::ConnectorError,
                    format!("permanent error: not sent, over a data limit: {problem}"),
                ));
                false
            }
        })
        .collect();
    (batch, refused)
}

/// Applies a batch's outcomes and counts them.
fn write(
    host: &mut Host,
    transitions: &[Transition],
    actor: &str,
    report: &mut JobReport,
    progress: &ProgressBar,
) -> Result<(), JobError> {
    if transitions.is_empty() {
        return Ok(());
    }
    let results = host.store.apply(transitions, actor)?;
    for (t, result) in transitions.iter().zip(results) {
        match result {
            Ok(ProvisioningState::Executed) => report.counters.executed += 1,
            Ok(ProvisioningState::Transmitted) => report.counters.transmitted += 1,
            Ok(ProvisioningState::Errored) => report.counters.errored += 1,
            Ok(_) => {}
            Err(error) => report.problems.push(format!("order {}: {error}", t.order)),
        }
    }
    progress.inc(transitions.len() as u64);
    Ok(())
}

/// Sends a batch through a connector: attempts first, then the call (isolating poisoned
/// orders), then the outcome of each order as a transition. Orders the plugin did not answer
/// for stay Pending. Once the call returned, the batch is no longer in flight: another worker
/// may send the connection's next batch while this one's outcomes are written.
fn send(
    host: &mut Host,
    unit: &Unit,
    connection: &Connection,
    plugin: &str,
    batch: &[Order],
    report: &mut JobReport,
) -> Result<Vec<Transition>, JobError> {
    let ids: Vec<i64> = batch.iter().map(|o| o.id).collect();
    host.store.start_attempts(&ids, &connection.name, Some(unit.run), Some(unit.id))?;
    tracing::info!(connection = %connection.name, orders = ids.len(), "sending a batch");
    let sent_at = host.store.now_ms();
    let items = match isolate::available(host, plugin) {
        Err(why) => isolate::skipped(batch, &why),
        Ok(connector) => {
            let connector = connector.rated(host.rates.of(&connection.name));
            let called = isolate::isolate_calls(&connector, batch, |p, orders| p.fulfil(orders));
            isolate::record(host, plugin, &called);
            called.items
        }
    };
    // The connection's pace learns from the outcomes (wall-clock time: pauses are waited for).
    host.store.end_calling(unit.fence, &pace_of(&items, connection, sent_at), host.store.now_ms())?;
    let now = host.now();
    let mut transitions = Vec::with_capacity(batch.len());
    let mut unsent = Vec::new();
    for (order, item) in batch.iter().zip(items) {
        match item {
            Item::Done(outcome) => transitions.push(outcome_transition(order, outcome, connection, now)),
            Item::Failed(error) => {
                report.problems.push(format!("order {}: {error}", order.id));
                transitions.push(Transition::new(
                    order.id,
                    Event::ConnectorError,
                    format!("permanent error: the connector fails on this order: {error}"),
                ));
            }
            Item::Skipped(why) => {
                unsent.push(order.id);
                if !report.problems.contains(&why) {
                    report.problems.push(why);
                }
            }
        }
    }
    if !unsent.is_empty() {
        host.store.finish_attempts(&unsent, "not-sent")?;
        tracing::warn!(connection = %connection.name, "{} orders not sent; they stay Pending", unsent.len());
    }
    Ok(transitions)
}

/// What a batch's answers say about its connection's pace: answered orders, transient
/// failures and the longest Retry-After they asked for.
fn pace_of(items: &[Item<Outcome>], connection: &Connection, sent_at: i64) -> BatchOutcome {
    let mut batch = BatchOutcome { concurrency: connection.concurrency, sent_at, ..BatchOutcome::default() };
    for item in items {
        let Item::Done(outcome) = item else { continue };
        batch.answered += 1;
        if let Outcome::Failed { transient: true, retry_after, .. } = outcome {
            batch.transient += 1;
            if let Some(asked) = retry_after {
                let asked = i64::try_from(asked.as_millis()).unwrap_or(i64::MAX);
                batch.retry_after_ms = Some(batch.retry_after_ms.map_or(asked, |longest| longest.max(asked)));
            }
        }
    }
    batch
}

/// Errored orders whose next attempt is due go back to Pending.
fn retry_due(
    host: &mut Host,
    connection: &Connection,
    resource_types: &[String],
    report: &mut JobReport,
) -> Result<(), JobError> {
    let due = host.store.orders(&OrderFilter {
        states: vec![ProvisioningState::Errored],
        resource_types: resource_types.to_vec(),
        retry_due_before: Some(host.now()),
        ..OrderFilter::default()
    })?;
    let transitions: Vec<Transition> = due
        .iter()
        .map(|o| {
            let reason = format!("retry due: attempt {} of {}", o.attempts + 1, connection.retry.max_attempts);
            Transition::new(o.id, Event::RetryDue, reason)
        })
        .collect();
    let results = host.store.apply(&transitions, "job:fulfil")?;
    report.counters.retried += results.iter().filter(|r| r.is_ok()).count() as u64;
    Ok(())
}

/// Transmitted orders left longer than the connection's transmitted validity go to Errored.
fn expire_transmitted(
    host: &mut Host,
    resource_types: &[String],
    validity: std::time::Duration,
    report: &mut JobReport,
) -> Result<(), JobError> {
    let cutoff = host.now() - i64::try_from(validity.as_millis()).unwrap_or(i64::MAX / 2);
    let stale = host.store.orders(&OrderFilter {
        states: vec![ProvisioningState::Transmitted],
        resource_types: resource_types.to_vec(),
        updated_before: Some(cutoff),
        ..OrderFilter::default()
    })?;
    let reason = format!(
        "left Transmitted longer than the connection's transmitted validity ({})",
        jiff::SignedDuration::try_from(validity).map_or_else(|_| format!("{validity:?}"), |d| format!("{d:#}"))
    );
    let transitions: Vec<Transition> =
        stale.iter().map(|o| Transition::new(o.id, Event::TransmittedExpired, reason.clone())).collect();
    let results = host.store.apply(&transitions, "job:fulfil")?;
    report.counters.expired += results.iter().filter(|r| r.is_ok()).count() as u64;
    Ok(())
}

fn outcome_transition(order: &Order, outcome: Outcome, connection: &Connection, now: i64) -> Transition {
    match outcome {
        Outcome::Executed { resource_id } => {
            Transition { resource_id, ..Transition::new(order.id, Event::ConnectorOk, "the connector carried it out") }
        }
        Outcome::Transmitted { reference } => {
            Transition::new(order.id, Event::HandOver, format!("handed over: {reference}"))
        }
        Outcome::Failed { transient: false, message, .. } => {
            Transition::new(order.id, Event::ConnectorError, format!("permanent error: {message}"))
        }
        Outcome::Failed { transient: true, message, retry_after } => {
            // The order's attempts include this one (recorded before the call).
            let attempts = order.attempts + 1;
            let policy = &connection.retry;
            match policy.delay_after(attempts) {
                Some(delay) => {
                    let delay = retry_after.map_or(delay, |asked| delay.max(asked));
                    let retry_at = now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
                    Transition {
                        retry_at: Some(retry_at),
                        ..Transition::new(
                            order.id,
                            Event::ConnectorError,
                            format!(
                                "transient error (attempt {attempts} of {}; next at {}): {message}",
                                policy.max_attempts,
                                format_time(retry_at)
                            ),
                        )
                    }
                }
                None => Transition::new(
                    order.id,
                    Event::ConnectorError,
                    format!(
                        "transient error on the last attempt ({attempts} of {}), waiting for an operator: {message}",
                        policy.max_attempts
                    ),
                ),
            }
        }
    }
}
