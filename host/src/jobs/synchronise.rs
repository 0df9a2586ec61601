//! Synchronise: read each managed system back through its connector's `read`, store what it
//! has as the actual state, and mark Executed orders whose change is seen Verified. Drift (a
//! resource changed or removed behind the host's back) shows up at the next compute.

use indicatif::ProgressBar;

use super::work::Step;
use super::{JobError, JobReport, isolate};
use crate::host::Host;
use crate::machine::Event;
use crate::model::{Order, ResourceContent};
use crate::plugins::{Malformed, Resource};
use crate::store::{ReadOn, Transition, Unit, UnitKind, UnitSpec};

/// Pages one read may take before the host gives up on a connector that never ends.
const MAX_PAGES: i64 = 100_000;
/// Pages one unit reads before it hands the rest of the read to the next unit of its chain:
/// what a worker that dies mid-read costs, at most.
const PAGES_PER_UNIT: i64 = 20;
/// Executed orders verified per transaction.
const VERIFY_BATCH: usize = 1000;

/// Runs synchronise alone, as a job run.
pub fn synchronise(host: &mut Host, progress: &ProgressBar) -> Result<JobReport, JobError> {
    super::work::run(host, Step::Synchronise, progress)
}

/// How far a unit's read went.
enum Read {
    /// To its last page: every resource of the type is stored.
    Done,
    /// A next unit goes on from a cursor.
    More,
}

/// One unit: synchronises one resource type, or the next pages of its read (a chain of units,
/// [`PAGES_PER_UNIT`] pages each), then verifies its Executed orders after the last page.
pub(super) fn unit(
    host: &mut Host,
    unit: &Unit,
    report: &mut JobReport,
    spawn: &mut Vec<UnitSpec>,
    progress: &ProgressBar,
) -> Result<(), JobError> {
    let resource_type = unit.target.as_str();
    let Some(connection) = host.config.resource_types.get(resource_type).map(|rt| rt.connection.clone()) else {
        return Ok(());
    };
    let Some(connector) = host.connector(&connection) else { return Ok(()) };
    if !connector.can_read() {
        return Ok(());
    }
    let plugin = connector.name.clone();
    if let Some(failure) = host.unavailable(&plugin) {
        report.problems.push(format!("synchronise {resource_type}: {failure}"));
        return Ok(());
    }
    progress.set_message(format!("synchronise {resource_type}"));
    match read_pages(host, unit, &plugin, report, spawn, progress)? {
        Ok(Read::Done) => verify(host, resource_type, report),
        Ok(Read::More) => Ok(()),
        Err(problem) => {
            tracing::warn!(resource_type, "synchronisation failed: {problem}");
            report.problems.push(format!("synchronise {resource_type}: {problem}"));
            Ok(())
        }
    }
}

/// Reads the unit's pages, and hands the read on to a next unit if there are more; only a
/// complete read removes the resources it did not see. The inner error is a failed read, which
/// leaves the previous actual state in place.
///
/// A malformed resource (over a limit) fails alone: it is logged and reported, and the stored
/// resource of its id or owner keeps its last good state, marked seen, so that it is neither
/// removed nor taken for absent by compute; its owner's orders keep their state. One whose id
/// is unusable cannot be matched to anything stored, so that read removes nothing.
fn read_pages(
    host: &mut Host,
    unit: &Unit,
    plugin: &str,
    report: &mut JobReport,
    spawn: &mut Vec<UnitSpec>,
    progress: &ProgressBar,
) -> Result<Result<Read, String>, JobError> {
    let resource_type = unit.target.as_str();
    let (stamp, mut cursor, mut unidentified, before) = match &unit.page {
        Some(page) => (page.stamp, Some(page.cursor.clone()), page.partial, page.pages),
        None => (host.store.next_sync_stamp(resource_type)?, None, false, 0),
    };
    if before >= MAX_PAGES {
        return Ok(Err(format!("more than {MAX_PAGES} pages")));
    }
    let connector = match isolate::available(host, plugin) {
        Ok(connector) => connector.rated(host.rate_of_type(resource_type)),
        Err(why) => return Ok(Err(why)),
    };
    let mut unwritten = Unwritten::default();
    for _ in 0..PAGES_PER_UNIT {
        // The connector reads a page on a second thread while this one writes the page before.
        let (read, written) = std::thread::scope(|scope| {
            let read = scope.spawn(|| connector.read(resource_type, cursor.as_deref()));
            let written = store_page(host, resource_type, &unwritten, stamp, report, progress);
            (read.join(), written)
        });
        let read = read.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let error = read.as_ref().err().map(ToString::to_string);
        host.record(plugin, error.as_deref())?;
        written?;
        let page = match read {
            Ok(Ok(page)) => page,
            Ok(Err(error)) => return Ok(Err(format!("the connector could not read: {error}"))),
            Err(error) => return Ok(Err(error.to_string())),
        };
        for bad in &page.malformed {
            tracing::warn!(
                resource_type,
                plugin,
                resource = bad.id.as_deref().unwrap_or("(unusable)"),
                "a malformed resource is skipped; it keeps its last synchronised state: {}",
                bad.problem
            );
            let consequence = if bad.id.is_some() {
                "skipped; it keeps its last synchronised state and its orders theirs"
            } else {
                unidentified = true;
                "skipped; resources this read did not see are not removed"
            };
            report.problems.push(format!("synchronise {resource_type}: {bad}; {consequence}"));
        }
        unwritten = Unwritten { resources: page.resources, malformed: page.malformed };
        match page.next_cursor {
            Some(next) if Some(&next) == cursor.as_ref() => {
                return Ok(Err(format!("the connector returned the same cursor `{next}` twice")));
            }
            Some(next) => cursor = Some(next),
            None => {
                store_page(host, resource_type, &unwritten, stamp, report, progress)?;
                if !unidentified {
                    host.store.remove_unseen_resources(resource_type, stamp)?;
                }
                return Ok(Ok(Read::Done));
            }
        }
    }
    // More pages: this unit's last is stored, and the next unit of the chain goes on.
    store_page(host, resource_type, &unwritten, stamp, report, progress)?;
    let Some(cursor) = cursor else { return Ok(Ok(Read::Done)) };
    let mut next = UnitSpec::new(UnitKind::Synchronise, resource_type);
    next.page = Some(ReadOn { stamp, cursor, partial: unidentified, pages: before + PAGES_PER_UNIT });
    spawn.push(next);
    Ok(Ok(Read::More))
}

/// A page read but not yet written.
#[derive(Default)]
struct Unwritten {
    resources: Vec<Resource>,
    malformed: Vec<Malformed>,
}

fn store_page(
    host: &mut Host,
    resource_type: &str,
    page: &Unwritten,
    stamp: i64,
    report: &mut JobReport,
    progress: &ProgressBar,
) -> Result<(), JobError> {
    if !page.malformed.is_empty() {
        let ids: Vec<&str> = page.malformed.iter().filter_map(|m| m.id.as_deref()).collect();
        let owners: Vec<&str> = page.malformed.iter().filter_map(|m| m.owner.as_deref()).collect();
        host.store.keep_resources(resource_type, &ids, &owners, stamp)?;
    }
    let resources = &page.resources;
    if resources.is_empty() {
        return Ok(());
    }
    host.store.upsert_resources(resource_type, resources, stamp)?;
    report.counters.resources_read += resources.len() as u64;
    progress.inc(resources.len() as u64);
    Ok(())
}

/// Executed orders whose change is seen in the synchronised resources become Verified. A
/// read-only connection reads (and decodes) the next batch on a second thread while this one
/// writes the batch before; an in-memory database reads and writes in turn.
fn verify(host: &mut Host, resource_type: &str, report: &mut JobReport) -> Result<(), JobError> {
    let Some(reader) = host.store.reader()? else {
        let mut after = 0;
        loop {
            let executed = host.store.executed_with_actual(resource_type, after, VERIFY_BATCH)?;
            let Some((last, _)) = executed.last() else { return Ok(()) };
            after = last.id;
            verify_batch(host, &executed, report)?;
        }
    };
    std::thread::scope(|scope| {
        // One batch ahead: the reader never runs further than the batch being written.
        let (batches, received) = std::sync::mpsc::sync_channel(0);
        scope.spawn(move || {
            let mut after = 0;
            loop {
                let executed = reader.executed_with_actual(resource_type, after, VERIFY_BATCH);
                let more = match &executed {
                    Ok(executed) => executed.last().map(|(last, _)| after = last.id).is_some(),
                    Err(_) => false,
                };
                // The writer stopped (an error): nothing more to read.
                if batches.send(executed).is_err() || !more {
                    return;
                }
            }
        });
        for executed in received {
            let executed = executed?;
            if executed.is_empty() {
                break;
            }
            verify_batch(host, &executed, report)?;
        }
        Ok(())
    })
}

fn verify_batch(
    host: &mut Host,
    executed: &[(Order, Option<ResourceContent>)],
    report: &mut JobReport,
) -> Result<(), JobError> {
    let seen: Vec<Transition> = executed
        .iter()
        .filter(|(order, actual)| order.change.is_seen_in(actual.as_ref()))
        .map(|(order, _)| Transition::new(order.id, Event::Seen, "seen in the managed system"))
        .collect();
    let results = host.store.apply(&seen, "job:synchronise")?;
    report.counters.verified += results.iter().filter(|r| r.is_ok()).count() as u64;
    Ok(())
}
