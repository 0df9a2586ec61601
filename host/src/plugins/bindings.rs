//! Host-side Rust types of the current WIT package in `wit/`, one `bindgen!` per world. The
//! interfaces the worlds share (`types`, `log`, `config`, `describe`) are generated once, with
//! the connector world, and reused by the others. How calls and imports are bound to a component
//! of any supported version is `versions.rs`.

#![allow(missing_docs)]

/// The `synchronising-connector` world (a superset of `connector`).
pub mod connector {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "synchronising-connector",
    });
}

/// The `review-rule` world.
pub mod review {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "review-rule",
        with: {
            "provision:plugin/types": super::connector::provision::plugin::types,
            "provision:plugin/log": super::connector::provision::plugin::log,
            "provision:plugin/config": super::connector::provision::plugin::config,
            "provision:plugin/describe": super::connector::exports::provision::plugin::describe,
        },
    });
}

/// The `notification-router` world.
pub mod router {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "notification-router",
        with: {
            "provision:plugin/types": super::connector::provision::plugin::types,
            "provision:plugin/log": super::connector::provision::plugin::log,
            "provision:plugin/config": super::connector::provision::plugin::config,
            "provision:plugin/describe": super::connector::exports::provision::plugin::describe,
        },
    });
}

pub use connector::exports::provision::plugin::{describe, fulfil, read};
pub use connector::provision::plugin::{config, log, types};
pub use review::exports::provision::plugin::evaluate;
pub use router::exports::provision::plugin::route;
pub use router::provision::plugin::directory;
