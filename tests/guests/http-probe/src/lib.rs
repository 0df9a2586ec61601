//! A connector that probes the network: for each order, a GET of its `url` attribute (with a
//! `host` attribute as Host header, if any; a POST of `post-bytes` bytes instead when that
//! attribute is given), following up to 3 redirects. The outcome says
//! what happened: executed with `STATUS BYTES` or a permanent error naming the error code.

wit_bindgen::generate!({ path: "../../../wit", world: "connector" });

use exports::provision::plugin::fulfil::{ErrorKind, Failure, Guest, Outcome};
use provision::plugin::types::Order;
use wstd::http::{Body, Client, ErrorCode, Request};

struct HttpProbe;

fn attribute<'a>(order: &'a Order, name: &str) -> Option<&'a str> {
    order.attributes.iter().find(|a| a.name == name).map(|a| a.value.as_str())
}

async fn probe(order: &Order) -> Result<String, String> {
    let mut url = attribute(order, "url").ok_or("no url attribute")?.to_string();
    for _ in 0..=3 {
        let post = attribute(order, "post-bytes").map(|n| n.parse::<usize>().map_err(|e| format!("post-bytes: {e}")));
        let mut request = if post.is_some() { Request::post(&url) } else { Request::get(&url) };
        if let Some(host) = attribute(order, "host") {
            request = request.header("Host", host);
        }
        let body = match post {
            Some(n) => Body::from(vec![b'x'; n?]),
            None => Body::empty(),
        };
        let request = request.body(body).map_err(|e| format!("request: {e}"))?;
        let response = Client::new().send(request).await.map_err(|e| match e.downcast_ref::<ErrorCode>() {
            Some(code) => format!("{code:?}"),
            None => format!("{e:#}"),
        })?;
        if response.status().is_redirection() {
            url = response
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .ok_or("a redirect without Location")?
                .to_string();
            continue;
        }
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let bytes = body.contents().await.map_err(|e| match e.downcast_ref::<ErrorCode>() {
            Some(code) => format!("{code:?}"),
            None => format!("body: {e:#}"),
        })?;
        return Ok(format!("{status} {} bytes", bytes.len()));
    }
    Err("too many redirects".into())
}

impl Guest for HttpProbe {
    fn fulfil(orders: Vec<Order>) -> Vec<Outcome> {
        wstd::runtime::block_on(async {
            let mut outcomes = Vec::new();
            for order in &orders {
                outcomes.push(match probe(order).await {
                    Ok(what) => Outcome::Executed(Some(what)),
                    Err(message) => {
                        Outcome::Failed(Failure { kind: ErrorKind::Permanent, message, retry_after_seconds: None })
                    }
                });
            }
            outcomes
        })
    }
}

impl exports::provision::plugin::describe::Guest for HttpProbe {
    fn describe() -> exports::provision::plugin::describe::Description {
        exports::provision::plugin::describe::Description {
            name: env!("CARGO_PKG_NAME").to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            summary: "Test guest: a connector that probes its outbound HTTP grants.".to_string(),
            // Made for one resource type, so the host's check of `describe` can be tested.
            resource_types: vec!["Probe_Account".to_string()],
        }
    }
}

export!(HttpProbe);
