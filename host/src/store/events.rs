//! Subscribers of order state changes: a cursor into the order history each, claimed with a
//! lease for a delivery pass (see `crate::events`).

use super::db::{OptionalExtension, params};
use serde::Serialize;

use super::{Result, Store};
use crate::config::EventsConfig;

/// A subscriber as stored: how far it got, and how its deliveries go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SubscriberState {
    /// Its name (config `[events.subscribers.NAME]`).
    pub name: String,
    /// The last history id it has had (or its filters passed over).
    pub cursor: i64,
    /// State changes in the history after the cursor (not all may be for it).
    pub behind: i64,
    /// Events delivered so far.
    pub delivered: i64,
    /// Failed attempts in a row.
    pub failures: i64,
    /// No attempt before this (RFC 3339 in JSON), after failures.
    #[serde(with = "crate::model::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt_at: Option<i64>,
    /// The last failure's reason.
    pub last_error: Option<String>,
    /// The last delivery that succeeded (RFC 3339 in JSON).
    #[serde(with = "crate::model::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_success_at: Option<i64>,
}

/// A subscriber claimed for a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriberClaim {
    /// Where its next event comes after.
    pub cursor: i64,
    /// Its failures in a row before this pass.
    pub failures: i64,
}

impl Store {
    /// Records the config's subscribers the store does not know yet, each starting at the end
    /// of the history (or at its beginning, with `from = "beginning"`). A subscriber taken out
    /// of the config keeps its row, so that putting it back goes on where it stopped.
    pub fn sync_subscribers(&mut self, config: &EventsConfig) -> Result<()> {
        if config.subscribers.is_empty() {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let tx = self.write_tx()?;
        for subscriber in config.subscribers.values() {
            tx.execute(
                "INSERT INTO event_subscribers (name, cursor, created_at)
                 VALUES (?1, CASE WHEN ?2 THEN 0 ELSE (SELECT COALESCE(MAX(id), 0) FROM order_history) END, ?3)
                 ON CONFLICT (name) DO NOTHING",
                params![subscriber.name, subscriber.from_beginning, now],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every stored subscriber.
    pub fn subscribers(&self) -> Result<Vec<SubscriberState>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, cursor, (SELECT COALESCE(MAX(id), 0) FROM order_history) - cursor, delivered, failures,
                    next_attempt_at, last_error, last_success_at
             FROM event_subscribers ORDER BY name",
        )?;
        let rows = stmt.query_map((), |r| {
            Ok(SubscriberState {
                name: r.get(0)?,
                cursor: r.get(1)?,
                behind: r.get(2)?,
                delivered: r.get(3)?,
                failures: r.get(4)?,
                next_attempt_at: r.get::<_, i64>(5).map(|t| (t > 0).then_some(t))?,
                last_error: r.get(6)?,
                last_success_at: r.get(7)?,
            })
        })?;
        rows.collect::<Result<_, _>>()
    }

    /// Claims a subscriber for a delivery pass by `owner` for `lease_ms`: none when it is not
    /// due (backing off) or another pass holds it.
    pub fn claim_subscriber(&mut self, name: &str, owner: &str, lease_ms: i64) -> Result<Option<SubscriberClaim>> {
        let now = self.clock.now_ms();
        let tx = self.write_tx()?;
        let claim = tx
            .prepare_cached(
                "UPDATE event_subscribers SET lease_owner = ?2, lease_until = ?3 + ?4
                 WHERE name = ?1 AND next_attempt_at <= ?3 AND (lease_until IS NULL OR lease_until < ?3)
                 RETURNING cursor, failures",
            )?
            .query_row(params![name, owner, now, lease_ms], |r| {
                Ok(SubscriberClaim { cursor: r.get(0)?, failures: r.get(1)? })
            })
            .optional()?;
        tx.commit()?;
        Ok(claim)
    }

    /// Moves a claimed subscriber's cursor on to `cursor` after `delivered` more events and
    /// renews the lease; false when the claim was lost meanwhile (the pass must stop: another
    /// may be delivering).
    pub fn advance_subscriber(
        &mut self,
        name: &str,
        owner: &str,
        cursor: i64,
        delivered: u64,
        lease_ms: i64,
    ) -> Result<bool> {
        let now = self.clock.now_ms();
        let delivered = i64::try_from(delivered).unwrap_or(i64::MAX);
        let tx = self.write_tx()?;
        let changed = tx.prepare_cached(
            "UPDATE event_subscribers SET cursor = CASE WHEN cursor > ?3 THEN cursor ELSE ?3 END, delivered = delivered + ?4, lease_until = ?5 + ?6,
                failures = CASE WHEN ?4 > 0 THEN 0 ELSE failures END,
                last_success_at = CASE WHEN ?4 > 0 THEN ?5 ELSE last_success_at END
             WHERE name = ?1 AND lease_owner = ?2 AND lease_until >= ?5",
        )?
        .execute(params![name, owner, cursor, delivered, now, lease_ms])?;
        tx.commit()?;
        Ok(changed == 1)
    }

    /// Ends a pass: releases the claim; with a failure, records it and when to try again.
    pub fn release_subscriber(&mut self, name: &str, owner: &str, failure: Option<(&str, i64)>) -> Result<()> {
        let tx = self.write_tx()?;
        match failure {
            Some((error, next_attempt_at)) => tx
                .prepare_cached(
                    "UPDATE event_subscribers SET lease_owner = NULL, lease_until = NULL, failures = failures + 1,
                        last_error = ?3, next_attempt_at = ?4
                     WHERE name = ?1 AND lease_owner = ?2",
                )?
                .execute(params![name, owner, error, next_attempt_at])?,
            None => tx
                .prepare_cached(
                    "UPDATE event_subscribers SET lease_owner = NULL, lease_until = NULL WHERE name = ?1 AND lease_owner = ?2",
                )?
                .execute(params![name, owner])?,
        };
        tx.commit()?;
        Ok(())
    }
}
