//! Command-line definitions and dispatch. Each command is a thin layer over the library: it
//! opens the host, calls one library function, and prints the result for people or, with
//! `--json`, for scripts.

mod db;
mod demo;
mod events;
mod history;
mod jobs;
mod notifications;
mod orders;
mod output;
mod people;
mod plugin;
mod plugins;
mod serve;
mod work;

pub use output::message;
use output::{print_json, table};

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use provision::config::{Config, SourceError};
use provision::host::{Host, OpenError};
use provision::jobs::JobError;
use provision::operators::ActionError;

/// Exit code: the command failed (database, I/O, a job that could not finish).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: the command line is wrong.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: a config or input file is invalid; the message names file, key and line.
pub const EXIT_INVALID_INPUT: u8 = 3;
/// Exit code: the job ran to the end but reported problems (a plugin call that failed, a
/// managed system that could not be read); details are printed and kept with the run.
pub const EXIT_JOB_PROBLEMS: u8 = 4;
/// Exit code: a person's action was refused (no permission, their own order, an order in the
/// wrong state); nothing was changed.
pub const EXIT_REFUSED: u8 = 5;
/// Exit code: a run of another kind is unfinished on the database (the message names it);
/// nothing was done. `job run --wait` waits instead.
pub const EXIT_LOCKED: u8 = 6;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failure (database, I/O, a job that could not finish)
  2  wrong command line
  3  invalid config or input file (the message names file, key and line)
  4  the job ran but reported problems (failed plugin calls, unreadable systems,
     undeliverable notifications)
  5  an action was refused (no permission, own order, wrong state); nothing changed
  6  a run of another kind is unfinished on the database (named); nothing was done
     (`job run --wait` waits for it)";

/// The provisioning policy host.
///
/// Decides, records and carries out every write identity governance makes to managed
/// systems: desired assignments become provisioning orders, review rules decide which need a
/// human, connectors carry them out, synchronisation verifies them. Connectors, review rules
/// and notification routers are sandboxed WebAssembly components declared in the config.
///
/// Start with `provision demo`, then read examples/quickstart/provision.toml.
#[derive(Parser)]
#[command(name = "provision", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Log level (error, warn, info, debug, trace) or a tracing filter such as
    /// `info,plugin=debug`. Logs go to stderr; the `plugin` target carries plugins' own lines.
    #[arg(long, global = true, env = "PROVISION_LOG", default_value = "warn")]
    pub log_level: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the quickstart deployment end to end in a fresh directory and show every order's
    /// states and history
    Demo(demo::DemoArgs),
    /// Run the complete job (or one step, or a simulation), list runs, resume or cancel a run
    /// held by a threshold
    #[command(subcommand)]
    Job(jobs::JobCommand),
    /// List, inspect and retry provisioning orders
    #[command(subcommand)]
    Orders(orders::OrdersCommand),
    /// Load identities and assignments (the desired state) from TOML or CSV files
    Import(ImportArgs),
    /// The plugins of a config: worlds, health, calls; enable a disabled one
    #[command(subcommand)]
    Plugins(plugins::PluginsCommand),
    /// For plugin authors: check a component file, or run it on a fixture in the host's sandbox
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Provisioning review: orders awaiting approval, and reviewers' decisions
    #[command(subcommand)]
    Review(work::ReviewCommand),
    /// Manual provisioning: transmitted orders people carry out, and their confirmations
    #[command(subcommand)]
    Manual(work::ManualCommand),
    /// Operators who review and provision by hand, and who are notified
    #[command(subcommand)]
    Users(people::UsersCommand),
    /// Profiles: named sets of permission paths given to users
    #[command(subcommand)]
    Profiles(people::ProfilesCommand),
    /// The notification outbox and its deliveries
    #[command(subcommand)]
    Notifications(notifications::NotificationsCommand),
    /// Where order state changes are published (CloudEvents to webhooks): subscribers, delivery
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// The database: schema version, pending migrations, size; apply migrations
    #[command(subcommand)]
    Db(db::DbCommand),
    /// The audit trail: export every order state change in a time range
    #[command(subcommand)]
    History(history::HistoryCommand),
    /// Serve the JSON API (/api/v1), the web pages, /metrics and /healthz, and run the complete
    /// job on `serve.job_interval`; stops cleanly on SIGINT or SIGTERM
    Serve(serve::ServeArgs),
    /// API tokens: what signs in to the API and the pages
    #[command(subcommand)]
    Tokens(serve::TokensCommand),
}

#[derive(Args, Clone)]
struct ConfigArg {
    /// The host's config file
    #[arg(long, short, env = "PROVISION_CONFIG", default_value = "provision.toml")]
    config: PathBuf,
}

#[derive(Args)]
struct JsonArg {
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ImportArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Desired-state files, TOML or CSV (see examples/quickstart/data.toml and the README),
    /// applied together as one change: an assignment may name an identity of an earlier file
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The files are the complete desired state: withdraw every assignment they do not list
    #[arg(long)]
    replace: bool,
    #[command(flatten)]
    json: JsonArg,
}

/// Sets up `tracing` to stderr from the level flag (or `RUST_LOG`-style filter).
pub fn init_logging(level: &str) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    use tracing_subscriber::util::SubscriberInitExt as _;
    logger(level, std::io::stderr, std::io::stderr().is_terminal())?.try_init()?;
    Ok(())
}

/// The log formatter: tracing's own lines, with every field's value escaped
/// (`provision::text::escape`). Events of target `plugin` carry a guest's text, and others
/// identity keys or plugins' messages: none of it may drive the terminal or forge a line.
fn logger<W>(level: &str, writer: W, ansi: bool) -> anyhow::Result<impl tracing::Subscriber + Send + Sync + 'static>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::field::MakeExt as _;
    let filter = tracing_subscriber::EnvFilter::try_new(level).context("not a level or filter")?;
    let fields = tracing_subscriber::fmt::format::debug_fn(|out, field, value| {
        let value = format!("{value:?}");
        let value = provision::text::escape(&value);
        match field.name() {
            "message" => write!(out, "{value}"),
            name => write!(out, "{name}={value}"),
        }
    })
    .delimited(" ");
    Ok(tracing_subscriber::fmt()
        .with_env_filter(filter)
        .fmt_fields(fields)
        .with_writer(writer)
        .with_ansi(ansi)
        .finish())
}

/// The exit code for an error: invalid input files get their own.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    let invalid = error.chain().any(|cause| {
        cause.downcast_ref::<SourceError>().is_some()
            || cause.downcast_ref::<InvalidInput>().is_some()
            || matches!(cause.downcast_ref::<OpenError>(), Some(OpenError::Config(_)))
            || matches!(cause.downcast_ref::<JobError>(), Some(JobError::ConfigDiffers { .. }))
    });
    let refused = error
        .chain()
        .any(|cause| matches!(cause.downcast_ref::<ActionError>(), Some(e) if !matches!(e, ActionError::Store(_))));
    let locked = error.chain().any(|cause| matches!(cause.downcast_ref::<JobError>(), Some(JobError::Busy(_))));
    // Only `bounded` returns a bare `TooLong`; the library's are inside its own errors.
    let too_long = error.chain().any(|cause| cause.downcast_ref::<provision::limits::TooLong>().is_some());
    if locked {
        EXIT_LOCKED
    } else if too_long {
        EXIT_USAGE
    } else if invalid {
        EXIT_INVALID_INPUT
    } else if refused {
        EXIT_REFUSED
    } else {
        EXIT_FAILURE
    }
}

/// Refuses a text argument over its limit (`provision::limits`): a wrong command line, exit 2,
/// before anything is opened.
fn bounded(flag: &'static str, text: &str, limit: usize) -> anyhow::Result<()> {
    provision::limits::check(flag, text, limit)?;
    Ok(())
}

/// An input file or argument that is not valid (exit 3); the message names it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

/// Loads a config and opens its host.
fn open(config: &ConfigArg) -> anyhow::Result<Host> {
    let config = Config::load(&config.config)?;
    Ok(Host::open(config)?)
}

/// A spinner on stderr for long work; invisible when stderr is not a terminal.
pub fn progress() -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({pos} items, {elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// Progress of a job run: the units of its current step done of those planned, with an
/// estimate of the time left for that step.
pub fn units_progress() -> ProgressBar {
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:24}] {pos}/{len} units, {elapsed}, about {eta} left")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Job(command) => jobs::run(command),
        Command::Orders(command) => orders::run(command),
        Command::Import(args) => {
            let mut host = open(&args.config)?;
            let desired = provision::import::load_all(&args.files, &host.config, &host.store)?;
            let names: Vec<String> = args.files.iter().map(|f| f.display().to_string()).collect();
            let imported = desired.apply(&mut host, &format!("import:{}", names.join(",")), args.replace)?;
            if args.json.json {
                println!("{}", serde_json::to_string_pretty(&imported)?);
            } else {
                println!(
                    "Imported {} identities and {} assignments ({} as they were already){}.",
                    imported.identities,
                    imported.assignments,
                    imported.unchanged,
                    if args.replace { format!("; withdrew {}", imported.withdrawn) } else { String::new() }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Review(command) => work::review(command),
        Command::Manual(command) => work::manual(command),
        Command::Users(command) => people::users(command),
        Command::Profiles(command) => people::profiles(command),
        Command::Notifications(command) => notifications::run(command),
        Command::History(command) => history::run(command),
        Command::Db(command) => db::run(command),
        Command::Events(command) => events::run(command),
        Command::Serve(args) => serve::serve(args),
        Command::Tokens(command) => serve::tokens(command),
        Command::Plugins(command) => plugins::run(command),
        Command::Plugin(command) => plugin::run(command),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// A log writer into memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for Captured {
        type Writer = Captured;
        fn make_writer(&'w self) -> Captured {
            self.clone()
        }
    }

    #[test]
    fn a_guest_log_line_cannot_drive_the_terminal_or_forge_a_line() {
        let hostile = "done\x1b[2J\x1b]0;owned\x07\r\n2026-12-02T00:00:00Z  INFO forged\u{202e}txt.exe";
        // On a terminal (colours on) and off one: the formatter's own colours are its business,
        // the guest's sequences are shown escaped.
        for ansi in [true, false] {
            let captured = Captured::default();
            let logger = super::logger("debug", captured.clone(), ansi).unwrap();
            tracing::subscriber::with_default(logger, || {
                tracing::info!(target: "plugin", plugin = "evil", "{hostile}");
                tracing::warn!(plugin = "evil", reason = hostile, "a call failed");
            });
            let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
            assert_eq!(log.lines().count(), 2, "one line per event:\n{log}");
            for raw in ["\x1b[2J", "\x1b]0;", "\x07", "\r", "\u{202e}"] {
                assert!(!log.contains(raw), "ansi {ansi}: {raw:?} raw in the log:\n{log}");
            }
            assert!(log.contains(r"done\u{1b}[2J\u{1b}]0;owned\u{7}\r\n2026"), "ansi {ansi}:\n{log}");
            assert!(log.contains(r"forged\u{202e}txt.exe"), "ansi {ansi}:\n{log}");
        }
    }
}
