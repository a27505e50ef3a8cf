//! The daemon's HTTP side: liveness, readiness and Prometheus metrics, for Kubernetes probes and scrapers.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use snowpatrol_engine::CancellationToken;
use snowpatrol_engine::metrics::Metrics;
use snowpatrol_store::Database;
use std::sync::Arc;
use tokio::net::TcpListener;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone)]
struct AppState {
    db: Database,
    metrics: Arc<Metrics>,
}

pub fn router(db: Database, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .with_state(AppState { db, metrics })
}

/// Alive means the process answers; the database is deliberately not checked here, so a database outage
/// makes pods unready (readyz) instead of restarting them all.
async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AppState>) -> Response {
    match s.db.is_ready().await {
        Ok(true) => (StatusCode::OK, "ready\n").into_response(),
        Ok(false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: database migrations are not applied (run `snowpatrol migrate`)\n",
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response()
        }
    }
}

async fn metrics_handler(State(s): State<AppState>) -> Response {
    match s.metrics.render(&s.db).await {
        Ok(body) => ([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "rendering metrics failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("metrics unavailable: {e}\n"),
            )
                .into_response()
        }
    }
}

/// Serves until `shutdown`; the listener is bound by the caller so a taken port fails startup loudly.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
