//! `permission-router`: the first-party notification router.
//!
//! Routes each event to the users holding *exactly* the permission that matches it for the
//! event's source entity type. A parent path allows the action but does not receive the
//! notification, as the product documentation requires.
//!
//! | event                       | recipients hold exactly                                          |
//! |-----------------------------|------------------------------------------------------------------|
//! | manual orders transmitted   | `/Custom/ProvisioningPolicy/PerformManualProvisioning/{EntityType}` |
//! | orders awaiting approval    | `/Custom/ProvisioningPolicy/ReviewProvisioning/{EntityType}`     |
//! | orders errored              | `/Custom/ProvisioningPolicy/Operate` (the operators, who retry)  |
//! |                             | or the manual path above (who handle manual orders' errors)      |
//!
//! Config: `errored-permission` (comma-separated paths in which `{entity-type}` is replaced;
//! holders of any of them are told), `max-listed` (how many orders a message lists before
//! "and N more"; default 20).

wit_bindgen::generate!({ path: "../../wit", world: "notification-router" });

use exports::provision::plugin::route::{Event, EventKind, Guest, Message, OrderSummary};
use provision::plugin::config;
use provision::plugin::directory::{self, PathMatch};
use provision::plugin::types::ChangeKind;

const MANUAL: &str = "/Custom/ProvisioningPolicy/PerformManualProvisioning/{entity-type}";
const REVIEW: &str = "/Custom/ProvisioningPolicy/ReviewProvisioning/{entity-type}";
const ERRORED: &str =
    "/Custom/ProvisioningPolicy/Operate, /Custom/ProvisioningPolicy/PerformManualProvisioning/{entity-type}";

struct PermissionRouter;

fn change(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Added => "create",
        ChangeKind::Modified => "change",
        ChangeKind::Deleted => "delete",
    }
}

fn route_one(event: &Event, max_listed: usize) -> Result<Vec<Message>, String> {
    let (templates, what) = match event.kind {
        EventKind::ManualOrdersTransmitted => (MANUAL.to_string(), "to provision manually"),
        EventKind::OrdersAwaitingApproval => (REVIEW.to_string(), "awaiting your review"),
        EventKind::OrdersErrored => {
            (config::get("errored-permission").unwrap_or_else(|| ERRORED.to_string()), "in error")
        }
    };
    if event.entity_type.is_empty() || event.entity_type.contains('/') {
        return Err(format!("event has an invalid entity type `{}`", event.entity_type));
    }
    let mut recipients: Vec<String> = Vec::new();
    for template in templates.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let path = template.replace("{entity-type}", &event.entity_type);
        for user in directory::users_with_permission(&path, PathMatch::Exact) {
            if !recipients.contains(&user.login) {
                recipients.push(user.login);
            }
        }
    }
    if recipients.is_empty() || event.orders.is_empty() {
        return Ok(Vec::new());
    }
    let count = event.orders.len();
    let plural = if count == 1 { "order" } else { "orders" };
    let subject = format!("{count} {} {plural} {what}", event.entity_type);
    let mut body = format!("{count} {plural} for entity type {} {what}:\n\n", event.entity_type);
    for order in event.orders.iter().take(max_listed) {
        body.push_str(&line(order));
    }
    if count > max_listed {
        body.push_str(&format!("... and {} more\n", count - max_listed));
    }
    Ok(vec![Message { recipients, subject, body }])
}

fn line(order: &OrderSummary) -> String {
    let mut line =
        format!("- order {}: {} {} for {}", order.id, change(order.change), order.resource_type, order.owner);
    if !order.reason.is_empty() {
        line.push_str(&format!(" ({})", order.reason));
    }
    line.push('\n');
    line
}

impl Guest for PermissionRouter {
    fn route(events: Vec<Event>) -> Vec<Result<Vec<Message>, String>> {
        let max_listed = match config::get("max-listed").map(|v| v.parse::<usize>()) {
            None => 20,
            Some(Ok(n)) => n,
            Some(Err(_)) => {
                let error = "config key `max-listed` must be a whole number".to_string();
                return events.iter().map(|_| Err(error.clone())).collect();
            }
        };
        events.iter().map(|event| route_one(event, max_listed)).collect()
    }
}

impl exports::provision::plugin::describe::Guest for PermissionRouter {
    fn describe() -> exports::provision::plugin::describe::Description {
        exports::provision::plugin::describe::Description {
            name: env!("CARGO_PKG_NAME").to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            summary: "Tells the holders of the exact permission path about orders that need them.".to_string(),
            resource_types: Vec::new(),
        }
    }
}

export!(PermissionRouter);
