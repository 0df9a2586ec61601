//! `provision db ...`: the database's schema and contents.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use provision::config::Config;
use provision::store::{DatabaseStatus, Store, status};

use super::{ConfigArg, JsonArg, print_json};

#[derive(Subcommand)]
pub enum DbCommand {
    /// The database: backend, file or URL, schema version against this host's, pending migrations,
    /// size and row counts. Read-only: nothing is created or migrated. Exits 1 when the
    /// database was written by a newer host (this one must not use it)
    Status {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Apply the migrations this host has and the database lacks (creating it if need be).
    /// Every command that writes does so too; run this first to upgrade at a moment of your
    /// choosing, before the servers start
    Migrate {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        json: JsonArg,
    },
}

fn describe(s: &DatabaseStatus) -> String {
    if !s.exists {
        return format!("{} database {}: not created yet ({} migrations to apply).", s.backend, s.location, s.latest);
    }
    let mut text = format!(
        "{} database {}: schema version {} of {}{}; {:.1} MiB",
        s.backend,
        s.location,
        s.version,
        s.latest,
        match (s.newer, s.pending) {
            (true, _) => " (written by a newer host: upgrade this one before using it)".to_string(),
            (false, 0) => ", up to date".to_string(),
            (false, n) => format!(", {n} migrations pending (`provision db migrate`)"),
        },
        s.bytes as f64 / (1 << 20) as f64
    );
    if let Some(c) = &s.counts {
        text.push_str(&format!(
            ".\n{} identities, {} assignments, {} orders, {} history rows, {} job runs.",
            c.identities, c.assignments, c.orders, c.history, c.job_runs
        ));
    } else {
        text.push('.');
    }
    text
}

pub fn run(command: DbCommand) -> anyhow::Result<ExitCode> {
    match command {
        DbCommand::Status { config, json } => {
            let config = Config::load(&config.config)?;
            let found =
                status(&config.database).with_context(|| format!("cannot read the database {}", config.database))?;
            if json.json {
                print_json(&found)?;
            } else {
                println!("{}", describe(&found));
            }
            Ok(if found.newer { ExitCode::from(super::EXIT_FAILURE) } else { ExitCode::SUCCESS })
        }
        DbCommand::Migrate { config, json } => {
            let config = Config::load(&config.config)?;
            let before =
                status(&config.database).with_context(|| format!("cannot read the database {}", config.database))?;
            if before.newer {
                anyhow::bail!(
                    "{}: schema version {} was written by a newer host (this one knows {}): upgrade this host",
                    before.location,
                    before.version,
                    before.latest
                );
            }
            drop(Store::connect(&config.database).with_context(|| format!("migrating {}", config.database))?);
            let after = status(&config.database)?;
            if json.json {
                print_json(&serde_json::json!({ "from": before.version, "to": after.version, "status": after }))?;
            } else if before.version == after.version {
                println!("{}: already at schema version {}.", after.location, after.version);
            } else {
                println!("{}: migrated from schema version {} to {}.", after.location, before.version, after.version);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
