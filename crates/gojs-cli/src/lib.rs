//! Shared pieces of the `gojs` and `go_js_wasm_exec` binaries.

use std::path::{Path, PathBuf};

/// How the binaries run a module.
pub struct RunOptions {
    /// `os.Args` (the module path first).
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// `process.argv0` ("node" for `go_js_wasm_exec`, so net/http uses its fake network in tests).
    pub argv0: String,
    pub no_cache: bool,
    pub compiler: gojs::Compiler,
    pub grants: Vec<gojs::Grant>,
    /// [`gojs::Config::max_memory`], if set.
    pub max_memory: Option<usize>,
}

/// The binaries' allocator: mimalloc, except for blocks of [`LARGE`] bytes or more, which come
/// from the C library. wasmtime compiles on every core, and under glibc's allocator its threads
/// contend for arenas; mimalloc halves a Winch compile (RATIONALE.md, "Why mimalloc?"). But
/// glibc maps a large block on its own and grows it in place (`mremap`), where mimalloc copies
/// it into a new one whose pages fault in again: wasmtime builds a module's code in one growing
/// buffer.
#[global_allocator]
static ALLOC: Split = Split;

/// Blocks at least this large (and aligned to at most [`LIBC_ALIGN`]) come from the C library.
const LARGE: usize = 1 << 20;
/// What glibc's `malloc` aligns every block to on 64-bit targets.
const LIBC_ALIGN: usize = 16;

/// The allocator of [`ALLOC`]. Which allocator owns a block follows from its layout alone, which
/// Rust passes to every call, so a block always goes back where it came from.
struct Split;

fn large(layout: std::alloc::Layout) -> bool {
    layout.size() >= LARGE && layout.align() <= LIBC_ALIGN
}

// SAFETY: each block is allocated and freed by the same allocator (chosen by its layout, which
// the caller must pass unchanged), both of which are thread-safe; glibc's blocks are aligned to
// 16 bytes, and only layouts that ask for no more go to it.
unsafe impl std::alloc::GlobalAlloc for Split {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if large(layout) {
            // SAFETY: malloc has no preconditions.
            unsafe { libc::malloc(layout.size()).cast() }
        } else {
            // SAFETY: as the caller promised.
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if large(layout) {
            // SAFETY: calloc has no preconditions.
            unsafe { libc::calloc(1, layout.size()).cast() }
        } else {
            // SAFETY: as the caller promised.
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        if large(layout) {
            // SAFETY: `ptr` came from malloc, calloc or realloc (its layout says so).
            unsafe { libc::free(ptr.cast()) }
        } else {
            // SAFETY: as the caller promised.
            unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller promises `new_size`, rounded up to the alignment, fits an isize.
        let new =
            unsafe { std::alloc::Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (large(layout), large(new)) {
            // SAFETY: `ptr` came from glibc.
            (true, true) => unsafe { libc::realloc(ptr.cast(), new_size).cast() },
            // SAFETY: as the caller promised.
            (false, false) => unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) },
            _ => {
                // SAFETY: `new` is a valid layout (above); the old block is `layout.size()`
                // bytes, the new one `new_size`, and they don't overlap.
                unsafe {
                    let moved = self.alloc(new);
                    if !moved.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    moved
                }
            }
        }
    }
}

/// Tune the allocator before Rust allocates anything (this runs as an ELF constructor, before
/// `main` and the standard library's setup): arenas are committed as they are used rather than
/// up front (`arena_eager_commit` = 0), which keeps a small program's resident memory where
/// glibc's allocator had it (hello world: 22.6 MiB eager, 15 MiB not).
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static INIT_ALLOCATOR: extern "C" fn() = {
    extern "C" fn init() {
        /// `mi_option_arena_eager_commit` in mimalloc 2's `mi_option_t`.
        const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
        // SAFETY: setting an option is always allowed; it applies to arenas made from now on,
        // and no arena exists before the first allocation.
        unsafe { libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0) };
        // The C library maps each block of [`LARGE`] bytes or more on its own (and grows it in
        // place), always: a fixed threshold turns off glibc's raising it as blocks are freed.
        // SAFETY: mallopt only changes the C allocator's settings.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE as libc::c_int) };
    }
    init
};

/// End the process with `code` now: flush our output, wait for the background work gojs
/// started ([`gojs::wait_for_background_work`]), and leave without the rest of the C library's
/// exit work. That work is only tearing down memory the process is about to give back anyway
/// (mimalloc returns its freed pages to the kernel, page by page): 5–15 ms after a first run.
pub fn exit_now(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    gojs::wait_for_background_work();
    // SAFETY: `_exit` ends the process; everything that must outlive it is flushed or joined.
    unsafe { libc::_exit(code) }
}

/// Load and run a module with inherited stdio; print errors as one line (plus a trap's
/// backtrace) on stderr. Returns the process exit code.
pub fn run(module: &Path, options: RunOptions) -> i32 {
    match try_run(module, options) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gojs: {e}");
            1
        }
    }
}

fn try_run(module: &Path, options: RunOptions) -> Result<i32, gojs::Error> {
    let (module, config) = prepare(module, options)?;
    let (code, refused) = module.run_with_refusal(config)?;
    // A program that fails after being refused a path most likely failed for want of a grant
    // (the default grants nothing): say which, once, after its own output.
    if code != 0
        && let Some(refused) = refused
    {
        let fix = match refused {
            gojs::Refusal::Ungranted(_) => {
                "grant its directory with --dir or --ro-dir, or everything with --allow-all"
            }
            gojs::Refusal::ReadOnly(_) => "grant its directory with --dir, or --allow-all",
        };
        eprintln!("gojs: note: the program was refused a path: {refused} ({fix})");
    }
    Ok(code)
}

/// `gojs call`: run until idle, call `name` with JSON `args`, print the result as JSON.
/// Returns the process exit code.
pub fn call(module: &Path, options: RunOptions, name: &str, args: &[String]) -> i32 {
    let mut values = Vec::with_capacity(args.len());
    for a in args {
        match serde_json::from_str::<serde_json::Value>(a) {
            Ok(v) => values.push(gojs::Value::from(v)),
            Err(e) => {
                eprintln!("gojs: argument {a:?} is not JSON: {e}");
                return 2;
            }
        }
    }
    let outcome = prepare(module, options).and_then(|(module, config)| {
        let running = module.spawn(config)?;
        let result = running.handle().call::<gojs::Value>(name, values);
        Ok((running, result))
    });
    match outcome {
        Ok((_, Ok(v))) => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", v.to_json());
            let _ = out.flush();
            0
        }
        Ok((running, Err(e))) => {
            eprintln!("gojs: {name}: {e}");
            if let gojs::Error::Exited { code: None, .. } = e {
                // Go ended before it was idle: report how (its exit code, or a trap).
                return match running.wait() {
                    Ok(c) if c != 0 => c,
                    Ok(_) => 1,
                    Err(e) => {
                        eprintln!("gojs: {e}");
                        1
                    }
                };
            }
            // The process exits next: don't let Go be told it is deadlocked meanwhile.
            std::mem::forget(running);
            match e {
                gojs::Error::Exited { code: Some(c), .. } if c != 0 => c,
                _ => 1,
            }
        }
        Err(e) => {
            eprintln!("gojs: {e}");
            1
        }
    }
}

fn prepare(
    module: &Path,
    options: RunOptions,
) -> Result<(gojs::Module, gojs::Config), gojs::Error> {
    let engine = gojs::Engine::with_compiler(options.compiler, !options.no_cache)?
        .fill_cache_with(fill_cache_command);
    let module = gojs::Module::from_file(&engine, module)?;
    // The guest's umask is applied by gojs, as Node's `process.umask` is by the kernel: clear the
    // process's own so that it isn't applied twice.
    let umask = take_process_umask();
    let mut config = gojs::Config::new()
        .args(options.args)
        .argv0(options.argv0)
        .umask(umask)
        .stdin(gojs::Input::Inherit)
        .stdout(gojs::Output::Inherit)
        .stderr(gojs::Output::Inherit);
    for (k, v) in options.env {
        config = config.env(k, v);
    }
    for g in options.grants {
        config = config.grant(g);
    }
    if let Some(bytes) = options.max_memory {
        config = config.max_memory(bytes);
    }
    Ok((module, config))
}

/// The environment variable that turns either binary into a background cache filler.
const FILL_CACHE_FROM: &str = "GOJS_FILL_CACHE_FROM";

/// How `--compiler=auto` fills the cache: this same executable, run with the module's path in
/// `GOJS_FILL_CACHE_FROM`, which [`fill_cache_if_asked`] picks up.
fn fill_cache_command() -> std::process::Command {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("gojs"));
    let mut cmd = std::process::Command::new(exe);
    cmd.env(FILL_CACHE_FROM, "1");
    cmd
}

/// `GOJS_LOG=LEVEL` (`error`, `warn`, `info`, `debug` or `trace`): the runtime's own log on
/// stderr, each line stamped with the time since the process started. `debug` shows what each
/// run loads or compiles and how long that takes (the split of a first run, the rewrite, the
/// compile, parts, the cache writes). Unset: no log, at no cost.
pub fn init_logging() {
    let Some(value) = std::env::var_os(LOG) else {
        return;
    };
    let level = match value.to_string_lossy().to_ascii_lowercase().as_str() {
        "error" => tracing::Level::ERROR,
        "warn" => tracing::Level::WARN,
        "info" => tracing::Level::INFO,
        "debug" => tracing::Level::DEBUG,
        "trace" => tracing::Level::TRACE,
        other => {
            eprintln!("gojs: {LOG}={other} is not a level (error, warn, info, debug or trace)");
            return;
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .with_timer(tracing_subscriber::fmt::time::Uptime::default())
        .try_init();
}

/// The variable [`init_logging`] reads.
pub const LOG: &str = "GOJS_LOG";

/// Called first by both binaries: if this process was started to fill the compile cache in the
/// background (see [`gojs::Engine::fill_cache_with`]), do that and exit.
pub fn fill_cache_if_asked() {
    if std::env::var_os(FILL_CACHE_FROM).is_none() {
        return;
    }
    let code = match std::env::args_os().nth(1) {
        Some(path) => match gojs::Engine::compile_pending(Path::new(&path)) {
            Ok(()) => 0,
            Err(_) => 1,
        },
        None => 2,
    };
    std::process::exit(code)
}

/// `gojs compile`: compile `module` into the cache, or to the artifact `out`. Returns the exit
/// code.
pub fn compile(module: &Path, out: Option<&Path>, compiler: gojs::Compiler) -> i32 {
    let result = (|| {
        let wasm = std::fs::read(module).map_err(|source| gojs::Error::Read {
            path: module.to_owned(),
            source,
        })?;
        let compiler = match compiler {
            gojs::Compiler::Auto => gojs::Compiler::Cranelift,
            c => c,
        };
        match out {
            Some(out) => gojs::Engine::with_compiler(compiler, false)?.compile_to_file(&wasm, out),
            None => gojs::Engine::with_compiler(compiler, true)?.compile_into_cache(&wasm),
        }
    })();
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("gojs: {e}");
            1
        }
    }
}

/// Set the process umask to 0 and return what it was.
fn take_process_umask() -> u32 {
    // SAFETY: umask(2) has no memory-safety preconditions.
    unsafe { libc::umask(0) as u32 }
}

/// Parse a `--dir`/`--ro-dir` value: `HOST[::GUEST]`, GUEST defaulting to HOST's absolute path.
pub fn parse_grant(spec: &str, read_only: bool) -> Result<gojs::Grant, String> {
    let (host, guest) = match spec.split_once("::") {
        Some((h, g)) => (h, Some(g)),
        None => (spec, None),
    };
    let host = PathBuf::from(host);
    let host = std::fs::canonicalize(&host)
        .map_err(|e| format!("cannot grant {}: {e}", host.display()))?;
    if !host.is_dir() {
        return Err(format!("cannot grant {}: not a directory", host.display()));
    }
    let guest = match guest {
        Some(g) if g.starts_with('/') => g.to_string(),
        Some(g) => return Err(format!("guest path {g:?} must be absolute")),
        None => host
            .to_str()
            .ok_or_else(|| format!("{} is not valid UTF-8; give a GUEST path", host.display()))?
            .to_string(),
    };
    Ok(if read_only {
        gojs::Grant::read_only(host, guest)
    } else {
        gojs::Grant::read_write(host, guest)
    })
}
