//! The `[plugins.NAME]` tables: component file, pin, limits, config values, grants.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use super::{
    ConfigValue, DEFAULT_DISABLE_AFTER, DEFAULT_MEMORY, DEFAULT_TIMEOUT, DirGrant, HttpGrant, HttpLimits, PluginConfig,
    PluginSource, Source, SourceError, duration,
};
use crate::plugins::bundled;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlugin {
    file: String,
    sha256: Option<String>,
    memory: Option<ByteSize>,
    timeout: Option<String>,
    #[serde(default)]
    config: BTreeMap<String, toml::Value>,
    http: Option<RawHttpLimits>,
    #[serde(default)]
    grants: RawGrants,
    disable_after: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGrants {
    #[serde(default)]
    dirs: Vec<RawDirGrant>,
    #[serde(default)]
    http: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpLimits {
    timeout: Option<String>,
    max_request: Option<ByteSize>,
    max_response: Option<ByteSize>,
}

/// Parses `scheme://host[:port]` (no path, no user info).
pub(super) fn http_grant(text: &str) -> Result<HttpGrant, String> {
    let (scheme, rest) =
        text.split_once("://").ok_or("must be scheme://host:port, e.g. \"https://api.example.com\"")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        other => return Err(format!("scheme `{other}` is not http or https")),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return Err("must name only scheme, host and port (no path, query or user)".into());
    }
    let (host, port) =
        match rest.rsplit_once(':').filter(|(h, _)| !h.ends_with(':') && (!h.starts_with('[') || h.ends_with(']'))) {
            Some((host, port)) if !port.contains(']') => {
                (host, port.parse::<u16>().map_err(|_| format!("port `{port}` is not a number from 1 to 65535"))?)
            }
            _ => (rest, default_port),
        };
    let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    if host.is_empty() || host == "*" || host.contains('*') && !host.starts_with("*.") || host[1..].contains('*') {
        return Err(format!("host `{host}`: a wildcard must be written as `*.domain`"));
    }
    Ok(HttpGrant { scheme, host, port })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirGrant {
    host: String,
    guest: String,
    #[serde(default)]
    writable: bool,
}

/// Flattens a plugin's config table: nested tables become dotted keys (`map.email`); a table
/// holding only `env` or `file` is a secret.
fn config_values(
    source: &Source,
    key: &str,
    prefix: &str,
    table: BTreeMap<String, toml::Value>,
    base: &std::path::Path,
    out: &mut BTreeMap<String, ConfigValue>,
) -> Result<(), SourceError> {
    for (k, value) in table {
        let name = if prefix.is_empty() { k } else { format!("{prefix}.{k}") };
        let value_key = format!("{key}.{name}");
        let value = match value {
            toml::Value::String(s) => ConfigValue::Plain(s),
            toml::Value::Integer(i) => ConfigValue::Plain(i.to_string()),
            toml::Value::Float(f) => ConfigValue::Plain(f.to_string()),
            toml::Value::Boolean(b) => ConfigValue::Plain(b.to_string()),
            toml::Value::Datetime(d) => ConfigValue::Plain(d.to_string()),
            toml::Value::Table(table)
                if table.len() == 1
                    && table.keys().all(|k| k == "env" || k == "file")
                    && table.values().all(toml::Value::is_str) =>
            {
                let raw = toml::Value::Table(table)
                    .try_into::<super::operators::RawSecret>()
                    .map_err(|e| source.error(&value_key, format!("not a secret: {e}")))?;
                ConfigValue::Secret(super::operators::secret(source, &value_key, raw, base)?)
            }
            toml::Value::Table(table) => {
                config_values(source, key, &name, table.into_iter().collect(), base, out)?;
                continue;
            }
            toml::Value::Array(_) => {
                return Err(source.error(
                    value_key,
                    "plugin config values are strings, numbers, booleans, secrets ({ env = \"VAR\" } or { file = \"path\" }) or tables of them (join lists with commas)",
                ));
            }
        };
        out.insert(name, value);
    }
    Ok(())
}

pub(super) fn plugin(
    source: &Source,
    key: &str,
    name: &str,
    raw: RawPlugin,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<PluginConfig, SourceError> {
    let base = resolve("");
    let plugin_source = match raw.file.strip_prefix("bundled:") {
        Some(bundled_name) => {
            if bundled::get(bundled_name).is_none() {
                let known = bundled::ALL.iter().map(|(n, _)| format!("bundled:{n}")).collect::<Vec<_>>().join(", ");
                return Err(source
                    .error(format!("{key}.file"), format!("no bundled plugin `{bundled_name}` (bundled: {known})")));
            }
            PluginSource::Bundled(bundled_name.to_string())
        }
        None => {
            let path = resolve(&raw.file);
            if !path.is_file() {
                return Err(
                    source.error(format!("{key}.file"), format!("plugin file {} does not exist", path.display()))
                );
            }
            PluginSource::File(path)
        }
    };
    let sha256 = match raw.sha256 {
        Some(pin) => {
            let pin = pin.trim().to_ascii_lowercase();
            if pin.len() != 64 || !pin.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(source.error(format!("{key}.sha256"), "must be 64 hexadecimal digits"));
            }
            Some(pin)
        }
        None => None,
    };
    let memory = raw.memory.map_or(DEFAULT_MEMORY, |m| m.as_u64());
    if !(1024 * 1024..=4 * 1024 * 1024 * 1024).contains(&memory) {
        return Err(source.error(format!("{key}.memory"), "must be between 1 MiB and 4 GiB"));
    }
    let timeout = duration(source, &format!("{key}.timeout"), raw.timeout.as_deref())?.unwrap_or(DEFAULT_TIMEOUT);
    if timeout.is_zero() || timeout > Duration::from_secs(600) {
        return Err(source.error(format!("{key}.timeout"), "must be more than 0 and at most 10 minutes"));
    }
    let mut config = BTreeMap::new();
    config_values(source, &format!("{key}.config"), "", raw.config, &base, &mut config)?;
    let mut http = Vec::new();
    for (i, text) in raw.grants.http.iter().enumerate() {
        http.push(
            http_grant(text)
                .map_err(|problem| source.error(format!("{key}.grants.http[{i}]"), format!("`{text}` {problem}")))?,
        );
    }
    let defaults = HttpLimits::default();
    let http_limits = match raw.http {
        None => defaults,
        Some(limits) => {
            let timeout = duration(source, &format!("{key}.http.timeout"), limits.timeout.as_deref())?
                .unwrap_or(defaults.timeout);
            if timeout.is_zero() {
                return Err(source.error(format!("{key}.http.timeout"), "must be more than 0"));
            }
            HttpLimits {
                timeout,
                max_request: limits.max_request.map_or(defaults.max_request, |b| b.as_u64()),
                max_response: limits.max_response.map_or(defaults.max_response, |b| b.as_u64()),
            }
        }
    };
    let mut dirs = Vec::new();
    for (i, grant) in raw.grants.dirs.into_iter().enumerate() {
        let grant_key = format!("{key}.grants.dirs[{i}]");
        if !grant.guest.starts_with('/') {
            return Err(source.error(format!("{grant_key}.guest"), "must be an absolute guest path such as \"/data\""));
        }
        let host = resolve(&grant.host);
        if !host.is_dir() {
            if grant.writable {
                // A writable grant is the plugin's own output area: create it on first use.
                std::fs::create_dir_all(&host).map_err(|e| {
                    source.error(format!("{grant_key}.host"), format!("cannot create {}: {e}", host.display()))
                })?;
            } else {
                return Err(
                    source.error(format!("{grant_key}.host"), format!("directory {} does not exist", host.display()))
                );
            }
        }
        dirs.push(DirGrant { host, guest: grant.guest, writable: grant.writable });
    }
    let disable_after = raw.disable_after.unwrap_or(DEFAULT_DISABLE_AFTER);
    Ok(PluginConfig {
        name: name.to_string(),
        source: plugin_source,
        sha256,
        memory,
        timeout,
        config,
        dirs,
        http,
        http_limits,
        disable_after,
    })
}
