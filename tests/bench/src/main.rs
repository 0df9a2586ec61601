//! The benchmark suite. Every figure is measured in the same run on the same machine, as the
//! median, min and max of several runs, and compared as a ratio:
//!
//!     cargo run --release --manifest-path tests/bench/Cargo.toml -- [storage|complete|rule|startup|all]
//!
//! - `storage`: the storage ceiling, batched SQLite writes of a state change and its history
//!   row on the product's schema, without the host around them;
//! - `complete`: the complete job from N new assignments to N Verified orders (compute, the
//!   review rule component, the file connector component, history, synchronise), at 100 000 and
//!   1 000 000 orders, each run a process of its own: orders per second and peak memory
//!   (`BENCH_COMPLETE_N` and `BENCH_COMPLETE_RUNS` change the sizes and runs); with `all`, also
//!   as a percentage of the storage ceiling;
//! - `rule`: one review rule four ways, per order;
//! - `startup`: loading the bundled plugins cold (compiling) and warm (compiled cache).

mod complete;
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
    if all || what == "rule" {
        known = true;
        rule::run();
    }
    if all || what == "startup" {
        known = true;
        startup::run();
    }
    if !known {
        eprintln!("unknown benchmark `{what}`: storage, complete, rule, startup or all");
        std::process::exit(2);
    }
}
