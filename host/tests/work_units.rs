//! Work units with leases, from outside: real `provision job run` processes on one database. A
//! second run of the same kind joins the unfinished one and shares its units; one of another
//! kind refuses (exit 6, naming the run) or, with `--wait`, starts when the first is done; runs
//! started together write every order exactly once; a worker killed (SIGKILL) or paused
//! (SIGSTOP) past its lease has its units taken over and writes nothing more.
//!
//! Nothing here sleeps to wait: the first run is held in its webhook delivery by a receiver the
//! test controls (an observable point where it holds the lock), and every wait is on an event
//! (a request arriving, a log line, a process exiting).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

mod common;
use common::hooks::Hooks;
use common::{run, text};

use serde_json::Value;

/// The exit code of a run refused because a run of another kind is unfinished.
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

/// The shared held webhook receiver, reporting each request as [`Event::Hook`].
fn hooks(events: &Sender<Event>) -> Hooks {
    let events = Mutex::new(events.clone());
    Hooks::start(true, move || {
        let _ = events.lock().unwrap().send(Event::Hook);
    })
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
        // RFC 3339, to the millisecond.
        let time = |v: &Value| v.as_str().map(|t| t.parse::<jiff::Timestamp>().unwrap());
        let finished = time(&pair[0]["finished_at"]).unwrap_or(jiff::Timestamp::MAX);
        let started = time(&pair[1]["started_at"]).unwrap();
        assert!(started >= finished, "runs overlapped: {pair:#?}");
    }
}

/// A run held in its webhook delivery (its notify unit claimed), then a second `job run`: it
/// joins the same run instead of starting another, waits for the unit the first holds, and both
/// report the one run; every order was written once.
#[test]
fn a_second_run_of_the_same_kind_joins_the_first() {
    let (events, rx) = channel();
    let hooks = hooks(&events);
    let dir = deployment(&HOOK_CONFIG.replace("PORT", &hooks.port.to_string()), &data(20, true));
    let dir = dir.path();

    spawn(dir, &["job", "run", "--json"], "first", &events);
    until_delivering(&rx);
    spawn(dir, &["job", "run", "--json", "--log-level", "info"], "second", &events);
    loop {
        match next(&rx) {
            Event::Line("second", line) if line.contains("joining the unfinished job run 1") => break,
            Event::Exited("second", status, out) => panic!("the second run did not join: {status}: {out}"),
            _ => {}
        }
    }
    hooks.release();
    let [(first, first_out, _), (second, second_out, lines)] = exits(&rx, ["first", "second"]);
    assert!(first.success(), "first: {first}");
    assert!(second.success(), "second: {second}: {lines:?}");
    for out in [first_out, second_out] {
        let report: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(report["run"], 1, "{report}");
        assert_eq!(report["counters"]["orders_created"], 21, "the run's counters, whoever did its units: {report}");
    }
    let runs = job_runs(dir);
    assert_eq!(runs.len(), 1, "the joining run recorded a run: {runs:#?}");
    assert_eq!(runs[0]["status"], "succeeded");
    assert_each_order_once(dir, 21);
    // Opening with the other config changed nothing the run's workers read: Account is still
    // `basic` in the catalog its orders were decided with.
    let orders = json(dir, &["orders", "list", "--json"]);
    let accounts: Vec<&Value> = orders.as_array().unwrap().iter().filter(|o| o["resource_type"] == "Account").collect();
    assert!(accounts.iter().all(|o| o["classification"] == "basic"), "{accounts:?}");
}

/// While a complete run is unfinished, a run of another kind is refused (exit 6) naming it;
/// `--wait-timeout` bounds a wait for it.
#[test]
fn a_run_of_another_kind_is_refused_naming_the_unfinished_run() {
    let (events, rx) = channel();
    let hooks = hooks(&events);
    let dir = deployment(&HOOK_CONFIG.replace("PORT", &hooks.port.to_string()), &data(5, true));
    let dir = dir.path();

    spawn(dir, &["job", "run"], "first", &events);
    until_delivering(&rx);
    let out = run(dir, &["job", "run", "--only", "compute"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_LOCKED), "{stderr}");
    assert!(stderr.contains("run 1 (complete, at its notify step"), "the unfinished run is not named: {stderr}");
    let out = run(dir, &["job", "run", "--only", "fulfil", "--wait", "--wait-timeout", "300ms"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_LOCKED), "{stderr}");
    assert!(stderr.contains("waiting for it") && stderr.contains("run 1"), "{stderr}");

    hooks.release();
    let (status, _, _) = exit_of(&rx, "first");
    assert!(status.success());
    assert_eq!(job_runs(dir).len(), 1);
}

/// With `--wait`, a run of another kind starts once the unfinished one has ended.
#[test]
fn with_wait_a_run_of_another_kind_starts_when_the_first_is_done() {
    let (events, rx) = channel();
    let hooks = hooks(&events);
    let dir = deployment(&HOOK_CONFIG.replace("PORT", &hooks.port.to_string()), &data(20, true));
    let dir = dir.path();

    spawn(dir, &["job", "run", "--json"], "first", &events);
    until_delivering(&rx);
    spawn(dir, &["job", "run", "--only", "synchronise", "--wait", "--json"], "second", &events);
    loop {
        match next(&rx) {
            Event::Line("second", line) if line.contains("waiting") => {
                assert!(line.contains("run 1"), "{line}");
                break;
            }
            Event::Exited("second", status, out) => panic!("the second run did not wait: {status}: {out}"),
            _ => {}
        }
    }
    hooks.release();
    let [(status, _, _), (second, _, lines)] = exits(&rx, ["first", "second"]);
    assert!(status.success(), "first: {status}");
    assert!(second.success(), "second: {second}: {lines:?}");
    let runs = job_runs(dir);
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| r["status"] == "succeeded"), "{runs:#?}");
    assert_one_after_the_other(&runs);
    assert_each_order_once(dir, 21);
    // Opening with the other config changed nothing the run's workers read: Account is still
    // `basic` in the catalog its orders were decided with.
    let orders = json(dir, &["orders", "list", "--json"]);
    let accounts: Vec<&Value> = orders.as_array().unwrap().iter().filter(|o| o["resource_type"] == "Account").collect();
    assert!(accounts.iter().all(|o| o["classification"] == "basic"), "{accounts:?}");
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

/// Two runs started at the same moment: whichever interleaving, they share one run (the second
/// joins the first), both report it, and every order exists and was written exactly once.
#[test]
fn two_runs_started_together_share_one_run_and_write_every_order_once() {
    let dir = deployment(RACE_CONFIG, &data(RACE_SLOTS, false));
    let dir = dir.path();
    warm(dir);
    let (events, rx) = channel();
    spawn(dir, &["job", "run", "--json"], "a", &events);
    spawn(dir, &["job", "run", "--json"], "b", &events);
    let [(a, a_out, a_err), (b, b_out, b_err)] = exits(&rx, ["a", "b"]);
    assert!(a.success(), "{a}: {a_err:?}");
    assert!(b.success(), "{b}: {b_err:?}");
    let runs = job_runs(dir);
    // b may also have started after a's run ended: then it is a second run that finds nothing.
    assert!(runs.iter().all(|r| r["status"] == "succeeded"), "{runs:#?}");
    assert_one_after_the_other(&runs);
    let created: Vec<u64> = [a_out, b_out]
        .iter()
        .map(|out| serde_json::from_str::<Value>(out).unwrap()["counters"]["orders_created"].as_u64().unwrap())
        .collect();
    match runs.len() {
        1 => assert_eq!(created, [RACE_SLOTS as u64; 2], "both report the shared run"),
        _ => assert_eq!(created.iter().sum::<u64>(), RACE_SLOTS as u64),
    }
    assert_each_order_once(dir, RACE_SLOTS);
}

/// A run killed with SIGKILL in the middle of fulfilment leaves its units claimed. The next
/// `job run` joins the same run, takes the killed worker's units over once their lease (2 s
/// here) has lapsed, sends the orders of their open attempts again with the same idempotency
/// keys, and finishes the run: one run, succeeded, every order written exactly once.
#[test]
fn a_killed_workers_units_are_taken_over_after_their_lease() {
    let config = format!("{RACE_CONFIG}\n[jobs]\nlease = \"2s\"\n");
    let dir = deployment(&config, &data(2000, false));
    let dir = dir.path();
    warm(dir);

    let mut child = common::command(dir, &["job", "run", "--log-level", "info"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
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

    let db =
        rusqlite::Connection::open_with_flags(dir.join("provision.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let claimed: i64 =
        db.query_row("SELECT COUNT(*) FROM work_units WHERE state = 'claimed'", [], |r| r.get(0)).unwrap();
    assert!(claimed > 0, "the killed run left no claimed unit");
    // `job show` follows the run from outside: fulfil is part-way.
    let shown = json(dir, &["job", "show", "1", "--json"]);
    assert_eq!(shown["run"]["status"], "running", "{shown}");
    let fulfil = &shown["progress"]["steps"][2];
    assert_eq!(fulfil["step"], "fulfil", "{shown}");
    assert!(fulfil["done"].as_u64() < fulfil["units"].as_u64(), "{shown}");

    let out = common::command(dir, &["job", "run", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["run"], 1, "the next run joined the killed one: {report}");
    let resumed = report["counters"]["resumed"].as_u64().unwrap();
    assert!(resumed > 0 && resumed.is_multiple_of(100), "the killed worker's open attempts (batches of 100): {report}");

    let runs = job_runs(dir);
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0]["status"], "succeeded");
    let open: i64 =
        db.query_row("SELECT COUNT(*) FROM work_units WHERE state IN ('ready', 'claimed')", [], |r| r.get(0)).unwrap();
    assert_eq!(open, 0, "units left open");
    assert_each_order_once(dir, 2000);
    // Every step done, and the counters its units recorded, from both processes, add up to the
    // run's own.
    let shown = json(dir, &["job", "show", "1", "--json"]);
    let steps = shown["progress"]["steps"].as_array().unwrap();
    assert!(steps.iter().all(|s| s["units"] == s["done"] && s["claimed"] == 0), "{shown}");
    assert_eq!(shown["progress"]["no_worker"], false, "{shown}");
    for counter in ["executed", "orders_created", "resumed", "verified"] {
        let summed: u64 = steps.iter().map(|s| s["counters"][counter].as_u64().unwrap()).sum();
        assert_eq!(Some(summed), runs[0]["counters"][counter].as_u64(), "{counter}: {shown}");
    }
}

/// A worker paused (SIGSTOP) past its lease while it holds a unit (the notify unit, waiting
/// on the webhook) is taken for dead: the next `job run` takes the unit over and finishes the
/// run. When the paused process resumes (SIGCONT) its lease is gone: it writes nothing for that
/// unit, says so, and reports the run the other finished.
#[test]
fn a_paused_worker_whose_lease_was_taken_over_writes_nothing_more() {
    let (events, rx) = channel();
    let hooks = hooks(&events);
    let config = format!("{}\n[jobs]\nlease = \"2s\"\n", HOOK_CONFIG.replace("PORT", &hooks.port.to_string()));
    let dir = deployment(&config, &data(20, true));
    let dir = dir.path();

    let first = spawn(dir, &["job", "run"], "first", &events);
    until_delivering(&rx);
    signal(first, libc::SIGSTOP);
    spawn(dir, &["job", "run", "--log-level", "info"], "second", &events);
    loop {
        match next(&rx) {
            Event::Line("second", line) if line.contains("took over unit") => {
                assert!(line.contains("notify"), "{line}");
                break;
            }
            Event::Exited("second", status, out) => {
                panic!("the second run ended ({status}) without taking over: {out}")
            }
            _ => {}
        }
    }
    hooks.release();
    let (status, _, second) = exit_of(&rx, "second");
    assert!(status.success(), "second: {status}: {second:?}");

    signal(first, libc::SIGCONT);
    let (status, _, lines) = exit_of(&rx, "first");
    assert!(status.success(), "the paused run: {status}: {lines:?}");
    assert!(lines.iter().any(|l| l.contains("lost the lease")), "{lines:?}\nsecond: {second:#?}");
    let runs = job_runs(dir);
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0]["status"], "succeeded", "{runs:#?}");
    assert_each_order_once(dir, 21);
    // Opening with the other config changed nothing the run's workers read: Account is still
    // `basic` in the catalog its orders were decided with.
    let orders = json(dir, &["orders", "list", "--json"]);
    let accounts: Vec<&Value> = orders.as_array().unwrap().iter().filter(|o| o["resource_type"] == "Account").collect();
    assert!(accounts.iter().all(|o| o["classification"] == "basic"), "{accounts:?}");
}

fn signal(pid: u32, signal: i32) {
    let pid = i32::try_from(pid).unwrap();
    // SAFETY: kill(2) on a child process of this test, which is alive (it has not been reaped).
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill({pid}, {signal})");
}

/// A host whose config decides orders differently (here: another connection for a resource
/// type) takes no unit of a run started with the other config, and says which keys differ.
#[test]
fn a_host_whose_config_decides_differently_takes_no_unit_of_the_run() {
    let (events, rx) = channel();
    let hooks = hooks(&events);
    let config = HOOK_CONFIG.replace("PORT", &hooks.port.to_string());
    let dir = deployment(&config, &data(20, true));
    let dir = dir.path();
    // The same database (beside the config), another connection for Account.
    let other = config.replace(
        "[resource_types.Account]\nentity_type = \"Directory_User\"\nconnection = \"saas\"",
        "[resource_types.Account]\nentity_type = \"Directory_User\"\nconnection = \"helpdesk\"\nclassification = \"sensitive\"",
    );
    assert_ne!(other, config);
    std::fs::write(dir.join("other.toml"), other).unwrap();

    spawn(dir, &["job", "run", "--json"], "first", &events);
    until_delivering(&rx);
    let out = run(dir, &["job", "run", "--config", "other.toml"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "a config problem: {stderr}");
    assert!(stderr.contains("job run 1 is running with a config that differs"), "{stderr}");
    assert!(stderr.contains("resource_types.Account.connection is `helpdesk` here, `saas` in the run"), "{stderr}");
    assert!(!stderr.contains("plugins.files.sha256"), "only what differs is named: {stderr}");

    // Opening with the other config, while the run is unfinished, changes nothing its workers
    // read: Account stays `basic` in the catalog, as the run's review decided it.
    let orders = json(dir, &["orders", "list", "--json", "--config", "other.toml"]);
    let accounts: Vec<&Value> = orders.as_array().unwrap().iter().filter(|o| o["resource_type"] == "Account").collect();
    assert!(!accounts.is_empty() && accounts.iter().all(|o| o["classification"] == "basic"), "{accounts:?}");

    hooks.release();
    let (status, out, _) = exit_of(&rx, "first");
    assert!(status.success(), "{out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["counters"]["orders_created"], 21, "{report}");
    assert_each_order_once(dir, 21);
}
