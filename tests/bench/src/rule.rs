//! One review rule four ways, per order: native Rust (the floor), our component (the bundled
//! classification-review, through the host's plugin call with its validation), the same rule in
//! Rego evaluated by regorus, and as an Extism plugin. Decisions must be identical across the
//! four. Targets: component ≤ 10x native, and faster than regorus and Extism.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use provision::config::{ConfigValue, PluginConfig, PluginSource};
use provision::model::{Change, ChangeKind, Order, ProvisioningState};
use provision::plugins::{Decision, Runtime};

use crate::report::{Samples, header};

/// Orders per call (the host's review batch); `BENCH_RULE_BATCH` changes it, e.g. to 1 to see a
/// call's fixed cost.
pub const BATCH: usize = 500;

fn batch() -> usize {
    std::env::var("BENCH_RULE_BATCH").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(BATCH)
}
/// Rounds per contender; `BENCH_RULE_RUNS` changes it (e.g. more, to profile one).
const RUNS: usize = 31;

fn runs() -> usize {
    std::env::var("BENCH_RULE_RUNS").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(RUNS)
}

/// The rule's config, as every implementation gets it.
pub const REVIEW: &[&str] = &["sensitive"];
pub const BLOCK: &[&str] = &["forbidden"];

pub fn orders() -> Vec<Order> {
    let classes = ["basic", "sensitive", "basic", "forbidden", "basic"];
    (0..batch() as i64)
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

/// A rule implementation: a batch in, one decision per order out.
type Decide<'a> = Box<dyn FnMut(&[Order]) -> Vec<Decision> + 'a>;

/// One implementation of the rule under measurement.
struct Contender<'a> {
    label: &'static str,
    decide: Decide<'a>,
    samples: Vec<f64>,
}

/// Nanoseconds per order of each contender on the batch. The contenders take turns, one batch
/// each per round (rotating who goes first), so a shared machine slowing down mid-run slows all
/// of them alike and the per-round ratios stay fair.
fn measure(orders: &[Order], contenders: &mut [Contender<'_>], expected: &[Decision]) {
    for c in contenders.iter_mut() {
        assert_eq!((c.decide)(orders), expected, "{}: decisions differ from the native rule's", c.label);
    }
    let n = contenders.len();
    for round in 0..runs() {
        for turn in 0..n {
            let c = &mut contenders[(round + turn) % n];
            let started = Instant::now();
            let decisions = (c.decide)(orders);
            let elapsed = started.elapsed();
            assert_eq!(decisions.len(), orders.len());
            c.samples.push(elapsed.as_secs_f64() * 1e9 / orders.len() as f64);
        }
    }
}

fn contender<'a>(label: &'static str, decide: Decide<'a>) -> Contender<'a> {
    Contender { label, decide, samples: Vec::with_capacity(runs()) }
}

/// `a / b` per round, as samples.
fn ratios(a: &Contender<'_>, b: &Contender<'_>) -> Samples {
    Samples::new(a.samples.iter().zip(&b.samples).map(|(a, b)| a / b).collect())
}

/// The Rego policy's input: the batch, every field the component gets that the rule could use.
fn rego_input(orders: &[Order]) -> regorus::Value {
    let text = |s: &str| regorus::Value::from(s);
    let batch: Vec<regorus::Value> = orders
        .iter()
        .map(|o| {
            let mut m: BTreeMap<regorus::Value, regorus::Value> = BTreeMap::new();
            m.insert(text("id"), regorus::Value::from(o.id));
            m.insert(text("owner"), text(&o.owner));
            m.insert(text("entity_type"), text(&o.entity_type));
            m.insert(text("resource_type"), text(&o.resource_type));
            m.insert(text("classification"), text(&o.classification));
            m.insert(text("change"), text(&o.change.kind.to_string()));
            let attributes: BTreeMap<regorus::Value, regorus::Value> =
                o.change.attributes.iter().map(|(k, v)| (text(k), text(v))).collect();
            m.insert(text("attributes"), regorus::Value::from(attributes));
            let granted: Vec<regorus::Value> = o.change.granted.iter().map(|e| text(e)).collect();
            m.insert(text("entitlements_added"), regorus::Value::from(granted));
            regorus::Value::from(m)
        })
        .collect();
    let mut input: BTreeMap<regorus::Value, regorus::Value> = BTreeMap::new();
    input.insert(text("orders"), regorus::Value::from(batch));
    regorus::Value::from(input)
}

fn rego_decisions(value: &regorus::Value) -> Vec<Decision> {
    let decisions: serde_json::Value = serde_json::to_value(value).expect("decisions as JSON");
    decisions
        .as_array()
        .expect("an array of decisions")
        .iter()
        .map(|d| {
            let reason = d["reason"].as_str().unwrap_or_default().to_string();
            match d["kind"].as_str() {
                Some("blocked") => Decision::Blocked(reason),
                Some("review-needed") => Decision::ReviewNeeded(reason),
                _ => Decision::NoReview,
            }
        })
        .collect()
}

/// One order of the Extism plugin's input: the fields the Rego input has, serialised as JSON.
#[derive(Serialize)]
struct ExtismOrder<'a> {
    id: i64,
    owner: &'a str,
    entity_type: &'a str,
    resource_type: &'a str,
    classification: &'a str,
    change: String,
    attributes: &'a BTreeMap<String, String>,
    entitlements_added: &'a BTreeSet<String>,
}

#[derive(Serialize)]
struct ExtismBatch<'a> {
    orders: Vec<ExtismOrder<'a>>,
}

/// A decision as the Extism plugin returns it (extism-rule/src/lib.rs).
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum ExtismDecision {
    NoReview,
    ReviewNeeded { reason: String },
    Blocked { reason: String },
}

/// One call of the Extism plugin on the batch: JSON in, JSON out, both counted.
fn extism_decisions(plugin: &mut extism::Plugin, orders: &[Order]) -> Vec<Decision> {
    let batch = ExtismBatch {
        orders: orders
            .iter()
            .map(|o| ExtismOrder {
                id: o.id,
                owner: &o.owner,
                entity_type: &o.entity_type,
                resource_type: &o.resource_type,
                classification: &o.classification,
                change: o.change.kind.to_string(),
                attributes: &o.change.attributes,
                entitlements_added: &o.change.granted,
            })
            .collect(),
    };
    let input = serde_json::to_vec(&batch).expect("the batch as JSON");
    let output = plugin.call::<&[u8], &[u8]>("review", &input).expect("call the Extism plugin");
    let decisions: Vec<ExtismDecision> = serde_json::from_slice(output).expect("decisions as JSON");
    decisions
        .into_iter()
        .map(|d| match d {
            ExtismDecision::NoReview => Decision::NoReview,
            ExtismDecision::ReviewNeeded { reason } => Decision::ReviewNeeded(reason),
            ExtismDecision::Blocked { reason } => Decision::Blocked(reason),
        })
        .collect()
}

pub fn run() {
    let orders = orders();
    let expected = native(&orders);
    header(&format!(
        "Review rule per order (batches of {}; nanoseconds per order; {} interleaved rounds)",
        batch(),
        runs()
    ));

    let mut config = PluginConfig::new("rule", PluginSource::Bundled("classification-review".into()));
    config.config = [("review", REVIEW.join(",")), ("block", BLOCK.join(","))]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ConfigValue::Plain(v)))
        .collect();
    let runtime = Runtime::new(None).expect("runtime");
    let plugin = runtime.load(&config).expect("load the component");
    let mut contenders = vec![
        contender("native Rust", Box::new(native)),
        contender("component (classification-review)", Box::new(|o: &[Order]| plugin.evaluate(o).expect("evaluate"))),
    ];
    if std::env::var_os("BENCH_COMPONENT_ONLY").is_some() {
        // For profiling the component alone.
        measure(&orders, &mut contenders, &expected);
        for c in &contenders {
            println!("{}", Samples::new(c.samples.clone()).row(c.label, "ns"));
        }
        return;
    }
    // Rego: the policy parsed once; each batch is one input evaluated once.
    let mut engine = regorus::Engine::new();
    engine.add_policy("review.rego".into(), include_str!("../policies/review.rego").into()).expect("the policy parses");
    contenders.push(contender(
        "Rego (regorus)",
        Box::new(move |o: &[Order]| {
            engine.set_input(rego_input(o));
            rego_decisions(&engine.eval_rule("data.review.decisions".into()).expect("evaluate"))
        }),
    ));
    // Extism: a core module (not a component) on Extism's own wasmtime 43, not the product's 48.
    // One plugin, instantiated once and reused across calls (Extism's usual way); its config
    // comes through the manifest, as an Extism plugin's does.
    let manifest = extism::Manifest::new([extism::Wasm::data(include_bytes!(env!("EXTISM_RULE_WASM")).as_slice())])
        .with_config([("review", REVIEW.join(",")), ("block", BLOCK.join(","))].into_iter());
    let mut extism_plugin = extism::Plugin::new(&manifest, [], false).expect("load the Extism plugin");
    contenders.push(contender("Extism plugin", Box::new(move |o: &[Order]| extism_decisions(&mut extism_plugin, o))));

    measure(&orders, &mut contenders, &expected);
    for c in &contenders {
        println!("{}", Samples::new(c.samples.clone()).row(c.label, "ns"));
    }
    let [native_ns, component, rego, extism] = &contenders[..] else { unreachable!("four contenders") };
    println!("\nratios per round (median, min, max):");
    let ratio = |label: &str, r: Samples, target: &str| {
        println!("{label}: {:.1}x ({:.1}–{:.1}; target {target})", r.median(), r.min(), r.max());
    };
    ratio("component / native", ratios(component, native_ns), "≤ 10x");
    ratio("regorus / component", ratios(rego, component), "> 1");
    ratio("Extism / component", ratios(extism, component), "> 1");
}
