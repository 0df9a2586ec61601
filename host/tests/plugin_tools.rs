//! The plugin authors' tools through the binary: `provision plugin check` on each world, a core
//! module, garbage and a component from the future; `provision plugin test` on every fixture in
//! `examples/fixtures/`, on a broken expectation and a broken limit.

use std::path::{Path, PathBuf};

use serde_json::Value;

mod common;
use common::{run, text};

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fixtures").join(name).display().to_string()
}

/// `provision ARGS --json` in a fresh directory: the exit code and the JSON printed.
fn json(args: &[&str]) -> (i32, Value) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = args.to_vec();
    args.push("--json");
    let out = run(dir.path(), &args);
    let value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{args:?} printed no JSON: {} {}", text(&out.stdout), text(&out.stderr)));
    (out.status.code().unwrap_or(-1), value)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn check_reports_world_version_description_imports_and_grants() {
    for (bundled, world, grant) in [
        ("bundled:classification-review", "review-rule", None),
        ("bundled:file-connector", "connector", Some("needs-dir-grant")),
        ("bundled:scim-connector", "connector", Some("needs-http-grant")),
        ("bundled:permission-router", "notification-router", None),
    ] {
        let (code, report) = json(&["plugin", "check", bundled]);
        assert_eq!(code, 0, "{report}");
        assert_eq!(report["worlds"], serde_json::json!([world]), "{report}");
        assert_eq!(report["wit_version"], "0.2.0");
        assert_eq!(report["description"]["name"], bundled.trim_start_matches("bundled:"));
        assert_eq!(report["sha256"].as_str().map(str::len), Some(64));
        let imports = report["imports"].as_array().unwrap();
        assert!(imports.iter().any(|i| i["name"] == "provision:plugin/config@0.2.0" && i["provision"] == "host"));
        assert!(imports.iter().all(|i| i["provision"] != "missing"), "{report}");
        if let Some(grant) = grant {
            assert!(imports.iter().any(|i| i["provision"] == grant), "{bundled} needs {grant}: {report}");
        }
    }
}

#[test]
fn check_refuses_what_the_host_would_not_load_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    // The smallest valid core module: a module, not a component.
    let module = write(dir.path(), "module.wasm", b"\0asm\x01\0\0\0");
    let garbage = write(dir.path(), "garbage.wasm", b"PK\x03\x04 this is a zip file");
    // A 0.2.0 component rewritten to name a version this host has never heard of (same-length
    // names keep it well-formed).
    let mut future = provision::plugins::bundled::get("classification-review").unwrap().to_vec();
    for interface in ["evaluate", "describe", "log", "config", "types"] {
        let from = format!("provision:plugin/{interface}@0.2.0");
        let to = format!("provision:plugin/{interface}@7.0.0");
        let mut at = 0;
        while let Some(i) = future[at..].windows(from.len()).position(|w| w == from.as_bytes()) {
            future[at + i..at + i + to.len()].copy_from_slice(to.as_bytes());
            at += i + to.len();
        }
    }
    let future = write(dir.path(), "future.wasm", &future);
    for (file, needle) in [
        (&module, "a core WebAssembly module, not a component"),
        (&garbage, "not WebAssembly"),
        (&future, "provision:plugin@7.0.0, a version this host does not know (it loads 0.2.0, 0.1.0)"),
    ] {
        let (code, report) = json(&["plugin", "check", file.to_str().unwrap()]);
        assert_eq!(code, 3, "{report}");
        let problems = report["problems"].to_string();
        assert!(problems.contains(needle), "{file:?}: {problems}");
        // The text form says it too.
        let out = run(dir.path(), &["plugin", "check", file.to_str().unwrap()]);
        assert!(text(&out.stdout).contains("NOT LOADABLE"), "{}", text(&out.stdout));
    }
}

#[test]
fn test_runs_every_fixture_in_the_sandbox_and_meets_its_expectations() {
    let managed = tempfile::tempdir().unwrap();
    let grant = format!("{}:/data:rw", managed.path().display());
    let rule = fixture("review-rule.json");
    let (code, report) = json(&[
        "plugin",
        "test",
        "bundled:classification-review",
        "--input",
        &rule,
        "--config",
        "review=sensitive",
        "--config",
        "block=forbidden",
    ]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["call"], "evaluate");
    assert_eq!(report["results"][1]["kind"], "review-needed");
    assert!(report["cost"]["peak_memory"].as_u64().unwrap() > 0, "{report}");

    let connector = fixture("connector.json");
    let (code, report) = json(&["plugin", "test", "bundled:file-connector", "-i", &connector, "--grant-dir", &grant]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["results"][3]["message"], "SaaS_Account `carol` does not exist");
    assert!(managed.path().join("SaaS_Account.jsonl").is_file(), "it wrote through the granted directory only");

    let read = fixture("connector-read.json");
    let (code, report) = json(&["plugin", "test", "bundled:file-connector", "-i", &read, "--grant-dir", &grant]);
    assert_eq!(code, 0, "{report}");
    let mut ids: Vec<&str> =
        report["results"][0]["resources"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    // A page lists resources in journal order; the order is not part of `read`'s contract.
    ids.sort_unstable();
    assert_eq!(ids, ["alice", "bob"], "it reads back what the connector fixture wrote");

    let router = fixture("notification-router.json");
    let (code, report) = json(&["plugin", "test", "bundled:permission-router", "-i", &router]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["results"][0]["messages"][0]["recipients"], serde_json::json!(["rita"]));

    // Without its config the rule releases everything: the fixture's expectations fail, exit 1.
    let (code, report) = json(&["plugin", "test", "bundled:classification-review", "-i", &rule]);
    assert_eq!(code, 1, "{report}");
    assert!(report["mismatches"].to_string().contains("result 3: expected `blocked`, got `no-review`"), "{report}");
}

#[test]
fn test_fails_on_a_broken_limit_or_a_bad_fixture_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let rule = fixture("review-rule.json");
    let out = run(dir.path(), &["plugin", "test", "bundled:classification-review", "-i", &rule, "--memory", "1 MiB"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("exceeded its memory limit of 1.0 MiB"), "{}", text(&out.stderr));

    let bad = write(dir.path(), "bad.json", br#"{"orders": [], "events": []}"#);
    let out = run(dir.path(), &["plugin", "test", "bundled:classification-review", "-i", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("exactly one of `orders`, `read` or `events`"), "{}", text(&out.stderr));

    let out = run(dir.path(), &["plugin", "test", "bundled:file-connector", "-i", &rule, "--grant-dir", "/nope:/data"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("--grant-dir `/nope:/data`: /nope is not a directory"), "{}", text(&out.stderr));
}
