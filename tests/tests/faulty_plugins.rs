//! Plugins that trap, loop, eat memory, answer garbage or try to leave their sandbox fail only
//! the call at hand: a review rule's orders land in Error with the guest's message or the limit
//! named in history; a connector that fails every order leaves them Pending (nothing was
//! written) and the run names the failure; everything else goes on. A plugin failing on one
//! order of a batch fails that order only, and a plugin failing call after call is disabled.

use provision::model::ProvisioningState;
use provision::store::OrderFilter;
use provision_tests::{Deployment, complete, guests, state_path};

const CONFIG: &str = r#"
[entity_types.Directory_User]

[plugins.files]
file = "bundled:file-connector"
[[plugins.files.grants.dirs]]
host = "managed"
guest = "/data"
writable = true

[plugins.good_rule]
file = "bundled:classification-review"

[plugins.bad_rule]
file = "faulty-rule.wasm"
timeout = "300ms"
memory = "16 MiB"
[plugins.bad_rule.config]
mode = "MODE"

[plugins.bad_connector]
file = "faulty-connector.wasm"
timeout = "300ms"
memory = "16 MiB"
[plugins.bad_connector.config]
mode = "MODE"
[[plugins.bad_connector.grants.dirs]]
host = "managed"
guest = "/data"
writable = true

[connections.good]
plugin = "files"

[connections.bad]
plugin = "bad_connector"

[resource_types.Healthy]
entity_type = "Directory_User"
connection = "good"
review_rule = "good_rule"

[resource_types.Reviewed_By_Bad_Rule]
entity_type = "Directory_User"
connection = "good"
review_rule = "bad_rule"

[resource_types.Fulfilled_By_Bad_Connector]
entity_type = "Directory_User"
connection = "bad"
review_rule = "good_rule"
"#;

fn deployment(mode: &str) -> Deployment {
    let deployment = Deployment::new(&CONFIG.replace("MODE", mode));
    deployment.write("faulty-rule.wasm", guests::FAULTY_RULE);
    deployment.write("faulty-connector.wasm", guests::FAULTY_CONNECTOR);
    let mut data = String::new();
    for who in ["ann", "ben"] {
        data.push_str(&format!("[[identities]]\nentity_type = \"Directory_User\"\nkey = \"{who}\"\n\n"));
        for rt in ["Healthy", "Reviewed_By_Bad_Rule", "Fulfilled_By_Bad_Connector"] {
            data.push_str(&format!(
                "[[assignments]]\nidentity = \"{who}\"\nresource_type = \"{rt}\"\nattributes = {{ name = \"{who}\" }}\n\n"
            ));
        }
    }
    deployment.write("data.toml", data);
    deployment
}

fn orders(host: &provision::host::Host, resource_type: &str) -> Vec<provision::model::Order> {
    host.store.orders(&OrderFilter { resource_types: vec![resource_type.into()], ..OrderFilter::default() }).unwrap()
}

/// Runs the complete job with both faulty plugins in `mode` and checks where every order went.
fn run_faulty(mode: &str, expected: &[&str]) -> (Deployment, provision::host::Host) {
    let deployment = deployment(mode);
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    let report = complete(&mut host);
    assert!(!report.problems.is_empty(), "the failures should be reported as problems");

    for order in orders(&host, "Healthy") {
        assert_eq!(state_path(&host, order.id), [1, 8, 4], "a healthy order suffered from the faulty plugins");
    }
    let list = orders(&host, "Reviewed_By_Bad_Rule");
    assert_eq!(list.len(), 2);
    for order in list {
        assert_eq!(order.state, ProvisioningState::Error, "rule order {} ({mode})", order.id);
        let reason = host.store.history(order.id).unwrap().pop().unwrap().reason;
        assert!(
            expected.iter().any(|e| reason.contains(e)),
            "rule ({mode}): reason {reason:?} should name one of {expected:?}"
        );
    }
    // The connector failed on the whole batch: nothing was written, the orders wait in Pending,
    // their attempts are closed as not sent, and the run says why.
    let list = orders(&host, "Fulfilled_By_Bad_Connector");
    assert_eq!(list.len(), 2);
    for order in list {
        assert_eq!(state_path(&host, order.id), [1], "connector order {} ({mode})", order.id);
        let attempts = host.store.attempts(order.id).unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].outcome.as_deref(), Some("not-sent"));
    }
    assert!(
        report.problems.iter().any(|p| p.contains("bad_connector") && expected.iter().any(|e| p.contains(e))),
        "{mode}: {:?} should name one of {expected:?}",
        report.problems
    );
    (deployment, host)
}

#[test]
fn a_panicking_plugin_fails_its_orders_with_the_panic_message() {
    run_faulty("panic", &["rule exploded on order", "connector exploded on order"]);
}

#[test]
fn a_looping_plugin_is_stopped_by_its_time_limit() {
    run_faulty("loop", &["exceeded its time limit of 300ms"]);
}

#[test]
fn a_sleeping_plugin_is_stopped_by_its_time_limit() {
    // The epoch deadline only interrupts guest code that runs; a guest blocked in a sleep was
    // waited on without end. Two orders: the batch and its two halves wait out 300 ms each.
    let started = std::time::Instant::now();
    run_faulty("sleep", &["exceeded its time limit of 300ms"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "took {:?}", started.elapsed());
}

#[test]
fn a_plugin_that_eats_memory_is_stopped_by_its_memory_limit() {
    run_faulty("alloc", &["exceeded its memory limit of 16.0 MiB"]);
}

#[test]
fn a_plugin_that_answers_garbage_is_refused() {
    run_faulty("garbage", &["returned 0 decisions for", "outcomes for"]);
}

#[test]
fn orders_in_error_are_evaluated_again_once_the_rule_is_fixed() {
    let (deployment, host) = run_faulty("panic", &["exploded"]);
    drop(host);
    deployment.set_config(&CONFIG.replace("MODE", "review"));
    let mut host = deployment.host();
    complete(&mut host);
    for order in orders(&host, "Reviewed_By_Bad_Rule") {
        assert_eq!(state_path(&host, order.id), [7, 5], "order {}", order.id);
        assert_eq!(host.store.history(order.id).unwrap()[1].actor, "plugin:bad_rule");
    }
}

#[test]
fn a_connector_reaches_nothing_it_was_not_granted() {
    provision_tests::logs();
    let deployment = deployment("escape");
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    complete(&mut host);
    let order = orders(&host, "Fulfilled_By_Bad_Connector").remove(0);
    assert_eq!(order.state, ProvisioningState::Errored);
    let message = order.message.unwrap();
    assert!(!message.contains("READ"), "the guest read a file outside its grant: {message}");
    for path in ["/etc/passwd", "/data/../etc/passwd", "../etc/passwd", "/proc/self/environ"] {
        assert!(message.contains(&format!("{path}: refused")), "{path} not refused: {message}");
    }
    assert!(message.contains("env vars: 0"), "the guest saw the host's environment: {message}");
    // No link that leads out of the grant was planted; one to a name inside it was made.
    for (link, target) in [("way-out", "../../../.."), ("etc", "/etc")] {
        assert!(message.contains(&format!("link /data/{link} -> {target}: refused")), "{message}");
        assert!(std::fs::symlink_metadata(deployment.path("managed").join(link)).is_err(), "{link} was planted");
    }
    assert!(message.contains("link /data/inside -> journal: CREATED"), "{message}");
    let inside = std::fs::read_link(deployment.path("managed").join("inside")).unwrap();
    assert_eq!(inside, std::path::Path::new("journal"));
    assert!(provision_tests::logs().contains("refused a symbolic link"), "the refusal is not in the log");
}
