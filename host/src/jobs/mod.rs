//! The jobs: synchronise, compute (with review rules), fulfil, and the complete job that runs
//! them in that order and synchronises again, so an order can travel from desired state to
//! Verified in one run.
//!
//! A run is a plan of phases stored with it, each a set of work units (see `store::units` for
//! the rules that make this safe across workers, processes and hosts): synchronise per resource
//! type, compute per resource type and range of identities, fulfil per batch of one
//! connection's Pending orders, notify once. `work.rs` is the worker loop and what each unit
//! kind does; `lease.rs` renews the leases of the units this process works on.

mod compute;
mod fulfil;
mod holds;
mod isolate;
mod lease;
mod synchronise;
mod work;

use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use crate::host::Host;
use crate::store::{Running, StoreError};

pub use compute::{Exceeded, KindTally, Simulation, TypeTally, compute, describe, simulate};
pub use fulfil::fulfil;
pub use holds::{cancel, resume};
pub use synchronise::synchronise;
pub use work::{RunProgress, Step, StepProgress, host_id, hostname, progress};

/// Orders handed to a review rule per call.
const REVIEW_BATCH: usize = 500;
/// Identities compute reads per chunk; bounds its memory whatever the number of identities.
const COMPUTE_CHUNK: usize = 1000;

/// What a job run did, by counter. Also stored with the run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
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

impl Counters {
    /// Adds another's counts (a unit's, into its run's).
    pub fn add(&mut self, other: &Counters) {
        let fields = [
            (&mut self.resources_read, other.resources_read),
            (&mut self.orders_created, other.orders_created),
            (&mut self.already_matching, other.already_matching),
            (&mut self.window_over, other.window_over),
            (&mut self.released, other.released),
            (&mut self.awaiting_approval, other.awaiting_approval),
            (&mut self.blocked, other.blocked),
            (&mut self.rule_errors, other.rule_errors),
            (&mut self.superseded, other.superseded),
            (&mut self.inactive, other.inactive),
            (&mut self.executed, other.executed),
            (&mut self.transmitted, other.transmitted),
            (&mut self.errored, other.errored),
            (&mut self.verified, other.verified),
            (&mut self.expired, other.expired),
            (&mut self.retried, other.retried),
            (&mut self.resumed, other.resumed),
            (&mut self.recovered, other.recovered),
            (&mut self.held, other.held),
        ];
        for (mine, theirs) in fields {
            *mine += theirs;
        }
    }
}

/// Why a job could not run to the end. What it wrote before is kept; every order is in a state
/// the machine allowed, with its history.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A run of another kind is unfinished on this database; nothing was done.
    #[error("another job run is unfinished: {0}")]
    Busy(Running),
    /// A unit stopped part-way for a shutdown; it is redone by the next worker.
    #[error("stopped part-way: the host is shutting down")]
    Stopped,
    /// The unfinished run of this kind was started by a host whose config differs in what
    /// decides orders: this one takes none of its units.
    #[error(
        "job run {run} is running with a config that differs from this host's in what decides orders, so this host \
         takes none of its units (make the configs the same, or let the run finish first): {}",
        differences.join("; ")
    )]
    ConfigDiffers {
        /// The run.
        run: i64,
        /// Each difference, in words.
        differences: Vec<String>,
    },
}

/// The problem a job reports when it stopped early for a shutdown.
pub const STOPPED: &str = "stopped early: the host is shutting down; the run's remaining units wait for the next worker (the next `job run` or `serve`)";

/// Runs the complete job: synchronise, compute, fulfil, synchronise, notify.
pub fn complete(host: &mut Host, progress: &ProgressBar) -> Result<JobReport, JobError> {
    work::run(host, Step::Complete, progress)
}
