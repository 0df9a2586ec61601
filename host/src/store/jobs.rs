//! Job runs: one row per run of the complete job (or of one of its steps), with its counters.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Result, Store, StoreError, from_json, json};
use crate::model::now_ms;

/// A recorded job run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobRun {
    /// Its id.
    pub id: i64,
    /// `complete`, `compute`, `fulfil` or `synchronise`.
    pub kind: String,
    /// Unix ms.
    pub started_at: i64,
    /// Unix ms; none while running.
    pub finished_at: Option<i64>,
    /// `running`, `succeeded`, `failed`.
    pub status: String,
    /// Counters by name.
    pub counters: serde_json::Map<String, serde_json::Value>,
    /// A message, for failures.
    pub message: Option<String>,
}

impl Store {
    /// Records the start of a run.
    pub fn start_job(&mut self, kind: &str) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO job_runs (kind, started_at, status) VALUES (?1, ?2, 'running')",
            params![kind, now_ms()],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Records the end of a run.
    pub fn finish_job(
        &mut self,
        id: i64,
        status: &str,
        counters: &impl Serialize,
        message: Option<&str>,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE job_runs SET finished_at = ?2, status = ?3, counters = ?4, message = ?5 WHERE id = ?1",
            params![id, now_ms(), status, json(counters), message],
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
            .ok_or_else(|| StoreError::Unknown(format!("there is no job run {id}")))
            .and_then(|(id, kind, started_at, finished_at, status, counters, message)| {
                Ok(JobRun {
                    id,
                    kind,
                    started_at,
                    finished_at,
                    status,
                    counters: from_json(&counters, "job counters")?,
                    message,
                })
            })
    }
}
