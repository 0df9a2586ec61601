//! Hot reload in `provision serve`: a changed plugin file is picked up by the poll, a broken one
//! is refused with the reason shown while the loaded version keeps running; SIGHUP, the API and
//! `provision plugins reload` reload on demand.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::server::Server;
use common::{run, text};

/// The bundled review rule with a custom section appended: a different file (and sha256) holding
/// the same rule.
fn rule_variant(tag: &str) -> Vec<u8> {
    let mut bytes = provision::plugins::bundled::get("classification-review").unwrap().to_vec();
    let name = b"note";
    let size = 1 + name.len() + tag.len();
    assert!(size < 128, "one-byte LEB sizes");
    bytes.extend([0, size as u8, name.len() as u8]);
    bytes.extend(name);
    bytes.extend(tag.as_bytes());
    bytes
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The demo deployment with its review rule loaded from `rule.wasm`, polled every `poll`.
fn deployment(dir: &Path, poll: &str) -> (PathBuf, PathBuf) {
    assert!(run(dir, &["demo", "--dir", "demo"]).status.success());
    let config = dir.join("demo/provision.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace("\"bundled:classification-review\"", "\"rule.wasm\"");
    std::fs::write(&config, format!("{text}\n[serve]\nplugin_poll = \"{poll}\"\n")).unwrap();
    let rule = dir.join("demo/rule.wasm");
    std::fs::write(&rule, rule_variant("v1")).unwrap();
    (config, rule)
}

/// The API's view of one plugin.
fn plugin(server: &Server, token: &str, name: &str) -> Value {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let body = agent
        .get(format!("{}/api/v1/plugins", server.url))
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    let list: Value = serde_json::from_str(&body).unwrap();
    list["plugins"].as_array().unwrap().iter().find(|p| p["name"] == name).cloned().unwrap()
}

/// Waits until the server's view of the plugin satisfies `done`.
fn await_plugin(server: &Server, token: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = plugin(server, token, "classification");
        if done(&now) {
            return now;
        }
        assert!(Instant::now() < deadline, "{what}: still {now}\n{:?}", server.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_changed_file_is_swapped_in_and_a_broken_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (config, rule) = deployment(dir.path(), "50ms");
    let token =
        text(&run(dir.path(), &["tokens", "create", "--user", "root", "--config", config.to_str().unwrap()]).stdout)
            .trim()
            .to_string();
    let server = Server::start(dir.path(), &config);
    assert_eq!(plugin(&server, &token, "classification")["sha256"], sha256(&rule_variant("v1")));

    // Broken: refused, with the reason; v1 keeps running.
    std::fs::write(&rule, b"\0asm\x0d\0\x01\0 cut short").unwrap();
    let refused = await_plugin(&server, &token, "the broken file refused", |p| !p["reload_refused"].is_null());
    assert_eq!(refused["sha256"], sha256(&rule_variant("v1")));
    assert!(refused["reload_refused"]["reason"].as_str().unwrap().contains("not a valid WebAssembly component"));
    assert!(server.logged("reload refused; the loaded version keeps running"));

    // A new version: swapped in, and the refusal forgotten.
    std::fs::write(&rule, rule_variant("v2")).unwrap();
    let v2 = sha256(&rule_variant("v2"));
    let swapped = await_plugin(&server, &token, "v2 swapped in", |p| p["sha256"] == v2.as_str());
    assert!(swapped["reload_refused"].is_null(), "{swapped}");
    assert!(server.logged("reloaded plugin"));

    // On demand: the file holds what is loaded.
    let out = run(
        dir.path(),
        &[
            "plugins",
            "reload",
            "classification",
            "--config",
            config.to_str().unwrap(),
            "--url",
            &server.url,
            "--token",
            &token,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("holds the component already loaded"), "{}", text(&out.stdout));
}

#[test]
fn sighup_and_the_cli_reload_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let (config, rule) = deployment(dir.path(), "0s");
    let c = config.to_str().unwrap();
    let token =
        text(&run(dir.path(), &["tokens", "create", "--user", "root", "--config", c]).stdout).trim().to_string();
    let server = Server::start(dir.path(), &config);

    std::fs::write(&rule, rule_variant("v2")).unwrap();
    server.signal(libc::SIGHUP);
    let v2 = sha256(&rule_variant("v2"));
    await_plugin(&server, &token, "SIGHUP reloads", |p| p["sha256"] == v2.as_str());

    std::fs::write(&rule, rule_variant("v3")).unwrap();
    let out = run(
        dir.path(),
        &["plugins", "reload", "classification", "--config", c, "--url", &server.url, "--token", &token],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("-> {}", sha256(&rule_variant("v3")))), "{}", text(&out.stdout));

    std::fs::write(&rule, b"not wasm").unwrap();
    let out = run(
        dir.path(),
        &["plugins", "reload", "classification", "--config", c, "--url", &server.url, "--token", &token],
    );
    assert_eq!(out.status.code(), Some(5), "refused: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("the loaded version keeps running"), "{}", text(&out.stderr));
    assert_eq!(plugin(&server, &token, "classification")["sha256"], sha256(&rule_variant("v3")));

    let out = run(
        dir.path(),
        &["plugins", "reload", "classification", "--config", c, "--url", &server.url, "--token", "wrong"],
    );
    assert_eq!(out.status.code(), Some(5), "a wrong token: {}", text(&out.stderr));
}
