//! The host side of the JS realm: the globals Go's runtime and standard library use beyond the
//! engine's builtins, one module per global, plus the state they share with the imports.

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rquickjs::{Function, Object, qjs};

use crate::event_loop::Timers;
use crate::realm::{JsCtx, JsValue};

mod console;
mod crypto;
mod encoding;
pub(crate) mod fs;
pub(crate) mod go;
pub(crate) mod path;
mod performance;
pub(crate) mod process;
mod timers;

/// Why the guest stopped in a nested call, parked until the event loop picks it up
/// (see [`crate::reentry`]).
pub(crate) enum Stop {
    /// A wasm trap (with its backtrace) in a nested `resume`.
    Trap(wasmtime::Error),
    /// A JS exception that nothing caught (Node prints it and exits 1).
    Uncaught(String),
}

/// Wall-clock and monotonic time as the guest sees it.
pub(crate) struct Clock {
    start: Instant,
    start_unix_ns: i128,
}

impl Clock {
    /// A clock that reads `start` (default: the host's wall clock) when the instance starts and
    /// advances with the host's monotonic clock.
    pub fn new(start: Option<SystemTime>) -> Self {
        let unix = match start
            .unwrap_or_else(SystemTime::now)
            .duration_since(UNIX_EPOCH)
        {
            Ok(d) => d.as_nanos() as i128,
            Err(e) => -(e.duration().as_nanos() as i128),
        };
        Clock {
            start: Instant::now(),
            start_unix_ns: unix,
        }
    }
    /// `runtime.walltime`: seconds and nanoseconds since the Unix epoch.
    pub fn walltime(&self) -> (i64, i32) {
        let ns = self.start_unix_ns + self.start.elapsed().as_nanos() as i128;
        (
            ns.div_euclid(1_000_000_000) as i64,
            ns.rem_euclid(1_000_000_000) as i32,
        )
    }
    /// Milliseconds since the instance started (`performance.now()`).
    pub fn now_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1000.0
    }
    /// `runtime.nanotime1`: wall-clock origin plus monotonic elapsed time, in nanoseconds.
    pub fn nanotime(&self) -> i64 {
        (self.start_unix_ns + self.start.elapsed().as_nanos() as i128) as i64
    }
    /// The instance's time origin in Unix milliseconds (`performance.timeOrigin`).
    pub fn origin_ms(&self) -> f64 {
        self.start_unix_ns as f64 / 1e6
    }
}

/// Per-instance process state behind the `process` global.
pub(crate) struct ProcessState {
    pub cwd: RefCell<String>,
    pub umask: Cell<u32>,
    pub argv0: String,
}

/// Run `f` with `count` one higher (restored also on unwind).
fn counted<R>(count: &Cell<u32>, f: impl FnOnce() -> R) -> R {
    struct Leave<'a>(&'a Cell<u32>);
    impl Drop for Leave<'_> {
        fn drop(&mut self) {
            self.0.set(self.0.get() - 1);
        }
    }
    count.set(count.get() + 1);
    let _leave = Leave(count);
    f()
}

/// How much of Go's stderr is kept to find a panic message.
const STDERR_TAIL: usize = 16 << 10;

/// State shared by the imports, the host globals and the event loop. Lives on the guest thread.
pub(crate) struct Host {
    /// JS functions Rust holds (`JsFunction`).
    pub kept: crate::realm::Kept,
    /// How many entries into Go (`run`, `resume`, an export) are active on the stack: 1 when
    /// the event loop is in Go, more inside `js.FuncOf` callbacks.
    pub go_depth: Cell<u32>,
    /// How many times Go has been entered (run, resume, exports): an import that sees it
    /// unchanged after running JS knows Go's stack didn't move.
    pub go_entries: Cell<u64>,
    /// The address of the tier-up word in guest memory (`crate::tier::FLAG`), or 0 when the
    /// instance can't move: calls whose caller waits for Go's answer clear its `ALLOWED` bit.
    pub tier_flag: Cell<usize>,
    /// Set while the loop calls a completed fs call's callback: the `js.FuncOf` it calls first
    /// may stop for a tier-up (see `Guest::run_deferred`).
    pub stop_in_callback: Cell<bool>,
    /// How many calls into Go whose caller waits for the result are active: a `js.FuncOf`
    /// callback called from Go (through JS), or a call the embedder made.
    pub awaiting: Cell<u32>,
    /// Node-style callbacks to run from the event loop (completed fs calls), in order.
    pub deferred: RefCell<std::collections::VecDeque<(Function<'static>, Vec<JsValue>)>>,
    /// The last bytes Go wrote to stderr, to report the panic that ended it.
    pub stderr_tail: RefCell<Vec<u8>>,
    /// Which of fds 0–2 are the host process's own (their `fstat` is the host's).
    pub stdio_inherited: [bool; 3],
    pub stdin: RefCell<Box<dyn Read>>,
    pub stdout: RefCell<Box<dyn Write>>,
    pub stderr: RefCell<Box<dyn Write>>,
    pub timers: RefCell<Timers>,
    pub clock: Clock,
    pub process: ProcessState,
    /// Go's exit code once `runtime.wasmExit` ran.
    pub exit_code: Cell<Option<i32>>,
    pub stop: RefCell<Option<Stop>>,
    /// Promise rejections nobody handled yet: (promise identity, description). Node reports the
    /// first one still unhandled after the microtasks drain, and exits 1.
    pub rejections: RefCell<Vec<(usize, String)>>,
    /// The Go object (value id 6), held here rather than by the wrappers (see [`go`]).
    pub go: RefCell<Option<Object<'static>>>,
    /// The property names every `js.FuncOf` call uses, as atoms (see `go::wrapper`).
    pub event_atoms: RefCell<Option<Rc<go::EventAtoms>>>,
    /// The event objects of `js.FuncOf` calls, one per nesting depth (see `go::call_wrapper`).
    pub events: RefCell<Vec<Object<'static>>>,
    /// How many `js.FuncOf` calls are active on the stack.
    pub event_depth: Cell<usize>,
    /// Headroom for the JS collector (see [`crate::realm::GcSlack`]).
    pub gc_slack: crate::realm::GcSlack,
    /// The guest's filesystem: grants and open files.
    pub vfs: RefCell<crate::vfs::Vfs>,
    /// `fs.Stats.prototype`, given to every `Stats` object the host makes.
    pub stats_prototype: RefCell<Option<Object<'static>>>,
}

impl Host {
    /// Run `f` (a call into Go) counting it in [`Host::go_depth`].
    pub fn in_go<R>(&self, f: impl FnOnce() -> R) -> R {
        self.go_entries.set(self.go_entries.get() + 1);
        counted(&self.go_depth, f)
    }

    /// Run `f`, an entry into Go whose caller waits for its answer (a callback, an export),
    /// with the loop not allowed to stop for a tier-up ([`crate::tier`]) meanwhile.
    pub fn without_stop<R>(&self, f: impl FnOnce() -> R) -> R {
        use std::sync::atomic::{AtomicU32, Ordering};
        let Some(word) = self.tier_word() else {
            return f();
        };
        let was = word.fetch_and(!crate::tier::ALLOWED, Ordering::SeqCst) & crate::tier::ALLOWED;
        struct Restore<'a>(&'a AtomicU32, u32);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                self.0.fetch_or(self.1, Ordering::SeqCst);
            }
        }
        let _restore = Restore(word, was);
        f()
    }

    /// Run `f`, an entry into Go for the event loop, with the loop allowed to stop for a
    /// tier-up ([`crate::tier`]).
    pub fn allowing_stop<R>(&self, f: impl FnOnce() -> R) -> R {
        let Some(word) = self.tier_word() else {
            return f();
        };
        word.fetch_or(crate::tier::ALLOWED, std::sync::atomic::Ordering::SeqCst);
        let r = f();
        if let Some(word) = self.tier_word() {
            word.fetch_and(!crate::tier::ALLOWED, std::sync::atomic::Ordering::SeqCst);
        }
        r
    }

    /// Whether the loop stopped for a tier-up (clearing the word: the instance then moves or
    /// goes on where it is).
    pub fn take_stop(&self) -> bool {
        let Some(word) = self.tier_word() else {
            return false;
        };
        let was = word.fetch_and(
            !(crate::tier::STOPPED | crate::tier::REQUESTED),
            std::sync::atomic::Ordering::SeqCst,
        );
        was & crate::tier::STOPPED != 0
    }

    fn tier_word(&self) -> Option<&std::sync::atomic::AtomicU32> {
        let at = self.tier_flag.get();
        // SAFETY: see `without_stop`.
        (at != 0).then(|| unsafe { std::sync::atomic::AtomicU32::from_ptr(at as *mut u32) })
    }

    /// Run `f` while a caller waits for Go's answer (see [`Host::awaiting`]).
    pub fn awaiting_result<R>(&self, f: impl FnOnce() -> R) -> R {
        counted(&self.awaiting, f)
    }

    /// Whether a completed host call's callback must wait for the event loop, as in Node: yes
    /// while Go runs for the loop; no while someone waits for Go's answer (the callback might be
    /// what Go is waiting for, and the loop can't run until the answer is back).
    pub fn defer_callbacks(&self) -> bool {
        self.go_depth.get() > 0 && self.awaiting.get() == 0
    }

    /// Whether Go exited or a nested call stopped it: imports must unwind.
    pub fn stopped(&self) -> bool {
        self.exit_code.get().is_some() || self.stop.borrow().is_some()
    }

    /// Park a stop reason unless one is already parked (the first reason wins).
    pub fn park(&self, stop: Stop) {
        let mut s = self.stop.borrow_mut();
        if s.is_none() {
            *s = Some(stop);
        }
    }

    /// Write guest output to fd 1 or 2. Other fds are ignored, like Node's `writeSync` on a
    /// closed fd would fail silently for the runtime's own prints.
    pub fn write_fd(&self, fd: i64, bytes: &[u8]) -> std::io::Result<()> {
        let mut w = match fd {
            1 => self.stdout.borrow_mut(),
            2 => {
                let mut tail = self.stderr_tail.borrow_mut();
                tail.extend_from_slice(bytes);
                let excess = tail.len().saturating_sub(STDERR_TAIL);
                tail.drain(..excess);
                self.stderr.borrow_mut()
            }
            _ => return Err(std::io::Error::from_raw_os_error(libc::EBADF)),
        };
        w.write_all(bytes)?;
        w.flush()
    }

    /// The message of the Go panic reported last on stderr (`panic: …` up to the line's end).
    pub fn panic_message(&self) -> Option<String> {
        let tail = self.stderr_tail.borrow();
        let text = String::from_utf8_lossy(&tail);
        let at = text
            .rfind("\npanic: ")
            .map(|i| i + 1)
            .or_else(|| text.starts_with("panic: ").then_some(0))?;
        let line = text[at + "panic: ".len()..].lines().next()?;
        Some(line.trim_end_matches(" [recovered]").to_string())
    }

    pub fn go_object(&self) -> Option<Object<'static>> {
        self.go.borrow().clone()
    }

    /// Release every JS value the host holds (before the realm is torn down).
    pub fn clear(&self) {
        self.timers.borrow_mut().clear();
        self.deferred.borrow_mut().clear();
        self.kept.clear();
        self.go.borrow_mut().take();
        self.event_atoms.borrow_mut().take();
        self.events.borrow_mut().clear();
        self.stats_prototype.borrow_mut().take();
        self.vfs.borrow_mut().clear();
    }
}

/// Install every host global on the realm's global object.
pub(crate) fn install(ctx: &JsCtx, host: &Rc<Host>) -> rquickjs::Result<()> {
    let g = ctx.globals();
    let native = Object::new(ctx.clone())?;
    console::install(ctx, host, &native)?;
    encoding::install(ctx, &native)?;
    timers::install(ctx, host, &native)?;
    g.set("fs", fs::object(ctx, host)?)?;
    g.set("process", process::object(ctx, host)?)?;
    g.set("path", path::object(ctx, host)?)?;
    g.set("crypto", crypto::object(ctx)?)?;
    g.set("performance", performance::object(ctx, host)?)?;
    g.set("global", g.clone())?;
    let prelude: Function = ctx.eval(include_str!("prelude.js"))?;
    prelude.call::<_, ()>((native.clone(),))?;
    *host.stats_prototype.borrow_mut() = native.get("statsPrototype").ok();
    Ok(())
}

/// JS `ToNumber` (never throws to the caller: a throwing `valueOf` gives `NaN`).
pub(crate) fn to_number(v: &JsValue) -> f64 {
    if let Some(n) = v.as_number() {
        return n;
    }
    let ctx = v.ctx();
    let mut out = f64::NAN;
    let r = unsafe { qjs::JS_ToFloat64(ctx.as_raw().as_ptr(), &mut out, v.as_raw()) };
    if r < 0 {
        let _ = ctx.catch();
        return f64::NAN;
    }
    out
}

/// JS `ToIntegerOrInfinity`, clamped into `i64`.
pub(crate) fn to_integer(v: &JsValue) -> i64 {
    let n = to_number(v);
    if n.is_nan() { 0 } else { n.trunc() as i64 }
}

/// An `Error` for a host call that failed with an OS error, with Node's `code` (`ENOENT`, …),
/// `errno`, `syscall` and `path`, and Node's message (`ENOENT: no such file or directory, open 'x'`).
pub(crate) fn io_error(
    ctx: &JsCtx,
    err: &std::io::Error,
    syscall: &str,
    path: Option<&str>,
) -> rquickjs::Result<JsValue> {
    use std::io::ErrorKind as K;
    let errno = err.raw_os_error().unwrap_or(match err.kind() {
        K::NotFound => libc::ENOENT,
        K::PermissionDenied => libc::EACCES,
        K::AlreadyExists => libc::EEXIST,
        K::InvalidInput | K::InvalidFilename => libc::EINVAL,
        K::NotADirectory => libc::ENOTDIR,
        K::IsADirectory => libc::EISDIR,
        K::DirectoryNotEmpty => libc::ENOTEMPTY,
        K::ReadOnlyFilesystem => libc::EROFS,
        K::CrossesDevices => libc::EXDEV,
        K::Unsupported => libc::ENOSYS,
        _ => libc::EIO,
    });
    let code = errno_code(errno);
    let desc = std::io::Error::from_raw_os_error(errno).to_string();
    let desc = desc
        .split(" (os error")
        .next()
        .unwrap_or(&desc)
        .to_lowercase();
    let msg = match path {
        Some(p) => format!("{code}: {desc}, {syscall} '{p}'"),
        None => format!("{code}: {desc}, {syscall}"),
    };
    let e = crate::realm::error_with_code(ctx, &msg, code)?;
    if let Some(o) = e.as_object() {
        o.set("errno", -errno)?;
        o.set("syscall", syscall)?;
        if let Some(p) = path {
            o.set("path", p)?;
        }
    }
    Ok(e)
}

/// The Node/POSIX name of an errno value.
pub(crate) fn errno_code(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EMFILE => "EMFILE",
        libc::ENOSPC => "ENOSPC",
        libc::ESPIPE => "ESPIPE",
        libc::EROFS => "EROFS",
        libc::EPIPE => "EPIPE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::EINTR => "EINTR",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBUSY => "EBUSY",
        libc::ENODEV => "ENODEV",
        libc::ENFILE => "ENFILE",
        libc::ENOTTY => "ENOTTY",
        libc::EFBIG => "EFBIG",
        libc::EMLINK => "EMLINK",
        libc::EDQUOT => "EDQUOT",
        libc::ERANGE => "ERANGE",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ETIMEDOUT => "ETIMEDOUT",
        // Go's errnoByCode has no ETXTBSY; any other code would make Go panic.
        _ => "EIO",
    }
}
