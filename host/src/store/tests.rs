//! The store's conformance tests: each `on_both!` test runs on SQLite and on PostgreSQL (a real
//! server, started by the tests: see `tests/src/postgres.rs`), and must pass the same on both.

use super::*;
use crate::machine::Event;
use crate::model::{Change, ChangeKind, ProvisioningState, ResourceContent};

#[allow(dead_code, missing_docs)]
#[path = "../../../tests/src/postgres.rs"]
mod server;

/// A database to test on, and connections to it.
struct TestDb {
    location: Location,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        TestDb { location: Location::Sqlite(dir.path().join("provision.db")), _dir: Some(dir) }
    }

    fn postgres() -> TestDb {
        let url = server::database();
        TestDb { location: Location::Postgres(Box::new(url.parse().unwrap())), _dir: None }
    }

    /// A connection (the first creates the schema).
    fn open(&self) -> Store {
        Store::open_at(&self.location).unwrap()
    }

    /// A connection with the test identity alice (the first time).
    fn with_identity(&self) -> Store {
        with_identity(self.open())
    }
}

/// A test that runs on both backends: `name::sqlite` and `name::postgres`.
macro_rules! on_both {
    ($(#[doc = $doc:literal])* fn $name:ident($db:ident: &TestDb) $body:block) => {
        $(#[doc = $doc])*
        mod $name {
            use super::*;

            fn run($db: &TestDb) $body

            #[test]
            fn sqlite() {
                run(&TestDb::sqlite())
            }

            #[test]
            fn postgres() {
                run(&TestDb::postgres())
            }
        }
    };
}

fn with_identity(mut store: Store) -> Store {
    store.conn.execute("INSERT INTO entity_types VALUES ('Directory_User', 'Directory user')", ()).unwrap();
    store
        .conn
        .execute("INSERT INTO resource_types VALUES ('SaaS_Account', 'Directory_User', 'saas', 'basic', NULL)", ())
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

on_both! {
fn history_is_append_only_and_orders_are_never_deleted(db: &TestDb) {
    let mut store = db.with_identity();
    let id = new_order(&mut store, Event::NoReviewNeeded);
    let update = store.conn.execute("UPDATE order_history SET reason = 'rewritten'", ());
    assert!(update.unwrap_err().to_string().contains("order history is append-only"));
    let delete = store.conn.execute("DELETE FROM order_history", ());
    assert!(delete.unwrap_err().to_string().contains("order history is append-only"));
    let delete = store.conn.execute("DELETE FROM orders WHERE id = ?1", [id]);
    assert!(delete.unwrap_err().to_string().contains("orders are never deleted"));
    if db.location.is_postgres() {
        let truncate = store.conn.execute("TRUNCATE order_history", ());
        assert!(truncate.unwrap_err().to_string().contains("order history is append-only"));
        let truncate = store.conn.execute("TRUNCATE orders CASCADE", ());
        assert!(truncate.unwrap_err().to_string().contains("never deleted"));
    }
    assert_eq!(store.history(id).unwrap().len(), 1);
}
}

on_both! {
fn a_batch_applies_what_the_machine_allows_and_reports_the_rest(db: &TestDb) {
    let mut store = db.with_identity();
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
}

on_both! {
fn closing_events_record_why(db: &TestDb) {
    let mut store = db.with_identity();
    let id = new_order(&mut store, Event::ReviewNeeded);
    store.apply(&[Transition::new(id, Event::Decline, "not needed")], "user:bob").unwrap();
    let order = store.order(id).unwrap();
    assert_eq!((order.state, order.closed.as_deref()), (ProvisioningState::None, Some("declined")));
    let blocked = new_order(&mut store, Event::RuleBlocks);
    assert_eq!(store.order(blocked).unwrap().closed.as_deref(), Some("blocked"));
}
}

on_both! {
fn an_attempt_without_an_outcome_is_found_after_a_crash(db: &TestDb) {
    let mut store = db.with_identity();
    let id = new_order(&mut store, Event::NoReviewNeeded);
    store.start_attempts(&[id], "saas", None, None).unwrap();
    // The process dies here; the next run finds the open attempt.
    assert_eq!(store.close_orphaned_attempts("saas").unwrap(), [id]);
    assert_eq!(store.attempts(id).unwrap()[0].outcome.as_deref(), Some("interrupted"));
    assert_eq!(store.order(id).unwrap().state, ProvisioningState::Pending, "the order is still there to send");
    assert!(store.close_orphaned_attempts("saas").unwrap().is_empty());
}
}

on_both! {
fn an_operator_retry_starts_a_fresh_retry_budget(db: &TestDb) {
    let mut store = db.with_identity();
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
}

on_both! {
fn order_ids_are_reserved_without_overlap(db: &TestDb) {
    let mut store = db.with_identity();
    let a = store.allocate_order_ids(10).unwrap();
    let b = store.allocate_order_ids(1).unwrap();
    assert_eq!(b, a + 10);
}
}

#[test]
fn an_in_memory_database_has_no_reader() {
    assert!(Store::open_in_memory().unwrap().reader().unwrap().is_none(), "an in-memory database has no file to share");
}

on_both! {
fn a_reader_sees_committed_orders_and_cannot_write(db: &TestDb) {
    let store = db.open();
    store.conn.execute("INSERT INTO entity_types VALUES ('Directory_User', 'Directory user')", ()).unwrap();
    let reader = store.reader().unwrap().expect("a file database has a reader");
    assert_eq!(reader.installation(), store.installation());
    let count = |s: &Store| s.conn.query_row("SELECT COUNT(*) FROM entity_types", (), |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!(count(&reader), 1);
    store.conn.execute("INSERT INTO entity_types VALUES ('Contractor', 'Contractor')", ()).unwrap();
    assert_eq!(count(&reader), 2, "each read sees what was committed before it");
    let write = reader.conn.execute("INSERT INTO entity_types VALUES ('X', 'X')", ()).unwrap_err();
    assert_eq!(write.kind(), ErrorKind::Unavailable, "{write}");
    assert!(write.to_string().contains("read"), "{write}");
    assert_eq!(count(&store), 2, "the reader wrote nothing");
}
}

const LEASE: i64 = 30_000;

fn one_connection(_: &str) -> usize {
    1
}

fn claimed(store: &mut Store, run: i64, owner: &str) -> Unit {
    match store.claim_unit(run, owner, LEASE, &one_connection, store.now_ms()).unwrap() {
        Claim::Unit(unit) => *unit,
        other => panic!("nothing claimed: {other:?}"),
    }
}

fn fulfil_units(n: usize) -> Vec<UnitSpec> {
    (0..n).map(|_| UnitSpec::new(UnitKind::Fulfil, "saas")).collect()
}

on_both! {
fn one_run_at_a_time_joined_by_its_kind_refused_to_another(db: &TestDb) {
    let mut store = db.with_identity();
    let Started::New(run) = store.start_run("complete", &["fulfil"], &[], &Default::default(), None).unwrap() else {
        panic!("no run yet")
    };
    assert_eq!(store.start_run("complete", &["fulfil"], &[], &Default::default(), None).unwrap(), Started::Joined(run));
    match store.start_run("compute", &["compute"], &[], &Default::default(), None).unwrap() {
        Started::Busy(running) => assert_eq!((running.run, running.kind.as_str()), (run, "complete")),
        other => panic!("a second kind started beside the first: {other:?}"),
    }
    assert_eq!(store.job_runs(10).unwrap().len(), 1, "a refused or joining start records no run");
}
}

on_both! {
fn a_claim_is_exclusive_until_its_lease_lapses_and_then_fenced_off(db: &TestDb) {
    let mut mine = db.open();
    let mut theirs = db.open();
    // Both read one clock that moves only when told: the lease lapses without sleeping.
    let clock = std::sync::Arc::new(crate::model::ManualClock::at(1_000_000));
    mine.set_clock(clock.clone());
    theirs.set_clock(clock.clone());
    let (a_renews, b_renews) = (mine.renewer().unwrap().unwrap(), theirs.renewer().unwrap().unwrap());
    let Started::New(run) = mine.start_run("fulfil", &["fulfil"], &fulfil_units(1), &Default::default(), None).unwrap()
    else {
        panic!()
    };
    let unit = claimed(&mut mine, run, "a");
    assert!(!unit.taken_over);
    assert_eq!(
        theirs.claim_unit(run, "b", LEASE, &one_connection, theirs.now_ms()).unwrap(),
        Claim::Wait,
        "the unit is a's"
    );
    mine.set_fence(Some(unit.fence));
    mine.upsert_identities(&[]).unwrap();

    // Renewed just before it lapses, the lease runs a full term from then.
    clock.advance(LEASE - 1);
    assert!(a_renews.renew(unit.fence, LEASE).unwrap());
    clock.advance(LEASE - 1);
    assert_eq!(
        theirs.claim_unit(run, "b", LEASE, &one_connection, theirs.now_ms()).unwrap(),
        Claim::Wait,
        "renewed, still a's"
    );
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
    assert!(matches!(
        theirs.claim_unit(run, "b", LEASE, &one_connection, theirs.now_ms()).unwrap(),
        Claim::PhaseDone { phase: 0, .. }
    ));
    let results = theirs.unit_results(run).unwrap();
    assert_eq!((results.counters.len(), results.problems), (1, vec!["p".to_string()]));
}
}

on_both! {
fn a_connections_batches_in_flight_never_exceed_its_concurrency(db: &TestDb) {
    let mut store = db.with_identity();
    let Started::New(run) =
        store.start_run("fulfil", &["fulfil"], &fulfil_units(3), &Default::default(), None).unwrap()
    else {
        panic!()
    };
    let two = |_: &str| 2;
    let first = match store.claim_unit(run, "a", LEASE, &two, store.now_ms()).unwrap() {
        Claim::Unit(unit) => unit,
        other => panic!("{other:?}"),
    };
    assert!(matches!(store.claim_unit(run, "b", LEASE, &two, store.now_ms()).unwrap(), Claim::Unit(_)));
    assert_eq!(
        store.claim_unit(run, "c", LEASE, &two, store.now_ms()).unwrap(),
        Claim::Wait,
        "two batches are in flight"
    );
    // The first call returned: its outcomes are written while the third batch goes out.
    store.set_fence(Some(first.fence));
    store.end_calling(first.fence, &BatchOutcome::default(), crate::model::now_ms()).unwrap();
    store.set_fence(None);
    assert!(matches!(store.claim_unit(run, "c", LEASE, &two, store.now_ms()).unwrap(), Claim::Unit(_)));
}
}

on_both! {
fn a_unit_that_keeps_failing_is_given_up_and_the_phase_moves_on(db: &TestDb) {
    let mut store = db.with_identity();
    let Started::New(run) =
        store.start_run("fulfil", &["fulfil"], &fulfil_units(1), &Default::default(), None).unwrap()
    else {
        panic!()
    };
    for _ in 0..MAX_CLAIMS {
        let unit = claimed(&mut store, run, "a");
        store.release_unit(unit.fence).unwrap();
    }
    assert!(matches!(
        store.claim_unit(run, "a", LEASE, &one_connection, store.now_ms()).unwrap(),
        Claim::PhaseDone { .. }
    ));
    let results = store.unit_results(run).unwrap();
    assert_eq!(results.given_up, 1);
    assert!(results.problems[0].contains("given up after 5 attempts"), "{:?}", results.problems);
}
}

on_both! {
fn recovery_leaves_a_live_workers_attempts_alone(db: &TestDb) {
    let mut store = db.with_identity();
    let (dead, live) = (new_order(&mut store, Event::NoReviewNeeded), new_order(&mut store, Event::NoReviewNeeded));
    let Started::New(run) =
        store.start_run("fulfil", &["fulfil"], &fulfil_units(2), &Default::default(), None).unwrap()
    else {
        panic!()
    };
    let mut two = |owner: &str| match store.claim_unit(run, owner, LEASE, &|_| 2, store.now_ms()).unwrap() {
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
    store.conn.as_sqlite().unwrap().busy_handler(Some(busy)).unwrap();
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
    store.conn.as_sqlite().unwrap().busy_timeout(std::time::Duration::ZERO).unwrap();
    let other = Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE;").unwrap();
    let busy = store.allocate_order_ids(1).unwrap_err();
    assert_eq!(busy.kind(), ErrorKind::Unavailable, "{busy}");
    other.execute_batch("ROLLBACK;").unwrap();
    assert!(store.allocate_order_ids(1).is_ok());
}

fn batch(answered: usize, transient: usize, retry_after_ms: Option<i64>, sent_at: i64) -> BatchOutcome {
    BatchOutcome { concurrency: 8, sent_at, answered, transient, retry_after_ms }
}

#[test]
fn pace_halves_on_repeated_transient_errors_and_climbs_back_one_per_clean_batch() {
    let full = Pace::full("saas", 8);
    assert_eq!(full.cap(8), 8);
    // One batch with a transient error is no pattern yet.
    let once = full.after(&batch(4, 1, None, 1_000), 2_000);
    assert_eq!((once.allowed, once.backoff_ms, once.paused_until, once.failures), (8, 0, 0, 1));
    // The second in a row halves and backs off 250 ms.
    let twice = once.after(&batch(4, 2, None, 2_000), 3_000);
    assert_eq!((twice.allowed, twice.backoff_ms, twice.paused_until), (4, BACKOFF_MIN_MS, 3_000 + BACKOFF_MIN_MS));
    // A batch sent before that decrease went out under the old allowance: no second halving.
    let stale = twice.after(&batch(4, 4, None, 2_500), 3_100);
    assert_eq!((stale.allowed, stale.backoff_ms), (4, BACKOFF_MIN_MS));
    // Sent after it: halved again, backoff doubled; and so on down to one, backoff up to 30 s.
    let mut pace = stale.after(&batch(4, 4, None, 3_500), 4_000);
    assert_eq!((pace.allowed, pace.backoff_ms, pace.paused_until), (2, 500, 4_500));
    let mut now = 4_000;
    for _ in 0..12 {
        now += 1_000;
        pace = pace.after(&batch(4, 1, None, now - 1), now);
    }
    assert_eq!((pace.allowed, pace.backoff_ms), (1, BACKOFF_MAX_MS));
    assert_eq!(pace.cap(8), 1);
    // Clean batches: +1 each up to the configured concurrency, backoff cleared at once.
    let clean = pace.after(&batch(4, 0, None, now + 1), now + 2);
    assert_eq!((clean.allowed, clean.backoff_ms, clean.failures), (2, 0, 0));
    let mut back = clean.clone();
    for _ in 0..20 {
        back = back.after(&batch(4, 0, None, now + 3), now + 4);
    }
    assert_eq!(back.allowed, 8, "never above the configured concurrency");
    assert_eq!(back.cap(3), 3, "a lowered configured concurrency caps the allowance");
    // A batch the connector answered nothing for says nothing about the managed system.
    assert_eq!(clean.after(&batch(0, 0, None, now + 5), now + 6), clean);
}

#[test]
fn a_retry_after_pauses_the_connection_capped_at_an_hour() {
    let full = Pace::full("saas", 4);
    let paused = full.after(&batch(4, 1, Some(5_000), 900), 1_000);
    assert_eq!((paused.paused_until, paused.allowed), (6_000, 4), "one Retry-After pauses, it does not halve");
    let later = paused.after(&batch(4, 1, Some(1_000), 1_000), 1_500);
    assert_eq!(later.paused_until, 6_000, "a shorter Retry-After does not shorten the pause");
    let capped = full.after(&batch(1, 1, Some(10 * MAX_PAUSE_MS), 0), 1_000);
    assert_eq!(capped.paused_until, 1_000 + MAX_PAUSE_MS);
}

fn batch4(answered: usize, transient: usize, retry_after_ms: Option<i64>, sent_at: i64) -> BatchOutcome {
    BatchOutcome { concurrency: 4, ..batch(answered, transient, retry_after_ms, sent_at) }
}

fn units_of(connection: &str, n: usize) -> Vec<UnitSpec> {
    (0..n).map(|_| UnitSpec::new(UnitKind::Fulfil, connection)).collect()
}

on_both! {
fn end_calling_paces_the_connection_and_claims_skip_a_paused_one_without_starving_others(db: &TestDb) {
    let mut store = db.with_identity();
    // More units of the connection that will be paused than a claim looks at, then another's.
    let mut units = units_of("slow", 70);
    units.extend(units_of("other", 2));
    let Started::New(run) = store.start_run("fulfil", &["fulfil"], &units, &Default::default(), None).unwrap() else {
        panic!()
    };
    let now = crate::model::now_ms();
    let four = |_: &str| 4;
    let Claim::Unit(first) = store.claim_unit(run, "a", LEASE, &four, now).unwrap() else { panic!() };
    assert_eq!(first.target, "slow");
    store.set_fence(Some(first.fence));
    store
        .end_calling(first.fence, &BatchOutcome { retry_after_ms: Some(10_000), ..batch(2, 1, None, now) }, now)
        .unwrap();
    store.set_fence(None);
    let pace = &store.paces().unwrap()[0];
    assert_eq!((pace.connection.as_str(), pace.paused_until), ("slow", now + 10_000));

    // Paused: the other connection's units are claimed although 69 of "slow" come first.
    let claim = |store: &mut Store, at: i64| store.claim_unit(run, "b", LEASE, &four, at).unwrap();
    let mut others = Vec::new();
    for _ in 0..2 {
        match claim(&mut store, now + 1) {
            Claim::Unit(unit) => others.push(*unit),
            other => panic!("the paused connection starved the other: {other:?}"),
        }
    }
    assert!(others.iter().all(|u| u.target == "other"), "{others:?}");
    // Others' units held: wait for them. Done (the first too): only the pause is left.
    assert_eq!(claim(&mut store, now + 2), Claim::Wait);
    for unit in others.iter().chain([&*first]) {
        store.set_fence(Some(unit.fence));
        store.finish_unit(unit, &0, &[], &[], &[]).unwrap();
    }
    store.set_fence(None);
    assert_eq!(claim(&mut store, now + 3), Claim::Paused { until: now + 10_000 });
    // Once the pause is over, "slow" goes on.
    let Claim::Unit(next) = claim(&mut store, now + 10_000) else { panic!("the pause did not end") };
    assert_eq!(next.target, "slow");
}
}

on_both! {
fn a_halved_allowance_caps_claims_and_a_long_pause_leaves_the_batches_pending_for_the_next_run(db: &TestDb) {
    let mut store = db.with_identity();
    let Started::New(run) =
        store.start_run("fulfil", &["fulfil"], &units_of("saas", 6), &Default::default(), None).unwrap()
    else {
        panic!()
    };
    let now = crate::model::now_ms();
    let four = |_: &str| 4;
    let mut held = Vec::new();
    for _ in 0..4 {
        let Claim::Unit(unit) = store.claim_unit(run, "a", LEASE, &four, now).unwrap() else { panic!() };
        held.push(*unit);
    }
    // Two of the four batches come back with transient errors: the allowance halves to 2 and
    // the connection backs off; two are still in flight, so nothing goes out, even after it.
    for unit in &held[..2] {
        store.set_fence(Some(unit.fence));
        store.end_calling(unit.fence, &batch4(1, 1, None, now), now + 10).unwrap();
        store.finish_unit(unit, &serde_json::json!({}), &[], &[], &[]).unwrap();
    }
    store.set_fence(None);
    let pace = store.paces().unwrap().remove(0);
    assert_eq!((pace.allowed, pace.paused_until), (2, now + 10 + BACKOFF_MIN_MS));
    let after = now + 10 + BACKOFF_MIN_MS;
    assert_eq!(store.claim_unit(run, "a", LEASE, &four, after).unwrap(), Claim::Wait, "2 in flight of 2 allowed");
    store.set_fence(Some(held[2].fence));
    store.end_calling(held[2].fence, &batch4(1, 0, None, now), after).unwrap();
    store.set_fence(None);
    assert_eq!(store.paces().unwrap()[0].allowed, 3, "a clean batch adds one back");
    let Claim::Unit(fifth) = store.claim_unit(run, "a", LEASE, &four, after).unwrap() else { panic!("3 allowed") };
    held.push(*fifth);

    // A Retry-After of ten minutes: the remaining batch is finished unworked, with a note.
    store.set_fence(Some(held[3].fence));
    store.end_calling(held[3].fence, &batch4(1, 1, Some(600_000), after), after).unwrap();
    store.set_fence(None);
    for unit in &held[2..] {
        store.set_fence(Some(unit.fence));
        store.finish_unit(unit, &serde_json::json!({}), &[], &[], &[]).unwrap();
    }
    store.set_fence(None);
    let done = store.claim_unit(run, "a", LEASE, &four, after + 1).unwrap();
    assert!(matches!(done, Claim::PhaseDone { .. }), "{done:?}");
    let notes = store.unit_results(run).unwrap().notes;
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("1 of its batches stay Pending for the next run"), "{notes:?}");
}
}

/// A PostgreSQL session that breaks (the server restarted it, a network cut, an operator ended
/// it) fails the statement that meets the break as unavailable; the next one runs on a new
/// session, without reopening the store.
#[test]
fn a_broken_postgres_session_is_replaced_before_the_next_statement() {
    let db = TestDb::postgres();
    let mut store = db.with_identity();
    let other = db.open();
    let ended: bool = other
        .conn
        .query_row(
            "SELECT bool_and(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            (),
            |r| r.get(0),
        )
        .unwrap();
    assert!(ended);
    let broken = store.allocate_order_ids(1).unwrap_err();
    assert_eq!(broken.kind(), ErrorKind::Unavailable, "{broken}");
    let id = new_order(&mut store, Event::NoReviewNeeded);
    assert_eq!(store.order(id).unwrap().state, ProvisioningState::Pending);
}
