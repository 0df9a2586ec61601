//! `classification-review`: the first-party review rule.
//!
//! Decides per order from the resource type's classification alone, which is how most
//! deployments start: sensitive entitlements are reviewed, basic ones are not.
//!
//! Config (`[plugins.NAME.config]` in the host's config):
//! - `review`: comma-separated classifications whose orders need a review (default `sensitive`);
//! - `block`: comma-separated classifications whose orders are refused outright (default none);
//! - `changes`: comma-separated change kinds the rule applies to (default
//!   `added,modified,deleted`); orders of other kinds are released without review, e.g.
//!   `changes = "added,modified"` lets revocations through at once.

wit_bindgen::generate!({ path: "../../wit", world: "review-rule" });

use exports::provision::plugin::evaluate::{Decision, Guest};
use provision::plugin::config;
use provision::plugin::types::{ChangeKind, Order};

struct ClassificationReview;

/// The parsed config, read once per batch (a fresh instance serves each batch).
struct Rule {
    review: Vec<String>,
    block: Vec<String>,
    changes: Vec<ChangeKind>,
}

fn list(key: &str, default: &str) -> Vec<String> {
    config::get(key)
        .unwrap_or_else(|| default.to_string())
        .split(',')
        .map(|item| item.trim().to_string())
        .filter(|item| !item.is_empty())
        .collect()
}

impl Rule {
    fn from_config() -> Result<Rule, String> {
        let changes = list("changes", "added,modified,deleted")
            .iter()
            .map(|kind| match kind.as_str() {
                "added" => Ok(ChangeKind::Added),
                "modified" => Ok(ChangeKind::Modified),
                "deleted" => Ok(ChangeKind::Deleted),
                other => Err(format!(
                    "config key `changes`: unknown change kind `{other}` (expected added, modified or deleted)"
                )),
            })
            .collect::<Result<_, _>>()?;
        Ok(Rule { review: list("review", "sensitive"), block: list("block", ""), changes })
    }

    fn decide(&self, order: &Order) -> Decision {
        if !self.changes.contains(&order.change) {
            return Decision::NoReview;
        }
        let class = &order.classification;
        if self.block.iter().any(|c| c == class) {
            Decision::Blocked(format!(
                "resource type {} is classified `{class}`, which this policy blocks",
                order.resource_type
            ))
        } else if self.review.iter().any(|c| c == class) {
            Decision::ReviewNeeded(format!(
                "resource type {} is classified `{class}`, which needs a review",
                order.resource_type
            ))
        } else {
            Decision::NoReview
        }
    }
}

impl Guest for ClassificationReview {
    fn evaluate(orders: Vec<Order>) -> Vec<Decision> {
        // A config error is the operator's to fix: trap with the reason so every order of the
        // batch goes to Error with it, rather than guess a decision.
        let rule = Rule::from_config().unwrap_or_else(|message| panic!("{message}"));
        orders.iter().map(|order| rule.decide(order)).collect()
    }
}

impl exports::provision::plugin::describe::Guest for ClassificationReview {
    fn describe() -> exports::provision::plugin::describe::Description {
        exports::provision::plugin::describe::Description {
            name: env!("CARGO_PKG_NAME").to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            summary: "Holds orders of resource types whose classification needs a review; blocks forbidden ones."
                .to_string(),
            resource_types: Vec::new(),
        }
    }
}

export!(ClassificationReview);
