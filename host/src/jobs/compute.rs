//! Compute: compare desired assignments with the synchronised state and with the open orders,
//! create one order per difference, and run each new order's review rule. Running it twice
//! creates nothing twice: a slot whose current order already asks for the same change (open,
//! or closed by a reviewer or rule) gets no new one.

use indicatif::ProgressBar;

use super::{COMPUTE_CHUNK, Counters, JobError, JobReport, REVIEW_BATCH, single};
use crate::host::Host;
use crate::machine::Event;
use crate::model::{Change, ChangeKind, Order, ProvisioningState, now_ms};
use crate::plugins::Decision;
use crate::store::{NewOrder, OrderFilter, Slot, Transition};

/// Runs compute alone, as a job run.
pub fn compute(host: &mut Host, progress: &ProgressBar) -> Result<JobReport, JobError> {
    single(host, "compute", progress, run)
}

pub(super) fn run(host: &mut Host, report: &mut JobReport, progress: &ProgressBar) -> Result<(), JobError> {
    let resource_types: Vec<String> = host.config.resource_types.keys().cloned().collect();
    for resource_type in resource_types {
        progress.set_message(format!("compute {resource_type}"));
        end_windows(host, &resource_type, report)?;
        // Before the diff, so that orders this run creates in Error wait for the next run.
        reevaluate_errors(host, &resource_type, report)?;
        let mut after = 0;
        loop {
            let slots = host.store.slots(&resource_type, after, COMPUTE_CHUNK)?;
            let Some(last) = slots.last() else { break };
            after = last.identity_id;
            progress.inc(slots.len() as u64);
            compute_chunk(host, &resource_type, &slots, report)?;
        }
    }
    Ok(())
}

/// Open orders of the resource type whose assignment's validity ended before they were
/// fulfilled become Inactive.
fn end_windows(host: &mut Host, resource_type: &str, report: &mut JobReport) -> Result<(), JobError> {
    let ended = host.store.orders(&OrderFilter {
        states: vec![ProvisioningState::Pending, ProvisioningState::AwaitingApproval, ProvisioningState::Errored],
        resource_types: vec![resource_type.to_string()],
        valid_until_before: Some(now_ms()),
        ..OrderFilter::default()
    })?;
    let transitions: Vec<Transition> = ended
        .iter()
        .map(|o| Transition::new(o.id, Event::WindowEnded, "validity window ended before fulfilment"))
        .collect();
    let results = host.store.apply(&transitions, "job:compute")?;
    report.counters.inactive += results.iter().filter(|r| r.is_ok()).count() as u64;
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

fn compute_chunk(host: &mut Host, resource_type: &str, slots: &[Slot], report: &mut JobReport) -> Result<(), JobError> {
    let now = now_ms();
    let mut supersede = Vec::new();
    let mut planned = Vec::new();
    for slot in slots {
        let (old, plan) = plan(slot, now);
        if let Some(old) = old {
            supersede.push(Transition::new(old, Event::Superseded, "the desired state changed"));
        }
        if !matches!(plan, Plan::Keep) {
            planned.push((slot, plan));
        }
    }
    if supersede.is_empty() && planned.is_empty() {
        return Ok(());
    }
    let first_id = host.store.allocate_order_ids(planned.len())?;
    let rt = &host.config.resource_types[resource_type];
    let entity_type = rt.entity_type.clone();
    let classification = rt.classification.clone();
    let mut create: Vec<NewOrder> = Vec::with_capacity(planned.len());
    let mut to_review: Vec<Order> = Vec::new();
    for (offset, (slot, plan)) in planned.into_iter().enumerate() {
        let id = first_id + offset as i64;
        let (event, change, reason) = match plan {
            Plan::Record(Event::AlreadyMatches, change) => {
                (Event::AlreadyMatches, change, "the managed system already matches the desired state".to_string())
            }
            Plan::Record(event, change) => (event, change, "the assignment's validity window is over".to_string()),
            Plan::Write(change) => (Event::NoReviewNeeded, change, String::new()),
            Plan::Keep => continue,
        };
        let resource_id = match change.kind {
            ChangeKind::Added => None,
            _ => slot.actual.as_ref().map(|(id, _)| id.clone()),
        };
        let valid_until = slot.desired.as_ref().and_then(|a| a.valid_until);
        if event == Event::NoReviewNeeded {
            to_review.push(Order {
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
            });
        }
        create.push(NewOrder {
            id,
            identity_id: slot.identity_id,
            resource_type: resource_type.to_string(),
            resource_id,
            change,
            valid_until,
            event,
            reason,
            actor: "job:compute".into(),
        });
    }

    // Review: the rule decides each new order's first state.
    let decisions = review(host, resource_type, &to_review, &mut report.problems);
    for (id, (event, reason, actor)) in decisions {
        if let Some(order) = create.iter_mut().find(|o| o.id == id) {
            (order.event, order.reason, order.actor) = (event, reason, actor);
        }
    }
    for order in &create {
        count_creation(&mut report.counters, order.event);
    }
    let results = host.store.record_compute(&supersede, &create, "job:compute", Some(report.run))?;
    report.counters.superseded += results.iter().filter(|r| r.is_ok()).count() as u64;
    Ok(())
}

fn count_creation(counters: &mut Counters, event: Event) {
    counters.orders_created += 1;
    match event {
        Event::AlreadyMatches => counters.already_matching += 1,
        Event::WindowAlreadyOver => counters.window_over += 1,
        _ => count_decision(counters, event),
    }
}

fn count_decision(counters: &mut Counters, event: Event) {
    match event {
        Event::NoReviewNeeded => counters.released += 1,
        Event::ReviewNeeded => counters.awaiting_approval += 1,
        Event::RuleBlocks => counters.blocked += 1,
        Event::RuleFailed => counters.rule_errors += 1,
        _ => {}
    }
}

/// Runs the resource type's review rule on orders, in batches: per order id, the event that
/// decides its state, the reason and the actor. Without a rule, every order is released.
fn review(
    host: &Host,
    resource_type: &str,
    orders: &[Order],
    problems: &mut Vec<String>,
) -> Vec<(i64, (Event, String, String))> {
    let Some(rule) = host.review_rule(resource_type) else {
        let reason = "no review rule for this resource type";
        return orders
            .iter()
            .map(|o| (o.id, (Event::NoReviewNeeded, reason.to_string(), "job:compute".to_string())))
            .collect();
    };
    let actor = format!("plugin:{}", rule.name);
    let mut decided = Vec::with_capacity(orders.len());
    for batch in orders.chunks(REVIEW_BATCH) {
        match rule.evaluate(batch) {
            Ok(decisions) => {
                for (order, decision) in batch.iter().zip(decisions) {
                    let (event, reason) = match decision {
                        Decision::NoReview => (Event::NoReviewNeeded, "no review needed".to_string()),
                        Decision::ReviewNeeded(reason) => (Event::ReviewNeeded, reason),
                        Decision::Blocked(reason) => (Event::RuleBlocks, reason),
                    };
                    decided.push((order.id, (event, reason, actor.clone())));
                }
            }
            Err(error) => {
                let message = error.to_string();
                tracing::warn!(resource_type, "review rule failed on {} orders: {message}", batch.len());
                problems.push(format!("review of {resource_type}: {message}"));
                decided.extend(batch.iter().map(|o| (o.id, (Event::RuleFailed, message.clone(), actor.clone()))));
            }
        }
    }
    decided
}

/// Orders of the resource type in Error (their rule failed before) are evaluated again.
fn reevaluate_errors(host: &mut Host, resource_type: &str, report: &mut JobReport) -> Result<(), JobError> {
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
        let decisions = review(host, resource_type, &orders, &mut report.problems);
        let Some(actor) = decisions.first().map(|(_, (_, _, actor))| actor.clone()) else { continue };
        let transitions: Vec<Transition> =
            decisions.iter().map(|(id, (event, reason, _))| Transition::new(*id, *event, reason.clone())).collect();
        let results = host.store.apply(&transitions, &actor)?;
        for (t, result) in transitions.iter().zip(results) {
            if result.is_ok() {
                count_decision(&mut report.counters, t.event);
            }
        }
    }
}
