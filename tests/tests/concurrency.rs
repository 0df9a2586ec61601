//! Per-connection concurrency against a managed system that answers each request after a fixed
//! delay: the bundled SCIM connector over real HTTP on loopback, to a server that serves requests
//! on many threads and counts how many are in flight. With `concurrency = 4` the batches go out
//! four at a time (throughput grows), and never more than `concurrency` requests are in flight.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use provision::model::ProvisioningState;
use provision::store::OrderFilter;
use provision_tests::Deployment;
use provision_tests::servers::SlowScim;

/// Each request waits this long before its answer.
const DELAY: Duration = Duration::from_millis(50);
const ORDERS: usize = 48;
const BATCH: usize = 4;

fn deployment(port: u16, concurrency: usize) -> Deployment {
    let config = format!(
        r#"
[runtime]
workers = 8

[entity_types.Directory_User]
notifications = false

[plugins.scim]
file = "bundled:scim-connector"
timeout = "60s"
[plugins.scim.config]
base-url = "http://127.0.0.1:{port}"
attributes = "userName"
bulk = "never"
[plugins.scim.grants]
http = ["http://127.0.0.1:{port}"]

[connections.saas]
plugin = "scim"
batch_size = {BATCH}
concurrency = {concurrency}

[resource_types.SaaS_Account]
entity_type = "Directory_User"
connection = "saas"
"#
    );
    let deployment = Deployment::new(&config);
    let mut data = String::new();
    for n in 0..ORDERS {
        data.push_str(&format!(
            "[[identities]]\nentity_type = \"Directory_User\"\nkey = \"u{n:03}\"\n\n\
             [[assignments]]\nidentity = \"u{n:03}\"\nresource_type = \"SaaS_Account\"\nattributes = {{ userName = \"u{n:03}\" }}\n\n"
        ));
    }
    deployment.write("data.toml", data);
    deployment
}

/// Runs fulfil alone over the Pending orders; returns how long it took and the most requests
/// the server had in flight.
fn fulfil_at(concurrency: usize) -> (Duration, usize) {
    let scim = SlowScim::start(DELAY);
    let deployment = deployment(scim.port, concurrency);
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    provision::jobs::compute(&mut host, &indicatif::ProgressBar::hidden()).expect("compute");
    let started = Instant::now();
    let report = provision::jobs::fulfil(&mut host, &indicatif::ProgressBar::hidden()).expect("fulfil");
    let took = started.elapsed();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.counters.executed, ORDERS as u64, "{report:?}");
    assert_eq!(scim.created.load(Ordering::SeqCst), ORDERS, "each order created once at the managed system");
    let executed = host
        .store
        .orders(&OrderFilter { states: vec![ProvisioningState::Executed], ..OrderFilter::default() })
        .unwrap();
    assert_eq!(executed.len(), ORDERS);
    (took, scim.most.load(Ordering::SeqCst))
}

#[test]
fn batches_go_out_concurrency_at_a_time_and_never_more() {
    let (one, most_one) = fulfil_at(1);
    let (four, most_four) = fulfil_at(4);
    let rate = |took: Duration| ORDERS as f64 / took.as_secs_f64();
    eprintln!(
        "{ORDERS} orders at {DELAY:?} a request: concurrency 1 took {one:?} ({:.0}/s, at most {most_one} in flight), \
         concurrency 4 took {four:?} ({:.0}/s, at most {most_four} in flight)",
        rate(one),
        rate(four)
    );
    assert_eq!(most_one, 1, "concurrency 1 had {most_one} requests in flight");
    assert!(most_four <= 4, "concurrency 4 had {most_four} requests in flight");
    assert!(most_four > 1, "concurrency 4 never had two batches in flight");
    // The server's delay dominates: four at a time must at least halve the time of one.
    assert!(four * 2 < one, "concurrency 4 took {four:?}, concurrency 1 {one:?}");
}
