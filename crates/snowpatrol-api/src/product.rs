//! What Snowpatrol found: model versions, incidents and their days, acknowledgements, and the alert outbox.

use crate::auth::Scope;
use crate::problem::Problem;
use crate::{ApiState, JsonBody, QueryParams, Who};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use chrono::NaiveDate;
use serde::Deserialize;
use snowpatrol_pipeline::store::{
    AckReason, AlertRow, AnomalyRow, IncidentFilter, IncidentRow, IncidentStatus, ModelRow,
    RootCauseRow,
};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ModelsQuery {
    /// `WAREHOUSE` (that name in every account) or `ACCOUNT.WAREHOUSE`.
    pub warehouse: Option<String>,
}

/// Model versions per warehouse, with their aliases and metrics.
#[utoipa::path(get, path = "/api/v1/models", tag = "models", params(ModelsQuery),
    responses((status = 200, body = [ModelRow])))]
pub async fn list_models(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    q: QueryParams<ModelsQuery>,
) -> Result<Json<Vec<ModelRow>>, Problem> {
    s.tokens.authorize(&headers, Scope::Read)?;
    let q = q.into_inner()?;
    Ok(Json(s.store.list_models(q.warehouse.as_deref()).await?))
}

#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct IncidentsQuery {
    /// `WAREHOUSE` or `ACCOUNT.WAREHOUSE`.
    pub warehouse: Option<String>,
    /// open, acknowledged or resolved.
    pub status: Option<IncidentStatus>,
    /// Incidents ending on or after this day (days on or after it, for anomalies).
    pub since: Option<NaiveDate>,
}

impl IncidentsQuery {
    fn filter(self) -> IncidentFilter {
        IncidentFilter {
            since: self.since,
            warehouse: self.warehouse,
            statuses: self.status.into_iter().collect(),
            incident_ids: vec![],
        }
    }
}

/// Incidents (runs of anomalous days per warehouse), newest first.
#[utoipa::path(get, path = "/api/v1/incidents", tag = "incidents", params(IncidentsQuery),
    responses((status = 200, body = [IncidentRow])))]
pub async fn list_incidents(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    q: QueryParams<IncidentsQuery>,
) -> Result<Json<Vec<IncidentRow>>, Problem> {
    s.tokens.authorize(&headers, Scope::Read)?;
    Ok(Json(
        s.store.list_incidents(&q.into_inner()?.filter()).await?,
    ))
}

/// The root cause of each of an incident's days that has one: the summary sentence, and the findings (top
/// statements, users, roles, query tags, warehouse events and changes, the hourly shape, what could not be read).
#[utoipa::path(get, path = "/api/v1/incidents/{incident_id}/root_causes", tag = "incidents",
    params(("incident_id" = i64, Path)), responses((status = 200, body = [RootCauseRow]),
    (status = 404, description = "no such incident")))]
pub async fn incident_root_causes(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(incident_id): Path<i64>,
) -> Result<Json<Vec<RootCauseRow>>, Problem> {
    s.tokens.authorize(&headers, Scope::Read)?;
    let incident = s
        .store
        .incident(incident_id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no incident with id {incident_id}")))?;
    Ok(Json(
        s.store
            .root_causes(Some(&incident.key()), incident.start_day, incident.end_day)
            .await?,
    ))
}

/// From an anomalous day back to its data: the predict run that scored it, the model version, the training run
/// and the events it consumed, the prep runs that loaded the training and scored data with their windows.
#[utoipa::path(get, path = "/api/v1/anomalies/{anomaly_id}/lineage", tag = "incidents",
    params(("anomaly_id" = i64, Path)), responses((status = 200, body = snowpatrol_pipeline::lineage::AnomalyLineage),
    (status = 404, description = "no such anomaly")))]
pub async fn anomaly_lineage(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(anomaly_id): Path<i64>,
) -> Result<Json<snowpatrol_pipeline::lineage::AnomalyLineage>, Problem> {
    s.tokens.authorize(&headers, Scope::Read)?;
    let chain = snowpatrol_pipeline::lineage::anomaly_lineage(s.engine.db(), &s.store, anomaly_id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no anomaly with id {anomaly_id}")))?;
    Ok(Json(chain))
}

/// The anomalous days, filtered like incidents.
#[utoipa::path(get, path = "/api/v1/anomalies", tag = "incidents", params(IncidentsQuery),
    responses((status = 200, body = [AnomalyRow])))]
pub async fn list_anomalies(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    q: QueryParams<IncidentsQuery>,
) -> Result<Json<Vec<AnomalyRow>>, Problem> {
    s.tokens.authorize(&headers, Scope::Read)?;
    Ok(Json(
        s.store.list_anomalies(&q.into_inner()?.filter()).await?,
    ))
}

/// An acknowledgement: why the incident needs no more attention.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// false_positive, planned or expected.
    pub reason: AckReason,
}

/// Acknowledges an incident and its days; it is never alerted again (operate scope).
#[utoipa::path(post, path = "/api/v1/incidents/{incident_id}/ack", tag = "incidents",
    params(("incident_id" = i64, Path)), request_body = Ack, security(("bearer" = [])),
    responses((status = 200, body = IncidentRow), (status = 404, body = Problem)))]
pub async fn ack_incident(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(incident_id): Path<i64>,
    body: JsonBody<Ack>,
) -> Result<Json<IncidentRow>, Problem> {
    s.tokens.authorize(&headers, Scope::Operate)?;
    let Some(ack) = body.into_inner()? else {
        return Err(Problem::bad_request(
            "send {\"reason\": \"false_positive\" | \"planned\" | \"expected\"}",
        ));
    };
    if !s
        .store
        .ack_incident(incident_id, ack.reason, Some(&Who::api()))
        .await?
    {
        return Err(Problem::not_found(format!(
            "no incident with id {incident_id}"
        )));
    }
    s.store
        .incident(incident_id)
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no incident with id {incident_id}")))
}

#[derive(Deserialize, IntoParams, Default)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AlertsQuery {
    /// Only alerts still waiting to be delivered.
    #[serde(default)]
    pub pending: bool,
    /// The newest this many (1..=1000, default 100).
    pub limit: Option<i64>,
}

/// The alert outbox: sent, written, pending and failed alerts, newest first.
#[utoipa::path(get, path = "/api/v1/alerts", tag = "incidents", params(AlertsQuery),
    responses((status = 200, body = [AlertRow])))]
pub async fn list_alerts(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    q: QueryParams<AlertsQuery>,
) -> Result<Json<Vec<AlertRow>>, Problem> {
    s.tokens.authorize(&headers, Scope::Read)?;
    let q = q.into_inner()?;
    let limit = crate::limit(q.limit, 100, 1000)?;
    Ok(Json(s.store.list_alerts(q.pending, limit).await?))
}
