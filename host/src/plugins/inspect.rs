//! `provision plugin check`: what a `.wasm` file is, as this host sees it, before anyone deploys
//! it: the world and WIT version it implements, what it says about itself, each import and
//! which of them need a grant, its size and sha256; and every reason it would not load.

use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Description, Runtime, World, versions};
use crate::config::{PluginConfig, PluginSource};

/// What a file is at its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// A WebAssembly component (what plugins are).
    Component,
    /// A core WebAssembly module: not a component.
    CoreModule,
    /// Not WebAssembly at all.
    NotWasm,
}

/// How an import is satisfied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provision {
    /// The host's own interfaces (`log`, `config`, `directory`, `types`).
    Host,
    /// WASI, sandboxed: no environment, arguments, stdin or sockets.
    Wasi,
    /// Filesystem access: only the directories granted in `grants.dirs`.
    NeedsDirGrant,
    /// Outbound HTTP: only the origins granted in `grants.http`.
    NeedsHttpGrant,
    /// Sockets: linked, but every connection is refused (HTTP goes through `wasi:http`).
    Denied,
    /// Nothing in this host provides it: the component cannot be loaded.
    Missing,
}

/// One import of a component.
#[derive(Debug, Clone, Serialize)]
pub struct Import {
    /// Its name, e.g. `wasi:http/outgoing-handler@0.2.6`.
    pub name: String,
    /// How the host satisfies it.
    pub provision: Provision,
}

/// Everything `plugin check` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// Bytes.
    pub size: usize,
    /// sha256 of the file, what a config pins.
    pub sha256: String,
    /// What the file is.
    pub format: Format,
    /// The `provision:plugin` version it implements, when it names one this host knows.
    pub wit_version: Option<String>,
    /// The worlds it implements.
    pub worlds: Vec<World>,
    /// Whether a connector also exports `read`.
    pub can_read: bool,
    /// What it says about itself (`describe`, 0.2.0 and later).
    pub description: Option<Description>,
    /// Its imports.
    pub imports: Vec<Import>,
    /// Its exports' names.
    pub exports: Vec<String>,
    /// Compile, link and first-call time, milliseconds.
    pub load_ms: f64,
    /// Why it would not load; empty when it would.
    pub problems: Vec<String>,
}

impl Inspection {
    /// Whether the host would load it.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The imports that need a grant in the config to do anything.
    pub fn grants_needed(&self) -> Vec<&Import> {
        self.imports
            .iter()
            .filter(|i| matches!(i.provision, Provision::NeedsDirGrant | Provision::NeedsHttpGrant))
            .collect()
    }
}

fn format(bytes: &[u8]) -> Format {
    // The preamble: magic, then a version and layer (core module: 1, 0; component: 0xd, 1).
    match bytes {
        [0, b'a', b's', b'm', 1, 0, 0, 0, ..] => Format::CoreModule,
        [0, b'a', b's', b'm', _, _, 1, 0, ..] => Format::Component,
        _ => Format::NotWasm,
    }
}

fn provision_of(name: &str) -> Provision {
    let package = name.split('/').next().unwrap_or(name);
    match package {
        versions::PACKAGE => Provision::Host,
        "wasi:http" => Provision::NeedsHttpGrant,
        "wasi:filesystem" => Provision::NeedsDirGrant,
        "wasi:sockets" => Provision::Denied,
        "wasi:cli" | "wasi:io" | "wasi:clocks" | "wasi:random" => Provision::Wasi,
        _ => Provision::Missing,
    }
}

impl Runtime {
    /// Inspects a component file's bytes as `plugin check` reports them: loads it exactly as the
    /// host would (compile, link, `describe`), without grants or config values.
    pub fn inspect(&self, bytes: &[u8]) -> Inspection {
        let started = Instant::now();
        let mut inspection = Inspection {
            size: bytes.len(),
            sha256: hex::encode(Sha256::digest(bytes)),
            format: format(bytes),
            wit_version: None,
            worlds: Vec::new(),
            can_read: false,
            description: None,
            imports: Vec::new(),
            exports: Vec::new(),
            load_ms: 0.0,
            problems: Vec::new(),
        };
        match inspection.format {
            Format::NotWasm => {
                inspection.problems.push("not WebAssembly: the file does not start with the `\\0asm` preamble".into());
                return inspection;
            }
            Format::CoreModule => {
                inspection.problems.push(
                    "a core WebAssembly module, not a component: build for `wasm32-wasip2` (rustc emits a component), or wrap the module with `wasm-tools component new`".into(),
                );
                return inspection;
            }
            Format::Component => {}
        }
        let component = match wasmtime::component::Component::new(&self.engine, bytes) {
            Ok(component) => component,
            Err(error) => {
                inspection.problems.push(format!("not a valid WebAssembly component: {error:#}"));
                return inspection;
            }
        };
        let ty = component.component_type();
        inspection.imports = ty
            .imports(&self.engine)
            .map(|(name, _)| Import { name: name.to_string(), provision: provision_of(name) })
            .collect();
        inspection.exports = ty.exports(&self.engine).map(|(name, _)| name.to_string()).collect();
        for import in inspection.imports.iter().filter(|i| i.provision == Provision::Missing) {
            inspection.problems.push(format!("imports `{}`, which this host does not provide", import.name));
        }
        let named = versions::versions_named(inspection.exports.iter().map(String::as_str));
        inspection.wit_version = named.iter().find(|v| versions::SUPPORTED.contains(&v.as_str())).cloned();

        let config = PluginConfig::new("check", PluginSource::File("(checked file)".into()));
        match self.load_component(&config, &component, inspection.sha256.clone(), bytes.len(), false, started) {
            Ok(plugin) => {
                inspection.worlds = plugin.worlds();
                inspection.can_read = plugin.can_read();
                inspection.description = plugin.description().cloned();
            }
            // Missing imports are named above, one by one, rather than by the linker's first.
            Err(super::LoadError::Link(_)) if !inspection.problems.is_empty() => {}
            Err(error) => inspection.problems.push(error.to_string()),
        }
        inspection.load_ms = started.elapsed().as_secs_f64() * 1000.0;
        inspection
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preamble_tells_components_from_modules() {
        assert_eq!(format(b"\0asm\x01\0\0\0rest"), Format::CoreModule);
        assert_eq!(format(b"\0asm\x0d\0\x01\0rest"), Format::Component);
        assert_eq!(format(b"PK\x03\x04"), Format::NotWasm);
        assert_eq!(format(b""), Format::NotWasm);
    }

    #[test]
    fn imports_are_classified_by_package() {
        assert_eq!(provision_of("provision:plugin/log@0.2.0"), Provision::Host);
        assert_eq!(provision_of("wasi:http/outgoing-handler@0.2.6"), Provision::NeedsHttpGrant);
        assert_eq!(provision_of("wasi:filesystem/preopens@0.2.6"), Provision::NeedsDirGrant);
        assert_eq!(provision_of("wasi:cli/environment@0.2.6"), Provision::Wasi);
        assert_eq!(provision_of("wasi:sockets/tcp@0.2.6"), Provision::Denied);
        assert_eq!(provision_of("acme:secrets/vault@1.0.0"), Provision::Missing);
    }
}
