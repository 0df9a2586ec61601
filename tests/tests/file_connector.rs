//! The file connector as plugin authors will read it: idempotent on the order's key, repairing a
//! line torn by a crash, refusing orders it cannot apply.

use std::collections::BTreeMap;

use provision::config::{ConfigValue, DirGrant, PluginConfig, PluginSource};
use provision::model::{Change, ChangeKind, Order, ProvisioningState, ResourceContent};
use provision::plugins::{Outcome, Plugin, Runtime};

fn connector(dir: &std::path::Path) -> (Runtime, PluginConfig) {
    let mut config = PluginConfig::new("files", PluginSource::Bundled("file-connector".into()));
    config.dirs = vec![DirGrant { host: dir.to_path_buf(), guest: "/data".into(), writable: true }];
    config.config = BTreeMap::from([("dir".to_string(), ConfigValue::Plain("/data".to_string()))]);
    (Runtime::new(Some(std::path::Path::new(provision_tests::CACHE_DIR))).unwrap(), config)
}

fn order(id: i64, owner: &str, kind: ChangeKind) -> Order {
    let content =
        ResourceContent { attributes: [("userName".into(), owner.into())].into(), entitlements: Default::default() };
    let mut change = Change::between(None, Some(&content)).unwrap();
    change.kind = kind;
    Order {
        id,
        idempotency_key: format!("test-{id}"),
        owner: owner.into(),
        entity_type: "Directory_User".into(),
        resource_type: "Account".into(),
        classification: "basic".into(),
        resource_id: (kind != ChangeKind::Added).then(|| owner.to_string()),
        change,
        state: ProvisioningState::Pending,
        closed: None,
        message: None,
        attempts: 1,
        created_at: 0,
        updated_at: 0,
        next_attempt_at: None,
        held_run: None,
    }
}

fn lines(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("Account.jsonl")).unwrap_or_default().lines().map(String::from).collect()
}

fn executed(plugin: &Plugin, orders: &[Order]) -> Vec<Outcome> {
    plugin.fulfil(orders).unwrap()
}

#[test]
fn an_order_sent_again_with_its_key_is_not_written_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (runtime, config) = connector(dir.path());
    let plugin = runtime.load(&config).unwrap();
    let first = executed(&plugin, &[order(1, "ann", ChangeKind::Added)]);
    // The host crashed before recording the outcome; the order is sent again.
    let again = executed(&plugin, &[order(1, "ann", ChangeKind::Added), order(2, "ben", ChangeKind::Added)]);
    assert_eq!(first, [Outcome::Executed { resource_id: Some("ann".into()) }]);
    assert_eq!(again[0], first[0], "a repeated order is reported executed");
    assert_eq!(lines(dir.path()).len(), 2, "{:?}", lines(dir.path()));
}

#[test]
fn a_torn_last_line_is_cut_off_and_the_order_written_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (runtime, config) = connector(dir.path());
    let plugin = runtime.load(&config).unwrap();
    executed(&plugin, &[order(1, "ann", ChangeKind::Added)]);
    // A crash in the middle of writing the next line.
    let mut journal = std::fs::read(dir.path().join("Account.jsonl")).unwrap();
    journal.extend_from_slice(br#"{"key":"test-2","order":2,"chan"#);
    std::fs::write(dir.path().join("Account.jsonl"), journal).unwrap();

    let page = plugin.read("Account", None).unwrap().unwrap();
    assert_eq!(page.resources.len(), 1, "read skips the torn line");
    assert_eq!(
        executed(&plugin, &[order(2, "ben", ChangeKind::Added)]),
        [Outcome::Executed { resource_id: Some("ben".into()) }]
    );
    let lines = lines(dir.path());
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines.iter().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()), "{lines:?}");
}

#[test]
fn orders_it_cannot_apply_are_refused_permanently() {
    let dir = tempfile::tempdir().unwrap();
    let (runtime, config) = connector(dir.path());
    let plugin = runtime.load(&config).unwrap();
    let outcomes = executed(
        &plugin,
        &[
            order(1, "ann", ChangeKind::Modified),
            order(2, "ann", ChangeKind::Added),
            order(3, "ann", ChangeKind::Added),
        ],
    );
    assert!(
        matches!(&outcomes[0], Outcome::Failed { transient: false, message, .. } if message.contains("does not exist"))
    );
    assert_eq!(outcomes[1], Outcome::Executed { resource_id: Some("ann".into()) });
    assert!(
        matches!(&outcomes[2], Outcome::Failed { transient: false, message, .. } if message.contains("already exists"))
    );
    assert_eq!(lines(dir.path()).len(), 1);
}
