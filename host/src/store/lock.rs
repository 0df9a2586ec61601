//! The job lock: one row saying which process runs a job on this database. Until work is
//! claimed in smaller units, one job runs at a time per database, whatever process or host it
//! runs in (two CLI runs, `provision serve`'s scheduler, an API call).
//!
//! The row is taken in a `BEGIN IMMEDIATE` transaction (SQLite's single writer lock), so two
//! processes can never both see it free. Its holder refreshes `heartbeat_at`/`expires_at`; a
//! row past `expires_at` belongs to a process that died (or stopped long enough to be taken
//! for dead) and the next taker replaces it, marking the dead holder's run `interrupted`.
//! While a lock is held, the store's write transactions check that it is still the holder's
//! (see [`Store::write_tx`]), so a run whose lock was taken over writes nothing more.

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use super::{Result, Store};
use crate::model::format_time;

/// Who asks for the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockOwner {
    /// Random per acquisition: what the store's writes check.
    pub token: String,
    /// The machine's hostname.
    pub host: String,
    /// The process id.
    pub pid: u32,
}

/// The lock as stored: who holds it, since when, until when without a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockHolder {
    /// The job run it was taken for; none for resuming or cancelling a held run.
    pub run: Option<i64>,
    /// What it was taken for: a job kind, `resume` or `cancel`.
    pub kind: String,
    /// Hostname of the holder.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// When it was taken, Unix ms.
    pub started_at: i64,
    /// The holder's last heartbeat, Unix ms.
    pub heartbeat_at: i64,
    /// Past this (Unix ms) without a new heartbeat, the holder is taken for dead.
    pub expires_at: i64,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.run {
            Some(run) => write!(f, "run {run} ({})", self.kind)?,
            None => write!(f, "`job {}`", self.kind)?,
        }
        write!(
            f,
            " on host {}, pid {}, since {}; last heartbeat {}, taken for dead after {}",
            self.host,
            self.pid,
            format_time(self.started_at),
            format_time(self.heartbeat_at),
            format_time(self.expires_at)
        )
    }
}

/// What an attempt to take the lock found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// The lock is ours; `run` is the job run recorded with it (if one was asked for) and
    /// `took_over` the expired holder it replaced.
    Ours {
        /// The job run started under the lock.
        run: Option<i64>,
        /// The dead holder replaced, if the lock had expired.
        took_over: Option<LockHolder>,
    },
    /// Another live holder has it.
    Held(LockHolder),
}

impl Store {
    /// Takes the job lock for `owner` if it is free or expired, valid for `expiry_ms` without a
    /// heartbeat, and records a job run of `kind` under it (none: the lock only). In one
    /// immediate transaction: the check, the takeover and the run are one step.
    ///
    /// Any run still `running` when the lock is taken is dead (only a holder runs, and a holder
    /// finishes its run before it lets go): it is marked `interrupted`, naming who took over.
    pub fn take_job_lock(
        &mut self,
        owner: &LockOwner,
        kind: &str,
        run_kind: Option<&str>,
        expiry_ms: i64,
    ) -> Result<Taken> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now = crate::model::now_ms();
        let current = holder(&tx)?;
        if let Some(holder) = &current
            && holder.expires_at > now
        {
            return Ok(Taken::Held(holder.clone()));
        }
        let run = match run_kind {
            Some(run_kind) => {
                tx.execute(
                    "INSERT INTO job_runs (kind, started_at, status) VALUES (?1, ?2, 'running')",
                    params![run_kind, now],
                )?;
                Some(tx.last_insert_rowid())
            }
            None => None,
        };
        let taker = match run {
            Some(run) => format!("run {run} (host {}, pid {})", owner.host, owner.pid),
            None => format!("`job {kind}` (host {}, pid {})", owner.host, owner.pid),
        };
        if let Some(holder) = &current {
            tracing::warn!("the job lock of {holder} expired; {taker} takes it over");
            if let Some(dead) = holder.run {
                tx.execute(
                    "UPDATE job_runs SET status = 'interrupted', finished_at = ?2, message = ?3
                     WHERE id = ?1 AND status = 'running'",
                    params![
                        dead,
                        now,
                        format!(
                            "interrupted: its process (host {}, pid {}) gave no heartbeat since {}; \
                             its job lock was taken over by {taker}",
                            holder.host,
                            holder.pid,
                            format_time(holder.heartbeat_at)
                        )
                    ],
                )?;
            }
        }
        tx.execute(
            "UPDATE job_runs SET status = 'interrupted', finished_at = ?2, message = ?3
             WHERE status = 'running' AND id IS NOT ?1",
            params![
                run,
                now,
                format!("interrupted: its process ended without finishing it (found by {taker}, holding no job lock)")
            ],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO job_lock (id, token, run, kind, host, pid, started_at, heartbeat_at, expires_at)
             VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)",
            params![owner.token, run, kind, owner.host, owner.pid, now, now + expiry_ms],
        )?;
        tx.commit()?;
        self.fence = Some(owner.token.clone());
        Ok(Taken::Ours { run, took_over: current })
    }

    /// Lets go of the lock if it is still `token`'s; returns whether it was.
    pub fn release_job_lock(&mut self, token: &str) -> Result<bool> {
        if self.fence.as_deref() == Some(token) {
            self.fence = None;
        }
        Ok(self.conn.execute("DELETE FROM job_lock WHERE id = 1 AND token = ?1", [token])? == 1)
    }

    /// Whether this connection still holds the job lock it took (false if it holds none, or
    /// its lock was taken over).
    pub fn holds_job_lock(&self) -> Result<bool> {
        let Some(token) = &self.fence else { return Ok(false) };
        let holder: Option<String> =
            self.conn.query_row("SELECT token FROM job_lock WHERE id = 1", [], |r| r.get(0)).optional()?;
        Ok(holder.as_deref() == Some(token.as_str()))
    }

    /// The lock's current holder, if any (expired or not).
    pub fn job_lock(&self) -> Result<Option<LockHolder>> {
        holder(&self.conn)
    }
}

/// Refreshes the lock's heartbeat on `conn` (the heartbeat's own connection); false when the
/// lock is no longer `token`'s (it expired and was taken over): the holder must stop.
pub fn heartbeat(conn: &rusqlite::Connection, token: &str, expiry_ms: i64) -> rusqlite::Result<bool> {
    let now = crate::model::now_ms();
    // Only a lock that is ours *and* not yet expired is refreshed: a heartbeat arriving after
    // the expiry must not revive a lock another process may be about to take.
    let refreshed = conn.execute(
        "UPDATE job_lock SET heartbeat_at = ?2, expires_at = ?2 + ?3 WHERE id = 1 AND token = ?1 AND expires_at > ?2",
        params![token, now, expiry_ms],
    )?;
    Ok(refreshed == 1)
}

/// The lock row, if any: on the store's connection or inside a transaction taking the lock.
fn holder(conn: &rusqlite::Connection) -> Result<Option<LockHolder>> {
    Ok(conn
        .query_row(
            "SELECT run, kind, host, pid, started_at, heartbeat_at, expires_at FROM job_lock WHERE id = 1",
            [],
            |r| {
                Ok(LockHolder {
                    run: r.get(0)?,
                    kind: r.get(1)?,
                    host: r.get(2)?,
                    pid: r.get(3)?,
                    started_at: r.get(4)?,
                    heartbeat_at: r.get(5)?,
                    expires_at: r.get(6)?,
                })
            },
        )
        .optional()?)
}
