//! `provision notifications ...`: the outbox and its deliveries.

use std::process::ExitCode;

use clap::Subcommand;

use super::output::{Cell, message};
use super::{ConfigArg, JsonArg, open, print_json, table};
use provision::model::format_time;

#[derive(Subcommand)]
pub enum NotificationsCommand {
    /// The outbox: every notification with the status of its deliveries, oldest first
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Only notifications with a delivery in this status
        #[arg(long, value_parser = ["pending", "sent", "failed"])]
        status: Option<String>,
        /// Only the last N
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Route queued notifications and deliver what is due now (a job run does this too)
    Deliver {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Make failed deliveries pending again, then deliver
    Retry {
        #[command(flatten)]
        config: ConfigArg,
        /// Delivery ids (see `notifications list`)
        #[arg(required = true)]
        deliveries: Vec<i64>,
    },
}

pub fn run(command: NotificationsCommand) -> anyhow::Result<ExitCode> {
    match command {
        NotificationsCommand::List { config, status, limit, json } => {
            let host = open(&config)?;
            let list = host.store.notifications(status.as_deref(), limit)?;
            if json.json {
                return print_json(&list).map(|()| ExitCode::SUCCESS);
            }
            // Queued with their state change but not yet routed: not in the outbox, not lost.
            let unrouted = host.store.unrouted_count()?;
            if unrouted > 0 {
                println!(
                    "{unrouted} order change(s) wait to be routed into the outbox (the next job run or \
                     `provision notifications deliver` routes them; a failing router is named in its report)."
                );
            }
            if list.is_empty() {
                println!("The outbox is empty.");
                return Ok(ExitCode::SUCCESS);
            }
            let mut t = table(&["ID", "CREATED", "KIND", "ENTITY TYPE", "TO", "SUBJECT", "DELIVERIES"]);
            for n in list {
                let deliveries: Vec<String> = n
                    .deliveries
                    .iter()
                    .map(|d| {
                        let mut line = format!("#{} {} {} ({} attempts)", d.id, d.channel, d.status, d.attempts);
                        if let Some(error) = d.last_error.as_ref().filter(|_| d.status != "sent") {
                            line.push_str(&format!(": {error}"));
                        }
                        line
                    })
                    .collect();
                t.row(vec![
                    Cell::from(n.id.to_string()),
                    format_time(n.created_at).into(),
                    n.kind.to_string().into(),
                    n.entity_type.into(),
                    n.recipients.iter().map(|r| r.login.as_str()).collect::<Vec<_>>().join(", ").into(),
                    n.subject.into(),
                    if deliveries.is_empty() { "(outbox only)".into() } else { Cell::Lines(deliveries) },
                ]);
            }
            println!("{}", t.render());
            Ok(ExitCode::SUCCESS)
        }
        NotificationsCommand::Deliver { config, json } => {
            let mut host = open(&config)?;
            let report = provision::notify::route_and_deliver(&mut host)?;
            if json.json {
                print_json(&report)?;
            } else {
                println!(
                    "Routed {} queued intents into {} notifications; delivered {}, {} to retry, {} given up.",
                    report.routed, report.notifications, report.delivered, report.retrying, report.gave_up
                );
                for problem in &report.problems {
                    println!("problem: {}", message(problem));
                }
            }
            Ok(if report.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(super::EXIT_JOB_PROBLEMS) })
        }
        NotificationsCommand::Retry { config, deliveries } => {
            let mut host = open(&config)?;
            let changed = host.store.retry_deliveries(&deliveries)?;
            let report = provision::notify::route_and_deliver(&mut host)?;
            println!(
                "{changed} deliveries made pending again; delivered {}, {} to retry.",
                report.delivered, report.retrying
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
