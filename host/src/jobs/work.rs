//! Running a job: start the run (or join the unfinished one of the same kind), then
//! `jobs.workers` workers, each on its own connection, claim the units of the run's current
//! phase until the run is over; the worker that finds a phase done plans the next. This
//! process's workers are a few among possibly many: another `job run`, `provision serve`, or
//! another host on the same database claims units of the same run beside them.

use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use super::lease::Leases;
use super::{Counters, JobError, JobReport, STOPPED, compute, fulfil, synchronise};
use crate::host::{Host, LockWait};
use crate::store::{Claim, RunEnd, Started, Store, StoreError, Unit, UnitKind, UnitSpec};

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// Synchronise, compute, fulfil, synchronise, notify.
    Complete,
    /// Synchronise only.
    Synchronise,
    /// Compute only.
    Compute,
    /// Fulfil only.
    Fulfil,
}

impl Step {
    /// The run's kind, as stored.
    pub fn kind(self) -> &'static str {
        match self {
            Step::Complete => "complete",
            Step::Synchronise => "synchronise",
            Step::Compute => "compute",
            Step::Fulfil => "fulfil",
        }
    }

    /// Its phases, in order.
    fn plan(self) -> &'static [&'static str] {
        match self {
            Step::Complete => &["synchronise", "compute", "fulfil", "synchronise", "notify"],
            Step::Synchronise => &["synchronise"],
            Step::Compute => &["compute"],
            Step::Fulfil => &["fulfil"],
        }
    }
}

/// Runs a job of `step` to its end (or until the host stops) with this process's workers, and
/// reports what the whole run did, whoever did it.
pub(super) fn run(host: &mut Host, step: Step, progress: &ProgressBar) -> Result<JobReport, JobError> {
    let run = start(host, step)?;
    if let Some(started) = &host.on_run_started {
        let _ = started.send(run); // nobody listening any more is no reason to stop the run
    }
    let leases = Leases::start(host.store.renewer()?, host.config.jobs.lease);
    let owner = host_id();
    let mut siblings = Vec::new();
    for _ in 1..host.config.jobs.workers.max(1) {
        match host.sibling() {
            Ok(sibling) => siblings.push(sibling),
            // An in-memory database has one connection: one worker.
            Err(error) => {
                tracing::debug!("one worker only: {error}");
                break;
            }
        }
    }
    let wake = Wake::default();
    let monitor = host.store.reader()?;
    let results: Vec<Result<(), JobError>> = std::thread::scope(|scope| {
        let (leases, wake, owner) = (&leases, &wake, owner.as_str());
        let workers: Vec<_> = siblings
            .iter_mut()
            .enumerate()
            .map(|(i, sibling)| {
                scope.spawn(move || work(sibling, run, &format!("{owner}:{}", i + 1), step, leases, wake))
            })
            .collect();
        let watching = monitor.map(|store| scope.spawn(move || watch(&store, run, progress, wake)));
        let mut results = vec![work(host, run, &format!("{owner}:0"), step, leases, wake)];
        for worker in workers {
            results.push(worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        }
        wake.finish();
        if let Some(watching) = watching {
            let _ = watching.join();
        }
        results
    });
    results.into_iter().collect::<Result<Vec<()>, JobError>>()?;
    // The other workers' plugin calls are in the store, not in this host's copy.
    host.health = host.store.health()?;
    report(&host.store, run)
}

/// Starts a run of `step` with its first phase's units, or joins the unfinished one of the
/// same kind; an unfinished run of another kind is refused or waited for, as the host says.
fn start(host: &mut Host, step: Step) -> Result<i64, JobError> {
    let plan = step.plan();
    let first = phase_units(host, plan[0]);
    let deadline = match host.lock_wait {
        LockWait::Refuse => None,
        LockWait::Wait { timeout } => Some(timeout.map(|t| Instant::now() + t)),
    };
    let mut delays = polling();
    let mut told = false;
    let decides = host.decides();
    loop {
        match host.store.start_run(step.kind(), plan, &first, &decides, Some(&host.config))? {
            Started::New(run) => {
                tracing::info!(run, "started job run {run} ({})", step.kind());
                return Ok(run);
            }
            Started::Joined(run) => {
                if let Some(theirs) = host.store.run_decides(run)? {
                    let differences = differences(&decides, &theirs);
                    if !differences.is_empty() {
                        return Err(JobError::ConfigDiffers { run, differences });
                    }
                }
                tracing::info!(run, "joining the unfinished job run {run} ({}): its units are shared", step.kind());
                return Ok(run);
            }
            Started::Busy(running) => {
                let Some(deadline) = deadline else { return Err(JobError::Busy(running)) };
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) || host.stopping() {
                    return Err(JobError::Busy(running));
                }
                if !told {
                    tracing::warn!("{running} is unfinished; waiting for it to end");
                    told = true;
                }
                let delay = delays.next().unwrap_or(Duration::from_secs(2));
                std::thread::sleep(deadline.map_or(delay, |d| delay.min(d.saturating_duration_since(now))));
            }
        }
    }
}

/// A short first poll (the unit at hand may be about to finish), backing off to a couple of
/// seconds: waiting costs one small transaction per poll, never a busy loop.
fn polling() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(20))
        .with_max_delay(Duration::from_secs(1))
        .with_jitter()
        .without_max_times()
        .build()
}

/// The units a phase begins with.
fn phase_units(host: &Host, step: &str) -> Vec<UnitSpec> {
    let config = &host.config;
    match step {
        "synchronise" => config
            .resource_types
            .values()
            .filter(|rt| host.connector(&rt.connection).is_some_and(|c| c.can_read()))
            .map(|rt| UnitSpec::new(UnitKind::Synchronise, rt.name.clone()))
            .collect(),
        "compute" => config.resource_types.keys().map(|rt| UnitSpec::new(UnitKind::ComputePlan, rt.clone())).collect(),
        "fulfil" => config
            .connections
            .keys()
            .filter(|c| config.resource_types_of(c).next().is_some())
            .map(|c| UnitSpec::new(UnitKind::FulfilPlan, c.clone()))
            .collect(),
        _ => vec![UnitSpec::new(UnitKind::Notify, "")],
    }
}

/// One worker: claims units of `run` until the run is over or the host stops.
fn work(host: &mut Host, run: i64, owner: &str, step: Step, leases: &Leases, wake: &Wake) -> Result<(), JobError> {
    let lease_ms = i64::try_from(host.config.jobs.lease.as_millis()).unwrap_or(i64::MAX / 4);
    let mut delays = polling();
    loop {
        if host.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let connections = &host.config.connections;
        let concurrency = |c: &str| connections.get(c).map_or(1, |c| c.concurrency);
        match host.store.claim_unit(run, owner, lease_ms, &concurrency, host.store.now_ms())? {
            Claim::Unit(unit) => {
                execute(host, &unit, leases);
                delays = polling();
                wake.notify();
            }
            Claim::Wait => wake.wait(delays.next().unwrap_or(Duration::from_secs(1))),
            // Only paused connections' batches are left: until the pause ends (or another worker
            // of this process changes something), looking again at least each second for a
            // shutdown.
            Claim::Paused { until } => {
                let left = u64::try_from(until.saturating_sub(host.store.now_ms())).unwrap_or(0);
                wake.wait(Duration::from_millis(left.clamp(1, 1000)));
            }
            Claim::PhaseDone { phase, step: name } => {
                let next = usize::try_from(phase + 1).ok().and_then(|i| step.plan().get(i));
                let advanced = match next {
                    Some(next) => {
                        let units = phase_units(host, next);
                        host.store.advance_phase(run, phase, Some(&units), &RunEnd::default())?
                    }
                    None => {
                        let end = run_end(&host.store, run)?;
                        host.store.advance_phase(run, phase, None, &end)?
                    }
                };
                if advanced {
                    tracing::info!(run, "job run {run}: {name} done");
                }
                wake.notify();
            }
            Claim::Finished => return Ok(()),
        }
    }
}

/// Works on one claimed unit under its fence and lease, and records it done; a unit that
/// failed goes back for another worker (or is given up after too many claims), one whose lease
/// was lost is left to whoever took it over.
fn execute(host: &mut Host, unit: &Unit, leases: &Leases) {
    host.store.set_fence(Some(unit.fence));
    host.lease_lost = leases.hold(unit.fence);
    if unit.taken_over {
        tracing::warn!(
            unit = unit.id,
            "took over unit {} ({} {}) from a worker whose lease lapsed (killed, paused or stalled)",
            unit.id,
            unit.kind.name(),
            unit.target
        );
    }
    let mut report = JobReport { run: unit.run, ..JobReport::default() };
    let mut spawn = Vec::new();
    let result = (|| {
        // Other workers' calls changed the plugins' health since this host read it.
        host.health = host.store.health()?;
        let hidden = ProgressBar::hidden();
        match unit.kind {
            UnitKind::Synchronise => synchronise::unit(host, unit, &mut report, &mut spawn, &hidden),
            UnitKind::ComputePlan => compute::plan_unit(host, unit, &mut report, &mut spawn),
            UnitKind::Compute => compute::range_unit(host, unit, &mut report),
            UnitKind::FulfilPlan => fulfil::plan_unit(host, unit, &mut report, &mut spawn),
            UnitKind::Fulfil => fulfil::batch_unit(host, unit, &mut report),
            UnitKind::Notify => notify(host, &mut report),
        }
    })();
    let finished = match result {
        Ok(()) => {
            let mut counters = serde_json::to_value(&report.counters).unwrap_or_default();
            if unit.kind == UnitKind::Notify {
                counters["notifications"] = serde_json::to_value(&report.notifications).unwrap_or_default();
            }
            host.store.finish_unit(unit, &counters, &report.problems, &report.notes, &spawn).map_err(JobError::from)
        }
        Err(error) => Err(error),
    };
    match finished {
        Ok(()) => tracing::debug!(unit = unit.id, kind = unit.kind.name(), target = %unit.target, "unit done"),
        Err(JobError::Store(StoreError::LeaseLost)) => tracing::warn!(
            unit = unit.id,
            "lost the lease on unit {} ({} {}): it is redone by the worker that took it over; nothing more was written",
            unit.id,
            unit.kind.name(),
            unit.target
        ),
        // Stopped part-way for a shutdown: the unit is redone by the next worker (every unit is
        // idempotent), not recorded done with half its work.
        Err(error) => {
            if !matches!(error, JobError::Stopped) {
                tracing::error!(
                    unit = unit.id,
                    "unit {} ({} {}) failed: {error}",
                    unit.id,
                    unit.kind.name(),
                    unit.target
                );
            }
            if let Err(release) = host.store.release_unit(unit.fence) {
                // Its lease lapses on its own; the unit is then claimed again.
                tracing::warn!(unit = unit.id, "cannot give the unit back (its lease lapses instead): {release}");
            }
        }
    }
    leases.drop_unit(unit.fence);
    host.store.set_fence(None);
}

/// Routes the notifications the run queued (one event per entity type and kind) and delivers
/// what is due.
fn notify(host: &mut Host, report: &mut JobReport) -> Result<(), JobError> {
    let notified = crate::notify::route_and_deliver(host)?;
    report.problems.extend(notified.problems.iter().cloned());
    report.notifications = notified;
    Ok(())
}

/// How the run ends, from its units.
fn run_end(store: &Store, run: i64) -> Result<RunEnd, JobError> {
    let report = summed(store, run)?;
    let given_up = store.unit_results(run)?.given_up;
    let status = if given_up > 0 {
        "failed"
    } else if report.counters.held > 0 {
        "threshold exceeded"
    } else {
        "succeeded"
    };
    let counters = match serde_json::to_value(&report.counters) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let message = (!report.problems.is_empty()).then(|| report.problems.join("\n"));
    Ok(RunEnd { status: status.into(), counters, message })
}

/// What the run's done units did, summed.
fn summed(store: &Store, run: i64) -> Result<JobReport, JobError> {
    let results = store.unit_results(run)?;
    let mut report = JobReport { run, problems: results.problems, notes: results.notes, ..JobReport::default() };
    for map in results.counters {
        let value = serde_json::Value::Object(map);
        if let Some(notified) = value.get("notifications") {
            report.notifications = serde_json::from_value(notified.clone()).unwrap_or_default();
        }
        let counters: Counters = serde_json::from_value(value).unwrap_or_default();
        report.counters.add(&counters);
    }
    report.counters.orders_created = store.orders_created_by(run)?;
    Ok(report)
}

/// The run's report; a run this process left unfinished (it is stopping) says so.
fn report(store: &Store, run: i64) -> Result<JobReport, JobError> {
    let mut report = summed(store, run)?;
    let status = store.job_run(run)?.status;
    if status == "running" {
        report.problems.push(STOPPED.to_string());
    }
    Ok(report)
}

/// Where a run is, step by step, read from the database (any process's workers count): what
/// `GET /api/v1/jobs/{run}`, the Jobs page and `job show` print.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RunProgress {
    /// The run.
    pub run: i64,
    /// Its status (`running` until its last step ends).
    pub status: String,
    /// The step it is at (the last with units), 0-based into `steps`.
    pub at: usize,
    /// Units claimed now by a live worker, over all steps.
    pub at_work: u64,
    /// Running, and no worker holds any of its units: it waits for `job run` or `serve` to take
    /// it up (its process died or stopped).
    pub no_worker: bool,
    /// Each step of its plan.
    pub steps: Vec<StepProgress>,
}

/// One step of a run.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StepProgress {
    /// `synchronise`, `compute`, `fulfil`, ...
    pub step: String,
    /// Its units so far (a plan unit adds the rest when it is done).
    pub units: u64,
    /// Of those, done (or given up).
    pub done: u64,
    /// Of those, claimed now by a live worker.
    pub claimed: u64,
    /// The counters its done units recorded, summed.
    pub counters: Counters,
}

/// The run's progress: see [`RunProgress`].
pub fn progress(store: &Store, run: i64) -> Result<RunProgress, JobError> {
    let status = store.job_run(run)?.status;
    let phases = store.run_progress(run)?;
    let mut counters = store.phase_counters(run)?.into_iter().peekable();
    let mut steps = Vec::with_capacity(phases.len());
    for (i, phase) in phases.into_iter().enumerate() {
        let mut summed = Counters::default();
        while let Some((_, map)) = counters.next_if(|(p, _)| usize::try_from(*p).is_ok_and(|p| p <= i)) {
            summed.add(&serde_json::from_value(serde_json::Value::Object(map)).unwrap_or_default());
        }
        steps.push(StepProgress {
            step: phase.step,
            units: phase.units,
            done: phase.done,
            claimed: phase.claimed,
            counters: summed,
        });
    }
    let at = steps.iter().rposition(|s| s.units > 0).unwrap_or(0);
    let at_work = steps.iter().map(|s| s.claimed).sum();
    Ok(RunProgress { run, no_worker: status == "running" && at_work == 0, status, at, at_work, steps })
}

/// Shows the run's progress: per phase, units done of those planned so far, with an estimate
/// of the time left; until the workers are done.
fn watch(store: &Store, run: i64, progress: &ProgressBar, wake: &Wake) {
    let mut phase_shown = None;
    while !wake.finished() {
        if let (Ok(phases), Ok(job)) = (store.run_progress(run), store.job_run(run)) {
            let at = phases.iter().rposition(|p| p.units > 0 || p.done > 0).unwrap_or(0);
            if let Some(phase) = phases.get(at) {
                if phase_shown != Some(at) {
                    progress.reset();
                    phase_shown = Some(at);
                }
                progress.set_length(phase.units.max(1));
                progress.set_position(phase.done);
                progress.set_message(format!(
                    "run {run}: {} ({} of {} steps; {} units at work)",
                    phase.step,
                    at + 1,
                    phases.len(),
                    phase.claimed
                ));
            }
            if job.status != "running" {
                progress.set_position(progress.length().unwrap_or(0));
            }
        }
        // On a timer, not at every unit: reading the units after each one competed with the
        // workers for SQLite's page cache (a third of a 1 000 000-order fulfil step).
        wake.wait_finished(Duration::from_millis(200));
    }
}

/// Wakes this process's waiting workers when one of them finished a unit or a phase, so that
/// they do not wait for their next poll; other processes' progress is seen by polling.
#[derive(Default)]
struct Wake {
    state: Mutex<(u64, bool)>,
    changed: Condvar,
}

impl Wake {
    fn notify(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0 += 1;
        self.changed.notify_all();
    }

    fn finish(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.changed.notify_all();
    }

    fn finished(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1
    }

    /// Waits for the end of the workers, at most `timeout`.
    fn wait_finished(&self, timeout: Duration) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self.changed.wait_timeout_while(state, timeout, |s| !s.1);
    }

    /// Waits for a change, at most `timeout`.
    fn wait(&self, timeout: Duration) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let seen = state.0;
        let _ = self.changed.wait_timeout_while(state, timeout, |s| s.0 == seen && !s.1);
    }
}

/// Where two hosts' views of what decides orders differ, in words, key by key.
fn differences(
    ours: &std::collections::BTreeMap<String, String>,
    theirs: &std::collections::BTreeMap<String, String>,
) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = ours.keys().chain(theirs.keys()).collect();
    keys.into_iter()
        .filter_map(|key| match (ours.get(key), theirs.get(key)) {
            (Some(a), Some(b)) if a == b => None,
            (Some(a), Some(b)) => Some(format!("{key} is `{a}` here, `{b}` in the run")),
            (Some(a), None) => Some(format!("{key} is `{a}` here, absent in the run")),
            (None, Some(b)) => Some(format!("{key} is absent here, `{b}` in the run")),
            (None, None) => None,
        })
        .collect()
}

/// This process's id among the hosts sharing the database, `hostname:pid`: the owner of its
/// claims (with the worker after it), shown by `serve`, `job list`, the Jobs page and `/metrics`.
pub fn host_id() -> String {
    format!("{}:{}", hostname(), std::process::id())
}

/// This machine's name, for the owner of a claim.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for writes of its length, which is what we pass.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
