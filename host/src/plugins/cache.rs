//! Compiled components cached on disk, keyed by the wasm's sha256 and the engine's
//! configuration: compiling a component takes tens of milliseconds to seconds, loading the
//! cached artifact well under one.
//!
//! **Architecture invariant**: the cache directory is as trusted as the binary. A cached
//! artifact is native code that is mapped and run without verification, so only the host
//! writes there; a file that fails to load is recompiled and replaced.

use std::hash::Hasher;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The on-disk cache of compiled components.
pub(crate) struct CompileCache {
    dir: PathBuf,
    engine_key: String,
}

/// Feeds `Hash` output into sha256, for a key that is stable across runs (std's hasher is
/// only promised stable within one process).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        0 // unused: the digest is read from the inner state
    }
}

impl CompileCache {
    pub fn new(dir: &Path, engine: &Engine) -> std::io::Result<CompileCache> {
        std::fs::create_dir_all(dir)?;
        let mut hasher = Sha256Hasher(Sha256::new());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
        let engine_key = hex::encode(&hasher.0.finalize()[..8]);
        Ok(CompileCache { dir: dir.to_path_buf(), engine_key })
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.engine_key))
    }

    /// The cached compilation of the component whose sha256 is given, if there is a usable one.
    pub fn get(&self, engine: &Engine, sha256: &str) -> Option<Component> {
        let path = self.path(sha256);
        // Read into memory rather than map the file: a mapped file that someone truncates
        // under a running host would crash it (SIGBUS); a copy cannot be taken away.
        let bytes = std::fs::read(&path).ok()?;
        // SAFETY: the artifact was written by `put` below from a component this host compiled,
        // into a directory only the host writes (see the module's invariant); wasmtime also
        // checks that it was produced by a compatible engine and refuses it otherwise.
        match unsafe { Component::deserialize(engine, &bytes) } {
            Ok(component) => Some(component),
            Err(error) => {
                tracing::warn!(path = %path.display(), "ignoring a compiled component that does not load: {error}");
                None
            }
        }
    }

    /// Stores a compiled component; failures only cost the next start a compilation.
    pub fn put(&self, sha256: &str, component: &Component) {
        let result = component.serialize().map_err(std::io::Error::other).and_then(|bytes| {
            // Write then rename, so a concurrent reader never sees half a file.
            let mut file = tempfile::NamedTempFile::new_in(&self.dir)?;
            std::io::Write::write_all(&mut file, &bytes)?;
            file.persist(self.path(sha256)).map_err(|e| e.error)?;
            Ok(())
        });
        if let Err(error) = result {
            tracing::warn!(dir = %self.dir.display(), "cannot cache a compiled component: {error}");
        }
    }
}
