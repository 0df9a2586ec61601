//! A SCIM client over wasi:http (wstd): one request at a time, errors classified the way the
//! host's retry policy needs them.

use serde_json::Value;
use wstd::http::{Body, Client, ErrorCode, Method, Request};

use crate::exports::provision::plugin::fulfil::{ErrorKind, Failure};
use crate::provision::plugin::log::{self, Level};

/// The SCIM media type.
const SCIM_JSON: &str = "application/scim+json";

/// A SCIM service: base URL and bearer token.
pub struct Scim {
    base: String,
    token: Option<String>,
    client: Client,
}

/// A response's JSON body (null when empty).
pub struct Answer {
    pub body: Value,
}

pub fn permanent(message: String) -> Failure {
    Failure { kind: ErrorKind::Permanent, message, retry_after_seconds: None }
}

pub fn transient(message: String, retry_after_seconds: Option<u32>) -> Failure {
    Failure { kind: ErrorKind::Transient, message, retry_after_seconds }
}

impl Scim {
    pub fn new(base: String, token: Option<String>) -> Scim {
        Scim { base: base.trim_end_matches('/').to_string(), token, client: Client::new() }
    }

    /// Sends a request; a 2xx answer is `Ok`, anything else a failure: 408, 429, 5xx and network
    /// errors are transient (with the server's Retry-After), other 4xx permanent with the SCIM
    /// `detail`.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Answer, Failure> {
        self.call_allowing(method, path, body, &[]).await
    }

    /// Like [`Scim::call`], but the statuses in `accepted` are answers too (e.g. 404 on a DELETE).
    pub async fn call_allowing(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        accepted: &[u16],
    ) -> Result<Answer, Failure> {
        let url = format!("{}{path}", self.base);
        let text = body.map(|b| b.to_string()).unwrap_or_default();
        log::write(Level::Debug, &format!("{method} {path} {text}"), &[]);
        let mut request = Request::builder().method(method.clone()).uri(&url).header("Accept", SCIM_JSON);
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header("Content-Type", SCIM_JSON);
        }
        let request =
            request.body(Body::from(text)).map_err(|e| permanent(format!("cannot build {method} {path}: {e}")))?;
        let response = match self.client.send(request).await {
            Ok(response) => response,
            Err(error) => {
                return Err(match error.downcast_ref::<ErrorCode>() {
                    Some(ErrorCode::HttpRequestDenied) => {
                        permanent(format!("the host refused {method} {url}: it is not granted to this plugin"))
                    }
                    _ => transient(format!("cannot reach {url}: {error:#}"), None),
                });
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok());
        let mut body = response.into_body();
        let bytes = body
            .contents()
            .await
            .map_err(|e| transient(format!("reading the answer to {method} {path}: {e:#}"), None))?;
        let json: Value =
            if bytes.is_empty() { Value::Null } else { serde_json::from_slice(bytes).unwrap_or(Value::Null) };
        if (200..300).contains(&status) || accepted.contains(&status) {
            return Ok(Answer { body: json });
        }
        let detail =
            json.get("detail").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| format!("HTTP {status}"));
        let message = format!("{method} {path}: {status} {detail}");
        Err(if status == 408 || status == 429 || status >= 500 {
            transient(message, retry_after)
        } else {
            permanent(message)
        })
    }

    /// The id of the user whose externalId is `owner`, if there is one.
    pub async fn user_by_owner(&self, owner: &str) -> Result<Option<String>, Failure> {
        let filter = format!("externalId eq \"{}\"", owner.replace('"', "\\\""));
        let answer = self.call(Method::GET, &format!("/Users?filter={}", encode(&filter)), None).await?;
        Ok(first_id(&answer.body))
    }

    /// The id of the group whose displayName is `name`, if there is one.
    pub async fn group_by_name(&self, name: &str) -> Result<Option<String>, Failure> {
        let filter = format!("displayName eq \"{}\"", name.replace('"', "\\\""));
        let answer = self.call(Method::GET, &format!("/Groups?filter={}", encode(&filter)), None).await?;
        Ok(first_id(&answer.body))
    }
}

fn first_id(list: &Value) -> Option<String> {
    list.get("Resources")?.as_array()?.first()?.get("id")?.as_str().map(str::to_string)
}

/// Percent-encodes a query value.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
