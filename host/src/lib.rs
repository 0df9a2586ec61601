//! The provisioning policy host: the provisioning state machine of identity governance, its
//! storage, and sandboxed WebAssembly plugins (connectors, review rules, notification
//! routers). See ARCHITECTURE.md for the map; `provision --help` for the CLI.

// The library meets input from outside (files, requests, plugins): no unwrap there. Tests may.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod api;
pub mod app;
pub mod config;
pub mod events;
pub mod host;
pub mod import;
pub mod jobs;
pub mod limits;
pub mod machine;
pub mod manual;
pub mod model;
pub mod notify;
pub mod operators;
pub mod permissions;
pub mod plugins;
pub mod review;
pub mod store;
pub mod text;
