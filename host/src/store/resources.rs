//! Synchronised resources: the managed systems' actual state, replaced page by page as a
//! connector reads them.

use super::db::params;

use super::{Result, Store, from_json, json};
use crate::model::{Order, ProvisioningState, ResourceContent};
use crate::plugins::Resource;

impl Store {
    /// Stores one page of a resource type's synchronisation, stamped with the run's start
    /// time; owners are matched to identities of the resource type's entity type.
    pub fn upsert_resources(&mut self, resource_type: &str, resources: &[Resource], synced_at: i64) -> Result<()> {
        let tx = self.write_tx()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO resources (resource_type, id, owner, identity_id, content, synced_at)
                 VALUES (?1, ?2, ?3,
                    (SELECT i.id FROM identities i JOIN resource_types t ON t.entity_type = i.entity_type
                     WHERE t.name = ?1 AND i.key = ?3),
                    ?4, ?5)
                 ON CONFLICT (resource_type, id) DO UPDATE SET owner = excluded.owner,
                    identity_id = excluded.identity_id, content = excluded.content, synced_at = excluded.synced_at",
            )?;
            for r in resources {
                stmt.execute(params![resource_type, r.id, r.owner, json(&r.content), synced_at])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Marks the stored resources of a type that have one of `ids` or one of `owners` as seen by
    /// the run stamped `synced_at`, their content unchanged: a resource read back malformed keeps
    /// its last good state instead of being removed as unseen (and so re-created by compute).
    pub fn keep_resources(
        &mut self,
        resource_type: &str,
        ids: &[&str],
        owners: &[&str],
        synced_at: i64,
    ) -> Result<usize> {
        let tx = self.write_tx()?;
        let mut kept = 0;
        {
            let mut by_id = tx.prepare_cached(
                "UPDATE resources SET synced_at = ?3 WHERE resource_type = ?1 AND id = ?2 AND synced_at < ?3",
            )?;
            for id in ids {
                kept += by_id.execute(params![resource_type, id, synced_at])?;
            }
            // By the owner's identity, through `resources_by_owner`; an owner the host does not
            // know has no slot compute could take for empty.
            let mut by_owner = tx.prepare_cached(
                "UPDATE resources SET synced_at = ?3 WHERE resource_type = ?1 AND synced_at < ?3 AND identity_id =
                    (SELECT i.id FROM identities i JOIN resource_types t ON t.entity_type = i.entity_type
                     WHERE t.name = ?1 AND i.key = ?2)",
            )?;
            for owner in owners {
                kept += by_owner.execute(params![resource_type, owner, synced_at])?;
            }
        }
        tx.commit()?;
        Ok(kept)
    }

    /// A stamp for a new synchronisation of a resource type: the current time, but always
    /// above the previous run's stamp, so that "not seen by this run" is exact.
    pub fn next_sync_stamp(&self, resource_type: &str) -> Result<i64> {
        let last: Option<i64> = self.conn.query_row(
            "SELECT MAX(synced_at) FROM resources WHERE resource_type = ?1",
            [resource_type],
            |r| r.get(0),
        )?;
        Ok(self.clock.now_ms().max(last.map_or(i64::MIN, |l| l + 1)))
    }

    /// After a complete read: removes the resources of the type that the read did not see.
    pub fn remove_unseen_resources(&mut self, resource_type: &str, synced_at: i64) -> Result<usize> {
        let tx = self.write_tx()?;
        let removed = tx.execute(
            "DELETE FROM resources WHERE resource_type = ?1 AND synced_at < ?2",
            params![resource_type, synced_at],
        )?;
        tx.commit()?;
        Ok(removed)
    }

    /// Executed orders of a resource type with ids above `after`, each with the synchronised
    /// resource of its slot (none: absent), for verification.
    pub fn executed_with_actual(
        &self,
        resource_type: &str,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(Order, Option<ResourceContent>)>> {
        let orders = self.orders(&super::OrderFilter {
            states: vec![ProvisioningState::Executed],
            resource_types: vec![resource_type.to_string()],
            after: Some(after),
            limit: Some(limit),
            ..Default::default()
        })?;
        let mut stmt = self.conn.prepare_cached(
            // By owner through `resources_by_owner`: a join on the order let SQLite scan every
            // resource of the type for each order.
            "SELECT content FROM resources
             WHERE resource_type = ?2 AND identity_id = (SELECT identity_id FROM orders WHERE id = ?1)
             ORDER BY identity_id, id LIMIT 1",
        )?;
        let mut result = Vec::with_capacity(orders.len());
        for order in orders {
            let mut rows = stmt.query(params![order.id, resource_type])?;
            let actual = match rows.next()? {
                Some(row) => Some(from_json(&row.get::<_, String>(0)?, "resource content")?),
                None => None,
            };
            drop(rows);
            result.push((order, actual));
        }
        Ok(result)
    }

    /// How many synchronised resources a resource type has.
    pub fn resource_count(&self, resource_type: &str) -> Result<i64> {
        self.conn.query_row("SELECT COUNT(*) FROM resources WHERE resource_type = ?1", [resource_type], |r| r.get(0))
    }
}
