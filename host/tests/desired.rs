//! Desired state over the API of a running `provision serve`: identities and assignments one at
//! a time with versions (`ETag`, `If-Match`), the bulk endpoint (all or nothing, idempotent
//! under the client's request id, snapshots held by thresholds), history, and permissions; and
//! the audit export out, by the CLI and the API alike.

use std::path::PathBuf;

use serde_json::{Value, json};

mod common;
use common::server::Server;
use common::{run, text};

struct Api {
    _dir: tempfile::TempDir,
    config: PathBuf,
    server: Server,
    agent: ureq::Agent,
}

/// An answer: status, `ETag`, JSON body.
struct Answer {
    status: u16,
    etag: Option<String>,
    body: Value,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} {}", self.status, self.etag, self.body)
    }
}

const MANAGE: &str = "/Custom/ProvisioningPolicy/ManageDesiredState/Directory_User";
const VIEW: &str = "/Custom/ProvisioningPolicy/View";

impl Api {
    /// The demo deployment (its first run done) served with `extra` config appended, and users:
    /// `vic` views, `fred` (a feed) manages Directory_User's desired state, `hank` neither.
    fn start(extra: &str) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let out = run(dir.path(), &["demo", "--dir", "demo"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let config = dir.path().join("demo/provision.toml");
        if !extra.is_empty() {
            let mut toml = std::fs::read_to_string(&config).unwrap();
            toml.push_str(extra);
            std::fs::write(&config, toml).unwrap();
        }
        common::configure(
            dir.path(),
            &config,
            &[
                &["profiles", "add", "Viewers"],
                &["profiles", "allow", "Viewers", VIEW],
                &["users", "add", "vic", "--profile", "Viewers"],
                &["profiles", "add", "Feeds"],
                &["profiles", "allow", "Feeds", MANAGE],
                &["users", "add", "fred", "--profile", "Feeds"],
            ],
        );
        let server = Server::start(dir.path(), &config);
        let agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        Api { _dir: dir, config, server, agent }
    }

    fn token(&self, user: &str) -> String {
        let dir = self.config.parent().unwrap();
        let out = run(dir, &["tokens", "create", "--user", user, "--config", self.config.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_string()
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Answer {
        let mut request = ureq::http::Request::builder().method(method).uri(format!("{}{path}", self.server.url));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = match body {
            Some(body) => {
                self.agent.run(request.header("Content-Type", "application/json").body(body.to_string()).unwrap())
            }
            None => self.agent.run(request.body(()).unwrap()),
        }
        .expect("the server answers");
        let status = response.status().as_u16();
        let etag = response.headers().get("etag").map(|v| v.to_str().unwrap().to_string());
        let text = response.into_body().read_to_string().unwrap();
        Answer { status, etag, body: serde_json::from_str(&text).unwrap_or(Value::String(text)) }
    }

    fn get(&self, path: &str, token: &str) -> Answer {
        self.call("GET", path, Some(token), &[], None)
    }

    fn put(&self, path: &str, token: &str, headers: &[(&str, &str)], body: Value) -> Answer {
        self.call("PUT", path, Some(token), headers, Some(&body.to_string()))
    }

    fn delete(&self, path: &str, token: &str, headers: &[(&str, &str)]) -> Answer {
        self.call("DELETE", path, Some(token), headers, None)
    }

    fn post(&self, path: &str, token: &str, body: &Value) -> Answer {
        self.call("POST", path, Some(token), &[], Some(&body.to_string()))
    }

    /// Runs the complete job and returns the ended run.
    fn run_job(&self, token: &str) -> Value {
        let started = self.post("/api/v1/jobs/run", token, &json!({}));
        assert_eq!(started.status, 202, "{started:?}");
        let run = started.body["run"].as_i64().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let answer = self.get(&format!("/api/v1/jobs/{run}"), token);
            assert_eq!(answer.status, 200, "{answer:?}");
            if answer.body["run"]["status"] != "running" {
                return answer.body;
            }
            assert!(std::time::Instant::now() < deadline, "run {run} still running: {answer:?}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

fn code(answer: &Answer) -> &str {
    answer.body["error"]["code"].as_str().unwrap_or_default()
}

const DAVE: &str = "/api/v1/identities/Directory_User/dave";
const DAVE_SAAS: &str = "/api/v1/identities/Directory_User/dave/assignments/SaaS_Account";

fn saas(name: &str) -> Value {
    json!({ "attributes": { "userName": name, "email": format!("{name}@example.com"), "displayName": name },
            "entitlements": ["Users"] })
}

#[test]
fn identities_and_assignments_change_one_at_a_time_under_their_versions_and_reach_verified() {
    let api = Api::start("");
    let (fred, vic, hank, root) = (api.token("fred"), api.token("vic"), api.token("hank"), api.token("root"));

    // Who may do what: nobody without a token, a viewer reads but may not change, a feed
    // changes and reads its entity type, the help desk neither.
    let anonymous = api.call("PUT", DAVE, None, &[], Some(r#"{"display_name": "Dave"}"#));
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    let viewer = api.put(DAVE, &vic, &[], json!({ "display_name": "Dave" }));
    assert_eq!((viewer.status, viewer.body["error"]["missing_permission"].as_str()), (403, Some(MANAGE)), "{viewer:?}");
    let helpdesk = api.get("/api/v1/identities/Directory_User/alice", &hank);
    assert_eq!((helpdesk.status, code(&helpdesk)), (403, "forbidden"), "{helpdesk:?}");
    assert!(helpdesk.body["error"]["message"].as_str().unwrap().contains(MANAGE), "{helpdesk:?}");
    assert_eq!(api.get("/api/v1/identities/Directory_User/alice", &fred).status, 200, "a feed reads what it writes");

    // Bad requests name what is wrong.
    let bad = api.put(DAVE, &fred, &[], json!({ "display_name": "Dave", "attributes": 5 }));
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(bad.body["error"]["message"].as_str().unwrap().contains("attributes"), "{bad:?}");
    let bad = api.put(DAVE, &fred, &[("If-Match", "12")], json!({}));
    assert_eq!(bad.status, 400, "an unquoted ETag: {bad:?}");
    assert!(bad.body["error"]["message"].as_str().unwrap().contains("If-Match"), "{bad:?}");
    let bad = api.put("/api/v1/identities/Nobody_Type/dave", &fred, &[], json!({}));
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(bad.body["error"]["message"].as_str().unwrap().contains("Nobody_Type"), "{bad:?}");
    let bad = api.put(DAVE_SAAS, &fred, &[], saas("dave"));
    assert_eq!(bad.status, 400, "an assignment to nobody: {bad:?}");
    assert!(bad.body["error"]["message"].as_str().unwrap().contains("dave"), "{bad:?}");
    let bad = api.put("/api/v1/identities/Directory_User/alice/assignments/Nope", &fred, &[], saas("alice"));
    assert_eq!(bad.status, 404, "{bad:?}");
    let bad = api.put(
        DAVE_SAAS,
        &fred,
        &[],
        json!({ "valid_from": "2027-02-01T00:00:00Z", "valid_until": "2027-01-01T00:00:00Z" }),
    );
    assert_eq!(bad.status, 400, "{bad:?}");

    // Create, read, replace under the version read; a stale version is refused.
    let created = api.put(
        DAVE,
        &fred,
        &[("If-None-Match", "*")],
        json!({ "display_name": "Dave", "attributes": { "department": "Ops" } }),
    );
    assert_eq!(created.status, 201, "{created:?}");
    let v1 = created.etag.clone().expect("an ETag");
    let read = api.get(DAVE, &vic);
    assert_eq!((read.status, read.etag.as_deref()), (200, Some(v1.as_str())), "{read:?}");
    assert_eq!(read.body["identity"]["display_name"], "Dave");
    let again = api.put(DAVE, &fred, &[("If-None-Match", "*")], json!({ "display_name": "Someone else" }));
    assert_eq!((again.status, code(&again)), (412, "stale"), "create-only never overwrites: {again:?}");
    let replaced = api.put(
        DAVE,
        &fred,
        &[("If-Match", &v1)],
        json!({ "display_name": "Dave Doe", "attributes": { "department": "Ops" } }),
    );
    assert_eq!(replaced.status, 200, "{replaced:?}");
    let v2 = replaced.etag.clone().unwrap();
    assert_ne!(v1, v2);
    let lost_update = api.put(DAVE, &fred, &[("If-Match", &v1)], json!({ "display_name": "Stale writer" }));
    assert_eq!((lost_update.status, code(&lost_update)), (412, "stale"), "{lost_update:?}");
    assert_eq!(api.get(DAVE, &vic).body["identity"]["display_name"], "Dave Doe", "the stale write changed nothing");
    let same = api.put(DAVE, &fred, &[], json!({ "display_name": "Dave Doe", "attributes": { "department": "Ops" } }));
    assert_eq!((same.status, same.etag.as_deref()), (200, Some(v2.as_str())), "the same again is no new version");

    // The assignment, then a job run: the order goes through to Verified.
    let assigned = api.put(DAVE_SAAS, &fred, &[], saas("dave"));
    assert_eq!(assigned.status, 201, "{assigned:?}");
    let a1 = assigned.etag.clone().unwrap();
    let listed = api.get(&format!("{DAVE}/assignments"), &vic);
    assert_eq!(listed.body["assignments"].as_array().unwrap().len(), 1, "{listed:?}");
    assert_eq!(listed.body["assignments"][0]["version"].to_string(), a1.trim_matches('"'));
    let run = api.run_job(&root);
    assert_eq!(run["run"]["status"], "succeeded", "{run}");
    let view = api.get(DAVE, &vic).body;
    let slot = view["slots"].as_array().unwrap().iter().find(|s| s["resource_type"] == "SaaS_Account").unwrap().clone();
    assert_eq!(slot["orders"][0]["state"]["name"], "Verified", "{slot}");

    // Withdraw under the version; a second withdrawal finds nothing.
    let stale = api.delete(DAVE_SAAS, &fred, &[("If-Match", "\"1\"")]);
    assert_eq!((stale.status, code(&stale)), (412, "stale"), "{stale:?}");
    let withdrawn = api.delete(DAVE_SAAS, &fred, &[("If-Match", &a1)]);
    assert_eq!(withdrawn.status, 200, "{withdrawn:?}");
    assert_eq!(api.delete(DAVE_SAAS, &fred, &[]).status, 404);

    // Who changed what and when: newest first.
    let history = api.get(&format!("{DAVE}/history"), &vic).body;
    let actions: Vec<(String, String)> = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["action"].as_str().unwrap().to_string(), h["resource_type"].as_str().unwrap_or("-").to_string()))
        .collect();
    let expected = [("withdrawn", "SaaS_Account"), ("created", "SaaS_Account"), ("replaced", "-"), ("created", "-")];
    assert_eq!(actions, expected.map(|(a, r)| (a.to_string(), r.to_string())), "{history}");
    assert!(history["history"].as_array().unwrap().iter().all(|h| h["actor"] == "user:fred"), "{history}");
    assert_eq!(history["history"][2]["before"]["display_name"], "Dave");
    assert_eq!(history["history"][2]["after"]["display_name"], "Dave Doe");

    // Removing the identity: it is gone from the directory and the API.
    let removed = api.delete(DAVE, &fred, &[]);
    assert_eq!(removed.status, 200, "{removed:?}");
    assert_eq!(api.get(DAVE, &vic).status, 404);
    let directory = api.get("/api/v1/identities?q=dave", &vic).body;
    assert_eq!(directory["identities"], json!([]), "{directory}");
    let directory = api.get("/api/v1/identities?q=Sales", &vic).body;
    let keys: Vec<&str> =
        directory["identities"].as_array().unwrap().iter().map(|i| i["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["bob"], "an attribute's value is searched: {directory}");
}

#[test]
fn two_writers_of_one_version_one_wins_and_the_other_is_told() {
    let api = Api::start("");
    let fred = api.token("fred");
    let read = api.get("/api/v1/identities/Directory_User/carol", &fred);
    let version = read.etag.clone().unwrap();
    let answers: Vec<u16> = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..8)
            .map(|i| {
                let (api, fred, version) = (&api, &fred, &version);
                scope.spawn(move || {
                    api.put(
                        "/api/v1/identities/Directory_User/carol",
                        fred,
                        &[("If-Match", version)],
                        json!({ "display_name": format!("Carol {i}") }),
                    )
                    .status
                })
            })
            .collect();
        writers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert_eq!(answers.iter().filter(|s| **s == 200).count(), 1, "{answers:?}");
    assert_eq!(answers.iter().filter(|s| **s == 412).count(), 7, "{answers:?}");
}

fn set(identity: &str, resource_type: &str) -> Value {
    json!({ "op": "set-assignment", "identity": identity, "resource_type": resource_type,
            "attributes": { "userName": identity, "email": format!("{identity}@example.com"), "displayName": identity },
            "entitlements": ["Users"] })
}

fn person(key: &str) -> Value {
    json!({ "op": "put-identity", "entity_type": "Directory_User", "key": key, "attributes": { "source": "hr" } })
}

#[test]
fn a_bulk_request_is_all_or_nothing_and_a_retry_changes_nothing_twice() {
    let api = Api::start("");
    let (fred, vic) = (api.token("fred"), api.token("vic"));

    // One bad change (an assignment to nobody) and nothing of the request is written.
    let bad = json!({ "request_id": "feed-1", "changes": [person("erin"), set("erin", "SaaS_Account"), person("finn"), set("ghost", "SaaS_Account")] });
    let refused = api.post("/api/v1/desired", &fred, &bad);
    assert_eq!(refused.status, 400, "{refused:?}");
    let message = refused.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("changes[3]") && message.contains("ghost"), "{message}");
    assert_eq!(api.get("/api/v1/identities/Directory_User/erin", &vic).status, 404, "nothing of it was written");
    let unknown = json!({ "request_id": "feed-1", "changes": [person("erin"), { "op": "set-assignment", "identity": "erin", "resource_type": "Nope" }] });
    let refused = api.post("/api/v1/desired", &fred, &unknown);
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(refused.body["error"]["message"].as_str().unwrap().contains("changes[1]"), "{refused:?}");
    let typo = json!({ "request_id": "feed-1", "changes": [{ "op": "put-identty", "entity_type": "Directory_User", "key": "x" }] });
    let refused = api.post("/api/v1/desired", &fred, &typo);
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(refused.body["error"]["message"].as_str().unwrap().contains("put-identty"), "{refused:?}");
    // A viewer may not; the permission is named.
    let viewer = api.post("/api/v1/desired", &vic, &json!({ "request_id": "v", "changes": [person("x")] }));
    assert_eq!((viewer.status, viewer.body["error"]["missing_permission"].as_str()), (403, Some(MANAGE)));

    // The good request, then the same again: the second changes nothing and says so.
    let good = json!({ "request_id": "feed-2", "changes": [person("erin"), set("erin", "SaaS_Account"), person("finn"), set("finn", "SaaS_Account")] });
    let first = api.post("/api/v1/desired", &fred, &good);
    assert_eq!(first.status, 200, "{first:?}");
    let applied = &first.body["applied"];
    assert_eq!((applied["identities_created"].as_u64(), applied["assignments_created"].as_u64()), (Some(2), Some(2)));
    assert_eq!(applied["replayed"], false);
    let history = |key: &str| {
        api.get(&format!("/api/v1/identities/Directory_User/{key}/history"), &vic).body["history"]
            .as_array()
            .unwrap()
            .len()
    };
    let before = (history("erin"), history("finn"));
    // Meanwhile someone changes erin; a retry of the feed's request must not undo it.
    let changed =
        api.put("/api/v1/identities/Directory_User/erin", &fred, &[], json!({ "display_name": "Erin (renamed)" }));
    assert_eq!(changed.status, 200, "{changed:?}");
    let retried = api.post("/api/v1/desired", &fred, &good);
    assert_eq!(retried.status, 200, "{retried:?}");
    assert_eq!(retried.body["applied"]["replayed"], true, "{retried:?}");
    assert_eq!(retried.body["applied"]["identities_created"], 2, "the first outcome, as recorded");
    assert_eq!((history("erin"), history("finn")), (before.0 + 1, before.1), "the retry wrote nothing");
    assert_eq!(
        api.get("/api/v1/identities/Directory_User/erin", &vic).body["identity"]["display_name"],
        "Erin (renamed)"
    );
    // The same id for another request is a mistake the client must hear of.
    let other = json!({ "request_id": "feed-2", "changes": [person("gus")] });
    let conflict = api.post("/api/v1/desired", &fred, &other);
    assert_eq!((conflict.status, code(&conflict)), (409, "conflict"), "{conflict:?}");

    // A stale version in a bulk request refuses all of it.
    let version = api.get("/api/v1/identities/Directory_User/finn", &vic).etag.unwrap();
    let stale = json!({ "request_id": "feed-3", "changes": [person("hal"), { "op": "put-identity", "entity_type": "Directory_User", "key": "finn", "display_name": "F", "if_version": 1 }] });
    let refused = api.post("/api/v1/desired", &fred, &stale);
    assert_eq!((refused.status, code(&refused)), (412, "stale"), "{refused:?}");
    assert_eq!(api.get("/api/v1/identities/Directory_User/hal", &vic).status, 404);
    assert_eq!(api.get("/api/v1/identities/Directory_User/finn", &vic).etag.unwrap(), version);

    // Too many changes for one request: 413, naming the limit.
    let many: Vec<Value> = (0..50_001).map(|i| person(&format!("p{i}"))).collect();
    let too_many = api.post("/api/v1/desired", &fred, &json!({ "request_id": "huge", "changes": many }));
    assert_eq!((too_many.status, code(&too_many)), (413, "too-large"), "{too_many:?}");
    assert!(too_many.body["error"]["message"].as_str().unwrap().contains("50000"), "{too_many:?}");
}

#[test]
fn a_snapshot_withdraws_what_it_leaves_out_and_a_threshold_holds_the_deletions() {
    let api = Api::start("\n[resource_types.SaaS_Account.thresholds]\ndeleted = 1\n");
    let (fred, root, vic) = (api.token("fred"), api.token("root"), api.token("vic"));
    // The HR feed's full list of SaaS accounts has only alice now: bob's and carol's go.
    let feed =
        json!({ "request_id": "hr-full-1", "snapshot": ["SaaS_Account"], "changes": [set("alice", "SaaS_Account")] });
    let answer = api.post("/api/v1/desired", &fred, &feed);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["applied"]["assignments_withdrawn"], 2, "{answer:?}");
    for key in ["bob", "carol"] {
        let list = api.get(&format!("/api/v1/identities/Directory_User/{key}/assignments"), &vic).body;
        let types: Vec<&str> =
            list["assignments"].as_array().unwrap().iter().map(|a| a["resource_type"].as_str().unwrap()).collect();
        assert!(!types.contains(&"SaaS_Account"), "{key}: {list}");
    }
    let kept = api.get("/api/v1/identities/Directory_User/bob/assignments", &vic).body;
    assert!(
        kept["assignments"].as_array().unwrap().iter().any(|a| a["resource_type"] == "Badge_Access"),
        "other types are untouched: {kept}"
    );
    // Two deletions against a threshold of one: the run holds them for an operator.
    let run = api.run_job(&root);
    let holds = run["holds"].as_array().unwrap();
    assert!(holds.iter().any(|h| h["resource_type"] == "SaaS_Account"), "{run}");
    let bob = api.get("/api/v1/identities/Directory_User/bob", &vic).body;
    let slot = bob["slots"].as_array().unwrap().iter().find(|s| s["resource_type"] == "SaaS_Account").unwrap().clone();
    assert!(!slot["actual"].is_null(), "no deletion went out: bob's account is still there: {slot}");
    assert!(slot["desired"].is_null(), "{slot}");
}

#[test]
fn the_audit_export_gives_every_state_change_in_its_range_by_cli_and_api_alike() {
    let api = Api::start("");
    let (vic, hank) = (api.token("vic"), api.token("hank"));
    let dir = api.config.parent().unwrap();
    let c = api.config.to_str().unwrap();
    let out = run(dir, &["history", "export", "--since", "2000-01-01", "--config", c]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // The demo's run: every order's creation and each move after it.
    let orders = api.get("/api/v1/orders", &vic).body;
    let mut expected = 0;
    for order in orders["orders"].as_array().unwrap() {
        let id = order["id"].as_i64().unwrap();
        expected += api.get(&format!("/api/v1/orders/{id}"), &vic).body["history"].as_array().unwrap().len();
    }
    assert!(expected >= 6, "{orders}");
    assert_eq!(lines.len(), expected, "{lines:?}");
    let ids: Vec<i64> = lines.iter().map(|l| l["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in history order: {ids:?}");
    let verified = lines.iter().find(|l| l["to"]["name"] == "Verified").expect("a verification");
    assert_eq!(verified["actor"], "job:synchronise");
    assert_eq!(verified["entity_type"], "Directory_User");
    assert!(verified["at"].as_str().unwrap().ends_with('Z'), "RFC 3339: {verified}");

    // The same over the API, as CSV: a header and one row per change.
    let answer = api.call("GET", "/api/v1/history?since=2000-01-01&format=csv", Some(&vic), &[], None);
    assert_eq!(answer.status, 200, "{answer:?}");
    let csv = answer.body.as_str().unwrap().to_string();
    let mut rows = csv.lines();
    assert_eq!(rows.next(), Some("id,at,order,entity_type,owner,resource_type,from,to,event,actor,reason"));
    assert_eq!(rows.count(), expected, "{csv}");
    // A range that holds nothing, and bounds that are not times.
    let out = run(
        dir,
        &["history", "export", "--since", "2000-01-01", "--until", "2000-01-02", "--format", "csv", "--config", c],
    );
    assert_eq!(text(&out.stdout).lines().count(), 1, "only the header: {}", text(&out.stdout));
    let out = run(dir, &["history", "export", "--since", "yesterday", "--config", c]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--since: `yesterday`"), "{}", text(&out.stderr));
    let bad = api.get("/api/v1/history?since=soon", &vic);
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(bad.body["error"]["message"].as_str().unwrap().contains("since"), "{bad:?}");
    let forbidden = api.get("/api/v1/history?since=2000-01-01", &hank);
    assert_eq!((forbidden.status, forbidden.body["error"]["missing_permission"].as_str()), (403, Some(VIEW)));
}

#[test]
fn every_json_the_host_writes_keeps_one_contract() {
    let api = Api::start("");
    let (root, vic) = (api.token("root"), api.token("vic"));
    let rfc3339 = |v: &Value| v.as_str().is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok());

    // Times are RFC 3339, in the API and in the CLI's --json alike, for the same order.
    let orders = api.get("/api/v1/orders", &vic).body;
    let first = &orders["orders"][0];
    assert!(rfc3339(&first["created_at"]) && rfc3339(&first["updated_at"]), "{first}");
    let dir = api.config.parent().unwrap();
    let out = run(dir, &["orders", "list", "--json", "--config", api.config.to_str().unwrap()]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let same = listed.as_array().unwrap().iter().find(|o| o["id"] == first["id"]).unwrap();
    assert_eq!(same, first, "one shape for an order");
    let order = api.get(&format!("/api/v1/orders/{}", first["id"]), &vic).body;
    assert!(order["history"].as_array().unwrap().iter().all(|h| rfc3339(&h["at"])), "{order}");
    let jobs = api.get("/api/v1/jobs", &vic).body;
    assert!(rfc3339(&jobs["runs"][0]["run"]["started_at"]), "{jobs}");

    // Durations carry their unit in the name; no serde internals.
    let plugins = api.get("/api/v1/plugins", &vic).body;
    let text = plugins.to_string();
    assert!(!text.contains("nanos") && !text.contains("\"secs\""), "{text}");
    let files = plugins["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "files").unwrap().clone();
    assert!(files["since_load"]["call_time_ms"].is_number(), "{files}");
    let load_ms = files["load_ms"].as_f64().unwrap();
    assert_eq!((load_ms * 1000.0).round() / 1000.0, load_ms, "to the microsecond: {load_ms}");
    let out = run(dir, &["plugins", "list", "--json", "--config", api.config.to_str().unwrap()]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&listed[0]), keys(&plugins["plugins"][0]), "one shape for a plugin");

    // A synchronised resource is an object, not a pair.
    let alice = api.get("/api/v1/identities/Directory_User/alice", &vic).body;
    let account =
        alice["slots"].as_array().unwrap().iter().find(|s| s["resource_type"] == "SaaS_Account").unwrap().clone();
    assert_eq!(account["actual"]["id"], "alice", "{account}");
    assert_eq!(account["actual"]["attributes"]["userName"], "alice", "{account}");

    // Errors in the user's words: no Rust type names.
    for (method, path, body, words) in [
        ("GET", "/api/v1/orders/abc", None, "`abc` is not a whole number"),
        (
            "POST",
            "/api/v1/reviews/approve",
            Some(r#"{"orders": "all"}"#),
            "`orders`: found the text \"all\", expected a list",
        ),
        ("POST", "/api/v1/reviews/approve", Some("[1, 2]"), "expected a JSON object"),
        ("POST", "/api/v1/reviews/approve", Some(r#"{"orders": [1, 2"#), "ends too early"),
        ("POST", "/api/v1/reviews/approve", Some(r#"{"comment": "x"}"#), "missing"),
        ("GET", "/api/v1/orders?limit=lots", None, "is not a whole number"),
    ] {
        let answer = api.call(method, path, Some(&root), &[], body);
        assert_eq!(answer.status, 400, "{path}: {answer:?}");
        let message = answer.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(words), "{path} {body:?}: {message}");
        for rust in ["i64", "usize", "struct", "Vec<", "DecideBody", "sequence"] {
            assert!(!message.contains(rust), "{path} {body:?}: {message}");
        }
    }
    // The scheme of Authorization is case-insensitive; a wrong method has the JSON error body.
    let lower = api.call("GET", "/api/v1/me", None, &[("Authorization", &format!("bearer {vic}"))], None);
    assert_eq!(lower.status, 200, "{lower:?}");
    let wrong = api.call("DELETE", "/api/v1/orders", Some(&root), &[], None);
    assert_eq!((wrong.status, code(&wrong)), (405, "method-not-allowed"), "{wrong:?}");
    let not_json = api.call("POST", "/api/v1/desired", Some(&root), &[("Content-Type", "text/plain")], None);
    assert!(not_json.status == 415 || not_json.status == 400, "{not_json:?}");
}

#[test]
fn the_served_document_is_the_committed_one_and_schemathesis_finds_nothing_against_it() {
    let api = Api::start("");
    let root = api.token("root");
    // The description needs no token.
    let served = api.call("GET", "/api/v1/openapi.json", None, &[], None);
    assert_eq!(served.status, 200, "{served:?}");
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(docs).unwrap()).unwrap();
    assert!(
        served.body == committed,
        "the server serves another document than docs/openapi.json: run `UPDATE_OPENAPI=1 cargo test -p provision --lib openapi`"
    );
    assert_eq!(served.body["openapi"], "3.1.0");

    // Fuzzed from the document, a bounded number of examples per operation, every request under
    // a time limit: no 5xx, no undocumented status, every answer as the document says.
    let st = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/.venv/bin/st");
    assert!(st.exists(), "{} is missing: run tests/setup.sh", st.display());
    // Its own directory: schemathesis keeps a cache where it runs.
    let scratch = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(st)
        .current_dir(scratch.path())
        .args([
            "run",
            &format!("{}/api/v1/openapi.json", api.server.url),
            "--header",
            &format!("Authorization: Bearer {root}"),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
            "--max-examples",
            "25",
            "--request-timeout",
            "10",
            "--seed",
            "17",
            "--no-color",
        ])
        .output()
        .expect("run schemathesis");
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "schemathesis found problems:\n{report}");
    assert!(report.contains("passed"), "{report}");
}

#[test]
fn every_desired_state_endpoint_wants_a_token_and_names_the_permission_it_lacks() {
    let api = Api::start("");
    let (hank, vic) = (api.token("hank"), api.token("vic"));
    let set = r#"{"attributes": {"userName": "alice"}}"#;
    let bulk =
        r#"{"request_id": "r", "changes": [{"op": "remove-identity", "entity_type": "Directory_User", "key": "bob"}]}"#;
    let endpoints: [(&str, &str, Option<&str>, &str); 11] = [
        ("GET", "/api/v1/identities", None, VIEW),
        ("GET", "/api/v1/identities/Directory_User/alice", None, VIEW),
        ("PUT", "/api/v1/identities/Directory_User/alice", Some("{}"), MANAGE),
        ("DELETE", "/api/v1/identities/Directory_User/alice", None, MANAGE),
        ("GET", "/api/v1/identities/Directory_User/alice/assignments", None, VIEW),
        ("GET", "/api/v1/identities/Directory_User/alice/assignments/SaaS_Account", None, VIEW),
        ("PUT", "/api/v1/identities/Directory_User/alice/assignments/SaaS_Account", Some(set), MANAGE),
        ("DELETE", "/api/v1/identities/Directory_User/alice/assignments/SaaS_Account", None, MANAGE),
        ("GET", "/api/v1/identities/Directory_User/alice/history", None, VIEW),
        ("POST", "/api/v1/desired", Some(bulk), MANAGE),
        ("GET", "/api/v1/history?since=2000-01-01", None, VIEW),
    ];
    for (method, path, body, permission) in endpoints {
        let anonymous = api.call(method, path, None, &[], body);
        assert_eq!((anonymous.status, code(&anonymous)), (401, "unauthorized"), "{method} {path}: {anonymous:?}");
        let wrong = api.call(method, path, Some("not-a-token"), &[], body);
        assert_eq!(wrong.status, 401, "{method} {path}: {wrong:?}");
        // The help desk may neither see nor change identities; a viewer may not change them.
        let who = if permission == MANAGE && method != "GET" { &vic } else { &hank };
        let refused = api.call(method, path, Some(who), &[], body);
        assert_eq!(refused.status, 403, "{method} {path}: {refused:?}");
        assert_eq!(
            refused.body["error"]["missing_permission"].as_str(),
            Some(permission),
            "{method} {path}: {refused:?}"
        );
    }
    // Nothing any of them tried was written.
    let root = api.token("root");
    assert_eq!(api.get("/api/v1/identities/Directory_User/bob", &root).status, 200);
    assert_eq!(api.get("/api/v1/identities/Directory_User/alice/assignments/SaaS_Account", &root).status, 200);
}

#[test]
fn a_running_server_publishes_every_state_change_to_its_subscribers() {
    let (arrivals, arrived) = std::sync::mpsc::channel();
    let hooks = common::hooks::Hooks::start(false, move || {
        let _ = arrivals.send(());
    });
    let api = Api::start(&format!(
        "\n[events.subscribers.siem]\nurl = \"http://127.0.0.1:{}/events\"\nsecret = \"s3cret\"\n",
        hooks.port
    ));
    let root = api.token("root");
    // The demo's first run happened before the subscriber was known: it starts after it.
    assert_eq!(api.put(DAVE, &root, &[], json!({ "display_name": "Dave" })).status, 201);
    assert_eq!(api.put(DAVE_SAAS, &root, &[], saas("dave")).status, 201);
    let ended = api.run_job(&root);
    assert_eq!(ended["run"]["status"], "succeeded", "{ended}");
    // Dave's account: created Pending, Executed, Verified; each published by the server's own
    // delivery loop, without anyone asking.
    let changes = api.get("/api/v1/history?since=2000-01-01", &root);
    let new: Vec<Value> = changes
        .body
        .as_str()
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|c| c["owner"] == "dave")
        .collect();
    assert_eq!(new.len(), 3, "{new:?}");
    for _ in 0..new.len() {
        arrived.recv_timeout(std::time::Duration::from_secs(60)).expect("the server published the change");
    }
    let dir = api.config.parent().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let out = run(dir, &["events", "list", "--json", "--config", api.config.to_str().unwrap()]);
        let list: Value = serde_json::from_slice(&out.stdout).unwrap();
        let siem = &list[0];
        if siem["delivered"] == 3 {
            assert_eq!((siem["behind"].as_i64(), siem["failures"].as_i64()), (Some(0), Some(0)), "{siem}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the cursor did not reach the end: {siem}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
