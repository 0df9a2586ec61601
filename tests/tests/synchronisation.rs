//! Synchronisation that one malformed resource cannot stop: the rest of its page is stored and
//! verified, the malformed one is reported by id, and nothing is removed because of it.

use provision::host::Host;
use provision::model::{ChangeKind, ProvisioningState};
use provision::store::OrderFilter;
use provision_tests::{Deployment, complete, sqlite, state_path};

/// The quickstart's people with their SaaS accounts' display names changed, so each gets a
/// `modified` order.
const RENAMED: &str = r#"
[[identities]]
entity_type = "Directory_User"
key = "alice"

[[identities]]
entity_type = "Directory_User"
key = "bob"

[[identities]]
entity_type = "Directory_User"
key = "carol"

[[assignments]]
identity = "alice"
resource_type = "SaaS_Account"
attributes = { userName = "alice", email = "alice@example.com", displayName = "Alice M." }
entitlements = ["Users"]

[[assignments]]
identity = "bob"
resource_type = "SaaS_Account"
attributes = { userName = "bob", email = "bob@example.com", displayName = "Bob N." }
entitlements = ["Users", "Sales"]

[[assignments]]
identity = "carol"
resource_type = "SaaS_Account"
attributes = { userName = "carol", email = "carol@example.com", displayName = "Carol D." }
entitlements = ["Users"]
"#;

/// The file connector's journal of SaaS accounts in the deployment's managed system.
fn journal(deployment: &Deployment) -> std::path::PathBuf {
    deployment.path("managed/SaaS_Account.jsonl")
}

/// Appends a journal line, as if someone changed the managed system behind the host's back:
/// `fields` are the line's JSON members after the resource's `id` and `owner`; `prev` points
/// at the resource's last line, when it has one.
fn plant(deployment: &Deployment, id: &str, change: &str, fields: &str) {
    plant_owned(deployment, id, id, change, fields);
}

/// [`plant`] with an owner other than the id.
fn plant_owned(deployment: &Deployment, id: &str, owner: &str, change: &str, fields: &str) {
    let path = journal(deployment);
    let text = std::fs::read_to_string(&path).expect("the journal");
    let mut offset = 0;
    let mut prev = None;
    for line in text.split_inclusive('\n') {
        let value: serde_json::Value = serde_json::from_str(line).expect("a journal line");
        if value["id"] == id {
            prev = Some(offset);
        }
        offset += line.len();
    }
    let prev = prev.map(|p| format!(r#","prev":{p}"#)).unwrap_or_default();
    let line = format!(
        r#"{{"key":"planted-{offset}","order":999999,"change":"{change}","id":{id:?},"owner":{owner:?}{fields}{prev}}}"#
    );
    std::fs::write(&path, format!("{text}{line}\n")).expect("write the journal");
}

fn saas(host: &Host) -> Vec<provision::model::Order> {
    host.store
        .orders(&OrderFilter { resource_types: vec!["SaaS_Account".into()], ..Default::default() })
        .expect("orders")
}

fn stored_ids(deployment: &Deployment) -> Vec<String> {
    let db = sqlite(&deployment.path("provision.db"));
    let mut stmt = db.prepare("SELECT id FROM resources WHERE resource_type = 'SaaS_Account' ORDER BY id").unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
}

/// Before: the 1 MB value in bob's account made every `read` of SaaS accounts fail, so no
/// SaaS order was verified again.
#[test]
fn a_malformed_resource_fails_alone_and_is_never_taken_for_absent() {
    provision_tests::logs();
    let deployment = Deployment::quickstart();
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    complete(&mut host);
    assert!(saas(&host).iter().all(|o| o.state == ProvisioningState::Verified), "{:?}", saas(&host));

    let megabyte = "x".repeat(1 << 20);
    plant(&deployment, "bob", "modified", &format!(r#","attributes":{{"note":"{megabyte}"}}"#));
    deployment.write("renamed.toml", RENAMED);
    deployment.import(&mut host, "renamed.toml", false);
    let report = complete(&mut host);

    let modified: Vec<_> = saas(&host).into_iter().filter(|o| o.change.kind == ChangeKind::Modified).collect();
    assert_eq!(modified.len(), 3, "{modified:?}");
    for order in &modified {
        let expected = if order.owner == "bob" { ProvisioningState::Executed } else { ProvisioningState::Verified };
        assert_eq!(order.state, expected, "{}'s order: {order:?}", order.owner);
    }
    let bob = modified.iter().find(|o| o.owner == "bob").expect("bob's order");
    assert_eq!(state_path(&host, bob.id), [1, 8], "bob's order keeps its state");
    let problem = report
        .problems
        .iter()
        .find(|p| p.contains("`bob`"))
        .unwrap_or_else(|| panic!("the malformed resource is reported by id: {:?}", report.problems));
    assert!(problem.contains("SaaS_Account") && problem.contains("at most 65536 bytes"), "{problem}");
    assert!(problem.len() < 1000, "the report does not carry the value: {} bytes", problem.len());
    assert!(report.counters.verified >= 2, "{:?}", report.counters);
    assert_eq!(stored_ids(&deployment), ["alice", "bob", "carol"], "bob's account was not removed");
    let logs = provision_tests::logs();
    assert!(
        logs.lines().any(|l| l.contains("malformed resource is skipped") && l.contains(r#"resource="bob""#)),
        "logged with its id"
    );

    // Bob's account is not taken for absent: no run re-creates or deletes it.
    let again = complete(&mut host);
    assert_eq!(again.counters.orders_created, 0, "{:?}", again.counters);
    assert!(again.problems.iter().any(|p| p.contains("`bob`")), "still reported: {:?}", again.problems);
    assert_eq!(stored_ids(&deployment), ["alice", "bob", "carol"]);
    assert_eq!(state_path(&host, bob.id), [1, 8]);
}

/// A resource whose id itself is malformed cannot be matched to what the host stored: that read
/// removes nothing (a resource deleted behind the host's back is seen once it is fixed).
#[test]
fn a_resource_without_a_usable_id_stops_removals_but_not_the_rest() {
    let deployment = Deployment::quickstart();
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    complete(&mut host);

    let long = "i".repeat(2000);
    plant(&deployment, &long, "added", "");
    plant(&deployment, "carol", "deleted", "");
    deployment.write("renamed.toml", RENAMED.replace("Bob N.", "Bob Nguyen").replace("Carol D.", "Carol Diaz"));
    deployment.import(&mut host, "renamed.toml", false);
    let report = complete(&mut host);

    let alice = saas(&host).into_iter().find(|o| o.owner == "alice" && o.change.kind == ChangeKind::Modified);
    assert_eq!(alice.map(|o| o.state), Some(ProvisioningState::Verified), "{:?}", report.problems);
    assert!(
        report.problems.iter().any(|p| p.contains("2000 bytes long; at most 1024") && p.contains("removed")),
        "{:?}",
        report.problems
    );
    assert_eq!(stored_ids(&deployment), ["alice", "bob", "carol"], "nothing removed on an incomplete picture");
}

/// A malformed resource under a new id keeps what its owner had: the owner's slot is not taken
/// for empty (compute would add the resource again).
#[test]
fn a_malformed_resource_under_a_new_id_keeps_its_owners_resource() {
    let deployment = Deployment::quickstart();
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    complete(&mut host);

    plant(&deployment, "bob", "deleted", "");
    let megabyte = "x".repeat(1 << 20);
    plant_owned(&deployment, "bob-2", "bob", "added", &format!(r#","attributes":{{"note":"{megabyte}"}}"#));
    let report = complete(&mut host);

    assert!(report.problems.iter().any(|p| p.contains("`bob-2` (owner `bob`)")), "{:?}", report.problems);
    assert_eq!(report.counters.orders_created, 0, "{:?}", report.counters);
    assert_eq!(stored_ids(&deployment), ["alice", "bob", "carol"]);
}

/// A read longer than one unit's pages is a chain of units carrying one stamp: what the first
/// units saw is kept when the last page removes the unseen, and what vanished from the managed
/// system is taken for absent once the whole read has ended, and only that.
#[test]
fn a_read_of_many_pages_is_a_chain_of_units_that_removes_only_what_the_whole_read_missed() {
    let deployment = Deployment::quickstart();
    let config = std::fs::read_to_string(deployment.config_path()).expect("config");
    deployment.set_config(&config.replace("dir = \"/data\"", "dir = \"/data\"\npage-size = 1"));
    const PEOPLE: usize = 45; // one resource a page: three units of at most 20 pages
    let mut data = String::new();
    for n in 0..PEOPLE {
        data.push_str(&format!(
            "[[identities]]\nentity_type = \"Directory_User\"\nkey = \"user{n:02}\"\n\n[[assignments]]\nidentity = \"user{n:02}\"\nresource_type = \"SaaS_Account\"\nattributes = {{ userName = \"user{n:02}\" }}\n\n"
        ));
    }
    deployment.write("many.toml", data);
    let mut host = deployment.host();
    deployment.import(&mut host, "many.toml", false);
    let first = complete(&mut host);
    assert_eq!(first.counters.verified, PEOPLE as u64, "{first:?}");

    let second = complete(&mut host);
    assert!(second.problems.is_empty(), "{:?}", second.problems);
    assert_eq!(second.counters.orders_created, 0, "nothing a first unit of the chain saw was taken for absent");
    let everyone: Vec<String> = (0..PEOPLE).map(|n| format!("user{n:02}")).collect();
    assert_eq!(stored_ids(&deployment), everyone);
    let db = sqlite(&deployment.path("provision.db"));
    let chain: Vec<(i64, Option<i64>)> = db
        .prepare(
            "SELECT pages, stamp FROM work_units WHERE run = ?1 AND kind = 'synchronise' AND target = 'SaaS_Account'
             ORDER BY id",
        )
        .expect("query")
        .query_map([second.run], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("units");
    // The complete job synchronises before compute and after fulfil: two reads, two chains.
    assert_eq!(chain.iter().map(|(pages, _)| *pages).collect::<Vec<_>>(), [0, 20, 40, 0, 20, 40], "{chain:?}");
    assert!(chain[1].1.is_some() && chain[1].1 == chain[2].1, "one stamp for the whole read: {chain:?}");
    assert!(chain[4].1 == chain[5].1 && chain[4].1 > chain[1].1, "a stamp per read: {chain:?}");

    // One account is deleted behind the host's back: the read takes it, and only it, for
    // absent, and the run provisions it again.
    plant(&deployment, "user07", "deleted", "");
    let third = complete(&mut host);
    assert_eq!(third.counters.orders_created, 1, "{third:?}");
    let again: Vec<_> = saas(&host).into_iter().filter(|o| o.owner == "user07").collect();
    assert_eq!(again.len(), 2, "{again:?}");
    assert_eq!((again[1].change.kind, again[1].state), (ChangeKind::Added, ProvisioningState::Verified));
    assert_eq!(stored_ids(&deployment), everyone);
}
