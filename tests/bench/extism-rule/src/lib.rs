//! The classification review rule as an Extism plugin, for the benchmark (tests/bench/src/rule.rs):
//! the same decisions and reasons as plugins/classification-review.
//!
//! Config (the manifest's `config`): `review` and `block`, comma-separated classifications whose
//! orders need a review (default `sensitive`) or are refused outright (default none).

use extism_pdk::{FnResult, Json, config, plugin_fn};
use serde::{Deserialize, Serialize};

/// The batch, as the host sends it.
#[derive(Deserialize)]
pub struct Batch {
    orders: Vec<Order>,
}

/// The fields of an order the rule reads; serde still parses, and skips, the others the host
/// sends, which is part of the cost measured.
#[derive(Deserialize)]
pub struct Order {
    resource_type: String,
    classification: String,
}

/// One decision per order, in the batch's order.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Decision {
    NoReview,
    ReviewNeeded { reason: String },
    Blocked { reason: String },
}

fn list(key: &str, default: &str) -> FnResult<Vec<String>> {
    let value = config::get(key)?.unwrap_or_else(|| default.to_string());
    Ok(value.split(',').map(str::trim).filter(|item| !item.is_empty()).map(String::from).collect())
}

#[plugin_fn]
pub fn review(Json(batch): Json<Batch>) -> FnResult<Json<Vec<Decision>>> {
    // Read once per batch, like the component does.
    let (review, block) = (list("review", "sensitive")?, list("block", "")?);
    let decisions = batch
        .orders
        .iter()
        .map(|order| {
            let class = &order.classification;
            if block.contains(class) {
                Decision::Blocked {
                    reason: format!(
                        "resource type {} is classified `{class}`, which this policy blocks",
                        order.resource_type
                    ),
                }
            } else if review.contains(class) {
                Decision::ReviewNeeded {
                    reason: format!(
                        "resource type {} is classified `{class}`, which needs a review",
                        order.resource_type
                    ),
                }
            } else {
                Decision::NoReview
            }
        })
        .collect();
    Ok(Json(decisions))
}
