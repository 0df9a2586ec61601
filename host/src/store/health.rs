//! Plugin health: calls, failures, failures in a row, and when a plugin was disabled for
//! failing too often. Kept in the database so a disabled plugin stays disabled across runs
//! until an operator enables it.

use std::collections::BTreeMap;

use super::db::params;
use serde::Serialize;

use super::{Result, Store};

/// The health record of one plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Calls made.
    pub calls: u64,
    /// Calls that failed (trap, limit, bad answer).
    pub failures: u64,
    /// Failed calls since the last successful one.
    pub consecutive_failures: u32,
    /// The last failure.
    pub last_error: Option<String>,
    /// When it was disabled (Unix ms); none while enabled.
    #[serde(with = "crate::model::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub disabled_at: Option<i64>,
    /// When it was last called (Unix ms).
    #[serde(with = "crate::model::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_call_at: Option<i64>,
}

impl Store {
    /// Every plugin's health, by name.
    pub fn health(&self) -> Result<BTreeMap<String, Health>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT name, calls, failures, consecutive_failures, last_error, disabled_at, last_call_at FROM plugin_health",
        )?;
        let rows = stmt.query_map((), |r| {
            Ok((
                r.get::<_, String>(0)?,
                Health {
                    calls: r.get::<_, i64>(1)?.try_into().unwrap_or_default(),
                    failures: r.get::<_, i64>(2)?.try_into().unwrap_or_default(),
                    consecutive_failures: r.get(3)?,
                    last_error: r.get(4)?,
                    disabled_at: r.get(5)?,
                    last_call_at: r.get(6)?,
                },
            ))
        })?;
        rows.collect::<Result<_, _>>()
    }

    /// Writes a plugin's health.
    pub fn save_health(&mut self, name: &str, health: &Health) -> Result<()> {
        self.conn.execute(
            "INSERT INTO plugin_health (name, calls, failures, consecutive_failures, last_error, disabled_at, last_call_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (name) DO UPDATE SET calls = excluded.calls, failures = excluded.failures,
                consecutive_failures = excluded.consecutive_failures, last_error = excluded.last_error,
                disabled_at = excluded.disabled_at, last_call_at = excluded.last_call_at",
            params![
                name,
                i64::try_from(health.calls).unwrap_or(i64::MAX),
                i64::try_from(health.failures).unwrap_or(i64::MAX),
                health.consecutive_failures,
                health.last_error,
                health.disabled_at,
                health.last_call_at
            ],
        )?;
        Ok(())
    }
}
