//! Job runs: one row per run of the complete job (or of one of its steps), with its counters.

use super::db::{OptionalExtension, params};
use serde::Serialize;

use super::{Result, Store, StoreError, from_json, json};

/// A recorded job run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct JobRun {
    /// Its id.
    pub id: i64,
    /// `complete`, `compute`, `fulfil` or `synchronise`.
    pub kind: String,
    /// Unix ms.
    #[serde(with = "crate::model::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub started_at: i64,
    /// Unix ms; none while running.
    #[serde(with = "crate::model::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<i64>,
    /// `running`, `succeeded`, `threshold exceeded` (orders held), `failed`, `interrupted` (its
    /// process died; the message says who took its job lock over).
    pub status: String,
    /// Counters by name.
    #[schema(value_type = Object)]
    pub counters: serde_json::Map<String, serde_json::Value>,
    /// A message, for failures.
    pub message: Option<String>,
    /// The hosts (`hostname:pid`) that did its work, with the units each finished.
    #[schema(value_type = Object)]
    pub hosts: std::collections::BTreeMap<String, u64>,
}

/// The host of a claim's owner (`host:pid:worker` is the owner; `host:pid` the host).
fn host_of(owner: &str) -> &str {
    owner.rsplit_once(':').map_or(owner, |(host, _)| host)
}

/// A resource type whose orders a run holds because a threshold was exceeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Hold {
    /// The run.
    pub run: i64,
    /// The resource type.
    pub resource_type: String,
    /// Orders the run created, per change kind.
    #[schema(value_type = Object)]
    pub counters: serde_json::Map<String, serde_json::Value>,
    /// The effective limits, per change kind.
    #[schema(value_type = Object)]
    pub limits: serde_json::Map<String, serde_json::Value>,
    /// `held`, `resumed` or `cancelled`.
    pub status: String,
    /// Who resumed or cancelled it.
    pub decided_by: Option<String>,
}

impl Store {
    /// Records that a run holds a resource type's orders (a threshold was exceeded), before
    /// the run creates them held.
    pub fn record_hold(
        &mut self,
        run: i64,
        resource_type: &str,
        counters: &impl Serialize,
        limits: &impl Serialize,
    ) -> Result<()> {
        let tx = self.write_tx()?;
        tx.execute(
            "INSERT INTO job_holds (run, resource_type, counters, limits, status) VALUES (?1, ?2, ?3, ?4, 'held')
             ON CONFLICT (run, resource_type) DO UPDATE SET counters = excluded.counters, limits = excluded.limits",
            params![run, resource_type, json(counters), json(limits)],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The holds of a run (or of every run), oldest first.
    pub fn holds(&self, run: Option<i64>) -> Result<Vec<Hold>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT run, resource_type, counters, limits, status, decided_by FROM job_holds
             WHERE CAST(?1 AS BIGINT) IS NULL OR run = ?1 ORDER BY run, resource_type",
        )?;
        let rows = stmt.query_map([run], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?, r.get(4)?, r.get(5)?))
        })?;
        let mut holds = Vec::new();
        for row in rows {
            let (run, resource_type, counters, limits, status, decided_by) = row?;
            holds.push(Hold {
                run,
                resource_type,
                counters: from_json(&counters, "hold counters")?,
                limits: from_json(&limits, "hold limits")?,
                status,
                decided_by,
            });
        }
        Ok(holds)
    }

    /// Releases a run's held orders to fulfilment; returns how many.
    pub fn release_holds(&mut self, run: i64, actor: &str) -> Result<usize> {
        let now = self.clock.now_ms();
        let tx = self.write_tx()?;
        let released = tx.execute("UPDATE orders SET held_run = NULL WHERE held_run = ?1", [run])?;
        tx.execute(
            "UPDATE job_holds SET status = 'resumed', decided_by = ?2, decided_at = ?3 WHERE run = ?1 AND status = 'held'",
            params![run, actor, now],
        )?;
        tx.commit()?;
        Ok(released)
    }

    /// Marks a run's holds cancelled (its orders are closed by the caller, through the machine).
    pub fn cancel_holds(&mut self, run: i64, actor: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE job_holds SET status = 'cancelled', decided_by = ?2, decided_at = ?3 WHERE run = ?1 AND status = 'held'",
            params![run, actor, self.clock.now_ms()],
        )?;
        Ok(())
    }

    /// Recent job runs, newest first.
    pub fn job_runs(&self, limit: usize) -> Result<Vec<JobRun>> {
        let ids: Vec<i64> = self
            .conn
            .prepare_cached("SELECT id FROM job_runs ORDER BY id DESC LIMIT ?1")?
            .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        ids.into_iter().map(|id| self.job_run(id)).collect()
    }

    /// Records the start of a run.
    pub fn start_job(&mut self, kind: &str) -> Result<i64> {
        self.conn.query_row(
            "INSERT INTO job_runs (kind, started_at, status) VALUES (?1, ?2, 'running') RETURNING id",
            params![kind, self.clock.now_ms()],
            |r| r.get(0),
        )
    }

    /// Records the end of a run. A run already marked `interrupted` (its lock was taken over)
    /// keeps that status: it did not end the way it would now say.
    pub fn finish_job(
        &mut self,
        id: i64,
        status: &str,
        counters: &impl Serialize,
        message: Option<&str>,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE job_runs SET finished_at = ?2, status = ?3, counters = ?4, message = ?5
             WHERE id = ?1 AND status = 'running'",
            params![id, self.clock.now_ms(), status, json(counters), message],
        )?;
        Ok(())
    }

    /// One run.
    pub fn job_run(&self, id: i64) -> Result<JobRun> {
        self.conn
            .query_row(
                "SELECT id, kind, started_at, finished_at, status, counters, message FROM job_runs WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get::<_, String>(5)?, r.get(6)?)),
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("there is no job run {id}")))
            .and_then(|(id, kind, started_at, finished_at, status, counters, message)| {
                Ok(JobRun {
                    id,
                    kind,
                    started_at,
                    finished_at,
                    status,
                    counters: from_json(&counters, "job counters")?,
                    message,
                    hosts: self.run_hosts(id)?,
                })
            })
    }

    /// The hosts that finished units of `run`, with how many each.
    fn run_hosts(&self, run: i64) -> Result<std::collections::BTreeMap<String, u64>> {
        let mut hosts = std::collections::BTreeMap::new();
        let mut stmt = self.conn.prepare_cached(
            "SELECT owner, COUNT(*) FROM work_units WHERE run = ?1 AND state = 'done' AND owner IS NOT NULL
             GROUP BY owner",
        )?;
        for row in stmt.query_map([run], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u64>(1)?)))? {
            let (owner, units) = row?;
            *hosts.entry(host_of(&owner).to_string()).or_default() += units;
        }
        Ok(hosts)
    }
}
