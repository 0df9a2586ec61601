//! The kill -9 test: `provision job run` on 10 000 orders with the file connector, killed
//! (SIGKILL) in the middle of fulfilment, then run again. Every order must end Verified having
//! been carried out exactly once, and the managed system's journal must hold exactly one write
//! per order: nothing lost, nothing doubled.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

mod common;
use std::time::Instant;

const ORDERS: usize = 10_000;

const CONFIG: &str = r#"
[runtime]
cache_dir = "cache"

[entity_types.Directory_User]
notifications = false

[plugins.files]
file = "bundled:file-connector"
[plugins.files.config]
dir = "/data"
page-size = 2000
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

# The killed worker's units are taken over 2 s after its last lease renewal (see work_units.rs).
[jobs]
lease = "2s"
"#;

fn provision(dir: &Path, args: &[&str]) -> Command {
    common::command(dir, args)
}

fn json(dir: &Path, args: &[&str]) -> serde_json::Value {
    let out = provision(dir, args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_killed_run_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    std::fs::write(dir.join("provision.toml"), CONFIG).unwrap();
    let mut data = String::new();
    for n in 0..ORDERS {
        data.push_str(&format!(
            "[[identities]]\nentity_type = \"Directory_User\"\nkey = \"u{n:05}\"\n\n[[assignments]]\nidentity = \"u{n:05}\"\nresource_type = \"Account\"\nattributes = {{ userName = \"u{n:05}\" }}\nentitlements = [\"Users\"]\n\n"
        ));
    }
    std::fs::write(dir.join("data.toml"), data).unwrap();
    let out = provision(dir, &["import", "data.toml"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Run, and kill it as it sends its fourth batch: attempts recorded, the connector at work.
    let started = Instant::now();
    let mut child = provision(dir, &["job", "run", "--log-level", "info"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut batches = 0;
    for line in stderr.lines() {
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
    let killed_after = started.elapsed();
    let lines_at_kill = std::fs::read_to_string(dir.join("managed/Account.jsonl")).map_or(0, |j| j.lines().count());

    let states = |dir: &Path| -> HashMap<u64, usize> {
        let mut counts = HashMap::new();
        for order in json(dir, &["orders", "list", "--json"]).as_array().unwrap() {
            *counts.entry(order["state"]["number"].as_u64().unwrap()).or_default() += 1;
        }
        counts
    };
    let at_kill = states(dir);
    let done_at_kill = at_kill.get(&8).copied().unwrap_or(0) + at_kill.get(&4).copied().unwrap_or(0);
    assert!(done_at_kill < ORDERS, "the kill came after fulfilment: {at_kill:?}");
    assert_eq!(at_kill.values().sum::<usize>(), ORDERS, "compute had not finished: {at_kill:?}");

    // Run again, to the end: it joins the killed run and takes its units over once their lease
    // has lapsed.
    let again = Instant::now();
    let out = provision(dir, &["job", "run", "--wait", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rerun = again.elapsed();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["run"], 1, "the second run did not join the killed one: {report}");
    assert_eq!(
        report["counters"]["orders_created"], ORDERS as u64,
        "orders created (once, by the killed run): {report}"
    );

    // Every order Verified, carried out exactly once.
    let orders = json(dir, &["orders", "list", "--json"]);
    let orders = orders.as_array().unwrap();
    assert_eq!(orders.len(), ORDERS);
    for order in orders {
        assert_eq!(order["state"]["number"], 4, "{order}");
    }
    let db =
        rusqlite::Connection::open_with_flags(dir.join("provision.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let executed: Vec<(i64, i64)> = db
        .prepare("SELECT o.id, (SELECT COUNT(*) FROM order_history h WHERE h.order_id = o.id AND h.event = 'connector-ok') FROM orders o")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let not_once: Vec<&(i64, i64)> = executed.iter().filter(|(_, oks)| *oks != 1).collect();
    assert!(not_once.is_empty(), "orders not executed exactly once (id, times): {not_once:?}");
    let interrupted: i64 =
        db.query_row("SELECT COUNT(*) FROM order_attempts WHERE outcome = 'interrupted'", [], |r| r.get(0)).unwrap();
    assert_eq!(interrupted, 100, "the fourth batch's attempts should have been cut short");
    assert_eq!(report["counters"]["resumed"], 100);
    // Outcomes are written while the connector works on the next batch: the orders it wrote
    // whose outcome the kill lost are found carried out, not sent again nor dropped.
    assert_eq!(
        report["counters"]["recovered"].as_u64(),
        Some((lines_at_kill - done_at_kill) as u64),
        "orders written before the kill without a recorded outcome: {report}"
    );

    // The managed system: one complete line per order, no more, no less.
    let journal = std::fs::read_to_string(dir.join("managed/Account.jsonl")).unwrap();
    assert!(journal.ends_with('\n'), "a torn line was left behind");
    let mut writes: HashMap<u64, usize> = HashMap::new();
    for line in journal.lines() {
        let line: serde_json::Value = serde_json::from_str(line).unwrap();
        *writes.entry(line["order"].as_u64().unwrap()).or_default() += 1;
    }
    let duplicates = writes.values().filter(|n| **n > 1).count();
    // Lost: an order of ours with no line; stray: a line for no order of ours.
    let ids: std::collections::HashSet<u64> = orders.iter().map(|o| o["id"].as_u64().unwrap()).collect();
    let lost = ids.iter().filter(|id| !writes.contains_key(id)).count();
    let stray = writes.keys().filter(|id| !ids.contains(id)).count();
    eprintln!(
        "kill -9: {ORDERS} orders; killed after {killed_after:?} with {done_at_kill} done ({at_kill:?}) and {lines_at_kill} \
         journal lines; \
         rerun {rerun:?} ({interrupted} attempts found interrupted, {} resumed, {} found carried out); \
         {} writes found for {} orders, {duplicates} duplicated, {lost} lost, {stray} stray",
        report["counters"]["resumed"],
        report["counters"]["recovered"],
        journal.lines().count(),
        writes.len()
    );
    assert_eq!((writes.len(), duplicates, lost, stray, journal.lines().count()), (ORDERS, 0, 0, 0, ORDERS));
}
