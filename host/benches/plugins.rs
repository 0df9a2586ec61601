//! Plugin runtime benchmarks: loading the bundled plugins cold (compile) and warm (compiled
//! cache), and the cost of a review-rule call per order, by batch size.
//!
//!     cargo bench -p provision --bench plugins
//!     cargo bench -p provision --bench plugins --features concurrency-support
//!
//! The second line builds wasmtime with component-model async and turns the engine's
//! concurrency support on, to measure what it would cost per call. Each figure is the median,
//! min and max of repeated runs in one process.

use std::time::{Duration, Instant};

use provision::config::{PluginConfig, PluginSource};
use provision::model::{Change, ChangeKind, Order, ProvisioningState};
use provision::plugins::{Runtime, bundled};

fn plugin_config(name: &str) -> PluginConfig {
    PluginConfig::new(name, PluginSource::Bundled(name.into()))
}

/// Runs `f` `runs` times and prints median, min and max of what it returns (a duration).
fn report(label: &str, runs: usize, mut f: impl FnMut() -> Duration) {
    let mut samples: Vec<Duration> = (0..runs).map(|_| f()).collect();
    samples.sort();
    let fmt = |d: Duration| {
        if d >= Duration::from_millis(1) {
            format!("{:.2} ms", d.as_secs_f64() * 1e3)
        } else {
            format!("{:.2} µs", d.as_secs_f64() * 1e6)
        }
    };
    println!(
        "{label:<48} median {:>10}   min {:>10}   max {:>10}   ({runs} runs)",
        fmt(samples[runs / 2]),
        fmt(samples[0]),
        fmt(samples[runs - 1])
    );
}

fn order(id: i64) -> Order {
    let mut change = Change::deletion();
    change.kind = ChangeKind::Added;
    change.attributes.insert("userName".into(), format!("user{id}"));
    change.attributes.insert("email".into(), format!("user{id}@example.com"));
    change.granted.insert("Users".into());
    Order {
        id,
        idempotency_key: format!("bench-{id}"),
        owner: format!("user{id}"),
        entity_type: "Directory_User".into(),
        resource_type: "SaaS_Account".into(),
        classification: if id % 3 == 0 { "sensitive".into() } else { "basic".into() },
        resource_id: None,
        change,
        state: ProvisioningState::None,
        closed: None,
        message: None,
        attempts: 0,
        created_at: 0,
        updated_at: 0,
        next_attempt_at: None,
        held_run: None,
    }
}

fn main() {
    let concurrency = cfg!(feature = "concurrency-support");
    println!("concurrency support: {}", if concurrency { "on" } else { "off" });

    for (name, bytes) in bundled::ALL {
        let config = plugin_config(name);
        report(&format!("load cold (compile) {name} ({} KiB)", bytes.len() / 1024), 10, || {
            let runtime = Runtime::new(None).expect("runtime");
            let started = Instant::now();
            runtime.load(&config).expect("load");
            started.elapsed()
        });
        let cache = tempfile::tempdir().expect("temp dir");
        Runtime::new(Some(cache.path())).expect("runtime").load(&config).expect("warm up the cache");
        let runtime = Runtime::new(Some(cache.path())).expect("runtime");
        report(&format!("load warm (compiled cache) {name}"), 50, || {
            let started = Instant::now();
            let plugin = runtime.load(&config).expect("load");
            assert!(plugin.from_cache);
            started.elapsed()
        });
    }

    let runtime = Runtime::new(None).expect("runtime");
    let rule = runtime.load(&plugin_config("classification-review")).expect("load");
    for batch in [1usize, 10, 100, 500] {
        let orders: Vec<Order> = (0..batch as i64).map(order).collect();
        let runs = if batch == 1 { 2000 } else { 200 };
        report(&format!("evaluate, batch of {batch}, per order"), runs, || {
            let started = Instant::now();
            let decisions = rule.evaluate(&orders).expect("evaluate");
            assert_eq!(decisions.len(), batch);
            started.elapsed() / batch as u32
        });
    }
}
