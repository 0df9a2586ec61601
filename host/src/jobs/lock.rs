//! Taking and keeping the job lock for one run (see `store::lock` for the row and its rules).
//!
//! A heartbeat thread with its own SQLite connection refreshes the lock every third of its
//! expiry, so a long plugin call never lets it lapse. The thread lives and dies with the
//! process, so it cannot keep a dead run's lock alive. When it finds the lock is no longer its
//! run's (the run was stopped, e.g. paused, past the expiry and another took over), it sets
//! `Host::lock_lost`: the run stops before its next batch, and the store's write transactions
//! refuse it in any case (`StoreError::LockLost`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use backon::BackoffBuilder;

use super::JobError;
use crate::host::{Host, LockWait};
use crate::store::{LockOwner, Store, Taken, random_secret};

/// The lock, held: released by [`JobLock::release`], or by the heartbeat thread when dropped
/// unreleased (a panic), or by expiry when the process dies.
pub(super) struct JobLock {
    token: String,
    /// The job run recorded with the lock.
    pub run: Option<i64>,
    /// Dropping it stops the heartbeat.
    stop: Option<Sender<()>>,
    heartbeat: Option<JoinHandle<()>>,
}

/// Takes the job lock for `kind`, recording a job run of that kind with it when `record_run`;
/// waits for it if the host is told to.
pub(super) fn acquire(host: &mut Host, kind: &str, record_run: bool) -> Result<JobLock, JobError> {
    let owner = LockOwner { token: random_secret(), host: hostname(), pid: std::process::id() };
    let expiry = host.config.jobs.lock_expiry;
    let expiry_ms = i64::try_from(expiry.as_millis()).unwrap_or(i64::MAX / 4);
    let deadline = match host.lock_wait {
        LockWait::Refuse => None,
        LockWait::Wait { timeout } => Some(timeout.map(|t| Instant::now() + t)),
    };
    // A short first poll (the holder may be about to finish), backing off to a few seconds:
    // a waiting run costs one small transaction per poll, never a busy loop.
    let mut delays = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(2))
        .with_jitter()
        .without_max_times()
        .build();
    let mut told = false;
    loop {
        match host.store.take_job_lock(&owner, kind, record_run.then_some(kind), expiry_ms)? {
            Taken::Ours { run, took_over } => {
                if let Some(dead) = took_over {
                    tracing::warn!("took over the job lock of {dead}: its heartbeat had expired");
                }
                host.lock_lost.store(false, Ordering::Relaxed);
                let (stop, heartbeat) = match host.store.path() {
                    Some(path) => {
                        let (stop, stopped) = std::sync::mpsc::channel();
                        let (token, lost) = (owner.token.clone(), host.lock_lost.clone());
                        let thread = std::thread::Builder::new()
                            .name("job-lock-heartbeat".into())
                            .spawn(move || beat(path, &token, expiry, &lost, &stopped))
                            .map_err(|e| {
                                crate::store::StoreError::Unknown(format!("cannot start the job lock's heartbeat: {e}"))
                            });
                        match thread {
                            Ok(thread) => (Some(stop), Some(thread)),
                            Err(error) => {
                                let _ = host.store.release_job_lock(&owner.token);
                                return Err(error.into());
                            }
                        }
                    }
                    // An in-memory database: no other process can see it, nothing to beat for.
                    None => (None, None),
                };
                return Ok(JobLock { token: owner.token, run, stop, heartbeat });
            }
            Taken::Held(holder) => {
                let Some(deadline) = deadline else { return Err(JobError::Locked(holder)) };
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) || host.stopping() {
                    return Err(JobError::Locked(holder));
                }
                if !told {
                    tracing::warn!("the job lock is held by {holder}; waiting for it");
                    told = true;
                }
                let delay = delays.next().unwrap_or(Duration::from_secs(2));
                std::thread::sleep(deadline.map_or(delay, |d| delay.min(d.saturating_duration_since(now))));
            }
        }
    }
}

impl JobLock {
    /// Stops the heartbeat and lets go of the lock (if it is still this run's).
    pub(super) fn release(mut self, store: &mut Store) {
        self.stop_heartbeat();
        if let Err(error) = store.release_job_lock(&self.token) {
            // It expires on its own; the next run waits that long at most.
            tracing::warn!("cannot release the job lock (it expires on its own): {error}");
        }
    }

    fn stop_heartbeat(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.heartbeat.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for JobLock {
    fn drop(&mut self) {
        self.stop_heartbeat();
    }
}

/// The heartbeat: refreshes the lock every third of its expiry until told to stop, then
/// releases it (a no-op after a normal release; the release after a panic otherwise).
fn beat(path: PathBuf, token: &str, expiry: Duration, lost: &AtomicBool, stopped: &std::sync::mpsc::Receiver<()>) {
    let expiry_ms = i64::try_from(expiry.as_millis()).unwrap_or(i64::MAX / 4);
    let every = expiry / 3;
    let conn = match rusqlite::Connection::open(&path) {
        Ok(conn) => conn,
        Err(error) => {
            // The run's writes still check the lock; without a heartbeat it expires and is
            // taken over, and then those writes fail.
            tracing::error!("the job lock's heartbeat cannot open the database: {error}");
            return;
        }
    };
    let _ = conn.busy_timeout(every);
    loop {
        match stopped.recv_timeout(every) {
            Err(RecvTimeoutError::Timeout) => match crate::store::heartbeat(&conn, token, expiry_ms) {
                Ok(true) => {}
                Ok(false) => {
                    tracing::error!(
                        "this run's job lock expired and was taken over by another run; it stops before its next batch"
                    );
                    lost.store(true, Ordering::Relaxed);
                    return;
                }
                // A busy database: the next beat tries again, well before the expiry.
                Err(error) => tracing::warn!("cannot refresh the job lock's heartbeat: {error}"),
            },
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                let _ = conn.execute("DELETE FROM job_lock WHERE id = 1 AND token = ?1", [token]);
                return;
            }
        }
    }
}

/// This machine's name, for the lock's owner.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for writes of its length, which is what we pass.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
