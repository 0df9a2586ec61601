//! `provision events ...`: the subscribers of order state changes.

use std::process::ExitCode;

use clap::Subcommand;

use super::output::Cell;
use super::{ConfigArg, JsonArg, open, print_json, table};
use provision::model::format_time;

#[derive(Subcommand)]
pub enum EventsCommand {
    /// The subscribers ([events.subscribers] of the config): how far each got, its failures and
    /// when it is tried again
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Deliver what is due to every subscriber now (`provision serve` does this every second;
    /// without a server, run this from cron)
    Deliver {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        json: JsonArg,
    },
}

pub fn run(command: EventsCommand) -> anyhow::Result<ExitCode> {
    match command {
        EventsCommand::List { config, json } => {
            let host = open(&config)?;
            let list = host.store.subscribers()?;
            if json.json {
                return print_json(&list).map(|()| ExitCode::SUCCESS);
            }
            if list.is_empty() {
                println!("No subscriber: add one under [events.subscribers.NAME] in the config.");
                return Ok(ExitCode::SUCCESS);
            }
            let mut t = table(&["SUBSCRIBER", "CURSOR", "BEHIND", "DELIVERED", "FAILURES", "NEXT TRY", "LAST ERROR"]);
            for s in list {
                t.row(vec![
                    Cell::from(s.name),
                    s.cursor.to_string().into(),
                    s.behind.to_string().into(),
                    s.delivered.to_string().into(),
                    s.failures.to_string().into(),
                    s.next_attempt_at.map(format_time).unwrap_or_default().into(),
                    s.last_error.unwrap_or_default().into(),
                ]);
            }
            println!("{}", t.render());
            Ok(ExitCode::SUCCESS)
        }
        EventsCommand::Deliver { config, json } => {
            let mut host = open(&config)?;
            let owner = format!("{}:cli", provision::jobs::host_id());
            let events = host.config.events.clone();
            let report = provision::events::deliver(&mut host.store, &events, &owner)?;
            if json.json {
                print_json(&report)?;
            } else {
                println!("Delivered {} events.", report.delivered);
                for (name, why) in &report.failed {
                    println!("{name}: failed, retried later: {why}");
                }
                for name in &report.skipped {
                    println!("{name}: not due yet, or another process is delivering to it");
                }
            }
            Ok(if report.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(super::EXIT_FAILURE) })
        }
    }
}
