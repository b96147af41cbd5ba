//! The compile cache: serialized modules on disk, checked before they are trusted.
//!
//! A file is `MAGIC`, the BLAKE3 hash of the artifact, then the artifact. Loading verifies the
//! hash (a torn or tampered file is recompiled, never deserialized) and wasmtime checks the
//! artifact's engine compatibility. Writes go to a temporary file renamed into place, so
//! concurrent runs never see a partial file.

use std::io::Write;
use std::path::Path;

const MAGIC: &[u8; 8] = b"GOJSC\x00\x01\x00";

/// A cached module, or `None` if absent, damaged or incompatible.
pub(crate) fn load(engine: &wasmtime::Engine, path: &Path) -> Option<wasmtime::Module> {
    let data = std::fs::read(path).ok()?;
    let rest = data.strip_prefix(MAGIC.as_slice())?;
    let (hash, artifact) = rest.split_at_checked(32)?;
    if blake3::hash(artifact).as_bytes() != hash {
        let _ = std::fs::remove_file(path);
        return None;
    }
    // SAFETY: the artifact was produced by `Module::serialize` of this same engine configuration
    // (the file name includes the engine's compatibility hash) and its content hash matches what
    // we wrote, so it is not truncated or altered.
    match unsafe { wasmtime::Module::deserialize(engine, artifact) } {
        Ok(m) => Some(m),
        Err(_) => {
            let _ = std::fs::remove_file(path);
            None
        }
    }
}

/// Save a compiled module. Failures are ignored: the cache is an optimisation.
pub(crate) fn store(module: &wasmtime::Module, path: &Path) {
    let Ok(artifact) = module.serialize() else {
        return;
    };
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let tmp = dir.join(format!(
        ".tmp-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(MAGIC)?;
        f.write_all(blake3::hash(&artifact).as_bytes())?;
        f.write_all(&artifact)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    if write().is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}
