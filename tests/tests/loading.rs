//! Loading plugins: from the binary or a file, checked against a sha256 pin, compiled once and
//! then loaded from the on-disk cache; config and data errors that name file, key and line.

use std::sync::Arc;

use provision::config::{PluginConfig, PluginSource};
use provision::host::{Host, OpenError};
use provision::permissions::{Directory, DirectoryUser};
use provision::plugins::{Event, EventKind, OrderSummary, Runtime, World, bundled};
use provision_tests::{Deployment, guests};

const CONFIG: &str = r#"
[entity_types.Directory_User]

[plugins.rule]
file = "faulty-rule.wasm"
PIN

[connections.saas]
plugin = "CONNECTOR"

[resource_types.SaaS_Account]
entity_type = "Directory_User"
connection = "saas"
review_rule = "rule"
"#;

fn deployment(pin: &str, connector: &str) -> Deployment {
    let deployment = Deployment::new(&CONFIG.replace("PIN", pin).replace("CONNECTOR", connector));
    deployment.write("faulty-rule.wasm", guests::FAULTY_RULE);
    deployment
}

/// The 1-based line of the first line of `file` containing `text`.
fn line_of(file: &std::path::Path, text: &str) -> usize {
    let content = std::fs::read_to_string(file).unwrap();
    content.lines().position(|l| l.contains(text)).unwrap() + 1
}

fn open_error(deployment: &Deployment) -> provision::config::SourceError {
    match Host::open(deployment.config().unwrap()) {
        Err(OpenError::Config(error)) => error,
        Err(other) => panic!("expected a config error, got {other}"),
        Ok(_) => panic!("the config was accepted"),
    }
}

fn sha256(bytes: &[u8]) -> String {
    let runtime = Runtime::new(None).unwrap();
    let plugin = runtime.load(&plugin_config("x", PluginSource::File(write_temp(bytes)))).unwrap();
    plugin.sha256
}

fn write_temp(bytes: &[u8]) -> std::path::PathBuf {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    file.into_temp_path().keep().unwrap()
}

fn plugin_config(name: &str, source: PluginSource) -> PluginConfig {
    PluginConfig::new(name, source)
}

#[test]
fn a_wrong_sha256_pin_is_refused_naming_file_key_and_line() {
    let pin = format!("sha256 = \"{}\"", "0".repeat(64));
    let deployment = deployment(&pin, "rule");
    let error = open_error(&deployment);
    assert_eq!(error.key, "plugins.rule.sha256");
    assert_eq!(error.file, deployment.config_path());
    assert_eq!(error.position.map(|p| p.0), Some(line_of(&deployment.config_path(), "sha256 =")));
    assert!(error.message.contains("sha256 mismatch"), "{error}");
    assert!(error.to_string().contains(&deployment.config_path().display().to_string()), "{error}");
}

#[test]
fn a_right_pin_loads_and_a_plugin_of_the_wrong_world_is_refused() {
    let pin = format!("sha256 = \"{}\"", sha256(guests::FAULTY_RULE));
    // The rule is pinned right, but used as the connection's connector.
    let error = open_error(&deployment(&pin, "rule"));
    assert_eq!(error.key, "connections.saas.plugin");
    assert!(error.message.contains("plugin `rule` is a review-rule, not a connector"), "{error}");
}

#[test]
fn an_unknown_resource_type_in_the_desired_state_is_named() {
    let deployment = Deployment::quickstart();
    let host = deployment.host();
    let data = std::fs::read_to_string(deployment.path("data.toml"))
        .unwrap()
        .replace("Finance_Group_Membership", "Finance_Group");
    deployment.write("data.toml", data);
    let error = provision::import::load(&deployment.path("data.toml"), &host.config, &host.store).unwrap_err();
    assert_eq!(error.key, "assignments[3].resource_type");
    assert_eq!(error.position.map(|p| p.0), Some(line_of(&deployment.path("data.toml"), "\"Finance_Group\"")));
    assert!(error.message.contains("unknown resource type `Finance_Group`"), "{error}");
}

#[test]
fn compiled_components_are_cached_and_a_damaged_cache_entry_is_recompiled() {
    let cache = tempfile::tempdir().unwrap();
    let config = plugin_config("files", PluginSource::Bundled("file-connector".into()));

    let cold = Runtime::new(Some(cache.path())).unwrap().load(&config).unwrap();
    assert!(!cold.from_cache);
    let warm = Runtime::new(Some(cache.path())).unwrap().load(&config).unwrap();
    assert!(warm.from_cache);
    assert_eq!(warm.worlds(), [World::Connector]);
    assert!(warm.can_read());

    for entry in std::fs::read_dir(cache.path()).unwrap() {
        std::fs::write(entry.unwrap().path(), b"not native code").unwrap();
    }
    let again = Runtime::new(Some(cache.path())).unwrap().load(&config).unwrap();
    assert!(!again.from_cache, "a damaged artifact must be recompiled, not used");
    assert!(Runtime::new(Some(cache.path())).unwrap().load(&config).unwrap().from_cache);
}

#[test]
fn every_bundled_plugin_loads_from_the_binary_and_from_a_file() {
    let runtime = Runtime::new(None).unwrap();
    let expected = [
        ("file-connector", World::Connector),
        ("classification-review", World::ReviewRule),
        ("permission-router", World::NotificationRouter),
        ("scim-connector", World::Connector),
    ];
    assert_eq!(bundled::ALL.len(), expected.len());
    for (name, world) in expected {
        let from_binary = runtime.load(&plugin_config(name, PluginSource::Bundled(name.into()))).unwrap();
        let file = write_temp(bundled::get(name).unwrap());
        let from_file = runtime.load(&plugin_config(name, PluginSource::File(file))).unwrap();
        assert_eq!(from_binary.worlds(), [world]);
        assert_eq!(from_binary.sha256, from_file.sha256);
    }
    let error = runtime.load(&plugin_config("junk", PluginSource::File(write_temp(b"\0asm junk")))).err().unwrap();
    assert!(error.to_string().contains("not a valid WebAssembly component"), "{error}");
}

#[test]
fn the_permission_router_notifies_only_exact_holders() {
    let runtime = Runtime::new(None).unwrap();
    let router = runtime.load(&plugin_config("router", PluginSource::Bundled("permission-router".into()))).unwrap();
    let user = |login: &str, path: &str| DirectoryUser {
        login: login.into(),
        display_name: login.into(),
        email: Some(format!("{login}@example.com")),
        permissions: vec![path.into()],
    };
    let directory = Arc::new(Directory {
        users: vec![
            user("exact", "/Custom/ProvisioningPolicy/PerformManualProvisioning/Directory_User"),
            user("parent", "/Custom/ProvisioningPolicy/PerformManualProvisioning/"),
            user("other-type", "/Custom/ProvisioningPolicy/PerformManualProvisioning/Device"),
            user("reviewer", "/Custom/ProvisioningPolicy/ReviewProvisioning/Directory_User"),
        ],
    });
    let order = OrderSummary {
        id: 7,
        owner: "alice".into(),
        resource_type: "Badge".into(),
        change: provision::model::ChangeKind::Added,
        reason: String::new(),
    };
    let event = |kind, entity_type: &str| Event { kind, entity_type: entity_type.into(), orders: vec![order.clone()] };
    let routed = router
        .route(
            &[
                event(EventKind::ManualOrdersTransmitted, "Directory_User"),
                event(EventKind::OrdersAwaitingApproval, "Directory_User"),
                event(EventKind::ManualOrdersTransmitted, "Contractor"),
            ],
            directory,
        )
        .unwrap();
    let manual = routed[0].as_ref().unwrap();
    assert_eq!(manual.len(), 1);
    assert_eq!(manual[0].recipients, ["exact"], "a parent permission must not receive the notification");
    assert!(manual[0].subject.contains("1 Directory_User order"), "{}", manual[0].subject);
    assert!(manual[0].body.contains("order 7: create Badge for alice"), "{}", manual[0].body);
    assert_eq!(routed[1].as_ref().unwrap()[0].recipients, ["reviewer"]);
    assert!(routed[2].as_ref().unwrap().is_empty(), "nobody holds the Contractor permission");
}
