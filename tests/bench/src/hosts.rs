//! Several hosts on one PostgreSQL: fulfilment in orders per second with 1, 2 and 4 hosts, each
//! host a process of its own with the same concurrency (`PER_HOST` batches in flight: as many
//! workers, and the connection's cluster-wide `concurrency` is `PER_HOST` × hosts), against a
//! managed system that answers each request after 50 ms (each order one request: the bundled
//! SCIM connector without bulk). Target: ≥ 1.8x with 2 hosts.
//!
//!     cargo run --release --manifest-path tests/bench/Cargo.toml -- hosts
//!
//! PostgreSQL is the tests' own server (`provision_tests::postgres`: initdb into a temporary
//! directory; Debian's binaries, `tests/setup.sh`). Each run computes `ORDERS_PER_SLOT` Pending
//! orders per batch in flight, then starts the hosts (`hosts-child CONFIG`); each opens its
//! host (plugins from the shared cache), says it is ready, and on the word runs `fulfil`: the
//! first starts the run, the others join it and claim its units. The time is the run's own, as
//! the database recorded it (start to end), so opening the processes is not in it. Figures are
//! the median, min and max of three runs.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use indicatif::ProgressBar;
use provision::config::Config;
use provision::host::Host;
use provision::model::ProvisioningState;
use provision_tests::Deployment;
use provision_tests::servers::SlowScim;

/// The hidden subcommand a host's process is started with.
pub const CHILD: &str = "hosts-child";
const LATENCY: Duration = Duration::from_millis(50);
/// Batches in flight per host.
const PER_HOST: usize = 4;
const ORDERS_PER_SLOT: usize = 60;
const RUNS: usize = 3;

/// The concurrency bench's deployment on PostgreSQL at `url`, for `hosts` hosts.
fn config(url: &str, port: u16, hosts: usize) -> String {
    let config = crate::concurrency::scim_config(port, PER_HOST, PER_HOST * hosts);
    format!("[database]\nurl = {}\n{config}", serde_json::to_string(url).expect("a URL as a TOML string"))
}

/// One run with `hosts` hosts: orders per second.
fn measure(hosts: usize) -> f64 {
    let scim = SlowScim::start(LATENCY);
    let url = provision_tests::postgres::database();
    let orders = ORDERS_PER_SLOT * PER_HOST * hosts;
    let deployment = Deployment::new(&config(&url, scim.port, hosts));
    deployment.write("data.toml", crate::concurrency::identities(orders));
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    provision::jobs::compute(&mut host, &ProgressBar::hidden()).expect("compute");

    let exe = std::env::current_exe().expect("the bench's own path");
    let mut children: Vec<_> = (0..hosts)
        .map(|_| {
            Command::new(&exe)
                .args([CHILD, deployment.config_path().to_str().expect("a UTF-8 path")])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("start a host")
        })
        .collect();
    let mut outputs: Vec<_> = children.iter_mut().map(|c| BufReader::new(c.stdout.take().expect("stdout"))).collect();
    for output in &mut outputs {
        let mut line = String::new();
        output.read_line(&mut line).expect("a host's word");
        assert_eq!(line.trim(), "ready", "a host did not open: {line}");
    }
    for child in &mut children {
        writeln!(child.stdin.as_mut().expect("stdin"), "go").expect("tell a host to go");
    }
    for mut child in children {
        assert!(child.wait().expect("a host's end").success(), "a host failed");
    }

    let counts = host.store.count_by_state().expect("states");
    let executed = counts.iter().find(|(s, _)| *s == ProvisioningState::Executed).map_or(0, |(_, n)| *n);
    assert_eq!(executed as usize, orders, "{counts:?}");
    assert_eq!(scim.created.load(std::sync::atomic::Ordering::SeqCst), orders, "each order created once");
    let run = host.store.job_runs(1).expect("runs").remove(0);
    assert_eq!(run.kind, "fulfil");
    assert_eq!(run.hosts.len(), hosts, "every host took part: {:?}", run.hosts);
    let seconds = (run.finished_at.expect("the run ended") - run.started_at) as f64 / 1000.0;
    orders as f64 / seconds
}

/// A host's process: opens the host, says `ready`, waits for a line, runs fulfil.
pub fn child(args: &[String]) {
    let config = Config::load(std::path::Path::new(&args[0])).expect("config");
    let mut host = Host::open(config).expect("open the host");
    println!("ready");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("the word to go");
    let report = provision::jobs::fulfil(&mut host, &ProgressBar::hidden()).expect("fulfil");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

pub fn run() {
    // Compile the connector once, outside the measured runs.
    let _warm_up = measure(1);
    crate::report::title(&format!(
        "Several hosts on one PostgreSQL: fulfilment, {PER_HOST} batches in flight per host, against a managed system answering each request after {LATENCY:?}"
    ));
    let mut one = None;
    for hosts in [1, 2, 4] {
        let samples = crate::report::Samples::new((0..RUNS).map(|_| measure(hosts)).collect());
        let median = samples.median();
        let base = *one.get_or_insert(median);
        let ceiling = (PER_HOST * hosts) as f64 / LATENCY.as_secs_f64();
        println!(
            "{hosts} host{}: {:>6.1} orders/s (min {:.1}, max {:.1}) = {:.2}x one host{}; {:.0}% of batches in flight ÷ latency ({ceiling:.0}/s)",
            if hosts == 1 { " " } else { "s" },
            median,
            samples.min(),
            samples.max(),
            median / base,
            if hosts == 2 { " (target ≥ 1.8x)" } else { "" },
            100.0 * median / ceiling,
        );
    }
}
