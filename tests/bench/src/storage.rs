//! The storage ceiling: how many orders per second SQLite takes when each gets a state change
//! and its history row, written in batches of one transaction with prepared statements, on the
//! product's schema and pragmas (the host's `Store` creates the database), without the host.
//! No job can write orders faster than this.

use std::time::Instant;

use rusqlite::{Connection, params};

use crate::report::{Samples, header};

/// Orders per run.
pub const ORDERS: usize = 200_000;
/// Orders per transaction, as the jobs batch them.
const BATCH: usize = 500;
const RUNS: usize = 5;

/// A database with `n` Pending orders, made by the product's own `Store` (schema, pragmas).
fn database(dir: &std::path::Path, n: usize) -> Connection {
    let path = dir.join("ceiling.db");
    drop(provision::store::Store::open(&path).expect("create the schema"));
    let mut conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    conn.pragma_update(None, "foreign_keys", true).unwrap();
    let tx = conn.transaction().unwrap();
    tx.execute_batch(
        "INSERT INTO entity_types VALUES ('Directory_User', 'Directory user');
         INSERT INTO resource_types VALUES ('Account', 'Directory_User', 'files', 'basic', NULL);",
    )
    .unwrap();
    {
        let mut identity = tx
            .prepare("INSERT INTO identities (id, entity_type, key, display_name, attributes) VALUES (?1, 'Directory_User', ?2, ?2, '{}')")
            .unwrap();
        let mut order = tx
            .prepare(
                "INSERT INTO orders (id, identity_id, resource_type, change_kind, change, fingerprint, state, created_at, updated_at)
                 VALUES (?1, ?1, 'Account', 0, '{\"kind\":\"added\"}', 'f', 1, 0, 0)",
            )
            .unwrap();
        for id in 1..=n as i64 {
            identity.execute(params![id, format!("u{id}")]).unwrap();
            order.execute(params![id]).unwrap();
        }
    }
    tx.commit().unwrap();
    conn
}

/// Moves every order Pending → Executed with its history row; orders per second.
fn one_run(conn: &mut Connection, n: usize) -> f64 {
    let started = Instant::now();
    for first in (1..=n as i64).step_by(BATCH) {
        let tx = conn.transaction().unwrap();
        {
            let mut update = tx
                .prepare_cached(
                    "UPDATE orders SET state = ?2, message = ?3, attempts = attempts + 1, updated_at = ?4 WHERE id = ?1",
                )
                .unwrap();
            let mut history = tx
                .prepare_cached(
                    "INSERT INTO order_history (order_id, at, from_state, to_state, event, actor, reason)
                     VALUES (?1, ?2, 1, 8, 'executed', 'plugin:files', ?3)",
                )
                .unwrap();
            let now = 1_795_000_000_000i64;
            for id in first..(first + BATCH as i64).min(n as i64 + 1) {
                update.execute(params![id, 8, "the connector carried it out", now]).unwrap();
                history.execute(params![id, now, "the connector carried it out"]).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// The ceiling, orders per second (median of the runs).
pub fn ceiling() -> Samples {
    let samples = (0..RUNS)
        .map(|_| {
            let dir = tempfile::tempdir().unwrap();
            let mut conn = database(dir.path(), ORDERS);
            one_run(&mut conn, ORDERS)
        })
        .collect();
    Samples::new(samples)
}

/// Prints the ceiling and returns it, for the ratios of other benchmarks.
pub fn run() -> Samples {
    header(&format!("Storage ceiling: state change + history row, {ORDERS} orders, batches of {BATCH}"));
    let ceiling = ceiling();
    println!("{}", ceiling.row("orders per second", "/s"));
    ceiling
}
