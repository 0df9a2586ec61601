//! `provision job ...`: run the complete job, one step or a simulation; list runs; resume or
//! cancel a run held by a threshold.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use super::work::UserArg;
use super::{ConfigArg, EXIT_CODES, EXIT_JOB_PROBLEMS, JsonArg, open, output, print_json, progress, table};
use provision::config::Config;
use provision::host::{Host, LockWait};
use provision::model::format_time;

#[derive(Subcommand)]
pub enum JobCommand {
    /// Run the complete job: synchronise, compute (with review rules and thresholds), fulfil,
    /// synchronise, then route and deliver notifications
    ///
    /// Orders move from desired state to Pending or AwaitingApproval, then Executed, then
    /// Verified once the managed system shows the change. Running it again creates nothing
    /// twice. Orders whose previous attempt was cut short (a crash) are sent again with the
    /// same idempotency key; Errored orders whose retry time came are retried.
    #[command(after_help = EXIT_CODES)]
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Run only one step
        #[arg(long, value_enum, conflicts_with = "dry_run")]
        only: Option<Step>,
        /// Simulate: run compute, review rules and thresholds and print what would be written,
        /// per resource type and change kind; write nothing to the database or any managed
        /// system
        #[arg(long)]
        dry_run: bool,
        /// If a run of another kind is unfinished on the database, wait for it to end instead of
        /// refusing with exit code 6 (an unfinished run of the same kind is always joined: this
        /// process's workers claim its units beside the others)
        #[arg(long, conflicts_with = "dry_run")]
        wait: bool,
        /// With --wait: give up (exit code 6) after this long, e.g. `10m`
        #[arg(long, requires = "wait", value_parser = wait_timeout)]
        wait_timeout: Option<std::time::Duration>,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Recent job runs with their status and counters, and the resource types they hold; a run
    /// `running` with nobody at work waits for the next `job run` or `serve` to finish it
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// How many runs
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        json: JsonArg,
    },
    /// One run, step by step: units planned, done and at work (any process's workers), and the
    /// counters its done units recorded; while it runs, this is its live progress
    Show {
        #[command(flatten)]
        config: ConfigArg,
        /// The run (see `job list`)
        run: i64,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Release the orders a run holds because a threshold was exceeded; the next run (or
    /// `job run --only fulfil`) fulfils them
    Resume {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        user: UserArg,
        /// The run (see `job list`)
        run: i64,
    },
    /// Close, unfulfilled, the orders a run holds because a threshold was exceeded
    Cancel {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        user: UserArg,
        /// The run (see `job list`)
        run: i64,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Step {
    /// Read managed systems back; Executed orders seen there become Verified
    Synchronise,
    /// Create orders from differences and run review rules
    Compute,
    /// Carry out Pending orders through connectors or manual tickets
    Fulfil,
}

pub fn run(command: JobCommand) -> anyhow::Result<ExitCode> {
    match command {
        JobCommand::Run { config, only: _, dry_run: true, json, .. } => simulate(&config, json.json),
        JobCommand::Run { config, only, dry_run: false, wait, wait_timeout, json } => {
            let mut host = open(&config)?;
            if wait {
                host.lock_wait = LockWait::Wait { timeout: wait_timeout };
            }
            let bar = super::units_progress();
            let report = match only {
                None => provision::jobs::complete(&mut host, &bar),
                Some(Step::Synchronise) => provision::jobs::synchronise(&mut host, &bar),
                Some(Step::Compute) => provision::jobs::compute(&mut host, &bar),
                Some(Step::Fulfil) => provision::jobs::fulfil(&mut host, &bar),
            };
            bar.finish_and_clear();
            let report = match report {
                // Refused before it began: nothing stopped.
                Err(busy @ provision::jobs::JobError::Busy(_)) => return Err(busy.into()),
                report => report.context("the job stopped")?,
            };
            output::job_report(&report, json.json)?;
            Ok(if report.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_JOB_PROBLEMS) })
        }
        JobCommand::Show { config, run, json } => {
            let host = open(&config)?;
            let job = host.store.job_run(run)?;
            let progress = provision::jobs::progress(&host.store, run)?;
            if json.json {
                return print_json(&serde_json::json!({ "run": job, "progress": progress }))
                    .map(|()| ExitCode::SUCCESS);
            }
            println!("Run {run} ({}): {}", job.kind, job.status);
            if progress.no_worker {
                println!("No worker holds any of its units: the next `job run` or `serve` finishes it.");
            }
            let mut t = table(&["STEP", "UNITS", "DONE", "AT WORK", "COUNTERS"]);
            for step in &progress.steps {
                let counters = serde_json::to_value(&step.counters).unwrap_or_default();
                let counters: Vec<String> = counters
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(_, v)| v.as_u64().is_some_and(|n| n > 0))
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect();
                t.row(vec![
                    step.step.clone(),
                    step.units.to_string(),
                    step.done.to_string(),
                    step.claimed.to_string(),
                    counters.join(", "),
                ]);
            }
            println!("{}", t.render());
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::List { config, limit, json } => {
            let host = open(&config)?;
            let runs = host.store.job_runs(limit)?;
            let holds = host.store.holds(None)?;
            if json.json {
                let list: Vec<_> = runs
                    .iter()
                    .map(|r| {
                        let mut value = serde_json::to_value(r).unwrap_or_default();
                        value["holds"] =
                            serde_json::to_value(holds.iter().filter(|h| h.run == r.id).collect::<Vec<_>>())
                                .unwrap_or_default();
                        value
                    })
                    .collect();
                return print_json(&list).map(|()| ExitCode::SUCCESS);
            }
            let mut t = table(&["RUN", "KIND", "STARTED", "STATUS", "HOSTS (UNITS)", "COUNTERS", "HOLDS"]);
            for r in runs {
                let counters: Vec<String> = r
                    .counters
                    .iter()
                    .filter(|(_, v)| v.as_u64().is_some_and(|n| n > 0))
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect();
                let held: Vec<String> = holds
                    .iter()
                    .filter(|h| h.run == r.id)
                    .map(|h| {
                        format!(
                            "{} ({}{})",
                            h.resource_type,
                            h.status,
                            h.decided_by.as_ref().map(|d| format!(" by {d}")).unwrap_or_default()
                        )
                    })
                    .collect();
                let hosts: Vec<String> = r.hosts.iter().map(|(host, units)| format!("{host} ({units})")).collect();
                t.row(vec![
                    r.id.to_string(),
                    r.kind,
                    format_time(r.started_at),
                    r.status,
                    hosts.join(", "),
                    counters.join(", "),
                    held.join(", "),
                ]);
            }
            println!("{}", t.render());
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Resume { config, user, run } => {
            let mut host = open(&config)?;
            let actor = operator(&host, &user)?;
            let released = provision::jobs::resume(&mut host, run, &actor)?;
            println!("Run {run} resumed: {released} held orders released to fulfilment.");
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Cancel { config, user, run } => {
            let mut host = open(&config)?;
            let actor = operator(&host, &user)?;
            let cancelled = provision::jobs::cancel(&mut host, run, &actor)?;
            println!("Run {run} cancelled: {cancelled} held orders closed.");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn wait_timeout(text: &str) -> Result<std::time::Duration, String> {
    provision::config::parse_duration(text)
}

/// The history actor for an operator: a known user who holds `Operate`, checked by the
/// application layer as for the API.
pub fn operator(host: &Host, user: &UserArg) -> anyhow::Result<String> {
    let who = provision::app::Principal::of(host, &user.user)?;
    who.require(provision::permissions::Capability::Operate).map_err(provision::operators::ActionError::from)?;
    Ok(who.actor())
}

fn simulate(config: &ConfigArg, json: bool) -> anyhow::Result<ExitCode> {
    let config = Config::load(&config.config)?;
    let mut host = Host::open_for_simulation(config)?;
    let bar = progress();
    let simulation = provision::jobs::simulate(&mut host, &bar);
    bar.finish_and_clear();
    let simulation = simulation.context("the simulation stopped")?;
    if json {
        print_json(&simulation)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = table(&["RESOURCE TYPE", "CHANGE", "ORDERS", "PENDING", "AWAITING APPROVAL", "BLOCKED", "RULE ERRORS"]);
    for (resource_type, tally) in &simulation.resource_types {
        for (kind, k) in &tally.changes {
            t.row(vec![
                resource_type.clone(),
                kind.to_string(),
                k.orders.to_string(),
                k.pending.to_string(),
                k.awaiting_approval.to_string(),
                k.blocked.to_string(),
                k.rule_errors.to_string(),
            ]);
        }
    }
    println!("Simulation: what the next job run's compute would write. Nothing was written.");
    if simulation.resource_types.values().all(|tally| tally.changes.is_empty()) {
        println!("No order to write: the managed systems match the desired state (as last synchronised).");
    } else {
        println!("{}", t.render());
    }
    for (resource_type, tally) in &simulation.resource_types {
        let mut notes = Vec::new();
        for (n, what) in [
            (tally.already_matching, "recorded Verified (already matching)"),
            (tally.window_over, "recorded Inactive (window over)"),
            (tally.superseded, "open orders superseded"),
            (tally.inactive, "open orders made Inactive (window ended)"),
        ] {
            if n > 0 {
                notes.push(format!("{n} {what}"));
            }
        }
        if let Some(exceeded) = &tally.exceeded {
            notes.push(format!(
                "THRESHOLD EXCEEDED ({}): the run would hold these orders",
                provision::jobs::describe(exceeded)
            ));
        }
        if !notes.is_empty() {
            println!("{}", output::message(&format!("{resource_type}: {}", notes.join("; "))));
        }
        for note in &tally.notes {
            println!("note: {}", output::message(note));
        }
    }
    for problem in &simulation.problems {
        println!("problem: {}", output::message(problem));
    }
    Ok(ExitCode::SUCCESS)
}
