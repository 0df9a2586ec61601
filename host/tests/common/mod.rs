//! What the CLI tests share: running the `provision` binary.

#![allow(dead_code)] // each test file uses a part

pub mod hooks;
pub mod server;

use std::path::Path;
use std::process::{Command, Output};

/// `provision ARGS` in `dir`, without the environment's config or user.
pub fn command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_provision"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("PROVISION_CONFIG")
        .env_remove("PROVISION_USER")
        .env_remove("PROVISION_LOG");
    command
}

/// Runs `provision ARGS` in `dir`.
pub fn run(dir: &Path, args: &[&str]) -> Output {
    command(dir, args).output().expect("run provision")
}

/// Bytes as text, for messages.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
