//! The versions of `provision:plugin` this host loads, and how a component of any of them is
//! bound: its imports defined under that version's names, its exports found under them.
//!
//! Zed's pattern, one adapter per released version, with a twist that keeps it small: the
//! host's Rust types are generated from the current WIT (`wit/`) only, and component-model types
//! are structural. An interface whose shape has not changed since an older version is called
//! with the current types under the older version's name; the typed-function check at call time
//! refuses any mismatch, and the tests load a component built from the frozen 0.1.0 source
//! (`wit/v0.1.0`, `tests/guests/legacy-rule`), so a change that breaks an old shape cannot go
//! unnoticed. When a future version changes a shape, that version's differences become
//! conversions here, and only here.
//!
//! | version | differences from the current |
//! | --- | --- |
//! | 0.2.0 | (current) |
//! | 0.1.0 | no `describe` export |

use wasmtime::StoreContextMut;
use wasmtime::component::{Component, ComponentExportIndex, Linker};

use super::LoadError;
use super::bindings::{config, directory, log, types};
use super::guest::GuestState;

/// The version the host's types come from, and that new plugins should target.
pub const CURRENT: &str = "0.2.0";
/// Every version this host loads, newest first.
pub const SUPPORTED: &[&str] = &["0.2.0", "0.1.0"];
/// The package whose versions these are.
pub const PACKAGE: &str = "provision:plugin";

/// Whether a version has an interface: `describe` is new in 0.2.0.
fn has_interface(version: &str, interface: &str) -> bool {
    interface != "describe" || version != "0.1.0"
}

/// Defines the host's imports (`types`, `log`, `config`, `directory`) under the names of every
/// supported version, all served by the same implementation.
pub(super) fn add_imports(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    for version in SUPPORTED {
        // `types` declares types only; a component still imports it as an instance.
        linker.instance(&format!("{PACKAGE}/types@{version}"))?;
        let mut log = linker.instance(&format!("{PACKAGE}/log@{version}"))?;
        log.func_wrap(
            "write",
            |mut store: StoreContextMut<'_, GuestState>,
             (level, message, fields): (log::Level, String, Vec<(String, String)>)| {
                log::Host::write(store.data_mut(), level, message, fields);
                Ok(())
            },
        )?;
        let mut config = linker.instance(&format!("{PACKAGE}/config@{version}"))?;
        config.func_wrap("get", |mut store: StoreContextMut<'_, GuestState>, (key,): (String,)| {
            Ok((config::Host::get(store.data_mut(), key),))
        })?;
        config.func_wrap("entries", |mut store: StoreContextMut<'_, GuestState>, (): ()| {
            Ok((config::Host::entries(store.data_mut()),))
        })?;
        let mut directory = linker.instance(&format!("{PACKAGE}/directory@{version}"))?;
        directory.func_wrap(
            "users-with-permission",
            |mut store: StoreContextMut<'_, GuestState>, (path, how): (String, directory::PathMatch)| {
                let users: Vec<types::User> = directory::Host::users_with_permission(store.data_mut(), path, how);
                Ok((users,))
            },
        )?;
    }
    Ok(())
}

/// Where one exported function of a component is.
pub(crate) type Export = ComponentExportIndex;

/// The version a component was built against and where its exports are, found once at load.
#[derive(Clone)]
pub(crate) struct Exports {
    /// Its `provision:plugin` version.
    pub(crate) version: &'static str,
    pub(crate) describe: Option<Export>,
    pub(crate) fulfil: Option<Export>,
    pub(crate) read: Option<Export>,
    pub(crate) evaluate: Option<Export>,
    pub(crate) route: Option<Export>,
}

/// The `provision:plugin` versions named by a component's exports and imports, as written.
pub fn versions_named<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut versions: Vec<String> = names
        .into_iter()
        .filter_map(|name| name.strip_prefix(PACKAGE)?.strip_prefix('/')?.split_once('@').map(|(_, v)| v.to_string()))
        .collect();
    versions.sort();
    versions.dedup();
    versions
}

impl Exports {
    /// Finds the version and the exports of a component from its export names.
    pub(crate) fn find(component: &Component, names: &[String]) -> Result<Exports, LoadError> {
        let versions = versions_named(names.iter().map(String::as_str));
        let version = match versions.as_slice() {
            [] => {
                let exported = if names.is_empty() { "nothing".to_string() } else { names.join(", ") };
                return Err(LoadError::NoWorld(exported));
            }
            [one] => SUPPORTED
                .iter()
                .copied()
                .find(|v| v == one)
                .ok_or_else(|| LoadError::UnknownVersion { found: one.clone(), supported: SUPPORTED.join(", ") })?,
            several => {
                return Err(LoadError::Link(format!(
                    "the component exports interfaces of several {PACKAGE} versions ({}); a plugin implements one",
                    several.join(", ")
                )));
            }
        };
        let find = |interface: &str, function: &str| -> Option<Export> {
            if !has_interface(version, interface) {
                return None;
            }
            let instance = component.get_export_index(None, &*format!("{PACKAGE}/{interface}@{version}"))?;
            component.get_export_index(Some(&instance), function)
        };
        let exports = Exports {
            version,
            describe: find("describe", "describe"),
            fulfil: find("fulfil", "fulfil"),
            read: find("read", "read"),
            evaluate: find("evaluate", "evaluate"),
            route: find("route", "route"),
        };
        if exports.read.is_some() && exports.fulfil.is_none() {
            return Err(LoadError::Link("the component exports `read` without `fulfil`".into()));
        }
        if exports.worlds().is_empty() {
            return Err(LoadError::NoWorld(names.join(", ")));
        }
        if has_interface(version, "describe") && exports.describe.is_none() {
            return Err(LoadError::Link(format!(
                "a {PACKAGE}@{version} component must export `describe` (every world of {version} does)"
            )));
        }
        Ok(exports)
    }

    pub(crate) fn worlds(&self) -> Vec<super::World> {
        use super::World;
        let mut worlds = Vec::new();
        if self.fulfil.is_some() {
            worlds.push(World::Connector);
        }
        if self.evaluate.is_some() {
            worlds.push(World::ReviewRule);
        }
        if self.route.is_some() {
            worlds.push(World::NotificationRouter);
        }
        worlds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_interface_names() {
        let names = ["provision:plugin/evaluate@0.1.0", "wasi:cli/run@0.2.6", "provision:plugin/log@0.1.0"];
        assert_eq!(versions_named(names), vec!["0.1.0".to_string()]);
        assert_eq!(versions_named(["provision:plugin/evaluate@9.0.0"]), vec!["9.0.0".to_string()]);
        assert!(versions_named(["provision:pluginx/evaluate@0.1.0", "other:plugin/x@1.0.0"]).is_empty());
    }

    #[test]
    fn describe_is_new_in_0_2_0() {
        assert!(!has_interface("0.1.0", "describe"));
        assert!(has_interface("0.2.0", "describe"));
        assert!(has_interface("0.1.0", "evaluate"));
    }
}
