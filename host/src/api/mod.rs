//! `provision serve`: the JSON API (`/api/v1`), the web pages, `/metrics` and `/healthz`, on
//! axum, over the same library functions the CLI uses, with a scheduler running the complete job.
//!
//! Concurrency: people never wait for a job. Job runs (the scheduler's and the API's) run on a
//! `Host` of their own, one at a time, and the API answers as soon as a run is recorded; people's
//! actions write through another `Host` (its own SQLite connection, the same loaded plugins)
//! in short IMMEDIATE transactions, which wait only for SQLite's one writer, never for a run.
//! The state machine decides an action on an order a job changed meanwhile (a 409, never a
//! lost write). Notifications an action caused go out beside its answer, on a third host.
//! Reads (lists, pages) use a pool of read-only connections. Plugin calls and SQLite are
//! blocking: they run on tokio's blocking threads.
//!
//! **Architecture invariant**: the API and the pages authorise with the same functions as the
//! CLI (`permissions::authorize`, `operators::act`); a page shows only what its user may do.

mod auth;
mod desired;
mod error;
mod export;
mod metrics;
pub mod openapi;
mod pages;
mod v1;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::routing::get;

use crate::config::Config;
use crate::host::{Host, OpenError};
use crate::jobs::JobReport;
use crate::store::Store;
pub use auth::Caller;
pub use error::ApiError;

/// Everything a request handler reaches.
pub struct App {
    /// People's actions: every change a person makes, each a short transaction.
    host: Mutex<Host>,
    /// Job runs, one at a time in this server; held from a run's start to its end.
    jobs: Arc<tokio::sync::Mutex<Host>>,
    /// Notification passes after people's actions, beside their answers.
    notifier: Mutex<Host>,
    /// Event delivery passes (`events`), on a connection of their own.
    publisher: Mutex<Host>,
    /// A notification pass is asked for and has not begun: it will route whatever is queued
    /// by then, so another is not needed.
    notify_asked: AtomicBool,
    /// Read-only connections, reused.
    readers: Mutex<Vec<Store>>,
    /// The config (for pages, sessions, simulations).
    config: Config,
    /// Where the database is (readers connect there; a PostgreSQL password already read).
    location: crate::store::Location,
    /// Set on shutdown (jobs read it between batches).
    stop: Arc<AtomicBool>,
    /// Tells the scheduler the server is stopping.
    stopping: tokio::sync::watch::Sender<bool>,
    /// When the server started.
    started: Instant,
    /// The host's plugins (shared with it), for listing and reloading without waiting for a job.
    plugins: crate::host::Plugins,
    /// The runtime they were loaded in.
    runtime: Arc<crate::plugins::Runtime>,
}

/// The shared state of the server.
pub type AppState = Arc<App>;

/// A job run started on the job host: its id, and its end.
struct Started {
    /// The recorded run.
    run: i64,
    /// Its report, once it ends.
    done: tokio::task::JoinHandle<Result<JobReport, ApiError>>,
}

/// The job host while a run has it; the run-started hook is unset however the run ends (a
/// panic included), so nobody waits for a run that will never be reported.
struct Running(tokio::sync::OwnedMutexGuard<Host>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.on_run_started = None;
    }
}

impl App {
    /// The server's state over an opened host: it takes people's actions; the job host and the
    /// notifier are its siblings (same database file and plugins, connections of their own).
    pub fn new(host: Host) -> Result<AppState, OpenError> {
        let jobs = host.sibling()?;
        let notifier = host.sibling()?;
        let publisher = host.sibling()?;
        Ok(Arc::new(App {
            config: host.config.clone(),
            location: host.store.location().clone(),
            stop: host.stop.clone(),
            plugins: host.plugins.clone(),
            runtime: host.runtime.clone(),
            host: Mutex::new(host),
            jobs: Arc::new(tokio::sync::Mutex::new(jobs)),
            notifier: Mutex::new(notifier),
            publisher: Mutex::new(publisher),
            notify_asked: AtomicBool::new(false),
            readers: Mutex::new(Vec::new()),
            stopping: tokio::sync::watch::Sender::new(false),
            started: Instant::now(),
        }))
    }

    fn reader(&self) -> Result<Store, ApiError> {
        let pooled = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match pooled {
            Some(store) => Ok(store),
            None => Store::open_read_only_at(&self.location).map_err(ApiError::internal),
        }
    }

    fn give_back(&self, store: Store) {
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if readers.len() < 16 {
            readers.push(store);
        }
    }

    /// Runs `f` on a read-only connection, on a blocking thread.
    pub async fn read<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Store) -> Result<R, ApiError> + Send + 'static,
    ) -> Result<R, ApiError> {
        let app = self.clone();
        tokio::task::spawn_blocking(move || {
            let store = app.reader()?;
            let result = f(&store);
            app.give_back(store);
            result
        })
        .await
        .map_err(ApiError::internal)?
    }

    /// Runs `f` with the host of people's actions, on a blocking thread. It never waits for a
    /// job run (those have their own host); only for another person's write, or SQLite's writer
    /// lock while a job's transaction commits.
    pub async fn write<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Host) -> Result<R, ApiError> + Send + 'static,
    ) -> Result<R, ApiError> {
        let app = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut host = app.host.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut host)
        })
        .await
        .map_err(ApiError::internal)?
    }

    /// A person's action ([`App::write`]), then a notification pass for what it queued, beside
    /// the answer: delivering may wait on a slow webhook, or on a job's own pass.
    pub async fn act<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Host) -> Result<R, ApiError> + Send + 'static,
    ) -> Result<R, ApiError> {
        let result = self.write(f).await;
        if result.is_ok() {
            self.notify_soon();
        }
        result
    }

    /// Routes and delivers queued notifications on the notifier host, without waiting for it.
    fn notify_soon(self: &Arc<Self>) {
        if self.notify_asked.swap(true, Ordering::SeqCst) {
            return; // the pass asked for has not begun: it will see this action's intents
        }
        let app = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut host = app.notifier.lock().unwrap_or_else(|e| e.into_inner());
            // From here on, an action needs a pass of its own: this one may have read the queue.
            app.notify_asked.store(false, Ordering::SeqCst);
            if let Err(error) = crate::app::notify_after_action(&mut host) {
                tracing::warn!("notifications after an action: {error}");
            }
        });
    }

    /// Starts a job run on the job host, on a blocking thread, and answers as soon as the run
    /// is recorded (or joined: an unfinished run of the same kind, another process's). A run
    /// already going in this server, or one of another kind, is a 409 `job-running` naming it.
    async fn start_run(self: &Arc<Self>, step: v1::Step) -> Result<Started, ApiError> {
        let Ok(host) = self.jobs.clone().try_lock_owned() else { return Err(self.running_here().await) };
        let (started, recorded) = std::sync::mpsc::channel();
        let mut running = Running(host);
        running.0.on_run_started = Some(started);
        let done = tokio::task::spawn_blocking(move || -> Result<JobReport, ApiError> {
            let host = &mut *running.0;
            // An operator may have enabled a plugin on another host since the last run.
            host.refresh_health()?;
            let hidden = indicatif::ProgressBar::hidden();
            Ok(match step {
                v1::Step::Complete => crate::jobs::complete(host, &hidden),
                v1::Step::Synchronise => crate::jobs::synchronise(host, &hidden),
                v1::Step::Compute => crate::jobs::compute(host, &hidden),
                v1::Step::Fulfil => crate::jobs::fulfil(host, &hidden),
            }?)
        });
        // The sender goes when the run ends (see `Running`): no id means it never started.
        let run = tokio::task::spawn_blocking(move || recorded.recv().ok()).await.map_err(ApiError::internal)?;
        match run {
            Some(run) => Ok(Started { run, done }),
            None => match done.await.map_err(ApiError::internal)? {
                Err(error) => Err(error),
                Ok(report) => Err(ApiError::internal(format!("run {} was never reported started", report.run))),
            },
        }
    }

    /// The refusal of a run while this server's job host is busy, naming the run that holds it.
    async fn running_here(self: &Arc<Self>) -> ApiError {
        let running = self.read(|store| Ok(store.running_run()?)).await.ok().flatten();
        let which = match running {
            Some(running) => format!("{running}; see GET /api/v1/jobs/{}", running.run),
            None => "a run that is starting".into(),
        };
        ApiError::new(
            axum::http::StatusCode::CONFLICT,
            error::JOB_RUNNING,
            format!("a job is already running in this server: {which}"),
        )
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The plugins, shared with the host.
    pub fn plugins(&self) -> &crate::host::Plugins {
        &self.plugins
    }
}

/// Logs how a job run started by a person ended (nobody waits for it).
fn log_run(started: Started, who: &str) {
    let run = started.run;
    let who = who.to_string();
    tokio::spawn(async move {
        match started.done.await {
            Ok(Ok(report)) => tracing::info!(run, problems = report.problems.len(), "job run {run} ({who}) done"),
            Ok(Err(error)) => tracing::error!(run, "job run {run} ({who}) failed: {}", error.message),
            Err(error) => tracing::error!(run, "job run {run} ({who}) failed: {error}"),
        }
    });
}

/// Reloads one plugin from its file on a blocking thread (compiling may take a while); the
/// inner error is the reason the new component was refused.
pub(crate) async fn reload_plugin(
    app: &AppState,
    name: String,
) -> Result<Result<crate::host::Reloaded, String>, ApiError> {
    let app = app.clone();
    tokio::task::spawn_blocking(move || app.plugins.reload(&app.config, &app.runtime, &name))
        .await
        .map_err(ApiError::internal)
}

/// The plugins loaded from files, with their file's (modification time, size) now.
fn plugin_files(config: &Config) -> Vec<(String, std::path::PathBuf)> {
    config
        .plugins
        .values()
        .filter_map(|p| match &p.source {
            crate::config::PluginSource::File(path) => Some((p.name.clone(), path.clone())),
            crate::config::PluginSource::Bundled(_) => None,
        })
        .collect()
}

fn stamp(path: &std::path::Path) -> Option<(std::time::SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Reloads a plugin whose file changed: polls each plugin file every `serve.plugin_poll` and
/// reloads once a change has held still for one poll (a file caught half-written is not read).
/// SIGHUP reloads every file plugin at once.
async fn watch_plugins(app: AppState) {
    let files = plugin_files(&app.config);
    if files.is_empty() {
        return;
    }
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!("cannot listen for SIGHUP; plugins reload on file changes only: {error}");
            None
        }
    };
    let poll = app.config.serve.plugin_poll;
    let mut ticks = tokio::time::interval(poll.unwrap_or(std::time::Duration::from_secs(3600)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut loaded: BTreeMap<String, Option<(std::time::SystemTime, u64)>> =
        files.iter().map(|(name, path)| (name.clone(), stamp(path))).collect();
    let mut seen = loaded.clone();
    let mut stopping = app.stopping.subscribe();
    loop {
        let everything = tokio::select! {
            _ = ticks.tick(), if poll.is_some() => false,
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            _ = stopping.wait_for(|stop| *stop) => return,
        };
        if everything {
            tracing::info!("SIGHUP: reloading every plugin loaded from a file");
        }
        for (name, path) in &files {
            let now = stamp(path);
            let settled = now == seen[name];
            seen.insert(name.clone(), now);
            if everything || (settled && now != loaded[name]) {
                loaded.insert(name.clone(), now);
                // The outcome is logged and kept on the plugin by the reload itself.
                let _ = reload_plugin(&app, name.clone()).await;
            }
        }
    }
}

/// The routes: `/api/v1/...`, the pages, `/metrics`, `/healthz`.
pub fn router(app: AppState) -> Router {
    Router::new()
        .nest("/api/v1", v1::routes())
        .merge(pages::routes())
        .route("/metrics", get(metrics::metrics))
        .route("/healthz", get(metrics::healthz))
        .layer(axum::middleware::from_fn(read_whole_body))
        // The extractors' own default (2 MiB) would refuse, with a 400, bodies the middleware
        // above accepted: the limits are the middleware's.
        .layer(axum::extract::DefaultBodyLimit::max(crate::limits::API_BULK_BODY))
        .with_state(app)
}

/// The bulk endpoint of desired state, whose bodies may be up to `limits::API_BULK_BODY`.
const BULK_PATH: &str = "/api/v1/desired";

/// The largest request body accepted (a bulk decision on many orders fits well within it).
pub const MAX_BODY: usize = crate::limits::API_BODY;

/// Reads every request body to its end before routing. A handler that answers without reading
/// the body (a 403, a 404, an action that takes no parameters) would otherwise leave unread bytes
/// on the connection, and hyper then closes a keep-alive connection the client believes reusable:
/// its next request fails with "peer disconnected". A body too large or cut short is a 4xx here.
async fn read_whole_body(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = request.into_parts();
    // A feed's bulk request may be larger; every other body is small.
    let limit = if parts.uri.path() == BULK_PATH { crate::limits::API_BULK_BODY } else { MAX_BODY };
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => next.run(axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes))).await,
        Err(error) => {
            let too_large =
                std::error::Error::source(&error).is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            if too_large {
                ApiError::new(
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    "too-large",
                    format!("the request body is larger than {limit} bytes"),
                )
                .into_response()
            } else {
                ApiError::bad_request(format!("the request body could not be read to its end: {error}")).into_response()
            }
        }
    }
}

/// Serves until SIGINT or SIGTERM, running the complete job every `serve.job_interval`. On a
/// signal it stops taking requests, lets a running job finish its batch and stop, and returns.
pub async fn serve(host: Host, listen: &str) -> anyhow::Result<()> {
    let app = App::new(host)?;
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    tracing::info!("serving on http://{}", listener.local_addr()?);
    println!(
        "provision serve: listening on http://{} as host {} ({} database {})",
        listener.local_addr()?,
        crate::jobs::host_id(),
        app.location.backend_name(),
        app.config.database
    );

    let scheduler = tokio::spawn(schedule(app.clone()));
    let publisher = tokio::spawn(publish_events(app.clone()));
    let watcher = tokio::spawn(watch_plugins(app.clone()));
    let stopping = app.clone();
    axum::serve(listener, router(app.clone()))
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: finishing the batch at hand");
            stopping.stop.store(true, Ordering::Relaxed);
            stopping.stopping.send_replace(true);
        })
        .await?;
    app.stop.store(true, Ordering::Relaxed);
    app.stopping.send_replace(true);
    let _ = scheduler.await;
    let _ = watcher.await;
    let _ = publisher.await;
    // Wait for a job still running (it stops after its batch), then for a notification pass.
    drop(app.jobs.lock().await);
    let notifier = app.clone();
    let _ = tokio::task::spawn_blocking(move || drop(notifier.notifier.lock())).await;
    println!("provision serve: stopped");
    Ok(())
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = terminate => {},
    }
}

/// Publishes order state changes to the config's subscribers: a delivery pass every second
/// (each subscriber claimed for it under a lease, so several servers on one database take
/// turns), until the server stops.
async fn publish_events(app: AppState) {
    if app.config.events.subscribers.is_empty() {
        return;
    }
    let owner = format!("{}:serve", crate::jobs::host_id());
    let mut ticks = tokio::time::interval(std::time::Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = app.stopping.subscribe();
    loop {
        tokio::select! {
            _ = ticks.tick() => {},
            _ = stopping.wait_for(|stop| *stop) => return,
        }
        let (app, owner) = (app.clone(), owner.clone());
        let pass = tokio::task::spawn_blocking(move || {
            let mut host = app.publisher.lock().unwrap_or_else(|e| e.into_inner());
            let config = host.config.events.clone();
            crate::events::deliver(&mut host.store, &config, &owner)
        })
        .await;
        match pass {
            Ok(Ok(report)) if report.delivered > 0 => tracing::debug!(delivered = report.delivered, "events delivered"),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!("event delivery pass: {error}"),
            Err(error) => tracing::error!("event delivery pass panicked: {error}"),
        }
    }
}

/// Runs the complete job every `serve.job_interval` until the server stops, on the job host. A
/// tick that finds a job running (here, or one of another kind unfinished on the database) is skipped; people's
/// actions never wait for either.
async fn schedule(app: AppState) {
    let Some(every) = app.config.serve.job_interval else { return };
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is immediate: wait one interval first
    let mut stopping = app.stopping.subscribe();
    loop {
        tokio::select! {
            _ = ticks.tick() => {},
            _ = stopping.wait_for(|stop| *stop) => return,
        }
        if app.stop.load(Ordering::Relaxed) {
            return;
        }
        let result = match app.start_run(v1::Step::Complete).await {
            Ok(started) => started.done.await.map_err(ApiError::internal).and_then(|r| r),
            Err(error) => Err(error),
        };
        match result {
            Ok(report) => tracing::info!(run = report.run, problems = report.problems.len(), "scheduled job run done"),
            // A run of the API, a CLI run or another server has it: not an error, the next tick
            // tries again.
            Err(error) if error.code == error::JOB_RUNNING => {
                tracing::info!("scheduled job run skipped: {}", error.message)
            }
            Err(error) => tracing::error!("scheduled job run failed: {}", error.message),
        }
    }
}
