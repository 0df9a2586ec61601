use super::*;
use crate::machine::Event;
use crate::model::{Change, ChangeKind, ProvisioningState, ResourceContent};

fn store_with_identity() -> Store {
    with_identity(Store::open_in_memory().unwrap())
}

fn with_identity(mut store: Store) -> Store {
    store.conn.execute("INSERT INTO entity_types VALUES ('Directory_User', 'Directory user')", []).unwrap();
    store
        .conn
        .execute("INSERT INTO resource_types VALUES ('SaaS_Account', 'Directory_User', 'saas', 'basic', NULL)", [])
        .unwrap();
    store
        .upsert_identities(&[Identity {
            entity_type: "Directory_User".into(),
            key: "alice".into(),
            display_name: "Alice".into(),
            attributes: Default::default(),
        }])
        .unwrap();
    store
}

fn new_order(store: &mut Store, event: Event) -> i64 {
    let id = store.allocate_order_ids(1).unwrap();
    let content =
        ResourceContent { attributes: [("userName".into(), "alice".into())].into(), entitlements: Default::default() };
    let change = Change::between(None, Some(&content)).unwrap();
    let order = NewOrder {
        id,
        identity_id: 1,
        resource_type: "SaaS_Account".into(),
        resource_id: None,
        change,
        valid_until: None,
        event,
        held_run: None,
        reason: "test".into(),
        actor: "test".into(),
    };
    store.create_orders(&[order], None).unwrap();
    id
}

#[test]
fn history_is_append_only_and_orders_are_never_deleted() {
    let mut store = store_with_identity();
    let id = new_order(&mut store, Event::NoReviewNeeded);
    let update = store.conn.execute("UPDATE order_history SET reason = 'rewritten'", []);
    assert!(update.unwrap_err().to_string().contains("order history is append-only"));
    let delete = store.conn.execute("DELETE FROM order_history", []);
    assert!(delete.unwrap_err().to_string().contains("order history is append-only"));
    let delete = store.conn.execute("DELETE FROM orders WHERE id = ?1", [id]);
    assert!(delete.unwrap_err().to_string().contains("orders are never deleted"));
    assert_eq!(store.history(id).unwrap().len(), 1);
}

#[test]
fn a_batch_applies_what_the_machine_allows_and_reports_the_rest() {
    let mut store = store_with_identity();
    let pending = new_order(&mut store, Event::NoReviewNeeded);
    let waiting = new_order(&mut store, Event::ReviewNeeded);
    store.start_attempts(&[pending], "saas", None, None).unwrap();
    let results = store
        .apply(
            &[
                Transition::new(pending, Event::ConnectorOk, "written"),
                Transition::new(waiting, Event::ConnectorOk, "written"),
                Transition::new(999, Event::Approve, "no such order"),
            ],
            "test",
        )
        .unwrap();
    assert_eq!(*results[0].as_ref().unwrap(), ProvisioningState::Executed);
    assert!(matches!(results[1], Err(StoreError::Refused { order, .. }) if order == waiting));
    assert!(matches!(results[2], Err(StoreError::NoSuchOrder(999))));
    assert_eq!(store.order(waiting).unwrap().state, ProvisioningState::AwaitingApproval);
    assert_eq!(store.history(waiting).unwrap().len(), 1, "a refused transition wrote history");
    let pending_order = store.order(pending).unwrap();
    assert_eq!(pending_order.attempts, 1);
    let attempts = store.attempts(pending).unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome.as_deref(), Some("connector-ok"), "the outcome closes the attempt");
    assert!(store.close_orphaned_attempts("saas").unwrap().is_empty());
    assert_eq!(pending_order.change.kind, ChangeKind::Added);
    let history = store.history(pending).unwrap();
    assert_eq!(
        history.iter().map(|h| (h.from, h.to)).collect::<Vec<_>>(),
        [(None, ProvisioningState::Pending), (Some(ProvisioningState::Pending), ProvisioningState::Executed)]
    );
}

#[test]
fn closing_events_record_why() {
    let mut store = store_with_identity();
    let id = new_order(&mut store, Event::ReviewNeeded);
    store.apply(&[Transition::new(id, Event::Decline, "not needed")], "user:bob").unwrap();
    let order = store.order(id).unwrap();
    assert_eq!((order.state, order.closed.as_deref()), (ProvisioningState::None, Some("declined")));
    let blocked = new_order(&mut store, Event::RuleBlocks);
    assert_eq!(store.order(blocked).unwrap().closed.as_deref(), Some("blocked"));
}

#[test]
fn an_attempt_without_an_outcome_is_found_after_a_crash() {
    let mut store = store_with_identity();
    let id = new_order(&mut store, Event::NoReviewNeeded);
    store.start_attempts(&[id], "saas", None, None).unwrap();
    // The process dies here; the next run finds the open attempt.
    assert_eq!(store.close_orphaned_attempts("saas").unwrap(), [id]);
    assert_eq!(store.attempts(id).unwrap()[0].outcome.as_deref(), Some("interrupted"));
    assert_eq!(store.order(id).unwrap().state, ProvisioningState::Pending, "the order is still there to send");
    assert!(store.close_orphaned_attempts("saas").unwrap().is_empty());
}

#[test]
fn an_operator_retry_starts_a_fresh_retry_budget() {
    let mut store = store_with_identity();
    let id = new_order(&mut store, Event::NoReviewNeeded);
    store.start_attempts(&[id], "saas", None, None).unwrap();
    let failed = Transition { retry_at: Some(42), ..Transition::new(id, Event::ConnectorError, "transient") };
    store.apply(&[failed], "plugin:x").unwrap();
    let order = store.order(id).unwrap();
    assert_eq!((order.attempts, order.next_attempt_at), (1, Some(42)));
    store.apply(&[Transition::new(id, Event::Retry, "operator")], "user:op").unwrap();
    let order = store.order(id).unwrap();
    assert_eq!((order.state, order.attempts, order.next_attempt_at), (ProvisioningState::Pending, 0, None));
}

#[test]
fn order_ids_are_reserved_without_overlap() {
    let mut store = store_with_identity();
    let a = store.allocate_order_ids(10).unwrap();
    let b = store.allocate_order_ids(1).unwrap();
    assert_eq!(b, a + 10);
}

#[test]
fn a_reader_sees_committed_orders_and_cannot_write() {
    assert!(Store::open_in_memory().unwrap().reader().unwrap().is_none(), "an in-memory database has no file to share");
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("provision.db")).unwrap();
    store.conn.execute("INSERT INTO entity_types VALUES ('Directory_User', 'Directory user')", []).unwrap();
    let reader = store.reader().unwrap().expect("a file database has a reader");
    assert_eq!(reader.installation(), store.installation());
    let count = |s: &Store| s.conn.query_row("SELECT COUNT(*) FROM entity_types", [], |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!(count(&reader), 1);
    store.conn.execute("INSERT INTO entity_types VALUES ('Contractor', 'Contractor')", []).unwrap();
    assert_eq!(count(&reader), 2, "each read sees what was committed before it");
    let write = reader.conn.execute("INSERT INTO entity_types VALUES ('X', 'X')", []);
    assert!(write.unwrap_err().to_string().contains("readonly"));
}

const LEASE: i64 = 30_000;

fn one_connection(_: &str) -> usize {
    1
}

fn claimed(store: &mut Store, run: i64, owner: &str) -> Unit {
    match store.claim_unit(run, owner, LEASE, &one_connection).unwrap() {
        Claim::Unit(unit) => *unit,
        other => panic!("nothing claimed: {other:?}"),
    }
}

fn fulfil_units(n: usize) -> Vec<UnitSpec> {
    (0..n).map(|_| UnitSpec::new(UnitKind::Fulfil, "saas")).collect()
}

#[test]
fn one_run_at_a_time_joined_by_its_kind_refused_to_another() {
    let mut store = store_with_identity();
    let Started::New(run) = store.start_run("complete", &["fulfil"], &[]).unwrap() else { panic!("no run yet") };
    assert_eq!(store.start_run("complete", &["fulfil"], &[]).unwrap(), Started::Joined(run));
    match store.start_run("compute", &["compute"], &[]).unwrap() {
        Started::Busy(running) => assert_eq!((running.run, running.kind.as_str()), (run, "complete")),
        other => panic!("a second kind started beside the first: {other:?}"),
    }
    assert_eq!(store.job_runs(10).unwrap().len(), 1, "a refused or joining start records no run");
}

#[test]
fn a_claim_is_exclusive_until_its_lease_lapses_and_then_fenced_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("provision.db");
    let mut mine = Store::open(&path).unwrap();
    let mut theirs = Store::open(&path).unwrap();
    // Both read one clock that moves only when told: the lease lapses without sleeping.
    let clock = std::sync::Arc::new(crate::model::ManualClock::at(1_000_000));
    mine.set_clock(clock.clone());
    theirs.set_clock(clock.clone());
    let (a_renews, b_renews) = (mine.renewer().unwrap().unwrap(), theirs.renewer().unwrap().unwrap());
    let Started::New(run) = mine.start_run("fulfil", &["fulfil"], &fulfil_units(1)).unwrap() else { panic!() };
    let unit = claimed(&mut mine, run, "a");
    assert!(!unit.taken_over);
    assert_eq!(theirs.claim_unit(run, "b", LEASE, &one_connection).unwrap(), Claim::Wait, "the unit is a's");
    mine.set_fence(Some(unit.fence));
    mine.upsert_identities(&[]).unwrap();

    // Renewed just before it lapses, the lease runs a full term from then.
    clock.advance(LEASE - 1);
    assert!(a_renews.renew(unit.fence, LEASE).unwrap());
    clock.advance(LEASE - 1);
    assert_eq!(theirs.claim_unit(run, "b", LEASE, &one_connection).unwrap(), Claim::Wait, "renewed, still a's");
    // a stops (paused, killed) past its lease: b takes the unit over with a new token.
    clock.advance(1);
    assert!(!a_renews.renew(unit.fence, LEASE).unwrap(), "a lapsed lease is not revived");
    let taken = claimed(&mut theirs, run, "b");
    assert!(taken.taken_over);
    assert!(taken.fence.token > unit.fence.token);
    let written = mine.upsert_identities(&[]);
    assert!(matches!(written, Err(StoreError::LeaseLost)), "{written:?}");
    assert!(matches!(mine.finish_unit(&unit, &0, &[], &[], &[]), Err(StoreError::LeaseLost)));
    assert!(b_renews.renew(taken.fence, LEASE).unwrap(), "b's lease renews");
    theirs.set_fence(Some(taken.fence));
    theirs.finish_unit(&taken, &serde_json::json!({ "executed": 1 }), &["p".into()], &[], &[]).unwrap();
    assert!(matches!(theirs.claim_unit(run, "b", LEASE, &one_connection).unwrap(), Claim::PhaseDone { phase: 0, .. }));
    let results = theirs.unit_results(run).unwrap();
    assert_eq!((results.counters.len(), results.problems), (1, vec!["p".to_string()]));
}

#[test]
fn a_connections_batches_in_flight_never_exceed_its_concurrency() {
    let mut store = store_with_identity();
    let Started::New(run) = store.start_run("fulfil", &["fulfil"], &fulfil_units(3)).unwrap() else { panic!() };
    let two = |_: &str| 2;
    let first = match store.claim_unit(run, "a", LEASE, &two).unwrap() {
        Claim::Unit(unit) => unit,
        other => panic!("{other:?}"),
    };
    assert!(matches!(store.claim_unit(run, "b", LEASE, &two).unwrap(), Claim::Unit(_)));
    assert_eq!(store.claim_unit(run, "c", LEASE, &two).unwrap(), Claim::Wait, "two batches are in flight");
    // The first call returned: its outcomes are written while the third batch goes out.
    store.set_fence(Some(first.fence));
    store.end_calling(first.fence).unwrap();
    store.set_fence(None);
    assert!(matches!(store.claim_unit(run, "c", LEASE, &two).unwrap(), Claim::Unit(_)));
}

#[test]
fn a_unit_that_keeps_failing_is_given_up_and_the_phase_moves_on() {
    let mut store = store_with_identity();
    let Started::New(run) = store.start_run("fulfil", &["fulfil"], &fulfil_units(1)).unwrap() else { panic!() };
    for _ in 0..MAX_CLAIMS {
        let unit = claimed(&mut store, run, "a");
        store.release_unit(unit.fence).unwrap();
    }
    assert!(matches!(store.claim_unit(run, "a", LEASE, &one_connection).unwrap(), Claim::PhaseDone { .. }));
    let results = store.unit_results(run).unwrap();
    assert_eq!(results.given_up, 1);
    assert!(results.problems[0].contains("given up after 5 attempts"), "{:?}", results.problems);
}

#[test]
fn recovery_leaves_a_live_workers_attempts_alone() {
    let mut store = store_with_identity();
    let (dead, live) = (new_order(&mut store, Event::NoReviewNeeded), new_order(&mut store, Event::NoReviewNeeded));
    let Started::New(run) = store.start_run("fulfil", &["fulfil"], &fulfil_units(2)).unwrap() else { panic!() };
    let mut two = |owner: &str| match store.claim_unit(run, owner, LEASE, &|_| 2).unwrap() {
        Claim::Unit(unit) => *unit,
        other => panic!("{other:?}"),
    };
    let (a, b) = (two("a"), two("b"));
    store.start_attempts(&[dead], "saas", Some(run), Some(a.id)).unwrap();
    store.start_attempts(&[live], "saas", Some(run), Some(b.id)).unwrap();
    // a's worker dies: its lease lapses.
    store.conn.execute("UPDATE work_units SET expires_at = 0 WHERE id = ?1", [a.id]).unwrap();
    assert_eq!(store.close_orphaned_attempts("saas").unwrap(), [dead], "only the dead worker's attempt is a crash");
    assert_eq!(store.attempts(live).unwrap()[0].outcome, None, "the live worker's attempt is still open");
}

/// What the test of waiting writes sees, in order.
enum Seen {
    /// The store's write found the database locked and waits (its busy handler was called).
    Waiting,
    /// The store's write ended.
    Done(Result<Vec<Result<ProvisioningState>>>),
}

static WAITING: std::sync::Mutex<Option<std::sync::mpsc::Sender<Seen>>> = std::sync::Mutex::new(None);

fn busy(_: i32) -> bool {
    if let Some(seen) = WAITING.lock().unwrap_or_else(|e| e.into_inner()).take() {
        let _ = seen.send(Seen::Waiting);
    }
    std::thread::sleep(std::time::Duration::from_millis(2));
    true
}

/// A write transaction that reads before it writes (a transition reads the order's state)
/// waits while another connection writes, then succeeds: write transactions begin IMMEDIATE.
/// A DEFERRED one would read first, then fail at once with SQLITE_BUSY when it tries to write
/// (SQLite does not wait to upgrade a read transaction): a person's action beside a job.
#[test]
fn a_write_waits_for_another_connections_write_instead_of_failing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("provision.db");
    let mut store = with_identity(Store::open(&path).unwrap());
    let waiting = new_order(&mut store, Event::ReviewNeeded);
    store.conn.busy_handler(Some(busy)).unwrap();
    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE; UPDATE sequences SET next = next + 1 WHERE name = 'orders';").unwrap();

    let (seen, events) = std::sync::mpsc::channel();
    *WAITING.lock().unwrap() = Some(seen.clone());
    let writer = std::thread::spawn(move || {
        let result = store.apply(&[Transition::new(waiting, Event::Approve, "approved")], "rita");
        let _ = seen.send(Seen::Done(result));
        store
    });
    let patience = std::time::Duration::from_secs(60);
    match events.recv_timeout(patience).expect("the write neither waited nor ended") {
        Seen::Waiting => {}
        Seen::Done(result) => panic!("the write did not wait for the other connection: {result:?}"),
    }
    other.execute_batch("COMMIT").unwrap();
    match events.recv_timeout(patience).expect("the write did not end") {
        Seen::Done(result) => assert_eq!(*result.unwrap()[0].as_ref().unwrap(), ProvisioningState::Pending),
        Seen::Waiting => unreachable!("told once"),
    }
    let store = writer.join().unwrap();
    assert_eq!(store.order(waiting).unwrap().state, ProvisioningState::Pending);
}

#[test]
fn errors_have_kinds_callers_match_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("provision.db");
    let mut store = with_identity(Store::open(&path).unwrap());
    assert_eq!(store.job_run(999).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(store.order(999).unwrap_err().kind(), ErrorKind::NotFound);
    let unknown_type = Identity {
        entity_type: "Robot".into(),
        key: "r2".into(),
        display_name: "R2".into(),
        attributes: Default::default(),
    };
    assert_eq!(store.upsert_identities(&[unknown_type]).unwrap_err().kind(), ErrorKind::Refused);
    // Another connection holds the writer lock and this one will not wait: unavailable, so a
    // caller may try again (an API answers 503), not an internal error.
    store.conn.busy_timeout(std::time::Duration::ZERO).unwrap();
    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE;").unwrap();
    let busy = store.allocate_order_ids(1).unwrap_err();
    assert_eq!(busy.kind(), ErrorKind::Unavailable, "{busy}");
    other.execute_batch("ROLLBACK;").unwrap();
    assert!(store.allocate_order_ids(1).is_ok());
}
