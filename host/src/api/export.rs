//! `GET /api/v1/history`: the audit export over HTTP, streamed. The export runs on a blocking
//! thread and hands the response chunks through a small bounded channel, so a slow client slows
//! the export instead of growing memory, and a client that goes away stops it.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::v1::QueryOf;
use super::{ApiError, AppState, Caller};
use crate::app::history::{Format, export, parse_time};
use crate::permissions::Capability;

/// Bytes per chunk sent to the client.
const CHUNK: usize = 64 * 1024;

/// A response body fed by the channel.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|bytes| Ok(http_body::Frame::data(bytes))))
    }
}

/// What the export writes into: chunks for the channel.
struct ChannelWriter {
    buffer: Vec<u8>,
    to: mpsc::Sender<Bytes>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buffer));
        self.to
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ExportQuery {
    /// From this time on (RFC 3339 or a date).
    since: String,
    /// Before this time (default: now).
    until: Option<String>,
    /// `jsonl` (default) or `csv`.
    #[serde(default)]
    #[param(value_type = Option<String>, pattern = "^(jsonl|csv)$")]
    format: Format,
}

/// Every order state change in the range, oldest first, as JSON lines (one `AuditRow` each) or
/// CSV, streamed.
#[utoipa::path(get, path = "/api/v1/history", tag = "audit", params(ExportQuery),
    responses((status = 200, description = "The changes, streamed",
            content((String = "application/jsonl"), (String = "text/csv"))),
        (status = 400, body = super::error::ErrorBody), (status = 401, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody)))]
pub(super) async fn history(
    app: axum::extract::State<AppState>,
    caller: Caller,
    QueryOf(q): QueryOf<ExportQuery>,
) -> Result<Response, ApiError> {
    caller.require(Capability::View)?;
    let since = parse_time(&q.since).map_err(|e| ApiError::bad_request(format!("since: {e}")))?;
    let until = match &q.until {
        Some(until) => parse_time(until).map_err(|e| ApiError::bad_request(format!("until: {e}")))?,
        None => crate::model::now_ms() + 1,
    };
    if until <= since {
        return Err(ApiError::bad_request("until must be after since"));
    }
    let (to, from) = mpsc::channel(4);
    let store = app.reader()?;
    let format = q.format;
    let login = caller.user.login.clone();
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter { buffer: Vec::with_capacity(CHUNK), to };
        match export(&store, since, until, format, &mut out, |_| {}) {
            Ok(rows) => tracing::info!(rows, user = %login, "history exported"),
            // A failure after the first bytes cannot change the status any more: the body ends
            // short, which the client sees as a cut-off transfer.
            Err(error) => tracing::warn!(user = %login, "history export stopped: {error}"),
        }
        drop(out);
        app.give_back(store);
    });
    let mut response = axum::body::Body::new(ChannelBody(from)).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(format.media_type()));
    Ok(response)
}
