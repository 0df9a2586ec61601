//! Desired state in, history out.
//!
//!     cargo run --release --manifest-path tests/bench/Cargo.toml -- feed
//!
//! - **bulk**: `POST /api/v1/desired` on `provision serve` (a child process, as in `approve`),
//!   each request `B` `set-assignment` changes (B = 1 000 and 10 000) for identities that exist:
//!   first creating the assignments, then replacing every one of them with new content. Each
//!   request is all or nothing, one transaction, each change a history row. Assignments per
//!   second of request time (from its start to its answer's end), median, min and max of `RUNS`
//!   requests.
//! - **export**: the audit export (`app::history::export`, what `provision history export` and
//!   `GET /api/v1/history` run) of 100 000 and 1 000 000 order state changes to a file, as JSON
//!   lines and as CSV, each in a child process of its own: rows per second and the child's peak
//!   RSS (`VmHWM`), which must not grow with the rows. The history comes from complete jobs over
//!   N/3 orders (each is created Pending, then Executed, then Verified).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use indicatif::ProgressBar;
use provision::config::Config;
use provision::host::Host;
use serde_json::{Value, json};

use crate::report::{Samples, fmt};

/// The hidden subcommand of the export's child process.
pub const EXPORT_CHILD: &str = "export-child";
const RUNS: usize = 5;
const SIZES: [usize; 2] = [1000, 10_000];

fn set(i: usize, round: usize) -> Value {
    let key = format!("user{i:07}");
    json!({ "op": "set-assignment", "identity": key, "resource_type": "SaaS_Account",
            "attributes": { "userName": key, "email": format!("{key}@example.com"), "round": round.to_string() },
            "entitlements": ["Users"] })
}

fn bulk() {
    let root = tempfile::tempdir().expect("a temporary directory");
    let (dir, cache) = (root.path().join("run"), root.path().join("cache"));
    std::fs::create_dir_all(dir.join("managed")).expect("the run's directory");
    std::fs::write(dir.join("provision.toml"), crate::approve::config_text(&cache)).expect("the config");
    let identities: usize = SIZES.iter().sum::<usize>() * RUNS;
    eprintln!("feed: preparing {identities} identities");
    let token = {
        let config = Config::load(&dir.join("provision.toml")).expect("the config loads");
        let mut host = Host::open(config).expect("the host opens");
        crate::approve::load(&mut host, 0, identities, "Finance").expect("identities");
        // Only the identities: the requests set the SaaS accounts.
        let (_, token) = host.store.create_token("root", "bench", None).expect("a token");
        token
    };
    let (mut server, base, agent) = crate::approve::serve(&dir);
    let url = format!("{base}/api/v1/desired");
    crate::report::title("POST /api/v1/desired: set-assignment changes per request, one transaction each");
    println!("| changes per request | assignments/s, median | min | max | requests |");
    println!("| --- | --- | --- | --- | --- |");
    let mut first = 0;
    for size in SIZES {
        for (round, what) in [(1, "created"), (2, "replaced")] {
            let mut speeds = Vec::new();
            for run in 0..RUNS {
                let from = first + run * size;
                let changes: Vec<Value> = (from..from + size).map(|i| set(i, round)).collect();
                let body = json!({ "request_id": format!("bench-{size}-{round}-{run}"), "changes": changes });
                let started = Instant::now();
                let (status, answer) = crate::approve::call(&agent, &url, "POST", &token, Some(&body));
                let seconds = started.elapsed().as_secs_f64();
                assert_eq!(status, 200, "{}", answer.to_string().chars().take(500).collect::<String>());
                let done = &answer["applied"][format!("assignments_{what}")];
                assert_eq!(done.as_u64(), Some(size as u64), "{}", answer["applied"]);
                speeds.push(size as f64 / seconds);
            }
            let samples = Samples::new(speeds);
            println!(
                "| {} ({what}) | {} | {} | {} | {RUNS} |",
                fmt(size as f64),
                fmt(samples.median()),
                fmt(samples.min()),
                fmt(samples.max())
            );
        }
        first += RUNS * size;
    }
    // SAFETY: kill(2) on our own child, which has not been reaped.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let _ = server.wait();
}

/// A deployment in `dir` whose history holds `rows` (a multiple of 3) order state changes.
fn history(dir: &Path, cache: &Path, rows: usize) {
    std::fs::create_dir_all(dir.join("managed")).expect("the run's directory");
    std::fs::write(dir.join("provision.toml"), crate::approve::config_text(cache)).expect("the config");
    let config = Config::load(&dir.join("provision.toml")).expect("the config loads");
    let mut host = Host::open(config).expect("the host opens");
    let orders = rows.div_ceil(3);
    crate::approve::load(&mut host, 0, orders, "SaaS_Account").expect("assignments");
    let report = provision::jobs::complete(&mut host, &ProgressBar::hidden()).expect("the complete job");
    assert_eq!(report.counters.verified, orders as u64, "every order verified");
}

/// The export's child: exports the deployment in DIR as FORMAT to a file there and prints
/// `ROWS SECONDS PEAK_KIB`.
pub fn export_child(args: &[String]) {
    let [dir, format] = args else {
        eprintln!("usage: {EXPORT_CHILD} DIR jsonl|csv");
        std::process::exit(2);
    };
    let format = match format.as_str() {
        "csv" => provision::app::history::Format::Csv,
        _ => provision::app::history::Format::Jsonl,
    };
    let dir = Path::new(dir);
    let store = provision::store::Store::open_read_only(&dir.join("provision.db")).expect("the database");
    let file = std::fs::File::create(dir.join("export.out")).expect("the output file");
    let started = Instant::now();
    let rows = provision::app::history::export(&store, 0, i64::MAX, format, file, |_| {}).expect("the export");
    let seconds = started.elapsed().as_secs_f64();
    println!("{rows} {seconds} {}", crate::complete::status_kib("VmHWM"));
}

fn export() {
    let root = tempfile::tempdir().expect("a temporary directory");
    let cache = root.path().join("cache");
    crate::report::title("The audit export to a file, in a process of its own");
    println!("| rows | format | rows/s | seconds | peak RSS | output |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for rows in [100_002, 1_000_002] {
        let dir = root.path().join(format!("history-{rows}"));
        eprintln!("feed: preparing {rows} history rows");
        history(&dir, &cache, rows);
        for format in ["jsonl", "csv"] {
            let out = Command::new(std::env::current_exe().expect("the bench's own executable"))
                .args([EXPORT_CHILD, &dir.display().to_string(), format])
                .output()
                .expect("run the export");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let text = String::from_utf8_lossy(&out.stdout);
            let fields: Vec<f64> = text.split_whitespace().filter_map(|f| f.parse().ok()).collect();
            let [written, seconds, peak] = fields[..] else { panic!("the export child said: {text}") };
            assert_eq!(written as usize, rows, "rows exported");
            let size = std::fs::metadata(dir.join("export.out")).map(|m| m.len()).unwrap_or(0);
            println!(
                "| {} | {format} | {} | {:.2} | {} MiB | {} MiB |",
                fmt(written),
                fmt(written / seconds),
                seconds,
                fmt(peak / 1024.0),
                fmt(size as f64 / (1 << 20) as f64)
            );
        }
    }
}

pub fn run() {
    bulk();
    export();
}
