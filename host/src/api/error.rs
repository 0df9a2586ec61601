//! Errors of the HTTP API: a status, a stable code, a message, and for a refused permission the
//! path that is missing. The JSON API answers `{"error": {...}}`; pages render them.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::jobs::JobError;
use crate::operators::ActionError;
use crate::store::{ErrorKind, StoreError};

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    /// HTTP status.
    #[serde(skip)]
    pub status: StatusCode,
    /// Stable code: `unauthorized`, `forbidden`, `own-order`, `not-found`, `conflict`,
    /// `bad-request`, `too-large`, `stale` (a version precondition failed: read again), `job-running` (a run is going here, or one of another kind is unfinished; the
    /// message names it), `lease-lost`, `unavailable` (the database is busy or unreachable: try again),
    /// `internal`.
    pub code: &'static str,
    /// What went wrong.
    pub message: String,
    /// The permission path that would allow the action (for `forbidden`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing_permission: Option<String>,
}

impl ApiError {
    /// An error with a status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), missing_permission: None }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad-request", message)
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not-found", message)
    }

    /// 500, logged: the details stay in the log.
    pub fn internal(error: impl std::fmt::Display) -> ApiError {
        tracing::error!("internal error: {error}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("internal error: {error}"))
    }
}

impl From<crate::permissions::Denied> for ApiError {
    fn from(denied: crate::permissions::Denied) -> Self {
        ApiError {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            missing_permission: Some(denied.missing.clone()),
            message: denied.to_string(),
        }
    }
}

impl From<ActionError> for ApiError {
    fn from(error: ActionError) -> Self {
        match error {
            ActionError::Denied(denied) => denied.into(),
            ActionError::UnknownUser(_) => ApiError::unauthorized(error.to_string()),
            ActionError::OwnOrder { .. } => ApiError::new(StatusCode::FORBIDDEN, "own-order", error.to_string()),
            ActionError::NoSuchOrder(_) => ApiError::not_found(error.to_string()),
            ActionError::Refused(_) => ApiError::new(StatusCode::CONFLICT, "conflict", error.to_string()),
            ActionError::TooMany(_) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", error.to_string()),
            ActionError::NoOrders
            | ActionError::Missing(_)
            | ActionError::TooLong(_)
            | ActionError::UnknownName { .. }
            | ActionError::Invalid(_) => ApiError::bad_request(error.to_string()),
            ActionError::Store(store) => store.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error.kind() {
            ErrorKind::NotFound => ApiError::not_found(error.to_string()),
            // A transition the machine refused conflicts with the order's state; other refusals
            // are the request's own fault.
            ErrorKind::Refused if matches!(error, StoreError::Refused { .. }) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", error.to_string())
            }
            ErrorKind::Refused => ApiError::bad_request(error.to_string()),
            ErrorKind::Conflict => ApiError::new(StatusCode::CONFLICT, "conflict", error.to_string()),
            ErrorKind::LeaseLost => ApiError::new(StatusCode::CONFLICT, "lease-lost", error.to_string()),
            ErrorKind::Stale => ApiError::new(StatusCode::PRECONDITION_FAILED, "stale", error.to_string()),
            ErrorKind::Unavailable => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", error.to_string()),
            ErrorKind::Internal => ApiError::internal(error),
        }
    }
}

/// The code of a job refused because a run of another kind is unfinished.
pub const JOB_RUNNING: &str = "job-running";

impl From<JobError> for ApiError {
    fn from(error: JobError) -> Self {
        match error {
            JobError::Store(store) => store.into(),
            JobError::Busy(_) => ApiError::new(StatusCode::CONFLICT, JOB_RUNNING, error.to_string()),
            JobError::Stopped => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stopping", error.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            error: &'a ApiError,
        }
        let mut response = (self.status, Json(Body { error: &self })).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}
