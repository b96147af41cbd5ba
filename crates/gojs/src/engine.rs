//! The wasm engine configuration shared by every module and instance, and the compile cache.

use std::path::PathBuf;

use crate::Error;

/// Native stack of a guest thread. It must hold [`WASM_MAX_STACK`] plus the host frames above the
/// outermost wasm entry.
pub(crate) const GUEST_THREAD_STACK: usize = 256 << 20;
/// Wasm stack for the whole nested chain Go → JS → Go → … of one entry. Node gives Go 8 MiB of
/// V8 stack; we give more, since nested callbacks also spend native stack in QuickJS frames.
pub(crate) const WASM_MAX_STACK: usize = 192 << 20;

/// A configured wasm engine. Cheap to clone; share one across modules.
///
/// [`Engine::new`] caches compiled code on disk (`$GOJS_CACHE_DIR`, else the platform cache
/// directory), so a module compiles once per machine:
///
/// ```
/// let engine = gojs::Engine::new()?;
/// let bad = gojs::Module::new(&engine, b"not wasm");
/// assert!(matches!(bad, Err(gojs::Error::InvalidModule(_))));
/// # Ok::<(), gojs::Error>(())
/// ```
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: wasmtime::Engine,
    cache: Option<PathBuf>,
    compiler: Compiler,
}

/// Which compiler turns wasm into machine code.
///
/// Measured on this project's 2-core machine (see RATIONALE.md): Winch compiles hello world
/// ~3× faster than Cranelift, and its code runs ~2× slower.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compiler {
    /// Optimizing: slower to compile, fastest code. The default; its code is cached on disk.
    #[default]
    Cranelift,
    /// Baseline: fast to compile, slower code. Good for short runs of a binary seen once.
    Winch,
}

impl std::str::FromStr for Compiler {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cranelift" => Ok(Compiler::Cranelift),
            "winch" => Ok(Compiler::Winch),
            other => Err(format!("unknown compiler {other:?} (cranelift or winch)")),
        }
    }
}

impl Engine {
    /// An engine using the on-disk compile cache (`$GOJS_CACHE_DIR`, else the platform cache
    /// directory, e.g. `~/.cache/gojs`).
    ///
    /// # Errors
    /// [`Error::Host`] if wasmtime rejects the configuration.
    pub fn new() -> Result<Engine, Error> {
        Engine::with(default_cache_dir(), Compiler::default())
    }

    /// An engine with a chosen compiler (and the compile cache, unless `cache` is false).
    ///
    /// ```
    /// let fast_start = gojs::Engine::with_compiler(gojs::Compiler::Winch, true)?;
    /// # Ok::<(), gojs::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Engine::new`].
    pub fn with_compiler(compiler: Compiler, cache: bool) -> Result<Engine, Error> {
        Engine::with(cache.then(default_cache_dir).flatten(), compiler)
    }

    /// An engine that compiles every module from scratch.
    ///
    /// # Errors
    /// As [`Engine::new`].
    pub fn without_cache() -> Result<Engine, Error> {
        Engine::with(None, Compiler::default())
    }

    fn with(cache: Option<PathBuf>, compiler: Compiler) -> Result<Engine, Error> {
        let mut config = wasmtime::Config::new();
        config.max_wasm_stack(WASM_MAX_STACK);
        // Only checked against max_wasm_stack: we never run wasm on async fibers.
        config.async_stack_size(WASM_MAX_STACK);
        config.parallel_compilation(true);
        config.strategy(match compiler {
            Compiler::Cranelift => wasmtime::Strategy::Cranelift,
            Compiler::Winch => wasmtime::Strategy::Winch,
        });
        // `GOJS_PERFMAP=1`: write /tmp/perf-PID.map so `perf report` names wasm functions.
        if std::env::var_os("GOJS_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let inner =
            wasmtime::Engine::new(&config).map_err(|e| Error::Host(format!("wasm engine: {e}")))?;
        Ok(Engine {
            inner,
            cache,
            compiler,
        })
    }

    pub(crate) fn compile(&self, wasm: &[u8]) -> Result<wasmtime::Module, Error> {
        let key = self
            .cache
            .as_ref()
            .map(|dir| dir.join(cache_key(&self.inner, self.compiler, wasm)));
        if let Some(path) = &key
            && let Some(m) = crate::cache::load(&self.inner, path)
        {
            return Ok(m);
        }
        let module = wasmtime::Module::new(&self.inner, wasm)
            .map_err(|e| Error::InvalidModule(format!("invalid WebAssembly module: {e:#}")))?;
        if let Some(path) = &key {
            crate::cache::store(&module, path);
        }
        Ok(module)
    }
}

fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("GOJS_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("gojs"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("gojs"))
}

/// The cache file name: module content + everything about the engine that affects code.
fn cache_key(engine: &wasmtime::Engine, compiler: Compiler, wasm: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = blake3::Hasher::new();
    h.update(wasm);
    let mut fp = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut fp);
    h.update(&fp.finish().to_le_bytes());
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(format!("{compiler:?}").as_bytes());
    format!("{}.cwasm", h.finalize().to_hex())
}
