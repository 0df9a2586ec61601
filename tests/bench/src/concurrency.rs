//! Per-connection concurrency against a managed system that answers each request after 50 ms:
//! orders per second at `concurrency` 1, 4 and 16, against the ceiling `concurrency ÷ latency`
//! (each order is one request: the bundled SCIM connector without bulk), and the share of a core
//! the process used meanwhile.
//!
//!     cargo run --release --manifest-path tests/bench/Cargo.toml -- concurrency
//!
//! The managed system is `SlowScim` on loopback (32 threads; it counts the requests in flight).
//! Each run is fulfil alone over `ORDERS_PER_SLOT × concurrency` Pending orders, so every run
//! lasts about as long; `[runtime] workers` is the concurrency (a batch in flight holds a
//! worker). Figures are the median, min and max of three runs. CPU is this process's user + system
//! time over the fulfil's wall time (the loopback server's threads included; they only sleep
//! and answer).

use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use provision_tests::Deployment;
use provision_tests::servers::SlowScim;

const LATENCY: Duration = Duration::from_millis(50);
const ORDERS_PER_SLOT: usize = 100;
pub const BATCH: usize = 10;
const RUNS: usize = 3;

struct Run {
    orders_per_second: f64,
    /// CPU seconds per wall second (1.0 = one core).
    cpu: f64,
    most_in_flight: usize,
}

fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole `rusage` into the pointer it is given.
    let usage = unsafe {
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()), 0, "getrusage");
        usage.assume_init()
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// A deployment whose SaaS_Account connection is the bundled SCIM connector to `port` (one
/// request per order), with `workers` worker threads and `concurrency` batches in flight.
pub fn scim_config(port: u16, workers: usize, concurrency: usize) -> String {
    format!(
        r#"
[runtime]
workers = {workers}

[entity_types.Directory_User]
notifications = false

[plugins.scim]
file = "bundled:scim-connector"
timeout = "120s"
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
    )
}

/// A desired-state file of `n` identities, each assigned a SaaS_Account.
pub fn identities(n: usize) -> String {
    let mut data = String::new();
    for n in 0..n {
        data.push_str(&format!(
            "[[identities]]\nentity_type = \"Directory_User\"\nkey = \"u{n:05}\"\n\n\
             [[assignments]]\nidentity = \"u{n:05}\"\nresource_type = \"SaaS_Account\"\nattributes = {{ userName = \"u{n:05}\" }}\n\n"
        ));
    }
    data
}

fn measure(concurrency: usize) -> Run {
    let scim = SlowScim::start(LATENCY);
    let port = scim.port;
    let orders = ORDERS_PER_SLOT * concurrency;
    let deployment = Deployment::new(&scim_config(port, concurrency, concurrency));
    let data = identities(orders);
    deployment.write("data.toml", data);
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    let hidden = ProgressBar::hidden();
    provision::jobs::compute(&mut host, &hidden).expect("compute");
    let (started, cpu) = (Instant::now(), cpu_seconds());
    let report = provision::jobs::fulfil(&mut host, &hidden).expect("fulfil");
    let (wall, cpu) = (started.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.counters.executed as usize, orders, "{report:?}");
    assert_eq!(scim.created.load(std::sync::atomic::Ordering::SeqCst), orders, "each order created once");
    Run {
        orders_per_second: orders as f64 / wall,
        cpu: cpu / wall,
        most_in_flight: scim.most.load(std::sync::atomic::Ordering::SeqCst),
    }
}

pub fn run() {
    // Compile the connector once, outside the measured runs.
    let _warm_up = measure(1);
    crate::report::title(&format!(
        "Per-connection concurrency: orders per second against a managed system answering each request after {LATENCY:?}"
    ));
    for concurrency in [1, 4, 16] {
        let mut runs: Vec<Run> = (0..RUNS).map(|_| measure(concurrency)).collect();
        runs.sort_by(|a, b| a.orders_per_second.total_cmp(&b.orders_per_second));
        let median = &runs[RUNS / 2];
        let ceiling = concurrency as f64 / LATENCY.as_secs_f64();
        println!(
            "concurrency {concurrency:>2}: {:>6.1} orders/s (min {:.1}, max {:.1}) = {:.0}% of concurrency ÷ latency \
             ({ceiling:.0}/s; target ≥ 80%); at most {} requests in flight; CPU {:.0}% of a core",
            median.orders_per_second,
            runs[0].orders_per_second,
            runs[RUNS - 1].orders_per_second,
            100.0 * median.orders_per_second / ceiling,
            median.most_in_flight,
            100.0 * median.cpu,
        );
    }
}
