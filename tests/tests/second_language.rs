//! A plugin in a second language: the classification review rule written in Python
//! (`examples/plugins/python-review-rule`), built into a component by componentize-py from
//! `tests/.venv`, loaded by the host and deciding exactly as the bundled Rust rule does, on the
//! shared fixture and on every combination of classification and change kind.

use std::path::{Path, PathBuf};
use std::process::Command;

use provision::config::{ConfigValue, PluginConfig, PluginSource};
use provision::model::{Change, ChangeKind, Order, ProvisioningState, ResourceContent};
use provision::plugins::probe::{self, Fixture};
use provision::plugins::{Plugin, Runtime, World};
use provision_tests::servers::venv_python;

/// Builds the Python rule with componentize-py, as its README says, into `dir`.
fn build_python_rule(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = dir.join("python-review-rule.wasm");
    let status = Command::new(venv_python().with_file_name("componentize-py"))
        .arg("--quiet")
        .arg("-d")
        .arg(root.join("wit"))
        .args(["-w", "review-rule", "componentize", "-p"])
        .arg(root.join("examples/plugins/python-review-rule"))
        .arg("app")
        .arg("-o")
        .arg(&output)
        .status()
        .expect("run componentize-py (tests/setup.sh installs it)");
    assert!(status.success(), "componentize-py failed: {status}");
    output
}

fn load(runtime: &Runtime, source: PluginSource) -> Plugin {
    let mut config = PluginConfig::new("rule", source);
    config.config = [("review", "sensitive"), ("block", "forbidden"), ("changes", "added,modified")]
        .iter()
        .map(|(k, v)| (k.to_string(), ConfigValue::Plain(v.to_string())))
        .collect();
    runtime.load(&config).unwrap().probed()
}

fn order(id: i64, classification: &str, kind: ChangeKind) -> Order {
    let content = ResourceContent { attributes: [("userName".into(), format!("u{id}"))].into(), ..Default::default() };
    let mut change = Change::between(None, Some(&content)).unwrap();
    change.kind = kind;
    Order {
        id,
        idempotency_key: format!("k-{id}"),
        owner: format!("u{id}"),
        entity_type: "Directory_User".into(),
        resource_type: format!("Type_{}", id % 7),
        classification: classification.into(),
        resource_id: (kind != ChangeKind::Added).then(|| format!("u{id}")),
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

#[test]
fn the_python_rule_decides_exactly_as_the_rust_one() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = build_python_rule(dir.path());
    let runtime = Runtime::new(Some(Path::new(provision_tests::CACHE_DIR))).unwrap();
    let python = load(&runtime, PluginSource::File(wasm));
    let rust = load(&runtime, PluginSource::Bundled("classification-review".into()));
    assert_eq!(python.worlds(), [World::ReviewRule]);
    assert_eq!(python.description().map(|d| d.name.as_str()), Some("python-classification-review"));

    // The shared fixture: both pass it, with identical results.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fixtures/review-rule.json");
    let fixture = Fixture::parse(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    let from_python = probe::run(&python, &fixture).unwrap();
    let from_rust = probe::run(&rust, &fixture).unwrap();
    assert!(from_python.passed() && from_rust.passed(), "{from_python:?}\n{from_rust:?}");
    assert_eq!(from_python.results, from_rust.results);

    // Every classification with every change kind (deletions are outside `changes`).
    let mut orders = Vec::new();
    for (i, classification) in ["basic", "sensitive", "forbidden", "unknown"].iter().enumerate() {
        for (j, kind) in [ChangeKind::Added, ChangeKind::Modified, ChangeKind::Deleted].into_iter().enumerate() {
            orders.push(order((i * 3 + j) as i64 + 1, classification, kind));
        }
    }
    let decisions = python.evaluate(&orders).unwrap();
    assert_eq!(decisions, rust.evaluate(&orders).unwrap());
    let reviewed = decisions.iter().filter(|d| matches!(d, provision::plugins::Decision::ReviewNeeded(_))).count();
    let blocked = decisions.iter().filter(|d| matches!(d, provision::plugins::Decision::Blocked(_))).count();
    assert_eq!((reviewed, blocked), (2, 2), "added and modified of sensitive and forbidden: {decisions:?}");
}
