//! `provision plugins ...`: the plugins of a config, their health, and enabling a disabled one.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::json;

use super::{ConfigArg, JsonArg, open, print_json, table};
use provision::model::format_time;

#[derive(Subcommand)]
pub enum PluginsCommand {
    /// Load every plugin of the config and list them: worlds, sha256, size, load time, health
    List {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Enable a plugin disabled for failing too many calls in a row
    Enable {
        #[command(flatten)]
        config: ConfigArg,
        /// The plugin's name in the config
        name: String,
    },
}

pub fn run(command: PluginsCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginsCommand::List { config, json } => {
            let host = open(&config)?;
            if json.json {
                let list: Vec<_> = host
                    .plugins
                    .values()
                    .map(|p| {
                        json!({
                            "name": p.name,
                            "worlds": p.worlds(),
                            "wit_version": p.wit_version(),
                            "description": p.description(),
                            "can_read": p.can_read(),
                            "sha256": p.sha256,
                            "size": p.size,
                            "load_ms": p.load_time.as_secs_f64() * 1000.0,
                            "from_cache": p.from_cache,
                            "health": host.health.get(&p.name).cloned().unwrap_or_default(),
                        })
                    })
                    .collect();
                return print_json(&list).map(|()| ExitCode::SUCCESS);
            }
            let mut t =
                table(&["PLUGIN", "WORLDS", "WIT", "IS", "SHA256", "SIZE", "LOADED IN", "CALLS", "FAILURES", "STATUS"]);
            for p in host.plugins.values() {
                let mut worlds: Vec<String> = p.worlds().iter().map(ToString::to_string).collect();
                if p.can_read() {
                    worlds.push("(reads)".into());
                }
                let health = host.health.get(&p.name).cloned().unwrap_or_default();
                let status = match health.disabled_at {
                    Some(since) => format!(
                        "DISABLED since {} after {} failures in a row: {}",
                        format_time(since),
                        health.consecutive_failures,
                        health.last_error.unwrap_or_default()
                    ),
                    None if health.consecutive_failures > 0 => {
                        format!("{} failures in a row", health.consecutive_failures)
                    }
                    None => "healthy".into(),
                };
                t.add_row(vec![
                    p.name.clone(),
                    worlds.join(" "),
                    p.wit_version().to_string(),
                    p.description().map_or_else(|| "-".to_string(), |d| format!("{} {}", d.name, d.version)),
                    p.sha256[..16].to_string(),
                    format!("{} KiB", p.size / 1024),
                    format!(
                        "{:.1} ms{}",
                        p.load_time.as_secs_f64() * 1000.0,
                        if p.from_cache { " (cached)" } else { "" }
                    ),
                    health.calls.to_string(),
                    health.failures.to_string(),
                    status,
                ]);
            }
            println!("{t}");
        }
        PluginsCommand::Enable { config, name } => {
            let mut host = open(&config)?;
            if !host.plugins.contains_key(&name) {
                anyhow::bail!("there is no plugin `{name}` in the config");
            }
            if host.enable(&name)? {
                println!("Plugin `{name}` enabled.");
            } else {
                println!("Plugin `{name}` was not disabled.");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
