//! `snowpatrol daemon`: the scheduler, workers and alert sender until SIGTERM, behind the health server.

use crate::app::{App, connect, spawn_signal_watcher, validate};
use crate::server;
use crate::settings::LoadedConfig;
use anyhow::{Context, bail};
use snowpatrol_engine::CancellationToken;
use std::process::ExitCode;
use std::sync::Arc;
use tracing::{info, warn};

pub(crate) async fn daemon(loaded: &LoadedConfig) -> anyhow::Result<ExitCode> {
    let s = &loaded.settings;
    let shutdown = CancellationToken::new();
    spawn_signal_watcher(shutdown.clone());
    info!(config = %loaded.file_display(), "snowpatrol daemon starting");
    // Refuse a dangerous file before waiting for the database: the same checks as `config check`.
    validate(loaded).await?;
    // The probes answer from here on: alive while the daemon waits for the database or migrates it, ready
    // (and the Slack endpoint served) once it runs.
    let listener = tokio::net::TcpListener::bind(s.server.health_addr)
        .await
        .with_context(|| {
            format!(
                "binding the health/metrics address {} ([server] health_addr)",
                s.server.health_addr
            )
        })?;
    let metrics = Arc::new(snowpatrol_engine::metrics::Metrics::new());
    metrics.register(crate::process_metrics::register);
    let http = server::HttpState::new(metrics.clone());
    let server_stop = CancellationToken::new();
    let server_task = tokio::spawn(server::serve(
        listener,
        server::router(http.clone()),
        server_stop.clone(),
    ));
    info!(addr = %s.server.health_addr, "serving /healthz, /readyz and /metrics");
    let result = daemon_until_stopped(loaded, &http, metrics, shutdown).await;
    // Probes keep answering while the engine drains; the server stops last.
    server_stop.cancel();
    match server_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "health server stopped with an error"),
        Err(e) => warn!(error = %e, "health server task failed"),
    }
    result?;
    info!("snowpatrol daemon stopped");
    Ok(ExitCode::SUCCESS)
}

/// The daemon behind its probes: connect (waiting for the database), migrate, run until `shutdown`.
/// The daemon behind its probes: connect (waiting for the database), migrate, run until `shutdown`.
async fn daemon_until_stopped(
    loaded: &LoadedConfig,
    http: &server::HttpState,
    metrics: Arc<snowpatrol_engine::metrics::Metrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let s = &loaded.settings;
    let db = tokio::select! {
        db = connect(s, true) => db?,
        _ = shutdown.cancelled() => {
            info!("stopped before the database was reachable");
            return Ok(());
        }
    };
    info!(database = %db.url_redacted(), backend = db.backend_name(), "database connected");
    if s.database.migrate_on_start {
        snowpatrol_pipeline::migrate(&db)
            .await
            .with_context(|| format!("migrating {} on start", db.url_redacted()))?;
        info!("migrations applied");
    } else if !snowpatrol_pipeline::schema_ready(&db)
        .await
        .context("checking the schema")?
    {
        bail!(
            "the database {} is not migrated and [database] migrate_on_start is false: run `snowpatrol migrate`",
            db.url_redacted()
        );
    }
    let app = App::build(loaded, db.clone(), true, Some(metrics)).await?;
    let mut routes: Option<axum::Router> = None;
    if app.pipeline.slack_signing_secret().is_some() {
        info!(addr = %s.server.health_addr, "serving Slack feedback at POST /slack/interactivity");
        routes = Some(crate::slack_feedback::router(app.pipeline.clone()));
    }
    if s.api.enabled {
        let tokens =
            snowpatrol_api::ApiTokens::new(s.api.read_token.as_ref(), s.api.operate_token.as_ref());
        info!(addr = %s.server.health_addr, ?tokens, "serving the HTTP API at /api/v1 (OpenAPI: /api/v1/openapi.json)");
        let state = Arc::new(snowpatrol_api::ApiState {
            engine: app.engine.clone(),
            store: app.pipeline.store.clone(),
            tokens,
            currency: app.pipeline.config.currency.clone(),
        });
        info!(addr = %s.server.health_addr, "serving the web console at /ui");
        let api = snowpatrol_api::router(state.clone()).merge(snowpatrol_console::router(state));
        routes = Some(match routes {
            Some(r) => r.merge(api),
            None => api,
        });
    }
    http.set_ready(server::Ready {
        db: db.clone(),
        jobs: app.jobs().jobs.keys().cloned().collect(),
        store: app.pipeline.store.clone(),
        routes,
    });
    let result = app.serve(shutdown).await;
    db.close().await;
    result
}
