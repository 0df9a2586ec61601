//! Builds the review rule's Extism plugin (`extism-rule/`) as a core module for
//! wasm32-unknown-unknown with a nested `cargo build` into OUT_DIR, as host/build.rs does for
//! the bundled components, and hands its path to the bench as `EXTISM_RULE_WASM`.

use std::path::PathBuf;
use std::process::{Command, Stdio};

const TARGET: &str = "wasm32-unknown-unknown";

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let guest = manifest.join("extism-rule");
    for path in ["Cargo.toml", "Cargo.lock", "src"] {
        println!("cargo::rerun-if-changed={}", guest.join(path).display());
    }

    if !target_installed() && !add_target() {
        println!(
            "cargo::error=the {TARGET} target is not installed and `rustup target add {TARGET}` \
             failed; the Extism plugin of the rule benchmark is built for it"
        );
        return;
    }

    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_dir = out_dir.join("extism-rule");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&guest)
        .args(["build", "--release", "--locked", "--target", TARGET, "--target-dir"])
        .arg(&target_dir);
    // The outer build's flags are for the host, not the guest; a shared target dir deadlocks on
    // cargo's lock; clippy's wrapper would lint the guest. Keep the jobserver (CARGO_MAKEFLAGS)
    // and RUSTUP_TOOLCHAIN.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("CARGO_BUILD_")
            || key.starts_with("CARGO_PROFILE_")
            || key.starts_with("CARGO_ENCODED_")
            || matches!(
                key,
                "RUSTFLAGS" | "CARGO_TARGET_DIR" | "RUSTC_WORKSPACE_WRAPPER" | "RUSTC_WRAPPER" | "CLIPPY_ARGS"
            )
        {
            command.env_remove(key);
        }
    }
    // Cargo reads a build script's stdout as instructions: keep the nested build's off it.
    command.stdout(Stdio::null());
    let status = command.status().expect("failed to run cargo for the Extism plugin");
    if !status.success() {
        println!(
            "cargo::error=building the Extism plugin in {} failed ({status}); its output is above",
            guest.display()
        );
        return;
    }
    let wasm = target_dir.join(TARGET).join("release").join("extism_rule.wasm");
    println!("cargo::rustc-env=EXTISM_RULE_WASM={}", wasm.display());
}

fn target_installed() -> bool {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    Command::new(rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).is_dir())
        .unwrap_or(false)
}

/// Adds the target to the toolchain building this (RUSTUP_TOOLCHAIN, which rustup sets, picks it).
fn add_target() -> bool {
    Command::new("rustup")
        .args(["target", "add", TARGET])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
