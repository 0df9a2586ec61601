//! Fulfilment that never loses or doubles an order: transient errors retried on the connection's
//! schedule and then stopping, permanent errors waiting for an operator, poisoned orders
//! isolated, failing plugins disabled and enabled, thresholds holding one resource type,
//! validity windows, simulations that write nothing.

use provision::host::Host;
use provision::machine::Event;
use provision::model::{ChangeKind, ProvisioningState};
use provision::store::{OrderFilter, Transition};
use provision_tests::{Deployment, complete, guests, state_path};

const HOUR: i64 = 3_600_000;

/// One entity type, one resource type fulfilled by the faulty connector in `mode`.
fn faulty(mode: &str, extra_connector: &str, people: &[&str]) -> Deployment {
    faulty_with(&format!("mode = \"{mode}\"\npoison = \"ann\""), "2s", extra_connector, people)
}

/// [`faulty`] with the connector's `config` lines and time limit given.
fn faulty_with(config: &str, timeout: &str, extra_connector: &str, people: &[&str]) -> Deployment {
    let deployment = Deployment::new(&format!(
        r#"
[entity_types.Directory_User]
notifications = false

[plugins.desk]
file = "faulty-connector.wasm"
timeout = "{timeout}"
disable_after = 2
[plugins.desk.config]
{config}
retry-after = "7200"

[connections.desk]
plugin = "desk"
{extra_connector}

[resource_types.Ticket]
entity_type = "Directory_User"
connection = "desk"
"#
    ));
    deployment.write("faulty-connector.wasm", guests::FAULTY_CONNECTOR);
    let mut data = String::new();
    for who in people {
        data.push_str(&format!(
            "[[identities]]\nentity_type = \"Directory_User\"\nkey = \"{who}\"\n\n[[assignments]]\nidentity = \"{who}\"\nresource_type = \"Ticket\"\nattributes = {{ title = \"{who}\" }}\n\n"
        ));
    }
    deployment.write("data.toml", data);
    deployment
}

fn open(deployment: &Deployment) -> Host {
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    host
}

fn all(host: &Host) -> Vec<provision::model::Order> {
    host.store.orders(&OrderFilter::default()).unwrap()
}

#[test]
fn transient_errors_are_retried_on_schedule_then_stop() {
    let deployment = faulty(
        "transient",
        "[connections.desk.retry]\nmax_attempts = 3\nbackoff = \"fixed\"\ndelay = \"1h\"\njitter = false",
        &["bob"],
    );
    let mut host = open(&deployment);
    let start = provision::model::now_ms();
    host.clock = Some(start);
    complete(&mut host);
    let order = all(&host).remove(0);
    assert_eq!((order.state, order.attempts), (ProvisioningState::Errored, 1));
    // The connector asked for 2 hours (Retry-After), more than the policy's hour.
    assert_eq!(order.next_attempt_at, Some(start + 2 * HOUR));
    assert!(order.message.as_deref().unwrap().starts_with("transient error (attempt 1 of 3; next at"), "{order:?}");

    // Not due yet: nothing happens.
    host.clock = Some(start + HOUR);
    assert_eq!(complete(&mut host).counters.retried, 0);
    assert_eq!(all(&host)[0].attempts, 1);

    // Due: back to Pending, sent, failing again. The Retry-After also paused the connection
    // (store::pace), on the wall clock: an operator's reset stands in for the hours gone by.
    for (n, at) in [(2, start + 2 * HOUR), (3, start + 4 * HOUR)] {
        host.store.reset_pace("desk").unwrap();
        host.clock = Some(at);
        let report = complete(&mut host);
        assert_eq!((report.counters.retried, report.counters.errored), (1, 1), "attempt {n}");
        assert_eq!(all(&host)[0].attempts, n);
    }
    let order = all(&host).remove(0);
    assert_eq!(order.next_attempt_at, None, "no attempt left");
    assert!(order.message.as_deref().unwrap().contains("last attempt (3 of 3), waiting for an operator"), "{order:?}");
    host.clock = Some(start + 1000 * HOUR);
    assert_eq!(complete(&mut host).counters.retried, 0, "retried past the policy's last attempt");
    assert_eq!(state_path(&host, order.id), [1, 3, 1, 3, 1, 3]);

    // An operator retries: a fresh budget.
    host.store.apply(&[Transition::new(order.id, Event::Retry, "retried by ops")], "user:ops").unwrap();
    host.store.reset_pace("desk").unwrap();
    complete(&mut host);
    let order = all(&host).remove(0);
    assert_eq!((order.state, order.attempts), (ProvisioningState::Errored, 1));
    let history = host.store.history(order.id).unwrap();
    assert!(history.iter().any(|h| h.event == "retry" && h.actor == "user:ops"));
}

#[test]
fn permanent_errors_wait_for_an_operator() {
    let deployment = faulty("permanent", "", &["bob", "carol"]);
    let mut host = open(&deployment);
    complete(&mut host);
    for order in all(&host) {
        assert_eq!(order.state, ProvisioningState::Errored);
        assert_eq!(order.next_attempt_at, None);
        assert!(order.message.as_deref().unwrap().starts_with("permanent error: service unavailable for"), "{order:?}");
    }
    host.clock = Some(provision::model::now_ms() + 1000 * HOUR);
    let report = complete(&mut host);
    assert_eq!((report.counters.retried, report.counters.errored), (0, 0));
}

#[test]
fn a_poisoned_order_fails_alone_and_the_others_go_through() {
    let deployment = faulty("poison", "batch_size = 100", &["abe", "ann", "bea", "cal", "dot", "eve", "fay"]);
    let mut host = open(&deployment);
    let report = complete(&mut host);
    for order in all(&host) {
        if order.owner == "ann" {
            assert_eq!(order.state, ProvisioningState::Errored);
            let message = order.message.unwrap();
            assert!(
                message.contains("fails on this order") && message.contains("cannot handle the order of ann"),
                "{message}"
            );
        } else {
            assert_eq!(order.state, ProvisioningState::Executed, "{} suffered from ann's order", order.owner);
        }
    }
    assert_eq!(report.counters.executed, 6);
    let health = &host.health["desk"];
    assert_eq!(health.consecutive_failures, 0, "isolating one order is not a failing plugin");
    assert!(health.disabled_at.is_none());
}

#[test]
fn poisoned_orders_in_both_halves_fail_alone_run_after_run_without_disabling_the_plugin() {
    let people = ["abe", "ann", "bea", "cal", "dot", "eve", "fay", "gus"];
    let config = "mode = \"poison\"\npoison = \"ann,fay\"";
    let deployment = faulty_with(config, "2s", "batch_size = 100", &people);
    let mut host = open(&deployment);
    for run in 0..3 {
        let report = complete(&mut host);
        if run == 0 {
            assert_eq!(report.counters.executed, 6, "{:?}", report.problems);
        }
        for order in all(&host) {
            if ["ann", "fay"].contains(&order.owner.as_str()) {
                assert_eq!(order.state, ProvisioningState::Errored, "run {run}");
                let message = order.message.unwrap();
                assert!(message.contains(&format!("cannot handle the order of {}", order.owner)), "{message}");
            } else {
                assert_eq!(state_path(&host, order.id), [1, 8], "{} in run {run}", order.owner);
            }
        }
        let health = &host.health["desk"];
        assert_eq!(health.consecutive_failures, 0, "isolated orders are not the plugin's failures (run {run})");
        assert!(health.disabled_at.is_none(), "disabled for two poisoned orders (run {run})");
    }
}

/// The worst case of a time limit with isolation: one order of a batch of 100 makes the
/// connector sleep. Only the calls holding that order wait out the limit (the batch, then one
/// half at each of at most 7 levels: 8 time limits); the other 99 are carried out in the run.
#[test]
fn one_sleeping_order_in_a_batch_of_100_costs_at_most_8_time_limits() {
    let people: Vec<String> = (0..100).map(|i| format!("p{i:03}")).collect();
    let people: Vec<&str> = people.iter().map(String::as_str).collect();
    let config = "mode = \"poison\"\npoison = \"p037\"\npoison-mode = \"sleep\"";
    let deployment = faulty_with(config, "300ms", "batch_size = 100", &people);
    let mut host = open(&deployment);
    let started = std::time::Instant::now();
    let report = complete(&mut host);
    let elapsed = started.elapsed();
    let calls = host.plugins.get("desk").unwrap().stats().calls;
    eprintln!("a batch of 100 with one sleeping order: the run took {elapsed:?} ({calls} plugin calls, load included)");
    assert_eq!(report.counters.executed, 99, "{:?}", report.problems);
    let sleeper = all(&host).into_iter().find(|o| o.owner == "p037").unwrap();
    assert_eq!(sleeper.state, ProvisioningState::Errored);
    assert!(sleeper.message.unwrap().contains("exceeded its time limit of 300ms"));
    // 8 limits of 300 ms and their margins, plus the fast calls and the job's own work.
    let bound = std::time::Duration::from_millis(8 * 350) + std::time::Duration::from_secs(5);
    assert!(elapsed < bound, "the run took {elapsed:?}; the time limits alone should be at most 2.8 s");
    assert!(host.health["desk"].disabled_at.is_none());
}

#[test]
fn a_plugin_failing_call_after_call_is_disabled_until_enabled() {
    let deployment = faulty("panic", "", &["bob", "carol"]);
    let mut host = open(&deployment);
    complete(&mut host);
    assert_eq!(host.health["desk"].consecutive_failures, 1);
    complete(&mut host);
    let disabled_at = host.health["desk"].disabled_at.expect("disabled after 2 failed calls in a row");
    let calls = host.health["desk"].calls;
    let report = complete(&mut host);
    assert!(
        report.problems.iter().any(|p| p.contains("plugin `desk` is disabled since") && p.contains("orders wait")),
        "{:?}",
        report.problems
    );
    assert_eq!(host.health["desk"].calls, calls, "a disabled plugin was called");
    for order in all(&host) {
        assert_eq!(state_path(&host, order.id), [1], "orders of a disabled plugin stay Pending");
        assert_eq!(host.store.attempts(order.id).unwrap().len(), 2);
    }

    // It stays disabled across a restart, until an operator enables it.
    drop(host);
    let mut host = deployment.host();
    assert_eq!(host.health["desk"].disabled_at, Some(disabled_at));
    assert!(host.enable("desk").unwrap());
    deployment.set_config(
        &std::fs::read_to_string(deployment.config_path()).unwrap().replace("mode = \"panic\"", "mode = \"ok\""),
    );
    let mut host = deployment.host();
    assert!(host.health["desk"].disabled_at.is_none());
    assert_eq!(complete(&mut host).counters.executed, 2);
}

/// The quickstart with a threshold on SaaS_Account: at most 2 accounts added per run.
fn with_threshold() -> Deployment {
    let deployment = Deployment::quickstart();
    let config = std::fs::read_to_string(deployment.config_path()).unwrap();
    let config = config.replace(
        "[resource_types.Finance_Group_Membership]",
        "[resource_types.SaaS_Account.thresholds]\nadded = 2\ndeleted_percent = 10\nmin_known = 3\n\n[resource_types.Finance_Group_Membership]",
    );
    deployment.set_config(&config);
    deployment
}

fn of_type(host: &Host, resource_type: &str) -> Vec<provision::model::Order> {
    host.store.orders(&OrderFilter { resource_types: vec![resource_type.into()], ..OrderFilter::default() }).unwrap()
}

#[test]
fn a_threshold_holds_only_its_resource_type_until_resumed() {
    let deployment = with_threshold();
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    let report = complete(&mut host);
    assert_eq!(report.counters.held, 3);
    assert!(
        report.problems.iter().any(|p| p.contains("threshold exceeded for SaaS_Account: added 3 > 2")),
        "{:?}",
        report.problems
    );
    let run = host.store.job_run(report.run).unwrap();
    assert_eq!(run.status, "threshold exceeded");
    let holds = host.store.holds(Some(report.run)).unwrap();
    assert_eq!((holds.len(), holds[0].resource_type.as_str(), holds[0].status.as_str()), (1, "SaaS_Account", "held"));
    for order in of_type(&host, "SaaS_Account") {
        assert_eq!((order.state, order.held_run), (ProvisioningState::Pending, Some(report.run)));
    }
    // The other resource types went on.
    assert!(of_type(&host, "Badge_Access").iter().all(|o| o.state == ProvisioningState::Transmitted));
    assert!(!deployment.path("managed/SaaS_Account.jsonl").exists(), "a held order was written");

    // Still held at the next run; nothing created twice.
    let again = complete(&mut host);
    assert_eq!((again.counters.orders_created, again.counters.executed), (0, 0));

    let released = provision::jobs::resume(&mut host, report.run, "user:ops").unwrap();
    assert_eq!(released, 3);
    assert!(provision::jobs::resume(&mut host, report.run, "user:ops").is_err(), "resumed twice");
    complete(&mut host);
    for order in of_type(&host, "SaaS_Account") {
        assert_eq!(state_path(&host, order.id), [1, 8, 4]);
    }
    assert_eq!(host.store.holds(Some(report.run)).unwrap()[0].decided_by.as_deref(), Some("user:ops"));
}

#[test]
fn a_cancelled_run_drops_its_held_orders_and_the_next_run_holds_again() {
    let deployment = with_threshold();
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    let report = complete(&mut host);
    let cancelled = provision::jobs::cancel(&mut host, report.run, "user:ops").unwrap();
    assert_eq!(cancelled, 3);
    for order in of_type(&host, "SaaS_Account") {
        assert_eq!((order.state, order.closed.as_deref()), (ProvisioningState::None, Some("cancelled")));
    }
    // The desired state still asks for 3 accounts: the next run holds them again.
    let next = complete(&mut host);
    assert_eq!(next.counters.held, 3);
    assert_eq!(of_type(&host, "SaaS_Account").len(), 6);
    assert!(!deployment.path("managed/SaaS_Account.jsonl").exists());
}

/// The quickstart with `thresholds` (TOML lines) on SaaS_Account.
fn with_thresholds(thresholds: &str) -> Deployment {
    let deployment = Deployment::quickstart();
    let config = std::fs::read_to_string(deployment.config_path()).unwrap();
    let config = config.replace(
        "[resource_types.Finance_Group_Membership]",
        &format!("[resource_types.SaaS_Account.thresholds]\n{thresholds}\n\n[resource_types.Finance_Group_Membership]"),
    );
    deployment.set_config(&config);
    deployment
}

#[test]
fn a_percent_limit_is_not_applied_to_a_type_with_too_few_known_resources() {
    // 10% of no resources would allow no order at all: every first run would be held.
    let deployment = with_thresholds("added_percent = 10");
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    let report = complete(&mut host);
    assert_eq!(report.counters.held, 0, "{:?}", report.problems);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(
        report
            .notes
            .contains(&"SaaS_Account: added_percent not applied: 0 known resources (below min_known = 100)".into()),
        "{:?}",
        report.notes
    );
    for order in of_type(&host, "SaaS_Account") {
        assert_eq!(state_path(&host, order.id), [1, 8, 4]);
    }
}

#[test]
fn a_percent_limit_holds_once_the_type_has_min_known_resources() {
    let deployment = with_thresholds("deleted_percent = 10\nmin_known = 3");
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    let first = complete(&mut host);
    assert_eq!(first.counters.held, 0);
    assert!(first.notes.is_empty(), "no deletion, nothing to say about its limit: {:?}", first.notes);
    // Three accounts are known now; bob leaves: 1 deletion of 3 is over 10%.
    let data = std::fs::read_to_string(deployment.path("data.toml")).unwrap();
    let bob = "[[assignments]]\nidentity = \"bob\"\nresource_type = \"SaaS_Account\"";
    let start = data.find(bob).unwrap();
    let end = data[start + 1..].find("[[assignments]]").map_or(data.len(), |e| start + 1 + e);
    deployment.write("data2.toml", format!("{}{}", &data[..start], &data[end..]));
    deployment.import(&mut host, "data2.toml", true);
    let second = complete(&mut host);
    assert_eq!(second.counters.held, 1, "{:?}", second.notes);
    assert!(
        second.problems.iter().any(|p| p.contains("threshold exceeded for SaaS_Account: deleted 1 > 0")),
        "{:?}",
        second.problems
    );
    assert!(
        second.notes.contains(&"SaaS_Account: deleted_percent applied: 10% of 3 known resources allows 0".into()),
        "{:?}",
        second.notes
    );
}

#[test]
fn percent_limits_never_apply_to_a_connection_that_cannot_read() {
    // The faulty connector cannot read: its type's resources are never known.
    let deployment = faulty("ok", "", &["bob", "carol"]);
    let config = std::fs::read_to_string(deployment.config_path()).unwrap();
    deployment
        .set_config(&format!("{config}\n[resource_types.Ticket.thresholds]\nadded_percent = 10\nmin_known = 0\n"));
    let mut host = open(&deployment);
    let report = complete(&mut host);
    assert_eq!((report.counters.held, report.counters.executed), (0, 2), "{:?}", report.problems);
    assert!(
        report.notes.iter().any(|n| n.starts_with("Ticket: added_percent not applied: connection desk cannot read")),
        "{:?}",
        report.notes
    );

    // An absolute limit still holds.
    let deployment = faulty("ok", "", &["bob", "carol"]);
    let config = std::fs::read_to_string(deployment.config_path()).unwrap();
    deployment.set_config(&format!("{config}\n[resource_types.Ticket.thresholds]\nadded = 1\nadded_percent = 10\n"));
    let mut host = open(&deployment);
    let report = complete(&mut host);
    assert_eq!((report.counters.held, report.counters.executed), (2, 0));
    assert!(
        report.problems.iter().any(|p| p.contains("threshold exceeded for Ticket: added 2 > 1")),
        "{:?}",
        report.problems
    );
}

/// Every table's rows, in a stable order: the database's content, whatever its file layout.
fn dump(deployment: &Deployment) -> Vec<String> {
    if let Some(url) = &deployment.postgres {
        let server = provision_tests::postgres::server();
        let database = provision_tests::postgres::Postgres::database_of(url);
        let tables = server.sql(database, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1");
        return tables
            .lines()
            .flat_map(|table| {
                let rows = server.sql(database, &format!("SELECT row_to_json(t)::text FROM \"{table}\" t ORDER BY 1"));
                rows.lines().map(|row| format!("{table}: {row}")).collect::<Vec<_>>()
            })
            .collect();
    }
    let conn = provision_tests::sqlite(&deployment.path("provision.db"));
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut rows = Vec::new();
    for table in tables {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\" ORDER BY 1")).unwrap();
        let columns = stmt.column_count();
        let mut query = stmt.query([]).unwrap();
        while let Some(row) = query.next().unwrap() {
            let values: Vec<String> = (0..columns).map(|i| format!("{:?}", row.get_ref(i).unwrap())).collect();
            rows.push(format!("{table}: {}", values.join(" | ")));
        }
    }
    rows
}

fn listing(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<(String, Vec<u8>)> = entries
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect();
    files.sort();
    files
}

#[test]
fn a_dry_run_writes_nothing_and_predicts_the_run() {
    let deployment = with_threshold();
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    // Some history first: the run holds SaaS_Account; resume it so that later changes count.
    let first = complete(&mut host);
    provision::jobs::resume(&mut host, first.run, "user:ops").unwrap();
    complete(&mut host);
    drop(host);
    // Bob leaves: one deletion of three accounts is over the 10% threshold.
    let data = std::fs::read_to_string(deployment.path("data.toml")).unwrap();
    let bob = "[[assignments]]\nidentity = \"bob\"\nresource_type = \"SaaS_Account\"";
    let start = data.find(bob).unwrap();
    let end = data[start + 1..].find("[[assignments]]").map_or(data.len(), |e| start + 1 + e);
    deployment.write("data2.toml", format!("{}{}", &data[..start], &data[end..]));
    let mut host = deployment.host();
    deployment.import(&mut host, "data2.toml", true);
    drop(host);

    let before = (dump(&deployment), listing(&deployment.path("managed")));
    assert!(before.0.iter().any(|row| row.starts_with("orders: ")) && !before.1.is_empty(), "nothing to compare");
    let config = deployment.config().unwrap();
    let mut simulated = Host::open_for_simulation(config).unwrap();
    let simulation = provision::jobs::simulate(&mut simulated, &indicatif::ProgressBar::hidden()).unwrap();
    drop(simulated);
    assert_eq!(before, (dump(&deployment), listing(&deployment.path("managed"))), "the dry run wrote something");

    let accounts = &simulation.resource_types["SaaS_Account"];
    assert_eq!(accounts.changes[&ChangeKind::Deleted].orders, 1);
    assert_eq!(accounts.changes[&ChangeKind::Deleted].pending, 1);
    let exceeded = accounts.exceeded.as_ref().expect("1 deletion of 3 accounts is over 10%");
    assert_eq!(exceeded.limits[&ChangeKind::Deleted], 0);
    assert!(simulation.resource_types["Badge_Access"].changes.is_empty());

    // The real run does what the simulation said.
    let mut host = deployment.host();
    let report = complete(&mut host);
    assert_eq!((report.counters.orders_created, report.counters.held), (1, 1));
}

#[test]
fn validity_windows_end_open_orders_and_start_waiting_ones() {
    let deployment = faulty("ok", "", &[]);
    let now = provision::model::now_ms();
    let at = |ms: i64| jiff::Timestamp::from_millisecond(ms).unwrap().to_string();
    deployment.write(
        "windows.toml",
        format!(
            "[[identities]]\nentity_type = \"Directory_User\"\nkey = \"temp\"\n\n[[identities]]\nentity_type = \"Directory_User\"\nkey = \"next\"\n\n\
             [[assignments]]\nidentity = \"temp\"\nresource_type = \"Ticket\"\nvalid_until = \"{}\"\n\n\
             [[assignments]]\nidentity = \"next\"\nresource_type = \"Ticket\"\nvalid_from = \"{}\"\n",
            at(now + HOUR),
            at(now + HOUR)
        ),
    );
    let mut host = deployment.host();
    deployment.import(&mut host, "windows.toml", false);
    host.clock = Some(now);
    provision::jobs::compute(&mut host, &indicatif::ProgressBar::hidden()).unwrap();
    let orders = all(&host);
    assert_eq!(orders.len(), 1, "the assignment not yet valid waits");
    assert_eq!((orders[0].owner.as_str(), orders[0].state), ("temp", ProvisioningState::Pending));

    host.clock = Some(now + 2 * HOUR);
    let report = complete(&mut host);
    assert_eq!(report.counters.inactive, 1);
    assert_eq!(state_path(&host, orders[0].id), [1, 6], "an order whose window ended before fulfilment");
    let next = host.store.orders(&OrderFilter { owner: Some("next".into()), ..OrderFilter::default() }).unwrap();
    assert_eq!(state_path(&host, next[0].id), [1, 8], "the waiting assignment started");
}

#[test]
fn a_change_of_desired_state_supersedes_the_open_order() {
    let deployment = Deployment::quickstart();
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    complete(&mut host);
    let waiting = of_type(&host, "Finance_Group_Membership").remove(0);
    assert_eq!(waiting.state, ProvisioningState::AwaitingApproval);
    let data = std::fs::read_to_string(deployment.path("data.toml"))
        .unwrap()
        .replace("attributes = { group = \"Finance-Approvers\" }", "attributes = { group = \"Finance-Controllers\" }");
    deployment.write("data2.toml", data);
    deployment.import(&mut host, "data2.toml", false);
    let report = complete(&mut host);
    assert_eq!((report.counters.superseded, report.counters.orders_created), (1, 1));
    let orders = of_type(&host, "Finance_Group_Membership");
    assert_eq!((orders[0].state, orders[0].closed.as_deref()), (ProvisioningState::None, Some("superseded")));
    assert_eq!(host.store.history(orders[0].id).unwrap().last().unwrap().reason, "the desired state changed");
    assert_eq!(orders[1].state, ProvisioningState::AwaitingApproval);
    assert_eq!(orders[1].change.attributes["group"], "Finance-Controllers");
}

#[test]
fn an_order_carried_out_before_a_crash_recorded_it_is_found_done_and_not_sent_again() {
    let deployment = Deployment::quickstart();
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    provision::jobs::compute(&mut host, &indicatif::ProgressBar::hidden()).expect("compute");
    let pending: Vec<_> =
        of_type(&host, "SaaS_Account").into_iter().filter(|o| o.state == ProvisioningState::Pending).collect();
    assert!(pending.len() >= 2, "{pending:?}");
    let (written, unsent) = (&pending[0], &pending[1]);
    // The host records both attempts, the connector carries out `written`, and the host dies
    // before recording that outcome; `unsent` never reached the connector.
    host.store.start_attempts(&[written.id, unsent.id], "saas", None, None).unwrap();
    let outcomes = host.plugins.get("files").unwrap().fulfil(std::slice::from_ref(written)).unwrap();
    assert_eq!(outcomes.len(), 1);
    drop(host);

    let mut host = deployment.host();
    let report = complete(&mut host);
    assert_eq!((report.counters.recovered, report.counters.resumed), (1, 1), "{report:?}");
    for order in [written, unsent] {
        let order = host.store.order(order.id).unwrap();
        assert_eq!(order.state, ProvisioningState::Verified, "{order:?}");
        let oks: Vec<_> = host
            .store
            .history(order.id)
            .unwrap()
            .into_iter()
            .filter(|h| h.event == Event::ConnectorOk.name())
            .collect();
        assert_eq!(oks.len(), 1, "order {}: {oks:?}", order.id);
    }
    let recovered = host.store.history(written.id).unwrap();
    assert!(recovered.iter().any(|h| h.reason.contains("carried out before an interruption")), "{recovered:?}");
    let attempts = host.store.attempts(written.id).unwrap();
    assert_eq!(attempts.iter().map(|a| a.outcome.as_deref()).collect::<Vec<_>>(), [Some("connector-ok")]);
    let attempts = host.store.attempts(unsent.id).unwrap();
    assert_eq!(
        attempts.iter().map(|a| a.outcome.as_deref()).collect::<Vec<_>>(),
        [Some("interrupted"), Some("connector-ok")]
    );
    // One line per order in the managed system: the recovered order was not written again.
    let journal = std::fs::read_to_string(deployment.path("managed/SaaS_Account.jsonl")).unwrap();
    for order in [written, unsent] {
        let lines = journal.lines().filter(|l| l.contains(&format!("\"order\":{}", order.id))).count();
        assert_eq!(lines, 1, "order {} in:\n{journal}", order.id);
    }
}

#[test]
fn a_connector_whose_secret_is_missing_is_not_called_and_its_orders_wait() {
    // Unique to this test: no other test reads or writes it.
    const VAR: &str = "PROVISION_TEST_DESK_TOKEN";
    let deployment = faulty_with(&format!("mode = \"ok\"\ntoken = {{ env = \"{VAR}\" }}"), "2s", "", &["bob", "carol"]);
    // SAFETY: no other test touches this variable (see above).
    unsafe { std::env::remove_var(VAR) };
    let mut host = open(&deployment);
    // More runs than `disable_after` (2): a missing secret is the config's fault, not the plugin's.
    for _ in 0..3 {
        let report = complete(&mut host);
        assert_eq!(report.counters.executed, 0);
        assert!(
            report.problems.iter().any(|p| p.contains(&format!(
                "plugin `desk` cannot be called: its secret config value `token`: environment variable {VAR} is not set"
            ))),
            "{:?}",
            report.problems
        );
    }
    assert!(all(&host).iter().all(|o| o.state == ProvisioningState::Pending && o.attempts == 0));
    assert!(host.health.get("desk").is_none_or(|h| h.disabled_at.is_none()), "disabled for a missing secret");
    unsafe { std::env::set_var(VAR, "t0ken") };
    assert_eq!(complete(&mut host).counters.executed, 2);
}
