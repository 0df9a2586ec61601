//! `provision plugin ...`: tools for plugin authors. `check` says what a `.wasm` file is and
//! whether this host loads it; `test` runs it once on a fixture in the host's sandbox.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::output::Shown;
use super::{EXIT_FAILURE, EXIT_INVALID_INPUT, JsonArg, print_json};
use provision::config::{ConfigValue, DirGrant, PluginConfig, PluginSource, parse_duration, parse_http_grant};
use provision::plugins::inspect::{Format, Provision};
use provision::plugins::probe::{self, Fixture};
use provision::plugins::{LoadError, Runtime, bundled, versions};

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Say what a component is and whether this host loads it: world and WIT version, what it
    /// says about itself, its imports and the grants they need, size and sha256
    ///
    /// Exits 0 when the host would load it, 3 (naming every reason) when not.
    Check {
        /// The component: a `.wasm` file, or `bundled:NAME`
        file: String,
        #[command(flatten)]
        json: JsonArg,
    },
    /// Run a component once on a fixture in the host's sandbox: each result, the time and
    /// peak memory the call used, and the guest's log lines
    ///
    /// The fixture (JSON; see examples/fixtures/) holds `orders` (review rule, connector),
    /// `read` (synchronising connector) or `events` and `directory` (router), and optionally
    /// `expect`, the kind of each result. Exits 0 when the call succeeded and met `expect`,
    /// 1 when the component trapped, broke a limit, answered badly or missed `expect`, 3 when
    /// the component or fixture is invalid.
    Test(TestArgs),
}

#[derive(Args)]
pub struct TestArgs {
    /// The component: a `.wasm` file, or `bundled:NAME`
    file: String,
    /// The fixture file
    #[arg(long, short)]
    input: PathBuf,
    /// A config value the plugin reads through its `config` import (repeatable)
    #[arg(long = "config", value_name = "KEY=VALUE")]
    values: Vec<String>,
    /// Grant a directory: HOST_DIR:GUEST_PATH, with `:rw` to make it writable (repeatable)
    #[arg(long, value_name = "HOST:GUEST[:rw]")]
    grant_dir: Vec<String>,
    /// Grant an HTTP origin, e.g. https://api.example.com (repeatable)
    #[arg(long, value_name = "ORIGIN")]
    grant_http: Vec<String>,
    /// Memory limit of the call, e.g. "32 MiB"
    #[arg(long, default_value = "64 MiB")]
    memory: String,
    /// Time limit of the call, e.g. "2s"
    #[arg(long, default_value = "5s")]
    timeout: String,
    #[command(flatten)]
    json: JsonArg,
}

/// The bytes and source of `file` (a path or `bundled:NAME`).
fn component(file: &str) -> anyhow::Result<(Vec<u8>, PluginSource)> {
    if let Some(name) = file.strip_prefix("bundled:") {
        let bytes = bundled::get(name).with_context(|| {
            let known: Vec<String> = bundled::ALL.iter().map(|(n, _)| format!("bundled:{n}")).collect();
            format!("no bundled plugin `{name}` (bundled: {})", known.join(", "))
        })?;
        return Ok((bytes.to_vec(), PluginSource::Bundled(name.to_string())));
    }
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {file}"))?;
    Ok((bytes, PluginSource::File(PathBuf::from(file))))
}

/// A usage error about an argument: exit 3, naming it.
fn invalid(what: String) -> anyhow::Error {
    anyhow::Error::new(super::InvalidInput(what))
}

pub fn run(command: PluginCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::Check { file, json } => check(&file, json.json),
        PluginCommand::Test(args) => test(args),
    }
}

fn check(file: &str, json: bool) -> anyhow::Result<ExitCode> {
    let (bytes, _) = component(file)?;
    let runtime = Runtime::new(None)?;
    let inspection = runtime.inspect(&bytes);
    let code = if inspection.ok() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_INVALID_INPUT) };
    if json {
        print_json(&inspection)?;
        return Ok(code);
    }
    // What a component says about itself, and what its imports are called, are the author's text.
    let mut s = Shown::default();
    let format = match inspection.format {
        Format::Component => "a WebAssembly component",
        Format::CoreModule => "a core WebAssembly module",
        Format::NotWasm => "not WebAssembly",
    };
    println!(
        "{}: {format}, {}, sha256 {}",
        s.text(file),
        bytesize::ByteSize(inspection.size as u64),
        inspection.sha256
    );
    if !inspection.worlds.is_empty() {
        let mut worlds: Vec<String> = inspection.worlds.iter().map(ToString::to_string).collect();
        if inspection.can_read {
            worlds.push("(reads: synchronising-connector)".into());
        }
        let version = s.text(inspection.wit_version.as_deref().unwrap_or("?"));
        let note = if version == versions::CURRENT { "" } else { " (an older version; still loaded)" };
        println!("  implements  {} of {}@{version}{note}", worlds.join(" "), versions::PACKAGE);
    }
    match &inspection.description {
        Some(d) => {
            println!("  says it is  {} {}: {}", s.text(&d.name), s.text(&d.version), s.text(&d.summary));
            let types = if d.resource_types.is_empty() { "any".to_string() } else { d.resource_types.join(", ") };
            println!("  made for    resource types: {}", s.text(&types));
        }
        None if inspection.ok() => println!("  says it is  (nothing: `describe` is new in 0.2.0)"),
        None => {}
    }
    if !inspection.imports.is_empty() {
        println!("  imports");
        let names: Vec<String> = inspection.imports.iter().map(|i| s.text(&i.name)).collect();
        let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
        for (import, name) in inspection.imports.iter().zip(&names) {
            let how = match import.provision {
                Provision::Host => "the host",
                Provision::Wasi => "WASI, sandboxed (no environment, arguments or stdin)",
                Provision::NeedsDirGrant => "only the directories in plugins.NAME.grants.dirs",
                Provision::NeedsHttpGrant => "only the origins in plugins.NAME.grants.http",
                Provision::Denied => "linked, but every socket is refused",
                Provision::Missing => "NOT PROVIDED by this host",
            };
            println!("    {name:width$}  {how}");
        }
    }
    let grants: Vec<&str> = inspection
        .grants_needed()
        .iter()
        .map(|i| if i.provision == Provision::NeedsHttpGrant { "grants.http" } else { "grants.dirs" })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if !grants.is_empty() {
        println!("  grants      it reaches nothing until the config grants it: {}", grants.join(", "));
    }
    if inspection.ok() {
        println!("  loads in    {:.0} ms (compile, link, describe)", inspection.load_ms);
        println!("OK: this host loads it. Pin it in the config with sha256 = \"{}\"", inspection.sha256);
    } else {
        println!("NOT LOADABLE:");
        for problem in &inspection.problems {
            println!("  - {}", s.text(problem));
        }
    }
    s.note();
    Ok(code)
}

fn plugin_config(args: &TestArgs, source: PluginSource) -> anyhow::Result<PluginConfig> {
    let mut config = PluginConfig::new("test", source);
    config.memory = args
        .memory
        .parse::<bytesize::ByteSize>()
        .map_err(|e| invalid(format!("--memory `{}`: {e}", args.memory)))?
        .as_u64();
    config.timeout = parse_duration(&args.timeout).map_err(|e| invalid(format!("--timeout: {e}")))?;
    for value in &args.values {
        let (key, value) =
            value.split_once('=').ok_or_else(|| invalid(format!("--config `{value}`: expected KEY=VALUE")))?;
        config.config.insert(key.to_string(), ConfigValue::Plain(value.to_string()));
    }
    for grant in &args.grant_dir {
        let (rest, writable) = match grant.strip_suffix(":rw") {
            Some(rest) => (rest, true),
            None => (grant.strip_suffix(":ro").unwrap_or(grant), false),
        };
        let (host, guest) = rest
            .rsplit_once(':')
            .ok_or_else(|| invalid(format!("--grant-dir `{grant}`: expected HOST_DIR:GUEST_PATH[:rw]")))?;
        if !Path::new(host).is_dir() {
            return Err(invalid(format!("--grant-dir `{grant}`: {host} is not a directory")));
        }
        config.dirs.push(DirGrant { host: host.into(), guest: guest.to_string(), writable });
    }
    for origin in &args.grant_http {
        config.http.push(parse_http_grant(origin).map_err(|e| invalid(format!("--grant-http `{origin}`: {e}")))?);
    }
    Ok(config)
}

fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    let (_, source) = component(&args.file)?;
    let config = plugin_config(&args, source)?;
    let text = std::fs::read_to_string(&args.input).with_context(|| format!("cannot read {}", args.input.display()))?;
    let fixture =
        Fixture::parse(&text).map_err(|e| invalid(format!("{}: not a fixture: {e}", args.input.display())))?;
    let runtime = Runtime::new(None)?;
    let plugin = match runtime.load(&config) {
        Ok(plugin) => plugin.probed(),
        // Loading calls `describe` under the same limits: a trap or a broken limit there is the
        // component failing, like any call.
        Err(error @ LoadError::Describe(_)) => {
            eprintln!("error: {}", super::output::message(&format!("{}: {error}", args.file)));
            return Ok(ExitCode::from(EXIT_FAILURE));
        }
        Err(error) => return Err(invalid(format!("{}: {error}", args.file))),
    };
    let report = probe::run(&plugin, &fixture).map_err(|e| invalid(format!("{}: {e}", args.input.display())))?;
    let code = if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_FAILURE) };
    if args.json.json {
        print_json(&report)?;
        return Ok(code);
    }
    // Every result, log line and byte of output is the component's: shown escaped and cut.
    let mut s = Shown::default();
    let worlds: Vec<String> = plugin.worlds().iter().map(ToString::to_string).collect();
    println!(
        "{} ({} of {}@{}) on {}:",
        report.call,
        worlds.join(" "),
        versions::PACKAGE,
        plugin.wit_version(),
        s.text(&args.input.display().to_string())
    );
    for result in &report.results {
        let subject = match (result.get("order"), result.get("event")) {
            (Some(order), _) => s.text(&format!("order {order}")),
            (_, Some(event)) => s.text(&format!("event {event}")),
            _ => "page".to_string(),
        };
        let kind = s.text(result["kind"].as_str().unwrap_or_default());
        let mut rest = result.clone();
        if let Some(map) = rest.as_object_mut() {
            map.remove("order");
            map.remove("event");
            map.remove("kind");
            map.retain(|_, v| !v.is_null());
        }
        // `key: text` rather than JSON, so a reason reads as the component wrote it (escaped).
        let detail: Vec<String> = rest
            .as_object()
            .into_iter()
            .flatten()
            .map(|(key, value)| match value.as_str() {
                Some(text) => format!("{key}: {text}"),
                None => format!("{key}: {value}"),
            })
            .collect();
        println!("  {subject:10} {kind:16} {}", s.text(&detail.join("; ")));
    }
    if let Some(error) = &report.error {
        println!("  FAILED: {}", s.text(&error.to_string()));
    }
    let cost = &report.cost;
    println!(
        "time {:.2} ms (instantiate + call) · peak memory {} · {} log line(s)",
        cost.time.as_secs_f64() * 1000.0,
        bytesize::ByteSize(cost.peak_memory as u64),
        cost.logs.len()
    );
    for line in &cost.logs {
        println!("  [{}] {}", line.level, s.text(&line.message));
    }
    if !cost.output.trim().is_empty() {
        println!("stdout/stderr (last {} bytes):", cost.output.len());
        for line in cost.output.lines() {
            println!("  {}", s.text(line));
        }
    }
    match (&fixture.expect, report.mismatches.is_empty()) {
        (Some(expect), true) if report.error.is_none() => println!("expect: all {} result(s) match", expect.len()),
        (_, false) => {
            println!("expect: MISMATCH");
            for mismatch in &report.mismatches {
                println!("  - {}", s.text(mismatch));
            }
        }
        _ => {}
    }
    s.note();
    Ok(code)
}
