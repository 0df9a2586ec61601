//! Connection pace: how fast the host may go to one managed system, shared by every worker of
//! every process on the database (the `connection_pace` table, one row per connection that
//! was ever slowed down; no row is full speed).
//!
//! The rules, applied when a batch's call returns ([`Store::end_calling`], in the transaction
//! that marks the batch no longer in flight):
//!
//! - a transient failure with a Retry-After pauses the connection until then (at most
//!   [`MAX_PAUSE_MS`]); a pause longer than [`DEFER_AFTER_MS`] leaves the connection's
//!   remaining batches of the run, Pending, for the next run;
//! - transient failures in batches in a row ("repeated": from the second on) halve the
//!   connection's allowed concurrency (floor 1) and pause it for a backoff that starts at
//!   [`BACKOFF_MIN_MS`] and doubles up to [`BACKOFF_MAX_MS`]; a batch sent before the last
//!   decrease (it went out under the old allowance) does not decrease it again;
//! - a clean batch (answered, no transient failure) adds one back, up to the configured
//!   concurrency, and clears the backoff and the failures in a row.
//!
//! Times are Unix ms of the wall clock, given by the caller.

use super::db::{Db, OptionalExtension, Row, params};

use super::{Result, Store};

/// The longest pause a Retry-After can ask for.
pub const MAX_PAUSE_MS: i64 = 3_600_000;
/// A connection paused for longer than this leaves its remaining batches for the next run
/// instead of keeping the run waiting.
pub const DEFER_AFTER_MS: i64 = 60_000;
/// The first backoff after repeated transient failures.
pub const BACKOFF_MIN_MS: i64 = 250;
/// The longest backoff.
pub const BACKOFF_MAX_MS: i64 = 30_000;

/// What one batch's outcomes say about its connection, for [`Store::end_calling`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// The connection's configured concurrency (what additive increase goes back up to).
    pub concurrency: usize,
    /// When the batch was sent (Unix ms).
    pub sent_at: i64,
    /// Orders the connector answered for (none: the call did not happen or failed as a whole).
    pub answered: usize,
    /// Of those, transient failures.
    pub transient: usize,
    /// The longest Retry-After the transient failures asked for, ms.
    pub retry_after_ms: Option<i64>,
}

/// One connection's pace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pace {
    /// The connection.
    pub connection: String,
    /// No batch goes out before this (Unix ms; 0: not paused).
    pub paused_until: i64,
    /// Batches allowed in flight now (at most the configured concurrency).
    pub allowed: i64,
    /// The current backoff, ms (0: none).
    pub backoff_ms: i64,
    /// Batches with transient failures in a row.
    pub failures: i64,
    /// When the allowance was last halved (Unix ms; 0: never).
    pub decreased_at: i64,
    /// Why it is slowed down, for operators.
    pub reason: Option<String>,
}

impl Pace {
    /// Full speed.
    pub fn full(connection: &str, concurrency: usize) -> Pace {
        Pace {
            connection: connection.to_string(),
            paused_until: 0,
            allowed: i64::try_from(concurrency.max(1)).unwrap_or(i64::MAX),
            backoff_ms: 0,
            failures: 0,
            decreased_at: 0,
            reason: None,
        }
    }

    /// Batches that may be in flight: the allowance, within the configured concurrency (which
    /// may have been lowered since).
    pub fn cap(&self, concurrency: usize) -> usize {
        usize::try_from(self.allowed.max(1)).unwrap_or(usize::MAX).min(concurrency.max(1))
    }

    /// The pace after a batch's call returned at `now`.
    pub fn after(&self, batch: &BatchOutcome, now: i64) -> Pace {
        let configured = i64::try_from(batch.concurrency.max(1)).unwrap_or(i64::MAX);
        let mut next = Pace { allowed: self.allowed.clamp(1, configured), ..self.clone() };
        if batch.transient == 0 {
            if batch.answered > 0 {
                next.allowed = (next.allowed + 1).min(configured);
                next.backoff_ms = 0;
                next.failures = 0;
                if next.allowed == configured && next.paused_until <= now {
                    next.reason = None;
                }
            }
            return next;
        }
        next.failures += 1;
        if next.failures >= 2 && batch.sent_at >= self.decreased_at {
            next.allowed = (next.allowed / 2).max(1);
            next.backoff_ms =
                if next.backoff_ms == 0 { BACKOFF_MIN_MS } else { (next.backoff_ms * 2).min(BACKOFF_MAX_MS) };
            next.decreased_at = now;
            next.paused_until = next.paused_until.max(now + next.backoff_ms);
            next.reason = Some(format!(
                "transient errors in {} batches in a row: {} batches at a time, {} ms between",
                next.failures, next.allowed, next.backoff_ms
            ));
        }
        if let Some(asked) = batch.retry_after_ms {
            let until = now + asked.clamp(0, MAX_PAUSE_MS);
            if until > next.paused_until {
                next.paused_until = until;
                next.reason = Some(format!("the managed system asked to wait {} s (Retry-After)", asked.max(0) / 1000));
            }
        }
        next
    }
}

impl Store {
    /// Every connection's stored pace.
    pub fn paces(&self) -> Result<Vec<Pace>> {
        paces(&self.conn)
    }

    /// Back to full speed now (an operator's decision, or a test's).
    pub fn reset_pace(&mut self, connection: &str) -> Result<()> {
        self.conn.execute("DELETE FROM connection_pace WHERE connection = ?1", [connection])?;
        Ok(())
    }
}

/// Every stored pace.
pub(super) fn paces(conn: &Db) -> Result<Vec<Pace>> {
    let mut stmt = conn.prepare_cached(
        "SELECT connection, paused_until, allowed, backoff_ms, failures, decreased_at, reason
         FROM connection_pace ORDER BY connection",
    )?;
    let rows = stmt.query_map((), row)?.collect::<Result<Vec<_>>>()?;
    Ok(rows)
}

fn row(r: &Row<'_>) -> Result<Pace> {
    Ok(Pace {
        connection: r.get(0)?,
        paused_until: r.get(1)?,
        allowed: r.get(2)?,
        backoff_ms: r.get(3)?,
        failures: r.get(4)?,
        decreased_at: r.get(5)?,
        reason: r.get(6)?,
    })
}

/// Applies a batch's outcome to its connection's pace, inside the caller's transaction.
pub(super) fn record(tx: &Db, connection: &str, batch: &BatchOutcome, now: i64) -> Result<()> {
    let current = tx
        .prepare_cached(
            "SELECT connection, paused_until, allowed, backoff_ms, failures, decreased_at, reason
             FROM connection_pace WHERE connection = ?1",
        )?
        .query_row([connection], row)
        .optional()?;
    let Some(current) = current.or_else(|| (batch.transient > 0).then(|| Pace::full(connection, batch.concurrency)))
    else {
        return Ok(()); // full speed, and it stays so
    };
    let next = current.after(batch, now);
    if next == current {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO connection_pace (connection, paused_until, allowed, backoff_ms, failures, decreased_at, reason, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (connection) DO UPDATE SET paused_until = ?2, allowed = ?3, backoff_ms = ?4, failures = ?5,
            decreased_at = ?6, reason = ?7, updated_at = ?8",
        params![
            next.connection,
            next.paused_until,
            next.allowed,
            next.backoff_ms,
            next.failures,
            next.decreased_at,
            next.reason,
            now
        ],
    )?;
    if next.paused_until > current.paused_until {
        tracing::warn!(
            connection,
            until = next.paused_until,
            "connection slowed down: {}",
            next.reason.as_deref().unwrap_or("")
        );
    }
    Ok(())
}
