//! The plugin runtime: wasmtime with the component model, loading customer components and
//! calling them under limits.
//!
//! - One [`Runtime`] per host: one `Engine`, one `Linker` with the imports a plugin may use
//!   (WASI p2 with an empty context, `log`, `config`, `directory`), an epoch ticker thread for
//!   time limits, and the on-disk cache of compiled components.
//! - One [`Plugin`] per configured instance: the component (checked against its sha256 pin),
//!   an `InstancePre` (imports resolved once), and the export indices of the worlds it
//!   implements.
//! - A fresh `Store` per call batch, so no state leaks from one batch to the next; a call that
//!   traps, runs out of time or memory fails with a [`CallError`] and nothing else.
//!
//! **Architecture invariant**: a plugin reaches nothing it was not granted. The WASI context
//! has no environment, arguments, stdin, network or preopened directory other than the
//! directories granted in config; stdout and stderr go to a bounded buffer.

pub mod bindings;
pub mod bundled;
mod cache;
mod calls;
mod guest;
pub mod inspect;
mod links;
mod outbound;
pub mod probe;
pub mod rate;
pub mod versions;

use std::borrow::Cow;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Instance, InstancePre, Linker};
use wasmtime::{Engine, Store, Trap};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::config::{PluginConfig, PluginSource};
use crate::permissions::Directory;
use cache::CompileCache;
pub use calls::{
    Decision, Description, Event, EventKind, Malformed, Message, OrderSummary, Outcome, Page, ReadError, Resource,
};
pub use guest::LogLine;
use guest::{GuestState, MemoryLimiter, OutputTail};

/// The WIT package version new plugins should target (the host loads every one in
/// [`versions::SUPPORTED`]).
pub const WIT_VERSION: &str = versions::CURRENT;
/// How often the epoch ticker advances; the granularity of time limits.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// How far past its time limit a call may end: an epoch tick for guest code that runs, plus
/// the scheduling of the timer that ends a wait. Documented in docs/plugins.md.
pub const TIME_MARGIN: Duration = Duration::from_millis(50);

/// A world (role) a component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    /// Exports `fulfil` (and maybe `read`).
    Connector,
    /// Exports `evaluate`.
    ReviewRule,
    /// Exports `route`.
    NotificationRouter,
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            World::Connector => "connector",
            World::ReviewRule => "review-rule",
            World::NotificationRouter => "notification-router",
        })
    }
}

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The component's sha256 differs from the pin in config.
    #[error("sha256 mismatch: config pins {expected} but the component is {actual}")]
    Sha256Mismatch {
        /// The pin.
        expected: String,
        /// What the file hashes to.
        actual: String,
    },
    /// The bytes are not a valid component for this engine.
    #[error("not a valid WebAssembly component: {0}")]
    Compile(String),
    /// The component imports something this host does not provide or the plugin was not granted.
    #[error("cannot link the component: {0}")]
    Link(String),
    /// The component exports none of the worlds this host knows.
    #[error(
        "the component implements none of the provision:plugin worlds (connector, review-rule, notification-router); it exports: {0}"
    )]
    NoWorld(String),
    /// The component was built against a version of the WIT package this host does not know.
    #[error(
        "the component implements provision:plugin@{found}, a version this host does not know (it loads {supported}); upgrade the host or rebuild the plugin against a supported version"
    )]
    UnknownVersion {
        /// The version the component names.
        found: String,
        /// The versions this host loads.
        supported: String,
    },
    /// The component's `describe` failed or answered badly.
    #[error("`describe` failed: {0}")]
    Describe(String),
}

/// Why one call into a plugin failed. The call's batch fails; the host and other plugins go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The call ran past the plugin's time limit.
    #[error("plugin `{plugin}` exceeded its time limit of {limit:?}")]
    TimeLimit {
        /// The plugin.
        plugin: String,
        /// The limit.
        limit: Duration,
    },
    /// The guest tried to grow its memory past the plugin's limit.
    #[error("plugin `{plugin}` exceeded its memory limit of {} (it asked for {})", bytesize::ByteSize(*limit as u64), bytesize::ByteSize(*wanted as u64))]
    MemoryLimit {
        /// The plugin.
        plugin: String,
        /// The limit, bytes.
        limit: usize,
        /// The size it asked to grow to, bytes.
        wanted: usize,
    },
    /// The guest trapped (a panic, an unreachable, a bad memory access...).
    #[error("plugin `{plugin}` trapped: {message}")]
    Trap {
        /// The plugin.
        plugin: String,
        /// The guest's panic message and the trap.
        message: String,
    },
    /// The guest answered, but not validly (wrong number of results, unknown ids, oversize).
    #[error("plugin `{plugin}` answered badly: {message}")]
    Invalid {
        /// The plugin.
        plugin: String,
        /// What was wrong.
        message: String,
    },
    /// The call could not be set up (e.g. a granted directory disappeared).
    #[error("plugin `{plugin}` could not be started: {message}")]
    Setup {
        /// The plugin.
        plugin: String,
        /// Why.
        message: String,
    },
    /// The plugin does not implement what was asked of it.
    #[error("plugin `{plugin}` is not a {world}")]
    WrongWorld {
        /// The plugin.
        plugin: String,
        /// What it was called as.
        world: String,
    },
}

/// Advances the engine's epoch on a background thread: the clock for time limits.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: &Engine) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map(|_| ())
            .unwrap_or_else(|e| tracing::error!("cannot start the epoch ticker; time limits will not fire: {e}"));
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The plugin runtime of one host.
pub struct Runtime {
    engine: Engine,
    linker: Linker<GuestState>,
    cache: Option<CompileCache>,
    _ticker: EpochTicker,
}

impl Runtime {
    /// A runtime; compiled components are cached in `cache_dir` when given.
    pub fn new(cache_dir: Option<&Path>) -> anyhow::Result<Runtime> {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        // Plugins are called synchronously, batch by batch; concurrency support would set up
        // per-store structures and cost every export call more (see benches/plugins.rs).
        config.concurrency_support(cfg!(feature = "concurrency-support"));
        config.epoch_interruption(true);
        let engine = Engine::new(&config)?;

        let mut linker = Linker::new(&engine);
        // WASI and HTTP are linked async so that every wait a guest makes (a sleep, a poll, an
        // HTTP response, a blocked stream) is a future the call's deadline can drop: the epoch
        // deadline only interrupts guest code that runs.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        links::guard(&mut linker)?;
        // Every plugin may import wasi:http; what it may reach is its grants (none by default).
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        versions::add_imports(&mut linker)?;

        let cache =
            match cache_dir {
                Some(dir) => Some(CompileCache::new(dir, &engine).map_err(|e| {
                    anyhow::anyhow!("cannot use {} as the compiled-component cache: {e}", dir.display())
                })?),
                None => None,
            };
        let ticker = EpochTicker::start(&engine);
        Ok(Runtime { engine, linker, cache, _ticker: ticker })
    }

    /// Loads one configured plugin: reads it, checks its pin, compiles it (or loads the cached
    /// compilation), resolves its imports and finds the worlds it implements.
    pub fn load(&self, config: &PluginConfig) -> Result<Plugin, LoadError> {
        let started = Instant::now();
        let bytes: Cow<'static, [u8]> = match &config.source {
            PluginSource::Bundled(name) => {
                bundled::get(name).ok_or_else(|| LoadError::Compile(format!("no bundled plugin `{name}`")))?.into()
            }
            PluginSource::File(path) => std::fs::read(path)
                .map_err(|source| LoadError::Read { path: path.display().to_string(), source })?
                .into(),
        };
        self.load_bytes(config, bytes, started)
    }

    /// Loads a plugin from its bytes (`config.source` only names it).
    fn load_bytes(&self, config: &PluginConfig, bytes: Cow<'_, [u8]>, started: Instant) -> Result<Plugin, LoadError> {
        let sha256 = hex::encode(Sha256::digest(&bytes));
        if let Some(expected) = &config.sha256
            && *expected != sha256
        {
            return Err(LoadError::Sha256Mismatch { expected: expected.clone(), actual: sha256 });
        }

        let cached = self.cache.as_ref().and_then(|cache| cache.get(&self.engine, &sha256));
        let from_cache = cached.is_some();
        let component = match cached {
            Some(component) => component,
            None => {
                let component = wasmtime::component::Component::new(&self.engine, &bytes)
                    .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
                if let Some(cache) = &self.cache {
                    cache.put(&sha256, &component);
                }
                component
            }
        };
        self.load_component(config, &component, sha256, bytes.len(), from_cache, started)
    }

    /// Links a compiled component and asks it to describe itself.
    fn load_component(
        &self,
        config: &PluginConfig,
        component: &wasmtime::component::Component,
        sha256: String,
        size: usize,
        from_cache: bool,
        started: Instant,
    ) -> Result<Plugin, LoadError> {
        let exports: Vec<String> =
            component.component_type().exports(&self.engine).map(|(name, _)| name.to_string()).collect();
        let versioned = versions::Exports::find(component, &exports)?;
        let instance_pre = self.linker.instantiate_pre(component).map_err(|e| LoadError::Link(format!("{e:#}")))?;

        let plugin = Plugin {
            name: config.name.clone(),
            sha256,
            size,
            load_time: started.elapsed(),
            from_cache,
            shared: Arc::new(Shared {
                stats: Arc::default(),
                name: config.name.as_str().into(),
                config: Arc::new(config.config.clone()),
                grants: Arc::new(config.http.clone()),
                http_limits: config.http_limits,
                memory: usize::try_from(config.memory).unwrap_or(usize::MAX),
                timeout: config.timeout,
                dirs: config.dirs.iter().map(|d| (d.host.clone(), d.guest.clone(), d.writable)).collect(),
            }),
            engine: self.engine.clone(),
            instance_pre,
            exports: versioned,
            description: None,
            probe: None,
            rate: None,
        };
        let plugin =
            Plugin { description: plugin.describe().map_err(|e| LoadError::Describe(e.to_string()))?, ..plugin };
        tracing::debug!(plugin = %plugin.name, sha256 = %plugin.sha256, worlds = ?plugin.worlds(), from_cache, "loaded plugin in {:?}", plugin.load_time);
        Ok(plugin)
    }
}

/// Counters of one plugin's calls since it was loaded.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    calls: std::sync::atomic::AtomicU64,
    call_nanos: std::sync::atomic::AtomicU64,
    http_requests: std::sync::atomic::AtomicU64,
    http_nanos: std::sync::atomic::AtomicU64,
}

impl Stats {
    pub(crate) fn add_http(&self, elapsed: Duration) {
        self.http_requests.fetch_add(1, Ordering::Relaxed);
        self.http_nanos.fetch_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// What a plugin's calls cost since it was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CallStats {
    /// Calls made.
    pub calls: u64,
    /// Time inside those calls (instantiation included).
    pub call_time: Duration,
    /// Outbound HTTP requests.
    pub http_requests: u64,
    /// Time from sending a request to its response's headers, summed.
    pub http_time: Duration,
}

/// Which of its secrets a call needs.
#[derive(Clone, Copy)]
enum SecretUse {
    /// Every one: a secret that cannot be read fails the call.
    Required,
    /// Those that can be read now (`describe` at load, which every command does).
    Available,
}

/// What every call of one plugin shares.
struct Shared {
    stats: Arc<Stats>,
    name: Arc<str>,
    /// Secrets unresolved: each call reads them (see [`SecretUse`]).
    config: Arc<std::collections::BTreeMap<String, crate::config::ConfigValue>>,
    grants: Arc<Vec<crate::config::HttpGrant>>,
    http_limits: crate::config::HttpLimits,
    memory: usize,
    timeout: Duration,
    dirs: Vec<(std::path::PathBuf, String, bool)>,
}

/// A loaded plugin instance, ready to be called.
pub struct Plugin {
    /// The instance's name from config.
    pub name: String,
    /// sha256 of the component.
    pub sha256: String,
    /// Size of the component, bytes.
    pub size: usize,
    /// How long loading took.
    pub load_time: Duration,
    /// Whether the compiled code came from the on-disk cache.
    pub from_cache: bool,
    shared: Arc<Shared>,
    engine: Engine,
    instance_pre: InstancePre<GuestState>,
    exports: versions::Exports,
    description: Option<Description>,
    /// Set by [`Plugin::probed`]: what the last call cost and said.
    probe: Option<Arc<Mutex<Option<CallReport>>>>,
    /// Set by [`Plugin::rated`]: the rate limit of the connection it is called for.
    rate: Option<Arc<rate::Bucket>>,
}

/// What one call cost and what the guest said during it (for `provision plugin test`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CallReport {
    /// Instantiation and call, wall time.
    pub time: Duration,
    /// The largest the guest's memory grew to, bytes.
    pub peak_memory: usize,
    /// Its log lines.
    pub logs: Vec<LogLine>,
    /// The tail of what it wrote on stdout and stderr.
    pub output: String,
}

impl Plugin {
    /// The worlds this component implements.
    pub fn worlds(&self) -> Vec<World> {
        self.exports.worlds()
    }

    /// The `provision:plugin` version it was built against.
    pub fn wit_version(&self) -> &'static str {
        self.exports.version
    }

    /// The same plugin, recording what each call costs and what the guest logs (see
    /// [`Plugin::last_call`]). Meant for testing a plugin, not for jobs.
    pub fn probed(self) -> Plugin {
        Plugin { probe: Some(Arc::default()), ..self }
    }

    /// What the last call cost and said, when [`Plugin::probed`].
    pub fn last_call(&self) -> Option<CallReport> {
        self.probe.as_ref().and_then(|p| p.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// The same plugin, its calls' HTTP requests each taking a token of `bucket` (a
    /// connection's rate limit; none: unlimited). The wait for a token does not count against
    /// the call's time limit.
    pub fn rated(&self, bucket: Option<Arc<rate::Bucket>>) -> Plugin {
        Plugin {
            name: self.name.clone(),
            sha256: self.sha256.clone(),
            size: self.size,
            load_time: self.load_time,
            from_cache: self.from_cache,
            shared: self.shared.clone(),
            engine: self.engine.clone(),
            instance_pre: self.instance_pre.clone(),
            exports: self.exports.clone(),
            description: self.description.clone(),
            probe: self.probe.clone(),
            rate: bucket,
        }
    }

    /// What it says about itself (components built against 0.1.0 say nothing).
    pub fn description(&self) -> Option<&Description> {
        self.description.as_ref()
    }

    /// What its calls cost since it was loaded.
    pub fn stats(&self) -> CallStats {
        let stats = &self.shared.stats;
        CallStats {
            calls: stats.calls.load(Ordering::Relaxed),
            call_time: Duration::from_nanos(stats.call_nanos.load(Ordering::Relaxed)),
            http_requests: stats.http_requests.load(Ordering::Relaxed),
            http_time: Duration::from_nanos(stats.http_nanos.load(Ordering::Relaxed)),
        }
    }

    /// Its time limit per call.
    pub fn timeout(&self) -> Duration {
        self.shared.timeout
    }

    /// Whether it implements `world`.
    pub fn implements(&self, world: World) -> bool {
        self.worlds().contains(&world)
    }

    /// Whether it is a connector that can also read its managed system.
    pub fn can_read(&self) -> bool {
        self.exports.read.is_some()
    }

    /// Runs `f` on a fresh instance in a fresh store, under the plugin's limits.
    ///
    /// The time limit bounds the whole call, instantiation and every wait included: guest code
    /// that runs is stopped by the epoch deadline (a trap at the next tick), a guest that waits
    /// (a sleep, a poll, an HTTP request, a host import) by dropping the call's future when the
    /// limit is reached. Either way the call ends within [`TIME_MARGIN`] of its limit.
    ///
    /// The plugin's secrets are read for the call (a missing one fails it, naming the variable
    /// or file) and come back with the result, so what the plugin said can be scrubbed of
    /// exactly the values it was given.
    fn call<R>(
        &self,
        directory: Option<Arc<Directory>>,
        f: impl AsyncFnOnce(&mut Store<GuestState>, &Instance) -> wasmtime::Result<R>,
    ) -> Result<(R, Arc<Vec<String>>), CallError> {
        self.call_with(SecretUse::Required, directory, f)
    }

    fn call_with<R>(
        &self,
        secrets: SecretUse,
        directory: Option<Arc<Directory>>,
        f: impl AsyncFnOnce(&mut Store<GuestState>, &Instance) -> wasmtime::Result<R>,
    ) -> Result<(R, Arc<Vec<String>>), CallError> {
        let plugin = self.name.clone();
        let resolved = match secrets {
            SecretUse::Required => crate::config::resolve_values(&plugin, &self.shared.config)
                .map_err(|e| CallError::Setup { plugin: plugin.clone(), message: e.to_string() })?,
            SecretUse::Available => crate::config::available_values(&self.shared.config),
        };
        let config = Arc::new(resolved.values);
        let secrets = Arc::new(resolved.secrets);
        let stderr = OutputTail::default();
        let mut wasi = WasiCtxBuilder::new();
        // Plugins run on the job's thread; blocking file calls on it avoid a round trip
        // through tokio for every read and write.
        wasi.allow_blocking_current_thread(true)
            .stdout(stderr.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for (host, guest, writable) in &self.shared.dirs {
            let perms = if *writable { FsPerms::ReadWrite } else { FsPerms::ReadOnly };
            wasi.preopened_dir(host, guest, perms).map_err(|e| CallError::Setup {
                plugin: plugin.clone(),
                message: format!("cannot open granted directory {}: {e}", host.display()),
            })?;
        }
        // Time the call's requests waited for their rate limit: added to its time limit.
        let waited = Arc::new(AtomicU64::new(0));
        let state = GuestState {
            wasi: wasi.build(),
            http: Default::default(),
            outbound: outbound::Outbound {
                stats: self.shared.stats.clone(),
                plugin: self.shared.name.clone(),
                grants: self.shared.grants.clone(),
                limits: self.shared.http_limits,
                rate: self.rate.clone(),
                waited: waited.clone(),
            },
            table: Default::default(),
            limiter: MemoryLimiter { limit: self.shared.memory, refused: None, peak: 0 },
            plugin: self.shared.name.clone(),
            config,
            directory,
            log_lines: 0,
            secrets: secrets.clone(),
            captured: self.probe.as_ref().map(|_| Vec::new()),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        let ticks = self.shared.timeout.as_millis().div_ceil(EPOCH_TICK.as_millis()) + 1;
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
        if self.rate.is_some() {
            // Past the limit, the deadline moves on by what the requests waited since last time.
            let (waited, mut credited) = (waited.clone(), 0u64);
            store.epoch_deadline_callback(move |_| {
                let total = waited.load(Ordering::Relaxed);
                let fresh = total.saturating_sub(credited);
                credited = total;
                if fresh == 0 {
                    return Ok(wasmtime::UpdateDeadline::Interrupt);
                }
                let ticks = Duration::from_nanos(fresh).as_millis().div_ceil(EPOCH_TICK.as_millis()) + 1;
                Ok(wasmtime::UpdateDeadline::Continue(u64::try_from(ticks).unwrap_or(u64::MAX)))
            });
        } else {
            store.epoch_deadline_trap();
        }

        let started = Instant::now();
        let limit = self.shared.timeout;
        let result = {
            let store = &mut store;
            let instance_pre = &self.instance_pre;
            let call = async move {
                let instance = instance_pre.instantiate_async(&mut *store).await?;
                f(store, &instance).await
            };
            // The store is fresh per call: a call dropped mid-wait leaves nothing to clean up.
            // The limit is extended by what its requests waited for a rate limit's tokens.
            let waited = &waited;
            wasmtime_wasi::runtime::in_tokio(async move {
                let mut call = std::pin::pin!(call);
                loop {
                    let extra = waited.load(Ordering::Relaxed);
                    let deadline = started + limit + Duration::from_nanos(extra);
                    match tokio::time::timeout_at(deadline.into(), call.as_mut()).await {
                        Ok(result) => break Ok(result),
                        Err(elapsed) if waited.load(Ordering::Relaxed) == extra => break Err(elapsed),
                        Err(_) => continue,
                    }
                }
            })
        };
        let result = match result {
            Ok(result) => result,
            Err(_elapsed) => Err(wasmtime::Error::from(Trap::Interrupt)),
        };
        let stats = &self.shared.stats;
        stats.calls.fetch_add(1, Ordering::Relaxed);
        stats.call_nanos.fetch_add(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        if let Some(probe) = &self.probe {
            let report = CallReport {
                time: started.elapsed(),
                peak_memory: store.data().limiter.peak,
                logs: store.data_mut().captured.take().unwrap_or_default(),
                output: guest::scrub(&stderr.text(), &secrets),
            };
            *probe.lock().unwrap_or_else(|e| e.into_inner()) = Some(report);
        }
        result.map(|r| (r, secrets.clone())).map_err(|error| {
            if let Some(wanted) = store.data().limiter.refused {
                return CallError::MemoryLimit { plugin: plugin.clone(), limit: self.shared.memory, wanted };
            }
            match error.downcast_ref::<Trap>() {
                Some(Trap::Interrupt) => CallError::TimeLimit { plugin: plugin.clone(), limit: self.shared.timeout },
                trap => {
                    let what = trap.map_or_else(|| format!("{error:#}"), |t| t.to_string());
                    let message = match guest::panic_message(&stderr.text()) {
                        Some(panic) => format!("{panic} ({what})"),
                        None => what,
                    };
                    CallError::Trap { plugin: plugin.clone(), message: guest::scrub(&message, &secrets) }
                }
            }
        })
    }
}
