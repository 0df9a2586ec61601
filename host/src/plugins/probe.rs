//! `provision plugin test`: runs a component once on a fixture, in the same sandbox the host
//! uses, and reports each result with what the call cost and what the guest logged.
//!
//! A fixture is JSON (see `examples/fixtures/`) holding exactly one of:
//! - `orders`: a batch for a review rule's `evaluate` or a connector's `fulfil`;
//! - `read`: `{ "resource_type": ..., "cursor": ... }` for a synchronising connector's `read`;
//! - `events` (and `directory`, the users and permissions the router may query): a batch for a
//!   notification router's `route`;
//!
//! and optionally `expect`: the kind of each result, in order (`no-review`, `review-needed`,
//! `blocked`; `executed`, `transmitted`, `failed-transient`, `failed-permanent`; `messages`,
//! `error`), so a plugin's own CI can assert its behaviour.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{CallReport, Decision, Event, EventKind, Message, OrderSummary, Outcome, Plugin, World};
use crate::model::{Change, ChangeKind, Order, ProvisioningState};
use crate::permissions::{Directory, DirectoryUser};

/// A fixture file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// What the fixture is about, for people.
    #[serde(default)]
    pub description: Option<String>,
    /// A batch of orders (review rule or connector).
    pub orders: Option<Vec<FixtureOrder>>,
    /// One `read` call (synchronising connector).
    pub read: Option<FixtureRead>,
    /// A batch of events (notification router).
    pub events: Option<Vec<FixtureEvent>>,
    /// The router's directory: users and the permission paths they hold.
    #[serde(default)]
    pub directory: Vec<FixtureUser>,
    /// The kind of each result, in order.
    pub expect: Option<Vec<String>>,
}

/// An order in a fixture; everything but `id`, `owner`, `resource_type` has a default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureOrder {
    id: i64,
    owner: String,
    resource_type: String,
    #[serde(default = "default_entity_type")]
    entity_type: String,
    #[serde(default = "default_classification")]
    classification: String,
    #[serde(default = "default_change")]
    change: ChangeKind,
    #[serde(default)]
    resource_id: Option<String>,
    #[serde(default)]
    idempotency_key: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    #[serde(default)]
    attributes_cleared: Vec<String>,
    #[serde(default)]
    entitlements_added: Vec<String>,
    #[serde(default)]
    entitlements_removed: Vec<String>,
}

fn default_entity_type() -> String {
    "Directory_User".into()
}

fn default_classification() -> String {
    "basic".into()
}

fn default_change() -> ChangeKind {
    ChangeKind::Added
}

/// A `read` call in a fixture.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureRead {
    resource_type: String,
    #[serde(default)]
    cursor: Option<String>,
}

/// An event in a fixture.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureEvent {
    kind: FixtureEventKind,
    #[serde(default = "default_entity_type")]
    entity_type: String,
    orders: Vec<FixtureSummary>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum FixtureEventKind {
    ManualOrdersTransmitted,
    OrdersAwaitingApproval,
    OrdersErrored,
}

/// An order an event is about.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureSummary {
    id: i64,
    owner: String,
    resource_type: String,
    #[serde(default = "default_change")]
    change: ChangeKind,
    #[serde(default)]
    reason: String,
}

/// A user in a fixture's directory.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureUser {
    login: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    permissions: Vec<String>,
}

impl Fixture {
    /// Parses a fixture, naming what is wrong with it.
    pub fn parse(text: &str) -> Result<Fixture, String> {
        let fixture: Fixture = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let given = [fixture.orders.is_some(), fixture.read.is_some(), fixture.events.is_some()];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err("a fixture holds exactly one of `orders`, `read` or `events`".into());
        }
        Ok(fixture)
    }
}

fn order(o: &FixtureOrder) -> Order {
    Order {
        id: o.id,
        idempotency_key: o.idempotency_key.clone().unwrap_or_else(|| format!("fixture-{}", o.id)),
        owner: o.owner.clone(),
        entity_type: o.entity_type.clone(),
        resource_type: o.resource_type.clone(),
        classification: o.classification.clone(),
        resource_id: o.resource_id.clone(),
        change: Change {
            kind: o.change,
            attributes: o.attributes.clone(),
            cleared: o.attributes_cleared.iter().cloned().collect(),
            granted: o.entitlements_added.iter().cloned().collect(),
            revoked: o.entitlements_removed.iter().cloned().collect(),
        },
        state: ProvisioningState::Pending,
        closed: None,
        message: None,
        attempts: 1,
        created_at: 0,
        updated_at: 0,
        next_attempt_at: None,
        held_run: None,
    }
}

/// What one run of a fixture gave.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    /// The export called: `evaluate`, `fulfil`, `read` or `route`.
    pub call: &'static str,
    /// One result per input (one for `read`), as JSON; empty when the call failed.
    pub results: Vec<Value>,
    /// Why the call failed (a trap, a limit, a bad answer), if it did.
    pub error: Option<String>,
    /// Where the results differ from the fixture's `expect`.
    pub mismatches: Vec<String>,
    /// What the call cost and what the guest logged.
    pub cost: CallReport,
}

impl ProbeReport {
    /// The call succeeded and matched every expectation.
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.mismatches.is_empty()
    }
}

fn decision(order: i64, d: Decision) -> Value {
    match d {
        Decision::NoReview => json!({ "order": order, "kind": "no-review" }),
        Decision::ReviewNeeded(reason) => json!({ "order": order, "kind": "review-needed", "reason": reason }),
        Decision::Blocked(reason) => json!({ "order": order, "kind": "blocked", "reason": reason }),
    }
}

fn outcome(order: i64, o: Outcome) -> Value {
    match o {
        Outcome::Executed { resource_id } => json!({ "order": order, "kind": "executed", "resource_id": resource_id }),
        Outcome::Transmitted { reference } => json!({ "order": order, "kind": "transmitted", "reference": reference }),
        Outcome::Failed { transient, message, retry_after } => json!({
            "order": order,
            "kind": if transient { "failed-transient" } else { "failed-permanent" },
            "message": message,
            "retry_after_seconds": retry_after.map(|d| d.as_secs()),
        }),
    }
}

fn routed(event: usize, result: Result<Vec<Message>, String>) -> Value {
    match result {
        Ok(messages) => json!({
            "event": event,
            "kind": "messages",
            "messages": messages.into_iter().map(|m| json!({
                "recipients": m.recipients, "subject": m.subject, "body": m.body,
            })).collect::<Vec<_>>(),
        }),
        Err(error) => json!({ "event": event, "kind": "error", "error": error }),
    }
}

/// Runs a fixture once on a probed plugin (see [`Plugin::probed`]).
pub fn run(plugin: &Plugin, fixture: &Fixture) -> Result<ProbeReport, String> {
    let (call, results) = if let Some(orders) = &fixture.orders {
        let orders: Vec<Order> = orders.iter().map(order).collect();
        if plugin.implements(World::ReviewRule) {
            (
                "evaluate",
                plugin.evaluate(&orders).map(|d| d.into_iter().zip(&orders).map(|(d, o)| decision(o.id, d)).collect()),
            )
        } else if plugin.implements(World::Connector) {
            (
                "fulfil",
                plugin.fulfil(&orders).map(|d| d.into_iter().zip(&orders).map(|(d, o)| outcome(o.id, d)).collect()),
            )
        } else {
            return Err("the fixture holds `orders`, for a review rule or a connector; the component is neither".into());
        }
    } else if let Some(read) = &fixture.read {
        if !plugin.can_read() {
            return Err("the fixture holds `read`, for a synchronising connector; the component cannot read".into());
        }
        let result = plugin.read(&read.resource_type, read.cursor.as_deref()).map(|page| {
            vec![match page {
                Ok(page) => json!({
                    "kind": "page",
                    "resources": page.resources.into_iter().map(|r| json!({
                        "id": r.id, "owner": r.owner,
                        "attributes": r.content.attributes, "entitlements": r.content.entitlements,
                    })).collect::<Vec<_>>(),
                    "next_cursor": page.next_cursor,
                }),
                Err(e) => json!({ "kind": if e.transient { "failed-transient" } else { "failed-permanent" }, "message": e.message }),
            }]
        });
        ("read", result)
    } else {
        let events = fixture.events.as_deref().unwrap_or_default();
        if !plugin.implements(World::NotificationRouter) {
            return Err("the fixture holds `events`, for a notification router; the component is not one".into());
        }
        let events: Vec<Event> = events
            .iter()
            .map(|e| Event {
                kind: match e.kind {
                    FixtureEventKind::ManualOrdersTransmitted => EventKind::ManualOrdersTransmitted,
                    FixtureEventKind::OrdersAwaitingApproval => EventKind::OrdersAwaitingApproval,
                    FixtureEventKind::OrdersErrored => EventKind::OrdersErrored,
                },
                entity_type: e.entity_type.clone(),
                orders: e
                    .orders
                    .iter()
                    .map(|o| OrderSummary {
                        id: o.id,
                        owner: o.owner.clone(),
                        resource_type: o.resource_type.clone(),
                        change: o.change,
                        reason: o.reason.clone(),
                    })
                    .collect(),
            })
            .collect();
        let mut users: Vec<DirectoryUser> = fixture
            .directory
            .iter()
            .map(|u| DirectoryUser {
                login: u.login.clone(),
                display_name: u.display_name.clone().unwrap_or_else(|| u.login.clone()),
                email: u.email.clone(),
                permissions: u.permissions.clone(),
            })
            .collect();
        users.sort_by(|a, b| a.login.cmp(&b.login));
        let result = plugin
            .route(&events, Arc::new(Directory { users }))
            .map(|results| results.into_iter().enumerate().map(|(i, r)| routed(i + 1, r)).collect());
        ("route", result)
    };
    let cost = plugin.last_call().unwrap_or_default();
    let (results, error) = match results {
        Ok(results) => (results, None),
        Err(error) => (Vec::new(), Some(error.to_string())),
    };
    let mut mismatches = Vec::new();
    if let (Some(expect), None) = (&fixture.expect, &error) {
        if expect.len() != results.len() {
            mismatches.push(format!("expected {} results, got {}", expect.len(), results.len()));
        }
        for (i, (want, got)) in expect.iter().zip(&results).enumerate() {
            let kind = got["kind"].as_str().unwrap_or_default();
            if kind != want {
                mismatches.push(format!("result {}: expected `{want}`, got `{kind}`", i + 1));
            }
        }
    }
    Ok(ProbeReport { call, results, error, mismatches, cost })
}
