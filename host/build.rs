//! Builds the first-party plugins in `plugins/` as WebAssembly components and bundles them into
//! the `provision` binary (see `src/plugins/bundled.rs`).

#[path = "build/guests.rs"]
mod guests;

fn main() {
    let manifest = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    guests::build_guests(
        &manifest.join("../plugins"),
        &manifest.join("../wit"),
        &["file-connector", "classification-review", "permission-router", "scim-connector"],
        "bundled",
    );
}
