//! The jobs: synchronise, compute (with review rules), fulfil, and the complete job that runs
//! them in that order and synchronises again, so an order can travel from desired state to
//! Verified in one run. Each is a function over a [`Host`]; each records a job run.

mod compute;
mod fulfil;
mod holds;
mod isolate;
mod lock;
mod synchronise;

use indicatif::ProgressBar;
use serde::Serialize;

use crate::host::Host;
use crate::store::{LockHolder, StoreError};

pub use compute::{Exceeded, KindTally, Simulation, TypeTally, compute, describe, simulate};
pub use fulfil::fulfil;
pub use holds::{cancel, resume};
pub use synchronise::synchronise;

/// Orders handed to a review rule per call.
const REVIEW_BATCH: usize = 500;
/// Identities compute reads per chunk; bounds its memory whatever the number of identities.
const COMPUTE_CHUNK: usize = 1000;

/// What a job run did, by counter. Also stored with the run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Resources read from managed systems.
    pub resources_read: u64,
    /// Orders created by compute.
    pub orders_created: u64,
    /// Of those, recorded Verified at once because the managed system already matched.
    pub already_matching: u64,
    /// Of those, recorded Inactive because their validity window was already over.
    pub window_over: u64,
    /// Orders released to fulfilment (Pending) by their review rule.
    pub released: u64,
    /// Orders held for a reviewer (AwaitingApproval).
    pub awaiting_approval: u64,
    /// Orders refused by their review rule.
    pub blocked: u64,
    /// Orders whose review rule failed (Error).
    pub rule_errors: u64,
    /// Open orders superseded by a change of desired state.
    pub superseded: u64,
    /// Orders made Inactive because their validity window ended.
    pub inactive: u64,
    /// Orders a connector carried out (Executed).
    pub executed: u64,
    /// Orders handed to people (Transmitted).
    pub transmitted: u64,
    /// Orders whose fulfilment failed (Errored).
    pub errored: u64,
    /// Executed orders seen in the managed system (Verified).
    pub verified: u64,
    /// Transmitted orders left longer than their connection's transmitted validity (Errored).
    pub expired: u64,
    /// Errored orders whose retry time came (Pending again).
    pub retried: u64,
    /// Orders whose previous attempt was cut short (a crash), sent again.
    pub resumed: u64,
    /// Orders sent before a crash lost their outcome, found carried out in the managed system
    /// (Executed without being sent again).
    pub recovered: u64,
    /// Orders held by a threshold (not fulfilled until an operator resumes the run).
    pub held: u64,
}

/// The result of a job run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobReport {
    /// The recorded run's id.
    pub run: i64,
    /// What it did.
    pub counters: Counters,
    /// Notifications routed and delivered at the end of the run.
    pub notifications: crate::notify::NotifyReport,
    /// Problems that did not stop the run (a plugin that failed a call, a connector that
    /// could not read, a notification that could not be routed or was given up). Each is also
    /// in the affected orders' history, the outbox or the log.
    pub problems: Vec<String>,
    /// What the run decided that an operator should know but that is no problem, such as a
    /// percent threshold not applied because the type has too few known resources. Shown with
    /// the report; the exit code does not change.
    pub notes: Vec<String>,
}

/// Why a job could not run to the end. What it wrote before is kept; every order is in a state
/// the machine allowed, with its history.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The database failed (or this run's job lock was taken over: `StoreError::LockLost`).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another process runs a job on this database; nothing was done.
    #[error("another job holds the job lock: {0}")]
    Locked(LockHolder),
}

/// One step of a job run.
type Step = fn(&mut Host, &mut JobReport, &ProgressBar) -> Result<(), JobError>;

/// The problem a job reports when it stopped early for a shutdown.
pub const STOPPED: &str = "stopped early: the host is shutting down; what is left waits for the next run";

/// Runs the complete job: synchronise, compute, fulfil, synchronise.
pub fn complete(host: &mut Host, progress: &ProgressBar) -> Result<JobReport, JobError> {
    locked_run(host, "complete", progress, &[synchronise::run, compute::run, fulfil::run, synchronise::run, notify])
}

/// Runs steps as one job run of `kind`, under the job lock: taken (with the run recorded)
/// before the first step, let go after the run's end is recorded, so a run found `running`
/// while nobody holds the lock is known dead.
fn locked_run(host: &mut Host, kind: &str, progress: &ProgressBar, steps: &[Step]) -> Result<JobReport, JobError> {
    let lock = lock::acquire(host, kind, true)?;
    let Some(run) = lock.run else {
        lock.release(&mut host.store);
        return Err(StoreError::Unknown("the job lock was taken without recording a run".into()).into());
    };
    let mut report = JobReport { run, ..JobReport::default() };
    let result = (|| {
        for step in steps {
            if host.lost_lock() {
                return Err(JobError::Store(StoreError::LockLost));
            }
            if host.stopping() {
                report.problems.push(STOPPED.to_string());
                break;
            }
            step(host, &mut report, progress)?;
        }
        // A step that stopped early for a lost lock returns as if done, and a run paused past
        // its expiry may get here before its heartbeat noticed: ask the database itself, so
        // such a run never reports an end it did not reach.
        if host.lost_lock() || !host.store.holds_job_lock()? {
            return Err(JobError::Store(StoreError::LockLost));
        }
        Ok(())
    })();
    let finished = finish(host, &report, result);
    lock.release(&mut host.store);
    finished?;
    Ok(report)
}

/// Runs `f` under the job lock, without recording a run (resuming or cancelling a held run).
fn locked<R>(host: &mut Host, kind: &str, f: impl FnOnce(&mut Host) -> Result<R, JobError>) -> Result<R, JobError> {
    let lock = lock::acquire(host, kind, false)?;
    let result = f(host);
    lock.release(&mut host.store);
    result
}

/// Routes the notifications the run queued (one event per entity type and kind) and delivers
/// what is due.
fn notify(host: &mut Host, report: &mut JobReport, progress: &ProgressBar) -> Result<(), JobError> {
    progress.set_message("notifications");
    let notified = crate::notify::route_and_deliver(host)?;
    report.problems.extend(notified.problems.iter().cloned());
    report.notifications = notified;
    Ok(())
}

/// Records the end of a run; a failed run keeps its counters and says why.
fn finish(host: &mut Host, report: &JobReport, result: Result<(), JobError>) -> Result<(), JobError> {
    match result {
        Ok(()) => {
            let message = (!report.problems.is_empty()).then(|| report.problems.join("\n"));
            let status = if report.counters.held > 0 { "threshold exceeded" } else { "succeeded" };
            host.store.finish_job(report.run, status, &report.counters, message.as_deref())?;
            Ok(())
        }
        Err(error) => {
            // Best effort: the store may be what failed.
            let _ = host.store.finish_job(report.run, "failed", &report.counters, Some(&error.to_string()));
            Err(error)
        }
    }
}

/// Runs one step as a job run of its own.
fn single(host: &mut Host, kind: &str, progress: &ProgressBar, step: Step) -> Result<JobReport, JobError> {
    locked_run(host, kind, progress, &[step])
}
