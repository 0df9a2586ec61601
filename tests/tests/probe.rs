//! `provision plugin test`'s engine on test guests: a trapping guest fails with its panic message
//! and no results; the guest's log lines and memory are reported.

use std::collections::BTreeMap;

use provision::config::{ConfigValue, PluginConfig, PluginSource};
use provision::plugins::Runtime;
use provision::plugins::probe::{self, Fixture};
use provision_tests::guests;

fn fixture() -> Fixture {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fixtures/review-rule.json");
    Fixture::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn load(bytes: &[u8], values: &[(&str, &str)]) -> provision::plugins::Plugin {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    let mut config = PluginConfig::new("probe", PluginSource::File(file.into_temp_path().keep().unwrap()));
    config.config =
        values.iter().map(|(k, v)| (k.to_string(), ConfigValue::Plain(v.to_string()))).collect::<BTreeMap<_, _>>();
    Runtime::new(Some(std::path::Path::new(provision_tests::CACHE_DIR))).unwrap().load(&config).unwrap().probed()
}

#[test]
fn a_trapping_guest_fails_the_test_with_its_panic_message() {
    let plugin = load(guests::FAULTY_RULE, &[("mode", "panic")]);
    let report = probe::run(&plugin, &fixture()).unwrap();
    assert!(!report.passed());
    assert!(report.results.is_empty());
    let error = report.error.unwrap();
    assert!(error.contains("rule exploded on order 1"), "{error}");
    assert!(report.cost.output.contains("rule exploded"), "the guest's stderr is shown: {}", report.cost.output);
}

#[test]
fn log_lines_and_memory_of_the_call_are_reported() {
    let plugin = load(guests::LEGACY_RULE, &[("review", "sensitive"), ("block", "forbidden")]);
    let report = probe::run(&plugin, &fixture()).unwrap();
    assert!(report.passed(), "{report:?}");
    let logged: Vec<&str> = report.cost.logs.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(logged, ["decided order=1", "decided order=2", "decided order=3"]);
    assert!(report.cost.logs.iter().all(|l| l.level == "debug"));
    assert!(report.cost.peak_memory >= 64 * 1024, "at least one wasm page: {}", report.cost.peak_memory);
}
