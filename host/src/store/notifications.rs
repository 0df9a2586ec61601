//! Notifications: the queue of intents written with state changes, the outbox of routed
//! messages (kept forever), and one delivery per message and channel.

use super::db::params;
use serde::{Deserialize, Serialize};

use super::{Result, Store, StoreError, from_json, json};
use crate::model::{ChangeKind, NotificationKind};

/// A queued notification intent: one order entered a state people act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// The queue row.
    pub id: i64,
    /// Why people are told.
    pub kind: NotificationKind,
    /// The order.
    pub order: i64,
    /// Its owner's key.
    pub owner: String,
    /// Its source entity type.
    pub entity_type: String,
    /// Its resource type.
    pub resource_type: String,
    /// What it does.
    pub change: ChangeKind,
    /// The reason of the state change.
    pub reason: String,
}

/// Someone a notification goes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Recipient {
    /// Login.
    pub login: String,
    /// Name to show.
    pub display_name: String,
    /// E-mail address, if the user has one.
    pub email: Option<String>,
}

/// A routed notification to store, with the channels to deliver it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    /// Why.
    pub kind: NotificationKind,
    /// The entity type of its orders.
    pub entity_type: String,
    /// The router plugin that produced it.
    pub router: String,
    /// Who.
    pub recipients: Vec<Recipient>,
    /// Subject.
    pub subject: String,
    /// Body.
    pub body: String,
    /// The orders concerned.
    pub orders: Vec<i64>,
    /// Channels to deliver on: `email`, `webhook:NAME`.
    pub channels: Vec<String>,
}

/// A notification of the outbox with its deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Notification {
    /// The outbox id.
    pub id: i64,
    /// Unix ms.
    #[serde(with = "crate::model::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// Why.
    pub kind: NotificationKind,
    /// The entity type of its orders.
    pub entity_type: String,
    /// The router plugin that produced it.
    pub router: String,
    /// Who.
    pub recipients: Vec<Recipient>,
    /// Subject.
    pub subject: String,
    /// Body.
    pub body: String,
    /// The orders concerned.
    pub orders: Vec<i64>,
    /// Its deliveries.
    pub deliveries: Vec<Delivery>,
}

/// One channel's delivery of a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    /// The delivery id (also sent to webhooks, for de-duplication).
    pub id: i64,
    /// `email` or `webhook:NAME`.
    pub channel: String,
    /// `pending`, `sent` or `failed` (gave up; an operator may retry).
    pub status: String,
    /// Attempts so far.
    pub attempts: u32,
    /// When the next attempt is due, Unix ms.
    #[serde(with = "crate::model::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub next_attempt_at: i64,
    /// The last failure.
    pub last_error: Option<String>,
    /// When it was sent, Unix ms.
    #[serde(with = "crate::model::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub sent_at: Option<i64>,
}

impl Store {
    /// How many queued intents wait to be routed into the outbox.
    pub fn unrouted_count(&self) -> Result<u64> {
        let mut stmt = self.conn.prepare_cached("SELECT COUNT(*) FROM notification_queue WHERE routed_at IS NULL")?;
        let count: i64 = stmt.query_row((), |row| row.get(0))?;
        Ok(count.unsigned_abs())
    }

    /// Queued intents not routed yet, oldest first.
    pub fn unrouted_notifications(&self, limit: usize) -> Result<Vec<Queued>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT q.id, q.kind, q.order_id, i.key, i.entity_type, o.resource_type, o.change_kind, q.reason
             FROM notification_queue q JOIN orders o ON o.id = q.order_id JOIN identities i ON i.id = o.identity_id
             WHERE q.routed_at IS NULL ORDER BY q.id LIMIT ?1",
        )?;
        let mut rows = stmt.query([i64::try_from(limit).unwrap_or(i64::MAX)])?;
        let mut queued = Vec::new();
        while let Some(row) = rows.next()? {
            let kind: String = row.get(1)?;
            let change: u8 = row.get(6)?;
            queued.push(Queued {
                id: row.get(0)?,
                kind: NotificationKind::from_name(&kind)
                    .ok_or_else(|| StoreError::Corrupt(format!("notification kind {kind}")))?,
                order: row.get(2)?,
                owner: row.get(3)?,
                entity_type: row.get(4)?,
                resource_type: row.get(5)?,
                change: ChangeKind::from_number(change)
                    .ok_or_else(|| StoreError::Corrupt(format!("change {change}")))?,
                reason: row.get(7)?,
            });
        }
        Ok(queued)
    }

    /// Stores routed notifications with a pending delivery per channel, and marks the queue rows
    /// they came from as routed: one transaction, so an intent is routed exactly once. False,
    /// and nothing written, when another pass (another process or host) routed one of them
    /// first: its notifications are the ones kept.
    pub fn record_routing(&mut self, queue_ids: &[i64], notifications: &[NewNotification]) -> Result<bool> {
        let now = self.clock.now_ms();
        let tx = self.write_tx()?;
        for id in queue_ids {
            let marked = tx
                .prepare_cached("UPDATE notification_queue SET routed_at = ?2 WHERE id = ?1 AND routed_at IS NULL")?
                .execute(params![id, now])?;
            if marked == 0 {
                return Ok(false);
            }
        }
        for n in notifications {
            let outbox: i64 = tx
                .prepare_cached(
                    "INSERT INTO outbox (created_at, kind, entity_type, router, recipients, subject, body, orders)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
                )?
                .query_row(
                    params![
                        now,
                        n.kind.name(),
                        n.entity_type,
                        n.router,
                        json(&n.recipients),
                        n.subject,
                        n.body,
                        json(&n.orders)
                    ],
                    |r| r.get(0),
                )?;
            for channel in &n.channels {
                tx.prepare_cached(
                    "INSERT INTO deliveries (outbox_id, channel, status, next_attempt_at) VALUES (?1, ?2, 'pending', ?3)",
                )?
                .execute(params![outbox, channel, now])?;
            }
        }
        tx.commit()?;
        Ok(true)
    }

    /// Claims a pending delivery that is due at `now` for one send: it is not due again for
    /// `lease_ms` (so no other pass, on any host, sends it meanwhile; a pass that dies with it
    /// leaves it due again after that). False when another pass claimed or settled it first.
    pub fn claim_delivery(&mut self, id: i64, now: i64, lease_ms: i64) -> Result<bool> {
        let claimed = self.conn.execute(
            "UPDATE deliveries SET next_attempt_at = ?3
             WHERE id = ?1 AND status = 'pending' AND next_attempt_at <= ?2",
            params![id, now, now.saturating_add(lease_ms)],
        )?;
        Ok(claimed == 1)
    }

    /// Pending deliveries due at `now`, each with its notification.
    pub fn due_deliveries(&self, now: i64, limit: usize) -> Result<Vec<(Delivery, Notification)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, outbox_id FROM deliveries WHERE status = 'pending' AND next_attempt_at <= ?1
             ORDER BY next_attempt_at, id LIMIT ?2",
        )?;
        let ids: Vec<(i64, i64)> = stmt
            .query_map(params![now, i64::try_from(limit).unwrap_or(i64::MAX)], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut due = Vec::with_capacity(ids.len());
        for (delivery, outbox) in ids {
            let notification = self.notification(outbox)?;
            let Some(d) = notification.deliveries.iter().find(|d| d.id == delivery).cloned() else { continue };
            due.push((d, notification));
        }
        Ok(due)
    }

    /// Records a delivery as sent.
    pub fn delivery_sent(&mut self, id: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE deliveries SET status = 'sent', attempts = attempts + 1, sent_at = ?2, last_error = NULL WHERE id = ?1",
            params![id, self.clock.now_ms()],
        )?;
        Ok(())
    }

    /// Records a failed attempt: tried again at `retry_at`, or given up (`failed`) when none.
    pub fn delivery_failed(&mut self, id: i64, error: &str, retry_at: Option<i64>) -> Result<()> {
        self.conn.execute(
            "UPDATE deliveries SET attempts = attempts + 1, last_error = ?2,
                status = CASE WHEN CAST(?3 AS BIGINT) IS NULL THEN 'failed' ELSE 'pending' END,
                next_attempt_at = COALESCE(?3, next_attempt_at)
             WHERE id = ?1",
            params![id, error, retry_at],
        )?;
        Ok(())
    }

    /// Makes failed deliveries pending again, due now; returns how many.
    pub fn retry_deliveries(&mut self, ids: &[i64]) -> Result<usize> {
        let now = self.clock.now_ms();
        let tx = self.write_tx()?;
        let mut changed = 0;
        for id in ids {
            changed += tx.execute(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = ?2 WHERE id = ?1 AND status = 'failed'",
                params![id, now],
            )?;
        }
        tx.commit()?;
        Ok(changed)
    }

    /// One notification with its deliveries.
    pub fn notification(&self, id: i64) -> Result<Notification> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, created_at, kind, entity_type, router, recipients, subject, body, orders FROM outbox WHERE id = ?1",
        )?;
        let mut rows = stmt.query([id])?;
        let Some(row) = rows.next()? else {
            return Err(StoreError::NotFound(format!("there is no notification {id}")));
        };
        let kind: String = row.get(2)?;
        let mut notification = Notification {
            id: row.get(0)?,
            created_at: row.get(1)?,
            kind: NotificationKind::from_name(&kind).ok_or_else(|| StoreError::Corrupt(format!("kind {kind}")))?,
            entity_type: row.get(3)?,
            router: row.get(4)?,
            recipients: from_json(&row.get::<_, String>(5)?, "recipients")?,
            subject: row.get(6)?,
            body: row.get(7)?,
            orders: from_json(&row.get::<_, String>(8)?, "notification orders")?,
            deliveries: Vec::new(),
        };
        drop(rows);
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, channel, status, attempts, next_attempt_at, last_error, sent_at FROM deliveries
             WHERE outbox_id = ?1 ORDER BY id",
        )?;
        notification.deliveries = stmt
            .query_map([id], |r| {
                Ok(Delivery {
                    id: r.get(0)?,
                    channel: r.get(1)?,
                    status: r.get(2)?,
                    attempts: r.get(3)?,
                    next_attempt_at: r.get(4)?,
                    last_error: r.get(5)?,
                    sent_at: r.get(6)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(notification)
    }

    /// The outbox, newest last; `status` keeps notifications with a delivery in that status.
    pub fn notifications(&self, status: Option<&str>, limit: Option<usize>) -> Result<Vec<Notification>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT o.id FROM outbox o WHERE CAST(?1 AS TEXT) IS NULL OR EXISTS
                (SELECT 1 FROM deliveries d WHERE d.outbox_id = o.id AND d.status = ?1)
             ORDER BY o.id DESC LIMIT ?2",
        )?;
        let limit = limit.map_or(i64::MAX, |l| i64::try_from(l).unwrap_or(i64::MAX));
        let ids: Vec<i64> = stmt.query_map(params![status, limit], |r| r.get(0))?.collect::<Result<_, _>>()?;
        let mut list: Vec<Notification> = ids.into_iter().map(|id| self.notification(id)).collect::<Result<_>>()?;
        list.reverse();
        Ok(list)
    }
}
