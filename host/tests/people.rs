//! Review and manual provisioning through the `provision` binary, end to end: work lists,
//! single and bulk decisions, and every refusal (no permission, bulk without the Bulk
//! permission, one's own order, an order in the wrong state) leaving the orders untouched.

use std::path::PathBuf;
use std::process::Output;

mod common;
use common::{run, text};

use serde_json::Value;

struct Demo {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Demo {
    fn new() -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec!["demo", "--dir", "demo"];
        let url = common::postgres::by_default().then(common::postgres::database);
        if let Some(url) = &url {
            args.extend(["--database-url", url]);
        }
        let out = run(dir.path(), &args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let config = dir.path().join("demo/provision.toml");
        Demo { dir, config }
    }

    /// Runs `provision ARGS --config CONFIG`.
    fn run(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--config", self.config.to_str().unwrap()]);
        run(self.dir.path(), &all)
    }

    /// Runs a command that must succeed, with `--json`, and parses its output.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.run(&all);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    }

    /// Runs a command that must be refused with exit code 5, naming `reason`.
    fn refused(&self, args: &[&str], reason: &str) {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(5),
            "{args:?} should be refused: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(text(&out.stderr).contains(reason), "{args:?}: expected {reason:?} in {}", text(&out.stderr));
    }

    /// An order's state number and history length.
    fn state(&self, id: i64) -> (u64, usize) {
        let order = self.json(&["orders", "show", &id.to_string()]);
        (order["state"]["number"].as_u64().unwrap(), order["history"].as_array().unwrap().len())
    }

    /// The id of the latest order of an owner and resource type.
    fn order_of(&self, owner: &str, resource_type: &str) -> i64 {
        let list = self.json(&["orders", "list", "--owner", owner, "--resource-type", resource_type]);
        list.as_array().unwrap().last().unwrap()["id"].as_i64().unwrap()
    }

    fn import(&self, name: &str, data: &str) {
        let path = self.dir.path().join(name);
        std::fs::write(&path, data).unwrap();
        self.ok(&["import", path.to_str().unwrap()]);
    }
}

const MORE_FINANCE: &str = r#"
[[assignments]]
identity = "bob"
resource_type = "Finance_Group_Membership"
attributes = { group = "Finance-Approvers" }
entitlements = ["Finance-Approvers"]

[[assignments]]
identity = "carol"
resource_type = "Finance_Group_Membership"
attributes = { group = "Finance-Approvers" }
entitlements = ["Finance-Approvers"]
"#;

#[test]
fn review_single_and_bulk_with_every_refusal() {
    let demo = Demo::new();
    let alice = demo.order_of("alice", "Finance_Group_Membership");
    let list = demo.json(&["review", "list", "--user", "rita"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["order"]["id"], alice);
    assert!(list[0]["suggestion"].as_str().unwrap().contains("grant Finance-Approvers"), "{list}");
    let own = demo.json(&["review", "list", "--user", "alice"]);
    assert_eq!(own[0]["own"], true, "alice sees her own order marked as such");

    // A reviewer with the single permission only.
    demo.ok(&["profiles", "add", "Solo", "--description", "reviews one order at a time"]);
    demo.ok(&["profiles", "allow", "Solo", "/Custom/ProvisioningPolicy/ReviewProvisioning/Directory_User"]);
    demo.ok(&["users", "add", "sam", "--name", "Sam Single", "--profile", "Solo"]);
    demo.import("more.toml", MORE_FINANCE);
    demo.ok(&["job", "run"]);
    let (bob, carol) =
        (demo.order_of("bob", "Finance_Group_Membership"), demo.order_of("carol", "Finance_Group_Membership"));
    let badge = demo.order_of("bob", "Badge_Access");
    let before: Vec<(u64, usize)> = [alice, bob, carol, badge].iter().map(|id| demo.state(*id)).collect();
    assert_eq!(before.iter().map(|s| s.0).collect::<Vec<_>>(), [5, 5, 5, 2]);

    let a = alice.to_string();
    let (b, c) = (bob.to_string(), carol.to_string());
    demo.refused(&["review", "approve", &a, "--user", "hank"], "may not review Directory_User orders");
    demo.refused(
        &["review", "approve", &a, "--user", "hank"],
        "/Custom/ProvisioningPolicy/ReviewProvisioning/Directory_User",
    );
    demo.refused(&["review", "approve", &a, "--user", "alice"], "it is their own");
    demo.refused(&["review", "approve", &b, &a, "--user", "alice", "--comment", "both"], "it is their own");
    demo.refused(&["review", "approve", &b, &c, "--user", "sam"], "may not review in bulk");
    demo.refused(
        &["review", "approve", &badge.to_string(), "--user", "rita"],
        "not allowed for an order in state 2 Transmitted",
    );
    demo.refused(&["review", "approve", &b, &badge.to_string(), "--user", "rita"], "nothing changed");
    demo.refused(&["review", "approve", &a, "--user", "nobody"], "there is no user `nobody`");
    demo.refused(&["review", "approve", "999", "--user", "rita"], "there is no order 999");
    let out = demo.run(&["review", "postpone", &a, "--user", "rita"]);
    assert_eq!(out.status.code(), Some(2), "a postpone without a comment is a usage error");
    let after: Vec<(u64, usize)> = [alice, bob, carol, badge].iter().map(|id| demo.state(*id)).collect();
    assert_eq!(before, after, "a refused action changed something");

    // Postpone keeps the order waiting, with the comment and the reviewer in history.
    demo.ok(&["review", "postpone", &a, "--user", "rita", "--comment", "waiting for the manager"]);
    let order = demo.json(&["orders", "show", &a]);
    assert_eq!(order["state"]["number"], 5);
    let last = order["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["actor"].as_str(), last["reason"].as_str()), (Some("user:rita"), Some("waiting for the manager")));

    // Approve one; Sam approves one (single), Rita declines one.
    demo.ok(&["review", "approve", &a, "--user", "rita"]);
    demo.ok(&["review", "approve", &b, "--user", "sam", "--comment", "ok for Q4"]);
    demo.ok(&["review", "decline", &c, "--user", "rita", "--comment", "not in finance"]);
    assert_eq!(demo.state(alice).0, 1);
    let declined = demo.json(&["orders", "show", &c]);
    assert_eq!((declined["state"]["number"].as_u64(), declined["closed"].as_str()), (Some(0), Some("declined")));

    let report = demo.json(&["job", "run"]);
    assert_eq!(report["counters"]["orders_created"], 0, "a declined order came back: {report}");
    assert_eq!(demo.state(alice).0, 4);
    assert_eq!(demo.state(bob).0, 4);
    let journal = std::fs::read_to_string(demo.dir.path().join("demo/managed/Finance_Group_Membership.jsonl")).unwrap();
    assert_eq!(journal.lines().count(), 2, "{journal}");
    assert!(!journal.contains("carol"));
    // Each decision is in history with its reviewer.
    for (order, actor) in [(&a, "user:rita"), (&b, "user:sam"), (&c, "user:rita")] {
        let history = demo.json(&["orders", "show", order])["history"].clone();
        let decided = history.as_array().unwrap().iter().find(|h| h["from"]["number"] == 5).unwrap().clone();
        assert_eq!(decided["actor"], actor, "order {order}: {history}");
    }

    // Once Carol's desired state changes, the declined order's successor is up for review.
    demo.import(
        "carol.toml",
        "[[assignments]]\nidentity = \"carol\"\nresource_type = \"Finance_Group_Membership\"\n\
         attributes = { group = \"Finance-Readers\" }\nentitlements = [\"Finance-Readers\"]\n",
    );
    let report = demo.json(&["job", "run"]);
    assert_eq!(report["counters"]["orders_created"], 1, "{report}");
    let successor = demo.order_of("carol", "Finance_Group_Membership");
    assert_ne!(successor.to_string(), c);
    assert_eq!(demo.state(successor).0, 5);
}

#[test]
fn users_and_profiles_are_managed_from_the_cli_unless_the_config_sets_them() {
    let demo = Demo::new();
    let path = "/Custom/ProvisioningPolicy/ReviewProvisioning/Directory_User";
    demo.ok(&["profiles", "add", "Auditors", "--description", "second pair of eyes"]);
    demo.ok(&["profiles", "allow", "Auditors", path]);
    demo.ok(&["users", "add", "vic", "--name", "Vic", "--email", "vic@example.com", "--profile", "Auditors"]);
    demo.ok(&["review", "list", "--user", "vic", "--entity-type", "Directory_User"]);
    let users = demo.json(&["users", "list"]);
    let vic = users.as_array().unwrap().iter().find(|u| u["login"] == "vic").unwrap().clone();
    assert_eq!(
        (vic["profiles"].clone(), vic["permissions"].clone()),
        (serde_json::json!(["Auditors"]), serde_json::json!([path]))
    );
    let profiles = demo.json(&["profiles", "list"]);
    assert!(
        profiles
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "Auditors" && p["permissions"] == serde_json::json!([path])),
        "{profiles}"
    );

    // Taking the profile away, or the path from the profile, takes the permission away.
    demo.ok(&["users", "revoke", "vic", "Auditors"]);
    demo.refused(
        &["review", "list", "--user", "vic", "--entity-type", "Directory_User"],
        "ReviewProvisioning/Directory_User",
    );
    demo.ok(&["users", "grant", "vic", "Auditors"]);
    demo.ok(&["review", "list", "--user", "vic", "--entity-type", "Directory_User"]);
    demo.ok(&["profiles", "disallow", "Auditors", path]);
    demo.refused(
        &["review", "list", "--user", "vic", "--entity-type", "Directory_User"],
        "ReviewProvisioning/Directory_User",
    );
    demo.ok(&["profiles", "remove", "Auditors"]);
    demo.ok(&["users", "remove", "vic"]);
    demo.refused(&["review", "list", "--user", "vic", "--entity-type", "Directory_User"], "there is no user `vic`");

    // What the config sets is changed in the config: the CLI refuses, and nothing changes.
    let before = demo.json(&["users", "list"]);
    demo.refused(&["users", "revoke", "rita", "Reviewers"], "[users.rita]");
    demo.refused(&["users", "remove", "rita"], "[users.rita]");
    demo.refused(&["profiles", "disallow", "Reviewers", path], "[profiles.Reviewers]");
    demo.refused(&["profiles", "remove", "Reviewers"], "[profiles.Reviewers]");
    assert_eq!(demo.json(&["users", "list"]), before);
    demo.ok(&["review", "list", "--user", "rita"]);
}

#[test]
fn bulk_review_approves_all_or_nothing() {
    let demo = Demo::new();
    demo.import("more.toml", MORE_FINANCE);
    demo.ok(&["job", "run"]);
    let (bob, carol) =
        (demo.order_of("bob", "Finance_Group_Membership"), demo.order_of("carol", "Finance_Group_Membership"));
    let approved = demo.json(&["review", "approve", &bob.to_string(), &carol.to_string(), "--user", "rita"]);
    assert_eq!(
        approved.as_array().unwrap().iter().map(|o| o["state"]["number"].as_u64().unwrap()).collect::<Vec<_>>(),
        [1, 1]
    );
}

#[test]
fn manual_provisioning_single_and_bulk_with_every_refusal() {
    let demo = Demo::new();
    let list = demo.json(&["manual", "list", "--user", "hank", "--entity-type", "Directory_User"]);
    let suggestions: Vec<&str> = list.as_array().unwrap().iter().map(|i| i["suggestion"].as_str().unwrap()).collect();
    assert_eq!(
        suggestions,
        [
            "Create Badge_Access for bob: set building = HQ, floor = 3",
            "Create Badge_Access for carol: set building = HQ, floor = 5"
        ]
    );
    let (bob, carol) = (demo.order_of("bob", "Badge_Access"), demo.order_of("carol", "Badge_Access"));
    let (b, c) = (bob.to_string(), carol.to_string());

    demo.ok(&["profiles", "add", "Desk"]);
    demo.ok(&["profiles", "allow", "Desk", "/Custom/ProvisioningPolicy/PerformManualProvisioning/Directory_User"]);
    demo.ok(&["users", "add", "moe", "--profile", "Desk", "--email", "moe@example.com"]);
    demo.ok(&["profiles", "add", "Operators"]);
    demo.ok(&["profiles", "allow", "Operators", "/Custom/ProvisioningPolicy/Operate"]);
    demo.ok(&["users", "add", "olga", "--profile", "Operators"]);
    demo.refused(
        &["manual", "list", "--user", "rita", "--entity-type", "Directory_User"],
        "may not provision manually",
    );
    demo.refused(&["manual", "confirm", &b, "--user", "rita"], "PerformManualProvisioning/Directory_User");
    demo.refused(&["manual", "confirm", &b, &c, "--user", "moe"], "may not provision manually in bulk");
    let alice_account = demo.order_of("alice", "SaaS_Account").to_string();
    demo.refused(
        &["manual", "confirm", &alice_account, "--user", "hank"],
        "not allowed for an order in state 4 Verified",
    );
    assert_eq!((demo.state(bob).0, demo.state(carol).0), (2, 2));

    demo.ok(&["manual", "report-error", &c, "--user", "moe", "--message", "no badges left"]);
    let errored = demo.json(&["orders", "show", &c]);
    assert_eq!(errored["state"]["number"], 3);
    assert_eq!(errored["message"], "no badges left");

    // One more badge, then Hank confirms two at once.
    demo.import(
        "badge.toml",
        "[[assignments]]\nidentity = \"alice\"\nresource_type = \"Badge_Access\"\nattributes = { building = \"Annex\" }\n",
    );
    demo.ok(&["job", "run"]);
    let alice = demo.order_of("alice", "Badge_Access");
    let confirmed = demo.json(&["manual", "confirm", &b, &alice.to_string(), "--user", "hank", "--comment", "printed"]);
    assert_eq!(
        confirmed.as_array().unwrap().iter().map(|o| o["state"]["number"].as_u64().unwrap()).collect::<Vec<_>>(),
        [8, 8]
    );
    let history = demo.json(&["orders", "show", &b])["history"].clone();
    let last = history.as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["actor"].as_str(), last["reason"].as_str()), (Some("user:hank"), Some("printed")));
    demo.refused(&["manual", "report-error", &b, "--user", "hank", "--message", "too late"], "state 8 Executed");

    // The outbox holds the notifications: manual orders for Hank and Moe (exact path), the
    // errored one too; Root (a parent path) is never among the recipients.
    let outbox = demo.json(&["notifications", "list"]);
    let kinds: Vec<&str> = outbox.as_array().unwrap().iter().map(|n| n["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"orders-errored") && kinds.contains(&"manual-orders-transmitted"), "{kinds:?}");
    for n in outbox.as_array().unwrap() {
        let mut logins: Vec<&str> =
            n["recipients"].as_array().unwrap().iter().map(|r| r["login"].as_str().unwrap()).collect();
        assert!(!logins.contains(&"root"), "{n}");
        // Errors go to the operators (exact Operate path) and the help desk.
        if n["kind"] == "orders-errored" {
            logins.sort();
            assert_eq!(logins, ["hank", "moe", "olga"], "{n}");
        }
    }
}

#[test]
fn profiles_allow_refuses_a_path_that_can_never_match_and_warns_about_an_unknown_entity_type() {
    let demo = Demo::new();
    demo.ok(&["profiles", "add", "Auditors"]);
    for path in ["/custom/provisioningpolicy", "/Custom/ProvisioningPolicy/Review/directory_user"] {
        let out = demo.run(&["profiles", "allow", "Auditors", path]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{path} should be refused: {stderr}");
        assert!(stderr.contains(path), "{path}: {stderr}");
        assert!(
            stderr.contains("ReviewProvisioning, BulkReviewProvisioning, PerformManualProvisioning, BulkPerformManualProvisioning, ManageDesiredState, View, Operate"),
            "the known actions: {stderr}"
        );
    }
    let profiles = demo.json(&["profiles", "list"]);
    let auditors = profiles.as_array().unwrap().iter().find(|p| p["name"] == "Auditors").unwrap().clone();
    assert_eq!(auditors["permissions"], serde_json::json!([]), "a refused path was added");

    // A path naming an entity type the config does not define is added, with a warning.
    let out =
        demo.run(&["profiles", "allow", "Auditors", "/Custom/ProvisioningPolicy/ReviewProvisioning/directory_user"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("warning:") && stderr.contains("did you mean Directory_User?"), "{stderr}");
    let out =
        demo.run(&["profiles", "allow", "Auditors", "/Custom/ProvisioningPolicy/ReviewProvisioning/Directory_User"]);
    assert!(out.status.success() && !text(&out.stderr).contains("warning"), "{}", text(&out.stderr));
}

#[test]
fn people_need_no_secret_that_their_command_does_not_use() {
    let demo = Demo::new();
    let config = std::fs::read_to_string(&demo.config).unwrap();
    let config = config.replace(
        "[plugins.files.config]\ndir = \"/data\"",
        "[plugins.files.config]\ndir = \"/data\"\ntoken = { env = \"FILESTOKEN\" }",
    );
    assert!(config.contains("FILESTOKEN"), "the quickstart's files plugin moved");
    std::fs::write(
        &demo.config,
        format!("{config}\n[notifications.webhooks.chat]\nurl = \"http://127.0.0.1:9/hooks\"\nsecret = {{ env = \"HOOKSECRET\" }}\n"),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--config", demo.config.to_str().unwrap()]);
        common::command(demo.dir.path(), &all).env_remove("HOOKSECRET").env_remove("FILESTOKEN").output().unwrap()
    };
    for args in [
        &["review", "list", "--user", "rita"][..],
        &["manual", "list", "--user", "hank"],
        &["orders", "list"],
        &["orders", "show", "3"],
        &["users", "list"],
        &["profiles", "list"],
        &["review", "approve", "3", "--user", "rita", "--comment", "agreed"],
    ] {
        let out = run(args);
        assert!(out.status.success(), "{args:?} needed a secret it does not use: {}", text(&out.stderr));
    }

    // The job calls the files connector and delivers (a new badge for the help desk): each
    // says which secret it lacks.
    demo.import(
        "dave.toml",
        "[[identities]]\nentity_type = \"Directory_User\"\nkey = \"dave\"\n\n\
         [[assignments]]\nidentity = \"dave\"\nresource_type = \"Badge_Access\"\nattributes = { building = \"HQ\" }\n",
    );
    let out = run(&["job", "run"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("plugin `files` cannot be called: its secret config value `token`: environment variable FILESTOKEN is not set"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "delivery via webhook:chat failed: webhook `chat`: its secret: environment variable HOOKSECRET is not set"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("connection saas: plugin `files` cannot be called"), "{stdout}");
    // The approved order waits for its connector; nothing was lost.
    let order = demo.json(&["orders", "show", "3"]);
    assert_eq!(order["state"]["number"], 1, "{order}");
}
