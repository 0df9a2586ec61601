//! `provision plugins ...`: the plugins of a config, their health, and enabling a disabled one.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;

use super::output::message;
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
    /// Make a running `provision serve` load a plugin's file again: the new component is
    /// compiled and checked first, then takes the next batches; a broken one is refused and
    /// the loaded version keeps running (exit 5, with the reason)
    ///
    /// `provision serve` also reloads a plugin file on its own when it changes
    /// (`serve.plugin_poll`), and every plugin file on SIGHUP.
    Reload {
        #[command(flatten)]
        config: ConfigArg,
        /// The plugin's name in the config
        name: String,
        /// The server (default: http:// and `serve.listen` of the config)
        #[arg(long)]
        url: Option<String>,
        /// An API token of a user with /Custom/ProvisioningPolicy/Operate
        #[arg(long, env = "PROVISION_TOKEN", hide_env_values = true)]
        token: String,
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
                    .iter()
                    .map(|p| {
                        let health = host.health.get(&p.name).cloned().unwrap_or_default();
                        serde_json::to_value(provision::app::PluginView::of(p, health, false, None))
                    })
                    .collect::<Result<_, _>>()?;
                return print_json(&list).map(|()| ExitCode::SUCCESS);
            }
            let mut t =
                table(&["PLUGIN", "WORLDS", "WIT", "IS", "SHA256", "SIZE", "LOADED IN", "CALLS", "FAILURES", "STATUS"]);
            for p in host.plugins.values().iter() {
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
                t.row(vec![
                    p.name.clone(),
                    worlds.join(" "),
                    p.wit_version().to_string(),
                    p.description().map_or_else(|| "-".to_string(), |d| format!("{} {}", d.name, d.version)),
                    p.sha256[..12].to_string(),
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
            println!("{}", t.render());
        }
        PluginsCommand::Reload { config, name, url, token } => {
            let config = provision::config::Config::load(&config.config)?;
            let url = url.unwrap_or_else(|| format!("http://{}", config.serve.listen));
            let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
            let endpoint = format!("{}/api/v1/plugins/{name}/reload", url.trim_end_matches('/'));
            let response = agent
                .post(&endpoint)
                .header("Authorization", format!("Bearer {token}"))
                .header("Content-Type", "application/json")
                .send("{}")
                .with_context(|| format!("cannot reach provision serve at {url}"))?;
            let status = response.status().as_u16();
            let body: serde_json::Value =
                serde_json::from_str(&response.into_body().read_to_string()?).unwrap_or(serde_json::Value::Null);
            match status {
                200 if body["reloaded"] == true => {
                    let line = format!(
                        "Plugin `{name}` reloaded: sha256 {} -> {}",
                        body["from"].as_str().unwrap_or(""),
                        body["to"].as_str().unwrap_or("")
                    );
                    println!("{}", message(&line));
                }
                200 => {
                    println!("{}", message(&format!("Plugin `{name}`: its file holds the component already loaded.")))
                }
                _ => {
                    let message =
                        body["error"]["message"].as_str().map_or_else(|| format!("HTTP {status}"), String::from);
                    eprintln!("error: {}", super::output::message(&message));
                    return Ok(ExitCode::from(if matches!(status, 401 | 403 | 422) {
                        super::EXIT_REFUSED
                    } else {
                        super::EXIT_FAILURE
                    }));
                }
            }
        }
        PluginsCommand::Enable { config, name } => {
            let mut host = open(&config)?;
            if !host.plugins.contains_key(&name) {
                anyhow::bail!("there is no plugin `{name}` in the config");
            }
            if host.enable(&name)? {
                println!("{}", message(&format!("Plugin `{name}` enabled.")));
            } else {
                println!("{}", message(&format!("Plugin `{name}` was not disabled.")));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
