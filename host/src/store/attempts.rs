//! Fulfilment attempts, recorded before the connector is called, so that a crash between the
//! call and its outcome is seen on the next run and the order (still Pending) is sent again,
//! with the same idempotency key, never forgotten and never written twice by a connector that
//! honours the key.

use super::db::params;

use super::{Result, Store};

/// One fulfilment attempt of an order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Attempt {
    /// When the order was about to be sent, Unix ms.
    #[serde(with = "crate::model::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub started_at: i64,
    /// When its outcome was recorded; none while open (or cut short by a crash).
    #[serde(with = "crate::model::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<i64>,
    /// The event that ended it (`connector-ok`, ...), `interrupted` or `not-sent`.
    pub outcome: Option<String>,
}

impl Store {
    /// Records an attempt for each order, about to be sent through `connection` by the worker
    /// holding `unit`.
    pub fn start_attempts(
        &mut self,
        orders: &[i64],
        connection: &str,
        job_run: Option<i64>,
        unit: Option<i64>,
    ) -> Result<()> {
        let now = self.clock.now_ms();
        let tx = self.write_tx()?;
        for order in orders {
            tx.prepare_cached(
                "INSERT INTO order_attempts (order_id, job_run, connection, started_at, unit) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![order, job_run, connection, now, unit])?;
            tx.prepare_cached("UPDATE orders SET attempts = attempts + 1 WHERE id = ?1")?.execute([order])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Attempts of an order, oldest first.
    pub fn attempts(&self, order: i64) -> Result<Vec<Attempt>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT started_at, finished_at, outcome FROM order_attempts WHERE order_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([order], |r| {
            Ok(Attempt { started_at: r.get(0)?, finished_at: r.get(1)?, outcome: r.get(2)? })
        })?;
        rows.collect::<Result<_, _>>()
    }
}

impl Store {
    /// Closes the open attempts of orders that were not sent after all (their plugin failed on
    /// the whole batch, or was disabled): they stay Pending.
    pub fn finish_attempts(&mut self, orders: &[i64], outcome: &str) -> Result<()> {
        let now = self.clock.now_ms();
        let tx = self.write_tx()?;
        for order in orders {
            tx.prepare_cached(
                "UPDATE order_attempts SET finished_at = ?2, outcome = ?3 WHERE order_id = ?1 AND finished_at IS NULL",
            )?
            .execute(params![order, now, outcome])?;
        }
        tx.commit()?;
        Ok(())
    }
}
