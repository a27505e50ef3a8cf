//! Dataset events: recent ones, and batches of external events recorded in one transaction.

use crate::auth::Scope;
use crate::problem::Problem;
use crate::{ApiState, JsonBody, QueryParams, Who};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use snowpatrol_store::EventRecord;
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

/// The most events one request may carry.
pub const MAX_BATCH: usize = 5000;

#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only events of this dataset URI.
    pub dataset: Option<String>,
    /// The newest this many (1..=1000, default 50).
    pub limit: Option<i64>,
}

/// Recent dataset events, newest first.
#[utoipa::path(get, path = "/api/v1/events", tag = "datasets", params(EventsQuery),
    responses((status = 200, body = [EventRecord])))]
pub async fn list_events(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    q: QueryParams<EventsQuery>,
) -> Result<Json<Vec<EventRecord>>, Problem> {
    s.tokens.authorize(&headers, Scope::Read)?;
    let q = q.into_inner()?;
    let limit = crate::limit(q.limit, 50, 1000)?;
    Ok(Json(
        s.engine
            .db()
            .list_events(q.dataset.as_deref(), limit)
            .await?,
    ))
}

/// One external event.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEvent {
    /// The dataset URI (`scheme://path`), declared under `[datasets] external` or used by a job.
    pub dataset: String,
    /// Stored with the event (e.g. which partition was written).
    #[serde(default)]
    pub extra: Option<serde_json::Value>,
}

/// A batch of external events, recorded all or none.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    pub events: Vec<NewEvent>,
    /// Also accept datasets no configured job knows (a subscriber added later does not see them).
    #[serde(default)]
    pub allow_unknown: bool,
}

#[derive(Serialize, ToSchema)]
pub struct EventsRecorded {
    /// The new events' ids, in the order sent.
    pub event_ids: Vec<i64>,
    /// Job triggers the events queued (one per subscribed job and event).
    pub triggers_queued: i64,
}

/// Records a batch of external dataset events in one transaction (operate scope); subscribed jobs run on
/// them like on events their tasks emit.
#[utoipa::path(post, path = "/api/v1/events", tag = "datasets", request_body = EventBatch,
    security(("bearer" = [])),
    responses((status = 201, body = EventsRecorded), (status = 422, body = Problem), (status = 413, body = Problem)))]
pub async fn record_events(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: JsonBody<EventBatch>,
) -> Result<(StatusCode, Json<EventsRecorded>), Problem> {
    s.tokens.authorize(&headers, Scope::Operate)?;
    let Some(batch) = body.into_inner()? else {
        return Err(Problem::bad_request(
            "send {\"events\": [{\"dataset\": \"scheme://path\"}]}",
        ));
    };
    if batch.events.is_empty() {
        return Err(Problem::bad_request("the batch holds no events"));
    }
    if batch.events.len() > MAX_BATCH {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} events in one batch; send at most {MAX_BATCH}",
                batch.events.len()
            ),
        ));
    }
    let events: Vec<(String, serde_json::Value)> = batch
        .events
        .into_iter()
        .map(|e| (e.dataset, e.extra.unwrap_or_else(|| serde_json::json!({}))))
        .collect();
    let (event_ids, triggers_queued) = s
        .engine
        .emit_batch(&events, batch.allow_unknown, &Who::api())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(EventsRecorded {
            event_ids,
            triggers_queued,
        }),
    ))
}
