//! A review rule built against `provision:plugin@0.1.0` as released (`wit/v0.1.0`, frozen), the
//! way a customer's plugin built before 0.2.0 is: no `describe` export, the 0.1.0 imports. It
//! decides like the bundled classification-review: classifications listed in `review` need a
//! review, those in `block` are refused, the rest are released; it logs each decision.

wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "review-rule" });

use exports::provision::plugin::evaluate::{Decision, Guest};
use provision::plugin::log::{self, Level};
use provision::plugin::{config, types::Order};

struct LegacyRule;

fn listed(key: &str, classification: &str) -> bool {
    config::get(key).unwrap_or_default().split(',').any(|c| c.trim() == classification)
}

impl Guest for LegacyRule {
    fn evaluate(orders: Vec<Order>) -> Vec<Decision> {
        orders
            .iter()
            .map(|order| {
                let decision = if listed("block", &order.classification) {
                    Decision::Blocked(format!("{} is classified `{}`", order.resource_type, order.classification))
                } else if listed("review", &order.classification) {
                    Decision::ReviewNeeded(format!("{} is classified `{}`", order.resource_type, order.classification))
                } else {
                    Decision::NoReview
                };
                log::write(Level::Debug, "decided", &[("order".to_string(), order.id.to_string())]);
                decision
            })
            .collect()
    }
}

export!(LegacyRule);
