//! Several `provision serve` on one PostgreSQL (a real server the test starts), read from the
//! outside:
//! - three hosts share the complete job of 5 000 orders through the file connector, whose
//!   journal records every order the managed system carried out; one host is killed (SIGKILL)
//!   mid-run and another stopped (SIGSTOP) while it holds a unit, past its lease, then continued.
//!   Every order ends Verified, each is in the journal exactly once, every host did part of the
//!   work, and the paused host, woken, wrote nothing more for the unit it had lost (it says so,
//!   and its unit was done by another);
//! - the same order approved on two hosts at once is decided once: one answer 200, the other
//!   409, one approval in its history.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

mod common;
use common::postgres::{self, Postgres};
use common::server::Server;
use common::{run, text};

use provision::machine::{self, Event};
use provision::model::ProvisioningState;
use serde_json::{Value, json};

const ORDERS: usize = 5000;
/// The lease; the pause lasts past it.
const LEASE: Duration = Duration::from_secs(2);

const CONFIG: &str = r#"
[database]
url = "URL"

[runtime]
cache_dir = "cache"
workers = 2

[jobs]
lease = "2s"

[serve]
job_interval = "1s"

[entity_types.Directory_User]

[plugins.files]
file = "bundled:file-connector"
[plugins.files.config]
dir = "/data"
[[plugins.files.grants.dirs]]
host = "managed"
guest = "/data"
writable = true

# The file connector's journal takes one writer at a time: one batch in flight in the cluster.
[connections.saas]
plugin = "files"
batch_size = 10

[resource_types.Account]
entity_type = "Directory_User"
connection = "saas"
"#;

/// SQL on the deployment's database; its rows, one per line.
fn sql(url: &str, query: &str) -> String {
    postgres::server().sql(Postgres::database_of(url), query)
}

/// Waits for `what` to hold, looking again every 50 ms, up to `patience`.
fn until(patience: Duration, what: &str, mut holds: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !holds() {
        assert!(Instant::now() < deadline, "{what}: not within {patience:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pids of the hosts that finished units (a claim's owner is `hostname:pid:worker`).
fn working_pids(url: &str) -> BTreeSet<u32> {
    sql(url, "SELECT DISTINCT owner FROM work_units WHERE state = 'done' AND owner IS NOT NULL")
        .lines()
        .filter_map(|owner| owner.split(':').nth(1)?.parse().ok())
        .collect()
}

fn deployment(dir: &Path, url: &str) {
    std::fs::write(dir.join("provision.toml"), CONFIG.replace("URL", url)).unwrap();
    let mut data = String::new();
    for n in 0..ORDERS {
        data.push_str(&format!(
            "[[identities]]\nentity_type = \"Directory_User\"\nkey = \"u{n:04}\"\n\n\
             [[assignments]]\nidentity = \"u{n:04}\"\nresource_type = \"Account\"\nattributes = {{ userName = \"u{n:04}\" }}\n\n"
        ));
    }
    std::fs::write(dir.join("data.toml"), data).unwrap();
    for args in [&["import", "data.toml"][..], &["plugins", "list"]] {
        let out = run(dir, args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    }
}

#[test]
fn three_hosts_share_the_work_and_carry_out_each_order_once_whatever_dies() {
    let url = postgres::database();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    deployment(dir, &url);
    let config = dir.join("provision.toml");
    let mut hosts: Vec<Option<Server>> = (0..3).map(|_| Some(Server::start(dir, &config))).collect();
    let pids: Vec<u32> = hosts.iter().map(|h| h.as_ref().unwrap().pid()).collect();

    // Every host has done part of the run, and fulfilment is under way: strike.
    until(Duration::from_secs(120), "every host at work", || {
        working_pids(&url).len() == 3
            && sql(&url, "SELECT COUNT(*) FROM work_units WHERE kind = 'fulfil' AND state = 'ready'") != "0"
    });
    hosts[0].take().unwrap().kill();

    // Stop the second host while it holds a unit, past its lease, then let it go on.
    let paused = hosts[1].as_ref().unwrap();
    let held = format!(
        "SELECT id FROM work_units WHERE state = 'claimed' AND owner LIKE '%:{}:%' AND kind = 'fulfil'",
        pids[1]
    );
    let mut lost_unit = None;
    for _ in 0..5 {
        until(Duration::from_secs(60), "the second host holding a fulfil unit", || !sql(&url, &held).is_empty());
        paused.signal(libc::SIGSTOP);
        let unit = sql(&url, &held);
        // A pause, not a wait for anything: its lease must lapse while it is stopped.
        std::thread::sleep(LEASE * 2);
        paused.signal(libc::SIGCONT);
        if let Some(unit) = unit.lines().next() {
            lost_unit = Some(unit.to_string());
            break;
        }
    }
    let lost_unit = lost_unit.expect("the second host never held a unit when stopped");

    until(Duration::from_secs(300), "every order Verified", || {
        sql(&url, "SELECT COUNT(*) FROM orders WHERE state = 4") == ORDERS.to_string()
    });
    until(Duration::from_secs(60), "the paused host noticing its lost lease", || {
        paused.logged(&format!("lost the lease on unit {lost_unit} "))
    });
    let paused_log = paused.log.lock().unwrap().clone();
    for host in hosts.into_iter().flatten() {
        let log = host.log.lock().unwrap().clone();
        assert!(!log.iter().any(|l| l.contains("panicked")), "{log:#?}");
        assert_eq!(host.terminate(), Some(0));
    }

    // Each host did part of the work; the lost unit was finished by another host.
    let workers = working_pids(&url);
    assert_eq!(workers, pids.iter().copied().collect(), "hosts that finished units");
    // Its lost unit was claimed again (under a new fence) and done.
    let (state, claims) = (
        sql(&url, &format!("SELECT state FROM work_units WHERE id = {lost_unit}")),
        sql(&url, &format!("SELECT claims FROM work_units WHERE id = {lost_unit}")),
    );
    assert_eq!(state, "done");
    assert!(claims.parse::<u32>().unwrap() >= 2, "the lost unit was not taken over: {claims} claims");
    assert!(paused_log.iter().any(|l| l.contains("nothing more was written")), "{paused_log:#?}");

    // Every history without gaps, within the machine, with one execution per order.
    let mut last: HashMap<i64, Option<u8>> = HashMap::new();
    let mut executed: HashMap<i64, usize> = HashMap::new();
    for row in
        sql(&url, "SELECT order_id, coalesce(from_state, -1), to_state, event FROM order_history ORDER BY id").lines()
    {
        let fields: Vec<&str> = row.split('|').collect();
        let (order, from, to, event) = (
            fields[0].parse::<i64>().unwrap(),
            fields[1].parse::<i16>().unwrap(),
            fields[2].parse::<u8>().unwrap(),
            fields[3],
        );
        let from = u8::try_from(from).ok();
        assert_eq!(from, last.get(&order).copied().flatten(), "order {order}: a gap before {event}");
        let state = |n: u8| ProvisioningState::from_number(n).unwrap();
        let allowed = machine::apply(from.map(state), Event::from_name(event).unwrap()).ok();
        assert_eq!(allowed, Some(state(to)), "order {order}: {from:?} --{event}--> {to}");
        if to == 8 {
            *executed.entry(order).or_default() += 1;
        }
        last.insert(order, Some(to));
    }
    assert_eq!(executed.len(), ORDERS);
    assert!(executed.values().all(|n| *n == 1), "an order executed twice");

    // The managed system carried out each order exactly once.
    let mut journal: HashMap<i64, usize> = HashMap::new();
    for line in std::fs::read_to_string(dir.join("managed/Account.jsonl")).unwrap().lines() {
        let line: Value = serde_json::from_str(line).unwrap();
        *journal.entry(line["order"].as_i64().unwrap()).or_default() += 1;
    }
    assert_eq!(journal.len(), ORDERS, "orders in the journal");
    assert!(journal.values().all(|n| *n == 1), "an order carried out twice at the managed system");
    assert_eq!(sql(&url, "SELECT COUNT(*) FROM order_attempts WHERE finished_at IS NULL"), "0", "attempts left open");
}

#[test]
fn the_same_order_approved_on_two_hosts_at_once_is_decided_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = postgres::database();
    let out = run(dir.path(), &["demo", "--dir", "demo", "--database-url", &url]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config = dir.path().join("demo/provision.toml");
    let token = run(dir.path(), &["tokens", "create", "--user", "rita", "--config", config.to_str().unwrap()]);
    assert!(token.status.success(), "{}", text(&token.stderr));
    let token = text(&token.stdout).trim().to_string();
    let (a, b) = (Server::start(dir.path(), &config), Server::start(dir.path(), &config));
    // The first order on rita's work list.
    let (status, _, list) = a.call("GET", "/api/v1/reviews", &token, None);
    assert_eq!(status, 200, "{list}");
    let order = list["reviews"][0]["order"]["id"].as_i64().unwrap_or_else(|| panic!("nothing to review: {list}"));

    let barrier = std::sync::Barrier::new(2);
    let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let calls: Vec<_> = [&a, &b]
            .into_iter()
            .map(|host| {
                let (barrier, token) = (&barrier, &token);
                scope.spawn(move || {
                    barrier.wait();
                    let (status, _, body) =
                        host.call("POST", "/api/v1/reviews/approve", token, Some(json!({ "orders": [order] })));
                    (status, body)
                })
            })
            .collect();
        calls.into_iter().map(|call| call.join().unwrap()).collect()
    });
    let mut statuses: Vec<u16> = answers.iter().map(|(status, _)| *status).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{answers:#?}");
    let refused = &answers.iter().find(|(status, _)| *status == 409).unwrap().1;
    assert_eq!(refused["error"]["code"], "conflict", "{refused}");
    assert_eq!(
        sql(&url, &format!("SELECT COUNT(*) FROM order_history WHERE order_id = {order} AND event = 'approve'")),
        "1"
    );
    assert_eq!(a.terminate(), Some(0));
    assert_eq!(b.terminate(), Some(0));
}
