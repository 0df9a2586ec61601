//! One review rule four ways, per order: native Rust (the floor), our component (the bundled
//! classification-review, through the host's plugin call with its validation), the same rule in
//! Rego evaluated by regorus, and as an Extism plugin. Decisions must be identical across the
//! four. Targets: component ≤ 10x native, and faster than regorus and Extism.

use std::time::Instant;

use provision::config::{ConfigValue, PluginConfig, PluginSource};
use provision::model::{Change, ChangeKind, Order, ProvisioningState};
use provision::plugins::{Decision, Runtime};

use crate::report::{Samples, header};

/// Orders per call (the host's review batch).
pub const BATCH: usize = 500;
const RUNS: usize = 31;

/// The rule's config, as every implementation gets it.
pub const REVIEW: &[&str] = &["sensitive"];
pub const BLOCK: &[&str] = &["forbidden"];

pub fn orders() -> Vec<Order> {
    let classes = ["basic", "sensitive", "basic", "forbidden", "basic"];
    (0..BATCH as i64)
        .map(|id| {
            let mut change = Change::deletion();
            change.kind = [ChangeKind::Added, ChangeKind::Modified, ChangeKind::Deleted][id as usize % 3];
            change.attributes.insert("userName".into(), format!("user{id}"));
            change.attributes.insert("email".into(), format!("user{id}@example.com"));
            change.granted.insert("Users".into());
            Order {
                id,
                idempotency_key: format!("bench-{id}"),
                owner: format!("user{id}"),
                entity_type: "Directory_User".into(),
                resource_type: format!("Type_{}", id % 4),
                classification: classes[id as usize % classes.len()].into(),
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
        })
        .collect()
}

/// The rule in plain Rust, as the component implements it.
pub fn native(orders: &[Order]) -> Vec<Decision> {
    orders
        .iter()
        .map(|o| {
            let class = o.classification.as_str();
            if BLOCK.contains(&class) {
                Decision::Blocked(format!(
                    "resource type {} is classified `{class}`, which this policy blocks",
                    o.resource_type
                ))
            } else if REVIEW.contains(&class) {
                Decision::ReviewNeeded(format!(
                    "resource type {} is classified `{class}`, which needs a review",
                    o.resource_type
                ))
            } else {
                Decision::NoReview
            }
        })
        .collect()
}

/// Nanoseconds per order of `f` on the batch, over the runs.
fn per_order(orders: &[Order], mut f: impl FnMut(&[Order]) -> Vec<Decision>, expected: &[Decision]) -> Samples {
    assert_eq!(f(orders), expected, "decisions differ from the native rule's");
    Samples::new(
        (0..RUNS)
            .map(|_| {
                let started = Instant::now();
                let decisions = f(orders);
                let elapsed = started.elapsed();
                assert_eq!(decisions.len(), orders.len());
                elapsed.as_secs_f64() * 1e9 / orders.len() as f64
            })
            .collect(),
    )
}

pub fn run() {
    let orders = orders();
    let expected = native(&orders);
    header(&format!("Review rule per order (batches of {BATCH}; nanoseconds per order)"));
    let native_ns = per_order(&orders, native, &expected);
    println!("{}", native_ns.row("native Rust", "ns"));

    let mut config = PluginConfig::new("rule", PluginSource::Bundled("classification-review".into()));
    config.config = [("review", REVIEW.join(",")), ("block", BLOCK.join(","))]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ConfigValue::Plain(v)))
        .collect();
    let runtime = Runtime::new(None).expect("runtime");
    let plugin = runtime.load(&config).expect("load the component");
    let component = per_order(&orders, |o| plugin.evaluate(o).expect("evaluate"), &expected);
    println!("{}", component.row("component (classification-review)", "ns"));
    println!("\ncomponent / native: {:.1}x (medians; target ≤ 10x)", component.median() / native_ns.median());
}
