//! A review rule template: orders that grant an entitlement listed in `entitlements` need a
//! review, orders of a resource type listed in `blocked` are refused, the rest are released.
//!
//! Config (`[plugins.NAME.config]` in the host's config): `entitlements` and `blocked`,
//! comma-separated.

wit_bindgen::generate!({ path: "wit", world: "review-rule" });

use exports::provision::plugin::describe::{self, Description};
use exports::provision::plugin::evaluate::{self, Decision};
use provision::plugin::types::Order;
use provision::plugin::{config, log};

struct Rule;

/// A comma-separated config value as a list.
fn list(key: &str) -> Vec<String> {
    let value = config::get(key).unwrap_or_default();
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(String::from)
        .collect()
}

impl evaluate::Guest for Rule {
    /// One decision per order, in order: the host checks the count.
    fn evaluate(orders: Vec<Order>) -> Vec<Decision> {
        let entitlements = list("entitlements");
        let blocked = list("blocked");
        orders
            .iter()
            .map(|order| {
                if blocked.contains(&order.resource_type) {
                    return Decision::Blocked(format!(
                        "{} is never provisioned automatically",
                        order.resource_type
                    ));
                }
                match order
                    .entitlements_added
                    .iter()
                    .find(|e| entitlements.contains(e))
                {
                    Some(entitlement) => {
                        log::write(
                            log::Level::Info,
                            "review needed",
                            &[("order".into(), order.id.to_string())],
                        );
                        Decision::ReviewNeeded(format!(
                            "grants {entitlement}, which needs a review"
                        ))
                    }
                    None => Decision::NoReview,
                }
            })
            .collect()
    }
}

impl describe::Guest for Rule {
    fn describe() -> Description {
        Description {
            name: env!("CARGO_PKG_NAME").into(),
            version: env!("CARGO_PKG_VERSION").into(),
            summary: "Reviews orders granting listed entitlements; blocks listed resource types."
                .into(),
            // Empty: any resource type the config binds it to.
            resource_types: Vec::new(),
        }
    }
}

export!(Rule);
