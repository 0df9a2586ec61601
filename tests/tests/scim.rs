//! The SCIM connector against a real SCIM 2.0 server (scim2-server, started by the test):
//! users, attributes and group memberships land on the server; synchronisation verifies them;
//! drift is repaired; a modify sends only what changed; a wrong token is a permanent error that
//! never shows the token; a server that goes away, before a run or in the middle of one, is
//! retried until it is back.

use provision::host::Host;
use provision::model::ProvisioningState;
use provision::store::OrderFilter;
use provision_tests::servers::{HttpServer, Relay, Reply, ScimServer, free_port};
use provision_tests::{Deployment, complete, state_path};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

const TOKEN: &str = "scim-t0ken-7f3a9c";

/// The examples/scim deployment pointed at `port`, with the token in a file.
fn deployment(port: u16, token: &str, extra: &str) -> Deployment {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/scim");
    let config = std::fs::read_to_string(example.join("provision.toml"))
        .unwrap()
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
        .replace("token = { env = \"SCIM_TOKEN\" }", "token = { file = \"scim-token\" }");
    let deployment = Deployment::new(&format!("{config}\n{extra}"));
    deployment.write("scim-token", token);
    std::fs::copy(example.join("data.toml"), deployment.path("data.toml")).unwrap();
    deployment
}

/// The deployment with `batch_size` orders per connector call and a retry policy a test can
/// step through with the clock: five attempts, one hour apart, no jitter.
fn retrying_hourly(deployment: Deployment, batch_size: usize) -> Deployment {
    let retry = "[connections.saas.retry]\nmax_attempts = 5\nbackoff = \"fixed\"\ndelay = \"1h\"\njitter = false";
    let config = std::fs::read_to_string(deployment.config_path())
        .unwrap()
        .replace("batch_size = 100", &format!("batch_size = {batch_size}"));
    let start = config.find("[connections.saas.retry]").unwrap();
    let end = start + config[start..].find("[resource_types").unwrap();
    deployment.set_config(&format!("{}{retry}\n\n{}", &config[..start], &config[end..]));
    deployment
}

fn open(deployment: &Deployment) -> Host {
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    host
}

fn user(scim: &ScimServer, owner: &str) -> Option<Value> {
    let list = scim.get(&format!("/Users?filter=externalId%20eq%20%22{owner}%22"));
    list["Resources"].as_array().and_then(|r| r.first()).cloned()
}

fn members(scim: &ScimServer, group: &str) -> Vec<String> {
    let list = scim.get(&format!("/Groups?filter=displayName%20eq%20%22{group}%22"));
    let group = &list["Resources"][0];
    group["members"].as_array().into_iter().flatten().map(|m| m["value"].as_str().unwrap().to_string()).collect()
}

fn orders(host: &Host) -> Vec<provision::model::Order> {
    host.store.orders(&OrderFilter::default()).unwrap()
}

#[test]
fn users_attributes_and_groups_reach_the_server_and_are_verified() {
    let scim = ScimServer::start(free_port(), TOKEN);
    let relay = Relay::start(scim.port);
    let deployment = deployment(relay.port, TOKEN, "");
    // One user per page, so synchronisation has to follow the pages.
    let config = std::fs::read_to_string(deployment.config_path()).unwrap();
    deployment.set_config(&config.replace("bulk = \"auto\"", "bulk = \"auto\"\npage-size = 1"));
    let mut host = open(&deployment);
    provision_tests::logs();
    let report = complete(&mut host);
    let log = provision_tests::logs();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    for order in orders(&host) {
        assert_eq!(state_path(&host, order.id), [1, 8, 4], "{} ({:?})", order.owner, order.message);
    }
    let alice = user(&scim, "alice").expect("alice on the server");
    assert_eq!(alice["userName"], "alice");
    assert_eq!(alice["displayName"], "Alice Martin");
    assert_eq!(alice["title"], "Controller");
    assert_eq!(alice["emails"][0]["value"], "alice@example.com");
    let bob = user(&scim, "bob").expect("bob on the server");
    let (alice_id, bob_id) = (alice["id"].as_str().unwrap(), bob["id"].as_str().unwrap());
    let mut users = members(&scim, "Users");
    users.sort();
    let mut expected = vec![alice_id.to_string(), bob_id.to_string()];
    expected.sort();
    assert_eq!(users, expected);
    assert_eq!(members(&scim, "Finance"), [alice_id]);
    assert_eq!(orders(&host)[0].resource_id.as_deref(), Some(alice_id), "the server's id is kept");
    assert!(!log.contains(TOKEN), "the token appeared in the logs");
    // On the wire: both users in one bulk request (the server advertises bulk), and the read
    // paged through both users.
    let sent: Vec<String> = relay.requests().into_iter().map(|r| r.line).collect();
    assert_eq!(sent.iter().filter(|l| *l == "POST /Bulk").count(), 1, "{sent:#?}");
    assert!(!sent.iter().any(|l| l == "POST /Users"), "{sent:#?}");
    for page in ["GET /Users?startIndex=1&count=1", "GET /Users?startIndex=2&count=1"] {
        assert!(sent.iter().any(|l| l == page), "no `{page}` in {sent:#?}");
    }

    // Nothing to do the second time.
    let again = complete(&mut host);
    assert_eq!((again.counters.orders_created, again.counters.executed), (0, 0), "{again:?}");
}

#[test]
fn drift_is_repaired_and_a_modify_sends_only_what_changed() {
    let scim = ScimServer::start(free_port(), TOKEN);
    let relay = Relay::start(scim.port);
    let deployment = deployment(relay.port, TOKEN, "");
    let mut host = open(&deployment);
    complete(&mut host);

    // Someone deletes alice on the server; the next run provisions her again.
    let alice = user(&scim, "alice").unwrap();
    scim.request("DELETE", &format!("/Users/{}", alice["id"].as_str().unwrap()), None);
    assert!(user(&scim, "alice").is_none());
    let report = complete(&mut host);
    assert_eq!(report.counters.orders_created, 1, "{report:?}");
    let again = user(&scim, "alice").expect("alice provisioned again");
    assert_ne!(again["id"], alice["id"]);
    // (The server may keep the deleted user's id among the members; the new one must be there.)
    assert!(members(&scim, "Finance").contains(&again["id"].as_str().unwrap().to_string()));
    let latest = host.store.orders(&OrderFilter { owner: Some("alice".into()), ..OrderFilter::default() }).unwrap();
    assert_eq!(latest.last().unwrap().state, ProvisioningState::Verified);

    // An attribute the host does not manage, set on the server, survives a modify of another.
    let bob = user(&scim, "bob").unwrap();
    let bob_id = bob["id"].as_str().unwrap();
    let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "nickName", "value": "Bobby"}]});
    scim.request("PATCH", &format!("/Users/{bob_id}"), Some(patch));
    let data = std::fs::read_to_string(deployment.path("data.toml"))
        .unwrap()
        .replace("title = \"Sales\"", "title = \"Sales lead\"");
    deployment.write("data2.toml", data);
    deployment.import(&mut host, "data2.toml", false);
    let before = relay.requests().len();
    let report = complete(&mut host);
    assert_eq!(report.counters.verified, 1, "{report:?}");
    let bob = user(&scim, "bob").unwrap();
    assert_eq!((bob["title"].as_str(), bob["nickName"].as_str()), (Some("Sales lead"), Some("Bobby")));
    let patches: Vec<String> = relay.requests()[before..]
        .iter()
        .filter(|r| r.line == format!("PATCH /Users/{bob_id}"))
        .map(|r| r.body.clone())
        .collect();
    assert_eq!(patches.len(), 1, "{:#?}", relay.requests());
    let patch: Value = serde_json::from_str(&patches[0]).unwrap();
    assert_eq!(patch["Operations"], json!([{"op": "replace", "path": "title", "value": "Sales lead"}]), "{patch}");

    // Alice leaves the Finance group: only her membership is removed, the group stays.
    let alice_id = user(&scim, "alice").unwrap()["id"].as_str().unwrap().to_string();
    let data = std::fs::read_to_string(deployment.path("data2.toml"))
        .unwrap()
        .replace("entitlements = [\"Users\", \"Finance\"]", "entitlements = [\"Users\"]");
    deployment.write("data3.toml", data);
    deployment.import(&mut host, "data3.toml", false);
    let report = complete(&mut host);
    assert_eq!(report.counters.verified, 1, "{report:?}");
    assert!(!members(&scim, "Finance").contains(&alice_id), "{:?}", members(&scim, "Finance"));
    assert!(members(&scim, "Users").contains(&alice_id));
}

#[test]
fn a_wrong_token_is_a_permanent_error_that_never_shows_the_token() {
    let scim = ScimServer::start(free_port(), TOKEN);
    let wrong = "wr0ng-t0ken-not-to-be-seen-4242";
    let deployment = deployment(scim.port, wrong, "");
    let mut host = open(&deployment);
    provision_tests::logs();
    let report = complete(&mut host);
    let log = provision_tests::logs();
    for order in orders(&host) {
        assert_eq!(order.state, ProvisioningState::Errored);
        let message = order.message.clone().unwrap();
        assert!(
            message.starts_with("permanent error:")
                && message.contains("401")
                && message.contains("Authorization failure"),
            "{message}"
        );
        assert_eq!(order.next_attempt_at, None);
    }
    assert!(report.problems.iter().any(|p| p.contains("401")), "{:?}", report.problems);
    let outputs = [
        serde_json::to_string(&report).unwrap(),
        serde_json::to_string(&orders(&host)).unwrap(),
        serde_json::to_string(&orders(&host).iter().map(|o| host.store.history(o.id).unwrap()).collect::<Vec<_>>())
            .unwrap(),
        serde_json::to_string(&host.store.job_run(report.run).unwrap()).unwrap(),
        format!("{:?}", host.config),
        log,
    ];
    for output in outputs {
        assert!(!output.contains(wrong), "the token leaked: {output}");
    }
    assert!(user(&scim, "alice").is_none());
}

#[test]
fn a_server_that_goes_away_is_retried_until_it_is_back() {
    let port = free_port();
    let scim = ScimServer::start(port, TOKEN);
    let deployment = retrying_hourly(deployment(port, TOKEN, ""), 100);
    let mut host = open(&deployment);
    let now = provision::model::now_ms();
    host.clock = Some(now);

    // Alice is provisioned; then the server goes away.
    let data = std::fs::read_to_string(deployment.path("data.toml")).unwrap();
    let bob_at = data.find("[[assignments]]\nidentity = \"bob\"").unwrap();
    deployment.write("alice.toml", &data[..bob_at]);
    deployment.import(&mut host, "alice.toml", true);
    complete(&mut host);
    assert_eq!(orders(&host)[0].state, ProvisioningState::Verified);
    scim.stop();

    deployment.import(&mut host, "data.toml", true);
    let report = complete(&mut host);
    let bob = orders(&host).into_iter().find(|o| o.owner == "bob").unwrap();
    assert_eq!(bob.state, ProvisioningState::Errored);
    assert!(bob.message.as_deref().unwrap().starts_with("transient error (attempt 1 of 5"), "{bob:?}");
    assert!(report.problems.iter().any(|p| p.contains("synchronise SaaS_Account")), "{:?}", report.problems);

    // Back (empty: it kept everything in memory), and the retry time has come.
    let scim = ScimServer::start(port, TOKEN);
    host.clock = Some(now + 2 * 3_600_000);
    let report = complete(&mut host);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.counters.retried, 1);
    assert!(user(&scim, "alice").is_some() && user(&scim, "bob").is_some());
    for owner in ["alice", "bob"] {
        let latest = host.store.orders(&OrderFilter { owner: Some(owner.into()), ..OrderFilter::default() }).unwrap();
        assert_eq!(latest.last().unwrap().state, ProvisioningState::Verified, "{owner}");
    }
    assert_eq!(state_path(&host, bob.id), [1, 3, 1, 8, 4]);
}

#[test]
fn a_server_that_stops_mid_run_fails_only_what_was_left_and_is_retried() {
    // The server "stops" (stops listening) when Bob's request arrives, after Alice's went
    // through in the same run; one order per batch, so each order is its own connector call.
    let scim = ScimServer::start(free_port(), TOKEN);
    let mut outage = Relay::with_outage(scim.port, "bob");
    let deployment = retrying_hourly(deployment(outage.port, TOKEN, ""), 1);
    let mut host = open(&deployment);
    let now = provision::model::now_ms();
    host.clock = Some(now);

    let report = complete(&mut host);
    assert!(outage.tripped(), "the run never reached Bob");
    let (alice, bob) = match orders(&host).as_slice() {
        [alice, bob] => (alice.clone(), bob.clone()),
        other => panic!("expected two orders: {other:?}"),
    };
    assert_eq!((alice.owner.as_str(), bob.owner.as_str()), ("alice", "bob"));
    // Alice was carried out before the stop; the closing synchronise could not see her.
    assert_eq!(alice.state, ProvisioningState::Executed);
    assert_eq!(bob.state, ProvisioningState::Errored);
    let message = bob.message.as_deref().unwrap();
    assert!(message.starts_with("transient error (attempt 1 of 5"), "{message}");
    assert!(report.problems.iter().any(|p| p.contains("synchronise SaaS_Account")), "{:?}", report.problems);
    assert!(user(&scim, "alice").is_some() && user(&scim, "bob").is_none());

    // Not due yet: nothing is sent while the server is still away.
    host.clock = Some(now + 1_800_000);
    let report = complete(&mut host);
    assert_eq!(report.counters.retried, 0);
    assert_eq!(host.store.order(bob.id).unwrap().state, ProvisioningState::Errored);

    // Back, and the retry time has come: Bob is sent once, Alice verified, nothing doubled.
    outage.restore();
    host.clock = Some(now + 2 * 3_600_000);
    let report = complete(&mut host);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.counters.retried, 1);
    assert_eq!(state_path(&host, alice.id), [1, 8, 4]);
    assert_eq!(state_path(&host, bob.id), [1, 3, 1, 8, 4]);
    let users = scim.get("/Users");
    assert_eq!(users["totalResults"], 2, "{users}");
    assert_eq!(members(&scim, "Users").len(), 2);
}

#[test]
fn the_status_decides_transient_or_permanent_and_retry_after_is_honoured() {
    // A service provider answering every request with the status the test sets.
    let answer = Arc::new(Mutex::new(Reply::status(200)));
    let server = {
        let answer = answer.clone();
        HttpServer::start(move |_| {
            let a = answer.lock().unwrap();
            Reply { status: a.status, headers: a.headers.clone(), body: a.body.clone() }
        })
    };
    let set = |status: u16, headers: &[(&str, &str)], body: Value| {
        let headers = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        *answer.lock().unwrap() = Reply { status, headers, body: body.to_string().into_bytes() };
    };
    // Both orders in one batch: a Retry-After also pauses the connection (store::pace), which
    // would leave a second batch Pending for the next run.
    let deployment = retrying_hourly(deployment(server.port, TOKEN, ""), 2);
    let config = std::fs::read_to_string(deployment.config_path()).unwrap();
    deployment.set_config(&config.replace("bulk = \"auto\"", "bulk = \"never\""));
    let mut host = open(&deployment);
    let now = provision::model::now_ms();
    let error = |detail: &str, status: &str| json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "detail": detail, "status": status});

    // 429 with Retry-After: transient, not before the server's two hours (the policy says one).
    set(429, &[("Retry-After", "7200")], error("slow down", "429"));
    host.clock = Some(now);
    complete(&mut host);
    for order in orders(&host) {
        assert_eq!(order.state, ProvisioningState::Errored);
        assert!(order.message.as_deref().unwrap().starts_with("transient error (attempt 1 of 5"), "{order:?}");
        assert!(order.message.as_deref().unwrap().contains("429 slow down"), "{order:?}");
        assert_eq!(order.next_attempt_at, Some(now + 7_200_000), "{order:?}");
    }
    // The connection is paused too, for at most an hour, on the wall clock (the jobs' clock
    // below is a test's): an operator's reset stands in for the time gone by.
    let pace = host.store.paces().unwrap().remove(0);
    let left = pace.paused_until - provision::model::now_ms();
    assert!((3_500_000..=provision::store::MAX_PAUSE_MS).contains(&left), "{pace:?}");
    host.store.reset_pace("saas").unwrap();

    // 503 without Retry-After: transient, on the policy's schedule.
    set(503, &[], Value::Null);
    host.clock = Some(now + 7_200_000);
    assert_eq!(complete(&mut host).counters.retried, 2);
    for order in orders(&host) {
        assert!(order.message.as_deref().unwrap().starts_with("transient error (attempt 2 of 5"), "{order:?}");
        assert_eq!(order.next_attempt_at, Some(now + 7_200_000 + 3_600_000), "{order:?}");
    }

    // 400: permanent, with the server's SCIM detail; it waits for an operator.
    set(400, &[], error("userName is malformed", "400"));
    host.clock = Some(now + 7_200_000 + 3_600_000);
    assert_eq!(complete(&mut host).counters.retried, 2);
    for order in orders(&host) {
        let message = order.message.as_deref().unwrap();
        assert!(message.starts_with("permanent error:") && message.contains("userName is malformed"), "{message}");
        assert_eq!(order.next_attempt_at, None);
    }
}

#[test]
fn a_withdrawn_assignment_deletes_or_deactivates_the_user() {
    let scim = ScimServer::start(free_port(), TOKEN);
    let deployment = deployment(scim.port, TOKEN, "");
    let mut host = open(&deployment);
    complete(&mut host);
    let data = std::fs::read_to_string(deployment.path("data.toml")).unwrap();
    let bob_at = data.find("[[assignments]]\nidentity = \"bob\"").unwrap();
    deployment.write("without-bob.toml", &data[..bob_at]);

    // Deleted by default.
    deployment.import(&mut host, "without-bob.toml", true);
    let report = complete(&mut host);
    assert_eq!(report.counters.verified, 1, "{report:?}");
    assert!(user(&scim, "bob").is_none());

    // Deactivated for a resource type listed in `deactivate`: alice's account stays, inactive,
    // and counts as gone (no new deletion at the next run).
    let config = std::fs::read_to_string(deployment.config_path())
        .unwrap()
        .replace("create-groups = true", "create-groups = true\ndeactivate = \"SaaS_Account\"");
    deployment.set_config(&config);
    let mut host = deployment.host();
    deployment.write("nobody.toml", "");
    deployment.import(&mut host, "nobody.toml", true);
    let report = complete(&mut host);
    assert_eq!(report.counters.verified, 1, "{report:?}");
    let alice = user(&scim, "alice").expect("alice is deactivated, not deleted");
    assert_eq!(alice["active"], false);
    let again = complete(&mut host);
    assert_eq!(again.counters.orders_created, 0, "{again:?}");
}
