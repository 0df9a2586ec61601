//! A real PostgreSQL server for the tests: one per test process, started on first use with
//! Debian's binaries (`tests/setup.sh` installs them), `initdb` into a directory of its own and a
//! free port on 127.0.0.1; each test gets a database of its own.
//!
//! The host's own store tests compile this file too (by path), so it depends on nothing of the
//! tests crate.
//!
//! PostgreSQL refuses to run as root: when the tests do, the server runs as `nobody`. It is
//! started from a thread that lives as long as the process and is asked to die with it
//! (`PR_SET_PDEATHSIG`), so a test process that ends, however, leaves no server behind; data
//! directories of earlier processes that are gone are removed.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The superuser of the test server (trusted on 127.0.0.1, no password).
pub const USER: &str = "provision";

/// The running server.
pub struct Postgres {
    port: u16,
    bin: PathBuf,
    dir: PathBuf,
}

static SERVER: OnceLock<Postgres> = OnceLock::new();
static DATABASES: AtomicU32 = AtomicU32::new(0);

/// The server of this test process, started on first use.
pub fn server() -> &'static Postgres {
    SERVER.get_or_init(Postgres::start)
}

/// A fresh, empty database on this process's server: its URL.
pub fn database() -> String {
    server().create_database()
}

impl Postgres {
    fn start() -> Postgres {
        let bin = binaries().unwrap_or_else(|| {
            panic!("PostgreSQL's server binaries (initdb, postgres) are not installed: run tests/setup.sh")
        });
        remove_stale_directories();
        let dir = std::env::temp_dir().join(format!("provision-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the PostgreSQL directory");
        let as_nobody = unsafe { libc::geteuid() } == 0;
        if as_nobody {
            chown_nobody(&dir);
        }
        let data = dir.join("data");
        let output = run_as(Command::new(bin.join("initdb")), as_nobody)
            .args(["-D"])
            .arg(&data)
            .args(["-U", USER, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"])
            .output()
            .expect("run initdb");
        assert!(output.status.success(), "initdb failed: {}", String::from_utf8_lossy(&output.stderr));

        let port = free_port();
        let log = std::fs::File::create(dir.join("server.log")).expect("server log");
        if as_nobody {
            chown_nobody(&dir.join("server.log"));
        }
        let (started, ready) = std::sync::mpsc::channel();
        let (bin_for_thread, data_for_thread, dir_for_thread) = (bin.clone(), data.clone(), dir.clone());
        // The server's parent thread must outlive every test: PR_SET_PDEATHSIG fires when the
        // thread that spawned the child ends, not the process.
        std::thread::Builder::new()
            .name("postgres".into())
            .spawn(move || {
                let mut command = run_as(Command::new(bin_for_thread.join("postgres")), as_nobody);
                command
                    .arg("-D")
                    .arg(&data_for_thread)
                    .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
                    .arg("-c")
                    .arg(format!("unix_socket_directories={}", dir_for_thread.display()))
                    // Throwaway data: no fsync (durability is SQLite's and PostgreSQL's own
                    // business, not what these tests check), room for many hosts' connections.
                    .args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
                    .args(["-c", "max_connections=300", "-c", "shared_buffers=64MB"])
                    .stdout(Stdio::null())
                    .stderr(log);
                unsafe {
                    command.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                        Ok(())
                    });
                }
                let mut child = command.spawn().expect("start postgres");
                let _ = started.send(child.id());
                // This thread lives as long as the server (or the process).
                let _ = child.wait();
            })
            .expect("spawn the postgres thread");
        ready.recv().expect("postgres started");
        let server = Postgres { port, bin, dir };
        server.wait_ready();
        server
    }

    /// Waits until the server accepts connections (pg_isready, which returns as soon as it does).
    fn wait_ready(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let status = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER, "-t", "5"])
                .stdout(Stdio::null())
                .status()
                .expect("run pg_isready");
            if status.success() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "PostgreSQL did not start: {}",
                std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
            );
            // pg_isready returns at once while the server is not listening yet.
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Where its binaries (psql among them) are.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `name` on it.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates an empty database; its URL.
    pub fn create_database(&self) -> String {
        let name = format!("test_{}", DATABASES.fetch_add(1, Ordering::Relaxed));
        self.sql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// Runs SQL on database `name` with psql; its output (unaligned, tuples only).
    pub fn sql(&self, database: &str, sql: &str) -> String {
        let output = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER, "-d", database])
            .args(["-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql])
            .output()
            .expect("run psql");
        assert!(output.status.success(), "psql `{sql}`: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// The database name of a URL this server handed out.
    pub fn database_of(url: &str) -> &str {
        url.rsplit('/').next().unwrap_or(url)
    }
}

/// A port nothing listens on (bound, then released).
pub fn unused_port() -> u16 {
    free_port()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("an ephemeral port")
        .port()
}

/// A config whose `[database]` table holds `body` (and nothing else of what it held).
pub fn with_database(config: &str, body: &str) -> String {
    let mut out = Vec::new();
    let mut skipping = false;
    let mut replaced = false;
    for line in config.lines() {
        let header = line.trim_start().starts_with('[');
        if header {
            skipping = line.trim() == "[database]";
            if skipping {
                out.push("[database]".to_string());
                out.push(body.to_string());
                replaced = true;
                continue;
            }
        }
        if !skipping {
            out.push(line.to_string());
        }
    }
    if !replaced {
        out.insert(0, format!("[database]\n{body}\n"));
    }
    out.join("\n") + "\n"
}

/// Whether this test binary puts deployments on PostgreSQL unless a test says otherwise: one
/// whose name begins with `postgres_` (which includes other test files by path), so the same
/// end-to-end tests run on both backends.
pub fn by_default() -> bool {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_name().map(|name| name.to_string_lossy().starts_with("postgres_")))
        .unwrap_or(false)
}

/// Debian's server binaries: the newest /usr/lib/postgresql/N/bin, or wherever `pg_config`
/// says.
fn binaries() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let output = Command::new("pg_config").arg("--bindir").output().ok()?;
    let bin = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    bin.join("initdb").exists().then_some(bin)
}

fn run_as(mut command: Command, as_nobody: bool) -> Command {
    if as_nobody {
        command.uid(NOBODY).gid(NOBODY);
    }
    command
}

const NOBODY: u32 = 65534;

fn chown_nobody(path: &Path) {
    std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).expect("give the PostgreSQL directory to nobody");
}

/// Data directories of test processes that have ended.
fn remove_stale_directories() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("provision-pg-")).and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // Signal 0 checks that the process exists.
        if unsafe { libc::kill(pid, 0) } != 0 {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
