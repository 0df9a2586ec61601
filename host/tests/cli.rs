//! The `provision` binary as operators and scripts use it: the demo, listings with `--json`,
//! exit codes, errors that name file, key and line.

use std::path::Path;
use std::process::Output;

mod common;

fn provision(args: &[&str], dir: &Path) -> Output {
    common::run(dir, args)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn the_demo_takes_each_order_to_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let out = provision(&["demo", "--dir", "demo", "--json"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let demo: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let mut paths: Vec<(String, String, Vec<u64>)> = demo["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let path = o["path"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).collect();
            (o["resource_type"].as_str().unwrap().to_string(), o["owner"].as_str().unwrap().to_string(), path)
        })
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            ("Badge_Access".into(), "bob".into(), vec![1, 2]),
            ("Badge_Access".into(), "carol".into(), vec![1, 2]),
            ("Finance_Group_Membership".into(), "alice".into(), vec![5]),
            ("SaaS_Account".into(), "alice".into(), vec![1, 8, 4]),
            ("SaaS_Account".into(), "bob".into(), vec![1, 8, 4]),
            ("SaaS_Account".into(), "carol".into(), vec![1, 8, 4]),
        ]
    );

    // The deployment it left behind works with the other commands.
    let config = dir.path().join("demo/provision.toml");
    let config = config.to_str().unwrap();
    let out = provision(&["orders", "list", "--config", config, "--state", "verified", "--json"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let verified: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(verified.as_array().unwrap().len(), 3);
    assert!(verified.as_array().unwrap().iter().all(|o| o["state"]["number"] == 4 && o["state"]["name"] == "Verified"));

    let out = provision(&["orders", "show", "4", "--config", config], dir.path());
    assert!(stdout(&out).contains("1 Pending"), "{}", stdout(&out));

    let out = provision(&["job", "run", "--config", config, "--json"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["counters"]["orders_created"], 0);

    // A second demo into the same directory would overwrite a database: refused.
    let out = provision(&["demo", "--dir", "demo"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already holds a database"), "{}", stderr(&out));
}

#[test]
fn an_invalid_config_exits_3_naming_file_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("provision.toml"),
        "[entity_types.Directory_User]\n\n[connections.saas]\nkind = \"manual-ticket\"\nretries = 3\n",
    )
    .unwrap();
    let out = provision(&["orders", "list"], dir.path());
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(message.contains("provision.toml:5:1: key `connections.saas.retries`"), "{message}");
    assert!(message.contains("unknown field `retries`"), "{message}");

    let out = provision(&["orders", "list", "--config", "missing.toml"], dir.path());
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("missing.toml: cannot read the file"), "{}", stderr(&out));
}

#[test]
fn help_teaches_and_bad_arguments_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = provision(&["--help"], dir.path());
    assert!(out.status.success());
    let help = stdout(&out);
    for needle in ["provision demo", "Exit codes:", "invalid config", "--log-level"] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
    let out = provision(&["orders", "list", "--state", "done"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown provisioning state `done`"), "{}", stderr(&out));
}

/// Imports `data` (written to `demo/name`) into the demo deployment of `dir`.
fn import(dir: &Path, name: &str, data: &str) -> Output {
    std::fs::write(dir.join("demo").join(name), data).unwrap();
    let file = dir.join("demo").join(name);
    let config = dir.join("demo/provision.toml");
    provision(&["import", file.to_str().unwrap(), "--config", config.to_str().unwrap()], dir)
}

#[test]
fn an_import_over_a_data_limit_is_refused_naming_file_line_and_key_and_imports_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = provision(&["demo", "--dir", "demo"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));

    // A 1 MB value: before, it was imported, carried out, and then made every `read` of its
    // resource type fail.
    let megabyte = "x".repeat(1 << 20);
    let data = format!(
        "[[identities]]\nentity_type = \"Directory_User\"\nkey = \"dan\"\n\n[[assignments]]\nidentity = \"dan\"\n\
         resource_type = \"SaaS_Account\"\nentitlements = [\"Users\"]\nattributes = {{ userName = \"dan\", note = \"{megabyte}\" }}\n"
    );
    let out = import(dir.path(), "big.toml", &data);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(message.contains("big.toml:9:"), "names file and line: {}", &message[..message.len().min(500)]);
    assert!(message.contains("key `assignments[0].attributes.note`"), "{}", &message[..message.len().min(500)]);
    assert!(message.contains("1048576 bytes long; at most 65536 bytes"), "{}", &message[..message.len().min(500)]);
    assert!(message.len() < 2000, "the message does not repeat the value: {} bytes", message.len());

    // An entitlement over its limit is named by its place in the file's list.
    let long = "g".repeat(1025);
    let data = format!(
        "[[identities]]\nentity_type = \"Directory_User\"\nkey = \"dan\"\n\n[[assignments]]\nidentity = \"dan\"\n\
         resource_type = \"SaaS_Account\"\nentitlements = [\n  \"Users\",\n  \"{long}\",\n]\n"
    );
    let out = import(dir.path(), "groups.toml", &data);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(message.contains("groups.toml:10:3: key `assignments[0].entitlements[1]`"), "{message}");

    // Nothing of either file was written: the next run has nothing new to do for `dan`.
    let config = dir.path().join("demo/provision.toml");
    let out = provision(&["job", "run", "--config", config.to_str().unwrap(), "--json"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["counters"]["orders_created"], 0, "{report}");
}

/// `db status` exits 1 naming a schema a newer host wrote, and `db migrate` refuses it.
fn refuses_a_newer_schema(dir: &Path) {
    let out = provision(&["db", "status"], dir);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("written by a newer host"), "{}", stdout(&out));
    let out = provision(&["db", "migrate"], dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("upgrade this host"), "{}", stderr(&out));
}

#[test]
fn db_status_reads_without_writing_and_migrate_brings_the_schema_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    let out = provision(&["demo", "--dir", "demo"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let fresh = dir.path().join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    std::fs::copy(dir.path().join("demo/provision.toml"), fresh.join("provision.toml")).unwrap();

    // Before anything: no database, and status does not create one.
    let out = provision(&["db", "status", "--json"], &fresh);
    assert!(out.status.success(), "{}", stderr(&out));
    let before: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!((before["exists"].as_bool(), before["version"].as_u64()), (Some(false), Some(0)), "{before}");
    let latest = before["latest"].as_u64().unwrap();
    assert_eq!(before["pending"].as_u64(), Some(latest));
    assert!(!fresh.join("provision.db").exists(), "status created the database");

    let out = provision(&["db", "migrate"], &fresh);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&format!("from schema version 0 to {latest}")), "{}", stdout(&out));
    let out = provision(&["db", "migrate"], &fresh);
    assert!(stdout(&out).contains("already at schema version"), "{}", stdout(&out));

    // The demo's database: up to date, with what the demo wrote.
    let out = provision(&["db", "status", "--json"], &dir.path().join("demo"));
    let demo: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!((demo["pending"].as_u64(), demo["newer"].as_bool()), (Some(0), Some(false)), "{demo}");
    assert_eq!(
        (demo["counts"]["identities"].as_u64(), demo["counts"]["orders"].as_u64()),
        (Some(3), Some(6)),
        "{demo}"
    );
    assert!(demo["counts"]["history"].as_u64().unwrap() >= 12, "{demo}");

    // A database a newer host wrote: status says so and exits 1, migrate refuses to touch it.
    let db = rusqlite::Connection::open(fresh.join("provision.db")).unwrap();
    db.pragma_update(None, "user_version", i64::try_from(latest + 1).unwrap()).unwrap();
    drop(db);
    refuses_a_newer_schema(&fresh);
}

#[test]
fn db_status_and_migrate_on_postgres_and_the_database_itself_keeps_history() {
    let server = common::postgres::server();
    let dir = tempfile::tempdir().unwrap();
    let url = common::postgres::database();
    let out = provision(&["demo", "--dir", "demo", "--database-url", &url], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let demo = dir.path().join("demo");
    let fresh_url = common::postgres::database();
    let fresh = dir.path().join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    let config = std::fs::read_to_string(demo.join("provision.toml")).unwrap();
    std::fs::write(fresh.join("provision.toml"), config.replace(&url, &fresh_url)).unwrap();
    let fresh_db = common::postgres::Postgres::database_of(&fresh_url);

    // An empty database: no schema, and status creates none.
    let out = provision(&["db", "status", "--json"], &fresh);
    assert!(out.status.success(), "{}", stderr(&out));
    let before: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(before["backend"], "postgres", "{before}");
    assert_eq!(before["location"].as_str(), Some(fresh_url.as_str()));
    assert_eq!((before["exists"].as_bool(), before["version"].as_u64()), (Some(false), Some(0)), "{before}");
    let latest = before["latest"].as_u64().unwrap();
    assert_eq!(
        server.sql(fresh_db, "SELECT to_regclass('provision_schema') IS NULL"),
        "t",
        "status created the schema"
    );

    let out = provision(&["db", "migrate"], &fresh);
    assert!(stdout(&out).contains(&format!("from schema version 0 to {latest}")), "{}{}", stdout(&out), stderr(&out));
    let out = provision(&["db", "migrate"], &fresh);
    assert!(stdout(&out).contains("already at schema version"), "{}", stdout(&out));

    // The demo's: what the demo wrote, counted.
    let out = provision(&["db", "status", "--json"], &demo);
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!((status["pending"].as_u64(), status["counts"]["orders"].as_u64()), (Some(0), Some(6)), "{status}");

    // History is append-only and orders are never deleted whoever writes: the database refuses.
    let demo_db = common::postgres::Postgres::database_of(&url);
    for sql in ["DELETE FROM order_history", "UPDATE order_history SET reason = 'x'", "TRUNCATE order_history"] {
        let refused = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "psql -h 127.0.0.1 -p {} -U {} -d {demo_db} -v ON_ERROR_STOP=1 -c \"{sql}\" 2>&1",
                server.port(),
                common::postgres::USER
            ))
            .env("PATH", format!("{}:{}", server.bin().display(), std::env::var("PATH").unwrap_or_default()))
            .output()
            .unwrap();
        assert!(!refused.status.success(), "{sql} was allowed");
        assert!(stdout(&refused).contains("order history is append-only"), "{sql}: {}", stdout(&refused));
    }
    assert_eq!(server.sql(demo_db, "SELECT COUNT(*) >= 12 FROM order_history"), "t");

    // A schema a newer host wrote: status exits 1 naming it, migrate refuses.
    server.sql(fresh_db, &format!("UPDATE provision_schema SET version = {}", latest + 1));
    refuses_a_newer_schema(&fresh);

    // Nothing listening: the error says where it tried, and no password.
    let nowhere = format!("postgres://someone@127.0.0.1:{}/idm", common::postgres::unused_port());
    std::fs::write(fresh.join("provision.toml"), config.replace(&url, &nowhere)).unwrap();
    let out = provision(&["db", "status"], &fresh);
    assert_ne!(out.status.code(), Some(0));
    let message = stderr(&out);
    assert!(message.contains("cannot connect to PostgreSQL at 127.0.0.1:"), "{message}");
    assert!(message.contains("database idm, user someone"), "{message}");
}
