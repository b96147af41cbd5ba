//! The Go-side floor of a syscall/js operation: a host whose imports do nothing but answer.
//!
//! `cargo xtask bench` runs the bridge programs (`bench/jsops`, `bench/funcof`) under this host
//! too. Every import returns a fixed, plausible answer without a JS engine: property reads give
//! a number, a string or an object ref by the property's name, calls give a number, strings are
//! always "hello", `copyBytes*` copy nothing, refs are never counted. A `js.FuncOf` callback is
//! still delivered the way Go expects (`_pendingEvent` read through `valueGet`, `resume`,
//! `result` written back through `valueSet`), because that traffic is Go's. What remains is
//! what Go itself spends per operation (argument encoding, `makeValue`'s finalizers, the
//! goroutine switches of `handleEvent`) plus a wasmtime host call: the floor any host pays.
//! Programs must print with `println` (which calls `runtime.wasmWrite`), not through `os`.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use wasmtime::{Caller, Engine, Linker, Memory, Module, Store, TypedFunc};

const NAN_HEAD: u64 = 0x7FF8_0000;
const FLAG_OBJECT: u64 = 1;
const FLAG_STRING: u64 = 2;
const FLAG_FUNCTION: u64 = 4;

const fn boxed(flag: u64, id: u32) -> u64 {
    ((NAN_HEAD | flag) << 32) | id as u64
}

const UNDEFINED: u64 = 0;
const OBJECT: u64 = boxed(FLAG_OBJECT, 100);
const STRING: u64 = boxed(FLAG_STRING, 101);
const EVENT: u64 = boxed(FLAG_OBJECT, 102);
const EVENT_ARGS: u64 = boxed(FLAG_OBJECT, 103);
const FUNC_BASE: u32 = 1000;
const TEXT: &[u8] = b"hello";

struct State {
    mem: Option<Memory>,
    /// Guest memory's address and size as imports last saw them, as gojs keeps them (its
    /// `instance::MemView`): without it, wasmtime's lookup on every access would add a few ns
    /// per import to the floor that gojs doesn't pay.
    view: (*mut u8, usize),
    growth: Growth,
    resume: Option<TypedFunc<(), ()>>,
    getsp: Option<TypedFunc<(), i32>>,
    exit: Option<i32>,
    timers: HashMap<i32, Instant>,
    next_timer: i32,
    /// The callback being delivered: Go's function id and the argument refs.
    event: Option<(u32, Vec<u64>)>,
    result: u64,
    start: Option<Instant>,
}

impl Default for State {
    fn default() -> State {
        State {
            mem: None,
            view: (std::ptr::null_mut(), 0),
            growth: Growth::default(),
            resume: None,
            getsp: None,
            exit: None,
            timers: HashMap::new(),
            next_timer: 0,
            event: None,
            result: 0,
            start: None,
        }
    }
}

/// The store's limiter: notes that memory grew, so `State::view` is out of date.
#[derive(Default)]
struct Growth {
    grew: bool,
}

impl wasmtime::ResourceLimiter for Growth {
    fn memory_growing(&mut self, _: usize, _: usize, _: Option<usize>) -> wasmtime::Result<bool> {
        self.grew = true;
        Ok(true)
    }

    fn table_growing(&mut self, _: usize, _: usize, _: Option<usize>) -> wasmtime::Result<bool> {
        Ok(true)
    }
}

type C<'a> = Caller<'a, State>;

fn mem<'a>(c: &'a mut C<'_>) -> &'a mut [u8] {
    if c.data().growth.grew || c.data().view.0.is_null() {
        let m = c.data().mem.expect("memory");
        let bytes = m.data_mut(&mut *c);
        let view = (bytes.as_mut_ptr(), bytes.len());
        c.data_mut().view = view;
        c.data_mut().growth.grew = false;
    }
    let (base, len) = c.data().view;
    // SAFETY: as gojs's `instance::memory_and_state`: the address and size were read from this
    // store's memory, which never moves (`memory_may_move(false)`) or shrinks, and growth since
    // then would have set `grew`. No wasm runs while the slice borrows the caller.
    unsafe { std::slice::from_raw_parts_mut(base, len) }
}

fn get<const N: usize>(c: &mut C<'_>, at: i32) -> [u8; N] {
    let at = at as u32 as usize;
    mem(c)[at..at + N].try_into().unwrap()
}

fn u64_at(c: &mut C<'_>, at: i32) -> u64 {
    u64::from_le_bytes(get(c, at))
}

fn put(c: &mut C<'_>, at: i32, bytes: &[u8]) {
    let at = at as u32 as usize;
    mem(c)[at..at + bytes.len()].copy_from_slice(bytes);
}

fn string(c: &mut C<'_>, at: i32) -> String {
    let (p, n) = (u64_at(c, at) as usize, u64_at(c, at + 8) as usize);
    String::from_utf8_lossy(&mem(c)[p..p + n]).into_owned()
}

fn refs(c: &mut C<'_>, at: i32) -> Vec<u64> {
    let (p, n) = (u64_at(c, at) as i32, u64_at(c, at + 8) as i32);
    (0..n).map(|i| u64_at(c, p + 8 * i)).collect()
}

/// Run a Go js/wasm module under the floor host; its output goes to ours. Returns the exit code.
pub fn run(wasm: &std::path::Path) -> Result<i32> {
    let mut config = wasmtime::Config::new();
    config.memory_may_move(false);
    let engine = Engine::new(&config)?;
    // The code gojs runs: Go's jumps made direct, as gojs compiles every module.
    let bytes = std::fs::read(wasm)?;
    let bytes = gojs::direct_jumps(&bytes).unwrap_or(bytes);
    let module = Module::new(&engine, &bytes)?;
    let mut linker: Linker<State> = Linker::new(&engine);
    link(&mut linker)?;
    let mut store = Store::new(&engine, State::default());
    store.limiter(|s| &mut s.growth);
    let instance = linker.instantiate(&mut store, &module)?;
    let memory = instance
        .get_memory(&mut store, "mem")
        .context("no `mem` export")?;
    store.data_mut().mem = Some(memory);
    store.data_mut().resume = Some(instance.get_typed_func(&mut store, "resume")?);
    store.data_mut().getsp = Some(instance.get_typed_func(&mut store, "getsp")?);
    store.data_mut().start = Some(Instant::now());
    let run: TypedFunc<(i32, i32), ()> = instance.get_typed_func(&mut store, "run")?;
    // argv = ["floor"], no environment: the string at 4096, then the pointer array.
    let data = memory.data_mut(&mut store);
    data[4096..4102].copy_from_slice(b"floor\0");
    data[4104..4112].copy_from_slice(&4096u64.to_le_bytes());
    data[4112..4128].fill(0);
    let mut outcome = run.call(&mut store, (1, 4104));
    loop {
        if let Some(code) = store.data().exit {
            return Ok(code);
        }
        outcome?;
        let Some((&id, &at)) = store.data().timers.iter().min_by_key(|(_, t)| **t) else {
            bail!("deadlock: Go is idle and waits for nothing");
        };
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        store.data_mut().timers.remove(&id);
        let resume = store.data().resume.clone().unwrap();
        outcome = resume.call(&mut store, ());
    }
}

fn link(l: &mut Linker<State>) -> Result<()> {
    let m = "gojs";
    l.func_wrap(
        m,
        "runtime.wasmExit",
        |mut c: C, sp: i32| -> wasmtime::Result<()> {
            let code = i32::from_le_bytes(get(&mut c, sp + 8));
            c.data_mut().exit = Some(code);
            Err(wasmtime::Error::msg(format!("exit {code}")))
        },
    )?;
    l.func_wrap(m, "runtime.wasmWrite", |mut c: C, sp: i32| {
        use std::io::Write;
        let fd = u64_at(&mut c, sp + 8);
        let p = u64_at(&mut c, sp + 16) as usize;
        let n = i32::from_le_bytes(get(&mut c, sp + 24)) as usize;
        let bytes = mem(&mut c)[p..p + n].to_vec();
        let _ = if fd == 2 {
            std::io::stderr().write_all(&bytes)
        } else {
            std::io::stdout().write_all(&bytes)
        };
    })?;
    l.func_wrap(m, "runtime.resetMemoryDataView", |_: C, _: i32| {})?;
    l.func_wrap(m, "runtime.nanotime1", |mut c: C, sp: i32| {
        let ns = c.data().start.unwrap().elapsed().as_nanos() as u64 + 1;
        put(&mut c, sp + 8, &ns.to_le_bytes());
    })?;
    l.func_wrap(m, "runtime.walltime", |mut c: C, sp: i32| {
        let d = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        put(&mut c, sp + 8, &d.as_secs().to_le_bytes());
        put(&mut c, sp + 16, &d.subsec_nanos().to_le_bytes());
    })?;
    l.func_wrap(m, "runtime.scheduleTimeoutEvent", |mut c: C, sp: i32| {
        let ms = u64_at(&mut c, sp + 8);
        let s = c.data_mut();
        s.next_timer += 1;
        let id = s.next_timer;
        s.timers
            .insert(id, Instant::now() + Duration::from_millis(ms));
        put(&mut c, sp + 16, &id.to_le_bytes());
    })?;
    l.func_wrap(m, "runtime.clearTimeoutEvent", |mut c: C, sp: i32| {
        let id = i32::from_le_bytes(get(&mut c, sp + 8));
        c.data_mut().timers.remove(&id);
    })?;
    l.func_wrap(m, "runtime.getRandomData", |mut c: C, sp: i32| {
        let (p, n) = (
            u64_at(&mut c, sp + 8) as usize,
            u64_at(&mut c, sp + 16) as usize,
        );
        for (i, b) in mem(&mut c)[p..p + n].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(151).wrapping_add(7);
        }
    })?;
    l.func_wrap(m, "syscall/js.finalizeRef", |_: C, _: i32| {})?;
    l.func_wrap(m, "syscall/js.stringVal", |mut c: C, sp: i32| {
        put(&mut c, sp + 24, &STRING.to_le_bytes());
    })?;
    l.func_wrap(m, "syscall/js.valueGet", |mut c: C, sp: i32| {
        let v = u64_at(&mut c, sp + 8);
        let name = string(&mut c, sp + 16);
        let r = match (v, name.as_str()) {
            (_, "num") => 42f64.to_bits(),
            // fs.constants, read by package syscall's init.
            (_, n) if n.starts_with("O_") => 1f64.to_bits(),
            (_, "str") => STRING,
            (_, "_pendingEvent") if c.data().event.is_some() => EVENT,
            (_, "_pendingEvent") => boxed(0, 2), // null
            (EVENT, "id") => f64::from(c.data().event.as_ref().unwrap().0).to_bits(),
            (EVENT, "this") => UNDEFINED,
            (EVENT, "args") => EVENT_ARGS,
            _ => OBJECT,
        };
        put(&mut c, sp + 32, &r.to_le_bytes());
    })?;
    l.func_wrap(m, "syscall/js.valueSet", |mut c: C, sp: i32| {
        if u64_at(&mut c, sp + 8) == EVENT {
            let x = u64_at(&mut c, sp + 32);
            c.data_mut().result = x;
        }
    })?;
    l.func_wrap(m, "syscall/js.valueDelete", |_: C, _: i32| {})?;
    l.func_wrap(m, "syscall/js.valueIndex", |mut c: C, sp: i32| {
        let v = u64_at(&mut c, sp + 8);
        let i = u64_at(&mut c, sp + 16) as usize;
        let r = match (v, &c.data().event) {
            (EVENT_ARGS, Some((_, args))) => args.get(i).copied().unwrap_or(UNDEFINED),
            _ => 7f64.to_bits(),
        };
        put(&mut c, sp + 24, &r.to_le_bytes());
    })?;
    l.func_wrap(m, "syscall/js.valueSetIndex", |_: C, _: i32| {})?;
    l.func_wrap(m, "syscall/js.valueCall", |mut c: C, sp: i32| {
        let name = string(&mut c, sp + 16);
        let args = refs(&mut c, sp + 32);
        let r = match name.as_str() {
            "_makeFuncWrapper" => boxed(FLAG_FUNCTION, FUNC_BASE + f64::from_bits(args[0]) as u32),
            "abs" | "getTimezoneOffset" => 1.5f64.to_bits(),
            _ => OBJECT,
        };
        put(&mut c, sp + 56, &r.to_le_bytes());
        put(&mut c, sp + 64, &[1]);
    })?;
    l.func_wrap(
        m,
        "syscall/js.valueInvoke",
        |mut c: C, sp: i32| -> wasmtime::Result<()> {
            let f = u64_at(&mut c, sp + 8);
            let args = refs(&mut c, sp + 16);
            let mut r = 2f64.to_bits();
            if f >> 32 == NAN_HEAD | FLAG_FUNCTION {
                // Deliver the call like wasm_exec.js's wrapper: Go reads `_pendingEvent`.
                let id = (f as u32) - FUNC_BASE;
                c.data_mut().event = Some((id, args));
                let resume = c.data().resume.clone().unwrap();
                resume.call(&mut c, ())?;
                c.data_mut().event = None;
                r = c.data().result;
            }
            // Go's stack may have moved while it ran.
            let getsp = c.data().getsp.clone().unwrap();
            let sp = getsp.call(&mut c, ())?;
            put(&mut c, sp + 40, &r.to_le_bytes());
            put(&mut c, sp + 48, &[1]);
            Ok(())
        },
    )?;
    l.func_wrap(m, "syscall/js.valueNew", |mut c: C, sp: i32| {
        put(&mut c, sp + 40, &OBJECT.to_le_bytes());
        put(&mut c, sp + 48, &[1]);
    })?;
    l.func_wrap(m, "syscall/js.valueLength", |mut c: C, sp: i32| {
        let v = u64_at(&mut c, sp + 8);
        let n = match (v, &c.data().event) {
            (EVENT_ARGS, Some((_, args))) => args.len() as u64,
            _ => 1024,
        };
        put(&mut c, sp + 16, &n.to_le_bytes());
    })?;
    l.func_wrap(m, "syscall/js.valuePrepareString", |mut c: C, sp: i32| {
        put(&mut c, sp + 16, &STRING.to_le_bytes());
        put(&mut c, sp + 24, &(TEXT.len() as u64).to_le_bytes());
    })?;
    l.func_wrap(m, "syscall/js.valueLoadString", |mut c: C, sp: i32| {
        let (p, n) = (
            u64_at(&mut c, sp + 16) as usize,
            u64_at(&mut c, sp + 24) as usize,
        );
        let n = n.min(TEXT.len());
        mem(&mut c)[p..p + n].copy_from_slice(&TEXT[..n]);
    })?;
    l.func_wrap(m, "syscall/js.valueInstanceOf", |mut c: C, sp: i32| {
        put(&mut c, sp + 24, &[1]);
    })?;
    l.func_wrap(m, "syscall/js.copyBytesToGo", |mut c: C, sp: i32| {
        let n = u64_at(&mut c, sp + 16);
        put(&mut c, sp + 40, &n.to_le_bytes());
        put(&mut c, sp + 48, &[1]);
    })?;
    l.func_wrap(m, "syscall/js.copyBytesToJS", |mut c: C, sp: i32| {
        let n = u64_at(&mut c, sp + 24);
        put(&mut c, sp + 40, &n.to_le_bytes());
        put(&mut c, sp + 48, &[1]);
    })?;
    l.func_wrap(m, "debug", |_: C, _: i32| {})?;
    Ok(())
}
