//! A reviewer's approve over the API while a complete job over N new assignments runs (default
//! 100 000, `BENCH_APPROVE_N`): its latency, p50 / p99 / max, against the same approve on an idle
//! server. Target: p99 < 250 ms during the job.
//!
//! The server is `provision::api::serve`, the code behind `provision serve`, in a child process
//! of its own (the bench runs itself as `approve-child DIR PORT`) with the default workers (one
//! per core). Before it starts, the parent builds the deployment: a first complete job leaves
//! `APPROVALS` sensitive orders awaiting review; then N identities get an account each, which
//! the job started through `POST /api/v1/jobs/run` creates, reviews, fulfils through the file
//! connector and verifies. Meanwhile the reviewer approves one awaiting order at a time, as
//! fast as the answers come, until the run ends; each approve's time is measured from the
//! request's start to its answer's end, over a kept-alive connection.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use provision::config::Config;
use provision::host::Host;
use provision::model::ResourceContent;
use provision::store::{Assignment, Identity};
use serde_json::{Value, json};

use crate::report::fmt;

/// The hidden subcommand the server's child process is started with.
pub const CHILD: &str = "approve-child";
const DEFAULT_N: usize = 100_000;
/// Orders awaiting review before the job starts: more than the job leaves time to approve.
const APPROVALS: usize = 3000;
/// Approves timed on the idle server first.
const IDLE: usize = 200;
const CHUNK: usize = 1000;

pub fn config_text(cache: &Path) -> String {
    let cache = serde_json::to_string(&cache.display().to_string()).expect("a path as a TOML string");
    format!(
        r#"[database]
path = "provision.db"

[runtime]
cache_dir = {cache}

[entity_types.Directory_User]

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

[connections.directory]
plugin = "files"
batch_size = 500

[resource_types.SaaS_Account]
entity_type = "Directory_User"
connection = "directory"
classification = "basic"
review_rule = "classification"

[resource_types.Finance]
entity_type = "Directory_User"
connection = "directory"
classification = "sensitive"
review_rule = "classification"

[profiles.Reviewers]
permissions = ["/Custom/ProvisioningPolicy/ReviewProvisioning/Directory_User"]
[profiles.Administrators]
permissions = ["/Custom/ProvisioningPolicy/"]
[users.rita]
profiles = ["Reviewers"]
[users.root]
profiles = ["Administrators"]
"#
    )
}

/// Identities `from..to`, each assigned `resource_type`, a chunk per transaction.
pub fn load(host: &mut Host, from: usize, to: usize, resource_type: &str) -> Result<(), String> {
    for first in (from..to).step_by(CHUNK) {
        let keys: Vec<String> = (first..(first + CHUNK).min(to)).map(|i| format!("user{i:07}")).collect();
        let identities: Vec<Identity> = keys
            .iter()
            .map(|key| Identity {
                entity_type: "Directory_User".into(),
                key: key.clone(),
                display_name: format!("User {key}"),
                attributes: BTreeMap::new(),
            })
            .collect();
        let assignments: Vec<Assignment> = keys
            .iter()
            .map(|key| Assignment {
                identity: key.clone(),
                resource_type: resource_type.into(),
                content: ResourceContent {
                    attributes: BTreeMap::from([("userName".into(), key.clone())]),
                    entitlements: Default::default(),
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

/// The deployment in `dir`; the reviewer's and the operator's tokens.
fn prepare(n: usize, dir: &Path, cache: &Path) -> Result<(String, String), String> {
    std::fs::write(dir.join("provision.toml"), config_text(cache)).map_err(|e| format!("write the config: {e}"))?;
    std::fs::create_dir_all(dir.join("managed")).map_err(|e| format!("create the managed directory: {e}"))?;
    let config = Config::load(&dir.join("provision.toml")).map_err(|e| e.to_string())?;
    let mut host = Host::open(config).map_err(|e| e.to_string())?;
    load(&mut host, 0, APPROVALS, "Finance")?;
    let report = provision::jobs::complete(&mut host, &ProgressBar::hidden()).map_err(|e| e.to_string())?;
    if report.counters.awaiting_approval != APPROVALS as u64 {
        return Err(format!("the first job left {} orders awaiting review", report.counters.awaiting_approval));
    }
    load(&mut host, 0, n, "SaaS_Account")?;
    let (_, rita) = host.store.create_token("rita", "bench", None).map_err(|e| e.to_string())?;
    let (_, root) = host.store.create_token("root", "bench", None).map_err(|e| e.to_string())?;
    Ok((rita, root))
}

/// `provision serve` on the deployment in `dir`, in a child process of the bench's own (`CHILD`),
/// once it answers: the child, its base URL, and an agent to call it.
pub fn serve(dir: &Path) -> (std::process::Child, String, ureq::Agent) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let mut server = Command::new(std::env::current_exe().expect("the bench's own executable"))
        .args([CHILD, &dir.display().to_string(), &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start the server");
    let base = format!("http://127.0.0.1:{port}");
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let deadline = Instant::now() + Duration::from_secs(120);
    while agent.get(format!("{base}/healthz")).call().is_err() {
        assert!(Instant::now() < deadline, "the server did not come up");
        assert!(server.try_wait().expect("the server's status").is_none(), "the server exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, base, agent)
}

/// One API call over `agent`: status and JSON answer.
pub fn call(agent: &ureq::Agent, url: &str, method: &str, token: &str, body: Option<&Value>) -> (u16, Value) {
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .body(body.map(Value::to_string).unwrap_or_default())
        .expect("a request");
    let response = agent.run(request).unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let text = response.into_body().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(at).copied().unwrap_or(f64::NAN)
}

fn row(what: &str, latencies: &mut [f64]) {
    latencies.sort_by(f64::total_cmp);
    println!(
        "{what:<38} {:>6} approves: p50 {:>7} ms, p99 {:>7} ms, max {:>7} ms",
        latencies.len(),
        fmt(percentile(latencies, 0.5)),
        fmt(percentile(latencies, 0.99)),
        fmt(latencies.last().copied().unwrap_or(f64::NAN)),
    );
}

pub fn run() {
    let n = std::env::var("BENCH_APPROVE_N")
        .ok()
        .map(|v| v.replace('_', "").parse::<usize>().expect("BENCH_APPROVE_N: a number of orders"))
        .unwrap_or(DEFAULT_N);
    let root = tempfile::tempdir().expect("a temporary directory");
    let (dir, cache) = (root.path().join("run"), root.path().join("cache"));
    std::fs::create_dir_all(&dir).expect("the run's directory");
    eprintln!("approve: preparing {APPROVALS} orders awaiting review and {n} new assignments");
    let (rita, operator) = prepare(n, &dir, &cache).unwrap_or_else(|e| panic!("prepare the deployment: {e}"));

    let (mut server, base, agent) = serve(&dir);

    let mut orders: Vec<i64> = Vec::new();
    let mut page = format!("{base}/api/v1/reviews?limit=1000");
    loop {
        let (status, awaiting) = call(&agent, &page, "GET", &rita, None);
        assert_eq!(status, 200, "the review list: {awaiting}");
        let items = awaiting["reviews"].as_array().expect("the review list");
        orders.extend(items.iter().filter_map(|item| item["order"]["id"].as_i64()));
        match awaiting["next_after"].as_i64() {
            Some(after) => page = format!("{base}/api/v1/reviews?limit=1000&after={after}"),
            None => break,
        }
    }
    assert_eq!(orders.len(), APPROVALS, "orders awaiting review");
    orders.reverse();
    let approve_url = format!("{base}/api/v1/reviews/approve");
    let approve = |orders: &mut Vec<i64>| -> f64 {
        let order = orders.pop().expect("an order left to approve");
        let started = Instant::now();
        let (status, answer) = call(&agent, &approve_url, "POST", &rita, Some(&json!({ "orders": [order] })));
        let took = started.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(status, 200, "approve {order}: {answer}");
        took
    };
    let mut idle: Vec<f64> = (0..IDLE).map(|_| approve(&mut orders)).collect();

    let (status, started) = call(&agent, &format!("{base}/api/v1/jobs/run"), "POST", &operator, Some(&json!({})));
    assert_eq!(status, 202, "start the job: {started}");
    let run = started["run"].as_i64().expect("the run's id");
    let job_url = format!("{base}/api/v1/jobs/{run}");
    let began = Instant::now();
    let mut during = Vec::new();
    let job = loop {
        // The run is the operator's to watch: a reviewer without View may not.
        let (status, job) = call(&agent, &job_url, "GET", &operator, None);
        assert_eq!(status, 200, "the run: {job}");
        if job["run"]["status"] != "running" {
            break job;
        }
        for _ in 0..10 {
            if !orders.is_empty() {
                during.push(approve(&mut orders));
            }
        }
        if orders.is_empty() {
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let job_seconds = began.elapsed().as_secs_f64();
    // SAFETY: kill(2) on our own child, which has not been reaped.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let _ = server.wait();
    assert_eq!(job["run"]["status"], "succeeded", "{job}");
    let created = job["run"]["counters"]["orders_created"].as_u64().unwrap_or(0);
    assert_eq!(created, n as u64, "{job}");

    crate::report::title(&format!(
        "A reviewer's approve (POST /api/v1/reviews/approve, one order) during a complete job over {} orders",
        crate::complete::count(n)
    ));
    row("idle server", &mut idle);
    row("during the job", &mut during);
    println!(
        "the job: {} s, {} orders/s, with {} approves beside it (target p99 < 250 ms)",
        fmt(job_seconds),
        fmt(n as f64 / job_seconds),
        during.len()
    );
    if orders.is_empty() {
        println!("(every awaiting order was approved before the job ended: raise APPROVALS for a longer sample)");
    }
}

/// The child: `approve-child DIR PORT`: `provision serve` on the deployment in DIR.
pub fn child(args: &[String]) {
    let [dir, port] = args else {
        eprintln!("usage: {CHILD} DIR PORT");
        std::process::exit(2);
    };
    let config = Config::load(&PathBuf::from(dir).join("provision.toml")).unwrap_or_else(|e| {
        eprintln!("approve: the config: {e}");
        std::process::exit(1)
    });
    let host = Host::open(config).unwrap_or_else(|e| {
        eprintln!("approve: open the host: {e}");
        std::process::exit(1)
    });
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    if let Err(e) = runtime.block_on(provision::api::serve(host, &format!("127.0.0.1:{port}"))) {
        eprintln!("approve: serve: {e}");
        std::process::exit(1);
    }
}
