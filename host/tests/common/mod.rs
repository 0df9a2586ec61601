//! What the CLI tests share: running the `provision` binary.

#![allow(dead_code)] // each test file uses a part

pub mod hooks;
#[path = "../../../tests/src/postgres.rs"]
pub mod postgres;
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

/// Runs each command against `config` (`--config` appended), failing the test on the first that
/// does not succeed: how a test gives a deployment its profiles and users.
pub fn configure(dir: &Path, config: &Path, commands: &[&[&str]]) {
    let config = config.to_str().expect("a UTF-8 path");
    for command in commands {
        let mut args = command.to_vec();
        args.extend(["--config", config]);
        let out = run(dir, &args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    }
}
