//! The calls of each world: host types in and out, conversion to and from the WIT types, and
//! validation of everything a guest returns.
//!
//! **Architecture invariant**: the host never trusts a plugin. Every answer is checked here:
//! one result per item, sizes within bounds; a bad answer fails the call with
//! [`CallError::Invalid`], as a trap would. The one exception is a resource of a `read` page
//! over a data limit: it is left out of the page ([`Page::malformed`]), so it fails alone.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::Store;
use wasmtime::component::{Instance, TypedFunc};

use super::bindings::{describe, evaluate, fulfil, read, route, types};
use super::guest::{GuestState, truncate};
use super::versions::Export;
use super::{CallError, Plugin};
use crate::limits;
use crate::model::{ChangeKind, Order, ResourceContent};
use crate::permissions::Directory;

/// Longest message (error, reason, reference) kept from a guest, bytes.
const MAX_MESSAGE: usize = crate::limits::PLUGIN_MESSAGE;
/// Longest name, version or resource type in a plugin's description, bytes.
const MAX_DESCRIBED: usize = 1024;
/// Most messages one routed event may produce.
const MAX_MESSAGES: usize = 100;
/// Longest message body from a router, bytes.
const MAX_BODY: usize = 64 * 1024;

/// The typed function of an export in a fresh instance, with the current WIT types (see
/// `versions.rs` for why a component of an older version fits them).
fn typed<P, R>(
    store: &mut Store<GuestState>,
    instance: &Instance,
    (name, export): (&str, &Export),
) -> wasmtime::Result<TypedFunc<P, R>>
where
    P: wasmtime::component::ComponentNamedList + wasmtime::component::Lower,
    R: wasmtime::component::ComponentNamedList + wasmtime::component::Lift,
{
    instance
        .get_typed_func::<P, R>(store, export)
        .map_err(|e| wasmtime::format_err!("its export `{name}` does not have the expected type: {e:#}"))
}

/// What a plugin says about itself (`describe`, 0.2.0 and later).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Description {
    /// Its own name.
    pub name: String,
    /// Its own version.
    pub version: String,
    /// What it does, in a line.
    pub summary: String,
    /// The resource types it is made for; empty: any.
    pub resource_types: Vec<String>,
}

/// What a connector did with one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Written; carries the resource's id when the connector learned it.
    Executed {
        /// The id in the managed system.
        resource_id: Option<String>,
    },
    /// Handed to a person or desk.
    Transmitted {
        /// A reference for the operator.
        reference: String,
    },
    /// Failed.
    Failed {
        /// Whether a retry may succeed.
        transient: bool,
        /// What went wrong.
        message: String,
        /// The earliest retry the managed system asked for.
        retry_after: Option<Duration>,
    },
}

/// A resource as read from a managed system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// Its id in the managed system.
    pub id: String,
    /// The owning identity's key, when the connector can tell.
    pub owner: Option<String>,
    /// Attributes and entitlements.
    pub content: ResourceContent,
}

/// One page of a `read`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The resources.
    pub resources: Vec<Resource>,
    /// Resources of the page over a limit of `limits` (or with an empty id, name or
    /// entitlement): left out of `resources`, so that one bad resource fails alone.
    pub malformed: Vec<Malformed>,
    /// Where the next page starts; none on the last.
    pub next_cursor: Option<String>,
}

/// A resource a connector's `read` returned that the host refuses to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// Its id, when the id itself is usable (not empty, within its limit).
    pub id: Option<String>,
    /// Its owner's key, when given and usable.
    pub owner: Option<String>,
    /// What is wrong, with the limit (names and values in it cut).
    pub problem: String,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.id, &self.owner) {
            (Some(id), Some(owner)) => write!(f, "resource `{id}` (owner `{owner}`): {}", self.problem),
            (Some(id), None) => write!(f, "resource `{id}`: {}", self.problem),
            (None, Some(owner)) => write!(f, "a resource of owner `{owner}` without a usable id: {}", self.problem),
            (None, None) => write!(f, "a resource without a usable id: {}", self.problem),
        }
    }
}

/// A resource from `read` as the host stores it, or why not.
fn checked(r: read::ManagedResource) -> Result<Resource, Malformed> {
    let usable = |what, text: &str, limit| limits::check_id(what, text, limit);
    let id_problem = usable("the resource id", &r.id, limits::RESOURCE_ID).err();
    let owner = r.owner.filter(|o| !o.is_empty());
    let owner_problem = owner.as_deref().and_then(|o| usable("the owner", o, limits::IDENTITY_KEY).err());
    let data = limits::check_data(
        r.attributes.iter().map(|a| (a.name.as_str(), a.value.as_str())),
        r.entitlements.iter().map(String::as_str),
    );
    let problem = id_problem.clone().or(owner_problem.clone()).or(data.err().map(|e| e.message));
    match problem {
        None => Ok(Resource {
            id: r.id,
            owner,
            content: ResourceContent {
                attributes: r.attributes.into_iter().map(|a| (a.name, a.value)).collect(),
                entitlements: r.entitlements.into_iter().collect(),
            },
        }),
        Some(problem) => Err(Malformed {
            id: id_problem.is_none().then_some(r.id),
            owner: owner.filter(|_| owner_problem.is_none()),
            problem,
        }),
    }
}

/// A connector's own report that it could not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ReadError {
    /// Whether a retry may succeed.
    pub transient: bool,
    /// What went wrong.
    pub message: String,
}

/// A review rule's decision on one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Release to fulfilment.
    NoReview,
    /// Hold for a reviewer, with the reason.
    ReviewNeeded(String),
    /// Refuse outright, with the reason.
    Blocked(String),
}

/// What happened, for a notification router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Manual orders were handed to people.
    ManualOrdersTransmitted,
    /// Orders wait for a reviewer.
    OrdersAwaitingApproval,
    /// Orders wait for an operator.
    OrdersErrored,
}

/// An order a notification is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderSummary {
    /// The order's id.
    pub id: i64,
    /// The owner's key.
    pub owner: String,
    /// The resource type.
    pub resource_type: String,
    /// What it does.
    pub change: ChangeKind,
    /// The reason or error of its last state change.
    pub reason: String,
}

/// One event for one source entity type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The source entity type.
    pub entity_type: String,
    /// The orders concerned.
    pub orders: Vec<OrderSummary>,
}

/// A message a router asks the host to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Logins of the recipients.
    pub recipients: Vec<String>,
    /// Subject.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
}

fn change_kind(kind: ChangeKind) -> types::ChangeKind {
    match kind {
        ChangeKind::Added => types::ChangeKind::Added,
        ChangeKind::Modified => types::ChangeKind::Modified,
        ChangeKind::Deleted => types::ChangeKind::Deleted,
    }
}

/// The WIT `order` record as the host lowers it into a guest: borrowing the host's strings, so
/// a batch costs no string copies on the host side (the canonical ABI copies them into the
/// guest once). Same shape as `types::Order`, which the type check at load confirms.
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lower)]
#[component(record)]
struct WitOrder<'a> {
    id: u64,
    #[component(name = "idempotency-key")]
    idempotency_key: &'a str,
    change: types::ChangeKind,
    owner: &'a str,
    #[component(name = "entity-type")]
    entity_type: &'a str,
    #[component(name = "resource-type")]
    resource_type: &'a str,
    classification: &'a str,
    #[component(name = "resource-id")]
    resource_id: Option<&'a str>,
    attributes: Vec<WitAttribute<'a>>,
    #[component(name = "attributes-cleared")]
    attributes_cleared: Vec<&'a str>,
    #[component(name = "entitlements-added")]
    entitlements_added: Vec<&'a str>,
    #[component(name = "entitlements-removed")]
    entitlements_removed: Vec<&'a str>,
}

/// The WIT `attribute` record, borrowed.
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lower)]
#[component(record)]
struct WitAttribute<'a> {
    name: &'a str,
    value: &'a str,
}

fn wit_order(order: &Order) -> WitOrder<'_> {
    let change = &order.change;
    WitOrder {
        id: u64::try_from(order.id).unwrap_or_default(),
        idempotency_key: &order.idempotency_key,
        change: change_kind(change.kind),
        owner: &order.owner,
        entity_type: &order.entity_type,
        resource_type: &order.resource_type,
        classification: &order.classification,
        resource_id: order.resource_id.as_deref(),
        attributes: change.attributes.iter().map(|(name, value)| WitAttribute { name, value }).collect(),
        attributes_cleared: change.cleared.iter().map(String::as_str).collect(),
        entitlements_added: change.granted.iter().map(String::as_str).collect(),
        entitlements_removed: change.revoked.iter().map(String::as_str).collect(),
    }
}

/// Text from the guest, as the host keeps it: the secrets the call was given scrubbed, length
/// bounded.
fn said(secrets: &[String], text: String) -> String {
    let mut text = super::guest::scrub(&text, secrets);
    truncate(&mut text, MAX_MESSAGE);
    text
}

impl Plugin {
    fn invalid(&self, message: impl Into<String>) -> CallError {
        CallError::Invalid { plugin: self.name.clone(), message: message.into() }
    }

    fn wrong_world(&self, world: &str) -> CallError {
        CallError::WrongWorld { plugin: self.name.clone(), world: world.into() }
    }

    fn check_count(&self, what: &str, got: usize, sent: usize) -> Result<(), CallError> {
        if got != sent {
            return Err(
                self.invalid(format!("returned {got} {what} for {sent} inputs; exactly one per input is required"))
            );
        }
        Ok(())
    }

    /// At load: checks that every export has the type this host calls it with (so a component
    /// whose shapes differ fails to load rather than on its first call), and asks the plugin
    /// to describe itself.
    pub(super) fn describe(&self) -> Result<Option<Description>, CallError> {
        let exports = &self.exports;
        let (description, secrets) = self.call_with(super::SecretUse::Available, None, async |store, instance| {
            if let Some(export) = &exports.fulfil {
                typed::<(&[WitOrder<'_>],), (Vec<fulfil::Outcome>,)>(store, instance, ("fulfil", export))?;
            }
            if let Some(export) = &exports.read {
                typed::<(&str, Option<&str>), (Result<read::Page, fulfil::Failure>,)>(
                    store,
                    instance,
                    ("read", export),
                )?;
            }
            if let Some(export) = &exports.evaluate {
                typed::<(&[WitOrder<'_>],), (Vec<evaluate::Decision>,)>(store, instance, ("evaluate", export))?;
            }
            if let Some(export) = &exports.route {
                typed::<(&[route::Event],), (Vec<Result<Vec<route::Message>, String>>,)>(
                    store,
                    instance,
                    ("route", export),
                )?;
            }
            let Some(export) = &exports.describe else { return Ok(None) };
            let describe = typed::<(), (describe::Description,)>(store, instance, ("describe", export))?;
            Ok(Some(describe.call_async(&mut *store, ()).await?.0))
        })?;
        let Some(d) = description else { return Ok(None) };
        let short = |text: &str| !text.is_empty() && text.len() <= MAX_DESCRIBED;
        if !short(&d.name) || !short(&d.version) {
            return Err(self.invalid("a description whose name or version is empty or longer than 1024 bytes"));
        }
        if d.resource_types.len() > MAX_MESSAGES * 10 || d.resource_types.iter().any(|t| !short(t)) {
            return Err(self.invalid("a description listing over 1000 resource types, or an empty or oversize one"));
        }
        Ok(Some(Description {
            name: d.name,
            version: d.version,
            summary: said(&secrets, d.summary),
            resource_types: d.resource_types,
        }))
    }

    /// Calls a connector's `fulfil` on a batch: one outcome per order, in order.
    pub fn fulfil(&self, orders: &[Order]) -> Result<Vec<Outcome>, CallError> {
        let export = self.exports.fulfil.ok_or_else(|| self.wrong_world("connector"))?;
        let input: Vec<WitOrder<'_>> = orders.iter().map(wit_order).collect();
        let (output, secrets) = self.call(None, async |store, instance| {
            let fulfil = typed::<(&[WitOrder<'_>],), (Vec<fulfil::Outcome>,)>(store, instance, ("fulfil", &export))?;
            Ok(fulfil.call_async(&mut *store, (&input,)).await?.0)
        })?;
        self.check_count("outcomes", output.len(), orders.len())?;
        Ok(output
            .into_iter()
            .zip(orders)
            .map(|(outcome, order)| match outcome {
                fulfil::Outcome::Executed(id) => {
                    let resource_id = id.filter(|id| {
                        let ok = limits::check_id("the resource id", id, limits::RESOURCE_ID).is_ok();
                        if !ok {
                            tracing::warn!(plugin = %self.name, order = order.id, "ignoring an invalid resource id from the connector");
                        }
                        ok
                    });
                    Outcome::Executed { resource_id }
                }
                fulfil::Outcome::Transmitted(reference) => Outcome::Transmitted { reference: said(&secrets, reference) },
                fulfil::Outcome::Failed(failure) => Outcome::Failed {
                    transient: failure.kind == fulfil::ErrorKind::Transient,
                    message: said(&secrets, failure.message),
                    retry_after: failure.retry_after_seconds.map(|s| Duration::from_secs(u64::from(s))),
                },
            })
            .collect())
    }

    /// Calls a connector's `read` for one page. The outer error is a failed call; the inner
    /// one is the connector's own report that it could not read.
    pub fn read(&self, resource_type: &str, cursor: Option<&str>) -> Result<Result<Page, ReadError>, CallError> {
        let export = self.exports.read.ok_or_else(|| self.wrong_world("synchronising connector"))?;
        let (output, secrets) = self.call(None, async |store, instance| {
            let read = typed::<(&str, Option<&str>), (Result<read::Page, fulfil::Failure>,)>(
                store,
                instance,
                ("read", &export),
            )?;
            Ok(read.call_async(&mut *store, (resource_type, cursor)).await?.0)
        })?;
        let page = match output {
            Ok(page) => page,
            Err(failure) => {
                return Ok(Err(ReadError {
                    transient: failure.kind == fulfil::ErrorKind::Transient,
                    message: said(&secrets, failure.message),
                }));
            }
        };
        if page.resources.len() > limits::READ_PAGE {
            return Err(self.invalid(format!(
                "a page of {} resources; at most {} are accepted",
                page.resources.len(),
                limits::READ_PAGE
            )));
        }
        if let Some(cursor) = &page.next_cursor {
            limits::check_id("the next-cursor", cursor, limits::RESOURCE_ID).map_err(|e| self.invalid(e))?;
        }
        // A resource over a limit is left out and reported, not the page refused: one bad
        // resource must not stop a type's synchronisation (and so every verification of it).
        let mut resources = Vec::with_capacity(page.resources.len());
        let mut malformed = Vec::new();
        for r in page.resources {
            match checked(r) {
                Ok(resource) => resources.push(resource),
                Err(bad) => malformed.push(Malformed { problem: said(&secrets, bad.problem), ..bad }),
            }
        }
        Ok(Ok(Page { resources, malformed, next_cursor: page.next_cursor }))
    }

    /// Calls a review rule's `evaluate` on a batch: one decision per order, in order.
    pub fn evaluate(&self, orders: &[Order]) -> Result<Vec<Decision>, CallError> {
        let export = self.exports.evaluate.ok_or_else(|| self.wrong_world("review rule"))?;
        let input: Vec<WitOrder<'_>> = orders.iter().map(wit_order).collect();
        let (output, secrets) = self.call(None, async |store, instance| {
            let evaluate =
                typed::<(&[WitOrder<'_>],), (Vec<evaluate::Decision>,)>(store, instance, ("evaluate", &export))?;
            Ok(evaluate.call_async(&mut *store, (&input,)).await?.0)
        })?;
        self.check_count("decisions", output.len(), orders.len())?;
        Ok(output
            .into_iter()
            .map(|decision| match decision {
                evaluate::Decision::NoReview => Decision::NoReview,
                evaluate::Decision::ReviewNeeded(reason) => Decision::ReviewNeeded(said(&secrets, reason)),
                evaluate::Decision::Blocked(reason) => Decision::Blocked(said(&secrets, reason)),
            })
            .collect())
    }

    /// Calls a router's `route` on a batch of events, with a directory snapshot for its
    /// `directory` import: one result per event, in order.
    pub fn route(
        &self,
        events: &[Event],
        directory: Arc<Directory>,
    ) -> Result<Vec<Result<Vec<Message>, String>>, CallError> {
        let export = self.exports.route.ok_or_else(|| self.wrong_world("notification router"))?;
        let input: Vec<route::Event> = events
            .iter()
            .map(|event| route::Event {
                kind: match event.kind {
                    EventKind::ManualOrdersTransmitted => route::EventKind::ManualOrdersTransmitted,
                    EventKind::OrdersAwaitingApproval => route::EventKind::OrdersAwaitingApproval,
                    EventKind::OrdersErrored => route::EventKind::OrdersErrored,
                },
                entity_type: event.entity_type.clone(),
                orders: event
                    .orders
                    .iter()
                    .map(|o| route::OrderSummary {
                        id: u64::try_from(o.id).unwrap_or_default(),
                        owner: o.owner.clone(),
                        resource_type: o.resource_type.clone(),
                        change: change_kind(o.change),
                        reason: o.reason.clone(),
                    })
                    .collect(),
            })
            .collect();
        let known = directory.clone();
        let (output, secrets) = self.call(Some(directory), async |store, instance| {
            let route = typed::<(&[route::Event],), (Vec<Result<Vec<route::Message>, String>>,)>(
                store,
                instance,
                ("route", &export),
            )?;
            Ok(route.call_async(&mut *store, (&input,)).await?.0)
        })?;
        self.check_count("results", output.len(), events.len())?;
        output
            .into_iter()
            .map(|result| match result {
                Err(error) => Ok(Err(said(&secrets, error))),
                Ok(messages) => {
                    if messages.len() > MAX_MESSAGES {
                        return Err(
                            self.invalid(format!("{} messages for one event; at most {MAX_MESSAGES}", messages.len()))
                        );
                    }
                    messages
                        .into_iter()
                        .map(|m| {
                            if let Some(unknown) =
                                m.recipients.iter().find(|r| !known.users.iter().any(|u| &u.login == *r))
                            {
                                return Err(self.invalid(format!("a message to `{unknown}`, who is not a known user")));
                            }
                            if m.body.len() > MAX_BODY {
                                return Err(self
                                    .invalid(format!("a message body of {} bytes; at most {MAX_BODY}", m.body.len())));
                            }
                            Ok(Message { recipients: m.recipients, subject: said(&secrets, m.subject), body: m.body })
                        })
                        .collect::<Result<Vec<_>, _>>()
                        .map(Ok)
                }
            })
            .collect()
    }
}
