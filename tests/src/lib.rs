//! The end-to-end test harness: throwaway deployments in temporary directories, built from the
//! quickstart example or from a config written by the test, with real components (the bundled
//! first-party ones and the test-only guests of `tests/guests/`) on real SQLite.

pub mod postgres;
pub mod servers;

use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use provision::config::Config;
use provision::host::Host;
use provision::jobs::JobReport;
use tempfile::TempDir;

/// The test-only guest components, as bytes.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/test_guests.rs"));
}

/// Compiled components shared by every test of this build, so each component is compiled once.
pub const CACHE_DIR: &str = concat!(env!("OUT_DIR"), "/component-cache");

/// The repository's `examples/quickstart` directory.
pub fn quickstart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart")
}

/// A deployment in a temporary directory, removed when dropped.
pub struct Deployment {
    /// The directory.
    pub dir: TempDir,
    /// Its PostgreSQL database's URL, when it is on PostgreSQL (its config's `[database]` is
    /// rewritten to it whenever the config is set).
    pub postgres: Option<String>,
}

impl Deployment {
    /// A deployment whose config is `config` (the compiled-component cache is pointed at the
    /// shared one).
    pub fn new(config: &str) -> Deployment {
        let dir = tempfile::Builder::new().prefix("provision-test-").tempdir().expect("temp dir");
        let postgres = postgres::by_default().then(postgres::database);
        let deployment = Deployment { dir, postgres };
        deployment.set_config(config);
        deployment
    }

    /// The quickstart example's config and desired state, copied.
    pub fn quickstart() -> Deployment {
        let config = std::fs::read_to_string(quickstart_dir().join("provision.toml")).expect("quickstart config");
        let deployment = Deployment::new(&config);
        std::fs::copy(quickstart_dir().join("data.toml"), deployment.path("data.toml")).expect("copy data.toml");
        deployment
    }

    /// The same deployment on a fresh database of the tests' PostgreSQL server instead of its
    /// SQLite file: the config's `[database]` table is replaced.
    pub fn on_postgres(mut self) -> Deployment {
        if self.postgres.is_none() {
            self.postgres = Some(postgres::database());
            let config = std::fs::read_to_string(self.config_path()).expect("read config");
            self.set_config(&config);
        }
        self
    }

    /// Replaces the config file (on PostgreSQL, its `[database]` is the deployment's).
    pub fn set_config(&self, config: &str) {
        let mut config = with_shared_cache(config);
        if let Some(url) = &self.postgres {
            config = postgres::with_database(&config, &format!("url = {url:?}"));
        }
        std::fs::write(self.config_path(), config).expect("write config");
    }

    /// A path inside the deployment.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The config file.
    pub fn config_path(&self) -> PathBuf {
        self.path("provision.toml")
    }

    /// Writes a file (a component, a desired-state file) into the deployment.
    pub fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).expect("write file");
        path
    }

    /// Loads the config.
    pub fn config(&self) -> Result<Config, provision::config::SourceError> {
        Config::load(&self.config_path())
    }

    /// Opens the host, panicking with the error if it cannot.
    pub fn host(&self) -> Host {
        let config = self.config().unwrap_or_else(|e| panic!("config: {e}"));
        Host::open(config).unwrap_or_else(|e| panic!("open: {e}"))
    }

    /// Imports a desired-state file of the deployment (e.g. `data.toml`).
    pub fn import(&self, host: &mut Host, file: &str, replace: bool) {
        let desired =
            provision::import::load(&self.path(file), &host.config, &host.store).unwrap_or_else(|e| panic!("{e}"));
        desired.apply(host, &format!("import:{file}"), replace).expect("import");
    }
}

/// Points a config's cache at [`CACHE_DIR`]: adds or replaces `[runtime] cache_dir`.
fn with_shared_cache(config: &str) -> String {
    let line = format!("cache_dir = {CACHE_DIR:?}");
    if config.contains("cache_dir") {
        config
            .lines()
            .map(|l| if l.trim_start().starts_with("cache_dir") { line.as_str() } else { l })
            .collect::<Vec<_>>()
            .join("\n")
    } else if config.contains("[runtime]") {
        config.replace("[runtime]", &format!("[runtime]\n{line}"))
    } else {
        format!("[runtime]\n{line}\n\n{config}")
    }
}

/// Runs the complete job with no progress display, returning its error.
pub fn try_complete(host: &mut Host) -> Result<JobReport, provision::jobs::JobError> {
    provision::jobs::complete(host, &ProgressBar::hidden())
}

/// Runs the complete job with no progress display.
pub fn complete(host: &mut Host) -> JobReport {
    provision::jobs::complete(host, &ProgressBar::hidden()).expect("complete job")
}

/// Everything the code under test logs, at every level, from every test of this binary: a
/// global subscriber installed on first use (a scoped one misses events when another thread
/// registers a callsite first). Tests look for lines they alone can produce.
pub fn logs() -> String {
    use std::sync::{Mutex, OnceLock};
    static BUFFER: OnceLock<std::sync::Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    #[derive(Clone)]
    struct Writer(std::sync::Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Writer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = BUFFER.get_or_init(|| {
        let buffer = std::sync::Arc::new(Mutex::new(Vec::new()));
        let writer = Writer(buffer.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buffer
    });
    String::from_utf8_lossy(&buffer.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

/// A read-only connection to a database, for looking at what the host wrote.
pub fn sqlite(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open the database")
}

/// The states an order went through, from its history: e.g. `[1, 8, 4]`.
pub fn state_path(host: &Host, order: i64) -> Vec<u8> {
    host.store.history(order).expect("history").iter().map(|h| h.to.number()).collect()
}
