//! The walking skeleton, end to end: desired assignments become orders that travel to Verified
//! through the bundled components on SQLite, and the jobs are idempotent.

use provision::model::{ChangeKind, ProvisioningState};
use provision::store::OrderFilter;
use provision_tests::{Deployment, complete, state_path};

fn orders_of(host: &provision::host::Host, resource_type: &str) -> Vec<provision::model::Order> {
    host.store.orders(&OrderFilter { resource_types: vec![resource_type.into()], ..OrderFilter::default() }).unwrap()
}

#[test]
fn quickstart_orders_reach_their_states() {
    let deployment = Deployment::quickstart();
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    let report = complete(&mut host);
    assert!(report.problems.is_empty(), "{:?}", report.problems);

    let accounts = orders_of(&host, "SaaS_Account");
    assert_eq!(accounts.iter().map(|o| o.owner.as_str()).collect::<Vec<_>>(), ["alice", "bob", "carol"]);
    for order in &accounts {
        assert_eq!(state_path(&host, order.id), [1, 8, 4], "order {} of {}", order.id, order.owner);
        assert_eq!(order.state, ProvisioningState::Verified);
        assert_eq!(order.change.kind, ChangeKind::Added);
    }
    let memberships = orders_of(&host, "Finance_Group_Membership");
    assert_eq!(memberships.len(), 1);
    assert_eq!(state_path(&host, memberships[0].id), [5]);
    let history = host.store.history(memberships[0].id).unwrap();
    assert_eq!(history[0].actor, "plugin:classification");
    assert!(history[0].reason.contains("sensitive"), "{}", history[0].reason);

    // The managed system really holds what the orders asked for.
    let journal = std::fs::read_to_string(deployment.path("managed/SaaS_Account.jsonl")).unwrap();
    assert_eq!(journal.lines().count(), 3);
    assert!(journal.contains(r#""userName":"bob""#) && journal.contains(r#""Sales""#), "{journal}");
    assert!(!deployment.path("managed/Finance_Group_Membership.jsonl").exists(), "the reviewed order was written");

    // The badges go to the help desk: handed over, waiting for a person.
    for order in orders_of(&host, "Badge_Access") {
        assert_eq!(state_path(&host, order.id), [1, 2]);
    }

    let c = &report.counters;
    assert_eq!(
        (c.orders_created, c.released, c.awaiting_approval, c.executed, c.transmitted, c.verified),
        (6, 5, 1, 3, 2, 3)
    );
    let run = host.store.job_run(report.run).unwrap();
    assert_eq!(run.status, "succeeded");
    assert_eq!(run.counters["verified"], 3);
}

#[test]
fn running_the_jobs_again_creates_nothing_twice() {
    let deployment = Deployment::quickstart();
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    let hidden = indicatif::ProgressBar::hidden();

    let first = provision::jobs::compute(&mut host, &hidden).unwrap();
    let second = provision::jobs::compute(&mut host, &hidden).unwrap();
    assert_eq!(first.counters.orders_created, 6);
    assert_eq!(second.counters.orders_created, 0, "compute twice created orders twice");
    assert_eq!(host.store.orders(&OrderFilter::default()).unwrap().len(), 6);

    complete(&mut host);
    let again = complete(&mut host);
    assert_eq!(again.counters.orders_created, 0);
    assert_eq!((again.counters.executed, again.counters.transmitted), (0, 0));
    assert_eq!(host.store.orders(&OrderFilter::default()).unwrap().len(), 6);
    let journal = std::fs::read_to_string(deployment.path("managed/SaaS_Account.jsonl")).unwrap();
    assert_eq!(journal.lines().count(), 3, "an order was written twice");
}

#[test]
fn changes_withdrawals_and_drift_become_new_orders() {
    let deployment = Deployment::quickstart();
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    complete(&mut host);

    // Bob changes department: only what differs is written.
    let data = std::fs::read_to_string(deployment.path("data.toml")).unwrap();
    let changed = data.replace(r#"entitlements = ["Users", "Sales"]"#, r#"entitlements = ["Users", "Marketing"]"#);
    // Carol leaves: her assignment is no longer in the complete desired state.
    let carol = "[[assignments]]\nidentity = \"carol\"\nresource_type = \"SaaS_Account\"\nattributes = { userName = \"carol\", email = \"carol@example.com\", displayName = \"Carol Diaz\" }\nentitlements = [\"Users\"]\n";
    assert!(changed.contains(carol));
    deployment.write("data2.toml", changed.replace(carol, ""));
    deployment.import(&mut host, "data2.toml", true);
    let report = complete(&mut host);
    assert_eq!(report.counters.orders_created, 2, "{report:?}");

    let bob = host.store.orders(&OrderFilter { owner: Some("bob".into()), ..OrderFilter::default() }).unwrap();
    let modified = bob.last().unwrap();
    assert_eq!(modified.change.kind, ChangeKind::Modified);
    assert_eq!(modified.change.summary(), "+Marketing -Sales");
    assert_eq!(modified.resource_id.as_deref(), Some("bob"));
    assert_eq!(state_path(&host, modified.id), [1, 8, 4]);

    let carol_orders =
        host.store.orders(&OrderFilter { owner: Some("carol".into()), ..OrderFilter::default() }).unwrap();
    let deleted = carol_orders.last().unwrap();
    assert_eq!(deleted.change.kind, ChangeKind::Deleted);
    assert_eq!(state_path(&host, deleted.id), [1, 8, 4]);

    // Drift: the managed system loses every account behind the host's back.
    std::fs::remove_file(deployment.path("managed/SaaS_Account.jsonl")).unwrap();
    let report = complete(&mut host);
    assert_eq!(report.counters.orders_created, 2, "alice and bob should be re-created: {report:?}");
    let alice = host
        .store
        .orders(&OrderFilter {
            owner: Some("alice".into()),
            resource_types: vec!["SaaS_Account".into()],
            ..OrderFilter::default()
        })
        .unwrap();
    assert_eq!(alice.len(), 2);
    assert_eq!(alice[1].change.kind, ChangeKind::Added);
    assert_eq!(alice[1].state, ProvisioningState::Verified);
}

#[test]
fn synchronisation_reads_every_page() {
    let deployment = Deployment::quickstart();
    let config = std::fs::read_to_string(deployment.config_path()).unwrap();
    deployment.set_config(&config.replace("dir = \"/data\"", "dir = \"/data\"\npage-size = 2"));
    let mut data = String::new();
    for n in 0..7 {
        data.push_str(&format!(
            "[[identities]]\nentity_type = \"Directory_User\"\nkey = \"user{n}\"\n\n[[assignments]]\nidentity = \"user{n}\"\nresource_type = \"SaaS_Account\"\nattributes = {{ userName = \"user{n}\" }}\n\n"
        ));
    }
    deployment.write("many.toml", data);
    let mut host = deployment.host();
    deployment.import(&mut host, "many.toml", false);
    let report = complete(&mut host);
    assert_eq!(report.counters.verified, 7, "{report:?}");
    assert_eq!(host.store.resource_count("SaaS_Account").unwrap(), 7);
}

#[test]
fn a_refused_transition_leaves_the_order_untouched() {
    let deployment = Deployment::quickstart();
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    complete(&mut host);
    let order = orders_of(&host, "SaaS_Account").remove(0);
    let before = host.store.history(order.id).unwrap();

    let results = host
        .store
        .apply(
            &[provision::store::Transition::new(
                order.id,
                provision::machine::Event::Approve,
                "approve a verified order",
            )],
            "user:test",
        )
        .unwrap();
    let error = results[0].as_ref().unwrap_err().to_string();
    assert!(error.contains("approve") && error.contains("4 Verified"), "{error}");
    assert_eq!(host.store.order(order.id).unwrap(), order);
    assert_eq!(host.store.history(order.id).unwrap(), before);
}

#[test]
fn validity_windows_hold_or_retire_orders() {
    let deployment = Deployment::quickstart();
    let mut host = deployment.host();
    deployment.write(
        "windows.toml",
        r#"
[[identities]]
entity_type = "Directory_User"
key = "past"

[[identities]]
entity_type = "Directory_User"
key = "future"

[[assignments]]
identity = "past"
resource_type = "SaaS_Account"
attributes = { userName = "past" }
valid_until = 2020-01-01T00:00:00Z

[[assignments]]
identity = "future"
resource_type = "SaaS_Account"
attributes = { userName = "future" }
valid_from = "2999-01-01T00:00:00Z"
"#,
    );
    deployment.import(&mut host, "windows.toml", false);
    let report = complete(&mut host);
    assert_eq!(report.counters.window_over, 1, "{report:?}");
    let past = host.store.orders(&OrderFilter { owner: Some("past".into()), ..OrderFilter::default() }).unwrap();
    assert_eq!(past.len(), 1);
    assert_eq!(state_path(&host, past[0].id), [6], "an order whose window is already over is Inactive at once");
    let future = host.store.orders(&OrderFilter { owner: Some("future".into()), ..OrderFilter::default() }).unwrap();
    assert!(future.is_empty(), "an assignment not yet valid waits");

    let again = complete(&mut host);
    assert_eq!(again.counters.orders_created, 0, "the inactive order was recorded twice");
}

#[test]
fn transmitted_orders_expire_after_their_connections_validity() {
    let deployment = Deployment::quickstart();
    let config = std::fs::read_to_string(deployment.config_path()).unwrap();
    deployment.set_config(&config.replace("transmitted_validity = \"3d\"", "transmitted_validity = \"1ms\""));
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    complete(&mut host);
    let badges = orders_of(&host, "Badge_Access");
    assert!(badges.iter().all(|o| o.state == ProvisioningState::Transmitted));

    // The next run comes more than a millisecond later: both are overdue.
    let report = complete(&mut host);
    assert_eq!(report.counters.expired, 2, "{report:?}");
    for order in orders_of(&host, "Badge_Access") {
        assert_eq!(state_path(&host, order.id), [1, 2, 3]);
        let last = host.store.history(order.id).unwrap().pop().unwrap();
        assert_eq!(last.event, "transmitted-expired");
        assert!(last.reason.contains("transmitted validity (1ms)"), "{}", last.reason);
    }
    // Operators hear about it: an orders-errored notification for the entity type.
    let errored: Vec<_> = host
        .store
        .notifications(None, None)
        .unwrap()
        .into_iter()
        .filter(|n| n.kind == provision::model::NotificationKind::OrdersErrored)
        .collect();
    assert_eq!(errored.len(), 1);
    assert_eq!(errored[0].orders.len(), 2);

    // With the quickstart's three days, retried orders are handed over again and stay.
    deployment.set_config(&config);
    let mut host = deployment.host();
    let retries: Vec<_> = orders_of(&host, "Badge_Access")
        .iter()
        .map(|o| provision::store::Transition::new(o.id, provision::machine::Event::Retry, "try again"))
        .collect();
    assert!(host.store.apply(&retries, "user:test").unwrap().iter().all(Result::is_ok));
    assert_eq!(complete(&mut host).counters.transmitted, 2);
    assert_eq!(complete(&mut host).counters.expired, 0);
    assert!(orders_of(&host, "Badge_Access").iter().all(|o| o.state == ProvisioningState::Transmitted));
}
