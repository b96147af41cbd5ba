//! The compile cache: serialized modules on disk, checked before they are trusted.
//!
//! A file is `MAGIC`, the BLAKE3 hash of the artifact, then the artifact. Loading verifies the
//! hash (a torn or tampered file is recompiled, never deserialized) and wasmtime checks the
//! artifact's engine compatibility. Writes go to a temporary file renamed into place, so
//! concurrent runs never see a partial file. The cache is bounded (`GOJS_CACHE_MAX_MB`, default
//! 2048): after a write, the least recently used entries (by modification time, refreshed on
//! every hit) are removed until the total fits.

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
        Ok(m) => {
            // Mark it recently used, for eviction.
            if let Ok(f) = std::fs::File::options().append(true).open(path) {
                let _ = f.set_modified(std::time::SystemTime::now());
            }
            Some(m)
        }
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
        return;
    }
    evict(dir, max_bytes(), path);
}

fn max_bytes() -> u64 {
    std::env::var("GOJS_CACHE_MAX_MB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(2048)
        .saturating_mul(1 << 20)
}

/// Remove the least recently used entries of `dir` until they total at most `max` bytes,
/// never `keep` (the entry just written).
pub(crate) fn evict(dir: &Path, max: u64, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, u64, std::path::PathBuf)> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let path = e.path();
            if path.extension()? != "cwasm" {
                return None;
            }
            let meta = e.metadata().ok()?;
            Some((meta.modified().ok()?, meta.len(), path))
        })
        .collect();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    files.sort();
    for (_, len, path) in files {
        if total <= max {
            break;
        }
        if path != keep && std::fs::remove_file(&path).is_ok() {
            total -= len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_removes_least_recently_used_first() {
        let dir = std::env::temp_dir().join(format!("gojs-evict-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let t0 = std::time::SystemTime::now() - std::time::Duration::from_secs(100);
        for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
            let p = dir.join(format!("{name}.cwasm"));
            std::fs::write(&p, vec![0u8; 100]).unwrap();
            let f = std::fs::File::options().append(true).open(&p).unwrap();
            f.set_modified(t0 + std::time::Duration::from_secs(i as u64 * 10))
                .unwrap();
        }
        std::fs::write(dir.join("other.txt"), vec![0u8; 1000]).unwrap();
        // 400 bytes of entries, room for 250: the two oldest go; "a" is kept as just written.
        evict(&dir, 250, &dir.join("a.cwasm"));
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["a.cwasm", "d.cwasm", "other.txt"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
