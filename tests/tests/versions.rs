//! WIT versions: a component built against the frozen `provision:plugin@0.1.0` keeps loading
//! and working next to 0.2.0 ones; a component from a version the host does not know is refused
//! naming it; `describe` (new in 0.2.0) reaches the host and guards the resource types.

use std::collections::BTreeMap;

use provision::config::{ConfigValue, PluginConfig, PluginSource};
use provision::host::{Host, OpenError};
use provision::model::{Change, Order, ProvisioningState, ResourceContent};
use provision::plugins::{Decision, Runtime, World};
use provision_tests::{Deployment, guests};

fn runtime() -> Runtime {
    Runtime::new(Some(std::path::Path::new(provision_tests::CACHE_DIR))).unwrap()
}

fn file(bytes: &[u8]) -> PluginSource {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    PluginSource::File(file.into_temp_path().keep().unwrap())
}

/// A rule deciding on classifications: `sensitive` needs a review, `forbidden` is blocked.
fn rule(name: &str, source: PluginSource) -> PluginConfig {
    let mut config = PluginConfig::new(name, source);
    config.config = BTreeMap::from([
        ("review".to_string(), ConfigValue::Plain("sensitive".to_string())),
        ("block".to_string(), ConfigValue::Plain("forbidden".to_string())),
    ]);
    config
}

fn order(id: i64, classification: &str) -> Order {
    let content = ResourceContent { attributes: [("userName".into(), "u".into())].into(), ..Default::default() };
    Order {
        id,
        idempotency_key: format!("k-{id}"),
        owner: format!("u{id}"),
        entity_type: "Directory_User".into(),
        resource_type: "Account".into(),
        classification: classification.into(),
        resource_id: None,
        change: Change::between(None, Some(&content)).unwrap(),
        state: ProvisioningState::Pending,
        closed: None,
        message: None,
        attempts: 0,
        created_at: 0,
        updated_at: 0,
        next_attempt_at: None,
        held_run: None,
    }
}

fn kind(decision: &Decision) -> &'static str {
    match decision {
        Decision::NoReview => "no-review",
        Decision::ReviewNeeded(_) => "review-needed",
        Decision::Blocked(_) => "blocked",
    }
}

#[test]
fn a_0_1_0_component_loads_and_decides_next_to_a_0_2_0_one() {
    let runtime = runtime();
    let legacy = runtime.load(&rule("legacy", file(guests::LEGACY_RULE))).unwrap();
    let current = runtime.load(&rule("current", PluginSource::Bundled("classification-review".into()))).unwrap();
    assert_eq!((legacy.wit_version(), current.wit_version()), ("0.1.0", "0.2.0"));
    assert_eq!(legacy.worlds(), [World::ReviewRule]);
    assert!(legacy.description().is_none(), "0.1.0 has no describe");
    let description = current.description().expect("0.2.0 components describe themselves");
    assert_eq!(description.name, "classification-review");

    let orders: Vec<Order> =
        ["basic", "sensitive", "forbidden", "basic"].iter().enumerate().map(|(i, c)| order(i as i64 + 1, c)).collect();
    let old = legacy.evaluate(&orders).unwrap();
    let new = current.evaluate(&orders).unwrap();
    let kinds = |d: &[Decision]| d.iter().map(kind).collect::<Vec<_>>();
    assert_eq!(kinds(&old), ["no-review", "review-needed", "blocked", "no-review"]);
    assert_eq!(kinds(&old), kinds(&new), "both versions decide alike");
    // The legacy rule's own reason text came through the 0.1.0 export intact.
    assert_eq!(old[1], Decision::ReviewNeeded("Account is classified `sensitive`".into()));
}

/// `bytes` with every `from` replaced by `to`, which must have the same length (component names
/// are length-prefixed strings, so the component stays well-formed).
fn replaced(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = bytes.to_vec();
    let mut at = 0;
    let mut count = 0;
    while let Some(i) = out[at..].windows(from.len()).position(|w| w == from.as_bytes()) {
        out[at + i..at + i + to.len()].copy_from_slice(to.as_bytes());
        at += i + to.len();
        count += 1;
    }
    assert!(count > 0, "`{from}` not found");
    out
}

#[test]
fn a_component_from_a_future_version_is_refused_naming_it() {
    let future = replaced(guests::LEGACY_RULE, "provision:plugin/evaluate@0.1.0", "provision:plugin/evaluate@9.1.0");
    let future = replaced(&future, "provision:plugin/log@0.1.0", "provision:plugin/log@9.1.0");
    let future = replaced(&future, "provision:plugin/config@0.1.0", "provision:plugin/config@9.1.0");
    let future = replaced(&future, "provision:plugin/types@0.1.0", "provision:plugin/types@9.1.0");
    let error = runtime().load(&rule("future", file(&future))).err().expect("refused");
    let message = error.to_string();
    assert!(message.contains("provision:plugin@9.1.0, a version this host does not know"), "{message}");
    assert!(message.contains("0.2.0, 0.1.0"), "names what it loads: {message}");
}

#[test]
fn a_plugin_made_for_other_resource_types_is_refused_where_the_config_binds_it() {
    // The bundled rule says it is made for any resource type: the quickstart loads.
    let deployment = Deployment::quickstart();
    assert!(Host::open(deployment.config().unwrap()).is_ok());
    let described = runtime().load(&rule("x", PluginSource::Bundled("classification-review".into()))).unwrap();
    assert!(described.description().unwrap().resource_types.is_empty());

    // The http-probe test connector describes itself as made for `Probe_Account` only (see its
    // source); binding it to SaaS_Account is a config error naming the key.
    let config = r#"
[entity_types.Directory_User]

[plugins.probe]
file = "http-probe.wasm"

[connections.saas]
plugin = "probe"

[resource_types.SaaS_Account]
entity_type = "Directory_User"
connection = "saas"
"#;
    let deployment = Deployment::new(config);
    deployment.write("http-probe.wasm", guests::HTTP_PROBE);
    match Host::open(deployment.config().unwrap()) {
        Err(OpenError::Config(error)) => {
            assert_eq!(error.key, "resource_types.SaaS_Account.connection");
            assert!(
                error.message.contains("is made for the resource types Probe_Account, not SaaS_Account"),
                "{error}"
            );
        }
        Err(other) => panic!("expected a config error, got {other}"),
        Ok(_) => panic!("the config was accepted"),
    }
}
