//! Events out: every order state change, published to each subscriber its filters let it
//! through to, as a CloudEvents 1.0 JSON event (structured mode), signed like notification
//! webhooks (`X-Provision-Signature: sha256=HMAC`).
//!
//! **Never lost, at least once.** The outbox is the order history: a state change and its
//! history row are one transaction, so every change has its event and no event is for a change
//! that was rolled back. A subscriber's cursor moves past an event only after its receiver
//! answered 2xx, and a delivery pass claims the subscriber under a lease first, so passes of
//! several processes take turns. A process that dies between the answer and the cursor's move
//! sends that event again at the next pass: with the same `id` (the installation and the
//! history row), which the receiver de-duplicates on. A failed delivery stops the subscriber's
//! pass (events stay in order) and backs off, doubling from `events.retry_initial` to
//! `events.retry_max`; other subscribers go on.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::config::{EventsConfig, Subscriber};
use crate::store::{AuditRow, Store, StoreError};

/// History rows read per page.
const PAGE: usize = 500;
/// Events at most per subscriber per pass, so a pass ends and the lease is given back.
const PER_PASS: u64 = 5_000;
/// How long a claim lasts without a sign of life (each delivered event renews it).
const LEASE_MS: i64 = 60_000;

/// What one delivery pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EventsReport {
    /// Events delivered, by all subscribers together.
    pub delivered: u64,
    /// Subscribers that failed this pass, with why.
    pub failed: Vec<(String, String)>,
    /// Subscribers not due (backing off) or held by another pass.
    pub skipped: Vec<String>,
}

/// The CloudEvent of one state change.
pub fn cloud_event(installation: &str, row: &AuditRow) -> serde_json::Value {
    json!({
        "specversion": "1.0",
        "id": format!("{installation}-{}", row.id),
        "source": format!("urn:provision:{installation}"),
        "type": "provision.order.state-changed",
        "subject": format!("orders/{}", row.order),
        "time": jiff::Timestamp::from_millisecond(row.at).map(|t| t.to_string()).unwrap_or_default(),
        "datacontenttype": "application/json",
        "data": row,
    })
}

fn backoff(config: &EventsConfig, failures: i64) -> Duration {
    let doubled = config.retry_initial.saturating_mul(1u32 << failures.clamp(0, 20));
    doubled.min(config.retry_max)
}

/// POSTs one event.
fn post(subscriber: &Subscriber, secret: &str, id: &str, body: &[u8]) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(subscriber.timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let response = agent
        .post(&subscriber.url)
        .header("Content-Type", "application/cloudevents+json; charset=utf-8")
        .header("X-Provision-Event", id)
        .header("X-Provision-Signature", crate::notify::webhook::signature(secret.as_bytes(), body))
        .send(body)
        .map_err(|e| format!("POST {}: {e}", subscriber.url))?;
    let status = response.status();
    if status.is_success() { Ok(()) } else { Err(format!("POST {}: HTTP {status}", subscriber.url)) }
}

/// A delivery pass: for each subscriber that is due and not held by another pass, the events
/// after its cursor, in history order, until they run out, one fails, or [`PER_PASS`].
pub fn deliver(store: &mut Store, config: &EventsConfig, owner: &str) -> Result<EventsReport, StoreError> {
    let mut report = EventsReport::default();
    let installation = store.installation().to_string();
    for subscriber in config.subscribers.values() {
        let Some(claim) = store.claim_subscriber(&subscriber.name, owner, LEASE_MS)? else {
            report.skipped.push(subscriber.name.clone());
            continue;
        };
        let outcome = deliver_one(store, subscriber, owner, &installation, claim.cursor, &mut report);
        let failure = match outcome {
            Ok(()) => None,
            Err(Failure::Store(error)) => {
                // The claim lapses by itself; the error is the caller's.
                let _ = store.release_subscriber(&subscriber.name, owner, None);
                return Err(error);
            }
            Err(Failure::Lost) => continue,
            Err(Failure::Delivery(why)) => Some(why),
        };
        match failure {
            Some(why) => {
                let next =
                    store.now_ms() + i64::try_from(backoff(config, claim.failures).as_millis()).unwrap_or(i64::MAX / 2);
                tracing::warn!(subscriber = %subscriber.name, "event delivery failed (retried later): {why}");
                store.release_subscriber(&subscriber.name, owner, Some((&why, next)))?;
                report.failed.push((subscriber.name.clone(), why));
            }
            None => store.release_subscriber(&subscriber.name, owner, None)?,
        }
    }
    Ok(report)
}

enum Failure {
    Store(StoreError),
    /// Another pass took the subscriber over: stop without touching it.
    Lost,
    Delivery(String),
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Failure::Store(error)
    }
}

fn deliver_one(
    store: &mut Store,
    subscriber: &Subscriber,
    owner: &str,
    installation: &str,
    mut cursor: i64,
    report: &mut EventsReport,
) -> Result<(), Failure> {
    let secret = subscriber.secret.resolve().map_err(|e| Failure::Delivery(format!("the secret: {e}")))?;
    let mut sent = 0u64;
    loop {
        let page = store.audit_page(i64::MIN, i64::MAX, cursor, PAGE)?;
        let Some(last) = page.last().map(|r| r.id) else { return Ok(()) };
        for row in &page {
            if !subscriber.wants(&row.resource_type, row.to) {
                continue;
            }
            let event = cloud_event(installation, row);
            let id = event["id"].as_str().unwrap_or_default().to_string();
            let body = serde_json::to_vec(&event).map_err(|e| Failure::Delivery(e.to_string()))?;
            if let Err(why) = post(subscriber, &secret, &id, &body) {
                // What the filter passed over before this one is done with.
                store.advance_subscriber(&subscriber.name, owner, row.id - 1, 0, LEASE_MS)?;
                return Err(Failure::Delivery(why));
            }
            if !store.advance_subscriber(&subscriber.name, owner, row.id, 1, LEASE_MS)? {
                return Err(Failure::Lost);
            }
            cursor = row.id;
            sent += 1;
            report.delivered += 1;
            if sent >= PER_PASS {
                return Ok(());
            }
        }
        if last > cursor {
            if !store.advance_subscriber(&subscriber.name, owner, last, 0, LEASE_MS)? {
                return Err(Failure::Lost);
            }
            cursor = last;
        }
        if page.len() < PAGE {
            return Ok(());
        }
    }
}
