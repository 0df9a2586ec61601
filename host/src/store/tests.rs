use super::*;
use crate::machine::Event;
use crate::model::{Change, ChangeKind, ProvisioningState, ResourceContent};

fn store_with_identity() -> Store {
    let mut store = Store::open_in_memory().unwrap();
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
    store.start_attempts(&[pending], "saas", None).unwrap();
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
    assert!(store.close_interrupted_attempts(1).unwrap().is_empty());
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
    store.start_attempts(&[id], "saas", None).unwrap();
    // The process dies here; the next run finds the open attempt.
    assert_eq!(store.close_interrupted_attempts(1).unwrap(), [id]);
    assert_eq!(store.attempts(id).unwrap()[0].outcome.as_deref(), Some("interrupted"));
    assert_eq!(store.order(id).unwrap().state, ProvisioningState::Pending, "the order is still there to send");
    assert!(store.close_interrupted_attempts(1).unwrap().is_empty());
}

#[test]
fn an_operator_retry_starts_a_fresh_retry_budget() {
    let mut store = store_with_identity();
    let id = new_order(&mut store, Event::NoReviewNeeded);
    store.start_attempts(&[id], "saas", None).unwrap();
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

fn owner(name: &str) -> super::LockOwner {
    super::LockOwner { token: random_secret_for(name), host: "testhost".into(), pid: 4242 }
}

fn random_secret_for(name: &str) -> String {
    format!("{name}-{}", super::random_secret())
}

#[test]
fn recovery_leaves_the_running_runs_own_attempts_alone() {
    let mut store = store_with_identity();
    let (dead, live) = (new_order(&mut store, Event::NoReviewNeeded), new_order(&mut store, Event::NoReviewNeeded));
    let old_run = store.start_job("fulfil").unwrap();
    store.start_attempts(&[dead], "saas", Some(old_run)).unwrap();
    let super::Taken::Ours { run: Some(run), .. } =
        store.take_job_lock(&owner("a"), "fulfil", Some("fulfil"), 30_000).unwrap()
    else {
        panic!("the lock is free")
    };
    store.start_attempts(&[live], "saas", Some(run)).unwrap();
    assert_eq!(store.close_interrupted_attempts(run).unwrap(), [dead], "only the dead run's attempt is a crash");
    assert_eq!(store.attempts(live).unwrap()[0].outcome, None, "the live run's attempt is still open");
    assert_eq!(store.job_run(old_run).unwrap().status, "interrupted", "a run found running without the lock is dead");
}

#[test]
fn the_job_lock_is_held_until_released_or_expired() {
    let mut store = store_with_identity();
    let a = owner("a");
    let super::Taken::Ours { run: Some(run_a), took_over: None } =
        store.take_job_lock(&a, "complete", Some("complete"), 30_000).unwrap()
    else {
        panic!("the lock is free")
    };
    let mut other = owner("b");
    other.pid = 7;
    match store.take_job_lock(&other, "compute", Some("compute"), 30_000).unwrap() {
        super::Taken::Held(holder) => {
            assert_eq!((holder.run, holder.pid, holder.kind.as_str()), (Some(run_a), 4242, "complete"));
            assert!(
                holder.to_string().contains(&format!("run {run_a} (complete) on host testhost, pid 4242")),
                "{holder}"
            );
        }
        taken => panic!("a held lock was taken: {taken:?}"),
    }
    assert_eq!(store.job_runs(10).unwrap().len(), 1, "a refused taker records no run");

    // The holder dies: no heartbeat, and the lock expires (here: at once).
    store.conn.execute("UPDATE job_lock SET expires_at = 0", []).unwrap();
    assert!(!super::heartbeat(&store.conn, &a.token, 30_000).unwrap(), "an expired lock is not revived");
    let super::Taken::Ours { run: Some(run_b), took_over: Some(dead) } =
        store.take_job_lock(&other, "compute", Some("compute"), 30_000).unwrap()
    else {
        panic!("an expired lock was not taken over")
    };
    assert_eq!(dead.run, Some(run_a));
    let interrupted = store.job_run(run_a).unwrap();
    assert_eq!(interrupted.status, "interrupted");
    assert!(interrupted.message.unwrap().contains(&format!("taken over by run {run_b} (host testhost, pid 7)")));
    // The store now writes for b only: a's writes would be refused (it is fenced as b).
    assert!(super::heartbeat(&store.conn, &other.token, 30_000).unwrap());
    assert!(!store.release_job_lock(&a.token).unwrap(), "a cannot release b's lock");
    assert!(store.release_job_lock(&other.token).unwrap());
    assert!(store.job_lock().unwrap().is_none());
}

#[test]
fn a_run_whose_lock_was_taken_over_writes_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("provision.db");
    let mut mine = Store::open(&path).unwrap();
    let mut theirs = Store::open(&path).unwrap();
    let a = owner("a");
    assert!(matches!(mine.take_job_lock(&a, "complete", Some("complete"), 30_000).unwrap(), super::Taken::Ours { .. }));
    theirs.conn.execute("UPDATE job_lock SET expires_at = 0", []).unwrap();
    assert!(matches!(
        theirs.take_job_lock(&owner("b"), "complete", Some("complete"), 30_000).unwrap(),
        super::Taken::Ours { .. }
    ));
    let written = mine.upsert_identities(&[]);
    assert!(matches!(written, Err(StoreError::LockLost)), "{written:?}");
}
