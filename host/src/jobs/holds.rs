//! Runs held by a threshold: an operator resumes them (their orders go on to fulfilment) or
//! cancels them (their orders are closed unfulfilled; the next run computes afresh and, if the
//! desired state still asks for that many changes, holds again). Both are short transactions
//! beside any running job: resuming only unmarks orders, and cancelling goes through the
//! machine, which refuses an order a worker moved meanwhile.

use super::JobError;
use crate::host::Host;
use crate::machine::Event;
use crate::model::ProvisioningState;
use crate::store::{OrderFilter, StoreError, Transition};

fn held(host: &Host, run: i64) -> Result<(), JobError> {
    let holds = host.store.holds(Some(run))?;
    if !holds.iter().any(|h| h.status == "held") {
        let why = match holds.first() {
            Some(h) => format!("run {run} was already {}", h.status),
            None => format!("run {run} holds nothing (no threshold was exceeded)"),
        };
        return Err(JobError::Store(StoreError::Conflict(why)));
    }
    Ok(())
}

/// Releases the orders a run holds; returns how many.
pub fn resume(host: &mut Host, run: i64, actor: &str) -> Result<usize, JobError> {
    held(host, run)?;
    Ok(host.store.release_holds(run, actor)?)
}

/// Closes the open orders a run holds (the machine's `cancel`); returns how many.
pub fn cancel(host: &mut Host, run: i64, actor: &str) -> Result<usize, JobError> {
    held(host, run)?;
    // Its compute may still be creating held orders, which a cancel now would miss.
    if host.store.job_run(run)?.status == "running" {
        return Err(JobError::Store(StoreError::Conflict(format!(
            "run {run} is still running; cancel its held orders once it has ended"
        ))));
    }
    let orders = host.store.orders(&OrderFilter {
        states: vec![ProvisioningState::Pending, ProvisioningState::AwaitingApproval, ProvisioningState::Error],
        held_run: Some(run),
        ..OrderFilter::default()
    })?;
    let reason = format!("run {run} exceeded a threshold and was cancelled");
    let transitions: Vec<Transition> =
        orders.iter().map(|o| Transition::new(o.id, Event::Cancel, reason.clone())).collect();
    let results = host.store.apply(&transitions, actor)?;
    host.store.cancel_holds(run, actor)?;
    // Whatever else the run held (closed since) no longer needs holding.
    host.store.release_holds(run, actor)?;
    Ok(results.iter().filter(|r| r.is_ok()).count())
}
