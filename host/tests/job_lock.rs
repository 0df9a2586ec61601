//! One job at a time per database: real `provision job run` processes on one database. A second
//! run refuses (exit 6, naming the holder) or, with `--wait`, starts when the first is done;
//! runs started at the same moment write every order exactly once; a run killed with SIGKILL
//! leaves a lock that the next run takes over once it expired, and the killed run is listed
//! `interrupted`.
//!
//! Nothing here sleeps to wait: the first run is held in its webhook delivery by a receiver the
//! test controls (an observable point where it holds the lock), and every wait is on an event
//! (a request arriving, a log line, a process exiting).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

mod common;
use common::{run, text};

use serde_json::Value;

/// The exit code of a run refused because another holds the job lock.
const EXIT_LOCKED: i32 = 6;
/// Bound on any wait for an event, so a broken build fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(180);

/// What the test waits on.
#[derive(Debug)]
enum Event {
    /// The webhook receiver got a request (a run is delivering notifications).
    Hook,
    /// A line a process wrote on stderr.
    Line(&'static str, String),
    /// A process exited.
    Exited(&'static str, ExitStatus, String),
}

/// A webhook receiver that holds every request until released.
struct Hooks {
    port: u16,
    open: Arc<(Mutex<bool>, Condvar)>,
}

impl Hooks {
    fn start(events: Sender<Event>) -> Hooks {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new((Mutex::new(false), Condvar::new()));
        let gate = open.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (gate, events) = (gate.clone(), events.clone());
                std::thread::spawn(move || answer(stream, &gate, &events));
            }
        });
        Hooks { port, open }
    }

    /// Answers held requests and every later one at once.
    fn release(&self) {
        let (open, changed) = &*self.open;
        *open.lock().unwrap() = true;
        changed.notify_all();
    }
}

fn answer(mut stream: TcpStream, gate: &(Mutex<bool>, Condvar), events: &Sender<Event>) {
    // Read the head, then the body it announces, so the client is never cut off mid-send.
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let _ = events.send(Event::Hook);
    let (open, changed) = gate;
    let mut released = open.lock().unwrap();
    while !*released {
        released = changed.wait(released).unwrap();
    }
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
}

/// Starts `provision ARGS` in `dir`, forwarding its stderr lines and its exit as events under
/// `name`; stdout is kept and sent with the exit.
fn spawn(dir: &Path, args: &[&str], name: &'static str, events: &Sender<Event>) -> u32 {
    let mut child: Child = common::command(dir, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let stderr = child.stderr.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let lines = events.clone();
    let err_thread = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(Event::Line(name, line));
        }
    });
    let exits = events.clone();
    std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        let status = child.wait().unwrap();
        let _ = err_thread.join();
        let _ = exits.send(Event::Exited(name, status, out));
    });
    pid
}

fn next(events: &Receiver<Event>) -> Event {
    events.recv_timeout(PATIENCE).expect("no event within the patience bound")
}

/// Waits for each of `names` to exit; returns, in that order, its status, stdout and the
/// stderr lines seen meanwhile. Events of other processes are kept for them, never dropped.
fn exits<const N: usize>(events: &Receiver<Event>, names: [&str; N]) -> [(ExitStatus, String, Vec<String>); N] {
    let mut lines: HashMap<&str, Vec<String>> = HashMap::new();
    let mut done: HashMap<&str, (ExitStatus, String)> = HashMap::new();
    while done.len() < N {
        match next(events) {
            Event::Exited(who, status, out) if names.contains(&who) => {
                done.insert(who, (status, out));
            }
            Event::Line(who, line) => lines.entry(who).or_default().push(line),
            _ => {}
        }
    }
    names.map(|name| {
        let (status, out) = done.remove(name).expect("waited for every name");
        (status, out, lines.remove(name).unwrap_or_default())
    })
}

/// Waits until the run named "first" holds the lock, observably: its webhook delivery arrived.
fn until_delivering(events: &Receiver<Event>) {
    loop {
        match next(events) {
            Event::Hook => break,
            Event::Exited("first", status, _) => panic!("the first run ended ({status}) before delivering"),
            _ => {}
        }
    }
}

fn exit_of(events: &Receiver<Event>, name: &str) -> (ExitStatus, String, Vec<String>) {
    let [exit] = exits(events, [name]);
    exit
}

const HOOK_CONFIG: &str = r#"
[runtime]
cache_dir = "cache"

[entity_types.Directory_User]

[plugins.files]
file = "bundled:file-connector"
[plugins.files.config]
dir = "/data"
[[plugins.files.grants.dirs]]
host = "managed"
guest = "/data"
writable = true

[connections.saas]
plugin = "files"
batch_size = 50

[connections.helpdesk]
kind = "manual-ticket"

[resource_types.Account]
entity_type = "Directory_User"
connection = "saas"

[resource_types.Badge]
entity_type = "Directory_User"
connection = "helpdesk"

[profiles.Helpdesk]
permissions = ["/Custom/ProvisioningPolicy/PerformManualProvisioning/Directory_User"]

[users.hank]
display_name = "Hank Helpdesk"
profiles = ["Helpdesk"]

[notifications.webhooks.ops]
url = "http://127.0.0.1:PORT/hook"
secret = "s3cret"
timeout = "300s"
"#;

/// `count` identities with an Account each; the first also gets a Badge (a manual order, so
/// the run ends by delivering a notification to the webhook).
fn data(count: usize, badge: bool) -> String {
    let mut data = String::new();
    for n in 0..count {
        data.push_str(&format!(
            "[[identities]]\nentity_type = \"Directory_User\"\nkey = \"u{n:05}\"\n\n\
             [[assignments]]\nidentity = \"u{n:05}\"\nresource_type = \"Account\"\nattributes = {{ userName = \"u{n:05}\" }}\n\n"
        ));
    }
    if badge {
        data.push_str(
            "[[assignments]]\nidentity = \"u00000\"\nresource_type = \"Badge\"\nattributes = { floor = \"3\" }\n",
        );
    }
    data
}

fn deployment(config: &str, data: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("provision.toml"), config).unwrap();
    std::fs::write(dir.path().join("data.toml"), data).unwrap();
    let out = run(dir.path(), &["import", "data.toml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    dir
}

fn json(dir: &Path, args: &[&str]) -> Value {
    let out = run(dir, args);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn job_runs(dir: &Path) -> Vec<Value> {
    let mut runs = json(dir, &["job", "list", "--json"]).as_array().unwrap().clone();
    runs.reverse(); // oldest first
    runs
}

/// Every slot (identity, resource type) has exactly one order, and the managed system's journal
/// exactly one line per order of the connector's resource type: nothing doubled, nothing lost.
fn assert_each_order_once(dir: &Path, slots: usize) {
    let orders = json(dir, &["orders", "list", "--json"]);
    let orders = orders.as_array().unwrap();
    let mut per_slot: HashMap<(String, String), usize> = HashMap::new();
    for order in orders {
        let slot = (order["owner"].to_string(), order["resource_type"].to_string());
        *per_slot.entry(slot).or_default() += 1;
    }
    let doubled: Vec<_> = per_slot.iter().filter(|(_, n)| **n != 1).collect();
    assert!(doubled.is_empty(), "slots without exactly one order: {doubled:?}");
    assert_eq!(per_slot.len(), slots, "slots with an order");

    let accounts: Vec<u64> =
        orders.iter().filter(|o| o["resource_type"] == "Account").map(|o| o["id"].as_u64().unwrap()).collect();
    let journal = std::fs::read_to_string(dir.join("managed/Account.jsonl")).unwrap();
    let mut lines: HashMap<u64, usize> = HashMap::new();
    for line in journal.lines() {
        let line: Value = serde_json::from_str(line).unwrap();
        *lines.entry(line["order"].as_u64().unwrap()).or_default() += 1;
    }
    let not_once: Vec<_> = accounts.iter().filter(|id| lines.get(id) != Some(&1)).collect();
    assert!(not_once.is_empty(), "Account orders without exactly one journal line: {not_once:?} of {lines:?}");
    assert_eq!(lines.len(), accounts.len(), "journal lines for orders that are not ours");
}

/// Two runs that both ran never overlapped: the later one started after the earlier finished.
fn assert_one_after_the_other(runs: &[Value]) {
    for pair in runs.windows(2) {
        let finished = pair[0]["finished_at"].as_i64().unwrap_or(i64::MAX);
        let started = pair[1]["started_at"].as_i64().unwrap();
        assert!(started >= finished, "runs overlapped: {pair:#?}");
    }
}

/// A run holding the lock (stopped in its webhook delivery), then a second run: it refuses with
/// exit 6 and names the holder, without recording a run or writing anything.
#[test]
fn a_second_run_refuses_while_one_holds_the_lock_and_names_it() {
    let (events, rx) = channel();
    let hooks = Hooks::start(events.clone());
    let dir = deployment(&HOOK_CONFIG.replace("PORT", &hooks.port.to_string()), &data(20, true));
    let dir = dir.path();

    spawn(dir, &["job", "run", "--json"], "first", &events);
    until_delivering(&rx);
    // The first run is inside its run, waiting on the webhook. Another run now:
    spawn(dir, &["job", "run"], "second", &events);
    let status = loop {
        match next(&rx) {
            Event::Hook => panic!("a second run delivered notifications while the first was still running"),
            Event::Exited("second", status, _) => break status,
            _ => {}
        }
    };
    assert_eq!(status.code(), Some(EXIT_LOCKED), "the second run was not refused");

    hooks.release();
    let (status, out, _) = exit_of(&rx, "first");
    assert!(status.success(), "the first run: {status}: {out}");
    let runs = job_runs(dir);
    assert_eq!(runs.len(), 1, "the refused run recorded a run: {runs:#?}");
    assert_eq!(runs[0]["status"], "succeeded");
    assert_each_order_once(dir, 21);
}

/// The refusal names who holds the lock (host, pid, run) on stderr.
#[test]
fn the_refusal_names_the_holder() {
    let (events, rx) = channel();
    let hooks = Hooks::start(events.clone());
    let dir = deployment(&HOOK_CONFIG.replace("PORT", &hooks.port.to_string()), &data(5, true));
    let dir = dir.path();

    let first = spawn(dir, &["job", "run"], "first", &events);
    until_delivering(&rx);
    let out = run(dir, &["job", "run", "--only", "compute"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_LOCKED), "{stderr}");
    assert!(stderr.contains(&format!("pid {first}")), "the holder's pid is not named: {stderr}");
    assert!(stderr.contains("run 1"), "the holder's run is not named: {stderr}");
    // --wait-timeout bounds the wait: still held after it, refused the same way.
    let out = run(dir, &["job", "run", "--wait", "--wait-timeout", "300ms"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_LOCKED), "{stderr}");
    assert!(stderr.contains("waiting for it") && stderr.contains(&format!("pid {first}")), "{stderr}");
    // Resuming or cancelling a held run writes too: it obeys the same lock.
    let out = run(dir, &["job", "cancel", "1", "--user", "hank"]);
    assert_eq!(out.status.code(), Some(EXIT_LOCKED), "{}", text(&out.stderr));

    hooks.release();
    let (status, _, _) = exit_of(&rx, "first");
    assert!(status.success());
}

/// With `--wait`, a second run waits for the lock (saying so), then runs after the first.
#[test]
fn with_wait_the_second_run_starts_when_the_first_is_done() {
    let (events, rx) = channel();
    let hooks = Hooks::start(events.clone());
    let dir = deployment(&HOOK_CONFIG.replace("PORT", &hooks.port.to_string()), &data(20, true));
    let dir = dir.path();

    let first = spawn(dir, &["job", "run", "--json"], "first", &events);
    until_delivering(&rx);
    spawn(dir, &["job", "run", "--wait", "--json"], "second", &events);
    loop {
        match next(&rx) {
            Event::Line("second", line) if line.contains("waiting") => {
                assert!(line.contains(&format!("pid {first}")), "{line}");
                break;
            }
            Event::Hook => panic!("the second run delivered while the first held the lock"),
            Event::Exited("second", status, out) => panic!("the second run did not wait: {status}: {out}"),
            _ => {}
        }
    }
    hooks.release();
    let [(status, _, _), (second, out, lines)] = exits(&rx, ["first", "second"]);
    assert!(status.success(), "first: {status}");
    assert!(second.success(), "second: {second}: {lines:?}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["counters"]["orders_created"], 0, "{report}");
    assert_eq!(report["counters"]["resumed"], 0, "the first run's attempts were taken for a crash: {report}");

    let runs = job_runs(dir);
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| r["status"] == "succeeded"), "{runs:#?}");
    assert_one_after_the_other(&runs);
    assert_each_order_once(dir, 21);
}

const RACE_CONFIG: &str = r#"
[runtime]
cache_dir = "cache"

[entity_types.Directory_User]
notifications = false

[plugins.files]
file = "bundled:file-connector"
[plugins.files.config]
dir = "/data"
page-size = 1000
[[plugins.files.grants.dirs]]
host = "managed"
guest = "/data"
writable = true

[connections.saas]
plugin = "files"
batch_size = 100

[resource_types.Account]
entity_type = "Directory_User"
connection = "saas"
"#;

const RACE_SLOTS: usize = 3000;

/// Compiles the plugins into the deployment's cache first, so two runs started together reach
/// the database at about the same moment instead of one compiling while the other works.
fn warm(dir: &Path) {
    let out = run(dir, &["plugins", "list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Two runs started at the same moment without `--wait`: whichever interleaving, each either
/// ran or was refused (6), the runs did not overlap, and every order exists and was written
/// exactly once.
#[test]
fn two_runs_started_together_write_every_order_once() {
    let dir = deployment(RACE_CONFIG, &data(RACE_SLOTS, false));
    let dir = dir.path();
    warm(dir);
    let (events, rx) = channel();
    spawn(dir, &["job", "run"], "a", &events);
    spawn(dir, &["job", "run"], "b", &events);
    let [(a, _, a_err), (b, _, b_err)] = exits(&rx, ["a", "b"]);
    for (status, err) in [(a, &a_err), (b, &b_err)] {
        assert!(status.success() || status.code() == Some(EXIT_LOCKED), "{status}: {err:?}");
    }
    assert!(a.success() || b.success(), "neither ran: {a_err:?} {b_err:?}");
    let runs = job_runs(dir);
    eprintln!("started together: exits {:?} and {:?}, {} runs recorded", a.code(), b.code(), runs.len());
    assert_one_after_the_other(&runs);
    assert_each_order_once(dir, RACE_SLOTS);
}

/// Two runs started at the same moment with `--wait`: both run, one after the other, and every
/// order was created and written exactly once.
#[test]
fn two_waiting_runs_started_together_both_run_once_each() {
    let dir = deployment(RACE_CONFIG, &data(RACE_SLOTS, false));
    let dir = dir.path();
    warm(dir);
    let (events, rx) = channel();
    spawn(dir, &["job", "run", "--wait", "--json"], "a", &events);
    spawn(dir, &["job", "run", "--wait", "--json"], "b", &events);
    let [(a, a_out, a_err), (b, b_out, b_err)] = exits(&rx, ["a", "b"]);
    assert!(a.success(), "{a}: {a_err:?}");
    assert!(b.success(), "{b}: {b_err:?}");
    let created: u64 = [a_out, b_out]
        .iter()
        .map(|out| serde_json::from_str::<Value>(out).unwrap()["counters"]["orders_created"].as_u64().unwrap())
        .sum();
    assert_eq!(created, RACE_SLOTS as u64, "orders created by the two runs together");
    let waited = a_err.iter().chain(&b_err).filter(|line| line.contains("waiting for it")).count();
    eprintln!("started together with --wait: {waited} of 2 said they waited");
    let runs = job_runs(dir);
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| r["status"] == "succeeded"), "{runs:#?}");
    assert_one_after_the_other(&runs);
    assert_each_order_once(dir, RACE_SLOTS);
}

/// A run killed with SIGKILL in the middle of fulfilment leaves its lock behind (the row is
/// there, with its pid). The next run, with `--wait`, takes it over once the killed run's
/// heartbeat is past its expiry (2 s here), resumes the killed run's attempts as a crash, and
/// `job list` shows the killed run `interrupted`, naming who took over.
#[test]
fn a_killed_runs_lock_is_taken_over_after_expiry() {
    let config = format!("{RACE_CONFIG}\n[jobs]\nlock_expiry = \"2s\"\n");
    let dir = deployment(&config, &data(2000, false));
    let dir = dir.path();
    warm(dir);

    let mut child = common::command(dir, &["job", "run", "--log-level", "info"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let killed_pid = child.id();
    let mut batches = 0;
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        if line.unwrap().contains("sending a batch") {
            batches += 1;
            if batches == 4 {
                break;
            }
        }
    }
    assert_eq!(batches, 4, "the run ended before sending four batches");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // The lock the killed run held is still there.
    let db =
        rusqlite::Connection::open_with_flags(dir.join("provision.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let holder: i64 = db.query_row("SELECT pid FROM job_lock", [], |r| r.get(0)).expect("the killed run's lock");
    assert_eq!(holder, i64::from(killed_pid));

    let out = common::command(dir, &["job", "run", "--wait", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["counters"]["orders_created"], 0, "{report}");
    assert_eq!(report["counters"]["resumed"], 100, "the killed run's open attempts: {report}");

    let runs = job_runs(dir);
    assert_eq!(runs.len(), 2, "{runs:#?}");
    assert_eq!(runs[0]["status"], "interrupted", "{runs:#?}");
    let message = runs[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&format!("pid {killed_pid}")) && message.contains("run 2"), "{message}");
    assert!(runs[0]["finished_at"].is_i64(), "{runs:#?}");
    assert_eq!(runs[1]["status"], "succeeded");
    let left: i64 = db.query_row("SELECT COUNT(*) FROM job_lock", [], |r| r.get(0)).unwrap();
    assert_eq!(left, 0, "the lock was not released");
    assert_each_order_once(dir, 2000);
}

/// `provision serve` obeys the same lock: while a CLI run holds it, the scheduler skips its
/// ticks with a log line (no error) and "run a job now" answers 409 `job-running` naming the
/// holder; once the CLI run is done, the scheduler's next tick runs.
#[test]
fn serve_skips_scheduled_runs_and_refuses_api_runs_while_another_holds_the_lock() {
    let (events, rx) = channel();
    let hooks = Hooks::start(events.clone());
    let config = format!(
        "{}\n[profiles.Admins]\npermissions = [\"/Custom/ProvisioningPolicy/\"]\n\n\
         [users.root]\ndisplay_name = \"Root\"\nprofiles = [\"Admins\"]\n\n[serve]\njob_interval = \"1s\"\n",
        HOOK_CONFIG.replace("PORT", &hooks.port.to_string())
    );
    let dir = deployment(&config, &data(5, true));
    let dir = dir.path();
    let out = run(dir, &["tokens", "create", "--user", "root"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_string();

    let first = spawn(dir, &["job", "run"], "first", &events);
    until_delivering(&rx);
    let server = common::server::Server::start(dir, &dir.join("provision.toml"));
    let logged = |what: &str| server.log.lock().unwrap().iter().any(|line| line.contains(what));
    // The scheduler ticks every second; wait (bounded) for a tick that found the lock held.
    let deadline = std::time::Instant::now() + PATIENCE;
    while !logged("scheduled job run skipped") {
        assert!(!logged("scheduled job run done"), "the scheduler ran beside the CLI run");
        assert!(std::time::Instant::now() < deadline, "no skipped tick: {:?}", server.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!logged("scheduled job run failed"), "a held lock is logged as an error");

    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let response = agent
        .post(format!("{}/api/v1/jobs/run", server.url))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send("{}")
        .unwrap();
    assert_eq!(response.status().as_u16(), 409);
    let body: Value = serde_json::from_str(&response.into_body().read_to_string().unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "job-running", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("pid {first}")) && message.contains("run 1"), "{message}");

    hooks.release();
    let (status, _, _) = exit_of(&rx, "first");
    assert!(status.success());
    let deadline = std::time::Instant::now() + PATIENCE;
    while !logged("scheduled job run done") {
        assert!(
            std::time::Instant::now() < deadline,
            "the scheduler did not run again: {:?}",
            server.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let runs = job_runs(dir);
    assert!(runs.len() >= 2, "{runs:#?}");
    assert_one_after_the_other(&runs);
    assert_each_order_once(dir, 6);
}

/// A run paused (SIGSTOP) past its lock's expiry is taken for dead: the next run takes the lock
/// over and finishes. When the paused run resumes (SIGCONT) it finds its lock gone, stops with
/// an error instead of reporting an end it did not reach, and stays `interrupted`.
#[test]
fn a_paused_run_whose_lock_was_taken_over_stops_and_stays_interrupted() {
    let (events, rx) = channel();
    let hooks = Hooks::start(events.clone());
    let config = format!("{}\n[jobs]\nlock_expiry = \"2s\"\n", HOOK_CONFIG.replace("PORT", &hooks.port.to_string()));
    let dir = deployment(&config, &data(20, true));
    let dir = dir.path();

    let first = spawn(dir, &["job", "run"], "first", &events);
    until_delivering(&rx);
    // Paused where it holds the lock but no transaction: waiting on the webhook.
    signal(first, libc::SIGSTOP);
    spawn(dir, &["job", "run", "--wait"], "second", &events);
    loop {
        match next(&rx) {
            Event::Line("second", line) if line.contains("took over the job lock") => {
                assert!(line.contains(&format!("pid {first}")), "{line}");
                break;
            }
            Event::Exited("second", status, _) => panic!("the second run ended ({status}) without taking over"),
            _ => {}
        }
    }
    hooks.release();
    let (status, _, lines) = exit_of(&rx, "second");
    assert!(status.success(), "second: {status}: {lines:?}");

    signal(first, libc::SIGCONT);
    let (status, _, lines) = exit_of(&rx, "first");
    assert_eq!(status.code(), Some(1), "the paused run did not fail: {lines:?}");
    assert!(lines.iter().any(|l| l.contains("taken over")), "{lines:?}");
    let runs = job_runs(dir);
    assert_eq!(runs.len(), 2, "{runs:#?}");
    assert_eq!(runs[0]["status"], "interrupted", "{runs:#?}");
    assert_eq!(runs[1]["status"], "succeeded", "{runs:#?}");
    assert_each_order_once(dir, 21);
}

fn signal(pid: u32, signal: i32) {
    let pid = i32::try_from(pid).unwrap();
    // SAFETY: kill(2) on a child process of this test, which is alive (it has not been reaped).
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill({pid}, {signal})");
}
