//! Compute: compare desired assignments with the synchronised state and with the open orders,
//! create one order per difference, and run each new order's review rule. Running it twice
//! creates nothing twice: a slot whose current order already asks for the same change (open,
//! or closed by a reviewer or rule) gets no new one.
//!
//! Thresholds: when a resource type has limits, a first pass counts the writes per change kind
//! (reading only); if one exceeds its limit, the run's orders of that type are created *held*
//! (not fulfilled until an operator resumes the run). A simulation runs the same code and
//! writes nothing.

use std::collections::BTreeMap;

use indicatif::ProgressBar;
use serde::Serialize;

use super::isolate::{Item, isolate};
use super::{COMPUTE_CHUNK, Counters, JobError, JobReport, REVIEW_BATCH};
use crate::host::Host;
use crate::machine::Event;
use crate::model::{Change, ChangeKind, Order, ProvisioningState};
use crate::plugins::Decision;
use crate::store::{NewOrder, OrderFilter, Slot, Transition, Unit, UnitKind, UnitSpec};

/// Runs compute alone, as a job run.
pub fn compute(host: &mut Host, progress: &ProgressBar) -> Result<JobReport, JobError> {
    super::work::run(host, super::Step::Compute, progress)
}

/// New orders of one change kind, by the first state their review rule gave them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct KindTally {
    /// Orders to write.
    pub orders: u64,
    /// Released to fulfilment.
    pub pending: u64,
    /// Held for a reviewer.
    pub awaiting_approval: u64,
    /// Refused by the rule.
    pub blocked: u64,
    /// The rule failed on them.
    pub rule_errors: u64,
}

/// A threshold a run exceeded for a resource type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Exceeded {
    /// Orders to write per change kind.
    pub counts: BTreeMap<ChangeKind, u64>,
    /// The effective limit per change kind that has one.
    pub limits: BTreeMap<ChangeKind, u64>,
}

/// What compute did, or would do, for one resource type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TypeTally {
    /// New orders to write, per change kind.
    pub changes: BTreeMap<ChangeKind, KindTally>,
    /// Orders recorded Verified at once (the system already matched).
    pub already_matching: u64,
    /// Orders recorded Inactive at once (their window was over).
    pub window_over: u64,
    /// Open orders superseded by a change of desired state.
    pub superseded: u64,
    /// Sent orders whose outcome a crash lost, seen carried out (Executed).
    pub recovered: u64,
    /// Open orders whose window ended before fulfilment (made Inactive).
    pub inactive: u64,
    /// Orders in Error evaluated again, by the state they go to.
    pub reevaluated: KindTally,
    /// The threshold the run exceeded, holding its orders of this type.
    pub exceeded: Option<Exceeded>,
    /// Per change kind with orders and a percent limit: whether the limit applied, and why
    /// not (too few known resources, a connection that cannot read).
    pub notes: Vec<String>,
}

impl TypeTally {
    fn add_to(&self, counters: &mut Counters) {
        for kind in self.changes.values() {
            counters.orders_created += kind.orders;
            counters.released += kind.pending;
            counters.awaiting_approval += kind.awaiting_approval;
            counters.blocked += kind.blocked;
            counters.rule_errors += kind.rule_errors;
            if self.exceeded.is_some() {
                counters.held += kind.orders;
            }
        }
        counters.orders_created += self.already_matching + self.window_over;
        counters.already_matching += self.already_matching;
        counters.window_over += self.window_over;
        counters.superseded += self.superseded;
        counters.recovered += self.recovered;
        counters.inactive += self.inactive;
        counters.released += self.reevaluated.pending;
        counters.awaiting_approval += self.reevaluated.awaiting_approval;
        counters.blocked += self.reevaluated.blocked;
        counters.rule_errors += self.reevaluated.rule_errors;
    }
}

fn tally_decision(tally: &mut KindTally, event: Event) {
    match event {
        Event::NoReviewNeeded => tally.pending += 1,
        Event::ReviewNeeded => tally.awaiting_approval += 1,
        Event::RuleBlocks => tally.blocked += 1,
        Event::RuleFailed => tally.rule_errors += 1,
        _ => {}
    }
}

/// What a simulation (`job run --dry-run`) found: per resource type, what compute would write.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Simulation {
    /// Per resource type.
    pub resource_types: BTreeMap<String, TypeTally>,
    /// Problems met (a review rule that failed, ...).
    pub problems: Vec<String>,
}

/// The plan unit of one resource type: validity windows, rules that failed before, thresholds
/// (a whole-type decision, so taken once, before any range is computed); then one compute unit
/// per range of `COMPUTE_CHUNK` identities, the last open-ended.
pub(super) fn plan_unit(
    host: &mut Host,
    unit: &Unit,
    report: &mut JobReport,
    spawn: &mut Vec<UnitSpec>,
) -> Result<(), JobError> {
    let resource_type = unit.target.as_str();
    if !host.config.resource_types.contains_key(resource_type) {
        return Ok(());
    }
    let mut tally = TypeTally::default();
    end_windows(host, resource_type, true, &mut tally)?;
    // Before the diff, so that orders this run creates in Error wait for the next run.
    reevaluate_errors(host, resource_type, true, &mut tally, &mut report.problems)?;
    let (exceeded, notes) = thresholds(host, resource_type)?;
    if let Some(exceeded) = &exceeded {
        host.store.record_hold(unit.run, resource_type, &exceeded.counts, &exceeded.limits)?;
        report.problems.push(format!(
            "threshold exceeded for {resource_type}: {}; its orders are held until `provision job resume {}` (or `cancel`)",
            describe(exceeded),
            unit.run
        ));
    }
    let mut lo = 0;
    for hi in host.store.identity_bounds(resource_type, COMPUTE_CHUNK)?.into_iter().chain([i64::MAX]) {
        spawn.push(UnitSpec {
            kind: UnitKind::Compute,
            target: resource_type.to_string(),
            range: Some((lo, hi)),
            held: exceeded.is_some(),
            page: None,
        });
        lo = hi;
    }
    tally.add_to(&mut report.counters);
    report.notes.extend(notes);
    Ok(())
}

/// A compute unit: the identities of one range of one resource type.
pub(super) fn range_unit(host: &mut Host, unit: &Unit, report: &mut JobReport) -> Result<(), JobError> {
    let resource_type = unit.target.as_str();
    let (Some((lo, hi)), true) = (unit.range, host.config.resource_types.contains_key(resource_type)) else {
        return Ok(());
    };
    let mut tally = TypeTally { exceeded: unit.held.then(Exceeded::default), ..TypeTally::default() };
    let held_run = unit.held.then_some(unit.run);
    let mut provisional = 0;
    let mut after = lo;
    loop {
        if host.stopping() {
            return Err(JobError::Stopped);
        }
        let slots = host.store.slots(resource_type, after, hi, COMPUTE_CHUNK)?;
        let Some(last) = slots.last() else { break };
        after = last.identity_id;
        compute_chunk(
            host,
            resource_type,
            &slots,
            Chunk { run: Some(unit.run), held_run, provisional: &mut provisional },
            &mut tally,
            &mut report.problems,
        )?;
    }
    tally.add_to(&mut report.counters);
    Ok(())
}

/// Runs compute, review rules and thresholds without writing anything: the host must have been
/// opened for a simulation (its store is read-only).
pub fn simulate(host: &mut Host, progress: &ProgressBar) -> Result<Simulation, JobError> {
    let mut simulation = Simulation::default();
    let resource_types: Vec<String> = host.config.resource_types.keys().cloned().collect();
    for resource_type in resource_types {
        let tally = compute_type(host, &resource_type, None, progress, &mut simulation.problems)?;
        simulation.resource_types.insert(resource_type, tally);
    }
    Ok(simulation)
}

/// `added 12 > 10` for each change kind over its limit.
pub fn describe(exceeded: &Exceeded) -> String {
    exceeded
        .counts
        .iter()
        .filter_map(|(kind, count)| {
            let limit = exceeded.limits.get(kind)?;
            (count > limit).then(|| format!("{kind} {count} > {limit}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Computes one resource type; writes only when `run` is given.
fn compute_type(
    host: &mut Host,
    resource_type: &str,
    run: Option<i64>,
    progress: &ProgressBar,
    problems: &mut Vec<String>,
) -> Result<TypeTally, JobError> {
    progress.set_message(format!("compute {resource_type}"));
    let mut tally = TypeTally::default();
    end_windows(host, resource_type, run.is_some(), &mut tally)?;
    // Before the diff, so that orders this run creates in Error wait for the next run.
    reevaluate_errors(host, resource_type, run.is_some(), &mut tally, problems)?;
    (tally.exceeded, tally.notes) = thresholds(host, resource_type)?;
    if let (Some(run), Some(exceeded)) = (run, &tally.exceeded) {
        host.store.record_hold(run, resource_type, &exceeded.counts, &exceeded.limits)?;
    }
    let held_run = run.filter(|_| tally.exceeded.is_some());
    let mut after = 0;
    let mut provisional = 0;
    loop {
        if host.stopping() {
            break;
        }
        let slots = host.store.slots(resource_type, after, i64::MAX, COMPUTE_CHUNK)?;
        let Some(last) = slots.last() else { break };
        after = last.identity_id;
        progress.inc(slots.len() as u64);
        compute_chunk(
            host,
            resource_type,
            &slots,
            Chunk { run, held_run, provisional: &mut provisional },
            &mut tally,
            problems,
        )?;
    }
    Ok(tally)
}

/// The first pass for thresholds: counts the writes per change kind (reading only). Also
/// says, per change kind with orders and a percent limit, whether that limit applied.
fn thresholds(host: &Host, resource_type: &str) -> Result<(Option<Exceeded>, Vec<String>), JobError> {
    let rt = &host.config.resource_types[resource_type];
    let thresholds = rt.thresholds;
    if !thresholds.any() {
        return Ok((None, Vec::new()));
    }
    // Resources are known only through synchronisation: without `read`, their count says
    // nothing about the managed system's size.
    let reads = host.connector(&rt.connection).is_some_and(|c| c.can_read());
    let known = match reads {
        true => Some(u64::try_from(host.store.resource_count(resource_type)?).unwrap_or_default()),
        false => None,
    };
    let now = host.now();
    let mut counts: BTreeMap<ChangeKind, u64> = BTreeMap::new();
    let mut after = 0;
    loop {
        let slots = host.store.slots(resource_type, after, i64::MAX, COMPUTE_CHUNK)?;
        let Some(last) = slots.last() else { break };
        after = last.identity_id;
        for slot in &slots {
            if let (_, Plan::Write(change)) = plan(slot, now) {
                *counts.entry(change.kind).or_default() += 1;
            }
        }
    }
    let limits: BTreeMap<ChangeKind, u64> = [ChangeKind::Added, ChangeKind::Modified, ChangeKind::Deleted]
        .into_iter()
        .filter_map(|kind| thresholds.limit(kind, known).map(|limit| (kind, limit)))
        .collect();
    let mut notes = Vec::new();
    for (kind, _) in counts.iter().filter(|(_, n)| **n > 0) {
        let percent = thresholds.of(*kind).percent;
        if percent <= 0.0 {
            continue;
        }
        let why = match known {
            None => format!(
                "not applied: connection {} cannot read its managed system, so its number of resources is unknown",
                rt.connection
            ),
            Some(n) if !thresholds.percent_applies(known) => {
                format!("not applied: {n} known resources (below min_known = {})", thresholds.min_known)
            }
            Some(n) => {
                let allows = (n as f64 * percent / 100.0).floor() as u64;
                format!("applied: {percent}% of {n} known resources allows {allows}")
            }
        };
        let note = format!("{resource_type}: {kind}_percent {why}");
        tracing::info!("{note}");
        notes.push(note);
    }
    let over = limits.iter().any(|(kind, limit)| counts.get(kind).copied().unwrap_or_default() > *limit);
    Ok((over.then_some(Exceeded { counts, limits }), notes))
}

/// Open orders of the resource type whose assignment's validity ended before they were
/// fulfilled become Inactive.
fn end_windows(host: &mut Host, resource_type: &str, write: bool, tally: &mut TypeTally) -> Result<(), JobError> {
    let ended = host.store.orders(&OrderFilter {
        states: vec![ProvisioningState::Pending, ProvisioningState::AwaitingApproval, ProvisioningState::Errored],
        resource_types: vec![resource_type.to_string()],
        valid_until_before: Some(host.now()),
        ..OrderFilter::default()
    })?;
    if !write {
        tally.inactive += ended.len() as u64;
        return Ok(());
    }
    let transitions: Vec<Transition> = ended
        .iter()
        .map(|o| Transition::new(o.id, Event::WindowEnded, "validity window ended before fulfilment"))
        .collect();
    let results = host.store.apply(&transitions, "job:compute")?;
    tally.inactive += results.iter().filter(|r| r.is_ok()).count() as u64;
    Ok(())
}

/// What compute decided for one slot.
enum Plan {
    /// Nothing to do.
    Keep,
    /// Record an order that needs no write (Verified or Inactive at once).
    Record(Event, Change),
    /// A new order to review and fulfil.
    Write(Change),
}

fn plan(slot: &Slot, now: i64) -> (Option<i64>, Plan) {
    let current = slot.order.as_ref();
    let open = current.filter(|o| o.state.is_open());
    // An assignment not yet started waits; one whose window is over is no longer desired.
    let desired = match &slot.desired {
        Some(a) if a.valid_from.is_some_and(|from| from > now) => return (None, Plan::Keep),
        Some(a) if a.valid_until.is_some_and(|until| until <= now) => {
            if slot.actual.is_none() {
                // Nothing to remove. Record the useless order as Inactive if it never had an
                // order, or if the order it had is still open (it is superseded); a slot whose
                // history is already closed stays as it is.
                let change = Change::between(None, Some(&a.content)).unwrap_or_else(Change::deletion);
                let plan = if current.is_none() || open.is_some() {
                    Plan::Record(Event::WindowAlreadyOver, change)
                } else {
                    Plan::Keep
                };
                return (open.map(|o| o.id), plan);
            }
            None
        }
        Some(a) => Some(&a.content),
        None => None,
    };
    let actual = slot.actual.as_ref().map(|(_, content)| content);
    match Change::between(actual, desired) {
        None => match (open, desired) {
            // The write is done and only waits to be seen by synchronisation.
            (Some(o), _) if o.state == ProvisioningState::Executed => (None, Plan::Keep),
            // The desired state moved back to what the system has: the open order is moot.
            (Some(o), _) => (Some(o.id), Plan::Keep),
            (None, Some(content)) if current.is_none() => {
                let change = Change::between(None, Some(content)).unwrap_or_else(Change::deletion);
                (None, Plan::Record(Event::AlreadyMatches, change))
            }
            (None, _) => (None, Plan::Keep),
        },
        Some(change) => {
            let fingerprint = change.fingerprint();
            let same = current.is_some_and(|o| o.fingerprint == fingerprint);
            match current {
                Some(o) if same && o.state.is_open() => (None, Plan::Keep),
                // Declined, blocked or made inactive: not again until the desired state changes.
                Some(o) if same && matches!(o.closed.as_deref(), Some("declined" | "blocked")) => (None, Plan::Keep),
                Some(o) if same && o.state == ProvisioningState::Inactive => (None, Plan::Keep),
                _ => (open.map(|o| o.id), Plan::Write(change)),
            }
        }
    }
}

/// Where a chunk's orders go.
struct Chunk<'a> {
    /// The run writing them; none in a simulation.
    run: Option<i64>,
    /// The run holding them, when a threshold was exceeded.
    held_run: Option<i64>,
    /// Ids for a simulation's orders (never stored).
    provisional: &'a mut i64,
}

/// How an open order the desired state no longer needs is closed. Usually superseded; but an
/// order that was sent (a Pending attempt whose outcome a crash lost: outcomes are written
/// while the connector works on the next batch) and whose change the managed system now shows
/// was carried out: it is recorded as such, so it is Verified rather than dropped, and not
/// sent again.
fn close_open_order(host: &Host, slot: &Slot, old: i64, plan: &Plan) -> Result<Transition, JobError> {
    let superseded = Transition::new(old, Event::Superseded, "the desired state changed");
    let sent = slot.order.as_ref().is_some_and(|o| o.state == ProvisioningState::Pending && o.attempts > 0);
    if !sent || !matches!(plan, Plan::Keep) {
        return Ok(superseded);
    }
    let order = host.store.order(old)?;
    let actual = slot.actual.as_ref();
    if !order.change.is_seen_in(actual.map(|(_, content)| content)) {
        return Ok(superseded);
    }
    Ok(Transition {
        resource_id: actual.map(|(id, _)| id.clone()),
        ..Transition::new(
            old,
            Event::ConnectorOk,
            "carried out before an interruption: its change is seen in the managed system",
        )
    })
}

fn compute_chunk(
    host: &mut Host,
    resource_type: &str,
    slots: &[Slot],
    chunk: Chunk<'_>,
    tally: &mut TypeTally,
    problems: &mut Vec<String>,
) -> Result<(), JobError> {
    let now = host.now();
    let mut supersede = Vec::new();
    let mut planned = Vec::new();
    for slot in slots {
        let (old, plan) = plan(slot, now);
        if let Some(old) = old {
            supersede.push(close_open_order(host, slot, old, &plan)?);
        }
        if !matches!(plan, Plan::Keep) {
            planned.push((slot, plan));
        }
    }
    if supersede.is_empty() && planned.is_empty() {
        return Ok(());
    }
    let first_id = match chunk.run {
        Some(_) => host.store.allocate_order_ids(planned.len())?,
        None => {
            *chunk.provisional -= planned.len() as i64;
            *chunk.provisional
        }
    };
    let rt = &host.config.resource_types[resource_type];
    let entity_type = rt.entity_type.clone();
    let classification = rt.classification.clone();
    let mut create: Vec<NewOrder> = Vec::with_capacity(planned.len());
    // The orders the rule decides on, with their position in `create`.
    let mut to_review: Vec<(usize, Order)> = Vec::new();
    for (offset, (slot, plan)) in planned.into_iter().enumerate() {
        let id = first_id + offset as i64;
        let (event, change, reason) = match plan {
            Plan::Record(Event::AlreadyMatches, change) => {
                tally.already_matching += 1;
                (Event::AlreadyMatches, change, "the managed system already matches the desired state".to_string())
            }
            Plan::Record(event, change) => {
                tally.window_over += 1;
                (event, change, "the assignment's validity window is over".to_string())
            }
            Plan::Write(change) => {
                tally.changes.entry(change.kind).or_default().orders += 1;
                (Event::NoReviewNeeded, change, String::new())
            }
            Plan::Keep => continue,
        };
        let resource_id = match change.kind {
            ChangeKind::Added => None,
            _ => slot.actual.as_ref().map(|(id, _)| id.clone()),
        };
        let valid_until = slot.desired.as_ref().and_then(|a| a.valid_until);
        let held_run = chunk.held_run.filter(|_| event == Event::NoReviewNeeded);
        if event == Event::NoReviewNeeded {
            let order = Order {
                id,
                idempotency_key: format!("{}-{id}", host.store.installation()),
                owner: slot.owner.clone(),
                entity_type: entity_type.clone(),
                resource_type: resource_type.to_string(),
                classification: classification.clone(),
                resource_id: resource_id.clone(),
                change: change.clone(),
                state: ProvisioningState::None,
                closed: None,
                message: None,
                attempts: 0,
                created_at: now,
                updated_at: now,
                next_attempt_at: None,
                held_run,
            };
            to_review.push((create.len(), order));
        }
        create.push(NewOrder {
            id,
            identity_id: slot.identity_id,
            resource_type: resource_type.to_string(),
            resource_id,
            change,
            valid_until,
            event,
            held_run,
            reason,
            actor: "job:compute".into(),
        });
    }

    // Review: the rule decides each new order's first state.
    let orders: Vec<Order> = to_review.iter().map(|(_, o)| o.clone()).collect();
    let decisions = review(host, resource_type, &orders, problems);
    for ((position, order), (event, reason, actor)) in to_review.iter().zip(decisions) {
        tally_decision(tally.changes.entry(order.change.kind).or_default(), event);
        let new = &mut create[*position];
        (new.event, new.reason, new.actor) = (event, reason, actor);
    }
    match chunk.run {
        Some(run) => {
            let results = host.store.record_compute(&supersede, &create, "job:compute", Some(run))?;
            for (t, result) in supersede.iter().zip(results) {
                match (t.event, result) {
                    (Event::ConnectorOk, Ok(_)) => tally.recovered += 1,
                    (_, Ok(_)) => tally.superseded += 1,
                    (_, Err(_)) => {}
                }
            }
        }
        None => {
            for t in &supersede {
                match t.event {
                    Event::ConnectorOk => tally.recovered += 1,
                    _ => tally.superseded += 1,
                }
            }
        }
    }
    Ok(())
}

/// Runs the resource type's review rule on orders, in batches, isolating orders it fails on:
/// per order (in order), the event that decides its state, the reason and the actor. Without
/// a rule, every order is released. An order over a data limit (only one made of desired
/// state stored before the limits can be) is not shown to the rule: its evaluation fails with
/// the limit, so it never reaches a connector either.
fn review(
    host: &mut Host,
    resource_type: &str,
    orders: &[Order],
    problems: &mut Vec<String>,
) -> Vec<(Event, String, String)> {
    let over: Vec<Option<String>> = orders.iter().map(|o| crate::limits::check_order(o).err()).collect();
    if over.iter().all(Option::is_none) {
        return review_within_limits(host, resource_type, orders, problems);
    }
    let within: Vec<Order> = orders.iter().zip(&over).filter(|(_, o)| o.is_none()).map(|(o, _)| o.clone()).collect();
    let mut decided = review_within_limits(host, resource_type, &within, problems).into_iter();
    let mut all = Vec::with_capacity(orders.len());
    for (order, over) in orders.iter().zip(over) {
        match over {
            Some(problem) => {
                let reason = format!("not evaluated, over a data limit: {problem}");
                tracing::warn!(resource_type, order = order.id, "{reason}");
                problems.push(format!("review of {resource_type}: order {}: {reason}", order.id));
                all.push((Event::RuleFailed, reason, "job:compute".to_string()));
            }
            None => {
                let Some(decision) = decided.next() else { break };
                all.push(decision);
            }
        }
    }
    all
}

/// [`review`] of orders within the data limits.
fn review_within_limits(
    host: &mut Host,
    resource_type: &str,
    orders: &[Order],
    problems: &mut Vec<String>,
) -> Vec<(Event, String, String)> {
    let Some(rule) = host.config.resource_types.get(resource_type).and_then(|rt| rt.review_rule.clone()) else {
        let reason = "no review rule for this resource type";
        return orders.iter().map(|_| (Event::NoReviewNeeded, reason.to_string(), "job:compute".to_string())).collect();
    };
    let actor = format!("plugin:{rule}");
    let mut decided = Vec::with_capacity(orders.len());
    for batch in orders.chunks(REVIEW_BATCH) {
        for item in isolate(host, &rule, batch, |plugin, orders| plugin.evaluate(orders)) {
            let (event, reason) = match item {
                Item::Done(Decision::NoReview) => (Event::NoReviewNeeded, "no review needed".to_string()),
                Item::Done(Decision::ReviewNeeded(reason)) => (Event::ReviewNeeded, reason),
                Item::Done(Decision::Blocked(reason)) => (Event::RuleBlocks, reason),
                Item::Failed(error) => (Event::RuleFailed, error.to_string()),
                Item::Skipped(why) => (Event::RuleFailed, why),
            };
            if event == Event::RuleFailed {
                let problem = format!("review of {resource_type}: {reason}");
                if !problems.contains(&problem) {
                    tracing::warn!(resource_type, "{reason}");
                    problems.push(problem);
                }
            }
            decided.push((event, reason, actor.clone()));
        }
    }
    decided
}

/// Orders of the resource type in Error (their rule failed before) are evaluated again, unless
/// the rule is disabled.
fn reevaluate_errors(
    host: &mut Host,
    resource_type: &str,
    write: bool,
    tally: &mut TypeTally,
    problems: &mut Vec<String>,
) -> Result<(), JobError> {
    let rule = host.config.resource_types.get(resource_type).and_then(|rt| rt.review_rule.clone());
    if let Some(failure) = rule.as_deref().and_then(|r| host.unavailable(r)) {
        let problem = format!("review of {resource_type}: {failure}");
        if !problems.contains(&problem) {
            problems.push(problem);
        }
        return Ok(());
    }
    let mut after = 0;
    loop {
        let orders = host.store.orders(&OrderFilter {
            states: vec![ProvisioningState::Error],
            resource_types: vec![resource_type.to_string()],
            after: Some(after),
            limit: Some(REVIEW_BATCH),
            ..OrderFilter::default()
        })?;
        let Some(last) = orders.last() else { return Ok(()) };
        after = last.id;
        let decisions = review(host, resource_type, &orders, problems);
        if !write {
            for (event, _, _) in &decisions {
                tally_decision(&mut tally.reevaluated, *event);
            }
            continue;
        }
        // One actor per write: the rule, or the host for an order over a data limit.
        let mut actors: Vec<&str> = decisions.iter().map(|(_, _, actor)| actor.as_str()).collect();
        actors.sort_unstable();
        actors.dedup();
        for actor in actors {
            let transitions: Vec<Transition> = orders
                .iter()
                .zip(&decisions)
                .filter(|(_, (_, _, by))| by == actor)
                .map(|(o, (event, reason, _))| Transition::new(o.id, *event, reason.clone()))
                .collect();
            let results = host.store.apply(&transitions, actor)?;
            for (t, result) in transitions.iter().zip(results) {
                if result.is_ok() {
                    tally_decision(&mut tally.reevaluated, t.event);
                }
            }
        }
    }
}
