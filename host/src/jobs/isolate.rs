//! Batch calls that survive a poisoned item: when a plugin fails a batch (a trap, a limit, a bad
//! answer), the batch is split in halves, level by level, until the items it fails on are
//! alone; the others get their results. A plugin that fails every part it is given is not
//! poisoned by an item but broken: after the first split fails too, the batch is given up
//! (its items wait) instead of costing a call per item.

use crate::host::Host;
use crate::plugins::{CallError, Plugin};

/// The fate of one item of a batch.
#[derive(Debug)]
pub(super) enum Item<R> {
    /// The plugin answered for it.
    Done(R),
    /// The plugin fails on this item alone (while it succeeded on others).
    Failed(CallError),
    /// Not answered: the plugin is disabled, or failed on the whole batch. The item waits.
    Skipped(String),
}

/// Calls `call` on `items` through plugin `name`, isolating the items it fails on. The
/// plugin's health records one call per batch: a success if it answered for any item.
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
pub(super) struct Isolated<R> {
    /// One per item, in order.
    pub items: Vec<Item<R>>,
    /// None when the plugin answered for any item; else its last error.
    pub failure: Option<String>,
}

/// Records a batch in the plugin's health (a failure if it answered for no item).
pub(super) fn record<R>(host: &mut Host, name: &str, batch: &Isolated<R>) {
    if let Err(e) = host.record(name, batch.failure.as_deref()) {
        tracing::error!(plugin = name, "cannot record the plugin's health: {e}");
    }
}

/// The calls of [`isolate`] without the host, so that they can run on another thread while
/// the host writes (see fulfil).
pub(super) fn isolate_calls<T, R>(
    plugin: &Plugin,
    items: &[T],
    call: impl Fn(&Plugin, &[T]) -> Result<Vec<R>, CallError>,
) -> Isolated<R> {
    let name = plugin.name.as_str();
    let mut results: Vec<Option<Item<R>>> = items.iter().map(|_| None).collect();
    let mut failing: Vec<(std::ops::Range<usize>, CallError)> = Vec::new();
    let mut level: Vec<std::ops::Range<usize>> = std::iter::once(0..items.len()).collect();
    let mut calls = 0usize;
    let mut any_success = false;
    let mut last_error = None;
    while !level.is_empty() {
        let mut next = Vec::new();
        for range in level {
            calls += 1;
            match call(plugin, &items[range.clone()]) {
                Ok(answers) => {
                    any_success = true;
                    for (slot, answer) in range.zip(answers) {
                        results[slot] = Some(Item::Done(answer));
                    }
                }
                Err(error) if range.len() == 1 => failing.push((range, error)),
                Err(error) => {
                    let middle = range.start + range.len() / 2;
                    next.push(range.start..middle);
                    next.push(middle..range.end);
                    last_error = Some(error);
                }
            }
        }
        // Nothing answered after the batch and its halves: the plugin is failing, not an item.
        if !any_success && calls >= 3 {
            for range in next.drain(..) {
                failing.push((range, last_error.clone().unwrap_or_else(|| unreachable_error(name))));
            }
        }
        level = next;
    }
    let last = failing.last().map(|(_, e)| e.to_string());
    for (range, error) in failing {
        for slot in range {
            results[slot] = Some(if any_success || items.len() == 1 {
                Item::Failed(error.clone())
            } else {
                Item::Skipped(format!("the plugin failed on the whole batch: {error}"))
            });
        }
    }
    let failure = if any_success { None } else { last };
    let items = results.into_iter().map(|r| r.unwrap_or_else(|| Item::Skipped("not answered".into()))).collect();
    Isolated { items, failure }
}

fn unreachable_error(name: &str) -> CallError {
    CallError::Invalid { plugin: name.to_string(), message: "failed without an error".into() }
}
