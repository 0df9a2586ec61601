//! A running host: its config, its store and its loaded plugins, opened together so that a
//! config error (a wrong pin, a plugin of the wrong world) is reported before any job runs.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::config::{Config, ConnectionKind, SourceError};
use crate::plugins::{CallError, LoadError, Plugin, Runtime, World};
use crate::store::{Health, Store, StoreError, UserSpec};

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
    /// Loaded plugins by name; shared with whoever reloads them (`provision serve`).
    pub plugins: Plugins,
    /// The runtime the plugins were loaded in (shared with whoever reloads them).
    pub runtime: Arc<Runtime>,
    /// Plugin health by name, as stored (and saved after every call, except in a simulation).
    pub health: BTreeMap<String, Health>,
    /// A fixed "now" (Unix ms) for the jobs' time decisions (validity windows, retry times,
    /// transmitted validity) instead of the clock; for tests and simulations of the future.
    pub clock: Option<i64>,
    /// A simulation: nothing may be written (the store is opened read-only).
    pub simulation: bool,
    /// Set when the host shuts down: jobs stop after the batch at hand (what is left waits,
    /// Pending, for the next run).
    pub stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// What a job run does when a run of another kind is unfinished.
    pub lock_wait: LockWait,
    /// Set by the lease renewer when this host's worker lost the lease on its unit (it lapsed
    /// and was taken over): the worker stops before its next chunk.
    pub lease_lost: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Told the id of each job run as soon as it is recorded (before its first step), so that
    /// whoever started it on another thread can answer with the run before it ends.
    pub on_run_started: Option<std::sync::mpsc::Sender<i64>>,
    /// Held for a notification pass (`notify::route_and_deliver`); shared by a host's
    /// siblings, because two passes at once would route the same intents and send the same
    /// deliveries twice.
    pub(crate) notifying: Arc<std::sync::Mutex<()>>,
    /// The rate limits of the connections (token buckets), shared by a host's siblings: per
    /// process, for every worker.
    pub rates: Arc<crate::plugins::rate::Rates>,
}

/// What a job run does when a run of another kind is unfinished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LockWait {
    /// Refuse at once, naming the run.
    #[default]
    Refuse,
    /// Wait until that run ends, at most `timeout` if given.
    Wait {
        /// Give up after this long.
        timeout: Option<std::time::Duration>,
    },
}

/// Why a plugin could not be asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginFailure {
    /// It failed too many calls in a row and waits for `provision plugins enable`.
    #[error(
        "plugin `{plugin}` is disabled since {} after {failures} failed calls in a row (last: {last_error}); \
         enable it with `provision plugins enable {plugin}`",
        crate::model::format_time(*since)
    )]
    Disabled {
        /// The plugin.
        plugin: String,
        /// When it was disabled.
        since: i64,
        /// Failures in a row.
        failures: u32,
        /// The last one.
        last_error: String,
    },
    /// It is not loaded (not in the config).
    #[error("plugin `{0}` is not configured")]
    Missing(String),
    /// A secret of its config cannot be read now (its calls would fail before starting).
    #[error(transparent)]
    Secret(#[from] crate::config::UnresolvedSecret),
    /// The call failed.
    #[error(transparent)]
    Call(#[from] CallError),
}

impl Host {
    /// Opens the database and loads every plugin of `config`, checking that each is used as a
    /// world it implements.
    pub fn open(config: Config) -> Result<Host, OpenError> {
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        let runtime = Arc::new(Runtime::new(config.cache_dir.as_deref()).map_err(OpenError::Runtime)?);
        let plugins = Plugins::new(load_plugins(&config, &runtime)?);
        let mut store = Store::connect(&config.database)
            .map_err(|source| OpenError::Store { path: config.database.to_string(), source })?;
        let store_error = |source| OpenError::Store { path: config.database.to_string(), source };
        store.sync_catalog(&config).map_err(store_error)?;
        store.sync_subscribers(&config.events).map_err(store_error)?;
        seed_operators(&mut store, &config).map_err(store_error)?;
        let health = store.health().map_err(store_error)?;
        let rates = Arc::new(crate::plugins::rate::Rates::new(&config));
        Ok(Host {
            config,
            store,
            plugins,
            runtime,
            health,
            clock: None,
            simulation: false,
            stop: Default::default(),
            lock_wait: LockWait::default(),
            lease_lost: Default::default(),
            on_run_started: None,
            notifying: Default::default(),
            rates,
        })
    }

    /// Opens a host for a simulation: the database read-only (never migrated or written), the
    /// plugins loaded as usual.
    pub fn open_for_simulation(config: Config) -> Result<Host, OpenError> {
        let runtime = Arc::new(Runtime::new(config.cache_dir.as_deref()).map_err(OpenError::Runtime)?);
        let plugins = Plugins::new(load_plugins(&config, &runtime)?);
        let store_error = |source| OpenError::Store { path: config.database.to_string(), source };
        let store = Store::connect_read_only(&config.database).map_err(store_error)?;
        let health = store.health().map_err(store_error)?;
        let rates = Arc::new(crate::plugins::rate::Rates::new(&config));
        Ok(Host {
            config,
            store,
            plugins,
            runtime,
            health,
            clock: None,
            simulation: true,
            stop: Default::default(),
            lock_wait: LockWait::default(),
            lease_lost: Default::default(),
            on_run_started: None,
            notifying: Default::default(),
            rates,
        })
    }

    /// What decides orders on this host, key by key (`plugins.rule.sha256`,
    /// `resource_types.SaaS_Account.review_rule`, ...): every process working on one run must
    /// agree on it, or the same run would decide alike orders differently. Plugin settings are
    /// kept as a digest, so no secret is stored.
    pub fn decides(&self) -> std::collections::BTreeMap<String, String> {
        use sha2::Digest;
        let mut decides = std::collections::BTreeMap::new();
        for plugin in self.plugins.values().iter() {
            decides.insert(format!("plugins.{}.sha256", plugin.name), plugin.sha256.clone());
        }
        for plugin in self.config.plugins.values() {
            let settings = format!("{:?}", plugin.config);
            decides.insert(
                format!("plugins.{}.config", plugin.name),
                hex::encode(sha2::Sha256::digest(settings.as_bytes()))[..16].to_string(),
            );
        }
        for rt in self.config.resource_types.values() {
            let key = |field: &str| format!("resource_types.{}.{field}", rt.name);
            decides.insert(key("entity_type"), rt.entity_type.clone());
            decides.insert(key("connection"), rt.connection.clone());
            decides.insert(key("classification"), rt.classification.clone());
            decides.insert(key("review_rule"), rt.review_rule.clone().unwrap_or_default());
            decides.insert(key("thresholds"), format!("{:?}", rt.thresholds));
        }
        for connection in self.config.connections.values() {
            let kind = match &connection.kind {
                crate::config::ConnectionKind::Connector { plugin } => format!("connector {plugin}"),
                crate::config::ConnectionKind::ManualTicket => "manual-ticket".to_string(),
            };
            decides.insert(format!("connections.{}.kind", connection.name), kind);
        }
        decides
    }

    /// A second host on the same database file and the same loaded plugins (shared, not
    /// compiled again), with a connection of its own: what it writes waits only for SQLite's
    /// one writer at a time, never for a job running on this host. It shares the shutdown flag
    /// and the notification pass lock; its health is read from the database.
    pub fn sibling(&self) -> Result<Host, OpenError> {
        let path = self.config.database.to_string();
        let store_error = |source| OpenError::Store { path: path.clone(), source };
        let location = self.store.location();
        if matches!(location, crate::store::Location::Memory) {
            return Err(store_error(StoreError::Unavailable(
                "an in-memory database cannot be opened a second time".into(),
            )));
        }
        let mut store = if self.simulation { Store::open_read_only_at(location) } else { Store::open_at(location) }
            .map_err(store_error)?;
        store.set_clock(self.store.clock());
        let health = store.health().map_err(store_error)?;
        Ok(Host {
            config: self.config.clone(),
            store,
            plugins: self.plugins.clone(),
            runtime: self.runtime.clone(),
            health,
            clock: self.clock,
            simulation: self.simulation,
            stop: self.stop.clone(),
            lock_wait: self.lock_wait,
            lease_lost: Default::default(),
            on_run_started: None,
            notifying: self.notifying.clone(),
            rates: self.rates.clone(),
        })
    }

    /// Reads every plugin's health from the database again: what a sibling host recorded
    /// (an operator's `enable`, another host's calls) counts from the next call on.
    pub fn refresh_health(&mut self) -> Result<(), StoreError> {
        if !self.simulation {
            self.health = self.store.health()?;
        }
        Ok(())
    }

    /// Whether the job at hand must stop after its batch: the host is shutting down, or the
    /// worker's lease on its unit was lost.
    pub fn stopping(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::Relaxed) || self.lost_lease()
    }

    /// Whether this worker's lease on its unit lapsed and was taken over.
    pub fn lost_lease(&self) -> bool {
        self.lease_lost.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// "Now" for the jobs' decisions, Unix ms.
    pub fn now(&self) -> i64 {
        self.clock.unwrap_or_else(crate::model::now_ms)
    }

    /// Why a plugin may not be called now, if it is disabled, missing, or a secret of its
    /// config cannot be read.
    pub fn unavailable(&self, name: &str) -> Option<PluginFailure> {
        if !self.plugins.contains_key(name) {
            return Some(PluginFailure::Missing(name.to_string()));
        }
        if let Some(health) = self.health.get(name)
            && let Some(since) = health.disabled_at
        {
            return Some(PluginFailure::Disabled {
                plugin: name.to_string(),
                since,
                failures: health.consecutive_failures,
                last_error: health.last_error.clone().unwrap_or_default(),
            });
        }
        // Checked before each batch, not at open: only a job that calls the plugin needs its
        // secrets. A missing one is the operator's to fix, not the plugin's failure: its
        // orders wait, and it does not count towards `disable_after`.
        let plugin = self.config.plugins.get(name)?;
        plugin.resolve().err().map(PluginFailure::Secret)
    }

    /// Calls a plugin unless it is disabled, and records the call's success or failure in its
    /// health; a plugin failing `disable_after` calls in a row is disabled.
    pub fn call<R>(&mut self, name: &str, f: impl FnOnce(&Plugin) -> Result<R, CallError>) -> Result<R, PluginFailure> {
        if let Some(failure) = self.unavailable(name) {
            return Err(failure);
        }
        let Some(plugin) = self.plugins.get(name) else { return Err(PluginFailure::Missing(name.to_string())) };
        let result = f(&plugin);
        let error = result.as_ref().err().map(ToString::to_string);
        self.record(name, error.as_deref()).map_err(|e| {
            PluginFailure::Call(CallError::Setup {
                plugin: name.to_string(),
                message: format!("cannot record the plugin's health: {e}"),
            })
        })?;
        result.map_err(PluginFailure::Call)
    }

    /// Records one call of a plugin (failed with `error`, or succeeded).
    pub fn record(&mut self, name: &str, error: Option<&str>) -> Result<(), StoreError> {
        let now = self.store.now_ms();
        let disable_after = self.config.plugins.get(name).map_or(0, |p| p.disable_after);
        // Counted on the stored row, not this host's copy: a sibling host (serve's job and
        // people's hosts) may have recorded calls or an enable since.
        if !self.simulation
            && let Some(stored) = self.store.health()?.remove(name)
        {
            self.health.insert(name.to_string(), stored);
        }
        let health = self.health.entry(name.to_string()).or_default();
        health.calls += 1;
        health.last_call_at = Some(now);
        match error {
            None => health.consecutive_failures = 0,
            Some(error) => {
                health.failures += 1;
                health.consecutive_failures += 1;
                health.last_error = Some(error.to_string());
                if disable_after > 0 && health.consecutive_failures >= disable_after && health.disabled_at.is_none() {
                    health.disabled_at = Some(now);
                    tracing::error!(
                        plugin = name,
                        "disabled after {} failed calls in a row: {error}",
                        health.consecutive_failures
                    );
                }
            }
        }
        if self.simulation {
            return Ok(());
        }
        let health = health.clone();
        self.store.save_health(name, &health)
    }

    /// Enables a disabled plugin again (its failures in a row start from zero).
    pub fn enable(&mut self, name: &str) -> Result<bool, StoreError> {
        // The stored row: a sibling host may have disabled it since this host last looked.
        self.refresh_health()?;
        let Some(health) = self.health.get_mut(name) else { return Ok(false) };
        let was_disabled = health.disabled_at.take().is_some();
        health.consecutive_failures = 0;
        let health = health.clone();
        self.store.save_health(name, &health)?;
        Ok(was_disabled)
    }

    /// The plugin of a resource type's review rule, if it has one.
    pub fn review_rule(&self, resource_type: &str) -> Option<Arc<Plugin>> {
        let rule = self.config.resource_types.get(resource_type)?.review_rule.as_ref()?;
        self.plugins.get(rule)
    }

    /// The rate limit of the connection of a resource type, if it has one.
    pub fn rate_of_type(&self, resource_type: &str) -> Option<Arc<crate::plugins::rate::Bucket>> {
        self.rates.of(&self.config.resource_types.get(resource_type)?.connection)
    }

    /// The connector plugin of a connection; none for a manual-ticket connection.
    pub fn connector(&self, connection: &str) -> Option<Arc<Plugin>> {
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

/// Checks a loaded plugin against every place the config uses it: the world each use needs, and
/// the resource types the plugin says it is made for. Errors name the config key at fault.
pub fn check_uses(config: &Config, name: &str, plugin: &Plugin) -> Result<(), SourceError> {
    let needs = |key: String, world: World| {
        if plugin.implements(world) {
            return Ok(());
        }
        let worlds: Vec<String> = plugin.worlds().iter().map(ToString::to_string).collect();
        Err(config.error(key, format!("plugin `{name}` is a {}, not a {world}", worlds.join(" and "))))
    };
    let made_for = |key: String, resource_type: &str| {
        let Some(description) = plugin.description() else { return Ok(()) };
        if description.resource_types.is_empty() || description.resource_types.iter().any(|t| t == resource_type) {
            return Ok(());
        }
        Err(config.error(
            key,
            format!(
                "plugin `{name}` ({} {}) is made for the resource types {}, not {resource_type}",
                description.name,
                description.version,
                description.resource_types.join(", ")
            ),
        ))
    };
    for connection in config.connections.values() {
        if let ConnectionKind::Connector { plugin } = &connection.kind
            && plugin == name
        {
            needs(format!("connections.{}.plugin", connection.name), World::Connector)?;
            for rt in config.resource_types.values().filter(|rt| rt.connection == connection.name) {
                made_for(format!("resource_types.{}.connection", rt.name), &rt.name)?;
            }
        }
    }
    for rt in config.resource_types.values().filter(|rt| rt.review_rule.as_deref() == Some(name)) {
        needs(format!("resource_types.{}.review_rule", rt.name), World::ReviewRule)?;
        made_for(format!("resource_types.{}.review_rule", rt.name), &rt.name)?;
    }
    for et in config.entity_types.values().filter(|et| et.notifications && et.router == name) {
        needs(format!("entity_types.{}.router", et.name), World::NotificationRouter)?;
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
    for (name, plugin) in &plugins {
        check_uses(config, name, plugin)?;
    }
    Ok(plugins)
}

/// The loaded plugins, shared: a call takes the current version of its plugin for the whole
/// batch, and a reload swaps in a new version for the batches after it. Cloning shares the table.
#[derive(Clone, Default)]
pub struct Plugins {
    inner: Arc<RwLock<PluginTable>>,
}

#[derive(Default)]
struct PluginTable {
    loaded: BTreeMap<String, Arc<Plugin>>,
    /// The last reload refused per plugin (when, why), until one succeeds.
    refused: BTreeMap<String, (i64, String)>,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The file holds a new component; it replaced the old one.
    Swapped {
        /// The old component's sha256.
        from: String,
        /// The new one's.
        to: String,
    },
    /// The file holds the component already loaded.
    Unchanged,
}

impl Plugins {
    /// A table of loaded plugins.
    pub fn new(loaded: BTreeMap<String, Plugin>) -> Plugins {
        let loaded = loaded.into_iter().map(|(name, plugin)| (name, Arc::new(plugin))).collect();
        Plugins { inner: Arc::new(RwLock::new(PluginTable { loaded, refused: BTreeMap::new() })) }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, PluginTable> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, PluginTable> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The current version of a plugin.
    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        self.read().loaded.get(name).cloned()
    }

    /// Whether a plugin is loaded.
    pub fn contains_key(&self, name: &str) -> bool {
        self.read().loaded.contains_key(name)
    }

    /// The current version of every plugin, by name.
    pub fn values(&self) -> Vec<Arc<Plugin>> {
        self.read().loaded.values().cloned().collect()
    }

    /// The last refused reload of a plugin, (Unix ms, why), if the latest attempt failed.
    pub fn refused(&self, name: &str) -> Option<(i64, String)> {
        self.read().refused.get(name).cloned()
    }

    /// Loads a plugin's file again and, if it holds a different component that loads and fits
    /// every use the config makes of it, swaps it in. Calls already running finish on the old
    /// version. A component that fails is refused: the old one keeps running, and the reason is
    /// logged and kept (see [`Plugins::refused`]).
    pub fn reload(&self, config: &Config, runtime: &Runtime, name: &str) -> Result<Reloaded, String> {
        let result = self.try_reload(config, runtime, name);
        match &result {
            Ok(Reloaded::Swapped { from, to }) => {
                tracing::info!(plugin = name, from = %from, to = %to, "reloaded plugin: the new component takes the next batches");
                self.write().refused.remove(name);
            }
            Ok(Reloaded::Unchanged) => {
                self.write().refused.remove(name);
            }
            Err(why) => {
                tracing::error!(plugin = name, "reload refused; the loaded version keeps running: {why}");
                self.write().refused.insert(name.to_string(), (crate::model::now_ms(), why.clone()));
            }
        }
        result
    }

    fn try_reload(&self, config: &Config, runtime: &Runtime, name: &str) -> Result<Reloaded, String> {
        let plugin_config =
            config.plugins.get(name).ok_or_else(|| format!("there is no plugin `{name}` in the config"))?;
        let old = self.get(name).ok_or_else(|| format!("plugin `{name}` is not loaded"))?;
        // Compiled and checked before anything changes.
        let new = runtime.load(plugin_config).map_err(|e| e.to_string())?;
        if new.sha256 == old.sha256 {
            return Ok(Reloaded::Unchanged);
        }
        check_uses(config, name, &new).map_err(|e| e.message.clone())?;
        let swapped = Reloaded::Swapped { from: old.sha256.clone(), to: new.sha256.clone() };
        self.write().loaded.insert(name.to_string(), Arc::new(new));
        Ok(swapped)
    }
}
