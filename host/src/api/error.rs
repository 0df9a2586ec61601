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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ApiError {
    /// HTTP status.
    #[serde(skip)]
    #[schema(ignore)]
    pub status: StatusCode,
    /// Stable code: `unauthorized`, `forbidden`, `own-order`, `not-found`, `conflict`,
    /// `bad-request`, `too-large`, `stale` (a version precondition failed: read again), `job-running` (a run is going here, or one of another kind is unfinished; the
    /// message names it), `lease-lost`, `unavailable` (the database is busy or unreachable: try again),
    /// `internal`.
    #[schema(value_type = String)]
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
            JobError::ConfigDiffers { .. } => ApiError::new(StatusCode::CONFLICT, "config-differs", error.to_string()),
        }
    }
}

/// The body of every error answer: `{"error": {...}}`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ApiError,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let unauthorized = status == StatusCode::UNAUTHORIZED;
        let mut response = (status, Json(ErrorBody { error: self })).into_response();
        if unauthorized {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A deserialisation error (serde's, axum's) in the words of the API's users: JSON's kinds
/// (object, list, number, text), no Rust type names, no internal struct names.
pub fn plain(message: &str) -> String {
    let mut text = message.trim().to_string();
    for prefix in [
        "Failed to deserialize the JSON body into the target type: ",
        "Failed to parse the request body as JSON: ",
        "Failed to deserialize query string: ",
        "Invalid URL: ",
    ] {
        if let Some(rest) = text.strip_prefix(prefix) {
            text = rest.to_string();
        }
    }
    // "expected struct DecideBody", "expected a map" → an object; and the other JSON kinds.
    while let Some(start) = text.find("struct ") {
        let end =
            text[start + 7..].find(|c: char| !(c.is_alphanumeric() || c == '_')).map_or(text.len(), |e| start + 7 + e);
        text.replace_range(start..end, "an object");
    }
    while let Some(start) = text.find("enum ") {
        let end =
            text[start + 5..].find(|c: char| !(c.is_alphanumeric() || c == '_')).map_or(text.len(), |e| start + 5 + e);
        text.replace_range(start..end, "one of the values described");
    }
    let words = [
        ("Cannot parse `", "`"),
        ("` to a `i64`", "` is not a whole number"),
        ("` to a `u64`", "` is not a whole number"),
        ("` to a `u32`", "` is not a whole number"),
        ("` to a `usize`", "` is not a whole number"),
        ("` to a `f64`", "` is not a number"),
        ("` to a `bool`", "` is not true or false"),
        ("expected a map", "expected an object"),
        ("expected a sequence", "expected a list"),
        ("expected i64", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected usize", "expected a whole number"),
        ("expected a borrowed string", "expected a text"),
        ("expected a string", "expected a text"),
        ("invalid type: integer", "found the number"),
        ("invalid type: floating point", "found the number"),
        ("invalid type: string", "found the text"),
        ("invalid type: map", "found an object"),
        ("invalid type: sequence", "found a list"),
        ("invalid type: boolean", "found"),
        ("invalid type: null", "found null"),
        ("invalid type: unit value", "found null"),
        ("invalid value: integer", "the number"),
        ("invalid digit found in string", "is not a whole number"),
        ("cannot parse integer from empty string", "is empty, not a whole number"),
        ("number too large to fit in target type", "is too large a number"),
        ("EOF while parsing", "the body ends too early (cut short?) while reading"),
        ("trailing characters", "something follows the JSON value"),
        ("missing field", "the field is missing:"),
        ("unknown variant", "unknown value"),
    ];
    for (from, to) in words {
        text = text.replace(from, to);
    }
    text
}
