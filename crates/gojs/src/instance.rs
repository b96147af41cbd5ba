//! One running Go program: its store, realm and host state, on its own thread.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::rc::Rc;
use std::time::Duration;

use rquickjs::Value;
use wasmtime::{AsContextMut, Linker, Memory, Store, TypedFunc};

use crate::abi::{Decoded, Ref};
use crate::event_loop::Due;
use crate::host::{self, Clock, Host, ProcessState, Stop};
use crate::realm::{self, JsCtx, JsEngine, JsValue, Reflect};
use crate::values::ValueTable;
use crate::{Error, Module, reentry};

/// Where guest output goes.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// #[derive(Clone, Default)]
/// struct Captured(Arc<Mutex<Vec<u8>>>);
/// impl std::io::Write for Captured {
///     fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
///         self.0.lock().unwrap().extend_from_slice(b);
///         Ok(b.len())
///     }
///     fn flush(&mut self) -> std::io::Result<()> { Ok(()) }
/// }
/// let out = Captured::default();
/// let config = gojs::Config::new()
///     .stdout(gojs::Output::Writer(Box::new(out.clone())))
///     .stderr(gojs::Output::Null);
/// ```
pub enum Output {
    /// The host process's stdout or stderr.
    Inherit,
    /// Discard.
    Null,
    /// Any writer (e.g. a buffer shared with the embedder).
    Writer(Box<dyn Write + Send>),
}

/// Where guest input (`fd 0`) comes from.
///
/// ```
/// let config = gojs::Config::new()
///     .stdin(gojs::Input::Reader(Box::new(std::io::Cursor::new(b"line one\n".to_vec()))));
/// ```
pub enum Input {
    /// The host process's stdin.
    Inherit,
    /// Empty (immediate end of file).
    Null,
    /// Any reader.
    Reader(Box<dyn Read + Send>),
}

/// How a Go program is run: arguments, environment and stdio.
///
/// Defaults deny: no arguments beyond the program name, an empty environment, stdin empty,
/// stdout and stderr inherited from the host, no filesystem (the guest sees an empty `/`).
/// The working directory is the host's when that is inside a granted directory, else `/`.
pub struct Config {
    pub(crate) args: Vec<String>,
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) stdin: Input,
    pub(crate) stdout: Output,
    pub(crate) stderr: Output,
    pub(crate) argv0: String,
    pub(crate) grants: Vec<crate::vfs::Grant>,
    pub(crate) cwd: Option<String>,
    pub(crate) umask: Option<u32>,
    pub(crate) funcs: Vec<(String, crate::convert::DynHostFn)>,
    pub(crate) globals: Vec<(String, crate::Value)>,
    pub(crate) wasm_imports: Vec<(String, String, crate::convert::DynHostFn)>,
    pub(crate) start_time: Option<std::time::SystemTime>,
    pub(crate) max_memory: Option<usize>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            args: vec!["js".into()],
            env: BTreeMap::new(),
            stdin: Input::Null,
            stdout: Output::Inherit,
            stderr: Output::Inherit,
            argv0: "gojs".into(),
            grants: Vec::new(),
            cwd: None,
            umask: None,
            funcs: Vec::new(),
            globals: Vec::new(),
            wasm_imports: Vec::new(),
            start_time: None,
            max_memory: None,
        }
    }
}

impl Config {
    /// A configuration with the denying defaults listed on [`Config`].
    pub fn new() -> Self {
        Config::default()
    }
    /// Set `os.Args` (the first element is the program name Go sees as `os.Args[0]`).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }
    /// Add one environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }
    /// Set stdin.
    pub fn stdin(mut self, input: Input) -> Self {
        self.stdin = input;
        self
    }
    /// Set stdout.
    pub fn stdout(mut self, output: Output) -> Self {
        self.stdout = output;
        self
    }
    /// Set stderr.
    pub fn stderr(mut self, output: Output) -> Self {
        self.stderr = output;
        self
    }
    /// Make a host directory visible to the guest (see [`Grant`](crate::Grant)).
    pub fn grant(mut self, grant: crate::vfs::Grant) -> Self {
        self.grants.push(grant);
        self
    }
    /// Grant the host directory `host` read-write at the guest path `guest`.
    pub fn dir(self, host: impl Into<std::path::PathBuf>, guest: impl AsRef<str>) -> Self {
        self.grant(crate::vfs::Grant::read_write(host, guest))
    }
    /// Grant the host directory `host` read-only at the guest path `guest`.
    pub fn ro_dir(self, host: impl Into<std::path::PathBuf>, guest: impl AsRef<str>) -> Self {
        self.grant(crate::vfs::Grant::read_only(host, guest))
    }
    /// Give the guest the host's whole filesystem, unconfined, as Node does.
    pub fn host_filesystem(self) -> Self {
        self.grant(crate::vfs::Grant::host_filesystem())
    }
    /// Set the guest's initial working directory (a guest path).
    pub fn cwd(mut self, dir: impl AsRef<str>) -> Self {
        self.cwd = Some(crate::host::path::resolve("/", &[dir.as_ref()]));
        self
    }
    /// Set the guest's initial umask (default: the host process's). It is applied to the modes
    /// of files and directories the guest creates, on top of the host process's own umask.
    pub fn umask(mut self, mask: u32) -> Self {
        self.umask = Some(mask & 0o777);
        self
    }
    /// Define a global JS function `name` (Go: `js.Global().Call(name, …)`) backed by a Rust
    /// closure. A dotted name (`"db.get"`) defines a method of a global object instead (Go:
    /// `js.Global().Get("db").Call("get", …)`), creating the object if needed — so a Rust
    /// "object" is a set of such methods, plus [`Config::global`] data. Arguments convert with [`FromValue`](crate::FromValue) — a wrong type throws a
    /// `TypeError` naming the argument — and the result with [`IntoValue`](crate::IntoValue); a
    /// closure returning `Err(e)` throws an `Error` whose message is `e`'s, which Go sees as a
    /// `js.Error`.
    ///
    /// ```
    /// let config = gojs::Config::new()
    ///     .func("add", |a: f64, b: f64| a + b)
    ///     .func("checked", |n: i32| -> Result<i32, String> {
    ///         if n < 0 { Err(format!("{n} is negative")) } else { Ok(n) }
    ///     });
    /// ```
    pub fn func<Args>(mut self, name: impl Into<String>, f: impl crate::HostFn<Args>) -> Self {
        self.funcs.push((name.into(), f.into_dyn()));
        self
    }
    /// Satisfy a `//go:wasmimport MODULE NAME` function (Go 1.24+) with a Rust closure. The
    /// function's numeric parameters arrive as numbers and its result (if it has one) is
    /// converted back to the declared wasm type; a closure error traps the guest with the
    /// message. Imports a module declares and nobody provides fail instantiation with an error
    /// naming them.
    ///
    /// ```
    /// // For: //go:wasmimport env add
    /// //      func add(a, b int32) int32
    /// let config = gojs::Config::new().wasm_import("env", "add", |a: i32, b: i32| a + b);
    /// ```
    pub fn wasm_import<Args>(
        mut self,
        module: impl Into<String>,
        name: impl Into<String>,
        f: impl crate::HostFn<Args>,
    ) -> Self {
        self.wasm_imports
            .push((module.into(), name.into(), f.into_dyn()));
        self
    }
    /// Define a global JS value `name` (a copy of `value`) before Go starts.
    ///
    /// ```
    /// let config = gojs::Config::new().global("settings", gojs::Json(vec![1, 2, 3]));
    /// ```
    pub fn global(mut self, name: impl Into<String>, value: impl crate::IntoValue) -> Self {
        self.globals.push((name.into(), value.into_value()));
        self
    }
    /// Start the guest's wall clock (Go's `time.Now`, `performance.timeOrigin`) at `start`
    /// instead of the host's current time; it then advances in real time. For reproducible
    /// runs and for testing time-dependent programs. (JavaScript's own `Date` keeps the host's
    /// time.)
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// let config = gojs::Config::new().start_time(UNIX_EPOCH + Duration::from_secs(1_000_000_000));
    /// ```
    pub fn start_time(mut self, start: std::time::SystemTime) -> Self {
        self.start_time = Some(start);
        self
    }
    /// Limit the memory the guest holds to `bytes`: its linear memory (Go's heap, stacks and
    /// data) and its JS heap (the objects, strings and buffers it made through `syscall/js`)
    /// together. Past it, linear memory doesn't grow (Go's runtime reports `out of memory` and
    /// the program exits with code 2) and JS allocations fail (an out-of-memory error thrown
    /// in JS, which Go's `syscall/js` turns into a panic). Without a limit, linear memory
    /// stops at wasm32's 4 GiB and the JS heap at 4 GiB.
    ///
    /// ```
    /// let config = gojs::Config::new().max_memory(256 << 20);
    /// ```
    pub fn max_memory(mut self, bytes: usize) -> Self {
        self.max_memory = Some(bytes);
        self
    }
    /// Set `process.argv0` (Go's net/http disables `fetch` when it starts with "node").
    pub fn argv0(mut self, argv0: impl Into<String>) -> Self {
        self.argv0 = argv0.into();
        self
    }
}

/// Clears the host when dropped, unless disarmed (see `Guest::new`).
struct ClearHost(Option<Rc<Host>>);

impl Drop for ClearHost {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.clear();
        }
    }
}

/// Define the embedder's `//go:wasmimport` functions, and explain any import nobody provides.
fn link_wasm_imports(
    linker: &mut Linker<HostState>,
    store: &mut Store<HostState>,
    module: &wasmtime::Module,
    provided: Vec<(String, String, crate::convert::DynHostFn)>,
) -> Result<(), Error> {
    use wasmtime::{ExternType, Val, ValType};
    let mut provided: Vec<_> = provided
        .into_iter()
        .map(|(m, n, f)| (m, n, Some(f)))
        .collect();
    for import in module.imports() {
        let (m, n) = (import.module(), import.name());
        // Ours: the runtime's imports and Go's own test hooks (`_gotest`).
        if linker.get(&mut *store, m, n).is_ok() {
            continue;
        }
        let Some(f) = provided
            .iter_mut()
            .find(|(pm, pn, _)| pm == m && pn == n)
            .and_then(|(_, _, f)| f.take())
        else {
            return Err(Error::MissingImport(format!("{m}.{n}")));
        };
        let ExternType::Func(ty) = import.ty() else {
            return Err(Error::NotGoJs(format!(
                "it imports `{m}.{n}`, which is not a function"
            )));
        };
        let label = format!("{m}.{n}");
        let result_ty: Option<ValType> = ty.results().next();
        linker
            .func_new(m, n, ty.clone(), move |_caller, params, results| {
                let args = params
                    .iter()
                    .map(|p| match p {
                        Val::I32(v) => crate::Value::Number(f64::from(*v)),
                        Val::I64(v) => crate::Value::Number(*v as f64),
                        Val::F32(v) => crate::Value::Number(f64::from(f32::from_bits(*v))),
                        Val::F64(v) => crate::Value::Number(f64::from_bits(*v)),
                        _ => crate::Value::Undefined,
                    })
                    .collect();
                let out = f(args).map_err(|e| wasmtime::Error::msg(format!("{label}: {e}")))?;
                if let (Some(t), Some(slot)) = (&result_ty, results.first_mut()) {
                    let n = match out {
                        crate::Value::Number(n) => n,
                        crate::Value::Bool(b) => f64::from(u8::from(b)),
                        other => {
                            return Err(wasmtime::Error::msg(format!(
                                "{label}: returned {}, not a number",
                                other.kind()
                            )));
                        }
                    };
                    *slot = match t {
                        ValType::I32 => Val::I32(n as i64 as i32),
                        ValType::I64 => Val::I64(n as i64),
                        ValType::F32 => Val::F32((n as f32).to_bits()),
                        _ => Val::F64(n.to_bits()),
                    };
                }
                Ok(())
            })
            .map_err(|e| Error::Host(format!("{e:#}")))?;
    }
    Ok(())
}

/// Define the embedder's global functions and values.
fn install_extras(
    ctx: &JsCtx,
    host: &Rc<Host>,
    funcs: Vec<(String, crate::convert::DynHostFn)>,
    globals: Vec<(String, crate::Value)>,
) -> rquickjs::Result<()> {
    let g = ctx.globals();
    for (name, value) in globals {
        g.set(name.as_str(), realm::to_js(ctx, &value, &host.kept)?)?;
    }
    for (name, f) in funcs {
        let f = std::sync::Arc::new(f);
        let label = name.clone();
        // Weak: the function lives in the realm the host owns.
        let h = Rc::downgrade(host);
        let js = rquickjs::Function::new(
            ctx.clone(),
            move |ctx: JsCtx,
                  args: rquickjs::function::Rest<JsValue>|
                  -> rquickjs::Result<JsValue> {
                let Some(host) = h.upgrade() else {
                    return Err(rquickjs::Exception::throw_message(
                        &ctx,
                        "the instance is gone",
                    ));
                };
                let mut values = Vec::with_capacity(args.0.len());
                for (i, a) in args.0.iter().enumerate() {
                    match realm::from_js(a, &host.kept) {
                        Ok(v) => values.push(v),
                        Err(e) => {
                            let msg = format!("{label}: argument {}: {e}", i + 1);
                            return Err(rquickjs::Exception::throw_type(&ctx, &msg));
                        }
                    }
                }
                match f(values) {
                    Ok(v) => realm::to_js(&ctx, &v, &host.kept),
                    Err(msg) if msg.starts_with("argument ") => Err(
                        rquickjs::Exception::throw_type(&ctx, &format!("{label}: {msg}")),
                    ),
                    Err(msg) => Err(rquickjs::Exception::throw_message(&ctx, &msg)),
                }
            },
        )?
        .with_name(name.rsplit('.').next().unwrap_or(&name))?;
        let (owner, key) = owner_of(&g, &name)?;
        owner.set(key, js)?;
    }
    Ok(())
}

/// For a dotted name (`db.get`), the object that gets the last part (`globalThis.db`, created
/// if missing) and that part; for a plain name, the global object.
fn owner_of<'n>(
    g: &rquickjs::Object<'static>,
    name: &'n str,
) -> rquickjs::Result<(rquickjs::Object<'static>, &'n str)> {
    let mut owner = g.clone();
    let mut parts = name.split('.').peekable();
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            return Ok((owner, part));
        }
        let next: JsValue = owner.get(part)?;
        owner = match next.into_object() {
            Some(o) => o,
            None => {
                let o = rquickjs::Object::new(g.ctx().clone())?;
                owner.set(part, o.clone())?;
                o
            }
        };
    }
    Ok((owner, name))
}

fn writer(o: Output, fd: i32) -> Box<dyn Write> {
    match o {
        Output::Inherit if fd == 1 => Box::new(std::io::stdout()),
        Output::Inherit => Box::new(std::io::stderr()),
        Output::Null => Box::new(std::io::sink()),
        Output::Writer(w) => Box::new(w),
    }
}

fn reader(i: Input) -> Box<dyn Read> {
    match i {
        Input::Inherit => Box::new(std::io::stdin()),
        Input::Null => Box::new(std::io::empty()),
        Input::Reader(r) => Box::new(r),
    }
}

/// The guest's exports the host calls.
#[derive(Clone)]
pub(crate) struct GuestExports {
    pub mem: Memory,
    pub instance: wasmtime::Instance,
    // Shared, not cloned: cloning a `TypedFunc` clones its registered type (atomics), and
    // `getsp`/`resume` are needed on every import that runs JS and every callback.
    pub run: Rc<TypedFunc<(i32, i32), ()>>,
    pub resume: Rc<TypedFunc<(), ()>>,
    pub getsp: Rc<TypedFunc<(), i32>>,
}

impl GuestExports {
    fn of(instance: wasmtime::Instance, s: &mut Store<HostState>) -> wasmtime::Result<Self> {
        Ok(GuestExports {
            instance,
            mem: instance
                .get_memory(&mut *s, "mem")
                .ok_or_else(|| wasmtime::Error::msg("no `mem` export"))?,
            run: Rc::new(instance.get_typed_func(&mut *s, "run")?),
            resume: Rc::new(instance.get_typed_func(&mut *s, "resume")?),
            getsp: Rc::new(instance.get_typed_func(&mut *s, "getsp")?),
        })
    }
}

/// The store's data: what imports reach through their `Caller`.
pub(crate) struct HostState {
    pub host: Rc<Host>,
    pub ctx: JsCtx,
    pub values: ValueTable,
    pub reflect: Reflect,
    pub instance_of: crate::realm::InstanceOf,
    guest: Option<GuestExports>,
    /// Property names Go used, as JS strings (see `Call::load_name`).
    pub names: foldhash::HashMap<Box<[u8]>, std::rc::Rc<crate::realm::PropName>>,
    /// A split module's secondary, for this instance.
    pub split: crate::split::Loading,
    /// A split module's cold side, the linker its parts instantiate with, and how many parts
    /// of Cranelift's code for it ([`crate::split::Hot`]) this instance has placed (or passed
    /// over, if they failed).
    pub hot_linker: Option<(
        std::sync::Arc<crate::split::Secondary>,
        Box<Linker<HostState>>,
        usize,
    )>,
    /// Where the guest memory beyond the module's initial size begins: the memory there is
    /// anonymous, never mapped from the module's data ([`crate::fill`]).
    pub fresh_from: usize,
    /// Guest memory's address and size as imports last saw them.
    view: MemView,
    /// The store's limiter: notes that guest memory grew, so `view` is out of date.
    growth: Growth,
}

/// Guest memory's bytes as imports last saw them, kept because wasmtime finds them through the
/// store, the instance and its memory definition on every access: six dependent loads, ~6 ns,
/// a sixth of copying 1 KiB to a `Uint8Array`. The engine never moves a memory
/// (`memory_may_move(false)`, see `engine::config`) and wasm memory never shrinks, so an address
/// and size read once stay valid; when the memory grows, [`Growth`] marks the view out of date
/// and the next import reads both again.
struct MemView {
    base: *mut u8,
    len: usize,
}

impl MemView {
    /// Not read yet: the next import reads the memory's address and size.
    fn unset() -> MemView {
        MemView {
            base: std::ptr::null_mut(),
            len: 0,
        }
    }
}

/// The store's [`wasmtime::ResourceLimiter`]: it grants memory growth within the guest's
/// memory limit ([`Config::max_memory`]), every table growth, and notes memory growth.
#[derive(Default)]
struct Growth {
    memory_grew: bool,
    /// Told how far memory reaches, for the tier-up watcher ([`crate::tier::Shared::grew`]).
    tier: Option<std::sync::Arc<crate::tier::Shared>>,
    /// The guest's memory limit, shared with its JS heap.
    budget: Option<std::sync::Arc<crate::realm::MemoryBudget>>,
    /// The size of the last growth the limit refused.
    refused: Option<usize>,
}

impl wasmtime::ResourceLimiter for Growth {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if let Some(b) = &self.budget
            && !b.grow_wasm(desired)
        {
            // `memory.grow` returns -1: Go's runtime reports it is out of memory.
            self.refused = Some(desired);
            return Ok(false);
        }
        // Set even if the growth then fails: a needless re-read is harmless.
        self.memory_grew = true;
        if let Some(t) = &self.tier {
            t.grew(current);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(true)
    }
}

/// Guest memory and the host state, borrowed together: `Memory::data_and_store_mut` without
/// wasmtime's lookup (see [`MemView`]).
pub(crate) fn memory_and_state<'a>(
    caller: &'a mut wasmtime::Caller<'_, HostState>,
) -> wasmtime::Result<(&'a mut [u8], &'a mut HostState)> {
    let state = caller.data_mut();
    if state.growth.memory_grew || state.view.base.is_null() {
        let mem = state.guest()?.mem;
        let (bytes, state) = mem.data_and_store_mut(&mut *caller);
        state.view = MemView {
            base: bytes.as_mut_ptr(),
            len: bytes.len(),
        };
        state.growth.memory_grew = false;
        if let Some(t) = &state.growth.tier {
            t.grew(state.view.len);
        }
    }
    let state = caller.data_mut();
    // SAFETY: `base` and `len` were read from this store's guest memory (the view lives in the
    // store's data and dies with it). The memory never moves (the engine is configured so) and
    // never shrinks, and growth since the read would have set `memory_grew`, so the range is
    // mapped and belongs to the memory. No wasm runs while the slice is borrowed (it borrows the
    // caller), and nothing else in the store refers to the memory's bytes, so the slice is
    // unique, as `Memory::data_and_store_mut`'s is.
    let bytes = unsafe { std::slice::from_raw_parts_mut(state.view.base, state.view.len) };
    Ok((bytes, state))
}

impl HostState {
    /// The state of a store not instantiated yet: the value table holding `presets`.
    fn new(
        host: Rc<Host>,
        ctx: JsCtx,
        presets: [JsValue; crate::values::PRESET_IDS as usize],
        fresh_from: usize,
    ) -> rquickjs::Result<HostState> {
        Ok(HostState {
            host,
            values: ValueTable::new(presets),
            reflect: Reflect::new(&ctx)?,
            instance_of: crate::realm::InstanceOf::new(&ctx)?,
            ctx,
            guest: None,
            names: foldhash::HashMap::default(),
            split: crate::split::Loading::Loaded,
            hot_linker: None,
            fresh_from,
            view: MemView::unset(),
            growth: Growth::default(),
        })
    }

    /// A store of `engine`'s holding `state`, its limiter noting memory growth.
    fn store(engine: &wasmtime::Engine, state: HostState) -> Store<HostState> {
        let mut store = Store::new(engine, state);
        store.limiter(|state| &mut state.growth);
        store
    }

    /// The guest's exports (cheap to clone).
    pub fn guest(&self) -> wasmtime::Result<&GuestExports> {
        self.guest
            .as_ref()
            .ok_or_else(|| wasmtime::Error::msg("the Go module is not instantiated yet"))
    }

    /// [`HostState::load`] as a [`Raw`](crate::realm::Raw) value.
    pub fn load_raw(&self, r: Ref) -> crate::realm::Raw {
        use crate::realm::Raw;
        match r.decode() {
            Decoded::Undefined => Raw::undefined(&self.ctx),
            Decoded::Number(n) => Raw::number(&self.ctx, n),
            Decoded::Id(id) => match self.values.get(id) {
                Some(v) => Raw::dup(v),
                None => Raw::undefined(&self.ctx),
            },
        }
    }

    /// Add the `[]ref` arguments `refs` to `args` (`loadSliceOfValues`, with no array).
    pub fn load_args(&self, refs: impl Iterator<Item = Ref>, args: &mut crate::realm::RawArgs) {
        for r in refs {
            match r.decode() {
                Decoded::Undefined => args.push_undefined(),
                Decoded::Number(n) => args.push_number(n),
                Decoded::Id(id) => match self.values.get(id) {
                    Some(v) => args.push(v),
                    None => args.push_undefined(),
                },
            }
        }
    }

    /// `loadValue`: the JS value a ref denotes (unknown ids are `undefined`).
    pub fn load(&self, r: Ref) -> JsValue {
        match r.decode() {
            Decoded::Undefined => Value::new_undefined(self.ctx.clone()),
            Decoded::Number(n) => Value::new_number(self.ctx.clone(), n),
            Decoded::Id(id) => self
                .values
                .get(id)
                .cloned()
                .unwrap_or_else(|| Value::new_undefined(self.ctx.clone())),
        }
    }
}

/// A Go program instantiated on the current thread. Field order is drop order: the store's JS
/// values go before the JS engine.
pub(crate) struct Guest {
    store: Store<HostState>,
    host: Rc<Host>,
    js: JsEngine,
    /// Winch's code that moves to Cranelift's once it is cached ([`crate::tier`]).
    tier: Option<std::sync::Arc<crate::tier::Shared>>,
    /// The module name of Go's imports (`go` or `gojs`), to link another instance.
    abi: &'static str,
    /// Whether the program has moved to Cranelift's code.
    moved: bool,
    /// A split first run's samples of this thread, while it runs Winch's code
    /// ([`crate::sampler`]).
    sampler: Option<crate::sampler::Sampler>,
}

impl Guest {
    pub fn new(
        module: &Module,
        config: Config,
    ) -> Result<(Guest, Vec<String>, Vec<String>), Error> {
        let vfs = crate::vfs::Vfs::new(&config.grants)
            .map_err(|e| Error::Host(format!("cannot open a granted directory: {e}")))?;
        let cwd = config.cwd.clone().unwrap_or_else(|| {
            std::env::current_dir()
                .ok()
                .and_then(|d| crate::vfs::Vfs::guest_dir_of(&config.grants, &d))
                .unwrap_or_else(|| "/".into())
        });
        let budget = config.max_memory.map(crate::realm::MemoryBudget::new);
        let js = JsEngine::with_budget(budget.clone())?;
        let ctx = js.ctx();
        let inherited = [
            matches!(config.stdin, Input::Inherit),
            matches!(config.stdout, Output::Inherit),
            matches!(config.stderr, Output::Inherit),
        ];
        let host = Rc::new(Host {
            kept: realm::Kept::new(),
            stderr_tail: RefCell::default(),
            stdio_inherited: inherited,
            stdin: RefCell::new(reader(config.stdin)),
            stdout: RefCell::new(writer(config.stdout, 1)),
            stderr: RefCell::new(writer(config.stderr, 2)),
            timers: RefCell::default(),
            clock: Clock::new(config.start_time),
            process: ProcessState {
                cwd: RefCell::new(cwd),
                umask: Cell::new(config.umask.unwrap_or_else(host::process::host_umask)),
                argv0: config.argv0,
            },
            exit_code: Cell::new(None),
            stop: RefCell::new(None),
            go: RefCell::new(None),
            event_atoms: RefCell::new(None),
            events: RefCell::new(Vec::new()),
            event_depth: Cell::new(0),
            gc_slack: Default::default(),
            rejections: RefCell::default(),
            go_depth: Cell::new(0),
            go_entries: Cell::new(0),
            tier_flag: Cell::new(0),
            stop_in_callback: Cell::new(false),
            awaiting: Cell::new(0),
            deferred: RefCell::default(),
            vfs: RefCell::new(vfs),
            stats_prototype: RefCell::new(None),
        });
        // Until the guest owns it, clear the host on early returns: its JS values (the Go object,
        // whose functions hold the host) must go before the realm does.
        let mut clear_on_error = ClearHost(Some(host.clone()));
        let h = Rc::downgrade(&host);
        js.track_rejections(move |promise, reason, handled| {
            let Some(h) = h.upgrade() else { return };
            let mut list = h.rejections.borrow_mut();
            if handled {
                list.retain(|(p, _)| *p != promise);
            } else {
                list.push((promise, realm::describe_error(reason)));
            }
        });
        host::install(&ctx, &host)?;
        install_extras(&ctx, &host, config.funcs, config.globals)?;
        let go = host::go::object(&ctx, &host)?;
        *host.go.borrow_mut() = Some(go.clone());
        let presets = [
            Value::new_number(ctx.clone(), f64::NAN),
            Value::new_int(ctx.clone(), 0),
            Value::new_null(ctx.clone()),
            Value::new_bool(ctx.clone(), true),
            Value::new_bool(ctx.clone(), false),
            ctx.globals().into_value(),
            go.into_value(),
        ];
        let state = HostState::new(host.clone(), ctx, presets, usize::MAX)?;
        let inner = &module.inner;
        // The module's own engine: with `Compiler::Auto` it may be Winch's.
        // The realm is set up, counted: from here on the limit holds.
        if let Some(b) = &budget {
            if b.js() > b.limit() {
                return Err(Error::MemoryLimit {
                    needed: b.js(),
                    limit: b.limit(),
                });
            }
            b.arm();
        }
        let mut store = HostState::store(inner.module.engine(), state);
        store.data_mut().growth.budget = budget;
        let mut guest = Guest {
            store,
            host,
            js,
            tier: None,
            abi: inner.abi.module_name(),
            moved: false,
            sampler: None,
        };
        let own_imports_only = config.wasm_imports.is_empty();
        clear_on_error.0 = None;
        let mut linker = Linker::new(inner.module.engine());
        crate::imports::link(&mut linker, inner.abi.module_name())
            .map_err(|e| Error::Host(format!("{e:#}")))?;
        link_wasm_imports(
            &mut linker,
            &mut guest.store,
            &inner.module,
            config.wasm_imports,
        )?;
        let started = std::time::Instant::now();
        let instance = linker
            .instantiate(&mut guest.store, &inner.module)
            .map_err(|e| match guest.store.data().growth.refused {
                // The module's initial memory didn't fit beside the realm.
                Some(needed) => Error::MemoryLimit {
                    needed: needed
                        + guest
                            .store
                            .data()
                            .growth
                            .budget
                            .as_ref()
                            .map_or(0, |b| b.js()),
                    limit: guest
                        .store
                        .data()
                        .growth
                        .budget
                        .as_ref()
                        .map_or(0, |b| b.limit()),
                },
                None => Error::NotGoJs(format!("cannot instantiate: {e:#}")),
            })?;
        tracing::debug!("instantiated ({:.1?})", started.elapsed());
        if let Some(secondary) = &inner.secondary {
            let started = std::time::Instant::now();
            let loading = crate::split::install(&mut guest.store, linker, instance, secondary)
                .map_err(|e| Error::Host(format!("split module: {e:#}")))?;
            guest.store.data_mut().split = loading;
            // Cranelift's code for the program's own functions, waited for if small: in place
            // before `main.main` is called (through the table), so that it runs there from the
            // start.
            guest.install_hot(true);
            tracing::debug!(
                "split: the other functions' slots filled ({:.1?})",
                started.elapsed()
            );
        }
        let exports = GuestExports::of(instance, &mut guest.store)
            .map_err(|e| Error::NotGoJs(format!("unexpected exports: {e:#}")))?;
        if let Some(upgrade) = inner.upgrade.clone()
            && own_imports_only
            && exports.mem.data_size(&guest.store) >= 4096
            && instance
                .get_export(&mut guest.store, crate::tier::LOOP_EXPORT)
                .is_some()
        {
            let base = exports.mem.data_ptr(&guest.store);
            let shared = crate::tier::Shared::new(base, exports.mem.data_size(&guest.store));
            guest
                .host
                .tier_flag
                .set(base as usize + crate::tier::FLAG as usize);
            guest.store.data_mut().growth.tier = Some(shared.clone());
            if let Some((_, _, placed)) = &guest.store.data().hot_linker {
                shared.hot_placed(*placed);
            }
            crate::tier::watch(upgrade, shared.clone(), inner.secondary.clone());
            guest.tier = Some(shared);
        }
        let initial = exports.mem.ty(&guest.store).minimum();
        let page = exports.mem.page_size(&guest.store);
        guest.store.data_mut().fresh_from =
            usize::try_from(initial.saturating_mul(page)).unwrap_or(usize::MAX);
        guest.store.data_mut().guest = Some(exports);
        let env = config.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        Ok((guest, config.args, env))
    }

    /// Whether the program has moved from Winch's code to Cranelift's ([`crate::tier`]).
    pub fn moved(&self) -> bool {
        self.moved
    }

    pub fn exit_code(&self) -> Option<i32> {
        self.host.exit_code.get()
    }

    /// The guest's exports (memory, `run`, `resume`, the instance), as of now: a move to
    /// Cranelift's code replaces them.
    fn exports(&self) -> Result<GuestExports, Error> {
        self.store
            .data()
            .guest()
            .cloned()
            .map_err(|e| Error::Host(e.to_string()))
    }

    /// Call `run(argc, argv)` with the argv/env block in place.
    pub fn start(&mut self, args: &[String], env: &[String]) -> Result<(), Error> {
        let block = crate::abi::argv_block(args, env)?;
        let g = self.exports()?;
        let mem = g.mem.data_mut(&mut self.store);
        let dst = mem
            .get_mut(crate::abi::ARGV_START..crate::abi::ARGV_START + block.bytes.len())
            .ok_or_else(|| {
                Error::NotGoJs("linear memory is too small for the argument block".into())
            })?;
        dst.copy_from_slice(&block.bytes);
        // Where this run spends its time in Winch's code, for Cranelift to compile: sampled
        // on this thread (the one instance of a module that does).
        if let Some((secondary, _, _)) = &self.store.data().hot_linker
            && let Some(samples) = secondary.samples()
        {
            self.sampler = crate::sampler::Sampler::start(&samples);
        }
        self.enter(|store| g.run.call(store, (block.argc, block.argv)))
    }

    /// Resume Go (a timeout fired, or to report a deadlock).
    pub fn resume(&mut self) -> Result<(), Error> {
        let g = self.exports()?;
        // A timer fired: what it starts runs before any move ([`Guest::move_while_idle`]).
        if let Some(t) = &self.tier {
            t.hold(crate::tier::HOLD);
        }
        self.enter(|store| g.resume.call(store, ()))
    }

    /// Call into Go for the event loop (`run`, `resume`): the loop may stop for a tier-up
    /// meanwhile, and then goes on in Cranelift's code ([`crate::tier`]).
    fn enter(
        &mut self,
        f: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<()>,
    ) -> Result<(), Error> {
        let host = self.host.clone();
        let r = host.in_go(|| host.allowing_stop(|| f(&mut self.store)));
        self.settle(r)?;
        self.go_on()
    }

    /// If Go's loop stopped for a tier-up, move to Cranelift's code (if it is there) and go on
    /// in the loop until Go pauses, as the call that stopped would have.
    fn go_on(&mut self) -> Result<(), Error> {
        let host = self.host.clone();
        while self.host.exit_code.get().is_none() && self.host.take_stop() {
            self.install_hot(false);
            self.tier_up();
            let g = self.exports()?;
            let Some(go_on) = g
                .instance
                .get_func(&mut self.store, crate::tier::LOOP_EXPORT)
            else {
                return Err(Error::Host("the Go module has no loop to go on in".into()));
            };
            let r = host.in_go(|| host.allowing_stop(|| go_on.call(&mut self.store, &[], &mut [])));
            self.settle(r)?;
        }
        // Go is gone (its exports stay callable): nothing left to move.
        if self.host.exit_code.get().is_some()
            && let Some(t) = self.tier.take()
        {
            t.finish();
            self.host.tier_flag.set(0);
        }
        Ok(())
    }

    /// Instantiate the parts of Cranelift's code for a split first run that are ready and not
    /// yet placed ([`crate::split::Hot`]; with `wait`, the first is waited for if it is small):
    /// their functions' table slots then lead to it, and so does every frame Go resumes
    /// through the table. Called before Go starts, at stops and while Go is paused (never with
    /// Go's frames on the wasm stack). Whether anything was placed.
    fn install_hot(&mut self, wait: bool) -> bool {
        let Some((first, linker, from)) = self.store.data_mut().hot_linker.take() else {
            return false;
        };
        // The samples are no longer wanted: the timer goes.
        if self.sampler.as_ref().is_some_and(|s| !s.is_armed()) {
            self.sampler = None;
        }
        let (next, placed) = first.place_hot(&mut self.store, &linker, from, wait, "");
        self.store.data_mut().hot_linker = Some((first, linker, next));
        if let Some(t) = &self.tier {
            t.hot_placed(next);
        }
        placed > 0
    }

    /// An embedder's call into Go, which can't stop for a tier-up: move first if Go is paused.
    fn tier_up_while_paused(&mut self) {
        if self.host.go_depth.get() == 0 {
            self.tier_up();
        }
    }

    /// Move the program to Cranelift's code if the watcher found it; whether it moved. Once
    /// tried, the instance stays where it is then.
    fn tier_up(&mut self) -> bool {
        let Some(shared) = self.tier.clone() else {
            return false;
        };
        let Some(module) = shared.take_ready() else {
            return false;
        };
        let started = std::time::Instant::now();
        // The watcher may not write to the memory while it is copied and released.
        let moved = shared.finish_with(|| self.move_to(&module));
        self.tier = None;
        self.host.tier_flag.set(0);
        match moved {
            Ok(bytes) => {
                self.moved = true;
                // Nothing of Winch's left to find hot.
                self.sampler = None;
                tracing::debug!(
                    "tier-up: moved to Cranelift's code, {} MiB of memory copied ({:.1?})",
                    bytes >> 20,
                    started.elapsed()
                );
                true
            }
            Err(e) => {
                tracing::warn!("tier-up: staying with Winch's code: {e:#}");
                false
            }
        }
    }

    /// Instantiate `module` (the same program, compiled by Cranelift), give it this instance's
    /// memory and Go's globals, and make it the guest: the program goes on where it stopped.
    /// Returns how many bytes were copied. On an error nothing has changed.
    fn move_to(&mut self, module: &wasmtime::Module) -> wasmtime::Result<usize> {
        use crate::tier::{FLAG, GLOBAL_EXPORTS};
        let old = self.store.data().guest()?.clone();
        let ctx = self.store.data().ctx.clone();
        let presets = std::array::from_fn(|_| Value::new_undefined(ctx.clone()));
        let fresh_from = self.store.data().fresh_from;
        let placeholder = HostState::new(self.host.clone(), ctx, presets, fresh_from)?;
        let mut store = HostState::store(module.engine(), placeholder);
        let mut linker = Linker::new(module.engine());
        crate::imports::link(&mut linker, self.abi)?;
        link_wasm_imports(&mut linker, &mut store, module, Vec::new())
            .map_err(|e| wasmtime::Error::msg(e.to_string()))?;
        let instance = linker.instantiate(&mut store, module)?;
        let exports = GuestExports::of(instance, &mut store)?;
        let (old_len, new_len) = (
            old.mem.data_size(&self.store),
            exports.mem.data_size(&store),
        );
        if new_len > old_len {
            wasmtime::bail!("the new instance's memory is larger ({new_len} > {old_len} bytes)");
        }
        let page = usize::try_from(exports.mem.page_size(&store))?;
        exports
            .mem
            .grow(&mut store, u64::try_from((old_len - new_len) / page)?)?;
        let fresh_from = self.store.data().fresh_from.min(old_len);
        let from = old.mem.data(&self.store);
        let to = exports.mem.data_mut(&mut store);
        if to.len() != from.len() {
            wasmtime::bail!("memory sizes differ after growing");
        }
        // All of the module's own memory; beyond it, what isn't zero (the new memory is).
        // Runs of 64 KiB chunks, each made present with one call before it is copied: page by
        // page, the faults took most of the move (2 MiB: 1.8–2.5 ms; RATIONALE.md).
        const CHUNK: usize = 64 << 10;
        let mut runs = Vec::new();
        runs.push(0..fresh_from);
        for (i, f) in from[fresh_from..].chunks(CHUNK).enumerate() {
            if f.iter().any(|b| *b != 0) {
                let start = fresh_from + i * CHUNK;
                match runs.last_mut() {
                    Some(last) if last.end == start => last.end = start + f.len(),
                    _ => runs.push(start..start + f.len()),
                }
            }
        }
        let mut copied = 0;
        for run in runs {
            let t = &mut to[run.clone()];
            crate::fill::populate(t);
            t.copy_from_slice(&from[run]);
            copied += t.len();
        }
        to[FLAG as usize..FLAG as usize + 4].fill(0);
        for name in GLOBAL_EXPORTS {
            let missing = || wasmtime::Error::msg(format!("no `{name}` export"));
            let v = old
                .instance
                .get_global(&mut self.store, name)
                .ok_or_else(missing)?
                .get(&mut self.store);
            instance
                .get_global(&mut store, name)
                .ok_or_else(missing)?
                .set(&mut store, v)?;
        }
        // Committed: the new store takes the host state, the old one the placeholder.
        std::mem::swap(self.store.data_mut(), store.data_mut());
        let state = store.data_mut();
        state.guest = Some(exports);
        state.split = crate::split::Loading::Loaded;
        // Parts of Cranelift's code belong with the store left behind: all of it is here.
        state.hot_linker = None;
        state.view = MemView::unset();
        state.growth = Growth {
            budget: state.growth.budget.take(),
            ..Growth::default()
        };
        drop(std::mem::replace(&mut self.store, store));
        Ok(copied)
    }

    /// Go is paused and the loop is about to wait up to `wait` (for ever if `None`): the moment
    /// to move to Cranelift's code if the watcher has it, unless a timer is due too soon for
    /// the move to be over by then (it would fire late; the move then comes at the next stop
    /// or pause). Returns whether the program moved. If the code isn't there yet, the watcher
    /// wakes this thread when it is (a wait in [`std::thread::park_timeout`] ends).
    pub fn move_while_idle(&mut self, wait: Option<Duration>) -> bool {
        if self.host.go_depth.get() == 0 && self.install_hot(false) {
            return true;
        }
        let Some(shared) = &self.tier else {
            return false;
        };
        if !shared.is_ready_or_wake_me() || self.host.go_depth.get() != 0 {
            return false;
        }
        let len = self
            .store
            .data()
            .guest()
            .map_or(0, |g| g.mem.data_size(&self.store));
        if wait.is_some_and(|w| w < crate::tier::move_time(len)) {
            return false;
        }
        self.tier_up()
    }

    /// Whether the program may still move to Cranelift's code.
    pub fn may_move(&self) -> bool {
        self.tier.is_some()
    }

    /// Turn the outcome of an outermost guest call into ours, picking up a parked stop.
    fn settle(&mut self, r: wasmtime::Result<()>) -> Result<(), Error> {
        if let Some(stop) = self.host.stop.borrow_mut().take() {
            return Err(match stop {
                Stop::Trap(e) => trap_error(e, self.store.engine()),
                Stop::Uncaught(msg) => Error::UncaughtException(msg),
            });
        }
        match r {
            Ok(()) => Ok(()),
            Err(_) if self.exit_code().is_some() => Ok(()),
            Err(e) => Err(trap_error(e, self.store.engine())),
        }
    }

    /// Run JS (a timer callback or microtasks) with the store published for re-entry.
    fn run_js<R>(&mut self, f: impl FnOnce(&JsCtx) -> R) -> R {
        let ctx = self.store.data().ctx.clone();
        let mut cx = self.store.as_context_mut();
        reentry::publish(&mut cx, || f(&ctx))
    }

    /// After JS ran from the loop: surface a parked stop or an uncaught exception.
    fn after_js(&mut self, thrown: Option<JsValue>) -> Result<(), Error> {
        self.settle(Ok(()))?;
        match thrown {
            Some(_) if self.exit_code().is_some() => Ok(()),
            Some(e) => Err(Error::UncaughtException(realm::describe_error(&e))),
            None => Ok(()),
        }
    }

    /// Run microtasks; then, like Node, an unhandled promise rejection is fatal.
    pub fn drain_microtasks(&mut self) -> Result<(), Error> {
        let thrown = self.run_js(realm::drain_microtasks);
        self.after_js(thrown)?;
        let unhandled = self.host.rejections.borrow_mut().drain(..).next();
        match unhandled {
            Some((_, reason)) if self.exit_code().is_none() => {
                Err(Error::UncaughtException(format!("(in promise) {reason}")))
            }
            _ => Ok(()),
        }
    }

    /// Run one due timer.
    pub fn fire(&mut self, due: Due) -> Result<(), Error> {
        match due {
            Due::Go(id) => {
                self.resume()?;
                while self.exit_code().is_none() && self.host.timers.borrow().go_registered(id) {
                    // Go didn't take the event (golang/go#28975); wasm_exec.js warns and retries.
                    let _ = self
                        .host
                        .write_fd(2, b"scheduleTimeoutEvent: missed timeout event\n");
                    self.resume()?;
                }
                Ok(())
            }
            Due::Js { callback, args } => self.call_callback(callback, args),
        }
    }

    /// Run the oldest deferred callback (a completed fs call), if any; whether one ran.
    pub fn run_deferred(&mut self) -> Result<bool, Error> {
        let next = self.host.deferred.borrow_mut().pop_front();
        let Some((callback, args)) = next else {
            return Ok(false);
        };
        // Go's callback for a completed fs call: what it returns goes nowhere, so Go's loop may
        // stop in it for a tier-up (once Go's function has returned, in practice: it only
        // sends on a channel) and then goes on from here, before anything else runs.
        self.host.stop_in_callback.set(true);
        let called = self.call_callback(callback, args);
        self.host.stop_in_callback.set(false);
        called?;
        self.go_on()?;
        Ok(true)
    }

    /// Call a JS callback from the loop (a timer's, a completed fs call's).
    fn call_callback(
        &mut self,
        callback: rquickjs::Function<'static>,
        args: Vec<JsValue>,
    ) -> Result<(), Error> {
        let thrown = self.run_js(|ctx| {
            realm::call(
                &callback.into_value(),
                Value::new_undefined(ctx.clone()),
                args,
            )
            .err()
        });
        self.after_js(thrown)
    }

    /// Nothing can wake Go any more: tell it (`_pendingEvent = {id: 0}`) so it reports the
    /// deadlock, as Node's runner does when its loop empties.
    pub fn report_deadlock(&mut self) -> Result<(), Error> {
        let ctx = self.store.data().ctx.clone();
        if let Some(go) = self.host.go_object() {
            let event = rquickjs::Object::new(ctx)?;
            event.set("id", 0)?;
            go.set("_pendingEvent", event)?;
        }
        self.resume()
    }

    /// Evaluate JS source and `JSON.stringify` the result (for [`crate::Handle::eval_json`]).
    /// The outer `Err` is fatal to the instance; the inner one is the caller's.
    pub fn eval_json(&mut self, source: &str) -> Result<Result<String, Error>, Error> {
        if self.exit_code().is_some() {
            return Ok(Err(self.exited()));
        }
        let host = self.host.clone();
        let outcome = host.awaiting_result(|| {
            self.run_js(|ctx| -> Result<String, JsValue> {
                let caught = |_| ctx.catch();
                let v: JsValue = ctx.eval(source).map_err(caught)?;
                let json: rquickjs::Object = ctx.globals().get("JSON").map_err(caught)?;
                let stringify: JsValue = json.get("stringify").map_err(caught)?;
                let s = realm::call(&stringify, json.into_value(), vec![v])?;
                Ok(if s.is_undefined() {
                    "undefined".into()
                } else {
                    realm::to_string_lossy(&s)
                })
            })
        });
        self.settle(Ok(()))?;
        if self.exit_code().is_some() {
            return Ok(Err(self.exited()));
        }
        Ok(outcome.map_err(|e| Error::JsException(realm::describe_error(&e))))
    }

    /// The error for a request Go's exit cut short.
    pub fn exited(&self) -> Error {
        Error::Exited {
            code: self.exit_code(),
            panic: self.host.panic_message(),
        }
    }

    /// Call the global JS function `name` (or else the wasm export `name`) with `args`.
    /// The outer `Err` is fatal to the instance; the inner one is the caller's.
    pub fn call(
        &mut self,
        name: &str,
        args: Vec<crate::Value>,
    ) -> Result<Result<crate::Value, Error>, Error> {
        if self.exit_code().is_some() {
            // After exit only exports can still answer (as under Node).
            return match self.call_export(name, args)? {
                Err(Error::NoSuchFunction(_)) => Ok(Err(self.exited())),
                other => Ok(other),
            };
        }
        let ctx = self.store.data().ctx.clone();
        let f: JsValue = ctx.globals().get(name).unwrap_or_else(|_| {
            let _ = ctx.catch();
            Value::new_undefined(ctx.clone())
        });
        if !f.is_function() {
            return self.call_export(name, args);
        }
        self.call_function(f, args)
    }

    /// Call a JS function Rust kept (a [`crate::JsFunction`]) with `args`.
    pub fn invoke(
        &mut self,
        f: &crate::JsFunction,
        args: Vec<crate::Value>,
    ) -> Result<Result<crate::Value, Error>, Error> {
        if !self.host.kept.owns(f) {
            return Ok(Err(Error::Conversion(crate::ConversionError {
                expected: "a function of this instance".into(),
                got: "a function of another instance".into(),
            })));
        }
        if self.exit_code().is_some() {
            return Ok(Err(self.exited()));
        }
        match self.host.kept.get(f) {
            Some(v) => self.call_function(v, args),
            None => Ok(Err(self.exited())),
        }
    }

    /// Call the JS function `f` with `args` while the caller waits for the answer.
    fn call_function(
        &mut self,
        f: JsValue,
        args: Vec<crate::Value>,
    ) -> Result<Result<crate::Value, Error>, Error> {
        self.tier_up_while_paused();
        let host = self.host.clone();
        let outcome = host.awaiting_result(|| {
            self.run_js(|ctx| -> Result<crate::Value, Error> {
                let mut js_args = Vec::with_capacity(args.len());
                for a in &args {
                    js_args.push(
                        realm::to_js(ctx, a, &host.kept).map_err(|e| Error::Host(e.to_string()))?,
                    );
                }
                let r = realm::call(&f, Value::new_undefined(ctx.clone()), js_args)
                    .map_err(|e| Error::JsException(realm::describe_error(&e)))?;
                realm::from_js(&r, &host.kept).map_err(Error::Host)
            })
        });
        self.settle(Ok(()))?;
        self.drain_microtasks()?;
        if self.exit_code().is_some() {
            return Ok(Err(self.exited()));
        }
        Ok(outcome)
    }

    /// Call a `//go:wasmexport` function with numbers (or booleans) for its parameters.
    pub fn call_export(
        &mut self,
        name: &str,
        args: Vec<crate::Value>,
    ) -> Result<Result<crate::Value, Error>, Error> {
        use wasmtime::{Val, ValType};
        self.tier_up_while_paused();
        let g = self.exports()?;
        // The runtime's own entry points are not the embedder's to call.
        let internal = ["run", "resume", "getsp"].contains(&name);
        let Some(func) = g
            .instance
            .get_func(&mut self.store, name)
            .filter(|_| !internal)
        else {
            return Ok(Err(Error::NoSuchFunction(name.to_string())));
        };
        let ty = func.ty(&self.store);
        if ty.params().len() != args.len() {
            return Ok(Err(Error::Conversion(crate::ConversionError {
                expected: format!("{} arguments for {name}", ty.params().len()),
                got: format!("{}", args.len()),
            })));
        }
        let mut params = Vec::with_capacity(args.len());
        for (i, (p, a)) in ty.params().zip(args).enumerate() {
            let n = match a {
                crate::Value::Number(n) => n,
                crate::Value::Bool(b) => f64::from(u8::from(b)),
                other => {
                    return Ok(Err(Error::Conversion(crate::ConversionError {
                        expected: format!("a number for argument {} of {name}", i + 1),
                        got: other.kind().to_string(),
                    })));
                }
            };
            params.push(match p {
                ValType::I32 => Val::I32(n as i64 as i32),
                ValType::I64 => Val::I64(n as i64),
                ValType::F32 => Val::F32((n as f32).to_bits()),
                ValType::F64 => Val::F64(n.to_bits()),
                other => {
                    return Ok(Err(Error::Conversion(crate::ConversionError {
                        expected: "numeric parameters".into(),
                        got: format!("{other}"),
                    })));
                }
            });
        }
        let mut results: Vec<Val> = ty.results().map(|_| Val::I32(0)).collect();
        let host = self.host.clone();
        let exited_before = self.exit_code().is_some();
        let r = host.without_stop(|| {
            host.awaiting_result(|| {
                host.in_go(|| func.call(&mut self.store, &params, &mut results))
            })
        });
        if exited_before {
            // Go's runtime is gone: a pure function still answers (as under Node), anything
            // else traps, which is the caller's error, not the instance's.
            if let Err(e) = r {
                return Ok(Err(trap_error(e, self.store.engine())));
            }
        } else {
            self.settle(r)?;
            self.drain_microtasks()?;
            if self.exit_code().is_some() {
                return Ok(Err(self.exited()));
            }
        }
        let value = match results.first() {
            None => crate::Value::Undefined,
            Some(Val::I32(v)) => crate::Value::Number(f64::from(*v)),
            Some(Val::I64(v)) => crate::Value::Number(*v as f64),
            Some(Val::F32(v)) => crate::Value::Number(f64::from(f32::from_bits(*v))),
            Some(Val::F64(v)) => crate::Value::Number(f64::from_bits(*v)),
            Some(_) => crate::Value::Undefined,
        };
        Ok(Ok(value))
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The first path the guest was refused for want of a grant.
    pub fn refusal(&self) -> Option<crate::vfs::Refusal> {
        self.host.vfs.borrow().refusal().cloned()
    }

    /// Ids Go holds right now and the table's capacity (for leak checks).
    pub fn value_table_stats(&self) -> (usize, usize) {
        let v = &self.store.data().values;
        (v.live(), v.capacity())
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        // The watcher may not write to guest memory once it is gone.
        if let Some(t) = self.tier.take() {
            t.finish();
        }
        self.host.tier_flag.set(0);
        // Release every JS value Rust holds, so the realm can be freed cleanly after the store.
        self.host.clear();
        self.store.data_mut().values.clear();
        self.store.data_mut().names.clear();
        self.js.collect();
    }
}

/// Ends the backtrace of a trap in code compiled with inlining (RATIONALE.md, "Why does
/// Cranelift inline only in modules up to 6 MiB, and only after a run of 200 ms?").
pub(crate) const INLINED_NOTE: &str =
    "\n    (functions inlined into others have no frame here; GOJS_INLINE=off keeps them)";

/// A trap as one line (the innermost cause first) plus the wasm backtrace with Go's function
/// names (from the module's name section). Code from `engine` with inlining has no frames for
/// the functions inlined into others: the backtrace says so.
fn trap_error(e: wasmtime::Error, engine: &wasmtime::Engine) -> Error {
    let backtrace = e
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(|bt| bt.to_string());
    let mut causes: Vec<String> = e
        .chain()
        .map(|c| c.to_string())
        .filter(|c| !c.starts_with("error while executing at wasm backtrace"))
        .collect();
    causes.reverse();
    let mut msg = causes.join(": ");
    if let Some(bt) = backtrace {
        msg.push('\n');
        msg.push_str(
            bt.replace("<unknown>!", "")
                .replace(
                    "error while executing at wasm backtrace:",
                    "wasm backtrace:",
                )
                .trim_end(),
        );
        if engine.get_compiler_inlining() != wasmtime::Inlining::No {
            msg.push_str(INLINED_NOTE);
        }
    }
    Error::Trap(msg)
}
