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

    /// Renews `fence` until [`Leases::drop_unit`].
    pub(super) fn hold(&self, fence: Fence, lost: Arc<AtomicBool>) {
        lost.store(false, Ordering::Relaxed);
        self.held.lock().unwrap_or_else(|e| e.into_inner()).push((fence, lost));
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
                for (fence, lost) in units {
                    match renewer.renew(fence, lease_ms) {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::error!(
                                unit = fence.unit,
                                "this worker's lease on its unit lapsed and was taken over; it stops before its next chunk"
                            );
                            lost.store(true, Ordering::Relaxed);
                        }
                        // A busy database: the next renewal tries again, well before the expiry.
                        Err(error) => tracing::warn!(unit = fence.unit, "cannot renew a lease: {error}"),
                    }
                }
            }
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
