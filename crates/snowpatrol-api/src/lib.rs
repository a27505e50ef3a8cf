//! Snowpatrol's HTTP API, versioned under `/api/v1`: what the command line shows and does, for scripts,
//! dashboards and the web console.
//!
//! - **Reads**: jobs (schedule, explain, last and next run, params), runs with task instances and lineage,
//!   task logs (paged, followable), datasets and events, model versions, incidents, anomalous days, alerts.
//! - **Operations** (operate scope): trigger with typed params, pause and unpause, backfill, cancel, clear,
//!   mark success or failed, record a batch of external events in one transaction, acknowledge an incident.
//! - **Contract**: JSON bodies, errors as `application/problem+json` ([`problem`]), bearer tokens with a read
//!   and an operate scope ([`auth`]), and an OpenAPI 3.1 document generated from these handlers by `utoipa`
//!   ([`openapi`], served at `/api/v1/openapi.json`), so the document cannot drift from the code.
//!
//! The crate knows the engine and the pipeline's store, and nothing of how the daemon serves it: the binary
//! mounts [`router`] next to its probes.

pub mod auth;
mod events;
mod jobs;
pub mod problem;
mod product;
mod runs;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{get, post};
use snowpatrol_engine::Engine;
use snowpatrol_pipeline::PipelineStore;
use std::sync::Arc;
use utoipa::OpenApi;

pub use auth::{ApiTokens, Scope, equal_in_constant_time};
pub use jobs::{DatasetInfo, datasets};
pub use problem::Problem;

/// What every handler reads and acts through.
pub struct ApiState {
    pub engine: Arc<Engine>,
    pub store: PipelineStore,
    pub tokens: ApiTokens,
    /// `[pipeline] currency`, shown beside money where Snowflake's own rates name none.
    pub currency: Option<String>,
}

impl ApiState {
    /// The currency money is in: the contract currency of the newest credit rate (`credit_prices =
    /// "snowflake"`), else the configured one.
    pub async fn currency(&self) -> Option<String> {
        let today = chrono::Utc::now().date_naive();
        self.store
            .latest_credit_rates(today)
            .await
            .ok()
            .and_then(|r| r.into_iter().next().map(|r| r.currency))
            .or_else(|| self.currency.clone())
    }
}

/// Who an action through the API is recorded as (runs' `triggered_by`, notes, acknowledgements).
pub(crate) struct Who;

impl Who {
    pub(crate) fn api() -> String {
        "api".to_string()
    }
}

/// A `limit` query parameter: `default` when absent, refused outside 1..=`max` with a problem naming the range.
pub(crate) fn limit(requested: Option<i64>, default: i64, max: i64) -> Result<i64, Problem> {
    let limit = requested.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(Problem::bad_request(format!(
            "limit must be between 1 and {max}, got {limit}"
        )))
    }
}

/// A JSON request body that may be empty (then the endpoint's defaults apply); a malformed one is a problem
/// that names what is wrong, not axum's plain-text rejection.
pub struct JsonBody<T>(Result<Option<T>, Problem>);

impl<T> JsonBody<T> {
    pub fn into_inner(self) -> Result<Option<T>, Problem> {
        self.0
    }
}

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| Problem::bad_request(e.body_text()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(Ok(None)));
        }
        Ok(JsonBody(serde_json::from_slice(&bytes).map(Some).map_err(
            |e| {
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("the request body: {e}"),
                )
            },
        )))
    }
}

/// Query parameters whose rejection (an unknown state, a bad date) is a problem naming the allowed values.
pub struct QueryParams<T>(Result<T, Problem>);

impl<T> QueryParams<T> {
    pub fn into_inner(self) -> Result<T, Problem> {
        self.0
    }
}

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        Ok(QueryParams(
            Query::<T>::from_request_parts(parts, state)
                .await
                .map(|q| q.0)
                .map_err(Problem::from),
        ))
    }
}

/// The API's routes, to be mounted at the root of the daemon's HTTP server.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi_json))
        .route("/api/v1/jobs", get(jobs::list_jobs))
        .route("/api/v1/jobs/{job}", get(jobs::get_job))
        .route("/api/v1/jobs/{job}/trigger", post(jobs::trigger_job))
        .route("/api/v1/jobs/{job}/pause", post(jobs::pause_job))
        .route("/api/v1/jobs/{job}/unpause", post(jobs::unpause_job))
        .route("/api/v1/jobs/{job}/backfill", post(jobs::backfill_job))
        .route("/api/v1/datasets", get(jobs::list_datasets))
        .route(
            "/api/v1/events",
            get(events::list_events).post(events::record_events),
        )
        .route("/api/v1/runs", get(runs::list_runs))
        .route("/api/v1/runs/{run_id}", get(runs::get_run))
        .route("/api/v1/runs/{run_id}/logs", get(runs::run_logs))
        .route("/api/v1/runs/{run_id}/cancel", post(runs::cancel_run))
        .route("/api/v1/runs/{run_id}/clear", post(runs::clear_run))
        .route("/api/v1/runs/{run_id}/mark", post(runs::mark_run))
        .route("/api/v1/models", get(product::list_models))
        .route("/api/v1/incidents", get(product::list_incidents))
        .route(
            "/api/v1/incidents/{incident_id}/ack",
            post(product::ack_incident),
        )
        .route(
            "/api/v1/incidents/{incident_id}/root_causes",
            get(product::incident_root_causes),
        )
        .route("/api/v1/anomalies", get(product::list_anomalies))
        .route(
            "/api/v1/anomalies/{anomaly_id}/lineage",
            get(product::anomaly_lineage),
        )
        .route("/api/v1/alerts", get(product::list_alerts))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> Problem {
    Problem::not_found("no such endpoint; the API is described at /api/v1/openapi.json")
}

/// The OpenAPI document (public: a client needs it before it has a token).
async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(openapi())
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Snowpatrol API", description = "Jobs, runs, task logs, datasets, models and incidents of a \
        Snowpatrol daemon. Reads need the read token when tokens are configured; changes always need the \
        operate token. Errors are application/problem+json."),
    paths(
        jobs::list_jobs, jobs::get_job, jobs::trigger_job, jobs::pause_job, jobs::unpause_job, jobs::backfill_job, jobs::list_datasets,
        events::list_events, events::record_events,
        runs::list_runs, runs::get_run, runs::run_logs, runs::cancel_run, runs::clear_run, runs::mark_run,
        product::list_models, product::list_incidents, product::list_anomalies, product::ack_incident, product::incident_root_causes, product::anomaly_lineage, product::list_alerts,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "jobs", description = "Jobs, their schedules and manual runs"),
        (name = "runs", description = "Runs, task instances, logs and operator actions"),
        (name = "datasets", description = "Datasets and their events"),
        (name = "models", description = "Model versions per warehouse"),
        (name = "incidents", description = "Incidents, anomalous days and alerts"),
    )
)]
struct ApiDoc;

/// The OpenAPI document of [`router`], generated from the handlers' annotations.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
