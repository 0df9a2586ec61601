//! Text from data as the binary shows it: control and bidi characters escaped in every human
//! output (they never reach the terminal), exact in `--json`; a huge stored text is cut when
//! shown, so showing it is cheap; texts people supply are refused over their documented limit.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

mod common;
use common::{run, text};

/// Characters that drive a terminal or reorder what it shows: ESC (a sequence clearing the
/// screen, one setting the window title ended by BEL), CR and LF, and a right-to-left override.
const HOSTILE: &str = "\x1b[2J\x1b]0;owned\x07\r\nforged row\u{202e}exe.txt\u{2066}";
/// What must never be printed raw.
const RAW: [char; 6] = ['\x1b', '\x07', '\r', '\u{202e}', '\u{2066}', '\u{0}'];

/// The demo deployment in a fresh directory: the directory and the config's path.
fn demo() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["demo", "--dir", "demo"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config = dir.path().join("demo/provision.toml");
    (dir, config)
}

fn provision(config: &Path, args: &[&str]) -> Output {
    let mut args = args.to_vec();
    args.extend(["--config", config.to_str().unwrap()]);
    run(config.parent().unwrap(), &args)
}

fn ok(config: &Path, args: &[&str]) -> String {
    let out = provision(config, args);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// Asserts `shown` holds no raw control or bidi character, and does show them escaped.
fn escaped(what: &str, shown: &str) {
    for c in RAW {
        assert!(!shown.contains(c), "{what} prints U+{:04X} raw:\n{shown}", c as u32);
    }
    // LF is the line separator of the output itself: the data's must show as `\n`, next to `\r`.
    for needle in ["\\u{1b}[2J", "\\u{7}", "\\r\\n", "\\u{202e}", "\\u{2066}"] {
        assert!(shown.contains(needle), "{what} does not show {needle}:\n{shown}");
    }
}

#[test]
fn control_and_bidi_characters_from_data_are_escaped_for_people_and_exact_in_json() {
    let (_dir, config) = demo();
    let demo = config.parent().unwrap();
    // An identity whose key and display name carry them, with an account order; and a
    // reviewer's comment that does.
    let key = format!("mallory{HOSTILE}");
    let data = format!(
        "[[identities]]\nentity_type = \"Directory_User\"\nkey = {key:?}\n\n\
         [[assignments]]\nidentity = {key:?}\nresource_type = \"SaaS_Account\"\nattributes = {{ userName = {key:?} }}\n"
    );
    // TOML and Rust share the \u escapes of these strings; Debug writes \u{..}, TOML wants \uXXXX.
    let data = data.replace("\\u{1b}", "\\u001b").replace("\\u{7}", "\\u0007").replace("\\u{202e}", "\\u202e");
    let data = data.replace("\\u{2066}", "\\u2066");
    std::fs::write(demo.join("mallory.toml"), data).unwrap();
    ok(&config, &["import", "mallory.toml"]);
    ok(&config, &["job", "run"]);
    let comment = format!("ask the manager{HOSTILE}");
    ok(&config, &["review", "postpone", "3", "--user", "rita", "--comment", &comment]);

    let list = ok(&config, &["orders", "list"]);
    escaped("orders list", &list);
    let orders: Value = serde_json::from_str(&ok(&config, &["orders", "list", "--json"])).unwrap();
    let mallory = orders.as_array().unwrap().iter().find(|o| o["owner"] == key.as_str()).expect("the exact key");
    let id = mallory["id"].to_string();
    escaped("orders show", &ok(&config, &["orders", "show", &id]));
    escaped("orders show (a comment)", &ok(&config, &["orders", "show", "3"]));
    escaped("review list", &ok(&config, &["review", "list", "--user", "rita"]));
    let shown: Value = serde_json::from_str(&ok(&config, &["orders", "show", "3", "--json"])).unwrap();
    assert_eq!(shown["history"].as_array().unwrap().last().unwrap()["reason"], comment.as_str(), "{shown}");

    // People and profiles named by someone else.
    ok(&config, &["users", "add", "eve", "--name", &format!("Eve{HOSTILE}")]);
    ok(&config, &["profiles", "add", "Odd", "--description", &format!("odd{HOSTILE}")]);
    escaped("users list", &ok(&config, &["users", "list"]));
    escaped("profiles list", &ok(&config, &["profiles", "list"]));
    let users: Value = serde_json::from_str(&ok(&config, &["users", "list", "--json"])).unwrap();
    let eve = users.as_array().unwrap().iter().find(|u| u["login"] == "eve").unwrap();
    assert_eq!(eve["display_name"], format!("Eve{HOSTILE}").as_str());
}

#[test]
fn what_a_plugin_answers_is_escaped_in_plugin_test() {
    let dir = tempfile::tempdir().unwrap();
    // The bundled review rule names the order's resource type in its reason.
    let fixture = serde_json::json!({
        "orders": [{ "id": 1, "owner": "alice", "resource_type": format!("Finance{HOSTILE}"),
                     "classification": "sensitive" }],
        "expect": ["review-needed"],
    });
    std::fs::write(dir.path().join("fixture.json"), fixture.to_string()).unwrap();
    let out = run(
        dir.path(),
        &["plugin", "test", "bundled:classification-review", "--input", "fixture.json", "--config", "review=sensitive"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    escaped("plugin test", &text(&out.stdout));
}

/// The longest run of `c` in `text`.
fn longest_run(text: &str, c: char) -> usize {
    text.split(|x| x != c).map(str::len).max().unwrap_or(0)
}

#[test]
fn a_huge_stored_text_is_cut_when_shown_and_whole_in_json() {
    // A comment stored before texts had a limit (the API took 2 MB), as the database holds it:
    // the last reason of order 3 and its message.
    const HUGE: usize = 2_000_000;
    let (_dir, config) = demo();
    let huge = "y".repeat(HUGE);
    let db = rusqlite::Connection::open(config.parent().unwrap().join("provision.db")).unwrap();
    db.execute(
        "INSERT INTO order_history (order_id, at, from_state, to_state, event, actor, reason)
         SELECT id, updated_at, state, state, 'postpone', 'user:rita', ?1 FROM orders WHERE id = 3",
        [&huge],
    )
    .unwrap();
    db.execute("UPDATE orders SET message = ?1 WHERE id = 3", [&huge]).unwrap();
    drop(db);

    // Shown cut to the limit, with a note that `--json` has it all; a rendering that wrapped all
    // of it would take minutes (it did: comfy-table measures a word's rest at each line).
    for (args, limit) in [
        (vec!["orders", "show", "3"], provision::limits::SHOWN_DETAIL),
        (vec!["orders", "list"], provision::limits::SHOWN_CELL),
        (vec!["review", "list", "--user", "rita"], provision::limits::SHOWN_CELL),
    ] {
        let shown = ok(&config, &args);
        let longest = longest_run(&shown.replace(['\n', ' '], ""), 'y');
        assert!(longest > 0 && longest < limit, "{args:?} shows {longest} of the {HUGE} characters");
        assert!(shown.contains('…') && shown.contains("--json"), "{args:?} does not say it cut:\n{shown}");
    }
    let whole: Value = serde_json::from_str(&ok(&config, &["orders", "show", "3", "--json"])).unwrap();
    assert_eq!(whole["history"].as_array().unwrap().last().unwrap()["reason"].as_str().map(str::len), Some(HUGE));
    assert_eq!(whole["message"].as_str().map(str::len), Some(HUGE));
}

#[test]
fn texts_people_supply_are_refused_over_their_limit_and_nothing_changes() {
    let (_dir, config) = demo();
    let history = |id: &str| {
        let shown: Value = serde_json::from_str(&ok(&config, &["orders", "show", id, "--json"])).unwrap();
        shown["history"].as_array().unwrap().len()
    };
    let long_comment = "c".repeat(provision::limits::COMMENT + 1);
    let before = history("3");
    for args in [
        vec!["review", "postpone", "3", "--user", "rita", "--comment", &long_comment],
        vec!["review", "approve", "3", "--user", "rita", "--comment", &long_comment],
        vec!["manual", "report-error", "1", "--user", "hank", "--message", &long_comment],
        vec!["manual", "confirm", "1", "--user", "hank", "--comment", &long_comment],
    ] {
        let out = provision(&config, &args);
        assert_eq!(out.status.code(), Some(2), "{:?}: {}", &args[..2], text(&out.stderr));
        let message = text(&out.stderr);
        assert!(message.contains(&format!("at most {} characters", provision::limits::COMMENT)), "{message}");
    }
    assert_eq!(history("3"), before, "a refused comment changed order 3");
    assert_eq!(history("1"), 2, "a refused report changed order 1");
    // At the limit it is taken, whole.
    let at_limit = "c".repeat(provision::limits::COMMENT);
    ok(&config, &["review", "postpone", "3", "--user", "rita", "--comment", &at_limit]);
    assert_eq!(history("3"), before + 1);

    let long_name = "n".repeat(provision::limits::NAME + 1);
    for args in [
        vec!["users", "add", &long_name],
        vec!["users", "add", "eve", "--name", &long_name],
        vec!["profiles", "add", &long_name],
        vec!["profiles", "add", "Odd", "--description", &long_comment],
        vec!["tokens", "create", "--user", "rita", "--name", &long_name],
    ] {
        let out = provision(&config, &args);
        assert_eq!(out.status.code(), Some(2), "{:?}: {}", &args[..2], text(&out.stderr));
        assert!(text(&out.stderr).contains("at most"), "{:?}: {}", &args[..2], text(&out.stderr));
    }
    let users: Value = serde_json::from_str(&ok(&config, &["users", "list", "--json"])).unwrap();
    assert!(users.as_array().unwrap().iter().all(|u| u["login"] != "eve" && u["login"] != long_name.as_str()));
}
