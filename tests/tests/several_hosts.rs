//! Hosts that share a database but not their config: one whose plugins decide orders
//! differently (another component behind the same name, so another sha256) takes no unit of a
//! run another host started, and says which key differs. (`postgres_e2e` runs this on
//! PostgreSQL too, where several hosts are the point.)

use provision::jobs::JobError;
use provision_tests::{Deployment, guests};

#[test]
fn a_host_whose_plugin_differs_from_the_runs_is_refused_naming_it() {
    let deployment = Deployment::quickstart();
    let mut first = deployment.host();
    deployment.import(&mut first, "data.toml", false);
    // The first host starts a run (and dies before any unit is done: nothing else is needed).
    let decides = first.decides();
    let started = first.store.start_run("complete", &["synchronise"], &[], &decides, Some(&first.config)).unwrap();
    let provision::store::Started::New(run) = started else { panic!("{started:?}") };
    drop(first);

    // The second host's review rule is another component under the same plugin name.
    deployment.write("rule.wasm", guests::LEGACY_RULE);
    let config = std::fs::read_to_string(deployment.config_path()).unwrap();
    let changed = config.replace("file = \"bundled:classification-review\"", "file = \"rule.wasm\"");
    assert_ne!(changed, config);
    deployment.set_config(&changed);
    let mut second = deployment.host();
    let refused = provision_tests::try_complete(&mut second).unwrap_err();
    let JobError::ConfigDiffers { run: refused_run, .. } = &refused else { panic!("{refused}") };
    assert_eq!(*refused_run, run);
    let message = refused.to_string();
    assert!(message.contains("plugins.classification.sha256"), "{message}");
    assert!(!message.contains("plugins.files"), "only what differs is named: {message}");
    assert_eq!(second.store.job_run(run).unwrap().status, "running", "the run is left to its own hosts");
    assert!(second.store.job_run(run).unwrap().hosts.is_empty(), "the refused host did no unit");
}
