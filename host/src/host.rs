//! A running host: its config, its store and its loaded plugins, opened together so that a
//! config error (a wrong pin, a plugin of the wrong world) is reported before any job runs.

use std::collections::BTreeMap;

use crate::config::{Config, ConnectionKind, SourceError};
use crate::plugins::{LoadError, Plugin, Runtime, World};
use crate::store::{Store, StoreError, UserSpec};

/// Why a host could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The config (or a plugin it names) is wrong; the error names file, key and line.
    #[error(transparent)]
    Config(#[from] SourceError),
    /// The database could not be opened or migrated.
    #[error("database {path}: {source}")]
    Store {
        /// The database file.
        path: String,
        /// Why.
        source: StoreError,
    },
    /// The plugin runtime could not start.
    #[error("plugin runtime: {0:#}")]
    Runtime(anyhow::Error),
}

/// Config, store and plugins of one host.
pub struct Host {
    /// The validated config.
    pub config: Config,
    /// The database.
    pub store: Store,
    /// Loaded plugins by name.
    pub plugins: BTreeMap<String, Plugin>,
    /// The runtime the plugins were loaded in.
    pub runtime: Runtime,
}

impl Host {
    /// Opens the database and loads every plugin of `config`, checking that each is used as a
    /// world it implements.
    pub fn open(config: Config) -> Result<Host, OpenError> {
        let runtime = Runtime::new(config.cache_dir.as_deref()).map_err(OpenError::Runtime)?;
        let plugins = load_plugins(&config, &runtime)?;
        let mut store = Store::open(&config.database)
            .map_err(|source| OpenError::Store { path: config.database.display().to_string(), source })?;
        let store_error = |source| OpenError::Store { path: config.database.display().to_string(), source };
        store.sync_catalog(&config).map_err(store_error)?;
        seed_operators(&mut store, &config).map_err(store_error)?;
        Ok(Host { config, store, plugins, runtime })
    }

    /// The plugin of a resource type's review rule, if it has one.
    pub fn review_rule(&self, resource_type: &str) -> Option<&Plugin> {
        let rule = self.config.resource_types.get(resource_type)?.review_rule.as_ref()?;
        self.plugins.get(rule)
    }

    /// The connector plugin of a connection; none for a manual-ticket connection.
    pub fn connector(&self, connection: &str) -> Option<&Plugin> {
        match &self.config.connections.get(connection)?.kind {
            ConnectionKind::Connector { plugin } => self.plugins.get(plugin),
            ConnectionKind::ManualTicket => None,
        }
    }
}

/// Writes the config's profiles and users: the config is authoritative for those it lists
/// (their permissions and profiles become exactly the configured ones); others are left alone.
fn seed_operators(store: &mut Store, config: &Config) -> Result<(), StoreError> {
    for profile in config.profiles.values() {
        store.upsert_profile(&profile.name, Some(&profile.description))?;
        store.set_profile_permissions(&profile.name, &profile.permissions)?;
    }
    for user in config.users.values() {
        store.upsert_user(&UserSpec {
            login: user.login.clone(),
            display_name: user.display_name.clone(),
            email: user.email.clone(),
            identity: user.identity.clone(),
        })?;
        store.set_user_profiles(&user.login, &user.profiles)?;
    }
    Ok(())
}

/// Loads every configured plugin; errors name the config key at fault.
pub fn load_plugins(config: &Config, runtime: &Runtime) -> Result<BTreeMap<String, Plugin>, SourceError> {
    let mut plugins = BTreeMap::new();
    for (name, plugin_config) in &config.plugins {
        let plugin = runtime.load(plugin_config).map_err(|error| {
            let key = match error {
                LoadError::Sha256Mismatch { .. } => "sha256",
                _ => "file",
            };
            config.error(format!("plugins.{name}.{key}"), format!("plugin `{name}`: {error}"))
        })?;
        plugins.insert(name.clone(), plugin);
    }
    let wrong_world = |key: String, name: &str, plugin: &Plugin, world: World| {
        let worlds: Vec<String> = plugin.worlds().iter().map(ToString::to_string).collect();
        config.error(key, format!("plugin `{name}` is a {}, not a {world}", worlds.join(" and ")))
    };
    for connection in config.connections.values() {
        if let ConnectionKind::Connector { plugin } = &connection.kind
            && let Some(loaded) = plugins.get(plugin)
            && !loaded.implements(World::Connector)
        {
            return Err(wrong_world(
                format!("connections.{}.plugin", connection.name),
                plugin,
                loaded,
                World::Connector,
            ));
        }
    }
    for rt in config.resource_types.values() {
        if let Some(rule) = &rt.review_rule
            && let Some(loaded) = plugins.get(rule)
            && !loaded.implements(World::ReviewRule)
        {
            return Err(wrong_world(
                format!("resource_types.{}.review_rule", rt.name),
                rule,
                loaded,
                World::ReviewRule,
            ));
        }
    }
    for et in config.entity_types.values().filter(|et| et.notifications) {
        if let Some(loaded) = plugins.get(&et.router)
            && !loaded.implements(World::NotificationRouter)
        {
            return Err(wrong_world(
                format!("entity_types.{}.router", et.name),
                &et.router,
                loaded,
                World::NotificationRouter,
            ));
        }
    }
    Ok(plugins)
}
