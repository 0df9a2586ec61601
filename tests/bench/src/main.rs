//! The benchmark suite. Every figure is measured in the same run on the same machine, as the
//! median, min and max of several runs, and compared as a ratio:
//!
//!     cargo run --release --manifest-path tests/bench/Cargo.toml -- [storage|complete|approve|concurrency|feed|rule|startup|all]
//!
//! - `storage`: the storage ceiling, batched SQLite writes of a state change and its history
//!   row on the product's schema, without the host around them;
//! - `complete`: the complete job from N new assignments to N Verified orders (compute, the
//!   review rule component, the file connector component, history, synchronise), at 100 000 and
//!   1 000 000 orders, each run a process of its own: orders per second and peak memory
//!   (`BENCH_COMPLETE_N` and `BENCH_COMPLETE_RUNS` change the sizes and runs); with `all`, also
//!   as a percentage of the storage ceiling;
//! - `approve`: a reviewer's approve over the API while a complete job over 100 000 orders runs
//!   in the server (`BENCH_APPROVE_N`): p50 / p99 / max latency, against an idle server;
//! - `concurrency`: orders per second against a managed system answering in 50 ms, at
//!   `concurrency` 1, 4 and 16, with the process's CPU share;
//! - `feed`: desired state in (`POST /api/v1/desired`, assignments per second for requests of
//!   1 000 and 10 000 changes) and history out (the audit export's rows per second and peak
//!   memory at 100 000 and 1 000 000 rows);
//! - `rule`: one review rule four ways, per order;
//! - `startup`: loading the bundled plugins cold (compiling) and warm (compiled cache).

mod approve;
mod complete;
mod concurrency;
mod feed;
mod hosts;
mod report;
mod rule;
mod startup;
mod storage;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(complete::CHILD) {
        complete::child(&args[2..]);
        return;
    }
    if args.get(1).map(String::as_str) == Some(feed::EXPORT_CHILD) {
        feed::export_child(&args[2..]);
        return;
    }
    if args.get(1).map(String::as_str) == Some(hosts::CHILD) {
        hosts::child(&args[2..]);
        return;
    }
    if args.get(1).map(String::as_str) == Some(approve::CHILD) {
        approve::child(&args[2..]);
        return;
    }
    let what = args.get(1).cloned().unwrap_or_else(|| "all".into());
    let all = what == "all";
    let mut known = false;
    let mut ceiling = None;
    if all || what == "storage" {
        known = true;
        ceiling = Some(storage::run());
    }
    if all || what == "complete" {
        known = true;
        let speeds = complete::run();
        if let Some(ceiling) = &ceiling {
            for (n, speed) in speeds {
                println!(
                    "complete job / storage ceiling: {:.0}% at {} orders (medians; target ≥ 50%)",
                    100.0 * speed.median() / ceiling.median(),
                    complete::count(n)
                );
            }
        }
    }
    if all || what == "approve" {
        known = true;
        approve::run();
    }
    if all || what == "concurrency" {
        known = true;
        concurrency::run();
    }
    if all || what == "hosts" {
        known = true;
        hosts::run();
    }
    if all || what == "feed" {
        known = true;
        feed::run();
    }
    if all || what == "rule" {
        known = true;
        rule::run();
    }
    if all || what == "startup" {
        known = true;
        startup::run();
    }
    if !known {
        eprintln!(
            "unknown benchmark `{what}`: storage, complete, approve, concurrency, hosts, feed, rule, startup or all"
        );
        std::process::exit(2);
    }
}
