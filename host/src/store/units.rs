//! Work units: a job run is a plan of phases (its steps, in order), each phase a set of units
//! that any worker of any process may claim. The rules, which hold across threads, processes
//! and hosts on one database:
//!
//! - **One run at a time.** Starting a run while another is unfinished joins it when it is of
//!   the same kind, and is refused otherwise: two computes over one slot would create two
//!   orders.
//! - **A claim is a lease.** Claiming sets the unit's owner and expiry and increments its
//!   fencing token, in one immediate transaction (SQLite's writer lock), so two workers never
//!   both hold it. The worker renews the lease while it works ([`renew`], from a thread of its
//!   own); a claim past its expiry is taken for dead and may be claimed again.
//! - **Every write is fenced.** While a connection works on a unit, each of its write
//!   transactions first checks that the unit is still claimed under its token and unexpired
//!   (see [`Store::write_tx`]). A worker paused past its lease, or taken over, fails there and
//!   changes nothing. Its own work is redone by the next claimant, which is safe because every
//!   unit is idempotent: compute diffs desired against actual state (an order already created
//!   is seen), fulfil sends only Pending orders and re-sends an open attempt with its
//!   idempotency key, synchronise reads again.
//! - **Phases in order.** A phase's next begins, in one transaction that checks the phase is
//!   still current and has no open unit, once every unit is done; the last ends the run with
//!   the sum of its units' counters.
//! - **Per-connection concurrency.** A fulfil unit's claim also marks it `calling` (a batch in
//!   flight to its managed system) until the call returns; a claim is only granted while
//!   fewer than the connection's `concurrency` live units are calling, whoever holds them.
//! - **Per-connection pace.** A connection's stored pace (see `store::pace`) may lower that
//!   cap or pause the connection: its fulfil units are left out of the candidates (so that
//!   units of a paused connection never hide another's), and a pause past the
//!   `DEFER_AFTER_MS` horizon finishes its remaining fulfil units of the phase unworked, their
//!   orders still Pending for the next run.

use super::db::{Db, OptionalExtension, Row, params};
use serde::Serialize;

use super::pace::{self, BatchOutcome, DEFER_AFTER_MS};
use super::{Result, Store, StoreError, from_json, json};

/// A unit given up after this many claims: its work keeps failing or killing its workers.
pub const MAX_CLAIMS: i64 = 5;

/// What a unit does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnitKind {
    /// Read one resource type's managed system back and verify its Executed orders.
    Synchronise,
    /// Prepare one resource type's compute: validity windows, rule errors, thresholds; then
    /// split its identities into `Compute` units.
    ComputePlan,
    /// Compute one range of one resource type's identities.
    Compute,
    /// Prepare one connection's fulfilment: interrupted attempts, expired Transmitted orders,
    /// due retries; then split its Pending orders into `Fulfil` units.
    FulfilPlan,
    /// Fulfil one batch of one connection's Pending orders.
    Fulfil,
    /// Route and deliver the notifications the run queued.
    Notify,
}

impl UnitKind {
    /// The stored name.
    pub fn name(self) -> &'static str {
        match self {
            UnitKind::Synchronise => "synchronise",
            UnitKind::ComputePlan => "compute-plan",
            UnitKind::Compute => "compute",
            UnitKind::FulfilPlan => "fulfil-plan",
            UnitKind::Fulfil => "fulfil",
            UnitKind::Notify => "notify",
        }
    }

    fn from_name(name: &str) -> Result<UnitKind> {
        [
            UnitKind::Synchronise,
            UnitKind::ComputePlan,
            UnitKind::Compute,
            UnitKind::FulfilPlan,
            UnitKind::Fulfil,
            UnitKind::Notify,
        ]
        .into_iter()
        .find(|kind| kind.name() == name)
        .ok_or_else(|| StoreError::Corrupt(format!("work unit kind `{name}`")))
    }
}

/// A unit to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitSpec {
    /// What it does.
    pub kind: UnitKind,
    /// Its resource type or connection (empty for notify).
    pub target: String,
    /// An id range `(lo, hi]`, for compute (identities) and fulfil (orders).
    pub range: Option<(i64, i64)>,
    /// Compute: a threshold holds the type's new orders.
    pub held: bool,
    /// Synchronise: where the read goes on (none: from its first page).
    pub page: Option<ReadOn>,
}

impl UnitSpec {
    /// A unit over a whole target.
    pub fn new(kind: UnitKind, target: impl Into<String>) -> UnitSpec {
        UnitSpec { kind, target: target.into(), range: None, held: false, page: None }
    }
}

/// A synchronise unit that goes on with a read an earlier unit began: a read in pages is a
/// chain of units, each a few pages, so a worker that dies mid-read costs its pages, not the
/// read (the next claimant reads again from the unit's cursor; a page stored twice is the same).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOn {
    /// The read's stamp: every resource it saw carries it, and the last page removes the others.
    pub stamp: i64,
    /// The connector's cursor of the next page.
    pub cursor: String,
    /// A page had a resource whose id was unusable: this read removes nothing.
    pub partial: bool,
    /// Pages the read took so far (a connector that never ends is stopped at a bound).
    pub pages: i64,
}

/// A claimed unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// Its id.
    pub id: i64,
    /// Its run.
    pub run: i64,
    /// Its phase in the run's plan.
    pub phase: i64,
    /// What it does.
    pub kind: UnitKind,
    /// Its resource type or connection.
    pub target: String,
    /// Its id range `(lo, hi]`.
    pub range: Option<(i64, i64)>,
    /// Compute: a threshold holds the type's new orders.
    pub held: bool,
    /// Synchronise: where the read goes on.
    pub page: Option<ReadOn>,
    /// This claim's fencing token.
    pub fence: Fence,
    /// The unit was claimed before by a worker whose lease lapsed (killed, paused, stalled):
    /// its work may be half done.
    pub taken_over: bool,
}

/// A claim's fencing token: what every write for the unit checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    /// The unit.
    pub unit: i64,
    /// Its token under this claim.
    pub token: i64,
}

/// What a worker found when it asked for a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// A unit to work on.
    Unit(Box<Unit>),
    /// Nothing to claim now: other workers hold the phase's last units (or the connections'
    /// concurrency is taken).
    Wait,
    /// Nothing to claim before `until` (Unix ms): what is left of the phase are batches of
    /// paused connections, and no worker holds any unit of it.
    Paused {
        /// When the earliest pause ends.
        until: i64,
    },
    /// Every unit of the phase is done: the next phase may be planned.
    PhaseDone {
        /// The phase.
        phase: i64,
        /// The step it ran.
        step: String,
    },
    /// The run is over.
    Finished,
}

/// How starting a run went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// A new run, with its first phase's units.
    New(i64),
    /// An unfinished run of the same kind: this process works on it beside the others.
    Joined(i64),
    /// An unfinished run of another kind.
    Busy(Running),
}

/// An unfinished run, as another process sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Running {
    /// Its id.
    pub run: i64,
    /// Its kind.
    pub kind: String,
    /// When it started, Unix ms.
    #[serde(with = "crate::model::rfc3339")]
    pub started_at: i64,
    /// The step at work.
    pub step: String,
}

impl std::fmt::Display for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "run {} ({}, at its {} step, since {})",
            self.run,
            self.kind,
            self.step,
            crate::model::format_time(self.started_at)
        )
    }
}

/// A run's units, per phase, for progress and the run's page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PhaseProgress {
    /// The step.
    pub step: String,
    /// Units in it (so far: plan units add more).
    pub units: u64,
    /// Of those, done.
    pub done: u64,
    /// Of those, claimed now by a live worker.
    pub claimed: u64,
}

/// What a run's units did, summed by the caller.
#[derive(Debug, Clone, Default)]
pub struct UnitResults {
    /// Each done unit's counters.
    pub counters: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Their problems, in unit order.
    pub problems: Vec<String>,
    /// Their notes, in unit order.
    pub notes: Vec<String>,
    /// Units given up after [`MAX_CLAIMS`] claims.
    pub given_up: u64,
}

impl Store {
    /// Starts a run of `kind` with its plan (the steps, in order) and its first phase's units,
    /// or joins the unfinished run of the same kind; one immediate transaction.
    /// A new run writes `catalog`'s types first (in its transaction), so its workers, and
    /// any that join, read the starting host's.
    pub fn start_run(
        &mut self,
        kind: &str,
        plan: &[&str],
        first: &[UnitSpec],
        decides: &std::collections::BTreeMap<String, String>,
        catalog: Option<&crate::config::Config>,
    ) -> Result<Started> {
        let tx = self.conn.write_transaction()?;
        if let Some(running) = running(&tx)? {
            return Ok(if running.kind == kind { Started::Joined(running.run) } else { Started::Busy(running) });
        }
        if let Some(config) = catalog {
            super::write_catalog(&tx, config, true)?;
        }
        let now = self.clock.now_ms();
        let run: i64 = tx.query_row(
            "INSERT INTO job_runs (kind, started_at, status, plan, phase, decides)
             VALUES (?1, ?2, 'running', ?3, 0, ?4) RETURNING id",
            params![kind, now, json(&plan), json(decides)],
            |r| r.get(0),
        )?;
        insert_units(&tx, run, 0, first)?;
        tx.commit()?;
        Ok(Started::New(run))
    }

    /// What decided a run's orders as its starting host had it (none for a run started before
    /// hosts recorded it).
    pub fn run_decides(&self, run: i64) -> Result<Option<std::collections::BTreeMap<String, String>>> {
        let text: Option<String> = self
            .conn
            .query_row("SELECT decides FROM job_runs WHERE id = ?1", [run], |r| r.get(0))
            .optional()?
            .flatten();
        text.map(|t| super::from_json(&t, "what decides a run")).transpose()
    }

    /// The unfinished run, if any.
    pub fn running_run(&self) -> Result<Option<Running>> {
        running(&self.conn)
    }

    /// Claims a unit of `run`'s current phase for `owner` at `now` (Unix ms), leased for
    /// `lease_ms`; a fulfil unit only while its connection is not paused and has fewer than
    /// `concurrency(connection)` (or its paced allowance) batches in flight.
    pub fn claim_unit(
        &mut self,
        run: i64,
        owner: &str,
        lease_ms: i64,
        concurrency: &dyn Fn(&str) -> usize,
        now: i64,
    ) -> Result<Claim> {
        let tx = self.conn.write_transaction()?;
        let Some((status, phase, plan)) = tx
            .query_row("SELECT status, phase, plan FROM job_runs WHERE id = ?1", [run], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?))
            })
            .optional()?
        else {
            return Err(StoreError::NotFound(format!("there is no job run {run}")));
        };
        if status != "running" {
            return Ok(Claim::Finished);
        }
        let paces: std::collections::HashMap<String, pace::Pace> =
            pace::paces(&tx)?.into_iter().map(|p| (p.connection.clone(), p)).collect();
        for paused in paces.values().filter(|p| p.paused_until > now + DEFER_AFTER_MS) {
            defer(&tx, run, phase, paused, now)?;
        }
        let calling: std::collections::HashMap<String, usize> = tx
            .prepare_cached(
                "SELECT target, COUNT(*) FROM work_units
                 WHERE kind = 'fulfil' AND state = 'claimed' AND calling = 1 AND expires_at > ?1 GROUP BY target",
            )?
            .query_map([now], |r| Ok((r.get::<_, String>(0)?, usize::try_from(r.get::<_, i64>(1)?).unwrap_or(0))))?
            .collect::<Result<_, _>>()?;
        let cap = |target: &str| {
            let configured = concurrency(target);
            paces.get(target).map_or(configured, |p| p.cap(configured))
        };
        // Connections whose batches cannot go out now: left out of the candidates, so that
        // however many units they have, other connections' units are seen.
        let mut blocked: Vec<&str> =
            paces.values().filter(|p| p.paused_until > now).map(|p| p.connection.as_str()).collect();
        blocked.extend(calling.iter().filter(|(target, n)| **n >= cap(target)).map(|(target, _)| target.as_str()));
        let candidates = candidates(&tx, run, phase, now, &blocked)?;
        // Nothing to claim: the phase is done, or others hold (or wait to send) what is left.
        let nothing = |tx: super::db::Tx<'_>| -> Result<Claim> {
            // Counted without visiting the ready units: a blocked connection may have thousands.
            let ready: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM work_units WHERE run = ?1 AND phase = ?2 AND state = 'ready')",
                params![run, phase],
                |r| r.get(0),
            )?;
            let (claimed, live): (i64, i64) = tx.query_row(
                "SELECT COUNT(*), COUNT(*) FILTER (WHERE expires_at > ?3) FROM work_units
                 WHERE run = ?1 AND phase = ?2 AND state = 'claimed'",
                params![run, phase, now],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let open = i64::from(ready) + claimed;
            // What is left waits for a pause, and nobody works on anything that could change it.
            let paused_until: Option<i64> = if open > 0 && live == 0 {
                tx.query_row(
                    "SELECT MIN(p.paused_until) FROM connection_pace p
                     WHERE p.paused_until > ?3 AND EXISTS (
                        SELECT 1 FROM work_units u WHERE u.run = ?1 AND u.phase = ?2
                          AND u.state IN ('ready', 'claimed') AND u.target = p.connection AND u.kind = 'fulfil')",
                    params![run, phase, now],
                    |r| r.get(0),
                )?
            } else {
                None
            };
            tx.commit()?;
            let steps: Vec<String> = from_json(&plan, "job run plan")?;
            let step = steps.get(usize::try_from(phase).unwrap_or(usize::MAX)).cloned().unwrap_or_default();
            Ok(match (open, paused_until) {
                (0, _) => Claim::PhaseDone { phase, step },
                (_, Some(until)) => Claim::Paused { until },
                _ => Claim::Wait,
            })
        };
        if candidates.is_empty() {
            return nothing(tx);
        }
        let mut calling = calling;
        for Candidate { id, kind, target, range, held, taken_over, claims, page } in candidates {
            let kind = UnitKind::from_name(&kind)?;
            if claims >= MAX_CLAIMS {
                // Its work failed (or killed its worker) every time: given up, so the run ends.
                tracing::error!(unit = id, "work unit {} {target} given up after {claims} claims", kind.name());
                let problem = format!(
                    "{} {target}: given up after {claims} attempts (each failed or its worker died); what it covers waits for the next run",
                    kind.name()
                );
                tx.execute(
                    "UPDATE work_units SET state = 'given-up', owner = NULL, calling = 0, finished_at = ?2,
                        counters = '{}', problems = ?3, notes = '[]' WHERE id = ?1",
                    params![id, now, json(&[problem])],
                )?;
                continue;
            }
            let fulfil = kind == UnitKind::Fulfil;
            if fulfil {
                let limit = cap(&target);
                let in_flight = calling.entry(target.clone()).or_default();
                if *in_flight >= limit {
                    continue;
                }
                *in_flight += 1;
            }
            let token: i64 = tx.query_row(
                "UPDATE work_units SET state = 'claimed', owner = ?2, fence = fence + 1, expires_at = ?3,
                    claims = claims + 1, calling = ?4, started_at = coalesce(started_at, ?5)
                 WHERE id = ?1 RETURNING fence",
                params![id, owner, now + lease_ms, fulfil, now],
                |r| r.get(0),
            )?;
            tx.commit()?;
            return Ok(Claim::Unit(Box::new(Unit {
                id,
                run,
                phase,
                kind,
                target,
                range,
                held,
                page,
                fence: Fence { unit: id, token },
                taken_over,
            })));
        }
        // Every candidate waits for its connection's concurrency, or was given up.
        nothing(tx)
    }

    /// Marks a fulfil unit's batch no longer in flight (its call returned at `now`, Unix ms):
    /// another batch of the connection may go out while this one's outcomes are written; and
    /// applies what the batch's outcomes say to the connection's pace, in the same transaction.
    pub fn end_calling(&mut self, fence: Fence, batch: &BatchOutcome, now: i64) -> Result<()> {
        let tx = self.write_tx()?;
        let target: Option<String> = tx
            .query_row(
                "UPDATE work_units SET calling = 0 WHERE id = ?1 AND fence = ?2 RETURNING target",
                params![fence.unit, fence.token],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(target) = target {
            pace::record(&tx, &target, batch, now)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Records a unit done with what it did, and creates the units it planned (a plan unit's
    /// ranges) in the same phase, in one fenced transaction.
    pub fn finish_unit(
        &mut self,
        unit: &Unit,
        counters: &impl Serialize,
        problems: &[String],
        notes: &[String],
        spawn: &[UnitSpec],
    ) -> Result<()> {
        let now = self.clock.now_ms();
        let tx = self.write_tx()?;
        insert_units(&tx, unit.run, unit.phase, spawn)?;
        tx.execute(
            "UPDATE work_units SET state = 'done', calling = 0, finished_at = ?3, counters = ?4, problems = ?5, notes = ?6
             WHERE id = ?1 AND fence = ?2",
            params![unit.id, unit.fence.token, now, json(counters), json(&problems), json(&notes)],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Gives a unit back unfinished (its work failed on an error another try may not meet):
    /// any worker may claim it again, up to [`MAX_CLAIMS`] claims in all.
    pub fn release_unit(&mut self, fence: Fence) -> Result<()> {
        self.conn.execute(
            "UPDATE work_units SET state = 'ready', owner = NULL, calling = 0, expires_at = NULL
             WHERE id = ?1 AND fence = ?2 AND state = 'claimed'",
            params![fence.unit, fence.token],
        )?;
        Ok(())
    }

    /// Moves `run` from `phase` to the next with its units, or ends the run after its last
    /// phase with `status`; a no-op (false) when another worker did it first or a unit of the
    /// phase is open again.
    pub fn advance_phase(&mut self, run: i64, phase: i64, next: Option<&[UnitSpec]>, end: &RunEnd) -> Result<bool> {
        let tx = self.conn.write_transaction()?;
        let current: Option<(String, i64)> = tx
            .query_row("SELECT status, phase FROM job_runs WHERE id = ?1", [run], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let open: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM work_units WHERE run = ?1 AND phase = ?2 AND state IN ('ready', 'claimed'))",
            params![run, phase],
            |r| r.get(0),
        )?;
        if current != Some(("running".to_string(), phase)) || open {
            return Ok(false);
        }
        match next {
            Some(units) => {
                tx.execute("UPDATE job_runs SET phase = ?2 WHERE id = ?1", params![run, phase + 1])?;
                insert_units(&tx, run, phase + 1, units)?;
            }
            None => {
                tx.execute(
                    "UPDATE job_runs SET status = ?2, finished_at = ?3, counters = ?4, message = ?5 WHERE id = ?1",
                    params![run, end.status, self.clock.now_ms(), json(&end.counters), end.message],
                )?;
            }
        }
        tx.commit()?;
        Ok(true)
    }

    /// What the done units of `run` recorded, in unit order.
    pub fn unit_results(&self, run: i64) -> Result<UnitResults> {
        let mut results = UnitResults::default();
        let mut stmt = self.conn.prepare_cached(
            "SELECT counters, problems, notes, state FROM work_units
             WHERE run = ?1 AND state IN ('done', 'given-up') ORDER BY id",
        )?;
        let mut rows = stmt.query([run])?;
        while let Some(row) = rows.next()? {
            let (counters, problems, notes): (Option<String>, Option<String>, Option<String>) =
                (row.get(0)?, row.get(1)?, row.get(2)?);
            if row.get::<_, String>(3)? == "given-up" {
                results.given_up += 1;
            }
            results.counters.push(from_json(counters.as_deref().unwrap_or("{}"), "unit counters")?);
            for problem in from_json::<Vec<String>>(problems.as_deref().unwrap_or("[]"), "unit problems")? {
                if !results.problems.contains(&problem) {
                    results.problems.push(problem);
                }
            }
            results.notes.extend(from_json::<Vec<String>>(notes.as_deref().unwrap_or("[]"), "unit notes")?);
        }
        Ok(results)
    }

    /// How many orders `run` created, whichever workers created them: a unit taken over after
    /// its worker wrote its orders (and lost its lease before recording its counters) is redone
    /// by one that finds them made, so only the orders themselves count them exactly.
    pub fn orders_created_by(&self, run: i64) -> Result<u64> {
        let count: i64 = self.conn.query_row("SELECT COUNT(*) FROM orders WHERE job_run = ?1", [run], |r| r.get(0))?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// A run's units per phase of its plan.
    pub fn run_progress(&self, run: i64) -> Result<Vec<PhaseProgress>> {
        let plan: String = self
            .conn
            .query_row("SELECT plan FROM job_runs WHERE id = ?1", [run], |r| r.get(0))
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("there is no job run {run}")))?;
        let steps: Vec<String> = from_json(&plan, "job run plan")?;
        let mut phases: Vec<PhaseProgress> =
            steps.into_iter().map(|step| PhaseProgress { step, ..PhaseProgress::default() }).collect();
        let mut stmt = self.conn.prepare_cached(
            "SELECT phase, COUNT(*), COUNT(*) FILTER (WHERE state IN ('done', 'given-up')),
                COUNT(*) FILTER (WHERE state = 'claimed' AND expires_at > ?2)
             FROM work_units WHERE run = ?1 GROUP BY phase",
        )?;
        let mut rows = stmt.query(params![run, self.clock.now_ms()])?;
        while let Some(row) = rows.next()? {
            let phase: i64 = row.get(0)?;
            if let Some(p) = usize::try_from(phase).ok().and_then(|i| phases.get_mut(i)) {
                let count = |i: usize| -> Result<u64> {
                    Ok(u64::try_from(row.get::<_, Option<i64>>(i)?.unwrap_or(0)).unwrap_or(0))
                };
                (p.units, p.done, p.claimed) = (count(1)?, count(2)?, count(3)?);
            }
        }
        Ok(phases)
    }

    /// Per phase, the numeric counters of its done units summed by name (a run's live counters,
    /// step by step; what a unit has not finished is not in them yet).
    pub fn phase_counters(&self, run: i64) -> Result<Vec<(i64, serde_json::Map<String, serde_json::Value>)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT phase, counters FROM work_units
             WHERE run = ?1 AND state IN ('done', 'given-up') AND counters IS NOT NULL ORDER BY phase",
        )?;
        let mut rows = stmt.query([run])?;
        let mut phases: Vec<(i64, serde_json::Map<String, serde_json::Value>)> = Vec::new();
        while let Some(row) = rows.next()? {
            let phase: i64 = row.get(0)?;
            let counters: serde_json::Map<String, serde_json::Value> =
                from_json(&row.get::<_, String>(1)?, "unit counters")?;
            if phases.last().is_none_or(|(p, _)| *p != phase) {
                phases.push((phase, serde_json::Map::new()));
            }
            let Some((_, sum)) = phases.last_mut() else { continue };
            for (name, value) in counters {
                if let Some(n) = value.as_u64() {
                    let total = sum.get(&name).and_then(serde_json::Value::as_u64).unwrap_or(0);
                    sum.insert(name, (total + n).into());
                }
            }
        }
        Ok(phases)
    }

    /// Works on `fence`'s unit from now on: every write transaction checks it (none: no unit).
    pub fn set_fence(&mut self, fence: Option<Fence>) {
        self.fence = fence;
    }

    /// Open fulfilment attempts of `connection` whose unit no live worker holds: cut short by
    /// a crash or a kill. They are closed as `interrupted`; their orders, still Pending, go out
    /// again with the same idempotency key. Returns those orders.
    pub fn close_orphaned_attempts(&mut self, connection: &str) -> Result<Vec<i64>> {
        let now = self.clock.now_ms();
        let tx = self.write_tx()?;
        let orphaned = "a.finished_at IS NULL AND a.connection = ?1 AND NOT EXISTS (
                SELECT 1 FROM work_units u WHERE u.id = a.unit AND u.state = 'claimed' AND u.expires_at > ?2)";
        let orders: Vec<i64> = tx
            .prepare_cached(&format!(
                "SELECT DISTINCT a.order_id FROM order_attempts a WHERE {orphaned} ORDER BY a.order_id"
            ))?
            .query_map(params![connection, now], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        tx.execute(
            &format!("UPDATE order_attempts AS a SET finished_at = ?2, outcome = 'interrupted' WHERE {orphaned}"),
            params![connection, now],
        )?;
        tx.commit()?;
        Ok(orders)
    }

    /// Closes the open attempts of `unit` (taken over from a worker whose lease lapsed); returns
    /// their orders.
    pub fn close_unit_attempts(&mut self, unit: i64) -> Result<Vec<i64>> {
        let now = self.clock.now_ms();
        let tx = self.write_tx()?;
        let orders: Vec<i64> = tx
            .prepare_cached("SELECT DISTINCT order_id FROM order_attempts WHERE unit = ?1 AND finished_at IS NULL ORDER BY order_id")?
            .query_map([unit], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        tx.execute(
            "UPDATE order_attempts SET finished_at = ?2, outcome = 'interrupted' WHERE unit = ?1 AND finished_at IS NULL",
            params![unit, now],
        )?;
        tx.commit()?;
        Ok(orders)
    }
}

/// How many units a claim considers, first by id (the oldest work first).
const CANDIDATES: usize = 64;

/// The units of a phase a claim may take, oldest first: ready ones, and claimed ones whose lease
/// lapsed, but no fulfil unit of a `blocked` connection. Each (target, kind) of the ready units
/// is found by a skip over the index and read from it in id order, so a claim costs index
/// lookups, not a scan of the phase's units, however many there are or are blocked.
fn candidates(tx: &Db, run: i64, phase: i64, now: i64, blocked: &[&str]) -> Result<Vec<Candidate>> {
    const COLUMNS: &str = "id, kind, target, lo, hi, held, state, claims, cursor, stamp, partial, pages";
    let excluded = |kind: &str, target: &str| kind == UnitKind::Fulfil.name() && blocked.contains(&target);
    let groups: Vec<(String, String)> = tx
        .prepare_cached(
            // The targets, each the least one past the last; then each target's kinds the same way.
            "WITH RECURSIVE t(target) AS (
                SELECT MIN(target) FROM work_units WHERE run = ?1 AND phase = ?2 AND state = 'ready'
                UNION ALL
                SELECT (SELECT MIN(target) FROM work_units
                        WHERE run = ?1 AND phase = ?2 AND state = 'ready' AND target > t.target)
                FROM t WHERE t.target IS NOT NULL),
             g(target, kind) AS (
                SELECT target, (SELECT MIN(kind) FROM work_units u
                                WHERE u.run = ?1 AND u.phase = ?2 AND u.state = 'ready' AND u.target = t.target)
                FROM t WHERE t.target IS NOT NULL
                UNION ALL
                SELECT target, (SELECT MIN(kind) FROM work_units u
                                WHERE u.run = ?1 AND u.phase = ?2 AND u.state = 'ready' AND u.target = g.target
                                  AND u.kind > g.kind)
                FROM g WHERE g.kind IS NOT NULL)
             SELECT target, kind FROM g WHERE kind IS NOT NULL",
        )?
        .query_map(params![run, phase], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut found = Vec::new();
    let mut ready = tx.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM work_units
         WHERE run = ?1 AND phase = ?2 AND state = 'ready' AND target = ?3 AND kind = ?4 ORDER BY id LIMIT ?5"
    ))?;
    for (target, kind) in groups.iter().filter(|(target, kind)| !excluded(kind, target)) {
        let rows = ready.query_map(params![run, phase, target, kind, CANDIDATES as i64], candidate)?;
        found.extend(rows.collect::<Result<Vec<_>, _>>()?);
    }
    let mut lapsed = tx.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM work_units
         WHERE run = ?1 AND phase = ?2 AND state = 'claimed' AND expires_at <= ?3 ORDER BY id"
    ))?;
    for unit in lapsed.query_map(params![run, phase, now], candidate)? {
        let unit = unit?;
        if !excluded(&unit.kind, &unit.target) {
            found.push(unit);
        }
    }
    found.sort_by_key(|c| c.id);
    found.truncate(CANDIDATES);
    Ok(found)
}

fn candidate(r: &Row<'_>) -> Result<Candidate> {
    Ok(Candidate {
        id: r.get(0)?,
        kind: r.get(1)?,
        target: r.get(2)?,
        range: r.get::<_, Option<i64>>(3)?.zip(r.get::<_, Option<i64>>(4)?),
        held: r.get(5)?,
        taken_over: r.get::<_, String>(6)? == "claimed",
        claims: r.get(7)?,
        page: match (r.get::<_, Option<String>>(8)?, r.get::<_, Option<i64>>(9)?) {
            (Some(cursor), Some(stamp)) => Some(ReadOn { stamp, cursor, partial: r.get(10)?, pages: r.get(11)? }),
            _ => None,
        },
    })
}

/// A unit a claim may take.
struct Candidate {
    id: i64,
    kind: String,
    target: String,
    range: Option<(i64, i64)>,
    held: bool,
    /// Claimed before, its lease lapsed.
    taken_over: bool,
    claims: i64,
    page: Option<ReadOn>,
}

/// How a run ends (after its last phase).
#[derive(Debug, Clone, Default)]
pub struct RunEnd {
    /// `succeeded`, `threshold exceeded` or `failed`.
    pub status: String,
    /// The summed counters.
    pub counters: serde_json::Map<String, serde_json::Value>,
    /// Its problems, if any.
    pub message: Option<String>,
}

/// A connection of its own that renews leases ([`Store::renewer`]): the renewing thread's, so
/// that renewals never queue behind a worker's long transaction on its store.
pub struct Renewer {
    pub(super) conn: super::db::Db,
    pub(super) clock: std::sync::Arc<dyn crate::model::Clock>,
}

impl Renewer {
    /// Renews a unit's lease for `lease_ms`; false when the claim is no longer `fence`'s or
    /// already lapsed: a renewal after the expiry must not revive a unit another worker may be
    /// claiming.
    pub fn renew(&self, fence: Fence, lease_ms: i64) -> Result<bool> {
        let now = self.clock.now_ms();
        let renewed = self.conn.execute_alone(
            "UPDATE work_units SET expires_at = ?3 + ?4
             WHERE id = ?1 AND fence = ?2 AND state = 'claimed' AND expires_at > ?3",
            params![fence.unit, fence.token, now, lease_ms],
        )?;
        Ok(renewed == 1)
    }
}

/// Whether `fence` still holds its unit (claimed, unexpired at `now`), inside a write
/// transaction.
pub(super) fn holds(tx: &Db, fence: Fence, now: i64) -> Result<bool> {
    Ok(tx
        .query_row(
            "SELECT 1 FROM work_units WHERE id = ?1 AND fence = ?2 AND state = 'claimed' AND expires_at > ?3",
            params![fence.unit, fence.token, now],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Finishes, unworked, the fulfil units of the phase of a connection paused past the horizon:
/// their orders stay Pending for the next run; one of them says so.
fn defer(tx: &Db, run: i64, phase: i64, paused: &pace::Pace, now: i64) -> Result<()> {
    let units: Vec<i64> = tx
        .prepare_cached(
            "UPDATE work_units SET state = 'done', owner = NULL, calling = 0, finished_at = ?4,
                started_at = coalesce(started_at, ?4), counters = '{}', problems = '[]', notes = '[]'
             WHERE run = ?1 AND phase = ?2 AND kind = 'fulfil' AND target = ?3
               AND (state = 'ready' OR (state = 'claimed' AND expires_at <= ?4))
             RETURNING id",
        )?
        .query_map(params![run, phase, paused.connection, now], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if let Some(first) = units.iter().min() {
        let note = format!(
            "connection {} is paused until {} ({}): {} of its batches stay Pending for the next run",
            paused.connection,
            crate::model::format_time(paused.paused_until),
            paused.reason.as_deref().unwrap_or("slowed down"),
            units.len()
        );
        tracing::warn!(connection = %paused.connection, "{note}");
        tx.execute("UPDATE work_units SET notes = ?2 WHERE id = ?1", params![first, json(&[note])])?;
    }
    Ok(())
}

fn running(conn: &Db) -> Result<Option<Running>> {
    let found: Option<(i64, String, i64, String, i64)> = conn
        .query_row(
            "SELECT id, kind, started_at, plan, phase FROM job_runs WHERE status = 'running' ORDER BY id LIMIT 1",
            (),
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?;
    let Some((run, kind, started_at, plan, phase)) = found else { return Ok(None) };
    let steps: Vec<String> = from_json(&plan, "job run plan")?;
    let step = steps.get(usize::try_from(phase).unwrap_or(usize::MAX)).cloned().unwrap_or_default();
    Ok(Some(Running { run, kind, started_at, step }))
}

fn insert_units(tx: &Db, run: i64, phase: i64, units: &[UnitSpec]) -> Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO work_units (run, phase, kind, target, lo, hi, held, cursor, stamp, partial, pages)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    for unit in units {
        let (lo, hi) = unit.range.unzip();
        let page = unit.page.as_ref();
        stmt.execute(params![
            run,
            phase,
            unit.kind.name(),
            unit.target,
            lo,
            hi,
            unit.held,
            page.map(|p| &p.cursor),
            page.map(|p| p.stamp),
            page.is_some_and(|p| p.partial),
            page.map_or(0, |p| p.pages)
        ])?;
    }
    Ok(())
}

/// Whether a job run is unfinished.
pub(super) fn running_run_exists(conn: &Db) -> Result<bool> {
    Ok(running(conn)?.is_some())
}
