//! The complete job on N orders (synchronise, compute with the review rule component, fulfil
//! through the file connector component, history, synchronise again), from N fresh desired
//! assignments to N Verified orders: orders per second, and peak memory, which must stay flat
//! as N grows (the job streams; it never loads every order). Targets: peak RSS at 1 000 000
//! ≤ 1.5x that at 100 000; orders per second ≥ 50% of the storage ceiling (printed by `all`).
//!
//! Peak memory is a property of a process, so every run is a process of its own: the bench runs
//! itself as `complete-child N WORKERS DIR CACHE`, which builds a deployment in DIR (config as TOML,
//! the bundled `file-connector` and `classification-review`, compiled components from the
//! shared CACHE), loads N identities with one assignment each through the store's own bulk
//! functions in chunks, runs the job, checks that all N orders are Verified, and prints one JSON
//! line. Only the job is timed; opening the host and loading the desired state are reported
//! apart. A warm-up run of 1000 orders fills the cache first, so no measured run compiles.
//! Memory comes from the child itself (Linux): its peak RSS over its whole life (`VmHWM`), its
//! RSS when the job starts (after `malloc_trim` gave back what setup freed), and its peak
//! during the job alone (the high-water
//! mark is reset through `/proc/self/clear_refs` before the job; the peak during the job still
//! includes what was resident before it). `getrusage`'s `ru_maxrss` is reported too, but it is
//! not used: Linux starts it at the parent's peak when the child executes, whatever the child
//! uses itself.
//!
//! `BENCH_COMPLETE_N` (comma-separated, e.g. `2000,20000`) replaces the default N list;
//! `BENCH_COMPLETE_RUNS` sets the runs per N (default: 3, and 1 from 1 000 000 orders on).
//! `BENCH_COMPLETE_WORKERS` (comma-separated, default `1,2`) the `[runtime] workers` each N is
//! run with; the ratios (memory, storage ceiling) use the first. `BENCH_COMPLETE_DATABASE=postgres`
//! runs each on a fresh database of the tests' PostgreSQL server (`provision_tests::postgres`)
//! instead of a SQLite file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use provision::config::Config;
use provision::host::Host;
use provision::model::ResourceContent;
use provision::store::{Assignment, Identity};
use serde_json::{Value, json};

use crate::report::{Samples, fmt, header};

/// The variable that gives a child its PostgreSQL database (none: SQLite).
const DATABASE_URL: &str = "BENCH_COMPLETE_DATABASE_URL";
/// The hidden subcommand a run's child process is started with.
pub const CHILD: &str = "complete-child";
/// Orders per run when `BENCH_COMPLETE_N` is not set.
const DEFAULT_N: &[usize] = &[100_000, 1_000_000];
/// Worker threads per run when `BENCH_COMPLETE_WORKERS` is not set.
const DEFAULT_WORKERS: &[usize] = &[1, 2];
/// Runs per N when `BENCH_COMPLETE_RUNS` is not set: 3, and 1 for N at or above this (a run
/// of 1 000 000 orders takes minutes).
const LONG_RUN: usize = 1_000_000;
/// Orders of the warm-up run, which fills the compiled-component cache (not reported).
const WARM_UP: usize = 1000;
/// Identities and assignments written per transaction while loading the desired state.
const SETUP_CHUNK: usize = 1000;
const ENTITY_TYPE: &str = "Directory_User";
const RESOURCE_TYPE: &str = "SaaS_Account";

/// The deployment: one entity type, one resource type on a file-connector connection, reviewed
/// by the classification rule (`basic` needs no review, so orders go straight to Pending). No
/// thresholds (none by default), so no run is held; limits per call above the defaults so that
/// a slow disk does not fail a batch.
fn config_text(cache: &Path, workers: usize, database: Option<&str>) -> String {
    let cache = serde_json::to_string(&cache.display().to_string()).expect("a path as a TOML string");
    let database = match database {
        Some(url) => format!("url = {}", serde_json::to_string(url).expect("a URL as a TOML string")),
        None => "path = \"provision.db\"".to_string(),
    };
    format!(
        r#"[database]
{database}

[runtime]
cache_dir = {cache}
workers = {workers}

[entity_types.{ENTITY_TYPE}]
display_name = "Directory user"

[plugins.files]
file = "bundled:file-connector"
memory = "128 MiB"
timeout = "60s"

[plugins.files.config]
dir = "/data"

[[plugins.files.grants.dirs]]
host = "managed"
guest = "/data"
writable = true

[plugins.classification]
file = "bundled:classification-review"
timeout = "60s"

[plugins.classification.config]
review = "sensitive"
block = "forbidden"

[connections.directory]
plugin = "files"
batch_size = 500

[resource_types.{RESOURCE_TYPE}]
entity_type = "{ENTITY_TYPE}"
connection = "directory"
classification = "basic"
review_rule = "classification"
"#
    )
}

/// What one child measured.
struct RunResult {
    setup_seconds: f64,
    job_seconds: f64,
    orders_per_second: f64,
    /// KiB, the child's whole life.
    peak_kib: f64,
    /// KiB, resident when the job started.
    before_job_kib: f64,
    /// KiB, the peak while the job ran (none if the high-water mark could not be reset).
    job_peak_kib: Option<f64>,
    /// (step, seconds) in the order the job ran them.
    steps: Vec<(String, f64)>,
}

/// The orders per second of the runs, per N (for the ratio to the storage ceiling).
pub fn run() -> Vec<(usize, Samples)> {
    let ns = env_list("BENCH_COMPLETE_N").unwrap_or_else(|| DEFAULT_N.to_vec());
    let workers = env_list("BENCH_COMPLETE_WORKERS").unwrap_or_else(|| DEFAULT_WORKERS.to_vec());
    let runs_env = std::env::var("BENCH_COMPLETE_RUNS").ok().map(|v| {
        v.trim().parse::<usize>().ok().filter(|r| *r > 0).expect("BENCH_COMPLETE_RUNS: a number of runs, at least 1")
    });
    let runs_of = |n: usize| runs_env.unwrap_or(if n >= LONG_RUN { 1 } else { 3 });
    let root = tempfile::tempdir().expect("a temporary directory");
    let cache = root.path().join("cache");

    eprintln!("complete: warm-up run of {WARM_UP} orders (fills the compiled-component cache)");
    let warm = child_run(WARM_UP, 1, root.path(), &cache);
    eprintln!("complete: warm-up done, {} orders/s", fmt(warm.orders_per_second));

    let mut results: Vec<((usize, usize), Vec<RunResult>)> = Vec::new();
    for (&n, &w) in ns.iter().flat_map(|n| workers.iter().map(move |w| (n, w))) {
        let runs = runs_of(n);
        let mut done = Vec::new();
        for r in 1..=runs {
            eprintln!("complete: N = {}, workers = {w}, run {r}/{runs}", count(n));
            let result = child_run(n, w, root.path(), &cache);
            eprintln!(
                "complete: N = {}, workers = {w}, run {r}/{runs}: setup {:.1} s, job {:.1} s = {} orders/s, peak RSS {} MiB",
                count(n),
                result.setup_seconds,
                result.job_seconds,
                fmt(result.orders_per_second),
                fmt(result.peak_kib / 1024.0)
            );
            done.push(result);
        }
        results.push(((n, w), done));
    }

    let runs_text = ns.iter().map(|&n| format!("{} at {}", runs_of(n), count(n))).collect::<Vec<_>>().join(", ");
    let workers_text = workers.iter().map(usize::to_string).collect::<Vec<_>>().join(" and ");
    header(&format!(
        "Complete job: N new assignments to N Verified orders (compute → review rule component → file \
         connector component → history → synchronise) on {}; one process per run; workers: {workers_text}; runs: {runs_text}",
        if std::env::var("BENCH_COMPLETE_DATABASE").is_ok_and(|d| d == "postgres") { "PostgreSQL" } else { "SQLite" }
    ));
    let samples = |runs: &[RunResult], f: &dyn Fn(&RunResult) -> f64| Samples::new(runs.iter().map(f).collect());
    let mut speeds = Vec::new();
    let mut peaks = Vec::new();
    let mut job_peaks = Vec::new();
    for ((n, w), runs) in &results {
        let n_text = format!("{}, workers = {w}", count(*n));
        let speed = samples(runs, &|r| r.orders_per_second);
        println!("{}", speed.row(&format!("orders per second, N = {n_text}"), "/s"));
        println!("{}", samples(runs, &|r| r.job_seconds).row(&format!("job, N = {n_text}"), "s"));
        println!("{}", samples(runs, &|r| r.setup_seconds).row(&format!("setup (not timed), N = {n_text}"), "s"));
        let peak = samples(runs, &|r| r.peak_kib / 1024.0);
        println!("{}", peak.row(&format!("peak RSS, whole process, N = {n_text}"), "MiB"));
        println!(
            "{}",
            samples(runs, &|r| r.before_job_kib / 1024.0).row(&format!("RSS as the job starts, N = {n_text}"), "MiB")
        );
        if runs.iter().all(|r| r.job_peak_kib.is_some()) {
            let job_peak = samples(runs, &|r| r.job_peak_kib.unwrap_or_default() / 1024.0);
            println!("{}", job_peak.row(&format!("peak RSS during the job, N = {n_text}"), "MiB"));
            if *w == workers[0] {
                job_peaks.push((*n, job_peak.median()));
            }
        }
        if *w == workers[0] {
            peaks.push((*n, peak.median()));
            speeds.push((*n, speed));
        }
    }
    println!();
    for ((n, w), runs) in &results {
        // The steps of the median run (by speed).
        let mut by_speed: Vec<&RunResult> = runs.iter().collect();
        by_speed.sort_by(|a, b| a.orders_per_second.total_cmp(&b.orders_per_second));
        let median = by_speed[by_speed.len() / 2];
        let steps = median.steps.iter().map(|(step, s)| format!("{step} {} s", fmt(*s))).collect::<Vec<_>>().join(", ");
        println!("where the time goes at N = {}, workers = {w} (median run): {steps}", count(*n));
    }
    for (what, list) in [("peak RSS", &peaks), ("peak RSS during the job", &job_peaks)] {
        if let (Some((small_n, small)), Some((large_n, large))) = (list.first(), list.last())
            && large_n > small_n
        {
            println!(
                "{what} at {} / at {} orders: {:.2}x (medians; target ≤ 1.5x)",
                count(*large_n),
                count(*small_n),
                large / small
            );
        }
    }
    speeds
}

/// A number of orders as the tables print it.
pub fn count(n: usize) -> String {
    if n >= 1000 { fmt(n as f64) } else { n.to_string() }
}

/// `BENCH_COMPLETE_N`: numbers separated by commas (`_` allowed inside a number), run in
/// increasing order.
fn env_list(name: &str) -> Option<Vec<usize>> {
    let text = std::env::var(name).ok()?;
    let mut list: Vec<usize> = text
        .split(',')
        .map(|item| item.trim().replace('_', ""))
        .filter(|item| !item.is_empty())
        .map(|item| item.parse().unwrap_or_else(|_| panic!("{name}: `{item}` is not a number of orders")))
        .collect();
    assert!(!list.is_empty() && list.iter().all(|n| *n > 0), "{name}: give at least one number above 0");
    list.sort_unstable();
    list.dedup();
    Some(list)
}

/// Runs one child process on a fresh directory and reads its result line.
fn child_run(n: usize, workers: usize, root: &Path, cache: &Path) -> RunResult {
    let dir = tempfile::tempdir_in(root).expect("a directory for the run");
    let exe = std::env::current_exe().expect("the bench's own executable");
    let mut command = Command::new(exe);
    if std::env::var("BENCH_COMPLETE_DATABASE").is_ok_and(|d| d == "postgres") {
        command.env(DATABASE_URL, provision_tests::postgres::database());
    }
    let output = command
        .arg(CHILD)
        .arg(n.to_string())
        .arg(workers.to_string())
        .arg(dir.path())
        .arg(cache)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("start the child process");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the complete job's child for N = {n} failed ({}); its output: {stdout}",
        output.status
    );
    let line = stdout.lines().last().unwrap_or_default();
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("the child's result `{line}`: {e}"));
    let number = |key: &str| v[key].as_f64().unwrap_or_else(|| panic!("the child's result has no `{key}`: {line}"));
    RunResult {
        setup_seconds: number("setup_seconds"),
        job_seconds: number("job_seconds"),
        orders_per_second: number("orders_per_second"),
        peak_kib: number("peak_rss_kib"),
        before_job_kib: number("rss_before_job_kib"),
        job_peak_kib: v["job_peak_rss_kib"].as_f64(),
        steps: v["steps"]
            .as_array()
            .map(|steps| {
                steps.iter().filter_map(|s| Some((s["step"].as_str()?.to_string(), s["seconds"].as_f64()?))).collect()
            })
            .unwrap_or_default(),
    }
}

/// The child: `complete-child N WORKERS DIR CACHE`. Sets up, runs and checks the job; prints one JSON
/// line; exits non-zero (after saying why on stderr) if the job did not carry all N orders to
/// Verified.
pub fn child(args: &[String]) {
    let [n, workers, dir, cache] = args else {
        eprintln!("usage: {CHILD} N WORKERS DIR CACHE");
        std::process::exit(2);
    };
    // What would explain a short count (a unit failed and was redone) is a warning of the host's.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .try_init();
    let n: usize = n.parse().expect("N: a number of orders");
    let workers: usize = workers.parse().expect("WORKERS: a number of worker threads");
    let dir = PathBuf::from(dir);
    let cache = PathBuf::from(cache);
    if let Err(problem) = child_job(n, workers, &dir, &cache) {
        eprintln!("complete: N = {n}: {problem}");
        std::process::exit(1);
    }
}

fn child_job(n: usize, workers: usize, dir: &Path, cache: &Path) -> Result<(), String> {
    let config_path = dir.join("provision.toml");
    let database = std::env::var(DATABASE_URL).ok();
    std::fs::write(&config_path, config_text(cache, workers, database.as_deref()))
        .map_err(|e| format!("write the config: {e}"))?;
    std::fs::create_dir_all(dir.join("managed")).map_err(|e| format!("create the managed directory: {e}"))?;

    let started = Instant::now();
    let config = Config::load(&config_path).map_err(|e| e.to_string())?;
    let mut host = Host::open(config).map_err(|e| e.to_string())?;
    let open_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    setup(&mut host, n)?;
    let setup_seconds = started.elapsed().as_secs_f64();
    eprintln!("complete: N = {}: desired state loaded in {setup_seconds:.1} s; the job runs", count(n));

    // What setup freed goes back to the system, so the RSS as the job starts is what is live.
    // SAFETY: malloc_trim only releases free memory of glibc's heap.
    unsafe { libc::malloc_trim(0) };
    let rss_before_job = status_kib("VmRSS");
    let setup_peak = status_kib("VmHWM");
    let reset = reset_peak();

    let bar = ProgressBar::hidden();
    let watcher = StepWatcher::start(&bar);
    let started = Instant::now();
    let report = provision::jobs::complete(&mut host, &bar);
    let job_seconds = started.elapsed().as_secs_f64();
    let steps = watcher.stop();
    let job_peak = reset.then(|| status_kib("VmHWM"));
    let peak = setup_peak.max(status_kib("VmHWM"));
    let maxrss = rusage_maxrss_kib();
    let report = report.map_err(|e| format!("the complete job stopped: {e}"))?;
    let states: BTreeMap<u8, i64> = host
        .store
        .count_by_state()
        .map_err(|e| format!("count orders by state: {e}"))?
        .into_iter()
        .map(|(state, n)| (state.number(), n))
        .collect();
    drop(host);

    let c = &report.counters;
    let expected = n as u64;
    if !report.problems.is_empty() {
        return Err(format!("the job reported problems: {}", report.problems.join("; ")));
    }
    if c.orders_created != expected || c.released != expected || c.executed != expected || c.verified != expected {
        let redone = redone_units(&dir.join("provision.db")).unwrap_or_else(|e| vec![format!("(cannot read: {e})")]);
        return Err(format!("the job's counters are not {n} each: {c:?}; units claimed more than once: {redone:?}"));
    }
    let verified = provision::model::ProvisioningState::Verified.number();
    if states.len() != 1 || states.get(&verified) != Some(&(n as i64)) {
        return Err(format!("expected {n} orders, all 4 Verified; orders by state: {states:?}"));
    }

    let orders_per_second = n as f64 / job_seconds;
    let steps: Vec<Value> = steps.iter().map(|(step, s)| json!({ "step": step, "seconds": s })).collect();
    println!(
        "{}",
        json!({
            "orders": n,
            "open_seconds": open_seconds,
            "setup_seconds": setup_seconds,
            "job_seconds": job_seconds,
            "orders_per_second": orders_per_second,
            "peak_rss_kib": peak,
            "rss_before_job_kib": rss_before_job,
            "job_peak_rss_kib": job_peak,
            "setup_peak_rss_kib": setup_peak,
            "ru_maxrss_kib": maxrss,
            "steps": steps,
        })
    );
    Ok(())
}

/// N identities of one entity type, each assigned the resource type, through the store's own
/// functions (the import's), a chunk per transaction so that memory stays flat.
fn setup(host: &mut Host, n: usize) -> Result<(), String> {
    for first in (0..n).step_by(SETUP_CHUNK) {
        let keys: Vec<String> = (first..(first + SETUP_CHUNK).min(n)).map(|i| format!("user{i:07}")).collect();
        let identities: Vec<Identity> = keys
            .iter()
            .map(|key| Identity {
                entity_type: ENTITY_TYPE.into(),
                key: key.clone(),
                display_name: format!("User {key}"),
                attributes: BTreeMap::from([("department".into(), "Sales".into())]),
            })
            .collect();
        let assignments: Vec<Assignment> = keys
            .iter()
            .map(|key| Assignment {
                identity: key.clone(),
                resource_type: RESOURCE_TYPE.into(),
                content: ResourceContent {
                    attributes: BTreeMap::from([
                        ("userName".into(), key.clone()),
                        ("email".into(), format!("{key}@example.com")),
                        ("displayName".into(), format!("User {key}")),
                    ]),
                    entitlements: ["Users".to_string()].into(),
                },
                valid_from: None,
                valid_until: None,
            })
            .collect();
        host.store.upsert_identities(&identities).map_err(|e| format!("insert identities: {e}"))?;
        host.store.set_assignments(&assignments, false).map_err(|e| format!("insert assignments: {e}"))?;
    }
    Ok(())
}

/// The units claimed more than once (a failed or taken-over unit is redone), to say why counters
/// came out short.
fn redone_units(db: &Path) -> rusqlite::Result<Vec<String>> {
    let conn = rusqlite::Connection::open(db)?;
    let mut stmt =
        conn.prepare("SELECT id, kind, target, lo, hi, claims, state FROM work_units WHERE claims > 1 ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok(format!(
            "unit {} {} {} ({:?}, {:?}]: {} claims, {}",
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<i64>>(3)?,
            r.get::<_, Option<i64>>(4)?,
            r.get::<_, i64>(5)?,
            r.get::<_, String>(6)?
        ))
    })?;
    rows.collect()
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`); 0 if absent.
pub fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resets the peak RSS (`VmHWM`) to the current RSS (Linux ≥ 4.0); whether it worked.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// `getrusage(RUSAGE_SELF).ru_maxrss`, KiB on Linux.
fn rusage_maxrss_kib() -> i64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole `rusage` into the pointer it is given.
    let usage = unsafe {
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()), 0, "getrusage");
        usage.assume_init()
    };
    usage.ru_maxrss
}

/// The step a progress message names: `run 1: fulfil (3 of 5 steps; 2 units at work)` is
/// `fulfil (3 of 5)`; the units at work change within a step.
fn step_of(message: &str) -> String {
    let message = message.split_once(": ").map_or(message, |(_, rest)| rest);
    match message.split_once(" steps;") {
        Some((step, _)) => format!("{step})"),
        None => message.to_string(),
    }
}

/// Times the job's steps by watching the progress bar's message (each step sets its own).
struct StepWatcher {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(String, f64)>>,
}

impl StepWatcher {
    fn start(bar: &ProgressBar) -> StepWatcher {
        let bar = bar.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            // Before the first step sets its message: the run's start (the bar's message is empty).
            let mut steps: Vec<(String, Instant)> = vec![(step_of(&bar.message()), Instant::now())];
            while !stopped.load(Ordering::Relaxed) {
                let message = step_of(&bar.message());
                if steps.last().is_some_and(|(last, _)| *last != message) {
                    steps.push((message, Instant::now()));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let end = Instant::now();
            let ends = steps.iter().skip(1).map(|(_, at)| *at).chain([end]).collect::<Vec<_>>();
            steps
                .into_iter()
                .zip(ends)
                .map(|((step, at), end)| {
                    let step = if step.is_empty() { "start".to_string() } else { step };
                    (step, (end - at).as_secs_f64())
                })
                .collect()
        });
        StepWatcher { stop, thread }
    }

    /// The steps and their seconds (a step shorter than the polling interval may be missed).
    fn stop(self) -> Vec<(String, f64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the step watcher")
    }
}
