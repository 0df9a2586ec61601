//! One limit per value at every boundary: desired state over a data limit is refused by the
//! store as by the import, and an order made of data stored before the limits existed is never
//! shown to a plugin (a connector would write what no `read` accepts back).

use indicatif::ProgressBar;
use provision::host::Host;
use provision::model::{ChangeKind, ProvisioningState, ResourceContent};
use provision::store::{Assignment, OrderFilter};
use provision_tests::{Deployment, complete, sqlite, state_path};

fn saas(host: &Host, owner: &str) -> provision::model::Order {
    host.store
        .orders(&OrderFilter {
            resource_types: vec!["SaaS_Account".into()],
            owner: Some(owner.into()),
            ..Default::default()
        })
        .expect("orders")
        .into_iter()
        .find(|o| o.change.kind == ChangeKind::Added)
        .unwrap_or_else(|| panic!("{owner}'s SaaS order"))
}

/// A read-write connection, to put in rows only an older version could have written.
fn tamper(deployment: &Deployment, sql: &str) {
    let db = rusqlite::Connection::open(deployment.path("provision.db")).expect("open the database");
    let megabyte = "x".repeat(1 << 20);
    let changed = db.execute(sql, [megabyte]).expect("tamper");
    assert_eq!(changed, 1, "{sql}");
}

fn journal_owners(deployment: &Deployment) -> Vec<String> {
    let text = std::fs::read_to_string(deployment.path("managed/SaaS_Account.jsonl")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a journal line")["owner"].to_string())
        .collect()
}

#[test]
fn the_store_refuses_desired_state_over_a_limit_and_writes_none_of_it() {
    let deployment = Deployment::quickstart();
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    let assignment = |who: &str, note: String| Assignment {
        identity: who.into(),
        resource_type: "SaaS_Account".into(),
        content: ResourceContent {
            attributes: [("userName".to_string(), who.to_string()), ("note".to_string(), note)].into(),
            entitlements: ["Users".to_string()].into(),
        },
        valid_from: None,
        valid_until: None,
    };
    let error = host
        .store
        .set_assignments(&[assignment("alice", "fine".into()), assignment("bob", "x".repeat(1 << 20))], false)
        .expect_err("refused");
    assert!(error.to_string().contains("`bob`") && error.to_string().contains("at most 65536 bytes"), "{error}");
    let db = sqlite(&deployment.path("provision.db"));
    let notes: i64 =
        db.query_row("SELECT COUNT(*) FROM assignments WHERE content LIKE '%\"note\"%'", [], |r| r.get(0)).unwrap();
    assert_eq!(notes, 0, "neither assignment was written");
}

#[test]
fn an_order_made_of_desired_state_from_before_the_limits_is_shown_to_no_plugin() {
    let deployment = Deployment::quickstart();
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    tamper(
        &deployment,
        "UPDATE assignments SET content = json_set(content, '$.attributes.note', ?1)
         WHERE resource_type = 'SaaS_Account' AND identity_id = (SELECT id FROM identities WHERE key = 'bob')",
    );
    let report = complete(&mut host);

    let bob = saas(&host, "bob");
    assert_eq!(bob.state, ProvisioningState::Error, "{:?}", bob.message);
    let history = host.store.history(bob.id).expect("history");
    assert_eq!(history.iter().map(|h| h.actor.as_str()).collect::<Vec<_>>(), ["job:compute"]);
    assert!(history[0].reason.contains("over a data limit") && history[0].reason.contains("`note`"), "{history:?}");
    assert!(report.problems.iter().any(|p| p.contains(&format!("order {}", bob.id))), "{:?}", report.problems);
    for who in ["alice", "carol"] {
        assert_eq!(saas(&host, who).state, ProvisioningState::Verified, "{who}");
    }
    let owners = journal_owners(&deployment);
    assert!(owners.contains(&"\"alice\"".to_string()) && !owners.contains(&"\"bob\"".to_string()), "{owners:?}");

    // Evaluated again at the next run, and refused again: never sent to the rule.
    complete(&mut host);
    assert_eq!(state_path(&host, bob.id), [7, 7]);
}

#[test]
fn a_pending_order_from_before_the_limits_is_not_sent() {
    let deployment = Deployment::quickstart();
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    provision::jobs::compute(&mut host, &ProgressBar::hidden()).expect("compute");
    let bob = saas(&host, "bob");
    assert_eq!(bob.state, ProvisioningState::Pending);
    tamper(
        &deployment,
        &format!("UPDATE orders SET change = json_set(change, '$.attributes.note', ?1) WHERE id = {}", bob.id),
    );

    let report = provision::jobs::fulfil(&mut host, &ProgressBar::hidden()).expect("fulfil");
    let history = host.store.history(bob.id).expect("history");
    assert_eq!(state_path(&host, bob.id), [1, 3]);
    let last = history.last().expect("a row");
    assert_eq!(last.actor, "job:fulfil");
    assert!(last.reason.starts_with("permanent error: not sent, over a data limit"), "{}", last.reason);
    assert!(report.problems.iter().any(|p| p.contains(&format!("order {}", bob.id))), "{:?}", report.problems);
    for who in ["alice", "carol"] {
        assert_eq!(saas(&host, who).state, ProvisioningState::Executed, "{who}");
    }
    let owners = journal_owners(&deployment);
    assert!(owners.contains(&"\"alice\"".to_string()) && !owners.contains(&"\"bob\"".to_string()), "{owners:?}");
}
