//! The stress test of work units: several `provision job run` processes of two workers each on
//! one database, killed (SIGKILL) and paused past their lease (SIGSTOP, then SIGCONT) at random
//! moments, while a reviewer approves and a help desk confirms orders and the desired state
//! changes under them. At the end, read from the outside:
//! - every order a connector carried out is in the managed system's journal exactly once, and
//!   no other order is (the file connector's journal is the count at the managed system);
//! - every order's history is without gaps (each step starts where the last ended) and every
//!   step is a transition the state machine allows;
//! - nothing is left open: no unit ready or claimed, no attempt unfinished, no run running;
//! - every person's action either took effect or was refused by the state machine (the order
//!   moved meanwhile), never failed for the database being busy;
//! - a worker that resumed after its lease was taken over wrote nothing more for its unit (it
//!   says so, and its run still reports success: nothing it did was doubled).
//!
//! The chaos is random but reproducible: the seed is printed, and `STRESS_SEED=N` replays it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;
use common::{run, text};

use provision::machine::{self, Event};
use provision::model::ProvisioningState;
use serde_json::Value;

/// The lease; a pause lasts past it.
const LEASE: Duration = Duration::from_secs(1);
const ROUNDS: usize = 5;
const PROCESSES: usize = 3;
const IDENTITIES: usize = 1200;
/// The exit code of a person's action the state machine refused (the order moved meanwhile).
const EXIT_REFUSED: i32 = 5;
/// The exit code of a run that had problems (a unit given up after repeated takeovers).
const EXIT_JOB_PROBLEMS: i32 = 4;

const CONFIG: &str = r#"
[runtime]
cache_dir = "cache"
workers = 2

[jobs]
lease = "1s"

[entity_types.Directory_User]

[plugins.files]
file = "bundled:file-connector"
[plugins.files.config]
dir = "/data"
[[plugins.files.grants.dirs]]
host = "managed"
guest = "/data"
writable = true

[plugins.classification]
file = "bundled:classification-review"
[plugins.classification.config]
review = "sensitive"

# The file connector's journal takes one writer at a time: one batch in flight, across every
# worker of every process.
[connections.saas]
plugin = "files"
batch_size = 8

[connections.helpdesk]
kind = "manual-ticket"

[resource_types.Account]
entity_type = "Directory_User"
connection = "saas"
classification = "basic"
review_rule = "classification"

[resource_types.Finance]
entity_type = "Directory_User"
connection = "saas"
classification = "sensitive"
review_rule = "classification"

[resource_types.Badge]
entity_type = "Directory_User"
connection = "helpdesk"
classification = "basic"
review_rule = "classification"

[profiles.Reviewers]
permissions = ["/Custom/ProvisioningPolicy/ReviewProvisioning/Directory_User"]

[profiles.Helpdesk]
permissions = ["/Custom/ProvisioningPolicy/PerformManualProvisioning/Directory_User"]

[users.rita]
profiles = ["Reviewers"]

[users.hank]
profiles = ["Helpdesk"]
"#;

/// A small reproducible generator (xorshift64*): the chaos needs no quality, only a replay.
struct Chaos(u64);

impl Chaos {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// The desired state of `wave`: an Account for everyone, Finance for every third, a Badge for
/// every fifth; wave 1 changes every fourth Account and takes every ninth Finance away.
fn data(wave: u8) -> String {
    let mut data = String::new();
    for n in 0..IDENTITIES {
        let key = format!("u{n:04}");
        let title = if wave == 1 && n % 4 == 0 { "changed" } else { "first" };
        data.push_str(&format!(
            "[[identities]]\nentity_type = \"Directory_User\"\nkey = \"{key}\"\n\n\
             [[assignments]]\nidentity = \"{key}\"\nresource_type = \"Account\"\n\
             attributes = {{ userName = \"{key}\", title = \"{title}\" }}\n\n"
        ));
        if n % 3 == 0 && !(wave == 1 && n % 9 == 0) {
            data.push_str(&format!(
                "[[assignments]]\nidentity = \"{key}\"\nresource_type = \"Finance\"\nattributes = {{ group = \"ledger\" }}\n\n"
            ));
        }
        if n % 5 == 0 {
            data.push_str(&format!(
                "[[assignments]]\nidentity = \"{key}\"\nresource_type = \"Badge\"\nattributes = {{ floor = \"3\" }}\n\n"
            ));
        }
    }
    data
}

fn import(dir: &Path, wave: u8) {
    let file = format!("wave{wave}.toml");
    std::fs::write(dir.join(&file), data(wave)).unwrap();
    let out = run(dir, &["import", &file]);
    assert!(out.status.success(), "import {file}: {}", text(&out.stderr));
}

/// A `job run` with its stderr collected (info: takeovers and lost leases are logged).
struct Worker {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: std::thread::JoinHandle<()>,
}

fn start(dir: &Path) -> Worker {
    let mut child = common::command(dir, &["job", "run", "--log-level", "info"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().unwrap();
    let kept = lines.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            kept.lock().unwrap().push(line);
        }
    });
    Worker { child, lines, reader }
}

fn signal(child: &Child, signal: i32) {
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on a child of this test that has not been reaped.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill({pid}, {signal})");
}

fn json(dir: &Path, args: &[&str]) -> Value {
    let out = run(dir, args);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ids(list: &Value) -> Vec<i64> {
    list.as_array().unwrap().iter().filter_map(|item| item["order"]["id"].as_i64()).collect()
}

/// What people did: actions that took effect, and those the machine refused.
#[derive(Default, Debug)]
struct People {
    done: usize,
    refused: usize,
}

/// Rita approves and Hank confirms a few of the orders waiting for them, over and over, until
/// told to stop; the last pass (`all`) takes every one.
fn act(dir: &Path, chaos: &mut Chaos, all: bool, people: &Mutex<People>) {
    for (user, list, decision) in [("rita", "review", "approve"), ("hank", "manual", "confirm")] {
        let waiting = ids(&json(dir, &[list, "list", "--user", user, "--json"]));
        let mut picked: Vec<i64> = waiting.into_iter().filter(|_| all || chaos.below(3) == 0).collect();
        picked.truncate(if all { usize::MAX } else { 4 });
        for order in picked {
            let order = order.to_string();
            let out = run(dir, &[list, decision, "--user", user, &order]);
            let mut people = people.lock().unwrap();
            match out.status.code() {
                Some(0) => people.done += 1,
                Some(EXIT_REFUSED) => people.refused += 1,
                code => panic!("{user} {decision} {order}: exit {code:?}: {}", text(&out.stderr)),
            }
        }
    }
}

#[test]
fn orders_are_carried_out_once_whatever_is_killed_or_paused_beside_people() {
    let seed = std::env::var("STRESS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("stress seed: {seed} (STRESS_SEED={seed} replays it)");
    let mut chaos = Chaos(seed);

    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    std::fs::write(dir.join("provision.toml"), CONFIG).unwrap();
    import(dir, 0);
    // Compile the plugins once, so the first round's processes do not all compile them.
    let out = run(dir, &["plugins", "list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let people = Arc::new(Mutex::new(People::default()));
    let (mut kills, mut pauses, mut lost, mut takeovers) = (0, 0, 0, 0);
    for round in 0..ROUNDS {
        // People act all through the round, beside the workers.
        let stop = Arc::new(AtomicBool::new(false));
        let acting = {
            let (dir, stop, people) = (dir.to_path_buf(), stop.clone(), people.clone());
            let mut chaos = Chaos(seed ^ (round as u64 + 1) << 32);
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    act(&dir, &mut chaos, false, &people);
                }
            })
        };
        let mut workers: Vec<Worker> = (0..PROCESSES).map(|_| start(dir)).collect();
        if round == 2 {
            // The desired state changes while the runs go: superseded orders race with approvals.
            import(dir, 1);
        }
        // One process is killed and another paused past its lease, at random moments.
        // Two different processes: the same one drawn twice would leave the round unpaused.
        let first = chaos.below(PROCESSES as u64) as usize;
        let victims = [first, (first + 1 + chaos.below(PROCESSES as u64 - 1) as usize) % PROCESSES];
        // Both strike early in the round, while the processes still have work.
        std::thread::sleep(Duration::from_millis(50 + chaos.below(250)));
        let killed = &mut workers[victims[0]].child;
        if killed.try_wait().unwrap().is_none() {
            killed.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        std::thread::sleep(Duration::from_millis(chaos.below(150)));
        let paused = &mut workers[victims[1]].child;
        let mut was_paused = false;
        if victims[1] != victims[0] && paused.try_wait().unwrap().is_none() {
            signal(paused, libc::SIGSTOP);
            // A pause, not a wait for anything: the lease must lapse while it is stopped.
            std::thread::sleep(LEASE * 2);
            signal(paused, libc::SIGCONT);
            pauses += 1;
            was_paused = true;
        }
        for (i, mut worker) in workers.into_iter().enumerate() {
            let status = worker.child.wait().unwrap();
            worker.reader.join().unwrap();
            let lines = worker.lines.lock().unwrap();
            assert!(!lines.iter().any(|l| l.contains("panicked")), "process {i} panicked: {lines:#?}");
            takeovers += lines.iter().filter(|l| l.contains("took over unit")).count();
            lost += lines.iter().filter(|l| l.contains("lost the lease")).count();
            if i == victims[0] && status.code().is_none() {
                continue; // killed
            }
            assert!(
                matches!(status.code(), Some(0 | EXIT_JOB_PROBLEMS)),
                "round {round}, process {i} (paused: {}): {status}: {lines:#?}",
                was_paused && i == victims[1]
            );
        }
        stop.store(true, Ordering::SeqCst);
        acting.join().unwrap();
    }

    // Calm: whatever is left is finished, people decide on everything still waiting, and the
    // runs after that find nothing more to do.
    for _ in 0..2 {
        let out = run(dir, &["job", "run"]);
        assert!(matches!(out.status.code(), Some(0 | EXIT_JOB_PROBLEMS)), "{}", text(&out.stderr));
        act(dir, &mut chaos, true, &people);
    }
    let out = run(dir, &["job", "run", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let last: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(last["counters"]["orders_created"], 0, "the last run still had work: {last}");
    assert_eq!(last["counters"]["executed"], 0, "the last run still had work: {last}");
    let people = people.lock().unwrap();
    eprintln!(
        "stress: {kills} killed, {pauses} paused, {takeovers} units taken over, {lost} leases lost; people: {people:?}"
    );
    assert!(kills > 0 && pauses > 0, "the chaos never struck");
    assert!(people.done > 0, "nobody's action took effect");

    let db =
        rusqlite::Connection::open_with_flags(dir.join("provision.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let count = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(count("SELECT COUNT(*) FROM work_units WHERE state IN ('ready', 'claimed')"), 0, "units left open");
    assert_eq!(count("SELECT COUNT(*) FROM order_attempts WHERE finished_at IS NULL"), 0, "attempts left open");
    assert_eq!(count("SELECT COUNT(*) FROM job_runs WHERE status = 'running'"), 0, "runs left running");

    // Every history without gaps and within the machine.
    let mut stmt = db.prepare("SELECT order_id, from_state, to_state, event FROM order_history ORDER BY id").unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Option<u8>>(1)?, r.get::<_, u8>(2)?, r.get::<_, String>(3)?))
        })
        .unwrap()
        .map(Result::unwrap);
    let mut last_state: HashMap<i64, u8> = HashMap::new();
    let mut executed: HashMap<i64, usize> = HashMap::new();
    for (order, from, to, event) in rows {
        assert_eq!(from, last_state.get(&order).copied(), "order {order}: a gap before {event} to {to}");
        let state = |n: u8| ProvisioningState::from_number(n).unwrap();
        let event_of = Event::from_name(&event).unwrap_or_else(|| panic!("order {order}: unknown event {event}"));
        assert_eq!(
            machine::apply(from.map(state), event_of).ok(),
            Some(state(to)),
            "order {order}: {from:?} --{event}--> {to} is not a transition the machine allows"
        );
        if to == 8 {
            *executed.entry(order).or_default() += 1;
        }
        last_state.insert(order, to);
    }
    assert!(executed.values().all(|n| *n == 1), "an order executed twice: {executed:?}");

    // The managed system saw each order it carried out exactly once, and no other.
    let connector_orders: Vec<i64> = {
        let mut stmt = db.prepare("SELECT id FROM orders WHERE resource_type IN ('Account', 'Finance')").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    let mut journal: HashMap<i64, usize> = HashMap::new();
    for resource_type in ["Account", "Finance"] {
        let lines = std::fs::read_to_string(dir.join(format!("managed/{resource_type}.jsonl"))).unwrap();
        for line in lines.lines() {
            let line: Value = serde_json::from_str(line).unwrap();
            *journal.entry(line["order"].as_i64().unwrap()).or_default() += 1;
        }
    }
    for order in connector_orders {
        let expected = usize::from(executed.contains_key(&order));
        assert_eq!(journal.remove(&order).unwrap_or(0), expected, "order {order} in the managed system's journal");
    }
    assert!(journal.is_empty(), "journal lines for orders the host does not have: {journal:?}");
    // And everything desired is there: no order left waiting.
    let open: Vec<_> = last_state.iter().filter(|(_, s)| matches!(**s, 1 | 2 | 5 | 7)).collect();
    assert!(open.is_empty(), "orders left open: {open:?}");
}
