//! Hot reload under load: a review rule's file is replaced while compute runs. The new version is
//! compiled and checked first, then takes the batches after the swap; a batch in flight finishes
//! on the old one; no order is lost and each is decided by exactly one version. A broken file is
//! refused and the loaded version keeps running.

use indicatif::ProgressBar;
use provision_tests::{Deployment, guests, sqlite};

const CONFIG: &str = r#"
[entity_types.Directory_User]
notifications = false

[plugins.rule]
file = "rule.wasm"

[plugins.rule.config]
review = "sensitive"

[connections.desk]
kind = "manual-ticket"

[resource_types.Account]
entity_type = "Directory_User"
connection = "desk"
classification = "sensitive"
review_rule = "rule"
"#;

const ORDERS: usize = 20_000;

#[test]
fn a_rule_replaced_mid_job_decides_every_later_batch_and_loses_nothing() {
    let deployment = Deployment::new(CONFIG);
    // Version 1: the rule built against WIT 0.1.0; version 2: the bundled 0.2.0 rule. Both
    // review `sensitive` orders, with differently worded reasons.
    let rule = deployment.write("rule.wasm", guests::LEGACY_RULE);
    let mut data = String::new();
    for n in 0..ORDERS {
        data.push_str(&format!(
            "[[identities]]\nentity_type = \"Directory_User\"\nkey = \"u{n}\"\n\n[[assignments]]\nidentity = \"u{n}\"\nresource_type = \"Account\"\n\n"
        ));
    }
    deployment.write("data.toml", data);
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    let (plugins, config, runtime) = (host.plugins.clone(), host.config.clone(), host.runtime.clone());
    let v1 = plugins.get("rule").unwrap().sha256.clone();

    let job = std::thread::spawn(move || provision::jobs::compute(&mut host, &ProgressBar::hidden()).unwrap());
    // Once the first chunk's orders are committed, the job is under way: replace the file.
    let db = sqlite(&deployment.path("provision.db"));
    let count = |sql: &str| db.query_row(sql, [], |row| row.get::<_, i64>(0)).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while count("SELECT COUNT(*) FROM orders") == 0 {
        assert!(!job.is_finished(), "the job ended before any order was seen");
        assert!(std::time::Instant::now() < deadline, "no order after 120 s");
        std::thread::yield_now();
    }
    std::fs::write(&rule, provision::plugins::bundled::get("classification-review").unwrap()).unwrap();
    let swapped = plugins.reload(&config, &runtime, "rule").unwrap();
    assert!(matches!(&swapped, provision::host::Reloaded::Swapped { from, .. } if *from == v1), "{swapped:?}");
    assert!(!job.is_finished(), "the swap must land mid-job for this test to mean anything");
    let report = job.join().unwrap();
    assert_eq!(report.counters.awaiting_approval as usize, ORDERS, "{report:?}");

    // Every order exists once and was decided once, by one version or the other.
    assert_eq!(count("SELECT COUNT(*) FROM orders") as usize, ORDERS);
    let decided = "SELECT COUNT(*) FROM order_history WHERE actor = 'plugin:rule'";
    assert_eq!(count(decided) as usize, ORDERS, "exactly one decision per order");
    let by_v1 = "FROM order_history WHERE actor = 'plugin:rule' AND reason = 'Account is classified `sensitive`'";
    let by_v2 = "FROM order_history WHERE actor = 'plugin:rule' \
                 AND reason = 'resource type Account is classified `sensitive`, which needs a review'";
    let (v1_orders, v2_orders) =
        (count(&format!("SELECT COUNT(*) {by_v1}")), count(&format!("SELECT COUNT(*) {by_v2}")));
    assert!(v1_orders > 0 && v2_orders > 0, "both versions decided: {v1_orders} and {v2_orders}");
    assert_eq!((v1_orders + v2_orders) as usize, ORDERS);
    // Batches run in id order: everything before the swap is v1's, everything after v2's.
    assert!(
        count(&format!("SELECT MAX(order_id) {by_v1}")) < count(&format!("SELECT MIN(order_id) {by_v2}")),
        "one version per batch, switched once"
    );

    // A broken file is refused; the loaded version keeps running and says why.
    let v2 = plugins.get("rule").unwrap().sha256.clone();
    std::fs::write(&rule, b"\0asm\x0d\0\x01\0 truncated").unwrap();
    let refused = plugins.reload(&config, &runtime, "rule").unwrap_err();
    assert!(refused.contains("not a valid WebAssembly component"), "{refused}");
    assert_eq!(plugins.get("rule").unwrap().sha256, v2);
    assert!(plugins.refused("rule").is_some_and(|(_, why)| why == refused));
    // The same bytes again: nothing to swap, and the refusal is cleared.
    std::fs::write(&rule, provision::plugins::bundled::get("classification-review").unwrap()).unwrap();
    assert_eq!(plugins.reload(&config, &runtime, "rule"), Ok(provision::host::Reloaded::Unchanged));
    assert!(plugins.refused("rule").is_none());
}
