//! `/metrics` (Prometheus text format) and `/healthz`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{ApiError, AppState};

type Labelled = Family<Vec<(String, String)>, Gauge<f64, std::sync::atomic::AtomicU64>>;

fn family(registry: &mut Registry, name: &str, help: &str) -> Labelled {
    let family = Labelled::default();
    registry.register(name, help, family.clone());
    family
}

/// The host's state as Prometheus metrics, read fresh on every scrape.
pub async fn metrics(State(app): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let (states, runs, backlog) = app
        .read(|store| {
            Ok((store.count_by_state()?, store.job_runs(200)?, store.notifications(Some("pending"), Some(100_000))?))
        })
        .await?;
    let plugins = super::v1::plugin_list(&app).await?;

    let mut registry = Registry::default();
    let orders = family(&mut registry, "provision_orders", "Orders by provisioning state");
    for (state, count) in states {
        orders
            .get_or_create(&vec![("state".into(), state.number().to_string()), ("name".into(), state.name().into())])
            .set(count as f64);
    }
    let durations =
        family(&mut registry, "provision_job_duration_seconds", "Duration of the last job run of each kind");
    let statuses = family(&mut registry, "provision_job_runs", "Job runs among the last 200, by kind and status");
    let mut seen = std::collections::HashSet::new();
    for run in &runs {
        if let Some(finished) = run.finished_at
            && seen.insert(run.kind.clone())
        {
            durations
                .get_or_create(&vec![("kind".into(), run.kind.clone())])
                .set((finished - run.started_at) as f64 / 1000.0);
        }
        statuses.get_or_create(&vec![("kind".into(), run.kind.clone()), ("status".into(), run.status.clone())]).inc();
    }
    let host = family(&mut registry, "provision_host_info", "This host's id among the hosts sharing the database");
    host.get_or_create(&vec![("host".into(), crate::jobs::host_id())]).set(1.0);
    let units = family(
        &mut registry,
        "provision_work_units_done",
        "Work units each host finished, over the last 200 job runs (any host's, read from the database)",
    );
    for run in &runs {
        for (host, done) in &run.hosts {
            units.get_or_create(&vec![("host".into(), host.clone())]).inc_by(*done as f64);
        }
    }
    let calls = family(&mut registry, "provision_plugin_calls", "Plugin calls since the server started");
    let failures = family(&mut registry, "provision_plugin_failures", "Plugin call failures, all time");
    let latency = family(
        &mut registry,
        "provision_plugin_call_seconds_average",
        "Average plugin call latency since the server started",
    );
    let disabled = family(&mut registry, "provision_plugin_disabled", "1 when the plugin is disabled for failing");
    for plugin in plugins {
        let name = plugin["name"].as_str().unwrap_or_default().to_string();
        let label = vec![("plugin".to_string(), name)];
        let count = plugin["stats"]["calls"].as_f64().unwrap_or(0.0);
        calls.get_or_create(&label).set(count);
        failures.get_or_create(&label).set(plugin["health"]["failures"].as_f64().unwrap_or(0.0));
        let secs = plugin["stats"]["call_time"]["secs"].as_f64().unwrap_or(0.0)
            + plugin["stats"]["call_time"]["nanos"].as_f64().unwrap_or(0.0) / 1e9;
        latency.get_or_create(&label).set(if count > 0.0 { secs / count } else { 0.0 });
        disabled.get_or_create(&label).set(if plugin["health"]["disabled_at"].is_null() { 0.0 } else { 1.0 });
    }
    let outbox = family(&mut registry, "provision_outbox_backlog", "Notifications with a delivery still pending");
    outbox.get_or_create(&vec![]).set(backlog.len() as f64);
    let uptime = family(&mut registry, "provision_uptime_seconds", "Seconds since the server started");
    uptime.get_or_create(&vec![]).set(app.started.elapsed().as_secs_f64());

    let mut text = String::new();
    encode(&mut text, &registry).map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text))
}

/// 200 when the database answers.
pub async fn healthz(State(app): State<AppState>) -> impl IntoResponse {
    match app.read(|store| Ok(store.count_by_state()?)).await {
        Ok(_) => (StatusCode::OK, "ok\n"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "the database does not answer\n"),
    }
}
