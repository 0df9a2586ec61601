//! The benchmark suite. Every figure is measured in the same run on the same machine, as the
//! median, min and max of several runs, and compared as a ratio:
//!
//!     cargo run --release --manifest-path tests/bench/Cargo.toml -- [storage|rule|startup|all]
//!
//! - `storage`: the storage ceiling, batched SQLite writes of a state change and its history
//!   row on the product's schema, without the host around them;
//! - `rule`: one review rule four ways, per order;
//! - `startup`: loading the bundled plugins cold (compiling) and warm (compiled cache).

mod report;
mod rule;
mod startup;
mod storage;

fn main() {
    let what = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    let all = what == "all";
    let mut known = false;
    if all || what == "storage" {
        known = true;
        storage::run();
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
        eprintln!("unknown benchmark `{what}`: storage, rule, startup or all");
        std::process::exit(2);
    }
}
