use std::path::Path;

use super::*;

const BASE: &str = r#"
[entity_types.Directory_User]

[plugins.files]
file = "bundled:file-connector"
timeout = "250ms"
memory = "16 MiB"

[plugins.files.config]
dir = "/data"
page-size = 100

[connections.saas]
plugin = "files"

[resource_types.SaaS_Account]
entity_type = "Directory_User"
connection = "saas"
"#;

fn load(text: &str) -> Result<Config, SourceError> {
    Config::from_source(Source::from_text(Path::new("/etc/provision/provision.toml"), text))
}

#[test]
fn a_valid_config_resolves_defaults_and_paths() {
    let config = load(BASE).unwrap();
    assert_eq!(config.database.path(), Some(Path::new("/etc/provision/provision.db")));
    assert_eq!(config.cache_dir.as_deref(), Some(Path::new("/etc/provision/provision-cache")));
    let files = &config.plugins["files"];
    assert_eq!(files.timeout, Duration::from_millis(250));
    assert_eq!(files.memory, 16 * 1024 * 1024);
    assert_eq!(files.config["page-size"].plain(), Some("100"), "numbers reach plugins as text");
    assert_eq!(config.resource_types["SaaS_Account"].classification, "basic");
    assert_eq!(config.connections["saas"].batch_size, DEFAULT_BATCH);
}

#[test]
fn an_unknown_key_names_file_key_and_line() {
    let text = BASE.replace("connection = \"saas\"", "connection = \"saas\"\ncolour = \"blue\"");
    let err = load(&text).unwrap_err();
    assert_eq!(err.key, "resource_types.SaaS_Account.colour");
    assert_eq!(err.position.map(|p| p.0), Some(19));
    let text = err.to_string();
    assert!(text.starts_with("/etc/provision/provision.toml:19:1: key `resource_types.SaaS_Account.colour`"), "{text}");
    assert!(text.contains("unknown field `colour`"), "{text}");
}

#[test]
fn unknown_references_are_named() {
    let cases = [
        (
            "connection = \"saas\"",
            "connection = \"crm\"",
            "resource_types.SaaS_Account.connection",
            "unknown connection `crm`",
        ),
        (
            "entity_type = \"Directory_User\"",
            "entity_type = \"Device\"",
            "resource_types.SaaS_Account.entity_type",
            "unknown entity type `Device`",
        ),
        ("plugin = \"files\"", "plugin = \"ldap\"", "connections.saas.plugin", "unknown plugin `ldap`"),
        (
            "connection = \"saas\"",
            "connection = \"saas\"\nreview_rule = \"nope\"",
            "resource_types.SaaS_Account.review_rule",
            "unknown plugin `nope`",
        ),
    ];
    for (from, to, key, message) in cases {
        let err = load(&BASE.replace(from, to)).unwrap_err();
        assert_eq!(err.key, key, "{err}");
        assert!(err.message.contains(message), "{err}");
        assert!(err.position.is_some(), "{err}");
    }
}

#[test]
fn plugin_files_pins_and_limits_are_checked() {
    let err = load(&BASE.replace("bundled:file-connector", "plugins/missing.wasm")).unwrap_err();
    assert_eq!(err.key, "plugins.files.file");
    assert!(err.message.contains("/etc/provision/plugins/missing.wasm does not exist"), "{err}");

    let err = load(&BASE.replace("bundled:file-connector", "bundled:ldap")).unwrap_err();
    assert!(err.message.contains("no bundled plugin `ldap`"), "{err}");

    let err = load(&BASE.replace("timeout = \"250ms\"", "timeout = \"250ms\"\nsha256 = \"abc\"")).unwrap_err();
    assert_eq!(err.key, "plugins.files.sha256");

    let err = load(&BASE.replace("timeout = \"250ms\"", "timeout = \"soon\"")).unwrap_err();
    assert_eq!(err.key, "plugins.files.timeout");
    assert!(err.message.contains("`soon` is not a duration"), "{err}");

    let manual = BASE.replace("plugin = \"files\"", "kind = \"manual-ticket\"\ntransmitted_validity = \"2d 12h\"");
    let validity = load(&manual).unwrap().connections["saas"].transmitted_validity;
    assert_eq!(validity, Some(Duration::from_secs(60 * 3600)));
    let err = load(&BASE.replace("plugin = \"files\"", "kind = \"manual-ticket\"\ntransmitted_validity = \"1 month\""))
        .unwrap_err();
    assert_eq!(err.key, "connections.saas.transmitted_validity");

    let err = load(&BASE.replace("memory = \"16 MiB\"", "memory = \"10 KiB\"")).unwrap_err();
    assert_eq!(err.key, "plugins.files.memory");
}

#[test]
fn connections_need_a_plugin_unless_manual() {
    let err = load(&BASE.replace("plugin = \"files\"", "")).unwrap_err();
    assert_eq!(err.key, "connections.saas");
    let manual = BASE.replace("plugin = \"files\"", "kind = \"manual-ticket\"");
    assert_eq!(load(&manual).unwrap().connections["saas"].kind, ConnectionKind::ManualTicket);
    let err = load(&BASE.replace("plugin = \"files\"", "kind = \"carrier-pigeon\"")).unwrap_err();
    assert_eq!(err.key, "connections.saas.kind");
}

#[test]
fn syntax_errors_have_a_line() {
    let err = load("[entity_types.Directory_User\n").unwrap_err();
    assert_eq!(err.position.map(|p| p.0), Some(1), "{err}");
}

#[test]
fn http_grants_are_origins() {
    let with =
        |grants: &str| {
            load(&BASE.replace(
                "memory = \"16 MiB\"",
                &format!("memory = \"16 MiB\"\n[plugins.files.grants]\nhttp = [{grants}]"),
            ))
        };
    let config = with(r#""https://API.example.com", "http://127.0.0.1:8080", "https://*.corp.example""#).unwrap();
    let grants = &config.plugins["files"].http;
    assert_eq!(
        grants.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["https://api.example.com:443", "http://127.0.0.1:8080", "https://*.corp.example:443"]
    );
    assert!(grants[0].allows("https", "api.example.com", 443));
    assert!(!grants[0].allows("http", "api.example.com", 443), "another scheme");
    assert!(!grants[0].allows("https", "api.example.com", 8443), "another port");
    assert!(!grants[0].allows("https", "evil.example.com", 443), "another host");
    assert!(!grants[1].allows("http", "localhost", 8080), "a name for a granted IP literal");
    assert!(grants[2].allows("https", "hr.corp.example", 443));
    assert!(!grants[2].allows("https", "corp.example", 443), "a wildcard covers subdomains only");
    for bad in
        [r#""ftp://x""#, r#""https://x/path""#, r#""https://*""#, r#""https://a.*.b""#, r#""https://u@x""#, r#""x:80""#]
    {
        let err = with(bad).unwrap_err();
        assert_eq!(err.key, "plugins.files.grants.http[0]", "{bad}: {err}");
    }
}

#[test]
fn secret_config_values_come_from_the_environment_and_never_print() {
    // SAFETY: tests run in threads; no other test reads or writes this variable.
    unsafe { std::env::set_var("PROVISION_TEST_SECRET_TOKEN", "s3cr3t-t0ken") };
    let text = BASE.replace("page-size = 100", "page-size = 100\ntoken = { env = \"PROVISION_TEST_SECRET_TOKEN\" }");
    let config = load(&text).unwrap();
    let files = &config.plugins["files"];
    let resolved = files.resolve().unwrap();
    assert_eq!(resolved.values["token"], "s3cr3t-t0ken");
    assert_eq!(resolved.secrets, ["s3cr3t-t0ken"]);
    assert!(!format!("{config:?}").contains("s3cr3t-t0ken"), "a secret in Debug output");
    // Other tables flatten into dotted keys.
    let nested =
        load(&BASE.replace("page-size = 100", "map = { email = \"emails\", phone = \"phoneNumbers\" }")).unwrap();
    assert_eq!(nested.plugins["files"].resolve().unwrap().values["map.email"], "emails");
    let err = load(&BASE.replace("page-size = 100", "groups = [\"a\", \"b\"]")).unwrap_err();
    assert_eq!(err.key, "plugins.files.config.groups");
}

#[test]
fn a_secret_is_read_when_used_not_when_the_config_loads() {
    let with = |secret: &str| {
        load(&format!(
            "{}\n[notifications.webhooks.chat]\nurl = \"https://hooks.example.com/x\"\nsecret = {secret}\n",
            BASE.replace("page-size = 100", &format!("token = {secret}"))
        ))
    };
    // Loading needs neither the variable nor the file: a command that never delivers or calls
    // the plugin never reads them.
    let config = with("{ env = \"PROVISION_TEST_UNSET_VARIABLE\" }").unwrap();
    let err = config.plugins["files"].resolve().err().expect("the variable is not set");
    assert_eq!((err.plugin.as_str(), err.key.as_str()), ("files", "token"));
    assert!(err.to_string().contains("environment variable PROVISION_TEST_UNSET_VARIABLE is not set"), "{err}");
    let hook = &config.notifications.webhooks[0].secret;
    assert_eq!(hook.resolve(), Err(SecretError::Unset("PROVISION_TEST_UNSET_VARIABLE".into())));
    assert!(format!("{hook:?}").contains("PROVISION_TEST_UNSET_VARIABLE"), "where it lives may be shown");

    let config = with("{ file = \"no-such-secret\" }").unwrap();
    let err = config.notifications.webhooks[0].secret.resolve().unwrap_err();
    assert!(err.to_string().contains("/etc/provision/no-such-secret"), "{err}");

    // The shape is still checked at load.
    for (bad, says) in [
        ("{ env = \"\" }", "is not an environment variable name"),
        ("{ env = \"A=B\" }", "is not an environment variable name"),
    ] {
        let err = load(&BASE.replace("page-size = 100", &format!("token = {bad}"))).unwrap_err();
        assert_eq!(err.key, "plugins.files.config.token", "{bad}: {err}");
        assert!(err.message.contains(says), "{bad}: {err}");
    }
}

#[test]
fn a_permission_path_that_can_never_match_is_refused_with_its_line() {
    let with = |path: &str| {
        load(&format!(
            "{BASE}\n[profiles.Reviewers]\ndescription = \"reviews\"\npermissions = [\n    \"/Custom/ProvisioningPolicy/View\",\n    \"{path}\",\n]\n"
        ))
    };
    for (path, says) in [
        ("/Custom/ProvisioningPolicy/Review/Directory_User", "unknown action `Review`"),
        ("/custom/provisioningpolicy", "`custom`"),
        ("/Custom/ProvisioningPolicy/reviewprovisioning/Directory_User", "did you mean ReviewProvisioning?"),
        ("/Custom/ProvisioningPolicy/View/Directory_User", "nothing lies below"),
        ("/Custom/ProvisioningPolicy/ReviewProvisioning/Directory_User/alice", "nothing lies below"),
    ] {
        let err = with(path).unwrap_err();
        assert_eq!(err.key, "profiles.Reviewers.permissions[1]", "{path}: {err}");
        assert_eq!(err.position.map(|p| p.0), Some(24), "{path}: {err}");
        let text = err.to_string();
        assert!(text.starts_with("/etc/provision/provision.toml:24:"), "{text}");
        assert!(text.contains(says) && text.contains(path), "{path}: {text}");
        assert!(text.contains("ReviewProvisioning, BulkReviewProvisioning"), "the known actions: {text}");
    }
}

#[test]
fn a_permission_path_naming_an_unknown_entity_type_is_a_warning() {
    let with =
        |path: &str| load(&format!("{BASE}\n[profiles.Reviewers]\npermissions = [\"{path}\"]\n")).map(|c| c.warnings);
    let warnings = with("/Custom/ProvisioningPolicy/ReviewProvisioning/directory_user").unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("profiles.Reviewers.permissions[0]"), "{warnings:?}");
    assert!(warnings[0].contains("unknown entity type `directory_user`: did you mean Directory_User?"), "{warnings:?}");
    let warnings = with("/Custom/ProvisioningPolicy/ReviewProvisioning/Device").unwrap();
    assert!(warnings[0].contains("unknown entity type `Device` (defined: Directory_User)"), "{warnings:?}");
    for fine in [
        "/Custom/ProvisioningPolicy/ReviewProvisioning/Directory_User/",
        "/Custom/ProvisioningPolicy/BulkPerformManualProvisioning",
        "/Custom/ProvisioningPolicy/Operate",
        "/Custom/ProvisioningPolicy",
        "/Custom",
    ] {
        assert_eq!(with(fine).unwrap(), Vec::<String>::new(), "{fine}");
    }
}

#[test]
fn a_rate_limit_is_requests_per_second_or_minute_with_a_burst() {
    let with = |extra: &str| load(&BASE.replace("plugin = \"files\"", &format!("plugin = \"files\"\n{extra}")));
    assert_eq!(load(BASE).unwrap().connections["saas"].rate_limit, None);
    let rate = with("rate_limit = \"20/s\"").unwrap().connections["saas"].rate_limit.unwrap();
    assert_eq!(
        (rate.requests, rate.per, rate.burst),
        (20, Duration::from_secs(1), 20),
        "the burst is a second's worth"
    );
    let rate = with("rate_limit = \"30/min\"").unwrap().connections["saas"].rate_limit.unwrap();
    assert_eq!((rate.per_second(), rate.burst), (0.5, 1), "at least one");
    let rate = with("rate_limit = \"600/m\"\nrate_burst = 3").unwrap().connections["saas"].rate_limit.unwrap();
    assert_eq!((rate.per_second(), rate.burst), (10.0, 3));
    let cases = [
        ("rate_limit = \"fast\"", "connections.saas.rate_limit", "is not a rate"),
        ("rate_limit = \"20/fortnight\"", "connections.saas.rate_limit", "is not a rate"),
        ("rate_limit = \"0/s\"", "connections.saas.rate_limit", "between 1 and 1000000"),
        ("rate_limit = \"5/s\"\nrate_burst = 0", "connections.saas.rate_burst", "between 1 and 1000000"),
        ("rate_burst = 5", "connections.saas.rate_burst", "needs a `rate_limit`"),
    ];
    for (extra, key, message) in cases {
        let err = with(extra).unwrap_err();
        assert_eq!(err.key, key, "{err}");
        assert!(err.message.contains(message), "{err}");
        assert!(err.position.is_some(), "{err}");
        assert!(err.to_string().starts_with("/etc/provision/provision.toml:"), "{err}");
    }
}

#[test]
fn event_subscribers_are_checked_and_name_their_key_and_line() {
    let subscriber =
        "\n[events.subscribers.siem]\nurl = \"https://siem.example.com/in\"\nsecret = { env = \"SIEM\" }\n";
    let config = load(&format!("{BASE}{subscriber}states = [\"verified\", \"3\"]\n")).unwrap();
    let siem = &config.events.subscribers["siem"];
    assert!(siem.wants("SaaS_Account", crate::model::ProvisioningState::Errored));
    assert!(!siem.wants("SaaS_Account", crate::model::ProvisioningState::Pending));
    assert!(!siem.from_beginning);
    for (extra, key, words) in [
        (
            "resource_types = [\"SaaS_Acount\"]\n",
            "events.subscribers.siem.resource_types[0]",
            "unknown resource type `SaaS_Acount`",
        ),
        ("states = [\"Done\"]\n", "events.subscribers.siem.states[0]", "Done"),
        ("from = \"yesterday\"\n", "events.subscribers.siem.from", "\"now\" or \"beginning\""),
    ] {
        let text = format!("{BASE}{subscriber}{extra}");
        let err = load(&text).unwrap_err();
        assert_eq!(err.key, key, "{err}");
        assert!(err.message.contains(words), "{err}");
        let line = text.lines().position(|l| l == extra.trim_end()).unwrap() + 1;
        assert_eq!(err.position.map(|p| p.0), Some(line), "{err}");
    }
    let err = load(&format!("{BASE}{}", subscriber.replace("https://", "ftp://"))).unwrap_err();
    assert_eq!(err.key, "events.subscribers.siem.url");
}

#[test]
fn a_postgres_database_is_a_url_whose_password_is_a_secret() {
    let config = load(&format!(
        "[database]\nurl = \"postgres://provision@db.example:5433/idm\"\npassword = {{ env = \"PROVISION_DB_PASSWORD\" }}\n{BASE}"
    ))
    .unwrap();
    let Database::Postgres(pg) = &config.database else { panic!("{:?}", config.database) };
    assert_eq!(pg.settings.get_dbname(), Some("idm"));
    assert_eq!(pg.settings.get_ports(), [5433]);
    assert_eq!(config.database.to_string(), "postgres://provision@db.example:5433/idm");
    assert!(format!("{:?}", pg.password).contains("env PROVISION_DB_PASSWORD"));

    let refused = |database: &str| load(&format!("[database]\n{database}\n{BASE}")).unwrap_err().to_string();
    let both = refused("path = \"a.db\"\nurl = \"postgres://u@h/d\"");
    assert!(both.contains("provision.toml:2:1: key `database.path`: give either `path`"), "{both}");
    let secret_in_url = refused("url = \"postgres://u:hunter2@h/d\"");
    assert!(secret_in_url.contains("key `database.url`: the URL carries a password"), "{secret_in_url}");
    assert!(!secret_in_url.contains("hunter2"), "the error shows the password: {secret_in_url}");
    let not_postgres = refused("url = \"mysql://u@h/d\"");
    assert!(not_postgres.contains("key `database.url`: expected a PostgreSQL URL"), "{not_postgres}");
    let tls = refused("url = \"postgres://u@h/d?sslmode=require\"");
    assert!(tls.contains("key `database.url`: `sslmode=require`: this host does not speak TLS"), "{tls}");
    let no_database = refused("url = \"postgres://u@h\"");
    assert!(no_database.contains("name the database"), "{no_database}");
    let password_alone = refused("password = { env = \"X\" }");
    assert!(password_alone.contains("key `database.password`: a password is for PostgreSQL"), "{password_alone}");
}
