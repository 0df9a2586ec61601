//! `provision serve`: the JSON API (`/api/v1`), the web pages, `/metrics` and `/healthz`, on
//! axum, over the same library functions the CLI uses, with a scheduler running the complete job.
//!
//! Concurrency: SQLite has one writer, so every action that writes goes through the one `Host`
//! behind a mutex (a job run holds it for its duration); reads (lists, pages) use a pool of
//! read-only connections and never wait for a job. Plugin calls and SQLite are blocking: they
//! run on tokio's blocking threads.
//!
//! **Architecture invariant**: the API and the pages authorise with the same functions as the
//! CLI (`permissions::authorize`, `operators::act`); a page shows only what its user may do.

mod auth;
mod error;
mod metrics;
mod pages;
mod v1;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::routing::get;

use crate::config::Config;
use crate::host::Host;
use crate::store::Store;
pub use auth::Caller;
pub use error::ApiError;

/// Everything a request handler reaches.
pub struct App {
    /// The writer: every change goes through it.
    host: Mutex<Host>,
    /// Read-only connections, reused.
    readers: Mutex<Vec<Store>>,
    /// The config (for pages, sessions, simulations).
    config: Config,
    /// Set on shutdown (jobs read it between batches).
    stop: Arc<std::sync::atomic::AtomicBool>,
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

impl App {
    /// The server's state over an opened host.
    pub fn new(host: Host) -> AppState {
        Arc::new(App {
            config: host.config.clone(),
            stop: host.stop.clone(),
            plugins: host.plugins.clone(),
            runtime: host.runtime.clone(),
            host: Mutex::new(host),
            readers: Mutex::new(Vec::new()),
            stopping: tokio::sync::watch::Sender::new(false),
            started: Instant::now(),
        })
    }

    fn reader(&self) -> Result<Store, ApiError> {
        let pooled = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match pooled {
            Some(store) => Ok(store),
            None => Store::open_read_only(&self.config.database).map_err(ApiError::internal),
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

    /// Runs `f` with the writer host, on a blocking thread.
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

    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The plugins, shared with the host.
    pub fn plugins(&self) -> &crate::host::Plugins {
        &self.plugins
    }
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
        // above accepted: the one limit is MAX_BODY.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

/// The largest request body accepted (a bulk decision on many orders fits well within it).
pub const MAX_BODY: usize = crate::limits::API_BODY;

/// Reads every request body to its end before routing. A handler that answers without reading
/// the body (a 403, a 404, an action that takes no parameters) would otherwise leave unread bytes
/// on the connection, and hyper then closes a keep-alive connection the client believes reusable:
/// its next request fails with "peer disconnected". A body too large or cut short is a 4xx here.
async fn read_whole_body(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => next.run(axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes))).await,
        Err(error) => {
            let too_large =
                std::error::Error::source(&error).is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            if too_large {
                ApiError::new(
                    axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                    "too-large",
                    format!("the request body is larger than {MAX_BODY} bytes"),
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
    let app = App::new(host);
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    tracing::info!("serving on http://{}", listener.local_addr()?);
    println!("provision serve: listening on http://{}", listener.local_addr()?);

    let scheduler = tokio::spawn(schedule(app.clone()));
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
    // Wait for a job still holding the host (it stops after its batch).
    let _ = app.write(|_| Ok(())).await;
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

/// Runs the complete job every `serve.job_interval` until the server stops. A tick that finds
/// the job lock held elsewhere is skipped (never waits: the host stays free for people's actions).
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
        let result = app.write(|host| Ok(crate::jobs::complete(host, &indicatif::ProgressBar::hidden())?)).await;
        match result {
            Ok(report) => tracing::info!(run = report.run, problems = report.problems.len(), "scheduled job run done"),
            // Another process (a CLI run, another server) has the database: not an error, the
            // next tick tries again.
            Err(error) if error.code == error::JOB_RUNNING => {
                tracing::info!("scheduled job run skipped: {}", error.message)
            }
            Err(error) => tracing::error!("scheduled job run failed: {}", error.message),
        }
    }
}
