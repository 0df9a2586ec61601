//! A notification router template: every event goes to the users holding one permission path
//! exactly (config `path`, default the host's own review path of the event's entity type), one
//! message per event.

wit_bindgen::generate!({ path: "wit", world: "notification-router" });

use exports::provision::plugin::describe::{self, Description};
use exports::provision::plugin::route::{self, Event, EventKind, Message};
use provision::plugin::config;
use provision::plugin::directory::{self, PathMatch};

struct Router;

impl route::Guest for Router {
    /// One result per event, in order: the messages to send, or an error for that event.
    fn route(events: Vec<Event>) -> Vec<Result<Vec<Message>, String>> {
        events
            .iter()
            .map(|event| {
                let path = config::get("path").unwrap_or_else(|| {
                    format!(
                        "/Custom/ProvisioningPolicy/ReviewProvisioning/{}",
                        event.entity_type
                    )
                });
                let recipients: Vec<String> =
                    directory::users_with_permission(&path, PathMatch::Exact)
                        .into_iter()
                        .map(|u| u.login)
                        .collect();
                if recipients.is_empty() {
                    return Ok(Vec::new());
                }
                let what = match event.kind {
                    EventKind::ManualOrdersTransmitted => "to provision by hand",
                    EventKind::OrdersAwaitingApproval => "awaiting review",
                    EventKind::OrdersErrored => "in error",
                };
                let body: String = event
                    .orders
                    .iter()
                    .map(|o| {
                        format!(
                            "- order {}: {} for {} ({})\n",
                            o.id, o.resource_type, o.owner, o.reason
                        )
                    })
                    .collect();
                let subject = format!(
                    "{} {} order(s) {what}",
                    event.orders.len(),
                    event.entity_type
                );
                Ok(vec![Message {
                    recipients,
                    subject,
                    body,
                }])
            })
            .collect()
    }
}

impl describe::Guest for Router {
    fn describe() -> Description {
        Description {
            name: env!("CARGO_PKG_NAME").into(),
            version: env!("CARGO_PKG_VERSION").into(),
            summary: "Sends every event to the holders of one permission path.".into(),
            resource_types: Vec::new(),
        }
    }
}

export!(Router);
