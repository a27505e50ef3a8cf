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

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(url: &str) -> (u16, String) {
        let r = reqwest::get(url).await.expect("request");
        (r.status().as_u16(), r.text().await.expect("body"))
    }

    /// Readiness follows the database: 503 before migrations and after the pool is gone, 200 in between.
    #[tokio::test]
    async fn readyz_reports_unmigrated_and_unreachable_databases() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Database::open_sqlite_file(&dir.path().join("s.db"))
            .await
            .expect("sqlite");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let stop = CancellationToken::new();
        let app = router(db.clone(), Arc::new(Metrics::new()));
        let server = tokio::spawn(serve(listener, app, stop.clone()));

        assert_eq!(get(&format!("{base}/healthz")).await, (200, "ok\n".into()));
        let (code, body) = get(&format!("{base}/readyz")).await;
        assert_eq!(code, 503);
        assert!(body.contains("run `snowpatrol migrate`"), "{body}");

        db.migrate().await.expect("migrate");
        assert_eq!(get(&format!("{base}/readyz")).await.0, 200);
        let (code, body) = get(&format!("{base}/metrics")).await;
        assert_eq!(code, 200);
        assert!(body.contains("snowpatrol_is_leader"), "{body}");

        db.close().await;
        let (code, body) = get(&format!("{base}/readyz")).await;
        assert_eq!(code, 503, "{body}");
        assert_eq!(
            get(&format!("{base}/healthz")).await.0,
            200,
            "liveness does not depend on the database"
        );
        stop.cancel();
        let _ = server.await;
    }
}
