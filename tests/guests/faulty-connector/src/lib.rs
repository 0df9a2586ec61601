//! A connector that misbehaves as its `mode` config says: `panic`, `loop`, `alloc`, `sleep`,
//! `garbage` (one outcome too many), `escape` (try to read files it was not granted and report
//! what happened as each order's permanent error), `transient` / `permanent` (fail every order
//! so; `retry-after` seconds for transient), or `poison` (misbehave as `poison-mode` says,
//! `panic` by default, on any batch holding an order of an owner listed in `poison`, carry out
//! the others).

wit_bindgen::generate!({ path: "../../../wit", world: "connector" });

use exports::provision::plugin::fulfil::{ErrorKind, Failure, Guest, Outcome};
use provision::plugin::config;
use provision::plugin::types::Order;

struct FaultyConnector;

fn escape() -> String {
    ["/etc/passwd", "/data/../etc/passwd", "../etc/passwd", "/proc/self/environ"]
        .iter()
        .map(|path| match std::fs::read(path) {
            Ok(bytes) => format!("{path}: READ {} BYTES", bytes.len()),
            Err(e) => format!("{path}: refused ({e})"),
        })
        .chain(
            // A link planted in the writable grant that leads out of it, and one that stays in.
            [("../../../..", "/data/way-out"), ("/etc", "/data/etc"), ("journal", "/data/inside")].iter().map(
                |(target, link)| {
                    #[allow(deprecated)] // the one stable way to make a link on WASI
                    match std::fs::soft_link(target, link) {
                        Ok(()) => format!("link {link} -> {target}: CREATED"),
                        Err(e) => format!("link {link} -> {target}: refused ({e})"),
                    }
                },
            ),
        )
        .collect::<Vec<_>>()
        .join("; ")
        + &format!("; env vars: {}", std::env::vars().count())
}

impl Guest for FaultyConnector {
    fn fulfil(orders: Vec<Order>) -> Vec<Outcome> {
        match config::get("mode").as_deref() {
            Some("panic") => panic!("connector exploded on order {}", orders.first().map_or(0, |o| o.id)),
            Some("loop") => misbehave::spin(),
            Some("alloc") => misbehave::hoard(),
            Some("sleep") => misbehave::sleep(),
            Some("garbage") => (0..=orders.len()).map(|_| Outcome::Executed(None)).collect(),
            Some(kind @ ("transient" | "permanent")) => {
                let retry_after_seconds = config::get("retry-after").and_then(|s| s.parse().ok());
                let kind = if kind == "transient" { ErrorKind::Transient } else { ErrorKind::Permanent };
                orders
                    .iter()
                    .map(|o| {
                        let message = format!("service unavailable for {}", o.owner);
                        Outcome::Failed(Failure { kind, message, retry_after_seconds })
                    })
                    .collect()
            }
            Some("poison") => {
                let poison = config::get("poison").unwrap_or_default();
                if let Some(bad) = orders.iter().find(|o| poison.split(',').any(|p| p == o.owner)) {
                    let mode = config::get("poison-mode");
                    return misbehave::poisoned(mode.as_deref(), || {
                        format!("cannot handle the order of {}", bad.owner)
                    });
                }
                orders.iter().map(|o| Outcome::Executed(Some(o.owner.clone()))).collect()
            }
            Some("escape") => {
                let report = escape();
                orders
                    .iter()
                    .map(|_| {
                        Outcome::Failed(Failure {
                            kind: ErrorKind::Permanent,
                            message: report.clone(),
                            retry_after_seconds: None,
                        })
                    })
                    .collect()
            }
            _ => orders.iter().map(|_| Outcome::Executed(None)).collect(),
        }
    }
}

impl exports::provision::plugin::describe::Guest for FaultyConnector {
    fn describe() -> exports::provision::plugin::describe::Description {
        exports::provision::plugin::describe::Description {
            name: env!("CARGO_PKG_NAME").to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            summary: "Test guest: a connector that misbehaves on purpose.".to_string(),
            resource_types: Vec::new(),
        }
    }
}

export!(FaultyConnector);
