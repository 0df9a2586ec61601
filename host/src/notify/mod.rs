//! Notifications: route the queued intents through each entity type's notification router
//! into the outbox, then deliver the outbox by e-mail and webhooks, retrying with backoff.
//!
//! **Architecture invariant**: a notification is never lost. The intent is queued in the
//! transaction of the state change that causes it (see `store::orders`); routing writes the
//! routed notifications and marks their intents in one transaction; a delivery is marked sent
//! only after the channel accepted it, and a failed one stays pending (then `failed`, which an
//! operator can retry). A crash between "accepted" and "marked" can send one twice: receivers
//! de-duplicate on the delivery id (webhook header, e-mail Message-ID).

mod email;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;

use backon::{BackoffBuilder, ExponentialBuilder};
use serde::Serialize;

use crate::config::NotificationsConfig;
use crate::host::Host;
use crate::model::NotificationKind;
use crate::plugins::{Event, EventKind, OrderSummary};
use crate::store::{NewNotification, Queued, Recipient, Store, StoreError};

/// Intents routed per pass.
const ROUTE_BATCH: usize = 10_000;
/// Deliveries attempted per pass.
const DELIVER_BATCH: usize = 1_000;

/// What a routing and delivery pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct NotifyReport {
    /// Queued intents routed (including those of entity types with notifications off).
    pub routed: u64,
    /// Notifications written to the outbox.
    pub notifications: u64,
    /// Deliveries accepted by their channel.
    pub delivered: u64,
    /// Delivery attempts that failed (and will be retried).
    pub retrying: u64,
    /// Deliveries given up after their last attempt.
    pub gave_up: u64,
    /// What went wrong, for the operator.
    pub problems: Vec<String>,
}

fn event_kind(kind: NotificationKind) -> EventKind {
    match kind {
        NotificationKind::ManualOrdersTransmitted => EventKind::ManualOrdersTransmitted,
        NotificationKind::OrdersAwaitingApproval => EventKind::OrdersAwaitingApproval,
        NotificationKind::OrdersErrored => EventKind::OrdersErrored,
    }
}

/// Routes queued intents: one event per entity type and kind through the entity type's
/// router; the messages go to the outbox with a pending delivery per configured channel.
pub fn route(host: &mut Host, report: &mut NotifyReport) -> Result<(), StoreError> {
    let queued = host.store.unrouted_notifications(ROUTE_BATCH)?;
    let mut by_entity_type: BTreeMap<String, BTreeMap<NotificationKind, Vec<Queued>>> = BTreeMap::new();
    for q in queued {
        by_entity_type.entry(q.entity_type.clone()).or_default().entry(q.kind).or_default().push(q);
    }
    if by_entity_type.is_empty() {
        return Ok(());
    }
    let directory = Arc::new(host.store.directory()?);
    let people = host.store.users()?;
    // Nobody reviews their own orders, so nobody is asked to: a reviewer who owns every order
    // of an approval event is left out of it.
    let only_own = |login: &str, queued: &[Queued]| {
        people
            .iter()
            .find(|u| u.login == login)
            .is_some_and(|user| queued.iter().all(|q| crate::operators::is_owner(user, &q.entity_type, &q.owner)))
    };
    for (entity_type, kinds) in by_entity_type {
        let ids = |kinds: &BTreeMap<NotificationKind, Vec<Queued>>| -> Vec<i64> {
            kinds.values().flatten().map(|q| q.id).collect()
        };
        let Some(et) = host.config.entity_types.get(&entity_type).filter(|et| et.notifications) else {
            // Switched off (or the entity type left the config): routed to nobody.
            let ids = ids(&kinds);
            if host.store.record_routing(&ids, &[])? {
                report.routed += ids.len() as u64;
            }
            continue;
        };
        let router = et.router.clone();
        let events: Vec<Event> = kinds
            .iter()
            .map(|(kind, queued)| Event {
                kind: event_kind(*kind),
                entity_type: entity_type.clone(),
                orders: queued
                    .iter()
                    .map(|q| OrderSummary {
                        id: q.order,
                        owner: q.owner.clone(),
                        resource_type: q.resource_type.clone(),
                        change: q.change,
                        reason: q.reason.clone(),
                    })
                    .collect(),
            })
            .collect();
        let results = match host.call(&router, |plugin| plugin.route(&events, directory.clone())) {
            Ok(results) => results,
            Err(error) => {
                // Left queued: routed again once the router works.
                report.problems.push(format!("notifications for {entity_type}: {error}"));
                continue;
            }
        };
        let mut routed_ids = Vec::new();
        let mut notifications = Vec::new();
        for ((kind, queued), result) in kinds.iter().zip(results) {
            match result {
                Err(error) => {
                    report.problems.push(format!("router `{router}` could not route {kind} for {entity_type}: {error}"))
                }
                Ok(messages) => {
                    routed_ids.extend(queued.iter().map(|q| q.id));
                    for message in messages {
                        let recipients: Vec<Recipient> = message
                            .recipients
                            .iter()
                            .filter(|login| {
                                !(*kind == NotificationKind::OrdersAwaitingApproval && only_own(login, queued))
                            })
                            .filter_map(|login| directory.users.iter().find(|u| &u.login == login))
                            .map(|u| Recipient {
                                login: u.login.clone(),
                                display_name: u.display_name.clone(),
                                email: u.email.clone(),
                            })
                            .collect();
                        let channels = channels(&host.config.notifications, &recipients);
                        notifications.push(NewNotification {
                            kind: *kind,
                            entity_type: entity_type.clone(),
                            router: router.clone(),
                            recipients,
                            subject: message.subject,
                            body: message.body,
                            orders: queued.iter().map(|q| q.order).collect(),
                            channels,
                        });
                    }
                }
            }
        }
        // Another pass (another host) may have routed them meanwhile: then its notifications
        // stand and these are dropped, so nobody is told twice.
        if host.store.record_routing(&routed_ids, &notifications)? {
            report.routed += routed_ids.len() as u64;
            report.notifications += notifications.len() as u64;
        }
    }
    Ok(())
}

/// The channels a notification goes out on: e-mail when a relay is configured and someone has
/// an address, and every webhook.
fn channels(config: &NotificationsConfig, recipients: &[Recipient]) -> Vec<String> {
    let mut channels = Vec::new();
    if config.smtp.is_some() && recipients.iter().any(|r| r.email.is_some()) {
        channels.push("email".to_string());
    }
    channels.extend(config.webhooks.iter().map(|w| format!("webhook:{}", w.name)));
    channels
}

/// The delay before attempt `attempts + 1`, or none when the last attempt was made.
fn next_delay(config: &NotificationsConfig, attempts: u32) -> Option<std::time::Duration> {
    if attempts + 1 >= config.max_attempts {
        return None;
    }
    ExponentialBuilder::default()
        .with_min_delay(config.retry_initial)
        .with_max_delay(config.retry_max)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempts as usize)
}

/// Delivers the deliveries due now.
pub fn deliver(store: &mut Store, config: &NotificationsConfig, report: &mut NotifyReport) -> Result<(), StoreError> {
    let due = store.due_deliveries(store.now_ms(), DELIVER_BATCH)?;
    // A failure is (whether a secret could not be read, the error). Secrets are read here,
    // when delivering, so that no other command needs them.
    let mut mailer: Option<Result<email::Mailer, (bool, String)>> = None;
    for (delivery, notification) in due {
        // Claimed before it is sent: a pass on another host that read it due too skips it.
        if !store.claim_delivery(delivery.id, store.now_ms(), SEND_LEASE_MS)? {
            continue;
        }
        let result: Result<(), (bool, String)> = if delivery.channel == "email" {
            match &config.smtp {
                None => Err((false, "e-mail is no longer configured ([notifications.smtp])".to_string())),
                Some(smtp) => match mailer.get_or_insert_with(|| {
                    let password = match &smtp.credentials {
                        None => None,
                        Some((_, secret)) => Some(secret.resolve().map_err(|e| (true, format!("SMTP password: {e}")))?),
                    };
                    email::Mailer::new(smtp, password).map_err(|e| (false, e))
                }) {
                    Ok(mailer) => mailer.send(&notification, delivery.id).map_err(|e| (false, e)),
                    Err(error) => Err(error.clone()),
                },
            }
        } else if let Some(name) = delivery.channel.strip_prefix("webhook:") {
            match config.webhooks.iter().find(|w| w.name == name) {
                None => Err((false, format!("webhook `{name}` is no longer configured"))),
                Some(hook) => match hook.secret.resolve() {
                    Ok(secret) => webhook::send(hook, &secret, &notification, delivery.id).map_err(|e| (false, e)),
                    Err(e) => Err((true, format!("webhook `{name}`: its secret: {e}"))),
                },
            }
        } else {
            Err((false, format!("unknown channel `{}`", delivery.channel)))
        };
        match result {
            Ok(()) => {
                store.delivery_sent(delivery.id)?;
                report.delivered += 1;
            }
            Err((secret, error)) => {
                let next = next_delay(config, delivery.attempts);
                let retry_at = next.map(|d| store.now_ms() + i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2));
                tracing::warn!(delivery = delivery.id, channel = %delivery.channel, "delivery failed: {error}");
                store.delivery_failed(delivery.id, &error, retry_at)?;
                if retry_at.is_some() {
                    report.retrying += 1;
                    // A secret that cannot be read is the config's problem, not the channel's:
                    // said in the report (once per channel) even while the delivery is retried.
                    let problem = format!("delivery via {} failed: {error}; kept for retry", delivery.channel);
                    if secret && !report.problems.contains(&problem) {
                        report.problems.push(problem);
                    }
                } else {
                    report.gave_up += 1;
                    report.problems.push(format!(
                        "notification {} via {}: gave up after {} attempts: {error}",
                        notification.id,
                        delivery.channel,
                        delivery.attempts + 1
                    ));
                }
            }
        }
    }
    Ok(())
}

/// How long a claimed delivery is a pass's to send: more than any channel's time limit for one
/// send. A pass that dies with it leaves it to be sent again after this.
const SEND_LEASE_MS: i64 = 5 * 60 * 1000;

/// Routes, then delivers: what a job run, or a person's action, ends with.
pub fn route_and_deliver(host: &mut Host) -> Result<NotifyReport, StoreError> {
    // One pass at a time among hosts sharing the lock (`Host::sibling`: serve's job host and
    // the host of people's actions), so they do not do the same work twice. Passes of other
    // processes and hosts are kept apart by the store: routing records an intent only if it is
    // still unrouted, and each delivery is claimed before it is sent.
    let passes = host.notifying.clone();
    let _pass = passes.lock().unwrap_or_else(|e| e.into_inner());
    let mut report = NotifyReport::default();
    route(host, &mut report)?;
    deliver(&mut host.store, &host.config.notifications, &mut report)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn retries_back_off_and_stop() {
        let config = NotificationsConfig {
            retry_initial: Duration::from_secs(10),
            retry_max: Duration::from_secs(60),
            max_attempts: 4,
            ..NotificationsConfig::default()
        };
        let delays: Vec<Option<Duration>> = (0..5).map(|a| next_delay(&config, a)).collect();
        // Jitter adds up to the delay itself: [10, 20), [20, 40), [40, 80).
        for (attempt, (low, high)) in [(10, 20), (20, 40), (40, 80)].into_iter().enumerate() {
            let delay = delays[attempt].unwrap();
            assert!(
                delay >= Duration::from_secs(low) && delay < Duration::from_secs(high),
                "attempt {attempt}: {delay:?}"
            );
        }
        assert_eq!(delays[3], None, "the fourth attempt was the last");
        assert_eq!(delays[4], None);
    }
}
