//! A review rule that misbehaves as its `mode` config says: `panic`, `loop`, `alloc` (grow
//! memory without bound), `sleep` (wait forever), `garbage` (no decisions at all), `poison`
//! (misbehave as `poison-mode` says, `panic` by default, on any batch holding an order of an
//! owner listed in `poison`, release the others), or `review` (behave: every order needs a
//! review).

wit_bindgen::generate!({ path: "../../../wit", world: "review-rule" });

use exports::provision::plugin::evaluate::{Decision, Guest};
use provision::plugin::config;
use provision::plugin::types::Order;

struct FaultyRule;

impl Guest for FaultyRule {
    fn evaluate(orders: Vec<Order>) -> Vec<Decision> {
        match config::get("mode").as_deref() {
            Some("panic") => panic!("rule exploded on order {}", orders.first().map_or(0, |o| o.id)),
            Some("loop") => misbehave::spin(),
            Some("alloc") => misbehave::hoard(),
            Some("sleep") => misbehave::sleep(),
            Some("garbage") => Vec::new(),
            Some("poison") => {
                let poison = config::get("poison").unwrap_or_default();
                if let Some(bad) = orders.iter().find(|o| poison.split(',').any(|p| p == o.owner)) {
                    let mode = config::get("poison-mode");
                    return misbehave::poisoned(mode.as_deref(), || {
                        format!("cannot decide on the order of {}", bad.owner)
                    });
                }
                orders.iter().map(|_| Decision::NoReview).collect()
            }
            _ => orders.iter().map(|o| Decision::ReviewNeeded(format!("test rule reviews {}", o.owner))).collect(),
        }
    }
}

impl exports::provision::plugin::describe::Guest for FaultyRule {
    fn describe() -> exports::provision::plugin::describe::Description {
        exports::provision::plugin::describe::Description {
            name: env!("CARGO_PKG_NAME").to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            summary: "Test guest: a review rule that misbehaves on purpose.".to_string(),
            resource_types: Vec::new(),
        }
    }
}

export!(FaultyRule);
