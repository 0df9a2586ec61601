//! Start-up: loading the bundled plugins as a host does when it opens, cold (every component
//! compiled) and warm (compiled code from the on-disk cache). Target: warm ≥ 50x faster.

use std::time::Instant;

use provision::config::{PluginConfig, PluginSource};
use provision::plugins::{Runtime, bundled};

use crate::report::{Samples, header};

const COLD_RUNS: usize = 5;
const WARM_RUNS: usize = 21;

/// Loads every bundled plugin in one fresh runtime; milliseconds.
fn load_all(cache: Option<&std::path::Path>, expect_cached: bool) -> f64 {
    let started = Instant::now();
    let runtime = Runtime::new(cache).expect("runtime");
    for (name, _) in bundled::ALL {
        let plugin = runtime.load(&PluginConfig::new(*name, PluginSource::Bundled((*name).into()))).expect("load");
        assert_eq!(plugin.from_cache, expect_cached, "{name}");
    }
    started.elapsed().as_secs_f64() * 1e3
}

pub fn run() {
    let size: usize = bundled::ALL.iter().map(|(_, bytes)| bytes.len()).sum();
    header(&format!("Start-up: the {} bundled plugins ({} KiB), runtime included", bundled::ALL.len(), size / 1024));
    let cold = Samples::new((0..COLD_RUNS).map(|_| load_all(None, false)).collect());
    let cache = tempfile::tempdir().unwrap();
    load_all(Some(cache.path()), false);
    let warm = Samples::new((0..WARM_RUNS).map(|_| load_all(Some(cache.path()), true)).collect());
    println!("{}", cold.row("cold (compile)", "ms"));
    println!("{}", warm.row("warm (compiled cache)", "ms"));
    println!("\nwarm is {:.0}x faster than cold (medians; target ≥ 50x)", cold.median() / warm.median());
}
