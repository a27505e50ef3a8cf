//! The daemon's HTTP side: liveness, readiness and Prometheus metrics, for Kubernetes probes and scrapers.
//!
//! The listener is bound before the daemon connects to the database, so liveness answers while the daemon
//! legitimately waits for a database that starts later or runs its migrations; readiness answers 503 until the
//! daemon is [`HttpState::set_ready`], and then follows the database.

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use snowpatrol_engine::CancellationToken;
use snowpatrol_engine::metrics::Metrics;
use snowpatrol_pipeline::PipelineStore;
use snowpatrol_pipeline::metrics::PipelineMetrics;
use snowpatrol_store::Database;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tower::ServiceExt;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A probe must answer within a second even when the database does not (the pool would wait its full
/// acquire timeout); a scrape gets a little longer, and renders this process's own metrics regardless.
const READY_TIMEOUT: Duration = Duration::from_secs(1);
const SCRAPE_DB_TIMEOUT: Duration = Duration::from_secs(3);

/// What the daemon has once the database is connected and migrated.
pub struct Ready {
    pub db: Database,
    pub jobs: Vec<String>,
    pub store: PipelineStore,
    /// Routes served only once ready (the Slack interactivity endpoint when configured).
    pub routes: Option<Router>,
}

pub struct HttpState {
    metrics: Arc<Metrics>,
    pipeline_metrics: PipelineMetrics,
    ready: OnceLock<Ready>,
}

impl HttpState {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        let pipeline_metrics = PipelineMetrics::default();
        metrics.register(|r| pipeline_metrics.register(r));
        Arc::new(Self {
            metrics,
            pipeline_metrics,
            ready: OnceLock::new(),
        })
    }

    /// Marks the daemon ready; later calls are ignored.
    pub fn set_ready(&self, ready: Ready) {
        let _ = self.ready.set(ready);
    }
}

pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .fallback(late_routes)
        .with_state(state)
}

/// Alive means the process answers; the database is deliberately not checked here, so a database outage
/// makes pods unready (readyz) instead of restarting them all.
async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<Arc<HttpState>>) -> Response {
    let Some(ready) = s.ready.get() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: starting (waiting for the database or migrations)\n",
        )
            .into_response();
    };
    match tokio::time::timeout(READY_TIMEOUT, snowpatrol_pipeline::schema_ready(&ready.db)).await {
        Ok(Ok(true)) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Ok(false)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: database migrations are not applied (run `snowpatrol migrate`)\n",
        )
            .into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response()
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: the database did not answer within {} ms\n",
                READY_TIMEOUT.as_millis()
            ),
        )
            .into_response(),
    }
}

async fn metrics_handler(State(s): State<Arc<HttpState>>) -> Response {
    // Both refreshes are tried (each bounded), then one encode: `database_up` is 1 only when both read.
    let database_up = match s.ready.get() {
        Some(ready) => {
            let pipeline =
                tokio::time::timeout(SCRAPE_DB_TIMEOUT, s.pipeline_metrics.refresh(&ready.store))
                    .await;
            if let Ok(Err(e)) = &pipeline {
                tracing::warn!(error = %e, "metrics: reading the pipeline tables failed");
            }
            let engine = s
                .metrics
                .refresh_within(&ready.db, &ready.jobs, SCRAPE_DB_TIMEOUT)
                .await;
            engine && matches!(pipeline, Ok(Ok(())))
        }
        None => false,
    };
    s.metrics.database_up.set(i64::from(database_up));
    match s.metrics.encode() {
        Ok(body) => ([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("metrics unavailable: {e}\n"),
        )
            .into_response(),
    }
}

/// Routes that exist only once the daemon is ready (and configured for them); 404 otherwise.
async fn late_routes(State(s): State<Arc<HttpState>>, request: Request<Body>) -> Response {
    match s.ready.get().and_then(|r| r.routes.clone()) {
        Some(routes) => match routes.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
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

    /// Liveness answers from the start; readiness is 503 while starting, follows the database once ready
    /// (503 before migrations and after the pool is gone, 200 in between); metrics render before and after.
    #[tokio::test]
    async fn probes_answer_while_starting_and_follow_the_database() {
        let dir = tempfile::tempdir().expect("temp dir");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let stop = CancellationToken::new();
        let state = HttpState::new(Arc::new(Metrics::new()));
        let server = tokio::spawn(serve(listener, router(state.clone()), stop.clone()));

        assert_answers_while_starting(&base).await;

        let db = Database::open_sqlite_file(&dir.path().join("s.db"))
            .await
            .expect("sqlite");
        state.set_ready(Ready {
            db: db.clone(),
            jobs: vec!["prep".into()],
            store: PipelineStore::new(db.clone()),
            routes: None,
        });
        let (code, body) = get(&format!("{base}/readyz")).await;
        assert_eq!(code, 503);
        assert!(body.contains("run `snowpatrol migrate`"), "{body}");

        snowpatrol_pipeline::migrate(&db).await.expect("migrate");
        assert_eq!(get(&format!("{base}/readyz")).await.0, 200);
        assert_metrics_once_ready(&base, &db).await;

        db.close().await;
        assert_unready_after_close(&base).await;
        stop.cancel();
        let _ = server.await;
    }

    /// Before the daemon is ready: liveness answers, readiness is 503 (starting), metrics render with the
    /// database down, and the routes served only once ready are 404.
    async fn assert_answers_while_starting(base: &str) {
        assert_eq!(get(&format!("{base}/healthz")).await, (200, "ok\n".into()));
        let (code, body) = get(&format!("{base}/readyz")).await;
        assert_eq!((code, body.contains("starting")), (503, true), "{body}");
        let (code, body) = get(&format!("{base}/metrics")).await;
        assert_eq!(code, 200);
        assert!(body.contains("snowpatrol_database_up 0"), "{body}");
        assert_eq!(get(&format!("{base}/slack/interactivity")).await.0, 404);
    }

    /// Once ready on a migrated database: metrics show the database up, the metering freshness and the jobs.
    async fn assert_metrics_once_ready(base: &str, db: &Database) {
        // Freshness as prep records it, per account.
        if let snowpatrol_store::Pool::Sqlite(p) = db.pool() {
            sqlx::query("INSERT INTO metering_freshness (account_name, newest_hour, loaded_at) VALUES ('ACME', '2025-06-28T23:00:00+00:00', '2025-06-29T06:00:00+00:00')")
                .execute(p)
                .await
                .expect("insert freshness");
        }
        let (code, body) = get(&format!("{base}/metrics")).await;
        assert_eq!(code, 200);
        assert!(body.contains("snowpatrol_database_up 1"), "{body}");
        assert!(
            body.contains(
                r#"snowpatrol_metering_newest_hour_timestamp_seconds{account="ACME"} 1751151600"#
            ),
            "{body}"
        );
        assert!(
            body.contains(r#"snowpatrol_job_runs_active{job_name="prep",state="queued"} 0"#),
            "{body}"
        );
    }

    /// After the pool is closed: readiness answers 503 within its timeout, liveness still 200.
    async fn assert_unready_after_close(base: &str) {
        let started = std::time::Instant::now();
        let (code, body) = get(&format!("{base}/readyz")).await;
        assert_eq!(code, 503, "{body}");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(
            get(&format!("{base}/healthz")).await.0,
            200,
            "liveness does not depend on the database"
        );
    }
}
