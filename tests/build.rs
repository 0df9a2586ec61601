//! Builds the test-only guest components in `tests/guests/` (plugins that misbehave on purpose).

#[path = "../host/build/guests.rs"]
mod guests;

fn main() {
    let manifest = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    guests::build_guests(
        &manifest.join("guests"),
        &manifest.join("../wit"),
        &["faulty-rule", "faulty-connector", "http-probe", "legacy-rule"],
        "test_guests",
    );
}
