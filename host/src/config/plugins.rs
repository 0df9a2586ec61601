//! The `[plugins.NAME]` tables: component file, pin, limits, config values, grants.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use super::{
    DEFAULT_DISABLE_AFTER, DEFAULT_MEMORY, DEFAULT_TIMEOUT, DirGrant, PluginConfig, PluginSource, Source, SourceError,
    duration,
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
    #[serde(default)]
    grants: RawGrants,
    disable_after: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGrants {
    #[serde(default)]
    dirs: Vec<RawDirGrant>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirGrant {
    host: String,
    guest: String,
    #[serde(default)]
    writable: bool,
}

pub(super) fn plugin(
    source: &Source,
    key: &str,
    name: &str,
    raw: RawPlugin,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<PluginConfig, SourceError> {
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
    for (k, value) in raw.config {
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Datetime(d) => d.to_string(),
            toml::Value::Array(_) | toml::Value::Table(_) => {
                return Err(source.error(
                    format!("{key}.config.{k}"),
                    "plugin config values are strings, numbers or booleans (join lists with commas)",
                ));
            }
        };
        config.insert(k, text);
    }
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
        disable_after,
    })
}
