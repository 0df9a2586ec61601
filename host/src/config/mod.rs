//! The host's config file (TOML): plugins with their grants and limits, connections, entity
//! types and resource types. Validated on load; every error names the file, the key and the
//! line. See the README's config reference for each key.

mod events;
mod operators;
mod plugins;
mod policy;
mod source;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use events::{EventsConfig, Subscriber};
pub use operators::{
    NotificationsConfig, ProfileConfig, Secret, SecretError, SmtpConfig, SmtpTls, UserConfig, WebhookConfig,
};
pub use policy::{Backoff, Limit, RetryPolicy, Thresholds};
pub use source::{Source, SourceError};

/// A validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file's text, kept so that later errors (a wrong sha256 pin, a plugin of the wrong
    /// world) can name their key and line too.
    pub source: Source,
    /// The database: a SQLite file, or PostgreSQL shared by several hosts.
    pub database: Database,
    /// Where compiled components are cached; `None` turns the cache off.
    pub cache_dir: Option<PathBuf>,
    /// Entity types by name.
    pub entity_types: BTreeMap<String, EntityType>,
    /// Plugin instances by name.
    pub plugins: BTreeMap<String, PluginConfig>,
    /// Connections by name.
    pub connections: BTreeMap<String, Connection>,
    /// Resource types by name.
    pub resource_types: BTreeMap<String, ResourceType>,
    /// Users seeded into the database, by login.
    pub users: BTreeMap<String, UserConfig>,
    /// Profiles seeded into the database, by name.
    pub profiles: BTreeMap<String, ProfileConfig>,
    /// Where notifications are delivered.
    pub notifications: NotificationsConfig,
    /// Where order state changes are published.
    pub events: EventsConfig,
    /// `provision serve`.
    pub serve: ServeConfig,
    /// How job runs share the database.
    pub jobs: JobsConfig,
    /// What is valid but probably not meant (a permission path naming an entity type the
    /// config does not define), each naming its key; the host logs them when it opens.
    pub warnings: Vec<String>,
}

/// How job runs share the database: a run is a set of work units, each claimed by one worker
/// at a time under a lease (see `store::units`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobsConfig {
    /// A unit whose worker gave no sign of life for this long is taken for dead and taken
    /// over; the worker renews its leases every third of it.
    pub lease: Duration,
    /// Worker threads of this process that pull units (`[runtime] workers`).
    pub workers: usize,
}

/// The default lease: long enough that a busy machine never misses a renewal (every 10 s),
/// short enough that a killed worker holds its unit up for half a minute only.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig { lease: DEFAULT_LEASE, workers: default_workers() }
    }
}

/// One worker per core: a worker is busy in a plugin or in SQLite, both CPU-bound here.
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawJobs {
    // The name of the hardening issue's job lock, which units with leases replaced.
    #[serde(alias = "lock_expiry")]
    lease: Option<String>,
}

/// Where the host keeps its state.
#[derive(Debug, Clone)]
pub enum Database {
    /// A SQLite file (`[database] path`, the default): one host.
    Sqlite(PathBuf),
    /// PostgreSQL (`[database] url`): several hosts share it.
    Postgres(Box<PostgresDatabase>),
}

/// `[database] url = "postgres://…"` with its password.
#[derive(Debug, Clone)]
pub struct PostgresDatabase {
    /// The URL as configured (it carries no password: the config refuses one).
    pub url: String,
    /// The connection settings the URL gives.
    pub settings: postgres::Config,
    /// The password (`[database] password`), read when a connection opens.
    pub password: Option<Secret>,
}

impl Database {
    /// The SQLite file, if that is the database.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Database::Sqlite(path) => Some(path),
            Database::Postgres(_) => None,
        }
    }
}

impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "{}", path.display()),
            Database::Postgres(pg) => f.write_str(&pg.url),
        }
    }
}

/// `provision serve`: where it listens, how often it runs the complete job, its sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// Address to listen on.
    pub listen: String,
    /// Run the complete job this often; none: only on demand.
    pub job_interval: Option<Duration>,
    /// How long a browser session lasts.
    pub session_lifetime: Duration,
    /// Mark session cookies `Secure` (serve behind HTTPS).
    pub secure_cookies: bool,
    /// How often plugin files are checked for a new version; none: only on SIGHUP or request.
    pub plugin_poll: Option<Duration>,
    /// A person's request for a change on the pages starts a compute at once (so the review
    /// rule decides while they look); false: the next scheduled run computes it.
    pub compute_on_request: bool,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: "127.0.0.1:8080".into(),
            job_interval: None,
            session_lifetime: Duration::from_secs(12 * 3600),
            secure_cookies: false,
            plugin_poll: Some(Duration::from_secs(2)),
            compute_on_request: true,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServe {
    listen: Option<String>,
    job_interval: Option<String>,
    session_lifetime: Option<String>,
    secure_cookies: Option<bool>,
    plugin_poll: Option<String>,
    compute_on_request: Option<bool>,
}

/// A kind of owner, e.g. `Directory_User`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityType {
    /// The name.
    pub name: String,
    /// Name to show.
    pub display_name: String,
    /// Whether people are notified about its orders.
    pub notifications: bool,
    /// The notification-router plugin deciding who is told what.
    pub router: String,
}

/// Where a plugin's component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    /// A first-party component bundled in the binary: `bundled:NAME`.
    Bundled(String),
    /// A `.wasm` file.
    File(PathBuf),
}

/// One plugin instance: a component, its pin, its own config values, its grants and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfig {
    /// The instance's name, used in config references, logs and history (`plugin:NAME`).
    pub name: String,
    /// Where the component comes from.
    pub source: PluginSource,
    /// Expected sha256 of the component, checked at load.
    pub sha256: Option<String>,
    /// Maximum linear memory of one call, in bytes.
    pub memory: u64,
    /// Maximum wall time of one call.
    pub timeout: Duration,
    /// Values the plugin reads through its `config` import (secrets among them).
    pub config: BTreeMap<String, ConfigValue>,
    /// Directories the plugin may reach.
    pub dirs: Vec<DirGrant>,
    /// Origins the plugin may send HTTP requests to.
    pub http: Vec<HttpGrant>,
    /// Bounds on its HTTP requests.
    pub http_limits: HttpLimits,
    /// Failed calls in a row after which the plugin is disabled (0: never).
    pub disable_after: u32,
}

impl PluginConfig {
    /// A plugin with default limits (64 MiB, 5 s), no config values and no grants.
    pub fn new(name: impl Into<String>, source: PluginSource) -> PluginConfig {
        PluginConfig {
            name: name.into(),
            source,
            sha256: None,
            memory: DEFAULT_MEMORY,
            timeout: DEFAULT_TIMEOUT,
            config: BTreeMap::new(),
            dirs: Vec::new(),
            http: Vec::new(),
            http_limits: HttpLimits::default(),
            disable_after: DEFAULT_DISABLE_AFTER,
        }
    }
}

impl PluginConfig {
    /// The config values as the plugin sees them, its secrets read now (at each call: a
    /// command that never calls the plugin never needs them).
    pub fn resolve(&self) -> Result<ResolvedValues, UnresolvedSecret> {
        resolve_values(&self.name, &self.config)
    }
}

/// A plugin's config values with its secrets read, for one call. No `Debug`: it holds them.
#[derive(Clone, Default)]
pub struct ResolvedValues {
    /// Every value by key, as the plugin's `config` import returns it.
    pub values: BTreeMap<String, String>,
    /// The secret values among them, scrubbed from whatever the plugin says in that call.
    pub secrets: Vec<String>,
}

/// A plugin's secret config value that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin `{plugin}` cannot be called: its secret config value `{key}`: {error}")]
pub struct UnresolvedSecret {
    /// The plugin.
    pub plugin: String,
    /// The config key.
    pub key: String,
    /// Why.
    pub error: SecretError,
}

/// Reads a plugin's config values, secrets included; the first secret that cannot be read is
/// the error.
pub fn resolve_values(
    plugin: &str,
    config: &BTreeMap<String, ConfigValue>,
) -> Result<ResolvedValues, UnresolvedSecret> {
    let mut resolved = ResolvedValues::default();
    for (key, value) in config {
        let value = match value {
            ConfigValue::Plain(value) => value.clone(),
            ConfigValue::Secret(secret) => {
                let value = secret.resolve().map_err(|error| UnresolvedSecret {
                    plugin: plugin.to_string(),
                    key: key.clone(),
                    error,
                })?;
                resolved.secrets.push(value.clone());
                value
            }
        };
        resolved.values.insert(key.clone(), value);
    }
    Ok(resolved)
}

/// Like [`resolve_values`], leaving out the secrets that cannot be read: for `describe` at
/// load, which every command does and which must not need secrets.
pub fn available_values(config: &BTreeMap<String, ConfigValue>) -> ResolvedValues {
    let mut resolved = ResolvedValues::default();
    for (key, value) in config {
        let value = match value {
            ConfigValue::Plain(value) => value.clone(),
            ConfigValue::Secret(secret) => match secret.resolve() {
                Ok(value) => {
                    resolved.secrets.push(value.clone());
                    value
                }
                Err(_) => continue,
            },
        };
        resolved.values.insert(key.clone(), value);
    }
    resolved
}

/// A plugin config value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigValue {
    /// Shown as is.
    Plain(String),
    /// From `{ env = ... }` or `{ file = ... }`: read at each call, given to the plugin, never
    /// printed or logged, and scrubbed from anything the plugin says.
    Secret(Secret),
}

impl ConfigValue {
    /// The value, unless it is a secret.
    pub fn plain(&self) -> Option<&str> {
        match self {
            ConfigValue::Plain(value) => Some(value),
            ConfigValue::Secret(_) => None,
        }
    }
}

/// An origin a plugin may send HTTP requests to: `scheme://host:port`, exactly; a host written
/// `*.example.com` matches its subdomains (and only when written so).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGrant {
    /// `http` or `https`.
    pub scheme: String,
    /// Lower-case host name or IP literal, or `*.domain`.
    pub host: String,
    /// The port (the scheme's default when the grant omits it).
    pub port: u16,
}

impl HttpGrant {
    /// Whether a request to `scheme://host:port` is granted.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let host_ok = match self.host.strip_prefix("*.") {
            Some(domain) => host.ends_with(&format!(".{domain}")),
            None => host == self.host,
        };
        self.scheme == scheme && self.port == port && host_ok
    }
}

impl std::fmt::Display for HttpGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// Bounds on a plugin's outbound HTTP requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// For one request, from connecting to the response's headers (and between body bytes).
    pub timeout: Duration,
    /// Largest request body, bytes.
    pub max_request: u64,
    /// Largest response body, bytes.
    pub max_response: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits { timeout: Duration::from_secs(30), max_request: 1 << 20, max_response: 16 << 20 }
    }
}

/// A directory granted to a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where the plugin sees it, an absolute guest path such as `/data`.
    pub guest: String,
    /// Whether the plugin may write in it.
    pub writable: bool,
}

/// How a connection carries out orders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionKind {
    /// Automatically, through a connector plugin.
    Connector {
        /// The plugin's name.
        plugin: String,
    },
    /// Manually: orders are handed to people (Transmitted) who confirm them.
    ManualTicket,
}

/// How the host reaches one managed system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The name.
    pub name: String,
    /// Automatic or manual.
    pub kind: ConnectionKind,
    /// Orders per connector call.
    pub batch_size: usize,
    /// Batches in flight to the managed system at once, across every worker and process.
    pub concurrency: usize,
    /// At most this many HTTP requests of its connector (per process), if set.
    pub rate_limit: Option<RateLimit>,
    /// How long an order may stay Transmitted before the next job run moves it to Errored.
    pub transmitted_validity: Option<Duration>,
    /// What happens after a transient connector error.
    pub retry: RetryPolicy,
}

/// A request rate: `requests` per `per`, with bursts of up to `burst` requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests...
    pub requests: u32,
    /// ...per this long.
    pub per: Duration,
    /// Requests that may go at once after a quiet time (the bucket's size).
    pub burst: u32,
}

impl RateLimit {
    /// Requests per second.
    pub fn per_second(&self) -> f64 {
        f64::from(self.requests) / self.per.as_secs_f64()
    }
}

/// Reads `rate_limit = "N/s"` (or `/m`, `/min`, `/h`) and `rate_burst` (default: the rate per
/// second, at least 1).
fn rate_limit(
    source: &Source,
    key: &str,
    rate: Option<&str>,
    burst: Option<i64>,
) -> Result<Option<RateLimit>, SourceError> {
    let Some(rate) = rate else {
        if burst.is_some() {
            return Err(source.error(format!("{key}.rate_burst"), "needs a `rate_limit`"));
        }
        return Ok(None);
    };
    let bad = || {
        source.error(
            format!("{key}.rate_limit"),
            format!("`{rate}` is not a rate: write requests per second or minute, e.g. \"20/s\" or \"600/min\""),
        )
    };
    let (count, unit) = rate.split_once('/').ok_or_else(bad)?;
    let requests: u32 = count.trim().parse().map_err(|_| bad())?;
    let per = match unit.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    if !(1..=1_000_000).contains(&requests) {
        return Err(source.error(format!("{key}.rate_limit"), "must allow between 1 and 1000000 requests"));
    }
    let default = (f64::from(requests) / per.as_secs_f64()).ceil().max(1.0) as u32;
    let burst = match burst {
        None => default,
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|n| (1..=1_000_000).contains(n))
            .ok_or_else(|| source.error(format!("{key}.rate_burst"), "must be between 1 and 1000000"))?,
    };
    Ok(Some(RateLimit { requests, per, burst }))
}

/// A kind of resource in a managed system.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceType {
    /// The name, e.g. `SaaS_Account`.
    pub name: String,
    /// The source entity type of its owners.
    pub entity_type: String,
    /// The connection that fulfils it.
    pub connection: String,
    /// Its classification, e.g. `basic` or `sensitive`; review rules decide on it.
    pub classification: String,
    /// The review-rule plugin deciding on its orders; none means no review.
    pub review_rule: Option<String>,
    /// How many orders one run may create before it is held.
    pub thresholds: Thresholds,
}

/// The plugin notifying entity types that name no router: the bundled permission-router.
pub const DEFAULT_ROUTER: &str = "permission-router";
const DEFAULT_MEMORY: u64 = 64 * 1024 * 1024;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_BATCH: usize = 500;
const DEFAULT_DISABLE_AFTER: u32 = 5;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    database: RawDatabase,
    #[serde(default)]
    runtime: RawRuntime,
    #[serde(default)]
    entity_types: BTreeMap<String, RawEntityType>,
    #[serde(default)]
    plugins: BTreeMap<String, plugins::RawPlugin>,
    #[serde(default)]
    connections: BTreeMap<String, RawConnection>,
    #[serde(default)]
    resource_types: BTreeMap<String, RawResourceType>,
    #[serde(default)]
    users: BTreeMap<String, operators::RawUser>,
    #[serde(default)]
    profiles: BTreeMap<String, operators::RawProfile>,
    #[serde(default)]
    notifications: operators::RawNotifications,
    #[serde(default)]
    events: events::RawEvents,
    #[serde(default)]
    serve: RawServe,
    #[serde(default)]
    jobs: RawJobs,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    path: Option<String>,
    url: Option<String>,
    password: Option<operators::RawSecret>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRuntime {
    cache_dir: Option<String>,
    cache: bool,
    workers: Option<usize>,
}

impl Default for RawRuntime {
    fn default() -> Self {
        RawRuntime { cache_dir: None, cache: true, workers: None }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntityType {
    display_name: Option<String>,
    notifications: Option<bool>,
    router: Option<String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum RawKind {
    Connector,
    ManualTicket,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnection {
    kind: Option<RawKind>,
    plugin: Option<String>,
    batch_size: Option<usize>,
    concurrency: Option<usize>,
    rate_limit: Option<String>,
    rate_burst: Option<i64>,
    transmitted_validity: Option<String>,
    retry: Option<policy::RawRetry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResourceType {
    entity_type: String,
    connection: String,
    #[serde(default = "basic")]
    classification: String,
    review_rule: Option<String>,
    thresholds: Option<policy::RawThresholds>,
}

fn basic() -> String {
    "basic".to_string()
}

/// `[database]`: SQLite at `path` (the default), or PostgreSQL at `url` with its password as a
/// secret (never in the URL, which is shown in status and logs).
fn database(source: &Source, raw: RawDatabase, base: &Path) -> Result<Database, SourceError> {
    let Some(url) = raw.url else {
        if raw.password.is_some() {
            return Err(source.error("database.password", "a password is for PostgreSQL: set `database.url` too"));
        }
        return Ok(Database::Sqlite(base.join(raw.path.as_deref().unwrap_or("provision.db"))));
    };
    if raw.path.is_some() {
        return Err(source.error("database.path", "give either `path` (SQLite) or `url` (PostgreSQL), not both"));
    }
    if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
        return Err(source.error("database.url", "expected a PostgreSQL URL, `postgres://user@host:port/database`"));
    }
    let settings: postgres::Config =
        url.parse().map_err(|e| source.error("database.url", format!("not a PostgreSQL URL: {e}")))?;
    if settings.get_password().is_some() {
        return Err(source.error(
            "database.url",
            "the URL carries a password: give it as `database.password = { env = \"VAR\" }` or `{ file = \"path\" }` instead",
        ));
    }
    if settings.get_ssl_mode() == postgres::config::SslMode::Require {
        return Err(source.error(
            "database.url",
            "`sslmode=require`: this host does not speak TLS to PostgreSQL yet; reach the server on a private \
             network or a local socket, or through a TLS tunnel",
        ));
    }
    if settings.get_dbname().is_none() {
        return Err(source.error("database.url", "name the database: `postgres://user@host:port/database`"));
    }
    let password = raw.password.map(|raw| operators::secret(source, "database.password", raw, base)).transpose()?;
    Ok(Database::Postgres(Box::new(PostgresDatabase { url, settings, password })))
}

/// Names of entity types, resource types, connections and plugins: they appear in permission
/// paths, file names and URLs, so keep them plain.
pub(super) fn check_name(source: &Source, key: &str, name: &str) -> Result<(), SourceError> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(source.error(key, format!("`{name}` is not a valid name (use letters, digits, `_` and `-`)")));
    }
    Ok(())
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(file: &Path) -> Result<Config, SourceError> {
        Config::from_source(Source::read(file)?)
    }

    /// Validates a config held in memory; relative paths resolve against `file`'s directory.
    pub fn from_source(source: Source) -> Result<Config, SourceError> {
        let raw: RawConfig = source.parse()?;
        let base = source.file().parent().map(Path::to_path_buf).unwrap_or_default();
        let resolve = |path: &str| -> PathBuf { base.join(path) };

        let database = database(&source, raw.database, &base)?;
        let cache_dir =
            raw.runtime.cache.then(|| resolve(raw.runtime.cache_dir.as_deref().unwrap_or("provision-cache")));

        let mut entity_types = BTreeMap::new();
        for (name, raw) in raw.entity_types {
            check_name(&source, &format!("entity_types.{name}"), &name)?;
            let display_name = raw.display_name.unwrap_or_else(|| name.clone());
            let router = raw.router.unwrap_or_else(|| DEFAULT_ROUTER.to_string());
            let notifications = raw.notifications.unwrap_or(true);
            entity_types.insert(name.clone(), EntityType { name, display_name, notifications, router });
        }

        let mut plugins = BTreeMap::new();
        for (name, raw) in raw.plugins {
            let key = format!("plugins.{name}");
            check_name(&source, &key, &name)?;
            let plugin = plugins::plugin(&source, &key, &name, raw, &resolve)?;
            plugins.insert(name, plugin);
        }
        // Entity types that notify without naming a router get the bundled one.
        if entity_types.values().any(|et| et.notifications && et.router == DEFAULT_ROUTER)
            && !plugins.contains_key(DEFAULT_ROUTER)
        {
            let bundled = PluginSource::Bundled(DEFAULT_ROUTER.to_string());
            plugins.insert(DEFAULT_ROUTER.to_string(), PluginConfig::new(DEFAULT_ROUTER, bundled));
        }
        for et in entity_types.values().filter(|et| et.notifications) {
            if !plugins.contains_key(&et.router) {
                let message = unknown("plugin", &et.router, plugins.keys());
                return Err(source.error(format!("entity_types.{}.router", et.name), message));
            }
        }

        let mut connections = BTreeMap::new();
        for (name, raw) in raw.connections {
            let key = format!("connections.{name}");
            check_name(&source, &key, &name)?;
            let kind = match (raw.kind.unwrap_or(RawKind::Connector), raw.plugin) {
                (RawKind::Connector, Some(plugin)) => {
                    if !plugins.contains_key(&plugin) {
                        return Err(source.error(format!("{key}.plugin"), unknown("plugin", &plugin, plugins.keys())));
                    }
                    ConnectionKind::Connector { plugin }
                }
                (RawKind::Connector, None) => {
                    return Err(source.error(
                        &key,
                        "a connector connection needs `plugin = \"NAME\"` (or `kind = \"manual-ticket\"`)",
                    ));
                }
                (RawKind::ManualTicket, None) => ConnectionKind::ManualTicket,
                (RawKind::ManualTicket, Some(_)) => {
                    return Err(source.error(format!("{key}.plugin"), "a manual-ticket connection has no plugin"));
                }
            };
            let batch_size = raw.batch_size.unwrap_or(DEFAULT_BATCH);
            if !(1..=100_000).contains(&batch_size) {
                return Err(source.error(format!("{key}.batch_size"), "must be between 1 and 100000"));
            }
            let concurrency = raw.concurrency.unwrap_or(1);
            if !(1..=1000).contains(&concurrency) {
                return Err(source.error(format!("{key}.concurrency"), "must be between 1 and 1000"));
            }
            let rate_limit = rate_limit(&source, &key, raw.rate_limit.as_deref(), raw.rate_burst)?;
            if rate_limit.is_some() && matches!(kind, ConnectionKind::ManualTicket) {
                return Err(source.error(format!("{key}.rate_limit"), "a manual-ticket connection sends no requests"));
            }
            let validity_key = format!("{key}.transmitted_validity");
            let transmitted_validity = duration(&source, &validity_key, raw.transmitted_validity.as_deref())?;
            if transmitted_validity.is_some_and(|d| d.is_zero()) {
                return Err(source.error(validity_key, "must be more than 0"));
            }
            let retry = policy::retry(&source, &format!("{key}.retry"), raw.retry)?;
            connections.insert(
                name.clone(),
                Connection { name, kind, batch_size, concurrency, rate_limit, transmitted_validity, retry },
            );
        }

        let mut resource_types = BTreeMap::new();
        for (name, raw) in raw.resource_types {
            let key = format!("resource_types.{name}");
            check_name(&source, &key, &name)?;
            if !entity_types.contains_key(&raw.entity_type) {
                let message = unknown("entity type", &raw.entity_type, entity_types.keys());
                return Err(source.error(format!("{key}.entity_type"), message));
            }
            if !connections.contains_key(&raw.connection) {
                let message = unknown("connection", &raw.connection, connections.keys());
                return Err(source.error(format!("{key}.connection"), message));
            }
            if let Some(rule) = &raw.review_rule
                && !plugins.contains_key(rule)
            {
                return Err(source.error(format!("{key}.review_rule"), unknown("plugin", rule, plugins.keys())));
            }
            if raw.classification.trim().is_empty() {
                return Err(source.error(format!("{key}.classification"), "must not be empty"));
            }
            resource_types.insert(
                name.clone(),
                ResourceType {
                    name,
                    entity_type: raw.entity_type,
                    connection: raw.connection,
                    classification: raw.classification,
                    review_rule: raw.review_rule,
                    thresholds: policy::thresholds(&source, &format!("{key}.thresholds"), raw.thresholds)?,
                },
            );
        }

        let mut warnings = Vec::new();
        let profiles = operators::profiles(&source, raw.profiles, entity_types.keys(), &mut warnings)?;
        let users = operators::users(&source, raw.users, &profiles)?;
        let notifications = operators::notifications(&source, raw.notifications, &base)?;
        let events = events::events(&source, raw.events, &base, resource_types.keys())?;
        let defaults = ServeConfig::default();
        let listen = raw.serve.listen.unwrap_or(defaults.listen);
        if listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(
                source.error("serve.listen", format!("`{listen}` is not an address such as \"127.0.0.1:8080\""))
            );
        }
        let job_interval = duration(&source, "serve.job_interval", raw.serve.job_interval.as_deref())?;
        if job_interval.is_some_and(|d| d < Duration::from_secs(1)) {
            return Err(source.error("serve.job_interval", "must be at least 1s"));
        }
        let serve = ServeConfig {
            listen,
            job_interval,
            session_lifetime: duration(&source, "serve.session_lifetime", raw.serve.session_lifetime.as_deref())?
                .unwrap_or(defaults.session_lifetime),
            secure_cookies: raw.serve.secure_cookies.unwrap_or(false),
            // "0s" switches polling off.
            plugin_poll: match duration(&source, "serve.plugin_poll", raw.serve.plugin_poll.as_deref())? {
                Some(poll) if poll.is_zero() => None,
                Some(poll) => Some(poll),
                None => defaults.plugin_poll,
            },
            compute_on_request: raw.serve.compute_on_request.unwrap_or(defaults.compute_on_request),
        };

        let lease = duration(&source, "jobs.lease", raw.jobs.lease.as_deref())?.unwrap_or(DEFAULT_LEASE);
        if lease < Duration::from_secs(1) {
            return Err(
                source.error("jobs.lease", "must be at least 1s (a worker renews its leases every third of it)")
            );
        }
        let workers = raw.runtime.workers.unwrap_or_else(default_workers);
        if !(1..=256).contains(&workers) {
            return Err(source.error("runtime.workers", "must be between 1 and 256"));
        }
        let jobs = JobsConfig { lease, workers };

        Ok(Config {
            source,
            database,
            cache_dir,
            entity_types,
            plugins,
            connections,
            resource_types,
            users,
            profiles,
            notifications,
            events,
            serve,
            jobs,
            warnings,
        })
    }

    /// An error about a key of this config file (see [`Source::error`]).
    pub fn error(&self, key: impl Into<String>, message: impl std::fmt::Display) -> SourceError {
        self.source.error(key, message)
    }

    /// The resource types fulfilled through a connection, by name.
    pub fn resource_types_of(&self, connection: &str) -> impl Iterator<Item = &ResourceType> {
        self.resource_types.values().filter(move |rt| rt.connection == connection)
    }
}

/// Parses an optional duration such as `"5s"`, `"250ms"` or `"3d"` (or ISO 8601, `"PT5S"`).
pub(super) fn duration(source: &Source, key: &str, text: Option<&str>) -> Result<Option<Duration>, SourceError> {
    let Some(text) = text else { return Ok(None) };
    parse_duration(text).map(Some).map_err(|e| source.error(key, e))
}

/// A duration as the config writes it: `"250ms"`, `"5s"`, `"3d"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    // A span, so that days and weeks are allowed; a day is 24 hours here (months are refused).
    let parsed = text
        .parse::<jiff::Span>()
        .and_then(|span| span.to_duration(jiff::SpanRelativeTo::days_are_24_hours()))
        .map_err(|e| format!("`{text}` is not a duration such as \"250ms\", \"5s\" or \"3d\": {e}"))?;
    Duration::try_from(parsed).map_err(|_| "must not be negative".to_string())
}

/// An HTTP grant as the config writes it: `scheme://host[:port]`, `*.domain` for subdomains.
pub fn parse_http_grant(text: &str) -> Result<HttpGrant, String> {
    plugins::http_grant(text)
}

fn unknown<'a>(what: &str, name: &str, known: impl Iterator<Item = &'a String>) -> String {
    let known: Vec<&str> = known.map(String::as_str).collect();
    if known.is_empty() {
        format!("unknown {what} `{name}` (none is defined)")
    } else {
        format!("unknown {what} `{name}` (defined: {})", known.join(", "))
    }
}

#[cfg(test)]
mod tests;
