//! `provision history export`: the audit trail of order state changes, streamed.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use provision::app::history::{Format, export, parse_time};
use provision::config::Config;
use provision::store::Store;

use super::{ConfigArg, InvalidInput};

#[derive(Subcommand)]
pub enum HistoryCommand {
    /// Every order state change from --since to --until (the order, its owner and resource
    /// type, from and to state, event, who and why), oldest first, as JSON lines or CSV. Rows are
    /// written as they are read, so memory stays flat over millions; a read-only connection,
    /// beside running jobs.
    ///
    /// Example: provision history export --since 2026-12-01 --format csv --output december.csv
    Export {
        #[command(flatten)]
        config: ConfigArg,
        /// From this time on (RFC 3339, such as 2026-12-01T00:00:00Z, or a date, midnight UTC)
        #[arg(long)]
        since: String,
        /// Before this time (default: now)
        #[arg(long)]
        until: Option<String>,
        /// Output format
        #[arg(long, value_enum, default_value_t = Format::Jsonl)]
        format: Format,
        /// Write to this file instead of stdout
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

pub fn run(command: HistoryCommand) -> anyhow::Result<ExitCode> {
    let HistoryCommand::Export { config, since, until, format, output } = command;
    let since = parse_time(&since).map_err(|e| InvalidInput(format!("--since: {e}")))?;
    let until = match until {
        Some(until) => parse_time(&until).map_err(|e| InvalidInput(format!("--until: {e}")))?,
        None => provision::model::now_ms() + 1,
    };
    if until <= since {
        return Err(InvalidInput("--until must be after --since".into()).into());
    }
    let config = Config::load(&config.config)?;
    let store = Store::connect_read_only(&config.database)
        .with_context(|| format!("cannot open the database {}", config.database))?;
    let bar = super::progress();
    let written = match &output {
        Some(path) => {
            let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
            export(&store, since, until, format, file, |n| bar.set_message(format!("{n} rows")))
                .with_context(|| format!("exporting to {}", path.display()))?
        }
        None => {
            let stdout = std::io::stdout().lock();
            export(&store, since, until, format, stdout, |n| bar.set_message(format!("{n} rows")))?
        }
    };
    bar.finish_and_clear();
    if let Some(path) = output {
        println!("Exported {written} state changes to {}.", path.display());
    } else {
        std::io::stdout().flush()?;
    }
    Ok(ExitCode::SUCCESS)
}
