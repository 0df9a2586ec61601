//! The plugin templates in `examples/plugins/`, the way docs/plugins.md tells a customer to use
//! them: copy the template and the host's `wit/` into a directory of their own, build it with one
//! command, `provision plugin check` it and `provision plugin test` it on its fixture.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{run, text};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            if entry.file_name() != "target" {
                copy_dir(&entry.path(), &target);
            }
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Copies a template and `wit/` into `dir` and builds it; the component's path.
fn build(template: &str, dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let crate_dir = dir.join(template);
    copy_dir(&root.join("examples/plugins").join(template), &crate_dir);
    copy_dir(&root.join("wit"), &crate_dir.join("wit"));
    // One target directory for the three, kept between runs like any build cache.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-templates");
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo.args(["build", "--release", "--locked", "--target", "wasm32-wasip2"]).current_dir(&crate_dir);
    // The test's own build settings are not the template's.
    for var in
        ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER", "CARGO_BUILD_TARGET"]
    {
        cargo.env_remove(var);
    }
    let output = cargo.env("CARGO_TARGET_DIR", &target).output().expect("run cargo");
    assert!(output.status.success(), "building {template}: {}", text(&output.stderr));
    target.join("wasm32-wasip2/release").join(format!("my_{}.wasm", template.replace('-', "_")))
}

#[test]
fn each_template_builds_checks_and_passes_its_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let drop = tempfile::tempdir().unwrap();
    let grant = format!("{}:/drop:rw", drop.path().display());
    for (template, world, extra) in [
        (
            "review-rule",
            "review-rule",
            vec!["--config", "entitlements=Finance-Approvers", "--config", "blocked=Root_Access"],
        ),
        ("connector", "connector", vec!["--grant-dir", grant.as_str()]),
        ("notification-router", "notification-router", vec![]),
    ] {
        let wasm = build(template, dir.path());
        let wasm = wasm.to_str().unwrap();
        let out = run(dir.path(), &["plugin", "check", wasm, "--json"]);
        assert!(out.status.success(), "{template}: {}", text(&out.stdout));
        let check: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(check["worlds"], serde_json::json!([world]));
        assert_eq!(check["description"]["name"], format!("my-{template}"));

        let fixture = dir.path().join(template).join("fixture.json");
        let mut args = vec!["plugin", "test", wasm, "--input", fixture.to_str().unwrap()];
        args.extend(extra);
        let out = run(dir.path(), &args);
        assert!(out.status.success(), "{template}: {}{}", text(&out.stdout), text(&out.stderr));
        assert!(text(&out.stdout).contains("expect: all"), "{}", text(&out.stdout));
    }
    let csv = std::fs::read_to_string(drop.path().join("SaaS_Account.csv")).unwrap();
    assert_eq!(csv, "fixture-1,added,alice,\"displayName=Martin, Alice\",userName=alice\nfixture-2,deleted,bob\n");
}
