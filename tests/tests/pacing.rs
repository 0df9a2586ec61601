//! Connection pace against real servers: the bundled SCIM connector over real HTTP on loopback,
//! to the slow SCIM stand-in, which logs every request (arrival, answer, requests in flight) and
//! can refuse its first writes. A rate limit bounds the requests over any span; a Retry-After
//! pauses its connection while another goes on (a long one leaves the connection's orders
//! Pending for the next run); repeated 503s lower the requests in flight, and clean batches
//! bring them back. Nothing is lost, nothing is created twice.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use provision::host::Host;
use provision::model::ProvisioningState;
use provision::store::OrderFilter;
use provision_tests::Deployment;
use provision_tests::servers::{Faults, Served, SlowScim};

/// One connection `name` of resource type `Type_{name}` to the server on `port`, with its own
/// plugin, and `extra` lines in its table; a transient error is retried a second later.
fn connection(name: &str, port: u16, batch: usize, concurrency: usize, extra: &str) -> String {
    format!(
        r#"
[plugins.scim-{name}]
file = "bundled:scim-connector"
timeout = "60s"
[plugins.scim-{name}.config]
base-url = "http://127.0.0.1:{port}"
attributes = "userName"
bulk = "never"
[plugins.scim-{name}.grants]
http = ["http://127.0.0.1:{port}"]

[connections.{name}]
plugin = "scim-{name}"
batch_size = {batch}
concurrency = {concurrency}
{extra}

[connections.{name}.retry]
max_attempts = 5
backoff = "fixed"
delay = "1s"
jitter = false

[resource_types.Type_{name}]
entity_type = "Directory_User"
connection = "{name}"
"#
    )
}

/// A deployment of these connections, with `orders` users each wants (keys `{name}{n}`).
fn deployment(connections: &[(&str, usize, String)]) -> Deployment {
    let mut config = "[runtime]\nworkers = 8\n\n[entity_types.Directory_User]\nnotifications = false\n".to_string();
    let mut data = String::new();
    for (name, orders, table) in connections {
        config.push_str(table);
        for n in 0..*orders {
            data.push_str(&format!(
                "[[identities]]\nentity_type = \"Directory_User\"\nkey = \"{name}{n:03}\"\n\n\
                 [[assignments]]\nidentity = \"{name}{n:03}\"\nresource_type = \"Type_{name}\"\n\
                 attributes = {{ userName = \"{name}{n:03}\" }}\n\n"
            ));
        }
    }
    let deployment = Deployment::new(&config);
    deployment.write("data.toml", data);
    deployment
}

fn states(host: &Host, resource_type: &str) -> BTreeMap<String, usize> {
    let orders = host
        .store
        .orders(&OrderFilter { resource_types: vec![resource_type.to_string()], ..OrderFilter::default() })
        .unwrap();
    let mut states = BTreeMap::new();
    for order in orders {
        *states.entry(format!("{:?}", order.state)).or_default() += 1;
    }
    states
}

fn count_in(host: &Host, resource_type: &str, state: ProvisioningState) -> usize {
    host.store
        .orders(&OrderFilter {
            states: vec![state],
            resource_types: vec![resource_type.to_string()],
            ..OrderFilter::default()
        })
        .unwrap()
        .len()
}

/// Users created per `externalId` (201 answers): each exactly once.
fn created_once(served: &[Served], expected: usize) {
    let mut created: BTreeMap<&str, usize> = BTreeMap::new();
    for s in served.iter().filter(|s| s.method == "POST" && s.status == 201) {
        *created.entry(s.external_id.as_deref().unwrap_or("?")).or_default() += 1;
    }
    assert_eq!(created.len(), expected, "{created:?}");
    assert!(created.values().all(|n| *n == 1), "a user was created twice: {created:?}");
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

#[test]
fn a_rate_limit_bounds_the_requests_over_any_span_and_its_wait_is_not_the_calls_time() {
    const ORDERS: usize = 30;
    const RATE: f64 = 20.0;
    const BURST: usize = 4;
    let scim = SlowScim::start(Duration::from_millis(5));
    // Three batches of ten at once, at 20 requests a second: each call waits more than its
    // second of time limit for its tokens; that wait is not counted against it.
    let mut table = connection("saas", scim.port, 10, 3, &format!("rate_limit = \"20/s\"\nrate_burst = {BURST}"));
    table = table.replace("timeout = \"60s\"", "timeout = \"1s\"");
    let deployment = deployment(&[("saas", ORDERS, table)]);
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    let report = provision_tests::complete(&mut host);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(count_in(&host, "Type_saas", ProvisioningState::Verified), ORDERS, "{:?}", states(&host, "Type_saas"));
    let served = scim.served();
    created_once(&served, ORDERS);
    // Two reads of one page (users, groups) each, one POST per order: no call was cut short by
    // its time limit and sent again (that would show as 409s and look-ups).
    assert_eq!(
        served.len(),
        ORDERS + 4,
        "{:?}",
        served.iter().map(|s| (&s.method, &s.url, s.status)).collect::<Vec<_>>()
    );
    // Over every span between two arrivals, at most the burst plus the rate's worth, and one
    // request of slack for the time a request takes from its token to the server.
    for i in 0..served.len() {
        for j in i..served.len() {
            let span = served[j].arrived.duration_since(served[i].arrived).as_secs_f64();
            let allowed = BURST as f64 + RATE * span + 1.0;
            assert!((j - i + 1) as f64 <= allowed, "{} requests in {:.3} s (at most {allowed:.1})", j - i + 1, span);
        }
    }
    let took = served.last().unwrap().arrived.duration_since(served[0].arrived);
    let least = Duration::from_secs_f64((served.len() - BURST - 1) as f64 / RATE);
    assert!(took >= least, "{} requests went out in {took:?}: the rate limit did not hold them", served.len());
}

#[test]
fn a_retry_after_pauses_its_connection_while_another_goes_on_and_nothing_is_lost() {
    let a = SlowScim::with_faults(Duration::from_millis(20), Faults { count: 1, status: 429, retry_after: Some(1) });
    let b = SlowScim::start(Duration::from_millis(100));
    let deployment =
        deployment(&[("a", 8, connection("a", a.port, 2, 1, "")), ("b", 12, connection("b", b.port, 2, 1, ""))]);
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    let report = provision_tests::complete(&mut host);
    assert!(report.problems.is_empty(), "{:?}", report.problems);

    let posts = |scim: &SlowScim| -> Vec<Served> { scim.served().into_iter().filter(|s| s.method == "POST").collect() };
    let (at_a, at_b) = (posts(&a), posts(&b));
    assert_eq!(at_a[0].status, 429, "{at_a:?}");
    // The first batch (the 429 and its second order) ended; the next of a's batches waited a
    // second after it, while b's batches went on.
    let paused = at_a[1].answered;
    let resumed = at_a[2].arrived;
    assert!(
        resumed.duration_since(paused) >= Duration::from_millis(950),
        "a went on {} ms after its Retry-After of 1 s",
        ms(resumed.duration_since(paused))
    );
    let meanwhile = at_b.iter().filter(|s| s.arrived > paused && s.arrived < resumed).count();
    assert!(meanwhile >= 2, "b sent {meanwhile} requests while a was paused");
    assert_eq!(count_in(&host, "Type_b", ProvisioningState::Verified), 12, "{:?}", states(&host, "Type_b"));
    assert_eq!(count_in(&host, "Type_a", ProvisioningState::Verified), 7, "{:?}", states(&host, "Type_a"));
    assert_eq!(count_in(&host, "Type_a", ProvisioningState::Errored), 1, "the 429's order waits for its retry");

    // The retry time has come: the refused order goes out once more, and only it.
    host.clock = Some(provision::model::now_ms() + 3_600_000);
    let report = provision_tests::complete(&mut host);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(count_in(&host, "Type_a", ProvisioningState::Verified), 8, "{:?}", states(&host, "Type_a"));
    created_once(&a.served(), 8);
    created_once(&b.served(), 12);
    assert_eq!(posts(&a).len(), 9, "eight users and the one refused request");
    assert_eq!(posts(&b).len(), 12);
}

#[test]
fn a_long_retry_after_leaves_the_connections_orders_pending_for_the_next_run() {
    let a = SlowScim::with_faults(Duration::from_millis(10), Faults { count: 1, status: 429, retry_after: Some(120) });
    let b = SlowScim::start(Duration::from_millis(10));
    let deployment =
        deployment(&[("a", 6, connection("a", a.port, 2, 1, "")), ("b", 4, connection("b", b.port, 2, 1, ""))]);
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    let started = Instant::now();
    let report = provision_tests::complete(&mut host);
    assert!(started.elapsed() < Duration::from_secs(60), "the run waited for a pause of two minutes");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(
        report.notes.iter().any(|n| n.contains("connection a is paused until") && n.contains("next run")),
        "{:?}",
        report.notes
    );
    assert_eq!(count_in(&host, "Type_b", ProvisioningState::Verified), 4);
    assert_eq!(count_in(&host, "Type_a", ProvisioningState::Pending), 4, "{:?}", states(&host, "Type_a"));
    assert_eq!(count_in(&host, "Type_a", ProvisioningState::Verified), 1);
    assert_eq!(count_in(&host, "Type_a", ProvisioningState::Errored), 1);
    let pace = host.store.paces().unwrap().into_iter().find(|p| p.connection == "a").expect("a's pace");
    assert!(pace.paused_until >= provision::model::now_ms() + 100_000, "{pace:?}");

    // The next run, still within the pause: a's orders keep waiting, nothing is sent.
    let posts = |scim: &SlowScim| scim.served().into_iter().filter(|s| s.method == "POST").count();
    provision_tests::complete(&mut host);
    assert_eq!(count_in(&host, "Type_a", ProvisioningState::Pending), 4);
    assert_eq!(posts(&a), 2, "only the first batch went to a");

    // An operator lets it go on; with the retry time come, everything is carried out once.
    host.store.reset_pace("a").unwrap();
    host.clock = Some(provision::model::now_ms() + 3_600_000);
    let report = provision_tests::complete(&mut host);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(count_in(&host, "Type_a", ProvisioningState::Verified), 6, "{:?}", states(&host, "Type_a"));
    created_once(&a.served(), 6);
    created_once(&b.served(), 4);
    assert_eq!(posts(&a), 7);
}

#[test]
fn repeated_503s_lower_the_requests_in_flight_and_clean_batches_bring_them_back() {
    const ORDERS: usize = 40;
    const FAILED: usize = 6;
    let scim =
        SlowScim::with_faults(Duration::from_millis(60), Faults { count: FAILED, status: 503, retry_after: None });
    let deployment = deployment(&[("saas", ORDERS, connection("saas", scim.port, 1, 4, ""))]);
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    provision::jobs::compute(&mut host, &indicatif::ProgressBar::hidden()).expect("compute");
    let report = provision::jobs::fulfil(&mut host, &indicatif::ProgressBar::hidden()).expect("fulfil");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!((report.counters.executed, report.counters.errored), ((ORDERS - FAILED) as u64, FAILED as u64));
    let served = scim.served();
    created_once(&served, ORDERS - FAILED);
    let failures: Vec<&Served> = served.iter().filter(|s| s.status == 503).collect();
    assert_eq!(failures.len(), FAILED);
    let failed_at = failures.iter().map(|s| s.answered).max().unwrap();
    // Requests in flight at each arrival after the last failure was answered.
    let after: Vec<usize> = served.iter().filter(|s| s.arrived > failed_at).map(|s| s.in_flight).collect();
    eprintln!("in flight at each arrival after the failures: {after:?}");
    let slowed = after.iter().take(2).max().copied().unwrap_or(0);
    assert!(slowed < 4, "right after the failures {slowed} requests were in flight (concurrency 4): {after:?}");
    assert!(after.contains(&4), "clean batches never brought it back to 4: {after:?}");
    assert!(served.iter().all(|s| s.in_flight <= 4));
    let pace = host.store.paces().unwrap().remove(0);
    assert_eq!((pace.allowed, pace.backoff_ms, pace.failures), (4, 0, 0), "{pace:?}");
}
