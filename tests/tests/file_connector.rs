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

/// Every resource of the journal, page by page.
fn read_all(plugin: &Plugin) -> BTreeMap<String, ResourceContent> {
    let mut all = BTreeMap::new();
    let mut cursor = None;
    loop {
        let page = plugin.read("Account", cursor.as_deref()).unwrap().unwrap();
        for resource in page.resources {
            assert!(all.insert(resource.id.clone(), resource.content).is_none(), "{} read twice", resource.id);
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return all,
        }
    }
}

fn modify(id: i64, owner: &str, set: &[(&str, &str)], cleared: &[&str], granted: &[&str]) -> Order {
    let mut order = order(id, owner, ChangeKind::Modified);
    order.change.attributes = set.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    order.change.cleared = cleared.iter().map(|c| c.to_string()).collect();
    order.change.granted = granted.iter().map(|g| g.to_string()).collect();
    order
}

#[test]
fn a_resource_changed_over_several_lines_reads_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (runtime, config) = connector(dir.path());
    let plugin = runtime.load(&config).unwrap();
    let outcomes = executed(
        &plugin,
        &[order(1, "ann", ChangeKind::Added), order(2, "ben", ChangeKind::Added), order(3, "cat", ChangeKind::Added)],
    );
    assert!(outcomes.iter().all(|o| matches!(o, Outcome::Executed { .. })), "{outcomes:?}");
    // Changes in later batches, and in one batch twice over for ann.
    executed(&plugin, &[modify(4, "ann", &[("email", "ann@example.com")], &[], &["Staff"])]);
    let outcomes = executed(
        &plugin,
        &[
            modify(5, "ann", &[("email", "ann@corp.example")], &["userName"], &[]),
            modify(6, "ann", &[("title", "Engineer")], &[], &["Admins"]),
            order(7, "ben", ChangeKind::Deleted),
            order(8, "cat", ChangeKind::Deleted),
        ],
    );
    assert!(outcomes.iter().all(|o| matches!(o, Outcome::Executed { .. })), "{outcomes:?}");
    executed(&plugin, &[order(9, "cat", ChangeKind::Added)]);

    let all = read_all(&plugin);
    assert_eq!(all.keys().collect::<Vec<_>>(), ["ann", "cat"]);
    let ann = &all["ann"];
    assert_eq!(
        ann.attributes,
        BTreeMap::from([("email".to_string(), "ann@corp.example".to_string()), ("title".into(), "Engineer".into())])
    );
    assert_eq!(ann.entitlements.iter().collect::<Vec<_>>(), ["Admins", "Staff"]);
    assert_eq!(all["cat"].attributes, BTreeMap::from([("userName".to_string(), "cat".to_string())]));
    // A deleted resource cannot be changed; a re-added one is there.
    let outcomes =
        executed(&plugin, &[modify(10, "ben", &[("title", "x")], &[], &[]), order(11, "cat", ChangeKind::Added)]);
    assert!(
        matches!(&outcomes[0], Outcome::Failed { transient: false, message, .. } if message.contains("does not exist"))
    );
    assert!(
        matches!(&outcomes[1], Outcome::Failed { transient: false, message, .. } if message.contains("already exists"))
    );
}

#[test]
fn thousands_of_resources_read_back_once_each_and_the_index_rebuilds_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (runtime, mut config) = connector(dir.path());
    config.config.insert("page-size".into(), ConfigValue::Plain("700".into()));
    let plugin = runtime.load(&config).unwrap();
    // Enough to double the index's table twice.
    let owners: Vec<String> = (0..6000).map(|n| format!("user{n:05}")).collect();
    for (batch, chunk) in owners.chunks(500).enumerate() {
        let orders: Vec<Order> = chunk
            .iter()
            .enumerate()
            .map(|(n, owner)| order((batch * 500 + n) as i64, owner, ChangeKind::Added))
            .collect();
        let outcomes = executed(&plugin, &orders);
        assert!(outcomes.iter().all(|o| matches!(o, Outcome::Executed { .. })), "batch {batch}: {outcomes:?}");
    }
    let deleted: Vec<Order> = owners.iter().step_by(3).map(|o| order(10_000, o, ChangeKind::Deleted)).collect();
    let deleted: Vec<Order> = deleted
        .into_iter()
        .enumerate()
        .map(|(n, mut o)| {
            o.id = 10_000 + n as i64;
            o.idempotency_key = format!("test-{}", o.id);
            o
        })
        .collect();
    executed(&plugin, &deleted);

    let expected: Vec<&String> = owners.iter().enumerate().filter(|(n, _)| n % 3 != 0).map(|(_, o)| o).collect();
    let all = read_all(&plugin);
    assert_eq!(all.keys().collect::<Vec<_>>(), expected);

    // The index is derived: without it, or with one that no longer matches the journal, the
    // connector rebuilds it and answers the same.
    std::fs::remove_file(dir.path().join("Account.index")).unwrap();
    assert_eq!(read_all(&plugin).keys().collect::<Vec<_>>(), expected);
    let journal = std::fs::read_to_string(dir.path().join("Account.jsonl")).unwrap();
    let first_two: String = journal.lines().take(2).map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.path().join("Account.jsonl"), first_two).unwrap();
    assert_eq!(read_all(&plugin).keys().collect::<Vec<_>>(), ["user00000", "user00001"]);
    let outcomes = executed(&plugin, &[order(20_000, "user00002", ChangeKind::Added)]);
    assert_eq!(outcomes, [Outcome::Executed { resource_id: Some("user00002".into()) }]);
}
