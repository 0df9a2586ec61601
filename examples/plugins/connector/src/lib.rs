//! A connector template: a drop for systems that import files. Each order becomes one CSV line
//! (`idempotency key, change, owner, attribute=value...`) appended to `{dir}/{resource type}.csv`
//! in the directory the host granted; the importing system picks the files up.
//!
//! Config: `dir`, the guest path of the granted directory (default `/drop`). Grant it in the
//! host's config: `[[plugins.NAME.grants.dirs]] host = "drop", guest = "/drop", writable = true`.

wit_bindgen::generate!({ path: "wit", world: "connector" });

use std::io::Write;

use exports::provision::plugin::describe::{self, Description};
use exports::provision::plugin::fulfil::{self, ErrorKind, Failure, Outcome};
use provision::plugin::config;
use provision::plugin::types::{ChangeKind, Order};

struct Drop;

/// A CSV field: quoted when it holds a comma, a quote or a line break.
fn field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn line(order: &Order) -> String {
    let change = match order.change {
        ChangeKind::Added => "added",
        ChangeKind::Modified => "modified",
        ChangeKind::Deleted => "deleted",
    };
    let mut fields = vec![
        field(&order.idempotency_key),
        change.to_string(),
        field(&order.owner),
    ];
    fields.extend(
        order
            .attributes
            .iter()
            .map(|a| field(&format!("{}={}", a.name, a.value))),
    );
    fields.join(",") + "\n"
}

fn append(order: &Order) -> Result<(), String> {
    // Resource type names come from the host's config; keep them to a safe file name anyway.
    if !order
        .resource_type
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "resource type `{}` is not a safe file name",
            order.resource_type
        ));
    }
    let dir = config::get("dir").unwrap_or_else(|| "/drop".into());
    let path = format!("{}/{}.csv", dir.trim_end_matches('/'), order.resource_type);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("cannot open {path} (is the directory granted?): {e}"))?;
    file.write_all(line(order).as_bytes())
        .map_err(|e| format!("cannot write {path}: {e}"))
}

impl fulfil::Guest for Drop {
    /// One outcome per order, in order. A failure to write may pass (a full disk): transient.
    fn fulfil(orders: Vec<Order>) -> Vec<Outcome> {
        orders
            .iter()
            .map(|order| match append(order) {
                Ok(()) => Outcome::Executed(Some(order.owner.clone())),
                Err(message) => Outcome::Failed(Failure {
                    kind: ErrorKind::Transient,
                    message,
                    retry_after_seconds: None,
                }),
            })
            .collect()
    }
}

impl describe::Guest for Drop {
    fn describe() -> Description {
        Description {
            name: env!("CARGO_PKG_NAME").into(),
            version: env!("CARGO_PKG_VERSION").into(),
            summary: "Appends orders as CSV lines to a granted directory for a system that imports files.".into(),
            resource_types: Vec::new(),
        }
    }
}

export!(Drop);
