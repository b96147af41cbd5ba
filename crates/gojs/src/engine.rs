//! The wasm engine configuration shared by every module and instance, and the compile cache.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

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
    inner: Arc<EngineInner>,
}

struct EngineInner {
    /// Cranelift's engine for `Cranelift` and `Auto`, Winch's for `Winch`.
    primary: wasmtime::Engine,
    /// Cranelift's engine with inlining, for modules up to [`INLINE_MAX`] bytes when the
    /// primary is Cranelift: made on first use.
    inlining: OnceLock<wasmtime::Engine>,
    /// Winch's engine, made on first use when `Auto` has to compile.
    baseline: OnceLock<wasmtime::Engine>,
    cache: Option<PathBuf>,
    compiler: Compiler,
    /// How `Auto` fills the cache with Cranelift's code: `None` = a background thread.
    fill_command: Option<FillCommand>,
}

type FillCommand = Box<dyn Fn() -> std::process::Command + Send + Sync>;

/// Which compiler turns wasm into machine code.
///
/// Measured on this project's 2-core machine (RATIONALE.md, "Why `auto`…"): Winch compiles
/// hello world ~4× faster than Cranelift, and its code runs ~2× slower.
///
/// Whichever compiles, the module is first rewritten (RATIONALE.md, "Why rewrite the jumps of
/// Go's functions?" and "Why does clearing a large block give pages back?"; `GOJS_JUMPS=off`
/// and `GOJS_FILL=off` leave each out).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compiler {
    /// Optimizing: slower to compile, fastest code. The library's default; its code is cached
    /// on disk, so only the first load of a module pays for it. Tiers up: once a process has
    /// kept a module of up to 6 MiB for 200 ms (not a Go test binary), its code is compiled
    /// again in the background with inlining, for the loads after: 10–15% faster code, for a
    /// compile ~2× as long that takes ~400 bytes of memory per byte of module while it runs
    /// (in a thread of this process at idle priority, unless [`Engine::fill_cache_with`] gives
    /// a command); a trap's backtrace lacks the inlined functions. `GOJS_INLINE=off` never
    /// inlines, `GOJS_INLINE=all` at any size. [`Engine::compile_to_file`] inlines at once.
    #[default]
    Cranelift,
    /// Baseline: fast to compile, slower code. Good for short runs of a binary seen once.
    Winch,
    /// Cranelift's code from the cache when it is there; else Winch's code from the cache; else
    /// Winch compiles the module now, split: the functions small programs run before it
    /// starts, the rest on a background thread, instantiated the first time Go calls one of
    /// them (`GOJS_SPLIT=off` compiles it whole); and Cranelift compiles the program's own
    /// functions, then the library functions they call and the runtime's allocator and
    /// collector, then (sampling the running thread's
    /// stack on Linux x86-64 with `SIGPROF`, unless another handler of that signal is
    /// installed first or `GOJS_SAMPLE=off`) the functions its time goes to, with
    /// Winch's calling convention, and that code runs beside Winch's (`GOJS_HOT=off` leaves it
    /// out). Meanwhile the cache is filled with Winch's and
    /// then Cranelift's code in the background (a low-priority thread, or the command given to
    /// [`Engine::fill_cache_with`]) for later loads; the process's exit waits for a cache write
    /// or the start of that command still under way. An instance running Winch's code moves
    /// to Cranelift's as soon as that is cached, where it stands (at a goroutine switch or
    /// while Go waits for an event; not while an embedder's call into Go is under way, nor for
    /// a module given wasm imports of the embedder's; `GOJS_TIER=off` never moves). Without a
    /// cache this is Winch, split. The default of `gojs run` and `go_js_wasm_exec`.
    Auto,
}

impl std::str::FromStr for Compiler {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cranelift" => Ok(Compiler::Cranelift),
            "winch" => Ok(Compiler::Winch),
            "auto" => Ok(Compiler::Auto),
            other => Err(format!(
                "unknown compiler {other:?} (cranelift, winch or auto)"
            )),
        }
    }
}

/// How long a background compile may hold a module before another run may start one again.
const FILL_STALE: Duration = Duration::from_secs(600);

/// How long a process keeps a module before its code is compiled again with inlining
/// ([`Engine::tier_up_later`]).
const TIER_UP_AFTER: Duration = Duration::from_millis(200);

/// Marks a queued module (`.pending-inline-….wasm`) to compile with inlining.
const INLINED_PREFIX: &str = "inline-";

/// Which of Cranelift's codes a background compile makes.
#[derive(Clone, Copy)]
enum Fill {
    /// Plain, for a module's first runs (with Winch's code for the whole module first, if the
    /// first run compiled only part of it).
    Plain,
    /// With inlining, for a module that a run kept for [`TIER_UP_AFTER`].
    Inlined,
}

/// Where a module's bytes can be had again.
enum Source {
    File(PathBuf),
    Bytes(Vec<u8>),
}

impl Engine {
    /// An engine using the on-disk compile cache (`$GOJS_CACHE_DIR`, else the platform cache
    /// directory, e.g. `~/.cache/gojs`) and Cranelift.
    ///
    /// # Errors
    /// [`Error::Host`] if wasmtime rejects the configuration.
    pub fn new() -> Result<Engine, Error> {
        Engine::with(default_cache_dir(), Compiler::default())
    }

    /// An engine with a chosen compiler (and the compile cache, unless `cache` is false).
    ///
    /// ```
    /// let fast_start = gojs::Engine::with_compiler(gojs::Compiler::Auto, true)?;
    /// # Ok::<(), gojs::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Engine::new`].
    pub fn with_compiler(compiler: Compiler, cache: bool) -> Result<Engine, Error> {
        Engine::with(cache.then(default_cache_dir).flatten(), compiler)
    }

    /// An engine with a chosen compiler whose compile cache is the directory `dir` (created
    /// when first written), rather than `$GOJS_CACHE_DIR` or the platform's.
    ///
    /// ```
    /// let dir = std::env::temp_dir().join("my-app-gojs-cache");
    /// let engine = gojs::Engine::with_cache_dir(gojs::Compiler::Auto, dir)?;
    /// # Ok::<(), gojs::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Engine::new`].
    pub fn with_cache_dir(compiler: Compiler, dir: impl Into<PathBuf>) -> Result<Engine, Error> {
        Engine::with(Some(dir.into()), compiler)
    }

    /// An engine that compiles every module from scratch.
    ///
    /// # Errors
    /// As [`Engine::new`].
    pub fn without_cache() -> Result<Engine, Error> {
        Engine::with(None, Compiler::default())
    }

    /// Fill the cache (with [`Compiler::Auto`]'s Cranelift code, and any compiler's tier-ups)
    /// from a separate process instead of a background thread, so that the work survives this
    /// process's exit and its memory isn't this process's (what the `gojs` CLI does). The
    /// engine appends the path of a private copy of the module to the command from `make`,
    /// detaches its stdio and doesn't wait for it; the command must call
    /// [`Engine::compile_pending`] with that path.
    pub fn fill_cache_with(
        self,
        make: impl Fn() -> std::process::Command + Send + Sync + 'static,
    ) -> Engine {
        let inner = EngineInner {
            primary: self.inner.primary.clone(),
            inlining: self.inner.inlining.clone(),
            baseline: self.inner.baseline.clone(),
            cache: self.inner.cache.clone(),
            compiler: self.inner.compiler,
            fill_command: Some(Box::new(make)),
        };
        Engine {
            inner: Arc::new(inner),
        }
    }

    /// Compile a module queued by [`Compiler::Auto`] (`pending`, a file in the cache directory)
    /// into the compile cache — with Winch first unless its code or Cranelift's is already
    /// cached or a run of Winch's code waits to move to Cranelift's, then with Cranelift; or,
    /// queued by a tier-up (a run that kept a module of up to 6 MiB for 200 ms), with
    /// Cranelift and inlining — the other half of [`Engine::fill_cache_with`].
    ///
    /// Runs at idle CPU priority on Linux, so it only uses otherwise idle cores. One process
    /// at a time compiles for a cache directory (an advisory lock): whoever holds the lock
    /// works through every queued module — one a running instance waits for first, otherwise
    /// oldest first — and removes each; a call that finds the lock taken returns at once, its
    /// module being left to the holder.
    ///
    /// It also pauses while a run compiles and runs another module (or the same one with
    /// another cache directory), for up to a second each: for that it installs a handler for
    /// `SIGRTMIN` and starts a watcher thread, so call it in a process of its own, as
    /// [`Engine::fill_cache_with`]'s command does.
    ///
    /// # Errors
    /// [`Error::Host`] if the cache directory can't be used.
    pub fn compile_pending(pending: &Path) -> Result<(), Error> {
        fill_from(pending, true)
    }

    /// The compiler this engine was made with.
    pub fn compiler(&self) -> Compiler {
        self.inner.compiler
    }

    fn with(cache: Option<PathBuf>, compiler: Compiler) -> Result<Engine, Error> {
        let primary = new_engine(&config(compiler, true))?;
        Ok(Engine {
            inner: Arc::new(EngineInner {
                primary,
                inlining: OnceLock::new(),
                baseline: OnceLock::new(),
                cache,
                compiler,
                fill_command: None,
            }),
        })
    }

    fn baseline(&self) -> Result<&wasmtime::Engine, Error> {
        if let Some(e) = self.inner.baseline.get() {
            return Ok(e);
        }
        let e = new_engine(&config(Compiler::Winch, true))?;
        Ok(self.inner.baseline.get_or_init(|| e))
    }

    fn inlining(&self) -> Result<&wasmtime::Engine, Error> {
        if let Some(e) = self.inner.inlining.get() {
            return Ok(e);
        }
        let e = new_engine(&inlining_config(true))?;
        Ok(self.inner.inlining.get_or_init(|| e))
    }

    /// The engine that compiles a module of `size` bytes with the primary compiler: for
    /// Cranelift, the one with inlining if the module is small enough ([`inlines`]).
    fn optimizing(&self, size: u64) -> Result<&wasmtime::Engine, Error> {
        if self.primary_compiler() == Compiler::Cranelift && inlines(size) {
            self.inlining()
        } else {
            Ok(&self.inner.primary)
        }
    }

    /// Compile `wasm` (already classified as Go js/wasm), through the cache.
    pub(crate) fn compile(&self, wasm: &[u8]) -> Result<Compiled, Error> {
        // Background compiles pause from the start (what this run waits for is known later).
        crate::courtesy::announce(None);
        let key = self.key(&mut &wasm[..])?;
        if let Some(key) = &key
            && let Some((m, tier_up)) = self.cached(Some(key))?
        {
            crate::courtesy::retire();
            if tier_up {
                self.tier_up_later(key, || Source::Bytes(wasm.to_vec()));
            }
            return Ok(self.whole_from_cache(m, key));
        }
        self.compile_missing(wasm, None, key, || Source::Bytes(wasm.to_vec()))
    }

    /// The cached code for a module: the primary compiler's (with Cranelift, the code with
    /// inlining if a run has tiered the module up, else the plain code), or with `Auto` Winch's
    /// while Cranelift's is still being compiled. The flag says whether the code is Cranelift's
    /// plain code for a module that could tier up ([`Engine::tier_up_later`]).
    fn cached(&self, key: Option<&Key>) -> Result<Option<(wasmtime::Module, bool)>, Error> {
        let Some(key) = key else { return Ok(None) };
        let started = std::time::Instant::now();
        let found = self.cached_code(key)?;
        match &found {
            Some((_, _, what)) => {
                tracing::debug!("{what} from the cache ({:.1?})", started.elapsed())
            }
            None => tracing::debug!("not in the cache"),
        }
        Ok(found.map(|(m, tier_up, _)| (m, tier_up)))
    }

    /// [`Engine::cached`], and whose code it is.
    fn cached_code(
        &self,
        key: &Key,
    ) -> Result<Option<(wasmtime::Module, bool, &'static str)>, Error> {
        let compiler = self.primary_compiler();
        let can_tier_up = compiler == Compiler::Cranelift && inlines(key.size);
        if can_tier_up {
            let inlining = self.inlining()?;
            if let Some(m) = crate::cache::load(inlining, &key.entry(inlining, compiler)) {
                return Ok(Some((m, false, "Cranelift's code with inlining")));
            }
        }
        let primary = &self.inner.primary;
        if let Some(m) = crate::cache::load(primary, &key.entry(primary, compiler)) {
            let what = match compiler {
                Compiler::Winch => "Winch's code",
                _ => "Cranelift's code",
            };
            return Ok(Some((m, can_tier_up, what)));
        }
        if self.inner.compiler == Compiler::Auto {
            let baseline = self.baseline()?;
            return Ok(
                crate::cache::load(baseline, &key.entry(baseline, Compiler::Winch))
                    .map(|m| (m, false, "Winch's code")),
            );
        }
        Ok(None)
    }

    /// Tier up: if this process still has the module behind `key` after [`TIER_UP_AFTER`]
    /// (a run that long is doing real work), queue its compile with inlining in the
    /// background, for the runs after (RATIONALE.md, "Why does Cranelift inline only in
    /// modules up to 6 MiB, and only after a run of 200 ms?"). Once per module per process;
    /// `source` says where the module's bytes are to be had when the time comes (checked
    /// against `key`); it is only called the first time.
    fn tier_up_later(&self, key: &Key, source: impl FnOnce() -> Source) {
        static ARMED: std::sync::Mutex<Vec<blake3::Hash>> = std::sync::Mutex::new(Vec::new());
        {
            let mut armed = ARMED
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if armed.contains(&key.content) {
                return;
            }
            armed.push(key.content);
        }
        let (engine, key, source) = (self.clone(), key.clone(), source());
        let _ = std::thread::Builder::new()
            .name("gojs-tier-up".into())
            .spawn(move || {
                std::thread::sleep(TIER_UP_AFTER);
                // Queued by a helper that the process's exit waits for, so that an exit now
                // can't leave a queue entry without a compile behind it.
                spawn_before_exit(move || {
                    let Ok(inlining) = engine.inlining() else {
                        return;
                    };
                    let entry = key.entry(inlining, Compiler::Cranelift);
                    if entry.exists() {
                        return;
                    }
                    let wasm = match source {
                        Source::File(path) => match std::fs::read(path) {
                            Ok(wasm) => wasm,
                            Err(_) => return,
                        },
                        Source::Bytes(wasm) => wasm,
                    };
                    if content_hash(&mut &wasm[..]).is_ok_and(|(c, _)| c == key.content)
                        && (!is_go_test(&wasm) || inline_all())
                    {
                        engine.queue_fill(&wasm, None, entry, Fill::Inlined);
                    }
                });
            });
    }

    /// A whole module's code from the cache: with `Auto`, Winch's code moves to Cranelift's
    /// once that is cached ([`crate::tier`]).
    fn whole_from_cache(&self, module: wasmtime::Module, key: &Key) -> Compiled {
        let winch = self.inner.compiler == Compiler::Auto
            && self
                .inner
                .baseline
                .get()
                .is_some_and(|b| wasmtime::Engine::same(module.engine(), b));
        Compiled {
            upgrade: winch.then(|| self.upgrade(key)).flatten(),
            ..Compiled::whole(module)
        }
    }

    /// Where `Auto` finds Cranelift's plain code for the module behind `key`, for instances of
    /// Winch's code to move to ([`crate::tier`]); `None` with `GOJS_TIER=off`.
    fn upgrade(&self, key: &Key) -> Option<crate::tier::Upgrade> {
        if std::env::var_os("GOJS_TIER").is_some_and(|v| v == "off") {
            return None;
        }
        let engine = self.inner.primary.clone();
        let entry = key.entry(&engine, Compiler::Cranelift);
        Some(crate::tier::Upgrade {
            engine,
            entry,
            module: key.module_id(),
        })
    }

    fn primary_compiler(&self) -> Compiler {
        match self.inner.compiler {
            Compiler::Auto => Compiler::Cranelift,
            c => c,
        }
    }

    /// Load the module in `file` (a `.wasm` or an artifact from `gojs compile`): from the cache
    /// when it is there, without reading the module into memory; otherwise read, classify and
    /// compile it.
    pub(crate) fn load_file(&self, path: &Path) -> Result<Compiled, Error> {
        let read_err = |source| Error::Read {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(read_err)?;
        let mut magic = [0u8; 4];
        let n = file.read(&mut magic).map_err(read_err)?;
        if crate::cache::is_artifact(&magic[..n]) {
            return self.load_artifact(path).map(Compiled::whole);
        }
        file.seek(SeekFrom::Start(0)).map_err(read_err)?;
        tracing::debug!("loading {}", path.display());
        // Background compiles pause from the start (what this run waits for is known later).
        crate::courtesy::announce(None);
        let key = self.key(&mut file)?;
        if let Some(key) = &key
            && let Some((m, tier_up)) = self.cached(Some(key))?
        {
            crate::courtesy::retire();
            crate::module::classify_compiled(&m)?;
            if tier_up {
                self.tier_up_later(key, || Source::File(path.to_owned()));
            }
            return Ok(self.whole_from_cache(m, key));
        }
        let wasm = std::fs::read(path).map_err(read_err)?;
        crate::module::classify(&wasm)?;
        self.compile_missing(&wasm, Some(path), key, || Source::File(path.to_owned()))
    }

    /// An artifact written by `gojs compile`, by whichever compiler made it (Cranelift with or
    /// without inlining, or Winch).
    fn load_artifact(&self, path: &Path) -> Result<wasmtime::Module, Error> {
        let first = match crate::cache::read(&self.inner.primary, path) {
            Ok(m) => return classified(m),
            Err(e) => e,
        };
        let others = match self.inner.compiler {
            Compiler::Winch => [
                Compiler::Cranelift,
                Compiler::Auto, // Cranelift with inlining
            ],
            _ => [Compiler::Auto, Compiler::Winch],
        };
        for other in others {
            let engine = match other {
                Compiler::Auto => self.inlining()?.clone(),
                Compiler::Winch => self.baseline()?.clone(),
                Compiler::Cranelift => new_engine(&config(Compiler::Cranelift, true))?,
            };
            if let Ok(m) = crate::cache::read(&engine, path) {
                return classified(m);
            }
        }
        Err(Error::InvalidModule(format!(
            "cannot load compiled artifact {}: {first}",
            path.display()
        )))
    }

    /// Compile a module and write it to `out` as an artifact that [`Module::from_file`]
    /// (and `gojs run`) load without compiling.
    ///
    /// [`Module::from_file`]: crate::Module::from_file
    ///
    /// # Errors
    /// As [`crate::Module::new`], and [`Error::Host`] if `out` can't be written.
    pub fn compile_to_file(&self, wasm: &[u8], out: &Path) -> Result<(), Error> {
        crate::module::classify(wasm)?;
        // The primary engine: an artifact is for running many times, so Auto means Cranelift.
        let module = compile_go(
            self.optimizing(wasm.len() as u64)?,
            wasm,
            Code::of(self.primary_compiler()),
        )
        .map_err(invalid)?;
        crate::cache::write(&module, out)
            .map_err(|e| Error::Host(format!("cannot write {}: {e}", out.display())))
    }

    /// Compile a module that isn't cached (`source` gives its bytes again for a tier-up).
    /// Compile a module into the compile cache for the runs to come, as an artifact is
    /// compiled ([`Engine::compile_to_file`]: with Cranelift, inlining in modules up to
    /// 6 MiB), unless its code is cached already. What `gojs compile MODULE.wasm` does.
    ///
    /// # Errors
    /// As [`crate::Module::new`], and [`Error::Host`] if the engine has no cache.
    pub fn compile_into_cache(&self, wasm: &[u8]) -> Result<(), Error> {
        crate::module::classify(wasm)?;
        let key = self
            .key(&mut &wasm[..])?
            .ok_or_else(|| Error::Host("no compile cache to compile into".into()))?;
        let compiler = self.primary_compiler();
        let engine = self.optimizing(key.size)?;
        let entry = key.entry(engine, compiler);
        if crate::cache::load(engine, &entry).is_none() {
            let module = compile_go(engine, wasm, Code::of(compiler)).map_err(invalid)?;
            crate::cache::store(&module, &entry, true);
        }
        Ok(())
    }

    fn compile_missing(
        &self,
        wasm: &[u8],
        file: Option<&Path>,
        key: Option<Key>,
        source: impl FnOnce() -> Source,
    ) -> Result<Compiled, Error> {
        let primary = &self.inner.primary;
        // Background compiles of other modules pause while this run compiles and runs; a split
        // first run caches nothing itself, so its module's own background compile carries on.
        let split_likely = self.inner.compiler == Compiler::Auto && !is_go_test(wasm);
        crate::courtesy::announce(match &key {
            Some(key) if split_likely => Some(key.module_id()),
            _ => None,
        });
        if self.inner.compiler == Compiler::Auto {
            let baseline = self.baseline()?;
            let winch_entry = key.as_ref().map(|k| k.entry(baseline, Compiler::Winch));
            let cranelift_entry = key.as_ref().map(|k| k.entry(primary, Compiler::Cranelift));
            if let Some(split) = split_for_first_run(
                baseline,
                wasm,
                winch_entry.as_deref(),
                cranelift_entry.as_deref(),
            ) {
                if let Some(key) = key {
                    self.queue_fill(
                        wasm,
                        file,
                        key.entry(primary, Compiler::Cranelift),
                        Fill::Plain,
                    );
                    return Ok(Compiled {
                        upgrade: self.upgrade(&key),
                        ..split
                    });
                }
                return Ok(split);
            }
            let module = compile_go(baseline, wasm, Code::WinchWhole).map_err(invalid)?;
            if let Some(key) = key {
                // Winch's code too, for runs before Cranelift's is ready (not synced to disk:
                // a torn entry fails its checksum and is recompiled), written while the program
                // runs: 15–115 ms for these modules.
                let (code, entry) = (module.clone(), key.entry(baseline, Compiler::Winch));
                spawn_before_exit(move || crate::cache::store(&code, &entry, false));
                self.queue_fill(
                    wasm,
                    file,
                    key.entry(primary, Compiler::Cranelift),
                    Fill::Plain,
                );
                return Ok(Compiled {
                    upgrade: self.upgrade(&key),
                    ..Compiled::whole(module)
                });
            }
            return Ok(Compiled::whole(module));
        }
        // Cranelift's plain code (inlining comes with a tier-up) or Winch's.
        let compiler = self.primary_compiler();
        let module = compile_go(primary, wasm, Code::of(compiler)).map_err(invalid)?;
        if let Some(key) = &key {
            crate::cache::store(&module, &key.entry(primary, compiler), true);
            if compiler == Compiler::Cranelift && inlines(key.size) {
                self.tier_up_later(key, source);
            }
        }
        Ok(Compiled::whole(module))
    }

    /// Start compiling `wasm` into the cache entry `entry` (Cranelift's code, plain or with
    /// inlining) in the background, unless another run is already doing it. Failures only
    /// cost later runs their fast start.
    /// `file`: where `wasm` was read from, if it was (the queue links it rather than copy it).
    fn queue_fill(&self, wasm: &[u8], file: Option<&Path>, entry: PathBuf, fill: Fill) {
        let Some(dir) = entry.parent() else { return };
        let Some(name) = entry.file_stem() else {
            return;
        };
        let kind = match fill {
            Fill::Plain => "",
            Fill::Inlined => INLINED_PREFIX,
        };
        let pending = dir.join(format!(".pending-{kind}{}.wasm", name.to_string_lossy()));
        if !claim(&pending, wasm, file) {
            return;
        }
        match &self.inner.fill_command {
            Some(make) => {
                let mut cmd = make();
                cmd.arg(&pending)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null());
                // Starting a process holds this thread for 0.2–6 ms (measured with hello), so a
                // helper thread does it while the program runs, and the process's exit waits
                // for it (see `spawn_before_exit`).
                spawn_before_exit(move || match cmd.spawn() {
                    // Reap it if this process outlives it; otherwise init does.
                    Ok(mut child) => {
                        let _ = std::thread::Builder::new()
                            .name("gojs-fill-wait".into())
                            .spawn(move || child.wait());
                    }
                    Err(_) => {
                        let _ = std::fs::remove_file(&pending);
                    }
                });
            }
            None => {
                let queued = pending.clone();
                let spawned = std::thread::Builder::new()
                    .name("gojs-fill-cache".into())
                    .spawn(move || fill_from(&queued, false));
                if spawned.is_err() {
                    let _ = std::fs::remove_file(&pending);
                }
            }
        }
    }

    /// The module's cache key, or `None` without a cache.
    fn key(&self, wasm: &mut impl Read) -> Result<Option<Key>, Error> {
        let Some(dir) = &self.inner.cache else {
            return Ok(None);
        };
        let (content, size) = content_hash(wasm)?;
        Ok(Some(Key {
            dir: dir.clone(),
            content,
            size,
        }))
    }
}

/// Compiled code for a module: whole, or the primary of a split module with its secondary
/// compiling in the background.
pub(crate) struct Compiled {
    pub module: wasmtime::Module,
    pub secondary: Option<Arc<crate::split::Secondary>>,
    /// For Winch's code of a whole module: where Cranelift's will be ([`crate::tier`]).
    pub upgrade: Option<crate::tier::Upgrade>,
}

impl Compiled {
    fn whole(module: wasmtime::Module) -> Compiled {
        Compiled {
            module,
            secondary: None,
            upgrade: None,
        }
    }
}

/// The functions a small Go program runs (generated by `cargo xtask hot-functions`).
const HOT_FUNCTIONS: &str = include_str!("hot_functions.txt");
/// The runtime functions a small program that starts goroutines runs as well (the same).
const HOT_GOROUTINES: &str = include_str!("hot_goroutines.txt");
/// The functions of the runtime, `reflect`, `strconv`, … that a small program using
/// `encoding/json` or `regexp` runs as well (the same).
const HOT_LIBRARIES: &str = include_str!("hot_libraries.txt");

/// What [`compile_go`] compiles, which decides the rewrite's passes ([`Passes::enabled`]):
/// a whole module with Winch (which may call through dispatchers rather than the table:
/// `GOJS_DISPATCH=on`), a part of a split module with Winch, or a module with Cranelift
/// (whose address arithmetic is then narrowed: [`crate::narrow`]).
///
/// [`Passes::enabled`]: crate::rewrite::Passes::enabled
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Code {
    WinchWhole,
    WinchPart,
    Cranelift,
}

impl Code {
    /// A whole module's code from `compiler` (`Auto`'s whole modules are Cranelift's).
    fn of(compiler: Compiler) -> Code {
        if compiler == Compiler::Winch {
            Code::WinchWhole
        } else {
            Code::Cranelift
        }
    }
}

/// Compile Go's `wasm` with `engine`, rewritten first ([`crate::rewrite`]: direct jumps and
/// loops, and Go's clearing of memory through [`crate::fill`]; `GOJS_JUMPS=off` and
/// `GOJS_FILL=off` leave either out). Should the rewritten module fail to compile, the original is compiled instead:
/// the rewrite may only ever cost speed, never a program.
pub(crate) fn compile_go(
    engine: &wasmtime::Engine,
    wasm: &[u8],
    code: Code,
) -> wasmtime::Result<wasmtime::Module> {
    let passes = crate::rewrite::Passes::enabled(code);
    let started = std::time::Instant::now();
    let rewritten = crate::rewrite::prepare(wasm, passes);
    let rewrite = started.elapsed();
    let result = match &rewritten {
        Some(rewritten) => match wasmtime::Module::new(engine, rewritten) {
            Ok(module) => Ok(module),
            Err(e) => {
                tracing::warn!("rewritten module failed to compile: {e:#}");
                wasmtime::Module::new(engine, wasm)
            }
        },
        None => wasmtime::Module::new(engine, wasm),
    };
    tracing::debug!(
        "compiled {:?} ({} bytes): rewrite {rewrite:.1?}, compile {:.1?}",
        code,
        wasm.len(),
        started.elapsed() - rewrite
    );
    result
}

/// For a first run with Winch: split `wasm` so that the functions small programs run compile
/// now and the whole module in the background (RATIONALE.md, "Why split a module…"). `None` to
/// compile it whole: `GOJS_SPLIT=off`, a module not shaped like the Go linker's, a program whose
/// own code calls functions outside the list, or a primary that doesn't compile (the whole
/// module's compile then reports why). `GOJS_SPLIT=all-cold` leaves only the exports in the
/// primary (to test the secondary's path).
///
/// With `winch_entry` (the cache entry of Winch's code for the whole module), the primary's code
/// and the split's plan are cached beside it ([`primary_entry`], [`plan_path`]) for the runs
/// that come before the background filler has cached the whole module's, which resume the
/// split ([`resume_split`]). `cranelift_entry`: the entry of Cranelift's code for the whole
/// module (once it is there, the filler has removed Winch's entry and the primaries, and a
/// primary written now would only lie there until evicted).
fn split_for_first_run(
    engine: &wasmtime::Engine,
    wasm: &[u8],
    winch_entry: Option<&Path>,
    cranelift_entry: Option<&Path>,
) -> Option<Compiled> {
    let started = std::time::Instant::now();
    let mode = std::env::var("GOJS_SPLIT");
    let mut split = match mode.as_deref() {
        Ok("off") => return None,
        Ok("all-cold") => crate::split::split(wasm, crate::split::Pick::ExportsOnly)?,
        _ => {
            // A run before the whole module's code is cached: the split an earlier run made.
            if let Some(resumed) = winch_entry.and_then(|w| resume_split(engine, w, wasm)) {
                tracing::debug!(
                    "split: resumed, the first part's code from the cache ({:.1?})",
                    started.elapsed()
                );
                return Some(resumed);
            }
            // A test binary is compiled whole, its table open to Cranelift's parts
            // (RATIONALE.md, "Why does a test binary's first run get Cranelift's parts?"),
            // named or not: `go test` strips the name section, but `testing.MainStart` is
            // still in Go's own table of function names.
            if is_go_test(wasm) {
                crate::split::split(wasm, crate::split::Pick::Whole)?
            } else {
                default_split(wasm)?
            }
        }
    };
    split.start_hot(engine);
    let default_mode = mode.is_err();
    tracing::debug!(
        "split: {} of {} functions first ({:.1?})",
        split.functions - split.cold.len(),
        split.functions,
        started.elapsed()
    );
    let entry = winch_entry.map(|w| primary_entry(w, &split));
    let module = match entry.as_deref().and_then(|e| crate::cache::load(engine, e)) {
        Some(module) => {
            tracing::debug!("split: the first part's code from the cache");
            // The plan was missing or didn't fit: the next run resumes this split.
            if let (Some(entry), Some(whole), true) = (&entry, winch_entry, default_mode) {
                let name = entry.file_name().unwrap_or_default().to_string_lossy();
                let plan = crate::split::Plan::of(&split, name.into_owned()).encode();
                let path = plan_path(whole);
                spawn_before_exit(move || write_plan(&path, &plan));
            }
            module
        }
        None => {
            // Cached since this run looked for the whole module's code: no need to split.
            if let Some(m) = winch_entry.and_then(|w| crate::cache::load(engine, w)) {
                return Some(Compiled::whole(m));
            }
            let module = compile_go(engine, split.first_part(), Code::WinchPart).ok()?;
            if let (Some(entry), Some(whole)) = (entry, winch_entry) {
                let code = module.clone();
                let whole = whole.to_owned();
                let optimized = cranelift_entry.map(Path::to_owned);
                let plan = default_mode.then(|| {
                    let name = entry.file_name().unwrap_or_default().to_string_lossy();
                    crate::split::Plan::of(&split, name.into_owned())
                });
                // Written while the program runs (its exit waits): 2–4 MB for ordinary
                // programs, and the plan. Not once the filler has cached code for the whole
                // module (which removes the primary's): it would only lie there until evicted.
                spawn_before_exit(move || {
                    if !whole.exists() && !optimized.is_some_and(|o| o.exists()) {
                        crate::cache::store(&code, &entry, false);
                        if let Some(plan) = plan {
                            write_plan(&plan_path(&whole), &plan.encode());
                        }
                    }
                });
            }
            module
        }
    };
    Some(Compiled {
        secondary: Some(crate::split::Secondary::new(engine, split, &module)),
        module,
        upgrade: None,
    })
}

/// Where the primary of `split` is cached, beside `winch_entry` (Winch's code for the whole
/// module, which the filler caches after the first run): named by that entry and by everything
/// the primary's code depends on — the engine's settings (in `winch_entry`'s name already),
/// the primary's bytes and which slots it leaves to the secondary — so that a different split
/// (another gojs, another hot list) never loads it. The filler removes these entries once the
/// whole module's code is cached ([`primary_entries_of`]).
fn primary_entry(winch_entry: &Path, split: &crate::split::Split) -> PathBuf {
    let mut h = blake3::Hasher::new();
    h.update(
        crate::rewrite::Passes::enabled(Code::WinchPart)
            .version()
            .as_bytes(),
    );
    h.update(split.first_part());
    h.update(&(split.functions as u64).to_le_bytes());
    h.update(&split.offset.to_le_bytes());
    for c in &split.cold {
        h.update(&c.slot.to_le_bytes());
        h.update(&c.ty.to_le_bytes());
    }
    let stem = winch_entry
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let hash = h.finalize().to_hex();
    winch_entry.with_file_name(format!("{stem}.primary-{}.cwasm", &hash[..32]))
}

/// The split an earlier first run of `wasm` made, whose primary's code is cached beside
/// `winch_entry` ([`crate::split::Plan`]): the split without making it again (5 ms for hello
/// world). `None` if there is no plan, it is damaged or doesn't fit the module, or the code is
/// gone.
fn resume_split(engine: &wasmtime::Engine, winch_entry: &Path, wasm: &[u8]) -> Option<Compiled> {
    let plan = crate::split::Plan::decode(&std::fs::read(plan_path(winch_entry)).ok()?)?;
    // A name, not a path: the entry is beside the plan.
    if plan.primary.contains('/') {
        return None;
    }
    let module = crate::cache::load(engine, &winch_entry.with_file_name(&plan.primary))?;
    let mut split = plan.resume(wasm)?;
    split.start_hot(engine);
    Some(Compiled {
        secondary: Some(crate::split::Secondary::new(engine, split, &module)),
        module,
        upgrade: None,
    })
}

/// Where the plan of the default split of the module whose whole-module Winch entry is
/// `winch_entry` is kept: beside the primaries (and removed with them), named by the passes
/// the primary's code was rewritten with.
fn plan_path(winch_entry: &Path) -> PathBuf {
    let stem = winch_entry
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let passes = crate::rewrite::Passes::enabled(Code::WinchPart).version();
    let passes = blake3::hash(passes.as_bytes()).to_hex();
    winch_entry.with_file_name(format!("{stem}.primary-plan-{}", &passes[..16]))
}

/// Write a plan at `path` as cache entries are written ([`crate::cache::replace`], not synced:
/// a torn plan fails its checksum); failures only cost later runs the split they would skip.
fn write_plan(path: &Path, bytes: &[u8]) {
    let _ = crate::cache::replace(path, false, |f| std::io::Write::write_all(f, bytes));
}

/// The cached primaries of the module whose whole-module Winch entry is `winch_entry`
/// ([`primary_entry`]).
fn primary_entries_of(winch_entry: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(stem)) = (winch_entry.parent(), winch_entry.file_stem()) else {
        return Vec::new();
    };
    let prefix = format!("{}.primary-", stem.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let name = e.ok()?.file_name();
            name.to_str()?.starts_with(&prefix).then(|| dir.join(name))
        })
        .collect()
}

/// The split a first run makes by default: the hot lists, and the program's own code.
fn default_split(wasm: &[u8]) -> Option<crate::split::Split> {
    type Names = std::collections::HashSet<&'static str>;
    static HOT: OnceLock<(Names, Names, Names)> = OnceLock::new();
    let (hot, goroutines, libraries) = HOT.get_or_init(|| {
        (
            HOT_FUNCTIONS.lines().collect(),
            HOT_GOROUTINES.lines().collect(),
            HOT_LIBRARIES.lines().collect(),
        )
    });
    crate::split::split(
        wasm,
        crate::split::Pick::Predicted(&|name, uses| {
            hot.contains(name)
                || (uses.goroutines && goroutines.contains(name))
                || (uses.libraries && libraries.contains(name))
        }),
    )
}

/// How a first run with [`Compiler::Auto`] splits `wasm` by default (`GOJS_SPLIT` aside): the
/// number of functions compiled before it starts and of those left for the background, or
/// `None` if it compiles the whole module first. For tests of the hot list.
#[doc(hidden)]
pub fn first_run_split(wasm: &[u8]) -> Option<(usize, usize)> {
    let split = default_split(wasm)?;
    Some((split.functions - split.cold.len(), split.cold.len()))
}

/// How the split reads the calls in `wasm`'s function bodies: how many bodies it decodes
/// itself, how many it leaves to wasmparser, and how many it reads differently from wasmparser
/// (`None` if the module isn't shaped for a split). For tests.
#[doc(hidden)]
pub fn call_scan_report(wasm: &[u8]) -> Option<(usize, usize, usize)> {
    crate::split::scan_report(&crate::pclntab::with_names(wasm))
}

/// `wasm` as gojs compiles it: with its jumps made direct ([`crate::jumps`]), or `None` if
/// there is nothing to rewrite. For tests, and for hosts that must run the same code (the
/// bench's Go-side floor).
#[doc(hidden)]
pub fn direct_jumps(wasm: &[u8]) -> Option<Vec<u8>> {
    crate::jumps::thread(wasm)
}

/// `wasm` as gojs compiles it, every pass on ([`crate::rewrite`]): direct jumps, Go's
/// clearing through `gojs:host.fill`, merged data segments and, `for_winch` (a whole-module
/// Winch compile), indirect calls through dispatchers, else (for Cranelift) 32-bit address
/// arithmetic; `None` if nothing changes. For tests.
#[doc(hidden)]
pub fn rewritten(wasm: &[u8], for_winch: bool) -> Option<Vec<u8>> {
    crate::rewrite::prepare(
        wasm,
        crate::rewrite::Passes {
            jumps: true,
            fill: true,
            dispatch: for_winch,
            winch: for_winch,
            data: true,
            narrow: !for_winch,
            tier: true,
            tier_stop: for_winch,
        },
    )
}

fn classified(module: wasmtime::Module) -> Result<wasmtime::Module, Error> {
    crate::module::classify_compiled(&module)?;
    Ok(module)
}

fn invalid(e: wasmtime::Error) -> Error {
    Error::InvalidModule(format!("invalid WebAssembly module: {e:#}"))
}

/// Wait for the work this process started that its exit must not cut short: writing a compile
/// cache entry, starting the background compile of a module seen for the first time. An exit
/// through `exit` (or returning from `main`) waits by itself; call this before ending the
/// process another way (`_exit`, which skips the rest of the C library's exit work). Work
/// asked for after this (a thread that wakes while the process ends) is not started.
pub fn wait_for_background_work() {
    HELPERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .closed = true;
    join_helpers();
}

/// Join the helpers, and those they start in turn (queueing a compile starts the process that
/// compiles), until none is left.
fn join_helpers() {
    loop {
        let helpers = std::mem::take(
            &mut HELPERS
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .running,
        );
        if helpers.is_empty() {
            return;
        }
        for h in helpers {
            let _ = h.join();
        }
    }
}

/// The threads doing work the process's exit waits for ([`spawn_before_exit`]).
struct Helpers {
    running: Vec<std::thread::JoinHandle<()>>,
    /// The process is ending: only helpers may start more.
    closed: bool,
}

static HELPERS: std::sync::Mutex<Helpers> = std::sync::Mutex::new(Helpers {
    running: Vec::new(),
    closed: false,
});

thread_local! {
    /// Set on a helper's thread.
    static IN_HELPER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `f` on a helper thread that this process's exit (`exit`, or returning from `main`) waits
/// for; on the calling thread if that can't be arranged. For work a short program shouldn't wait
/// for but must not cut short: starting the background filler, writing a cache entry.
fn spawn_before_exit(f: impl FnOnce() + Send + 'static) {
    static AT_EXIT: OnceLock<bool> = OnceLock::new();
    extern "C" fn at_exit() {
        wait_for_background_work();
    }
    // SAFETY: registers a plain function with no arguments to run at exit.
    let registered = *AT_EXIT.get_or_init(|| unsafe { libc::atexit(at_exit) } == 0);
    if !registered {
        return f();
    }
    let mut helpers = HELPERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Asked for by a thread that woke while the process ends (the tier-up's timer): the exit
    // wouldn't wait for it, and cut short it could leave a queue entry with no compile behind.
    if helpers.closed && !IN_HELPER.get() {
        return;
    }
    // Finished helpers are let go (a long-lived embedder compiles many modules).
    helpers.running.retain(|h| !h.is_finished());
    // Shared, so that `f` can still run here if the thread can't be started.
    let work = std::sync::Arc::new(std::sync::Mutex::new(Some(f)));
    let run = work.clone();
    match std::thread::Builder::new()
        .name("gojs-before-exit".into())
        .spawn(move || {
            IN_HELPER.set(true);
            if let Some(f) = run.lock().ok().and_then(|mut f| f.take()) {
                f();
            }
        }) {
        Ok(h) => helpers.running.push(h),
        Err(_) => {
            drop(helpers);
            if let Some(f) = work.lock().ok().and_then(|mut f| f.take()) {
                f();
            }
        }
    }
}

/// The oldest module queued for a background compile in `dir`.
fn oldest_pending(dir: &Path) -> Option<PathBuf> {
    pending_in(dir).into_iter().next()
}

/// The queued modules in `dir`, oldest first.
fn pending_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut queued: Vec<_> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name();
            let name = name.to_str()?;
            if !(name.starts_with(".pending-") && name.ends_with(".wasm")) {
                return None;
            }
            Some((queued_at(&e.metadata().ok()?), e.path()))
        })
        .collect();
    queued.sort();
    queued.into_iter().map(|(_, p)| p).collect()
}

/// The module to compile next: Cranelift's plain code for one that a run of Winch's code is
/// waiting for, to move to ([`crate::courtesy::want`]), else the oldest queued. `ids`: the
/// queued files' module ids, as far as this filler has read them.
fn next_pending(dir: &Path, ids: &mut std::collections::HashMap<PathBuf, u32>) -> Option<PathBuf> {
    let queued = pending_in(dir);
    let plain = |p: &PathBuf| {
        p.file_name()
            .and_then(|n| n.to_str()?.strip_prefix(".pending-"))
            .is_some_and(|n| !n.starts_with(INLINED_PREFIX))
    };
    let first = queued.first()?.clone();
    // Only read and hash the queue when some run waits (Linux; elsewhere none is seen).
    if !crate::courtesy::any_wanted() {
        return Some(first);
    }
    let mut of = Vec::new();
    for p in queued.iter().filter(|p| plain(p)) {
        let id = match ids.get(p) {
            Some(id) => *id,
            None => {
                let Ok(mut f) = std::fs::File::open(p) else {
                    continue;
                };
                let Ok((content, _)) = content_hash(&mut f) else {
                    continue;
                };
                let id = crate::courtesy::module_id(dir, &content);
                ids.insert(p.clone(), id);
                id
            }
        };
        of.push((id, p));
    }
    let wanted = crate::courtesy::wanted(of.iter().map(|(id, _)| *id));
    Some(
        of.iter()
            .find(|(id, _)| Some(*id) == wanted)
            .map_or(first, |(_, p)| (*p).clone()),
    )
}

/// When a module was queued: its queue entry's last status change (a hard link made to queue
/// it keeps the module's own modification time, but not its change time).
fn queued_at(meta: &std::fs::Metadata) -> std::time::SystemTime {
    use std::os::unix::fs::MetadataExt;
    let secs = u64::try_from(meta.ctime()).unwrap_or(0);
    let nanos = u32::try_from(meta.ctime_nsec()).unwrap_or(0);
    std::time::UNIX_EPOCH + Duration::new(secs, nanos)
}

/// Queue `wasm` for a background compile (the file is both input and marker); false if it is
/// queued already. With `file`, the file `wasm` was read from, the queue entry is a hard link
/// to it if it can be (no copy to write on the way to running the program; `go test` deleting
/// its binary afterwards leaves the link): should the file have changed since, the filler
/// compiles what is there, naming the entry by that content.
fn claim(pending: &Path, wasm: &[u8], file: Option<&Path>) -> bool {
    if let Ok(meta) = std::fs::metadata(pending) {
        let age = queued_at(&meta).elapsed().unwrap_or_default();
        if age < FILL_STALE {
            return false;
        }
        let _ = std::fs::remove_file(pending);
    }
    let Some(dir) = pending.parent() else {
        return false;
    };
    if std::fs::create_dir_all(dir).is_err() {
        return false;
    }
    if let Some(file) = file {
        match std::fs::hard_link(file, pending) {
            Ok(()) => return true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return false,
            // Another file system, or a file we may not link: copy it.
            Err(_) => {}
        }
    }
    // Written under a private name, then linked into place: a filler scanning the directory
    // never sees a partial module, and of two runs queueing the same module one wins.
    let tmp = dir.join(format!(
        ".queue-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let queued = std::fs::write(&tmp, wasm).and_then(|()| std::fs::hard_link(&tmp, pending));
    let _ = std::fs::remove_file(&tmp);
    queued.is_ok()
}

/// [`Engine::compile_pending`]; `give_way`: pause while other modules' first runs compile and
/// run (only in a process of its own: it takes the process's `SIGRTMIN`).
fn fill_from(pending: &Path, give_way: bool) -> Result<(), Error> {
    let dir = pending
        .parent()
        .ok_or_else(|| Error::Host("compile cache: no directory".into()))?;
    if give_way {
        // The module it was started for first: the run that queued it (a split first run, or
        // one waiting to move to its Cranelift code) doesn't pause it, even before it has
        // read the module to compile it.
        if let Ok(mut f) = std::fs::File::open(pending)
            && let Ok((content, _)) = content_hash(&mut f)
        {
            crate::courtesy::compiling(crate::courtesy::module_id(dir, &content));
        }
        // Its watcher keeps this thread's priority, to notice a run at once.
        crate::courtesy::give_way();
        crate::courtesy::register_this_thread();
    }
    lower_priority();
    // Every core, on threads of our own at idle priority too, so they only take what the run
    // that queued the module (which may still be going), or an embedder's threads, leave.
    match rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("gojs-fill-{i}"))
        .start_handler(move |_| {
            if give_way {
                crate::courtesy::register_this_thread();
            }
            lower_priority();
        })
        .build()
    {
        Ok(pool) => pool.install(|| fill_queue(dir, true)),
        Err(_) => fill_queue(dir, false),
    }
}

/// Compile every module queued in the cache directory `dir` ([`Engine::compile_pending`]), on
/// the current rayon pool if `parallel`.
fn fill_queue(dir: &Path, parallel: bool) -> Result<(), Error> {
    let host = |e: std::io::Error| Error::Host(format!("compile cache: {e}"));
    let lock = std::fs::File::create(dir.join(".fill.lock")).map_err(host)?;
    let plain = new_engine(&config(Compiler::Cranelift, parallel))?;
    let inlining = new_engine(&inlining_config(parallel))?;
    let winch = new_engine(&config(Compiler::Winch, parallel))?;
    let mut seen = std::collections::HashSet::new();
    let mut ids = std::collections::HashMap::new();
    loop {
        if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            return Ok(());
        }
        while let Some(next) = next_pending(dir, &mut ids) {
            // A queued file we can't remove must not keep us here forever.
            if !seen.insert(next.clone()) {
                break;
            }
            if let Ok(wasm) = std::fs::read(&next)
                && crate::module::classify(&wasm).is_ok()
            {
                // The entry is named by the content, not by the queue file's name.
                let (content, size) = content_hash(&mut &wasm[..])?;
                let key = Key {
                    dir: dir.to_owned(),
                    content,
                    size,
                };
                crate::courtesy::compiling(key.module_id());
                let inline = next
                    .file_name()
                    .and_then(|n| n.to_str()?.strip_prefix(".pending-"))
                    .is_some_and(|n| n.starts_with(INLINED_PREFIX));
                let plain_entry = key.entry(&plain, Compiler::Cranelift);
                let winch_entry = key.entry(&winch, Compiler::Winch);
                if inline {
                    let entry = key.entry(&inlining, Compiler::Cranelift);
                    if crate::cache::load(&inlining, &entry).is_none() {
                        let _one_at_a_time = inlining_lock();
                        if memory_to_inline(size)
                            && let Ok(module) = compile_go(&inlining, &wasm, Code::Cranelift)
                        {
                            crate::cache::store(&module, &entry, true);
                        }
                    }
                    // The plain code is now superseded.
                    if entry.exists() {
                        let _ = std::fs::remove_file(&plain_entry);
                    }
                    let _ = std::fs::remove_file(&next);
                    continue;
                }
                let entry = plain_entry;
                // A split first run caches nothing: Winch's code for the whole module
                // first (~4× faster to compile), for runs before Cranelift's is ready —
                // unless a run waits for Cranelift's code to move to: then that first, and
                // Winch's, superseded by it, not at all.
                let waited_for = crate::courtesy::wanted([key.module_id()]).is_some();
                if !waited_for
                    && !entry.exists()
                    && !winch_entry.exists()
                    && let Ok(module) = compile_go(&winch, &wasm, Code::WinchWhole)
                {
                    crate::cache::store(&module, &winch_entry, false);
                }
                if crate::cache::load(&plain, &entry).is_none()
                    && let Ok(module) = compile_go(&plain, &wasm, Code::Cranelift)
                {
                    crate::cache::store(&module, &entry, true);
                }
                // Winch's code for it is now superseded, and so are the primaries of its
                // first runs (removed only now: a run that looked for the whole module's
                // code just before Winch's was cached still looks for a primary).
                if entry.exists() {
                    let _ = std::fs::remove_file(&winch_entry);
                    for primary in primary_entries_of(&winch_entry) {
                        let _ = std::fs::remove_file(primary);
                    }
                }
            }
            let _ = std::fs::remove_file(&next);
        }
        let _ = rustix::fs::flock(&lock, rustix::fs::FlockOperation::Unlock);
        // A module queued after the last scan, whose filler found the lock taken.
        if oldest_pending(dir).is_none_or(|p| seen.contains(&p)) {
            return Ok(());
        }
    }
}

/// Let the scheduler run this thread (and threads it starts) only on otherwise idle CPU.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler reads `param`; pid 0 is the calling thread.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    }
}

/// Cranelift compiling with Winch's calling convention, and Winch's engine's tunables and wasm
/// features (our wasmtime patch, `vendor/wasmtime-winch-abi.patch`): its code loads into that
/// engine and runs beside Winch's in one store ([`crate::split::Hot`]). On the calling thread
/// only: the first part's compile has the cores meanwhile. With `inline`, Cranelift inlines
/// small callees within the part (the scheduler's: RATIONALE.md, "Why does only the
/// scheduler's part inline?"); such code loads into Winch's engine all the same, which our
/// third patch lets accept any inlining (`vendor/wasmtime-inlining-compat.patch`).
pub(crate) fn cranelift_for_winch(inline: bool) -> Option<&'static wasmtime::Engine> {
    static ENGINES: [OnceLock<Option<wasmtime::Engine>>; 2] = [OnceLock::new(), OnceLock::new()];
    ENGINES[usize::from(inline)]
        .get_or_init(|| {
            let mut c = config(Compiler::Cranelift, false);
            c.cranelift_winch_abi(true);
            c.generate_address_map(false);
            if inline {
                c.compiler_inlining(wasmtime::Inlining::Yes);
            }
            wasmtime::Engine::new(&c).ok()
        })
        .as_ref()
}

fn new_engine(config: &wasmtime::Config) -> Result<wasmtime::Engine, Error> {
    wasmtime::Engine::new(config).map_err(|e| Error::Host(format!("wasm engine: {e}")))
}

/// Modules up to this size may be compiled by Cranelift with inlining (RATIONALE.md, "Why
/// does Cranelift inline only in modules up to 6 MiB, and only after a run of 200 ms?"): Go
/// programs of ordinary size, not most test binaries.
const INLINE_MAX: u64 = 6 << 20;

/// Whether Cranelift compiles a module of `size` bytes with inlining: up to [`INLINE_MAX`]
/// bytes unless `GOJS_INLINE=off`; at any size with `GOJS_INLINE=all`.
fn inlines(size: u64) -> bool {
    match std::env::var("GOJS_INLINE").as_deref() {
        Ok("off") => false,
        Ok("all") => true,
        _ => size <= INLINE_MAX,
    }
}

/// `GOJS_INLINE=all`: inline in any module, test binaries too.
fn inline_all() -> bool {
    std::env::var("GOJS_INLINE").as_deref() == Ok("all")
}

/// Whether `wasm` is a Go test binary (`go test -c`; its name section names `testing.MainStart`).
/// Those run once per build, so a tier-up would only cost their machine seconds of CPU and
/// gigabytes of memory (the small ones are 5.1–5.5 MB, under [`INLINE_MAX`]).
fn is_go_test(wasm: &[u8]) -> bool {
    memchr::memmem::find(wasm, b"testing.MainStart").is_some()
}

/// Whether this machine has the memory to compile a module of `size` bytes with inlining,
/// which takes ~400 bytes per byte of module for a moment (RATIONALE.md): twice that, going
/// by the kernel's estimate of what it can give without swapping.
fn memory_to_inline(size: u64) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/meminfo") else {
        return true;
    };
    let available_kib = info
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    available_kib.is_none_or(|kib| kib.saturating_mul(1024) >= size.saturating_mul(800))
}

/// Held while a background compile inlines: one such compile at a time per user on this
/// machine, whatever its cache directory, since each may take ~1.6 GB for a moment (runs that
/// each start with a fresh cache would otherwise pile them up). `None` if the lock can't be
/// made; the lock is released when the file is dropped.
fn inlining_lock() -> Option<std::fs::File> {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let path = std::env::temp_dir().join(format!("gojs-inlining-{uid}.lock"));
    let file = std::fs::File::create(path).ok()?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).ok()?;
    Some(file)
}

/// Cranelift's configuration with inlining within the module ([`inlines`]).
fn inlining_config(parallel: bool) -> wasmtime::Config {
    let mut config = config(Compiler::Cranelift, parallel);
    config.compiler_inlining(wasmtime::Inlining::Yes);
    config
}

fn config(compiler: Compiler, parallel: bool) -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config.max_wasm_stack(WASM_MAX_STACK);
    // Only checked against max_wasm_stack: we never run wasm on async fibers.
    config.async_stack_size(WASM_MAX_STACK);
    config.parallel_compilation(parallel);
    // A memory's bytes stay where they are for its life (the default 4 GiB reservation holds any
    // 32-bit memory): imports keep its address between calls (`instance::MemView`).
    config.memory_may_move(false);
    // The host calls only a module's exports, so only they get an entry for the host
    // (our wasmtime patch): not every function in Go's table, which holds them all (a
    // third of a split first run's compile; RATIONALE.md, "Why do only exports have an
    // entry for the host?").
    config.host_entries_for_exports_only(true);
    match compiler {
        Compiler::Winch => {
            config.strategy(wasmtime::Strategy::Winch);
            // Loads Cranelift's parts of a first run, the scheduler's compiled with inlining
            // (our wasmtime patch, `vendor/wasmtime-inlining-compat.patch`).
            config.load_any_inlining(true);
            // Winch still uses Cranelift for trampolines (one per export and function type):
            // optimizing them isn't worth the time, nor allocating their registers with care.
            config.cranelift_opt_level(wasmtime::OptLevel::None);
            config.cranelift_regalloc_algorithm(wasmtime::RegallocAlgorithm::SinglePass);
            // No map from machine code back to wasm offsets: 5–12% less compile time for
            // first runs (RATIONALE.md, "Why `--compiler=auto`…"). A trap's backtrace still
            // names each function, without the offset in it.
            config.generate_address_map(false);
        }
        Compiler::Cranelift | Compiler::Auto => {
            config.strategy(wasmtime::Strategy::Cranelift);
        }
    }
    // `GOJS_PERFMAP=1`: write /tmp/perf-PID.map so `perf report` names wasm functions, and keep
    // the native unwind tables a profiler's unwinder reads. wasmtime needs neither for its own
    // backtraces and traps, and leaving the tables out makes a compile ~3% faster.
    if std::env::var_os("GOJS_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    } else {
        config.native_unwind_info(false);
    }
    config
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

/// Where a module's compiled code lives in the cache: by its content's hash, then per engine
/// configuration and compiler ([`Key::entry`]).
#[derive(Clone)]
struct Key {
    dir: PathBuf,
    content: blake3::Hash,
    /// The module's size in bytes (which Cranelift engine compiles it: [`inlines`]).
    size: u64,
}

impl Key {
    /// Which background compile a run of this module waits for ([`crate::courtesy`]).
    fn module_id(&self) -> u32 {
        crate::courtesy::module_id(&self.dir, &self.content)
    }

    /// The entry for code compiled by `engine` (whose settings are `compiler`'s): the content
    /// plus everything about the engine that affects the code.
    fn entry(&self, engine: &wasmtime::Engine, compiler: Compiler) -> PathBuf {
        use std::hash::{Hash, Hasher};
        let mut fp = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut fp);
        let mut h = blake3::Hasher::new();
        h.update(self.content.as_bytes());
        h.update(&fp.finish().to_le_bytes());
        h.update(env!("CARGO_PKG_VERSION").as_bytes());
        // Not in wasmtime's compatibility hash: code without the table's host entries.
        h.update(b"host-entries-for-exports-only");
        h.update(format!("{compiler:?}").as_bytes());
        h.update(
            crate::rewrite::Passes::enabled(Code::of(compiler))
                .version()
                .as_bytes(),
        );
        self.dir.join(format!("{}.cwasm", h.finalize().to_hex()))
    }
}

/// BLAKE3 of everything `wasm` yields, read in chunks, and how many bytes that was.
fn content_hash(wasm: &mut impl Read) -> Result<(blake3::Hash, u64), Error> {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 128 << 10];
    let mut size = 0u64;
    loop {
        match wasm.read(&mut buf) {
            Ok(0) => return Ok((h.finalize(), size)),
            Ok(n) => {
                h.update(&buf[..n]);
                size += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Host(format!("reading the module: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    /// Parts compiled by Cranelift for Winch's engine, with inlining or without, load into an
    /// engine configured as gojs configures Winch's (which doesn't inline) and compute the
    /// same: Winch's engine accepts any inlining (`Config::load_any_inlining`, our patch
    /// `vendor/wasmtime-inlining-compat.patch`; without it, the scheduler's part failed to
    /// load and first runs ran Winch's code).
    #[test]
    fn parts_with_or_without_inlining_load_into_winch_s_engine() {
        use wasm_encoder as enc;
        use wasmtime::{Module, Store};
        // run(x) = add3(x) * 2, add3(x) = x + 3: a small callee, the kind Cranelift inlines.
        let mut m = enc::Module::new();
        let mut types = enc::TypeSection::new();
        types
            .ty()
            .function([enc::ValType::I32], [enc::ValType::I32]);
        m.section(&types);
        let mut funcs = enc::FunctionSection::new();
        funcs.function(0).function(0);
        m.section(&funcs);
        let mut exports = enc::ExportSection::new();
        exports.export("run", enc::ExportKind::Func, 0);
        m.section(&exports);
        let mut code = enc::CodeSection::new();
        let mut run = enc::Function::new([]);
        run.instructions()
            .local_get(0)
            .call(1)
            .i32_const(2)
            .i32_mul()
            .end();
        code.function(&run);
        let mut add3 = enc::Function::new([]);
        add3.instructions()
            .local_get(0)
            .i32_const(3)
            .i32_add()
            .end();
        code.function(&add3);
        m.section(&code);
        let wasm = m.finish();

        let winch = wasmtime::Engine::new(&super::config(super::Compiler::Winch, false)).unwrap();
        for inline in [false, true] {
            let cranelift = super::cranelift_for_winch(inline).unwrap();
            let bytes = Module::new(cranelift, &wasm).unwrap().serialize().unwrap();
            // SAFETY: bytes serialized just now from a module compiled in this process.
            let module = unsafe { Module::deserialize(&winch, bytes) }
                .unwrap_or_else(|e| panic!("inline {inline}: {e:#}"));
            let mut store = Store::new(&winch, ());
            let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
            let run = instance
                .get_typed_func::<i32, i32>(&mut store, "run")
                .unwrap();
            assert_eq!(run.call(&mut store, 4).unwrap(), 14, "inline {inline}");
        }
    }

    /// Work a helper starts in turn (queueing a compile starts the process that compiles) is
    /// waited for too: an exit once used to wait for the first helper only, and a queue entry
    /// was left with no compile behind it.
    #[test]
    fn helpers_started_by_helpers_are_waited_for() {
        use std::sync::atomic::{AtomicBool, Ordering};
        static DONE: AtomicBool = AtomicBool::new(false);
        super::spawn_before_exit(|| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            super::spawn_before_exit(|| {
                std::thread::sleep(std::time::Duration::from_millis(50));
                DONE.store(true, Ordering::SeqCst);
            });
        });
        super::join_helpers();
        assert!(DONE.load(Ordering::SeqCst));
    }

    #[test]
    fn a_module_read_from_a_file_is_queued_as_a_link_to_it() {
        let dir = std::env::temp_dir().join(format!("gojs-claim-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let module = dir.join("prog.wasm");
        let wasm = b"\0asm\x01\0\0\0";
        std::fs::write(&module, wasm).unwrap();
        // An old module: its queue entry is still new.
        let old = std::time::SystemTime::now() - 2 * super::FILL_STALE;
        std::fs::File::options()
            .append(true)
            .open(&module)
            .unwrap()
            .set_modified(old)
            .unwrap();

        let pending = dir.join(".pending-a.wasm");
        assert!(super::claim(&pending, wasm, Some(&module)));
        let (m, p) = (
            std::fs::metadata(&module).unwrap(),
            std::fs::metadata(&pending).unwrap(),
        );
        assert_eq!((m.dev(), m.ino()), (p.dev(), p.ino()), "not a link");
        assert!(super::queued_at(&p).elapsed().unwrap() < super::FILL_STALE);
        // Queued already: a second run leaves it.
        assert!(!super::claim(&pending, wasm, Some(&module)));
        assert_eq!(std::fs::metadata(&pending).unwrap().ino(), m.ino());

        // A file that can't be linked (gone): the bytes are written instead.
        let copied = dir.join(".pending-b.wasm");
        assert!(super::claim(&copied, wasm, Some(&dir.join("gone.wasm"))));
        assert_eq!(std::fs::read(&copied).unwrap(), wasm);
        assert_ne!(std::fs::metadata(&copied).unwrap().ino(), m.ino());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The background compile takes a module a run of Winch's code waits for (to move to
    /// Cranelift's code) before older ones; with nobody waiting, the oldest.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_queue_serves_a_waiting_run_first() {
        let dir = std::env::temp_dir().join(format!("gojs-want-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut queued = Vec::new();
        for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
            let p = dir.join(format!(".pending-{name}.wasm"));
            std::fs::write(&p, [b"\0asm\x01\0\0\0".as_slice(), &[i as u8; 3]].concat()).unwrap();
            queued.push(p);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let id_of = |p: &std::path::Path| {
            let (content, _) = super::content_hash(&mut std::fs::File::open(p).unwrap()).unwrap();
            crate::courtesy::module_id(&dir, &content)
        };
        let mut ids = std::collections::HashMap::new();
        // Other runs on the machine may want other modules: never these.
        let oldest = super::next_pending(&dir, &mut ids).unwrap();
        assert_eq!(oldest, queued[0]);
        let wanted = crate::courtesy::want(id_of(&queued[1])).expect("a lock");
        assert_eq!(super::next_pending(&dir, &mut ids).unwrap(), queued[1]);
        drop(wanted);
        assert_eq!(super::next_pending(&dir, &mut ids).unwrap(), queued[0]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
