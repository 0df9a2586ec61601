//! People's actions beside a running job, against a real `provision serve`: `POST /jobs/run`
//! answers 202 with the run as soon as it is recorded; while that run is observably still
//! running (held in its webhook delivery by a receiver the test controls), a reviewer's approve
//! answers at once, and an approve of an order the run superseded is refused with a 409.
//!
//! Nothing sleeps to wait for something: the run is held at a request the test sees arrive,
//! the approve's answer is awaited with a deadline, and the run's end is polled for on
//! `GET /api/v1/jobs/{run}`.

use std::path::Path;
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::hooks::Hooks;
use common::server::{Server, call};
use common::{run, text};

/// Bound on any wait, so a broken build fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(120);

const CONFIG: &str = r#"
[runtime]
cache_dir = "cache"

[entity_types.Directory_User]

[plugins.files]
file = "bundled:file-connector"
[plugins.files.config]
dir = "/data"
[[plugins.files.grants.dirs]]
host = "managed"
guest = "/data"
writable = true

[plugins.classification]
file = "bundled:classification-review"

[connections.saas]
plugin = "files"

[resource_types.Account]
entity_type = "Directory_User"
connection = "saas"
classification = "basic"

[resource_types.Finance]
entity_type = "Directory_User"
connection = "saas"
classification = "sensitive"
review_rule = "classification"

[profiles.Reviewers]
permissions = [
    "/Custom/ProvisioningPolicy/ReviewProvisioning/Directory_User",
    "/Custom/ProvisioningPolicy/View",
]

[profiles.Admins]
permissions = ["/Custom/ProvisioningPolicy/"]

[users.rita]
profiles = ["Reviewers"]

[users.root]
profiles = ["Admins"]

[notifications.webhooks.ops]
url = "http://127.0.0.1:PORT/hook"
secret = "s3cret"
timeout = "300s"
"#;

/// u0 with an Account and a Finance membership (reviewed), u1 with a Finance membership of
/// `level`.
fn data(level: &str) -> String {
    let mut data = String::new();
    for key in ["u0", "u1"] {
        data.push_str(&format!("[[identities]]\nentity_type = \"Directory_User\"\nkey = \"{key}\"\n\n"));
    }
    data.push_str(
        "[[assignments]]\nidentity = \"u0\"\nresource_type = \"Account\"\nattributes = { userName = \"u0\" }\n\n",
    );
    data.push_str(
        "[[assignments]]\nidentity = \"u0\"\nresource_type = \"Finance\"\nattributes = { level = \"1\" }\n\n",
    );
    data.push_str(&format!(
        "[[assignments]]\nidentity = \"u1\"\nresource_type = \"Finance\"\nattributes = {{ level = \"{level}\" }}\n"
    ));
    data
}

fn provision(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// The deployment in a new directory, its config told the receiver's port and `more`, the
/// desired state of `data("1")` imported; with tokens for rita and root.
fn deployment(hooks: &Hooks, more: &str) -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{}{more}", CONFIG.replace("PORT", &hooks.port.to_string()));
    std::fs::write(dir.path().join("provision.toml"), config).unwrap();
    std::fs::write(dir.path().join("data.toml"), data("1")).unwrap();
    provision(dir.path(), &["import", "data.toml"]);
    let token = |user: &str| provision(dir.path(), &["tokens", "create", "--user", user]).trim().to_string();
    let (rita, root) = (token("rita"), token("root"));
    (dir, rita, root)
}

/// The Finance order of `owner` awaiting review, as rita's review list shows it.
fn awaiting(url: &str, rita: &str, owner: &str) -> i64 {
    let (status, _, reviews) = call(url, "GET", "/api/v1/reviews", rita, None);
    assert_eq!(status, 200, "{reviews}");
    let items = reviews["reviews"].as_array().unwrap();
    let item = items.iter().find(|i| i["order"]["owner"] == owner).unwrap_or_else(|| panic!("{reviews}"));
    item["order"]["id"].as_i64().unwrap()
}

fn state(url: &str, token: &str, order: i64) -> String {
    let (status, _, answer) = call(url, "GET", &format!("/api/v1/orders/{order}"), token, None);
    assert_eq!(status, 200, "{answer}");
    answer["order"]["state"]["name"].as_str().unwrap().to_string()
}

fn job_run(url: &str, token: &str, run: i64) -> Value {
    let (status, _, answer) = call(url, "GET", &format!("/api/v1/jobs/{run}"), token, None);
    assert_eq!(status, 200, "{answer}");
    answer
}

#[test]
fn an_approve_during_a_running_job_answers_before_the_job_ends() {
    let (arrived, hook) = channel();
    let hooks = Hooks::start(false, move || {
        let _ = arrived.send(());
    });
    let (dir, rita, root) = deployment(&hooks, "");
    let (dir, rita, root) = (dir.path(), rita.as_str(), root.as_str());
    // A first run leaves both Finance memberships awaiting review (rita is told on the hook).
    provision(dir, &["job", "run"]);
    while hook.try_recv().is_ok() {}
    // u1's membership changes: the next run supersedes its order awaiting review.
    std::fs::write(dir.join("data.toml"), data("2")).unwrap();
    provision(dir, &["import", "data.toml"]);
    let server = Server::start(dir, &dir.join("provision.toml"));
    let url = server.url.as_str();
    let (kept, superseded) = (awaiting(url, rita, "u0"), awaiting(url, rita, "u1"));

    // The run is started, not waited for; it then holds at its delivery to the webhook
    // (telling rita of the new order awaiting review).
    hooks.hold();
    let (status, location, started) = call(url, "POST", "/api/v1/jobs/run", root, Some(json!({})));
    assert_eq!(status, 202, "{started}");
    let run = started["run"].as_i64().expect("the run's id");
    assert_eq!(location.as_deref(), Some(format!("/api/v1/jobs/{run}").as_str()));
    assert_eq!(started["href"], format!("/api/v1/jobs/{run}"));
    hook.recv_timeout(PATIENCE).expect("the run never delivered to the webhook");
    let live = job_run(url, rita, run);
    assert_eq!(live["run"]["status"], "running");
    // Its live progress: every step before notify done, with the counters its units recorded
    // (the run's own counters are written when it ends); notify's one unit at work.
    let progress = &live["progress"];
    let steps: Vec<&str> = progress["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["synchronise", "compute", "fulfil", "synchronise", "notify"], "{live}");
    assert_eq!((progress["at"].as_u64(), progress["at_work"].as_u64()), (Some(4), Some(1)), "{live}");
    assert_eq!(progress["no_worker"], false, "{live}");
    for step in &progress["steps"].as_array().unwrap()[..4] {
        assert!(step["units"].as_u64() > Some(0) && step["units"] == step["done"], "{live}");
    }
    assert_eq!(progress["steps"][4]["claimed"], 1, "{live}");
    assert_eq!(progress["steps"][1]["counters"]["superseded"], 1, "{live}");
    assert_eq!(progress["steps"][1]["counters"]["orders_created"], 1, "{live}");

    // Another run now is refused, naming this one.
    let (status, _, refused) = call(url, "POST", "/api/v1/jobs/run", root, Some(json!({})));
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("job-running")), "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains(&format!("run {run}")), "{refused}");

    // The approve answers while the run still holds at the webhook (it is never released
    // before the answer, so an approve that waited for the run would time out here).
    let (answered, answer) = channel();
    let (approve_url, approver) = (url.to_string(), rita.to_string());
    std::thread::spawn(move || {
        let _ = answered.send(call(
            &approve_url,
            "POST",
            "/api/v1/reviews/approve",
            &approver,
            Some(json!({ "orders": [kept] })),
        ));
    });
    let (status, _, approved) = answer.recv_timeout(PATIENCE).expect("the approve waited for the running job");
    assert_eq!((status, approved["orders"][0]["state"]["name"].as_str()), (200, Some("Pending")), "{approved}");
    assert_eq!(state(url, rita, kept), "Pending");
    assert_eq!(job_run(url, rita, run)["run"]["status"], "running", "the run ended before the approve was checked");

    // The order the run superseded meanwhile: the machine refuses, nothing is written.
    let history = |order: i64| call(url, "GET", &format!("/api/v1/orders/{order}"), rita, None).2["history"].clone();
    let before = history(superseded);
    let (status, _, refused) =
        call(url, "POST", "/api/v1/reviews/approve", rita, Some(json!({ "orders": [superseded] })));
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("conflict")), "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("order {superseded}")), "{message}");
    assert_eq!(history(superseded), before, "a refused approve changed the order's history");
    assert_eq!(state(url, rita, superseded), "None", "closed by the run: superseded");

    // Released, the run ends; the approval it did not see stands.
    hooks.release();
    let deadline = Instant::now() + PATIENCE;
    let ended = loop {
        let answer = job_run(url, rita, run);
        if answer["run"]["status"] != "running" {
            break answer;
        }
        assert!(Instant::now() < deadline, "run {run} did not end: {answer}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(ended["run"]["status"], "succeeded", "{ended}");
    assert_eq!(ended["run"]["counters"]["superseded"], 1, "{ended}");
    assert_eq!(state(url, rita, kept), "Pending", "the approve was lost");
    let log = server.log.clone();
    assert_eq!(server.terminate(), Some(0), "{:?}", log.lock().unwrap());
}

/// The scheduler runs on the same job host: while its run holds at the webhook, "run a job now"
/// is refused naming the run, and a reviewer's approve answers; released, the run ends.
#[test]
fn a_scheduled_run_leaves_people_free_while_it_runs() {
    let (arrived, hook) = channel();
    let hooks = Hooks::start(true, move || {
        let _ = arrived.send(());
    });
    let (dir, rita, root) = deployment(&hooks, "\n[serve]\njob_interval = \"1s\"\n");
    let (dir, rita, root) = (dir.path(), rita.as_str(), root.as_str());
    let server = Server::start(dir, &dir.join("provision.toml"));
    let url = server.url.as_str();

    // The first scheduled run tells rita of the two memberships awaiting review, and holds there.
    hook.recv_timeout(PATIENCE).expect("the scheduled run never delivered to the webhook");
    let (status, _, refused) = server.call("POST", "/api/v1/jobs/run", root, Some(json!({})));
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("job-running")), "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("see GET /api/v1/jobs/1"), "{refused}");
    let order = awaiting(url, rita, "u0");
    let (status, _, approved) =
        server.call("POST", "/api/v1/reviews/approve", rita, Some(json!({ "orders": [order] })));
    assert_eq!((status, approved["orders"][0]["state"]["name"].as_str()), (200, Some("Pending")), "{approved}");
    assert_eq!(job_run(url, rita, 1)["run"]["status"], "running", "the approve waited for the run");

    hooks.release();
    let deadline = Instant::now() + PATIENCE;
    while !server.logged("scheduled job run done") {
        assert!(Instant::now() < deadline, "the scheduled run did not end: {:?}", server.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(job_run(url, rita, 1)["run"]["status"], "succeeded");
    assert!(!server.logged("scheduled job run failed"), "{:?}", server.log.lock().unwrap());
    let log = server.log.clone();
    assert_eq!(server.terminate(), Some(0), "{:?}", log.lock().unwrap());
}
