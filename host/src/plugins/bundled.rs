//! The first-party plugins, built from `plugins/` by `host/build.rs` and compiled into the
//! binary so that a deployment needs no other file. Config refers to them as `bundled:NAME`.

mod generated {
    include!(concat!(env!("OUT_DIR"), "/bundled.rs"));
}

pub use generated::ALL;

/// The bytes of a bundled component, by package name (e.g. `file-connector`).
pub fn get(name: &str) -> Option<&'static [u8]> {
    ALL.iter().find(|(n, _)| *n == name).map(|(_, bytes)| *bytes)
}
