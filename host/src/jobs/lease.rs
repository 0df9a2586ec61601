//! Renewing the leases of the units this process's workers hold, from one thread with its own
//! database connection ([`Renewer`]), every third of the lease: a long plugin call or a slow batch never lets a
//! lease lapse. The thread lives and dies with the process, so it never keeps a dead worker's
//! unit alive; a paused process (SIGSTOP) pauses it too, and its units lapse.
//!
//! When a renewal finds a unit no longer its worker's (it lapsed and was taken over), it sets
//! that worker's `lease_lost`: the worker stops before its next chunk, and the store refuses
//! its writes in any case (`StoreError::LeaseLost`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::store::{Fence, Renewer};

/// The units held now, with their worker's lost flag.
type Held = Arc<Mutex<Vec<(Fence, Arc<AtomicBool>)>>>;

/// The renewing thread and what it renews; stopped when dropped.
pub(super) struct Leases {
    held: Held,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Leases {
    /// Starts renewing through `renewer` (none: an in-memory database, which no other process
    /// sees).
    pub(super) fn start(renewer: Option<Renewer>, lease: Duration) -> Leases {
        let held: Held = Arc::default();
        let Some(renewer) = renewer else { return Leases { held, stop: None, thread: None } };
        let (stop, stopped) = std::sync::mpsc::channel();
        let renewed = held.clone();
        let thread = std::thread::Builder::new()
            .name("lease-renewer".into())
            .spawn(move || renew_all(&renewer, lease, &renewed, &stopped))
            .map_err(|error| {
                // The workers' writes still check their leases: without renewals, a unit longer
                // than the lease is taken over and its writes refused, never doubled.
                tracing::error!("cannot start the lease renewer: {error}");
            })
            .ok();
        Leases { held, stop: Some(stop), thread }
    }

    /// Renews `fence` until [`Leases::drop_unit`]; returns the flag set if its lease is lost.
    /// The flag is this claim's own: a renewal of the worker's previous unit that was under way
    /// when that unit ended must not stop this one (it did, and a unit half done was redone).
    pub(super) fn hold(&self, fence: Fence) -> Arc<AtomicBool> {
        let lost = Arc::new(AtomicBool::new(false));
        self.held.lock().unwrap_or_else(|e| e.into_inner()).push((fence, lost.clone()));
        lost
    }

    /// Stops renewing `fence`.
    pub(super) fn drop_unit(&self, fence: Fence) {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).retain(|(held, _)| *held != fence);
    }
}

impl Drop for Leases {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn renew_all(renewer: &Renewer, lease: Duration, held: &Held, stopped: &Receiver<()>) {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 4);
    let every = lease / 3;
    loop {
        match stopped.recv_timeout(every) {
            Err(RecvTimeoutError::Timeout) => {
                let units: Vec<(Fence, Arc<AtomicBool>)> = held.lock().unwrap_or_else(|e| e.into_inner()).clone();
                renew_once(renewer, lease_ms, &units, held);
            }
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Renews `units` (what was held when the pass began). A unit that cannot be renewed is lost
/// only if it is still held: one that ended meanwhile (done, its claim over) was not taken over.
fn renew_once(renewer: &Renewer, lease_ms: i64, units: &[(Fence, Arc<AtomicBool>)], held: &Held) {
    for (fence, lost) in units {
        match renewer.renew(*fence, lease_ms) {
            Ok(true) => {}
            Ok(false) => {
                let still_held = held.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|(f, _)| f == fence);
                if still_held {
                    tracing::error!(
                        unit = fence.unit,
                        "this worker's lease on its unit lapsed and was taken over; it stops before its next chunk"
                    );
                    lost.store(true, Ordering::Relaxed);
                }
            }
            // A busy database: the next renewal tries again, well before the expiry.
            Err(error) => tracing::warn!(unit = fence.unit, "cannot renew a lease: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Claim, Started, Store, UnitKind, UnitSpec};

    const LEASE: i64 = 30_000;

    fn claim(store: &mut Store, run: i64) -> crate::store::Unit {
        match store.claim_unit(run, "w", LEASE, &|_| 1, store.now_ms()).unwrap() {
            Claim::Unit(unit) => *unit,
            other => panic!("nothing claimed: {other:?}"),
        }
    }

    #[test]
    fn a_renewal_of_a_unit_that_ended_meanwhile_stops_neither_it_nor_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("provision.db")).unwrap();
        let renewer = store.renewer().unwrap().unwrap();
        let units = [UnitSpec::new(UnitKind::Fulfil, "saas"), UnitSpec::new(UnitKind::Fulfil, "saas")];
        let Started::New(run) = store.start_run("fulfil", &["fulfil"], &units, &Default::default(), None).unwrap()
        else {
            panic!()
        };
        // The renewer thread's own loop never runs within this test (its period is an hour).
        let leases = Leases::start(None, Duration::from_secs(3600));
        let first = claim(&mut store, run);
        let first_lost = leases.hold(first.fence);
        // A renewal pass begins with the first unit held...
        let pass: Vec<(Fence, Arc<AtomicBool>)> = leases.held.lock().unwrap().clone();
        // ...while the worker finishes it and goes on to the next.
        store.set_fence(Some(first.fence));
        store.finish_unit(&first, &serde_json::json!({}), &[], &[], &[]).unwrap();
        leases.drop_unit(first.fence);
        let second = claim(&mut store, run);
        let second_lost = leases.hold(second.fence);
        renew_once(&renewer, LEASE, &pass, &leases.held);
        assert!(!second_lost.load(Ordering::Relaxed), "the next unit's claim is not lost");
        assert!(!first_lost.load(Ordering::Relaxed), "the first ended; it was not taken over");

        // A unit still held that cannot be renewed is lost (its lease lapsed and went elsewhere).
        store.set_fence(Some(second.fence));
        store.finish_unit(&second, &serde_json::json!({}), &[], &[], &[]).unwrap();
        let pass: Vec<(Fence, Arc<AtomicBool>)> = leases.held.lock().unwrap().clone();
        renew_once(&renewer, LEASE, &pass, &leases.held);
        assert!(second_lost.load(Ordering::Relaxed));
    }
}
