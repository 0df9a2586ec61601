//! `provision demo`: the quickstart deployment (examples/quickstart, compiled into the binary)
//! written to a fresh directory, imported, run through the complete job, and shown.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use provision::config::Config;
use provision::host::Host;
use provision::store::OrderFilter;

const CONFIG: &str = include_str!("../../../examples/quickstart/provision.toml");
const DATA: &str = include_str!("../../../examples/quickstart/data.toml");

#[derive(Args)]
pub struct DemoArgs {
    /// Directory for the demo deployment (created; must not already hold a database).
    /// Default: a new temporary directory, kept so you can look around.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the demo's state in PostgreSQL at this URL (`postgres://user@host:port/database`,
    /// no password in it) instead of a SQLite file in the directory: several hosts can then
    /// share it (see the README's "Several hosts")
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Print the orders as JSON
    #[arg(long)]
    json: bool,
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let dir = match args.dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            if dir.join("provision.db").exists() {
                anyhow::bail!("{} already holds a database; give an empty directory", dir.display());
            }
            dir
        }
        None => tempfile::Builder::new().prefix("provision-demo-").tempdir()?.keep(),
    };
    let config_path = dir.join("provision.toml");
    let data_path = dir.join("data.toml");
    let config_text = match &args.database_url {
        Some(url) => CONFIG.replace(
            "[database]\npath = \"provision.db\"",
            &format!("[database]\nurl = {}", toml::Value::String(url.clone())),
        ),
        None => CONFIG.to_string(),
    };
    std::fs::write(&config_path, config_text).with_context(|| format!("cannot write {}", config_path.display()))?;
    std::fs::write(&data_path, DATA).with_context(|| format!("cannot write {}", data_path.display()))?;

    let config = Config::load(&config_path)?;
    let mut host = Host::open(config)?;
    let desired = provision::import::load(&data_path, &host.config, &host.store)?;
    let imported = desired.apply(&mut host, "import:data.toml", false)?;

    let bar = super::progress();
    let report = provision::jobs::complete(&mut host, &bar);
    bar.finish_and_clear();
    let report = report.context("the complete job stopped")?;

    let orders = host.store.orders(&OrderFilter::default())?;
    if args.json {
        let list: Vec<_> = orders
            .iter()
            .map(|o| -> anyhow::Result<_> {
                Ok(serde_json::json!({
                    "id": o.id,
                    "owner": o.owner,
                    "resource_type": o.resource_type,
                    "change": o.change.kind,
                    "state": { "number": o.state.number(), "name": o.state.name() },
                    "path": host.store.history(o.id)?.iter().map(|h| h.to.number()).collect::<Vec<_>>(),
                }))
            })
            .collect::<anyhow::Result<_>>()?;
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "dir": dir, "orders": list }))?);
        return Ok(ExitCode::SUCCESS);
    }

    println!("Demo deployment in {}", dir.display());
    println!("  config {}, desired state {}", config_path.display(), data_path.display());
    println!("  managed system (the file connector's journals): {}", dir.join("managed").display());
    println!();
    println!("Imported {} identities and {} assignments.", imported.identities, imported.assignments);
    super::output::job_report(&report, false)?;
    for order in &orders {
        println!();
        let line = format!(
            "Order {}: {} {} for {} -> {}{}",
            order.id,
            order.change.kind,
            order.resource_type,
            order.owner,
            order.state,
            order.message.as_ref().map(|m| format!(" ({m})")).unwrap_or_default()
        );
        println!("{}", super::output::message(&line));
        println!("{}", super::output::history_lines(&host.store.history(order.id)?));
    }
    println!();
    println!("Next: look at the orders again with");
    println!("  provision orders list --config {}", config_path.display());
    Ok(ExitCode::SUCCESS)
}
