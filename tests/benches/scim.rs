//! SCIM provisioning throughput against a local scim2-server, with and without SCIM bulk, and
//! where the time goes: inside the component versus waiting on HTTP.
//!
//!     tests/setup.sh && cargo bench -p provision-tests --bench scim
//!
//! Each mode runs on a fresh server; figures are the median, min and max of the runs.

use std::time::Instant;

use indicatif::ProgressBar;
use provision_tests::Deployment;
use provision_tests::servers::{ScimServer, free_port};

const USERS: usize = 300;
const RUNS: usize = 3;
const TOKEN: &str = "bench-token";

struct Run {
    orders_per_second: f64,
    component_share: f64,
    requests: u64,
}

fn run(bulk: &str) -> Run {
    let scim = ScimServer::start(free_port(), TOKEN);
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/scim");
    let config = std::fs::read_to_string(example.join("provision.toml"))
        .unwrap()
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{}", scim.port))
        .replace("token = { env = \"SCIM_TOKEN\" }", "token = { file = \"scim-token\" }")
        .replace("bulk = \"auto\"", &format!("bulk = \"{bulk}\""));
    let deployment = Deployment::new(&config);
    deployment.write("scim-token", TOKEN);
    let mut data = String::new();
    for n in 0..USERS {
        data.push_str(&format!(
            "[[identities]]\nentity_type = \"Directory_User\"\nkey = \"u{n:04}\"\n\n[[assignments]]\nidentity = \"u{n:04}\"\nresource_type = \"SaaS_Account\"\nattributes = {{ userName = \"u{n:04}\", displayName = \"User {n}\", email = \"u{n}@example.com\" }}\nentitlements = [\"Users\"]\n\n"
        ));
    }
    deployment.write("data.toml", data);
    let mut host = deployment.host();
    deployment.import(&mut host, "data.toml", false);
    let hidden = ProgressBar::hidden();
    provision::jobs::compute(&mut host, &hidden).unwrap();
    let before = host.plugins.get("scim").expect("the scim plugin is loaded").stats();
    let started = Instant::now();
    let report = provision::jobs::fulfil(&mut host, &hidden).unwrap();
    let elapsed = started.elapsed();
    assert_eq!(report.counters.executed as usize, USERS, "{report:?}");
    let after = host.plugins.get("scim").expect("the scim plugin is loaded").stats();
    let call = after.call_time - before.call_time;
    let http = after.http_time - before.http_time;
    Run {
        orders_per_second: USERS as f64 / elapsed.as_secs_f64(),
        component_share: (call.saturating_sub(http)).as_secs_f64() / call.as_secs_f64(),
        requests: after.http_requests - before.http_requests,
    }
}

fn main() {
    for bulk in ["auto", "never"] {
        let mut runs: Vec<Run> = (0..RUNS).map(|_| run(bulk)).collect();
        runs.sort_by(|a, b| a.orders_per_second.total_cmp(&b.orders_per_second));
        let median = &runs[RUNS / 2];
        println!(
            "bulk={bulk:<5} {USERS} orders: {:>7.1} orders/s (min {:.1}, max {:.1}); {} HTTP requests; \
             {:.1}% of the plugin's time inside the component, {:.1}% waiting on HTTP",
            median.orders_per_second,
            runs[0].orders_per_second,
            runs[RUNS - 1].orders_per_second,
            median.requests,
            median.component_share * 100.0,
            (1.0 - median.component_share) * 100.0,
        );
    }
}
