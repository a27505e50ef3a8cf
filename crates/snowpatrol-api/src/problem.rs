//! Errors as `application/problem+json` (RFC 9457): a status, a short title and a detail that says what went
//! wrong and what would work, the same words the command line prints.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use snowpatrol_engine::EngineError;
use snowpatrol_store::StoreError;

/// An error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Always `about:blank`: the status and title say what kind of problem it is.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: String,
    pub status: u16,
    pub detail: String,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }
    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_string(&self).unwrap_or_default();
        (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response()
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Problem {
        match &e {
            StoreError::NotFound(m) => Problem::not_found(m.clone()),
            StoreError::Refused(m) => Problem::new(StatusCode::CONFLICT, m.clone()),
            StoreError::Conflict(m) => Problem::new(StatusCode::CONFLICT, m.clone()),
            _ if e.is_transient() => Problem::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            _ => {
                tracing::warn!(error = %e, "API request failed in the database");
                Problem::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        }
    }
}

impl From<EngineError> for Problem {
    fn from(e: EngineError) -> Problem {
        match e {
            EngineError::UnknownJob(m) => Problem::not_found(m),
            EngineError::Param(p) => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, p.to_string()),
            EngineError::Invalid(m) => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, m),
            EngineError::Store(s) => s.into(),
        }
    }
}

impl From<axum::extract::rejection::QueryRejection> for Problem {
    fn from(e: axum::extract::rejection::QueryRejection) -> Problem {
        Problem::bad_request(e.body_text())
    }
}

impl From<axum::extract::rejection::JsonRejection> for Problem {
    fn from(e: axum::extract::rejection::JsonRejection) -> Problem {
        Problem::new(e.status(), e.body_text())
    }
}

impl From<axum::extract::rejection::PathRejection> for Problem {
    fn from(e: axum::extract::rejection::PathRejection) -> Problem {
        Problem::bad_request(e.body_text())
    }
}
