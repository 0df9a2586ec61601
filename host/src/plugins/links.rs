//! Symbolic links a guest may create in its granted directories.
//!
//! wasmtime-wasi resolves every path a guest opens inside its preopened directory, links
//! included, so a link cannot take the guest out. But the link itself stays on the host's disk:
//! `link -> ../../..` planted in a writable grant leads whoever follows it next (an operator's
//! tool, a backup, another plugin with a wider grant) out of the grant. So the host refuses to
//! create a link whose target could leave the directory it is created in: an absolute target or
//! one with a `..` component (the host does not know how deep the link sits in the grant, so it
//! does not try to count levels). A link to a name inside the grant (`current`, `v2/data`)
//! is created as usual.
//!
//! **Architecture invariant**: a plugin reaches nothing it was not granted, and plants no way
//! out for anyone else.

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::WasiFilesystemView;
use wasmtime_wasi::p2::bindings::filesystem::types::{Descriptor, ErrorCode, HostDescriptor};

use super::guest::GuestState;

/// The interface wasmtime-wasi links `descriptor` under; components importing an older 0.2.x
/// are matched to it by semver.
const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// Whether a link with this target could point outside the directory it is created in.
pub(crate) fn leaves_grant(target: &str) -> bool {
    let path = std::path::Path::new(target);
    target.is_empty()
        || target.starts_with('/')
        || target.starts_with('\\')
        || path.components().any(|c| !matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir))
}

/// Replaces `descriptor.symlink-at` with one that refuses targets that leave the grant.
pub(super) fn guard(linker: &mut Linker<GuestState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(FILESYSTEM_TYPES)?;
    types.func_wrap_async(
        "[method]descriptor.symlink-at",
        |mut store: StoreContextMut<'_, GuestState>, (fd, target, link): (Resource<Descriptor>, String, String)| {
            Box::new(async move {
                if leaves_grant(&target) {
                    let plugin = store.data().plugin.clone();
                    tracing::warn!(target: "plugin", plugin = %plugin, link = %link, link_target = %target, "refused a symbolic link whose target could leave the plugin's granted directory");
                    return Ok((Err(ErrorCode::NotPermitted),));
                }
                let mut files = store.data_mut().filesystem();
                match HostDescriptor::symlink_at(&mut files, fd, target, link).await {
                    Ok(()) => Ok((Ok(()),)),
                    Err(error) => error.downcast().map(|code| (Err(code),)),
                }
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::leaves_grant;

    #[test]
    fn targets_that_could_leave_are_refused() {
        for target in ["../../../..", "/etc", "a/../../b", "a/..", "..", "", "\\windows", "sub/../x"] {
            assert!(leaves_grant(target), "{target:?}");
        }
        for target in ["current", "v2/data", "./here", "a/b/c.txt"] {
            assert!(!leaves_grant(target), "{target:?}");
        }
    }
}
