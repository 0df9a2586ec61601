//! Outbound HTTP for plugins (`wasi:http/outgoing-handler`), checked against the plugin's
//! grants on every request: the scheme, host and port must match a granted origin exactly (a
//! `*.domain` grant matches subdomains); an IP literal must itself be granted; a guest cannot
//! set a `Host` header (wasi-http forbids it) and one that differs from the authority is
//! refused; a redirect is a new request from the guest, checked the same way. Bodies and time
//! are bounded per plugin. A connection's rate limit (`plugins/rate.rs`) is taken here, one
//! token per request, before it is sent; the wait is added to the call's time limit.
//!
//! **Architecture invariant**: a plugin reaches no host it was not granted. A refusal is
//! `HttpRequestDenied` to the guest and a warning in the host's log naming plugin and URL.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::config::{HttpGrant, HttpLimits};

type Sent = Box<
    dyn Future<Output = Result<(http::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>), Error>>
        + Send,
>;

/// The hooks of one plugin's HTTP requests.
pub(crate) struct Outbound {
    pub stats: Arc<super::Stats>,
    pub plugin: Arc<str>,
    pub grants: Arc<Vec<HttpGrant>>,
    pub limits: HttpLimits,
    /// The rate limit of the connection the call is for.
    pub rate: Option<Arc<super::rate::Bucket>>,
    /// Nanoseconds the call's requests waited for a token, summed (the call's time limit grows
    /// by it).
    pub waited: Arc<AtomicU64>,
}

impl Outbound {
    /// Why a request is refused, if it is.
    fn refusal(&self, request: &http::Request<WasiBody>) -> Option<String> {
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("").to_ascii_lowercase();
        let Some(host) = uri.host() else { return Some("no host".into()) };
        let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
        if !self.grants.iter().any(|g| g.allows(&scheme, host, port)) {
            let granted: Vec<String> = self.grants.iter().map(ToString::to_string).collect();
            let granted = if granted.is_empty() { "nothing".to_string() } else { granted.join(", ") };
            return Some(format!("{scheme}://{host}:{port} is not granted (granted: {granted})"));
        }
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        if let Some(bad) =
            request.headers().get_all(http::header::HOST).iter().find(|v| v.as_bytes() != authority.as_bytes())
        {
            return Some(format!("Host header {bad:?} differs from the authority `{authority}`"));
        }
        let length =
            request.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if length.is_some_and(|n| n > self.limits.max_request) {
            return Some(format!(
                "a request body of {} bytes is over the limit of {}",
                length.unwrap_or(0),
                self.limits.max_request
            ));
        }
        None
    }
}

/// Maps a limited body's error back: over the limit, or the inner error.
fn limit_error(error: Box<dyn std::error::Error + Send + Sync>, over: Error) -> Error {
    if error.is::<LengthLimitError>() {
        return over;
    }
    match error.downcast::<Error>() {
        Ok(inner) => *inner,
        Err(other) => Error::InternalError(Some(other.to_string())),
    }
}

impl WasiHttpHooks for Outbound {
    fn is_forbidden_header(&mut self, name: &http::HeaderName) -> bool {
        // wasi-http already refuses the headers a guest may not set; a `Host` can only come from
        // a guest trying to set one (responses carry none), so that attempt is logged like any
        // other refused request.
        if name == http::header::HOST {
            tracing::warn!(target: "plugin", plugin = %self.plugin, "refused an outbound request: the plugin tried to set a Host header");
        }
        wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(name)
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Sent {
        if let Some(reason) = self.refusal(&request) {
            tracing::warn!(target: "plugin", plugin = %self.plugin, url = %request.uri(), "refused an outbound request: {reason}");
            // Take the body the guest is writing before answering, so that its write completes
            // and the refusal, not a broken pipe, is what it sees.
            let max = usize::try_from(self.limits.max_request).unwrap_or(usize::MAX);
            return Box::new(async move {
                let _ = Limited::new(request.into_body(), max).collect().await;
                Err(Error::HttpRequestDenied)
            });
        }
        tracing::debug!(target: "plugin", plugin = %self.plugin, method = %request.method(), url = %request.uri(), "outbound request");
        let limits = self.limits;
        let cap = |asked: Option<std::time::Duration>| Some(asked.map_or(limits.timeout, |a| a.min(limits.timeout)));
        let options = RequestOptions {
            connect_timeout: cap(options.and_then(|o| o.connect_timeout)),
            first_byte_timeout: cap(options.and_then(|o| o.first_byte_timeout)),
            between_bytes_timeout: cap(options.and_then(|o| o.between_bytes_timeout)),
        };
        let max_request = usize::try_from(limits.max_request).unwrap_or(usize::MAX);
        let stats = self.stats.clone();
        let wait = self.rate.as_ref().map_or(std::time::Duration::ZERO, |b| b.take(std::time::Instant::now()));
        if !wait.is_zero() {
            self.waited.fetch_add(u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
            tracing::trace!(target: "plugin", plugin = %self.plugin, "waiting {wait:?} for the connection's rate limit");
        }
        Box::new(async move {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let started = std::time::Instant::now();
            // The whole request body first, then the request, with its length: the guest's
            // writes never race the connection (a server answering and closing early would
            // otherwise break a write the guest has not finished), no server receives a chunked
            // body it cannot read, and the size limit is exact.
            let (mut parts, body) = request.into_parts();
            let bytes = Limited::new(body, max_request)
                .collect()
                .await
                .map_err(|e| limit_error(e, Error::HttpRequestBodySize(Some(limits.max_request))))?
                .to_bytes();
            parts.headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(bytes.len()));
            let request = http::Request::from_parts(parts, Full::new(bytes).map_err(Error::from).boxed_unsync());
            let sent = wasmtime_wasi_http::default_send_request(request, Some(options));
            let answer = tokio::time::timeout(limits.timeout, sent).await;
            stats.add_http(started.elapsed());
            let (response, io) = match answer {
                Ok(result) => result?,
                Err(_) => return Err(Error::HttpResponseTimeout),
            };
            let max = limits.max_response;
            let response = response.map(move |body| {
                Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX))
                    .map_err(move |e| limit_error(e, Error::HttpResponseBodySize(Some(max))))
                    .boxed_unsync()
            });
            Ok((response, Box::new(io) as Box<dyn Future<Output = Result<(), Error>> + Send>))
        })
    }
}
