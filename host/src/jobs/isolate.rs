//! Batch calls that survive poisoned items: when a plugin fails a batch (a trap, a limit, a bad
//! answer), every failing part is split in halves until the items it fails on are alone, so
//! `k` poisoned items in `n` cost about `2·k·log2(n)` calls and every other item gets its answer
//! in the same run.
//!
//! A failure counts against the plugin (towards `disable_after`) only when no call of the batch
//! succeeded: then the host cannot tell a broken plugin from a batch of nothing but poisoned
//! items, and the items wait. Items isolated as poisoned while others succeed are theirs alone.
//!
//! Waits are bounded too: each call ends at the plugin's time limit, and the isolation of one
//! batch stops starting calls once [`budget`] of them (`2·(1 + ⌈log2 n⌉)`, enough for two
//! orders that wait) have ended at the time limit; what it has not answered by then waits for
//! the next run. One order that sleeps in a batch of 100 costs at most 8 time limits (the batch,
//! then one half at each of 7 levels).

use std::ops::Range;

use crate::host::Host;
use crate::plugins::{CallError, Plugin};

/// The fate of one item of a batch.
#[derive(Debug)]
pub(crate) enum Item<R> {
    /// The plugin answered for it.
    Done(R),
    /// The plugin fails on this item alone (while it succeeded on others).
    Failed(CallError),
    /// Not answered: the plugin is disabled, failed every call, or the batch's time budget ran
    /// out before this item was isolated. The item waits.
    Skipped(String),
}

/// Calls `call` on `items` through plugin `name`, isolating the items it fails on. The
/// plugin's health records one call per batch: a failure only if no call succeeded.
pub(super) fn isolate<T, R>(
    host: &mut Host,
    name: &str,
    items: &[T],
    call: impl Fn(&Plugin, &[T]) -> Result<Vec<R>, CallError>,
) -> Vec<Item<R>> {
    let plugin = match available(host, name) {
        Ok(plugin) => plugin,
        Err(why) => return skipped(items, &why),
    };
    let batch = isolate_calls(&plugin, items, call);
    record(host, name, &batch);
    batch.items
}

/// The plugin to call, or why it cannot be (disabled, missing).
pub(super) fn available(host: &Host, name: &str) -> Result<std::sync::Arc<Plugin>, String> {
    if let Some(failure) = host.unavailable(name) {
        return Err(failure.to_string());
    }
    host.plugins.get(name).ok_or_else(|| crate::host::PluginFailure::Missing(name.to_string()).to_string())
}

/// Every item skipped, for one reason.
pub(super) fn skipped<T, R>(items: &[T], why: &str) -> Vec<Item<R>> {
    items.iter().map(|_| Item::Skipped(why.to_string())).collect()
}

/// A batch's answers, and how the plugin's health should record it.
#[derive(Debug)]
pub(crate) struct Isolated<R> {
    /// One per item, in order.
    pub items: Vec<Item<R>>,
    /// None when the plugin answered for any item; else its last error.
    pub failure: Option<String>,
    /// Calls made.
    pub calls: usize,
}

/// Records a batch in the plugin's health (a failure if it answered for no item).
pub(super) fn record<R>(host: &mut Host, name: &str, batch: &Isolated<R>) {
    if let Err(e) = host.record(name, batch.failure.as_deref()) {
        tracing::error!(plugin = name, "cannot record the plugin's health: {e}");
    }
}

/// How many calls of a batch of `n` may end at the time limit before its isolation stops:
/// enough for the calls that fail on the way to two poisoned items (`1 + ⌈log2 n⌉` each).
/// Counting time limits, not wall time, keeps the bound exact on a loaded machine.
pub(crate) fn budget(n: usize) -> usize {
    let levels = (usize::BITS - n.saturating_sub(1).leading_zeros()) as usize;
    2 * (1 + levels)
}

/// The calls of [`isolate`] without the host, so that they can run on another thread while
/// the host writes (see fulfil).
pub(super) fn isolate_calls<T, R>(
    plugin: &Plugin,
    items: &[T],
    call: impl Fn(&Plugin, &[T]) -> Result<Vec<R>, CallError>,
) -> Isolated<R> {
    let batch = bisect(items, budget(items.len()), |part| call(plugin, part));
    if batch.calls > 1 {
        let failed = batch.items.iter().filter(|i| matches!(i, Item::Failed(_))).count();
        tracing::info!(plugin = %plugin.name, items = items.len(), failed, calls = batch.calls, "isolated the orders a batch failed on");
    }
    batch
}

/// Bisects failing parts of `items` level by level until each failing item is alone, or
/// `budget` calls have ended at the time limit.
pub(crate) fn bisect<T, R>(
    items: &[T],
    budget: usize,
    call: impl Fn(&[T]) -> Result<Vec<R>, CallError>,
) -> Isolated<R> {
    let mut timed_out = 0usize;
    let mut results: Vec<Option<Item<R>>> = items.iter().map(|_| None).collect();
    let mut alone: Vec<(usize, CallError)> = Vec::new();
    let mut level: Vec<Range<usize>> = Vec::new();
    if !items.is_empty() {
        level.push(0..items.len());
    }
    let mut calls = 0usize;
    let mut any_success = false;
    let mut last_error: Option<CallError> = None;
    let mut out_of_time: Vec<Range<usize>> = Vec::new();
    while !level.is_empty() {
        let mut next = Vec::new();
        for range in level {
            if timed_out >= budget {
                out_of_time.push(range);
                continue;
            }
            calls += 1;
            let result = call(&items[range.clone()]);
            if matches!(result, Err(CallError::TimeLimit { .. })) {
                timed_out += 1;
            }
            match result {
                Ok(answers) => {
                    any_success = true;
                    for (slot, answer) in range.zip(answers) {
                        results[slot] = Some(Item::Done(answer));
                    }
                }
                Err(error) if range.len() == 1 => {
                    last_error = Some(error.clone());
                    alone.push((range.start, error));
                }
                Err(error) => {
                    let middle = range.start + range.len() / 2;
                    next.push(range.start..middle);
                    next.push(middle..range.end);
                    last_error = Some(error);
                }
            }
        }
        level = next;
    }
    let failure = (!any_success).then(|| last_error.as_ref().map(ToString::to_string)).flatten();
    for (slot, error) in alone {
        results[slot] = Some(if any_success {
            Item::Failed(error)
        } else {
            Item::Skipped(format!("the plugin failed on the whole batch: {error}"))
        });
    }
    if !out_of_time.is_empty() {
        let why = format!(
            "not isolated: {timed_out} calls of the batch ended at the time limit, the most one batch may spend{}; it waits for the next run",
            last_error.as_ref().map(|e| format!(" (last failure: {e})")).unwrap_or_default()
        );
        tracing::warn!("{why}");
        for slot in out_of_time.into_iter().flatten() {
            results[slot] = Some(Item::Skipped(why.clone()));
        }
    }
    let items = results.into_iter().map(|r| r.unwrap_or_else(|| Item::Skipped("not answered".into()))).collect();
    Isolated { items, failure, calls }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn poisoned(bad: &BTreeSet<usize>) -> impl Fn(&[usize]) -> Result<Vec<usize>, CallError> + '_ {
        move |part: &[usize]| match part.iter().find(|i| bad.contains(i)) {
            Some(i) => Err(CallError::Trap { plugin: "p".into(), message: format!("poisoned by {i}") }),
            None => Ok(part.iter().map(|i| i * 10).collect()),
        }
    }

    proptest! {
        /// Exactly the poisoned items fail, each with its own message; every other one is
        /// answered; k poisoned items in n cost at most 1 + 2·k·⌈log2 n⌉ calls; the plugin is
        /// blamed only when no call succeeded.
        #[test]
        fn every_poisoned_item_is_found(n in 1usize..300, picks in proptest::collection::vec(any::<prop::sample::Index>(), 0..12), all in any::<bool>()) {
            let bad: BTreeSet<usize> = if all { (0..n).collect() } else { picks.iter().map(|p| p.index(n)).collect() };
            let items: Vec<usize> = (0..n).collect();
            let batch = bisect(&items, usize::MAX, poisoned(&bad));
            let everything = bad.len() == n;
            for (i, item) in batch.items.iter().enumerate() {
                match item {
                    Item::Done(answer) => prop_assert!(!bad.contains(&i) && *answer == i * 10, "item {i}"),
                    Item::Failed(error) => {
                        prop_assert!(bad.contains(&i) && !everything, "item {i} failed: {error}");
                        prop_assert_eq!(error.to_string(), format!("plugin `p` trapped: poisoned by {i}"));
                    }
                    Item::Skipped(why) => {
                        prop_assert!(everything, "item {i} skipped: {why}");
                        prop_assert!(why.contains(&format!("poisoned by {i}")), "{}", why);
                    }
                }
            }
            prop_assert_eq!(batch.failure.is_some(), everything);
            let levels = (usize::BITS - n.saturating_sub(1).leading_zeros()) as usize;
            if !everything {
                prop_assert!(batch.calls <= 1 + 2 * bad.len() * levels, "{} calls for {} in {n}", batch.calls, bad.len());
            }
        }
    }

    fn wait(part: &[usize], waiting: &BTreeSet<usize>) -> Result<Vec<usize>, CallError> {
        if part.iter().any(|i| waiting.contains(i)) {
            return Err(CallError::TimeLimit { plugin: "p".into(), limit: std::time::Duration::from_secs(5) });
        }
        Ok(part.to_vec())
    }

    #[test]
    fn the_budget_bounds_a_batch_whose_calls_all_wait() {
        let items: Vec<usize> = (0..64).collect();
        let batch = bisect(&items, budget(64), |part| wait(part, &items.iter().copied().collect()));
        assert_eq!(batch.calls, budget(64), "it stops starting calls once the budget is spent");
        assert!(batch.failure.is_some());
        assert!(
            batch.items.iter().all(|i| matches!(i, Item::Skipped(why) if why.contains("most one batch may spend")))
        );
    }

    #[test]
    fn one_or_two_waiting_items_are_isolated_within_the_budget() {
        for waiting in [BTreeSet::from([37]), BTreeSet::from([0, 99]), BTreeSet::from([49, 50])] {
            let items: Vec<usize> = (0..100).collect();
            let batch = bisect(&items, budget(100), |part| wait(part, &waiting));
            for (i, item) in batch.items.iter().enumerate() {
                assert_eq!(matches!(item, Item::Failed(_)), waiting.contains(&i), "{waiting:?}: item {i}: {item:?}");
                assert_eq!(matches!(item, Item::Done(_)), !waiting.contains(&i), "{waiting:?}: item {i}");
            }
        }
    }

    #[test]
    fn budget_is_two_time_limits_per_level() {
        assert_eq!(budget(1), 2);
        assert_eq!(budget(2), 4);
        assert_eq!(budget(100), 16);
        assert_eq!(budget(500), 20);
        assert_eq!(budget(0), 2);
    }
}
