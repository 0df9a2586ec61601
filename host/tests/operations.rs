//! Operating the host from the CLI: simulations, runs held by a threshold (list, resume,
//! cancel), retrying errored orders, plugin health.

use std::path::PathBuf;
use std::process::Output;

mod common;
use common::{run, text};

use serde_json::Value;

struct Demo {
    dir: tempfile::TempDir,
}

impl Demo {
    fn new() -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let out = run(dir.path(), &["demo", "--dir", "."]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        Demo { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, args: &[&str]) -> Output {
        run(self.dir.path(), args)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.run(&all);
        assert!(out.status.success() || out.status.code() == Some(4), "{args:?}: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out.stdout)))
    }

    fn append_config(&self, extra: &str) {
        let config = std::fs::read_to_string(self.path("provision.toml")).unwrap();
        std::fs::write(self.path("provision.toml"), format!("{config}\n{extra}\n")).unwrap();
    }

    fn import(&self, data: &str) {
        std::fs::write(self.path("more.toml"), data).unwrap();
        let out = self.run(&["import", "more.toml"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
}

const NEWCOMERS: &str = r#"
[[identities]]
entity_type = "Directory_User"
key = "dan"

[[identities]]
entity_type = "Directory_User"
key = "eve"

[[assignments]]
identity = "dan"
resource_type = "SaaS_Account"
attributes = { userName = "dan" }

[[assignments]]
identity = "eve"
resource_type = "SaaS_Account"
attributes = { userName = "eve" }
"#;

#[test]
fn a_simulation_predicts_and_a_held_run_waits_for_an_operator() {
    let demo = Demo::new();
    demo.append_config("[resource_types.SaaS_Account.thresholds]\nadded = 1");
    demo.import(NEWCOMERS);
    let runs_before = demo.json(&["job", "list"]).as_array().unwrap().len();

    let simulation = demo.json(&["job", "run", "--dry-run"]);
    let accounts = &simulation["resource_types"]["SaaS_Account"];
    assert_eq!(accounts["changes"]["added"]["orders"], 2, "{simulation}");
    assert_eq!(accounts["exceeded"]["limits"]["added"], 1, "{simulation}");
    let out = demo.run(&["job", "run", "--dry-run"]);
    assert!(text(&out.stdout).contains("THRESHOLD EXCEEDED (added 2 > 1)"), "{}", text(&out.stdout));
    assert_eq!(demo.json(&["job", "list"]).as_array().unwrap().len(), runs_before, "a dry run recorded a run");

    let out = demo.run(&["job", "run"]);
    assert_eq!(out.status.code(), Some(4), "a held run is a run with problems: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("threshold exceeded for SaaS_Account: added 2 > 1"), "{}", text(&out.stdout));
    let runs = demo.json(&["job", "list"]);
    let held = &runs[0];
    assert_eq!(held["status"], "threshold exceeded");
    assert_eq!(held["holds"][0]["resource_type"], "SaaS_Account");
    let run_id = held["id"].as_i64().unwrap().to_string();
    let pending = demo.json(&["orders", "list", "--state", "pending"]);
    assert_eq!(pending.as_array().unwrap().len(), 2);
    assert!(pending.as_array().unwrap().iter().all(|o| o["owner"] == "dan" || o["owner"] == "eve"));

    let out = demo.run(&["job", "resume", &run_id]);
    assert_eq!(out.status.code(), Some(2), "resume needs --user");
    let out = demo.run(&["job", "resume", &run_id, "--user", "nobody"]);
    assert_ne!(out.status.code(), Some(0));
    let out = demo.run(&["job", "resume", &run_id, "--user", "rita"]);
    assert_eq!(out.status.code(), Some(5), "a reviewer may not operate: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("/Custom/ProvisioningPolicy/Operate"), "{}", text(&out.stderr));
    let out = demo.run(&["job", "resume", &run_id, "--user", "root"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("2 held orders released"), "{}", text(&out.stdout));
    let out = demo.run(&["job", "cancel", &run_id, "--user", "root"]);
    assert!(text(&out.stderr).contains("already resumed"), "{}", text(&out.stderr));
    let out = demo.run(&["job", "run", "--only", "fulfil"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(demo.json(&["orders", "list", "--state", "pending"]).as_array().unwrap().is_empty());

    // Two more newcomers are held again; this time the operator cancels: their orders close.
    demo.import(&NEWCOMERS.replace("dan", "fay").replace("eve", "gus"));
    let out = demo.run(&["job", "run"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let run_id = demo.json(&["job", "list"])[0]["id"].as_i64().unwrap().to_string();
    let out = demo.run(&["job", "cancel", &run_id, "--user", "root"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("2 held orders closed"), "{}", text(&out.stdout));
    for owner in ["fay", "gus"] {
        let orders = demo.json(&["orders", "list", "--owner", owner]);
        assert_eq!(orders[0]["state"]["number"], 0, "{orders}");
        assert!(orders[0]["closed"].is_string(), "{orders}");
    }
    let out = demo.run(&["job", "resume", &run_id, "--user", "root"]);
    assert!(!out.status.success(), "a cancelled run cannot be resumed: {}", text(&out.stdout));
}

#[test]
fn errored_orders_are_retried_by_id_or_by_selection() {
    let demo = Demo::new();
    for id in ["1", "2"] {
        let out = demo.run(&["manual", "report-error", id, "--user", "hank", "--message", "printer jammed"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    // Retrying is operating the host: the same `Operate` the API asks for, whoever asks.
    let out = demo.run(&["orders", "retry", "1", "--user", "hank"]);
    assert_eq!(out.status.code(), Some(5), "hank may not operate: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("/Custom/ProvisioningPolicy/Operate"), "{}", text(&out.stderr));
    assert_eq!(demo.json(&["orders", "show", "1"])["state"]["number"], 3, "a refused retry changes nothing");
    let out = demo.run(&["orders", "retry", "1", "--user", "root"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let order = demo.json(&["orders", "show", "1"]);
    assert_eq!(order["state"]["number"], 1);
    let last = order["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["event"].as_str(), last["actor"].as_str()), (Some("retry"), Some("user:root")));

    let out = demo.run(&["orders", "retry", "1", "--user", "root"]);
    assert_eq!(out.status.code(), Some(5), "retrying a Pending order is refused");
    let out = demo.run(&["orders", "retry", "--state", "pending", "--resource-type", "Badge_Access", "--user", "root"]);
    assert!(text(&out.stderr).contains("only Errored orders can be retried"), "{}", text(&out.stderr));
    let out = demo.run(&["orders", "retry", "--state", "errored", "--resource-type", "Nope", "--user", "root"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("unknown resource type `Nope` (the config defines: "), "{}", text(&out.stderr));
    let retried =
        demo.json(&["orders", "retry", "--state", "errored", "--resource-type", "Badge_Access", "--user", "root"]);
    assert_eq!(retried.as_array().unwrap().len(), 1);
    assert_eq!(retried[0]["id"], 2);

    let plugins = demo.json(&["plugins", "list"]);
    let files = plugins.as_array().unwrap().iter().find(|p| p["name"] == "files").unwrap();
    assert!(files["health"]["calls"].as_u64().unwrap() > 0);
    assert_eq!(files["health"]["disabled_at"], Value::Null);
    let out = demo.run(&["plugins", "enable", "files"]);
    assert!(text(&out.stdout).contains("was not disabled"), "{}", text(&out.stdout));
}
