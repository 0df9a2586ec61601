//! Orders: creation, state changes (each with its history row, in one transaction), queries.

use std::collections::BTreeMap;

use super::db::{Db, OptionalExtension, Row, Value, params, params_from_iter};
use serde::Serialize;

use super::{Result, Store, StoreError, from_json, json};
use crate::machine::{self, Event, NEW};
use crate::model::{Change, ChangeKind, HistoryEntry, Order, ProvisioningState};

/// An order to create, with the event that decides its first state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    /// Its id, from [`Store::allocate_order_ids`].
    pub id: i64,
    /// The owning identity's row id.
    pub identity_id: i64,
    /// The resource type.
    pub resource_type: String,
    /// The resource's id in the managed system, when known.
    pub resource_id: Option<String>,
    /// What to write.
    pub change: Change,
    /// The assignment's end of validity, Unix ms.
    pub valid_until: Option<i64>,
    /// The creating event (no review needed, review needed, already matches...).
    pub event: Event,
    /// The run whose threshold holds it from fulfilment, if any.
    pub held_run: Option<i64>,
    /// Why, in words (the rule's reason, the error...).
    pub reason: String,
    /// Who decided the first state: `job:compute`, `plugin:NAME`.
    pub actor: String,
}

/// A state change to apply to a stored order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The order.
    pub order: i64,
    /// What happened.
    pub event: Event,
    /// Why, in words.
    pub reason: String,
    /// The resource's id in the managed system, when this change taught it (a create).
    pub resource_id: Option<String>,
    /// For a transient connector error: when the order is due again (Unix ms).
    pub retry_at: Option<i64>,
}

impl Transition {
    /// A transition with no resource id and no retry time.
    pub fn new(order: i64, event: Event, reason: impl Into<String>) -> Transition {
        Transition { order, event, reason: reason.into(), resource_id: None, retry_at: None }
    }
}

/// Which orders to list.
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    /// Only these states.
    pub states: Vec<ProvisioningState>,
    /// Only these resource types.
    pub resource_types: Vec<String>,
    /// Only this owner's key.
    pub owner: Option<String>,
    /// Only orders whose validity ends at or before this time (Unix ms).
    pub valid_until_before: Option<i64>,
    /// Only orders last changed at or before this time (Unix ms).
    pub updated_before: Option<i64>,
    /// Only orders whose next attempt is due at or before this time (Unix ms).
    pub retry_due_before: Option<i64>,
    /// Only orders held (`Some(true)`) or not held (`Some(false)`) by a threshold.
    pub held: Option<bool>,
    /// Only orders held by this run.
    pub held_run: Option<i64>,
    /// Only orders of owners of these entity types.
    pub entity_types: Vec<String>,
    /// Only ids above this (for paging through in id order).
    pub after: Option<i64>,
    /// Only ids up to this (a fulfil unit's range).
    pub upto: Option<i64>,
    /// At most this many.
    pub limit: Option<usize>,
}

impl OrderFilter {
    /// The filter as SQL conditions (each starting with ` AND`) on `orders o`, `resource_types t`
    /// and (for the owner) `identities i`, and their values in order.
    fn conditions(&self) -> (String, Vec<Value>) {
        let mut sql = String::new();
        let mut values: Vec<Value> = Vec::new();
        let mut any_of = |sql: &mut String, column: &str, items: Vec<Value>| {
            if !items.is_empty() {
                sql.push_str(&format!(" AND {column} IN ({})", vec!["?"; items.len()].join(", ")));
                values.extend(items);
            }
        };
        any_of(&mut sql, "o.state", self.states.iter().map(|s| i64::from(s.number()).into()).collect());
        any_of(&mut sql, "o.resource_type", self.resource_types.iter().map(|r| r.clone().into()).collect());
        any_of(&mut sql, "t.entity_type", self.entity_types.iter().map(|e| e.clone().into()).collect());
        let mut compare = |sql: &mut String, condition: &str, value: Option<i64>| {
            if let Some(value) = value {
                sql.push_str(condition);
                values.push(value.into());
            }
        };
        compare(&mut sql, " AND o.valid_until <= ?", self.valid_until_before);
        compare(&mut sql, " AND o.updated_at <= ?", self.updated_before);
        compare(&mut sql, " AND o.next_attempt_at <= ?", self.retry_due_before);
        compare(&mut sql, " AND o.held_run = ?", self.held_run);
        compare(&mut sql, " AND o.id > ?", self.after);
        compare(&mut sql, " AND o.id <= ?", self.upto);
        match self.held {
            Some(true) => sql.push_str(" AND o.held_run IS NOT NULL"),
            Some(false) => sql.push_str(" AND o.held_run IS NULL"),
            None => {}
        }
        if let Some(owner) = &self.owner {
            sql.push_str(" AND i.key = ?");
            values.push(owner.clone().into());
        }
        (sql, values)
    }
}

/// Why an order was closed, by the event that closed it.
fn closed_by(event: Event) -> Option<&'static str> {
    match event {
        Event::Decline => Some("declined"),
        Event::RuleBlocks => Some("blocked"),
        Event::Superseded => Some("superseded"),
        Event::Cancel => Some("cancelled"),
        _ => None,
    }
}

/// Whether the event is the outcome of a fulfilment attempt (which it closes).
fn ends_attempt(event: Event) -> bool {
    matches!(event, Event::ConnectorOk | Event::ConnectorError | Event::HandOver)
}

const ORDER_COLUMNS: &str = "o.id, i.key, i.entity_type, o.resource_type, t.classification, o.resource_id,
    o.change_kind, o.change, o.state, o.closed, o.message, o.attempts, o.created_at, o.updated_at,
    o.next_attempt_at, o.held_run";

/// One history row to append.
struct HistoryRow<'a> {
    order: i64,
    at: i64,
    from: Option<ProvisioningState>,
    to: ProvisioningState,
    event: Event,
    actor: &'a str,
    reason: &'a str,
}

/// Appends a history row and, when the change leaves people something to do, queues the
/// notification in the same transaction: a notification is never lost, nor one sent for a
/// change that was rolled back.
fn insert_history(tx: &Db, row: HistoryRow<'_>) -> Result<()> {
    if let Some(kind) = machine::notification(row.from, row.to) {
        tx.prepare_cached(
            "INSERT INTO notification_queue (kind, order_id, reason, created_at) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![kind.name(), row.order, row.reason, row.at])?;
    }
    tx.prepare_cached(
        "INSERT INTO order_history (order_id, at, from_state, to_state, event, actor, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        row.order,
        row.at,
        row.from.map(ProvisioningState::number),
        row.to.number(),
        row.event.name(),
        row.actor,
        row.reason
    ])?;
    Ok(())
}

impl Store {
    fn order_from_row(&self, row: &Row<'_>) -> Result<Order> {
        let id: i64 = row.get(0)?;
        let kind: u8 = row.get(6)?;
        let change_text: String = row.get(7)?;
        let mut change: Change = from_json(&change_text, "order change")?;
        change.kind = ChangeKind::from_number(kind)
            .ok_or_else(|| StoreError::Corrupt(format!("order {id}: change kind {kind}")))?;
        let state: u8 = row.get(8)?;
        Ok(Order {
            id,
            idempotency_key: format!("{}-{id}", self.installation),
            owner: row.get(1)?,
            entity_type: row.get(2)?,
            resource_type: row.get(3)?,
            classification: row.get(4)?,
            resource_id: row.get(5)?,
            change,
            state: ProvisioningState::from_number(state)
                .ok_or_else(|| StoreError::Corrupt(format!("order {id}: state {state}")))?,
            closed: row.get(9)?,
            message: row.get(10)?,
            attempts: row.get(11)?,
            created_at: row.get(12)?,
            updated_at: row.get(13)?,
            next_attempt_at: row.get(14)?,
            held_run: row.get(15)?,
        })
    }

    /// Creates orders, each in the state the machine gives its creating event, with its first
    /// history row; all in one transaction.
    pub fn create_orders(&mut self, orders: &[NewOrder], job_run: Option<i64>) -> Result<()> {
        self.record_compute(&[], orders, "job:compute", job_run).map(|_| ())
    }

    /// Applies state changes in one transaction. Each is checked by the machine against the
    /// order's current state; a refused one leaves its order untouched and is reported in its
    /// slot of the result, the others are applied.
    pub fn apply(&mut self, transitions: &[Transition], actor: &str) -> Result<Vec<Result<ProvisioningState>>> {
        let now = self.clock.now_ms();
        let tx = self.write_tx()?;
        let results = apply_in(&tx, transitions, actor, now)?;
        tx.commit()?;
        Ok(results)
    }

    /// Applies state changes all or nothing: if the machine refuses any of them, none is
    /// applied and the refusals are returned (the inner error). For people's bulk actions,
    /// where half a decision would surprise.
    pub fn apply_all(
        &mut self,
        transitions: &[Transition],
        actor: &str,
    ) -> Result<std::result::Result<Vec<ProvisioningState>, Vec<StoreError>>> {
        let now = self.clock.now_ms();
        let tx = self.write_tx()?;
        let results = apply_in(&tx, transitions, actor, now)?;
        if results.iter().any(|r| r.is_err()) {
            // Dropping the transaction rolls it back.
            return Ok(Err(results.into_iter().filter_map(|r| r.err()).collect()));
        }
        tx.commit()?;
        Ok(Ok(results.into_iter().filter_map(|r| r.ok()).collect()))
    }

    /// What one compute step decided, in one transaction: the open orders it supersedes
    /// (by `actor`) and the orders it creates, so a crash never leaves a slot with both or
    /// neither half.
    pub fn record_compute(
        &mut self,
        supersede: &[Transition],
        create: &[NewOrder],
        actor: &str,
        job_run: Option<i64>,
    ) -> Result<Vec<Result<ProvisioningState>>> {
        let now = self.clock.now_ms();
        let tx = self.write_tx()?;
        let results = apply_in(&tx, supersede, actor, now)?;
        for order in create {
            let state =
                machine::apply(NEW, order.event).map_err(|refused| StoreError::Refused { order: order.id, refused })?;
            tx.prepare_cached(
                "INSERT INTO orders (id, identity_id, resource_type, change_kind, resource_id, change, fingerprint,
                    state, closed, message, valid_until, job_run, created_at, updated_at, held_run)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13, ?14)",
            )?
            .execute(params![
                order.id,
                order.identity_id,
                order.resource_type,
                order.change.kind.number(),
                order.resource_id,
                json(&order.change),
                order.change.fingerprint(),
                state.number(),
                closed_by(order.event),
                order.reason,
                order.valid_until,
                job_run,
                now,
                order.held_run,
            ])?;
            insert_history(
                &tx,
                HistoryRow {
                    order: order.id,
                    at: now,
                    from: None,
                    to: state,
                    event: order.event,
                    actor: &order.actor,
                    reason: &order.reason,
                },
            )?;
        }
        tx.commit()?;
        Ok(results)
    }

    /// One order.
    pub fn order(&self, id: i64) -> Result<Order> {
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders o JOIN identities i ON i.id = o.identity_id
             JOIN resource_types t ON t.name = o.resource_type WHERE o.id = ?1"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query([id])?;
        match rows.next()? {
            Some(row) => self.order_from_row(&row),
            None => Err(StoreError::NoSuchOrder(id)),
        }
    }

    /// Orders matching a filter, in id order.
    pub fn orders(&self, filter: &OrderFilter) -> Result<Vec<Order>> {
        let (conditions, mut values) = filter.conditions();
        let mut sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders o JOIN identities i ON i.id = o.identity_id
             JOIN resource_types t ON t.name = o.resource_type WHERE 1 = 1{conditions} ORDER BY o.id"
        );
        if let Some(limit) = filter.limit {
            sql.push_str(" LIMIT ?");
            values.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
        }
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params_from_iter(values))?;
        let mut orders = Vec::new();
        while let Some(row) = rows.next()? {
            orders.push(self.order_from_row(&row)?);
        }
        Ok(orders)
    }

    /// The ids of the orders a filter matches, in id order (its owner and entity types are
    /// ignored: only conditions on the orders themselves).
    pub fn order_ids(&self, filter: &OrderFilter) -> Result<Vec<i64>> {
        let filter = OrderFilter { owner: None, entity_types: Vec::new(), ..filter.clone() };
        let (conditions, mut values) = filter.conditions();
        let mut sql = format!("SELECT o.id FROM orders o WHERE 1 = 1{conditions} ORDER BY o.id");
        if let Some(limit) = filter.limit {
            sql.push_str(" LIMIT ?");
            values.push(i64::try_from(limit).unwrap_or(i64::MAX).into());
        }
        let mut stmt = self.conn.prepare_cached(&sql)?;
        stmt.query_map(params_from_iter(values), |r| r.get(0))?.collect::<Result<_, _>>()
    }

    /// How many orders match a filter (its `after` counts, its `limit` does not), by entity type.
    pub fn count_orders_by_entity_type(&self, filter: &OrderFilter) -> Result<BTreeMap<String, u64>> {
        let (conditions, values) = filter.conditions();
        // Count per resource type first, joining owners and resource types only when the filter
        // needs them: a count by state then reads the (state, resource_type) index alone.
        let mut joins = String::new();
        if filter.owner.is_some() {
            joins.push_str(" JOIN identities i ON i.id = o.identity_id");
        }
        if !filter.entity_types.is_empty() {
            joins.push_str(" JOIN resource_types t ON t.name = o.resource_type");
        }
        let sql = format!(
            "SELECT r.entity_type, CAST(SUM(counted.n) AS BIGINT) FROM (SELECT o.resource_type, COUNT(*) AS n FROM orders o{joins}
             WHERE 1 = 1{conditions} GROUP BY o.resource_type) counted
             JOIN resource_types r ON r.name = counted.resource_type GROUP BY r.entity_type"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params_from_iter(values), |row| Ok((row.get(0)?, row.get::<_, i64>(1)?)))?;
        let mut counts = BTreeMap::new();
        for row in rows {
            let (entity_type, count) = row?;
            counts.insert(entity_type, u64::try_from(count).unwrap_or(0));
        }
        Ok(counts)
    }

    /// An order's history, oldest first.
    pub fn history(&self, order: i64) -> Result<Vec<HistoryEntry>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT at, from_state, to_state, event, actor, reason FROM order_history WHERE order_id = ?1 ORDER BY id",
        )?;
        let mut rows = stmt.query([order])?;
        let mut entries = Vec::new();
        while let Some(row) = rows.next()? {
            let from: Option<u8> = row.get(1)?;
            let to: u8 = row.get(2)?;
            let state = |n: u8| {
                ProvisioningState::from_number(n).ok_or_else(|| StoreError::Corrupt(format!("history state {n}")))
            };
            entries.push(HistoryEntry {
                at: row.get(0)?,
                from: from.map(state).transpose()?,
                to: state(to)?,
                event: row.get(3)?,
                actor: row.get(4)?,
                reason: row.get(5)?,
            });
        }
        Ok(entries)
    }

    /// The row id of an order's owner (for matching it against synchronised resources).
    pub fn order_identity(&self, order: i64) -> Result<i64> {
        self.conn
            .query_row("SELECT identity_id FROM orders WHERE id = ?1", [order], |r| r.get(0))
            .optional()?
            .ok_or(StoreError::NoSuchOrder(order))
    }
}

/// Applies transitions inside a transaction (see [`Store::apply`]).
fn apply_in(tx: &Db, transitions: &[Transition], actor: &str, now: i64) -> Result<Vec<Result<ProvisioningState>>> {
    let mut results = Vec::with_capacity(transitions.len());
    for t in transitions {
        let current: Option<u8> = tx
            .prepare_cached("SELECT state FROM orders WHERE id = ?1")?
            .query_row([t.order], |r| r.get(0))
            .optional()?;
        let Some(current) = current else {
            results.push(Err(StoreError::NoSuchOrder(t.order)));
            continue;
        };
        let from = ProvisioningState::from_number(current)
            .ok_or_else(|| StoreError::Corrupt(format!("order {}: state {current}", t.order)))?;
        let to = match machine::apply(Some(from), t.event) {
            Ok(to) => to,
            Err(refused) => {
                results.push(Err(StoreError::Refused { order: t.order, refused }));
                continue;
            }
        };
        // An operator's retry starts a fresh retry budget; every change clears the retry time
        // unless it sets one; closing an order releases any hold.
        tx.prepare_cached(
            "UPDATE orders SET state = ?2, message = ?3, updated_at = ?4,
                closed = COALESCE(?5, closed),
                attempts = CASE WHEN ?6 THEN 0 ELSE attempts END,
                resource_id = COALESCE(?7, resource_id),
                next_attempt_at = ?8,
                held_run = CASE WHEN ?5 IS NULL THEN held_run ELSE NULL END
             WHERE id = ?1",
        )?
        .execute(params![
            t.order,
            to.number(),
            t.reason,
            now,
            closed_by(t.event),
            t.event == Event::Retry,
            t.resource_id,
            t.retry_at,
        ])?;
        if ends_attempt(t.event) {
            tx.prepare_cached(
                "UPDATE order_attempts SET finished_at = ?2, outcome = ?3 WHERE order_id = ?1 AND finished_at IS NULL",
            )?
            .execute(params![t.order, now, t.event.name()])?;
        }
        insert_history(
            tx,
            HistoryRow { order: t.order, at: now, from: Some(from), to, event: t.event, actor, reason: &t.reason },
        )?;
        results.push(Ok(to));
    }
    Ok(results)
}

/// One state change of one order, as the audit export gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AuditRow {
    /// The history row's id: increasing, so a reader can go on after the last one it has.
    pub id: i64,
    /// When (RFC 3339 in JSON).
    #[serde(with = "crate::model::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: i64,
    /// The order.
    pub order: i64,
    /// The owner's entity type.
    pub entity_type: String,
    /// The owner's key.
    pub owner: String,
    /// The resource type.
    pub resource_type: String,
    /// The state before; none when the order was created.
    pub from: Option<ProvisioningState>,
    /// The state after.
    pub to: ProvisioningState,
    /// The machine event.
    pub event: String,
    /// Who: `job:compute`, `plugin:NAME`, `user:LOGIN`.
    pub actor: String,
    /// Why, in words.
    pub reason: String,
}

impl Store {
    /// Up to `limit` order state changes at or after `since` and before `until` (Unix ms), with
    /// a history id above `after`, in id order. An export reads page after page, each a short
    /// read: memory stays flat however many rows there are, and no read holds a snapshot long.
    pub fn audit_page(&self, since: i64, until: i64, after: i64, limit: usize) -> Result<Vec<AuditRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT h.id, h.at, h.order_id, i.entity_type, i.key, o.resource_type, h.from_state, h.to_state,
                    h.event, h.actor, h.reason
             FROM order_history h JOIN orders o ON o.id = h.order_id JOIN identities i ON i.id = o.identity_id
             WHERE h.id > ?1 AND h.at >= ?2 AND h.at < ?3 ORDER BY h.id LIMIT ?4",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![after, since, until, limit])?;
        let state =
            |n: u8| ProvisioningState::from_number(n).ok_or_else(|| StoreError::Corrupt(format!("history state {n}")));
        let mut page = Vec::new();
        while let Some(row) = rows.next()? {
            let from: Option<u8> = row.get(6)?;
            page.push(AuditRow {
                id: row.get(0)?,
                at: row.get(1)?,
                order: row.get(2)?,
                entity_type: row.get(3)?,
                owner: row.get(4)?,
                resource_type: row.get(5)?,
                from: from.map(state).transpose()?,
                to: state(row.get(7)?)?,
                event: row.get(8)?,
                actor: row.get(9)?,
                reason: row.get(10)?,
            });
        }
        Ok(page)
    }
}
