//! Compiled artifacts on disk: the compile cache and `gojs compile` output.
//!
//! An artifact file is wasmtime's serialized module (an ELF image) followed by a trailer: `MAGIC`
//! and the BLAKE3 hash of everything before it. Loading verifies the hash over a read-only
//! mapping of the file (a torn, truncated or altered file is refused, never deserialized), then
//! lets wasmtime map the same file and check the engine's compatibility; code pages are read
//! from the page cache as they run instead of being copied, which keeps warm starts and memory
//! small. Writes go to a temporary file renamed into place, so concurrent runs never see a
//! partial file. The cache is bounded (`GOJS_CACHE_MAX_MB`, default 2048): after a write, the
//! least recently used entries (by modification time, refreshed on every hit) are removed until
//! the total fits.

use std::io::Write;
use std::path::Path;

const MAGIC: &[u8; 8] = b"GOJSC\x00\x02\x00";
const TRAILER: usize = MAGIC.len() + blake3::OUT_LEN;

/// Does `bytes` start like an artifact (an ELF image) rather than a `.wasm` module?
pub(crate) fn is_artifact(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF")
}

/// Load an artifact written by [`write()`], checking it first.
pub(crate) fn read(engine: &wasmtime::Engine, path: &Path) -> Result<wasmtime::Module, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    verify(&file)?;
    // SAFETY: `verify` checked that the file is exactly what `write` produced from
    // `Module::serialize` (its BLAKE3 hash matches), and wasmtime checks that the artifact was
    // built by a compatible engine. Our writers never modify a file in place (they rename new
    // files over old ones), so the mapping wasmtime makes sees the bytes we hashed.
    unsafe { wasmtime::Module::deserialize_open_file(engine, file) }.map_err(|e| format!("{e:#}"))
}

/// Check the trailer and hash of an artifact file through a temporary read-only mapping.
fn verify(file: &std::fs::File) -> Result<(), String> {
    let corrupt = || "not a gojs artifact, or damaged (its checksum does not match)".to_string();
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let len = usize::try_from(len).map_err(|_| corrupt())?;
    if len <= TRAILER {
        return Err(corrupt());
    }
    // SAFETY: a fresh read-only private mapping of `len` bytes of an open file; it is only read
    // through the slice below and unmapped before returning.
    let ptr = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            rustix::mm::ProtFlags::READ,
            rustix::mm::MapFlags::PRIVATE,
            file,
            0,
        )
    }
    .map_err(|e| e.to_string())?;
    // SAFETY: the mapping is `len` readable bytes and lives until the munmap below.
    let bytes = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) };
    let (artifact, trailer) = bytes.split_at(len - TRAILER);
    let ok =
        trailer.starts_with(MAGIC) && blake3::hash(artifact).as_bytes() == &trailer[MAGIC.len()..];
    // SAFETY: unmapping exactly what we mapped; `bytes` is not used after this.
    let _ = unsafe { rustix::mm::munmap(ptr, len) };
    if ok { Ok(()) } else { Err(corrupt()) }
}

/// A cached module, or `None` if absent, damaged or incompatible (a bad entry is removed).
pub(crate) fn load(engine: &wasmtime::Engine, path: &Path) -> Option<wasmtime::Module> {
    match read(engine, path) {
        Ok(m) => {
            // Mark it recently used, for eviction.
            if let Ok(f) = std::fs::File::options().append(true).open(path) {
                let _ = f.set_modified(std::time::SystemTime::now());
            }
            Some(m)
        }
        Err(_) => {
            if path.exists() {
                let _ = std::fs::remove_file(path);
            }
            None
        }
    }
}

/// Write `module` as an artifact at `path`, atomically (temporary file, fsync, rename).
pub(crate) fn write(module: &wasmtime::Module, path: &Path) -> std::io::Result<()> {
    write_with(module, path, true)
}

/// As [`write()`]; `durable: false` skips the fsync (the checksum still catches a torn file).
fn write_with(module: &wasmtime::Module, path: &Path, durable: bool) -> std::io::Result<()> {
    // What `serialize` would return, written from where it is instead of from a copy: a
    // first run stores Winch's code (12 MB for a 5 MB test binary) while the program runs,
    // and its exit waits for that. (A module exported from a component can't be serialized;
    // gojs makes none.)
    let image = module.image_range();
    // SAFETY: `image_range` is the module's compiled image, which lives as long as `module`
    // (borrowed for this whole function) and is not written to once compiled.
    let artifact = unsafe {
        std::slice::from_raw_parts(image.start, image.end.offset_from(image.start) as usize)
    };
    replace(path, durable, |f| {
        f.write_all(artifact)?;
        f.write_all(MAGIC)?;
        f.write_all(blake3::hash(artifact).as_bytes())
    })
}

/// Put what `write` writes at `path` atomically: into a temporary file in the same directory
/// (made if need be), synced if `durable`, renamed over `path`. Readers see the old file or
/// the whole new one; a failed write leaves no temporary file. A `path` that is a device or a
/// pipe (`-o /dev/null`) is written to, never replaced.
pub(crate) fn replace(
    path: &Path,
    durable: bool,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
        return write(&mut std::fs::OpenOptions::new().write(true).open(path)?);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".tmp-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        write(&mut f)?;
        if durable {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Save a compiled module in the cache (synced to disk if `durable`). Failures are ignored: the
/// cache is an optimisation.
pub(crate) fn store(module: &wasmtime::Module, path: &Path, durable: bool) {
    let started = std::time::Instant::now();
    let written = write_with(module, path, durable);
    tracing::debug!(
        "cache: {} {} ({:.1?})",
        if written.is_ok() {
            "wrote"
        } else {
            "could not write"
        },
        path.display(),
        started.elapsed()
    );
    if written.is_ok()
        && let Some(dir) = path.parent()
    {
        evict(dir, max_bytes(), path);
    }
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
