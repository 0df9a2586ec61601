//! Fulfil: carry out Pending orders, connection by connection, in batches. A connector
//! connection calls its plugin's `fulfil`; a manual-ticket connection hands the orders to people
//! (Transmitted), who confirm them later.

use indicatif::ProgressBar;

use super::{JobError, JobReport, single};
use crate::config::ConnectionKind;
use crate::host::Host;
use crate::machine::Event;
use crate::model::{ProvisioningState, now_ms};
use crate::plugins::Outcome;
use crate::store::{OrderFilter, Transition};

/// Runs fulfil alone, as a job run.
pub fn fulfil(host: &mut Host, progress: &ProgressBar) -> Result<JobReport, JobError> {
    single(host, "fulfil", progress, run)
}

pub(super) fn run(host: &mut Host, report: &mut JobReport, progress: &ProgressBar) -> Result<(), JobError> {
    let connections: Vec<_> = host.config.connections.values().cloned().collect();
    for connection in connections {
        let resource_types: Vec<String> =
            host.config.resource_types_of(&connection.name).map(|rt| rt.name.clone()).collect();
        if resource_types.is_empty() {
            continue;
        }
        progress.set_message(format!("fulfil {}", connection.name));
        if let Some(validity) = connection.transmitted_validity {
            expire_transmitted(host, &resource_types, validity, report)?;
        }
        let mut after = 0;
        loop {
            let batch = host.store.orders(&OrderFilter {
                states: vec![ProvisioningState::Pending],
                resource_types: resource_types.clone(),
                after: Some(after),
                limit: Some(connection.batch_size),
                ..OrderFilter::default()
            })?;
            let Some(last) = batch.last() else { break };
            after = last.id;
            let (transitions, actor) = match &connection.kind {
                ConnectionKind::ManualTicket => (
                    batch
                        .iter()
                        .map(|o| Transition::new(o.id, Event::HandOver, "handed to manual provisioning"))
                        .collect::<Vec<_>>(),
                    "job:fulfil".to_string(),
                ),
                ConnectionKind::Connector { plugin } => {
                    let Some(connector) = host.plugins.get(plugin) else { continue };
                    let transitions = match connector.fulfil(&batch) {
                        Ok(outcomes) => batch
                            .iter()
                            .zip(outcomes)
                            .map(|(order, outcome)| outcome_transition(order.id, outcome))
                            .collect(),
                        Err(error) => {
                            let message = error.to_string();
                            tracing::warn!(connection = %connection.name, "connector call failed for {} orders: {message}", batch.len());
                            report.problems.push(format!("fulfil via {}: {message}", connection.name));
                            batch
                                .iter()
                                .map(|o| Transition::new(o.id, Event::ConnectorError, message.clone()))
                                .collect()
                        }
                    };
                    (transitions, format!("plugin:{plugin}"))
                }
            };
            let results = host.store.apply(&transitions, &actor)?;
            for (t, result) in transitions.iter().zip(results) {
                match result {
                    Ok(ProvisioningState::Executed) => report.counters.executed += 1,
                    Ok(ProvisioningState::Transmitted) => report.counters.transmitted += 1,
                    Ok(ProvisioningState::Errored) => report.counters.errored += 1,
                    Ok(_) => {}
                    Err(error) => report.problems.push(format!("order {}: {error}", t.order)),
                }
            }
            progress.inc(batch.len() as u64);
        }
    }
    Ok(())
}

/// Transmitted orders left longer than the connection's transmitted validity go to Errored.
fn expire_transmitted(
    host: &mut Host,
    resource_types: &[String],
    validity: std::time::Duration,
    report: &mut JobReport,
) -> Result<(), JobError> {
    let cutoff = now_ms() - i64::try_from(validity.as_millis()).unwrap_or(i64::MAX / 2);
    let stale: Vec<_> = host.store.orders(&OrderFilter {
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

fn outcome_transition(order: i64, outcome: Outcome) -> Transition {
    match outcome {
        Outcome::Executed { resource_id } => {
            Transition { order, event: Event::ConnectorOk, reason: "the connector carried it out".into(), resource_id }
        }
        Outcome::Transmitted { reference } => {
            Transition::new(order, Event::HandOver, format!("handed over: {reference}"))
        }
        Outcome::Failed { transient, message, retry_after } => {
            let kind = if transient { "transient" } else { "permanent" };
            let retry = retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default();
            Transition::new(order, Event::ConnectorError, format!("{kind} error: {message}{retry}"))
        }
    }
}
