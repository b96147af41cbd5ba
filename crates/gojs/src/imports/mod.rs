//! The imports of the `gojs` module (`go` before Go 1.21): one table names them all, and
//! linking, tracing and tests derive from it.

use wasmtime::{Caller, Linker};

use crate::abi::{Frame, Memory, Ref};
use crate::host::Stop;
use crate::instance::HostState;
use crate::realm::JsValue;
use crate::reentry::{self, Unwind};

mod runtime;
mod syscall_js;

/// An import implementation: reads its arguments at `sp`, writes its results there.
type ImportFn = fn(&mut Call<'_, '_>) -> wasmtime::Result<()>;

/// One import of the Go module: its name, the Go declaration it implements, and the function.
pub(crate) struct Import {
    pub name: &'static str,
    pub go: &'static str,
    func: ImportFn,
}

macro_rules! imports {
    ($($name:literal => $func:path, $go:literal;)*) => {
        /// Every `(func (param i32))` import, by name.
        pub(crate) const IMPORTS: &[Import] = &[$(Import { name: $name, go: $go, func: $func }),*];
    };
}

imports! {
    "runtime.wasmExit" => runtime::wasm_exit, "func wasmExit(code int32)";
    "runtime.wasmWrite" => runtime::wasm_write, "func wasmWrite(fd uintptr, p unsafe.Pointer, n int32)";
    "runtime.resetMemoryDataView" => runtime::reset_memory_data_view, "func resetMemoryDataView()";
    "runtime.nanotime1" => runtime::nanotime1, "func nanotime1() int64";
    "runtime.walltime" => runtime::walltime, "func walltime() (sec int64, nsec int32)";
    "runtime.scheduleTimeoutEvent" => runtime::schedule_timeout_event, "func scheduleTimeoutEvent(delay int64) int32";
    "runtime.clearTimeoutEvent" => runtime::clear_timeout_event, "func clearTimeoutEvent(id int32)";
    "runtime.getRandomData" => runtime::get_random_data, "func getRandomData(r []byte)";
    "syscall/js.finalizeRef" => syscall_js::finalize_ref, "func finalizeRef(v ref)";
    "syscall/js.stringVal" => syscall_js::string_val, "func stringVal(value string) ref";
    "syscall/js.valueGet" => syscall_js::value_get, "func valueGet(v ref, p string) ref";
    "syscall/js.valueSet" => syscall_js::value_set, "func valueSet(v ref, p string, x ref)";
    "syscall/js.valueDelete" => syscall_js::value_delete, "func valueDelete(v ref, p string)";
    "syscall/js.valueIndex" => syscall_js::value_index, "func valueIndex(v ref, i int) ref";
    "syscall/js.valueSetIndex" => syscall_js::value_set_index, "func valueSetIndex(v ref, i int, x ref)";
    "syscall/js.valueCall" => syscall_js::value_call, "func valueCall(v ref, m string, args []ref) (ref, bool)";
    "syscall/js.valueInvoke" => syscall_js::value_invoke, "func valueInvoke(v ref, args []ref) (ref, bool)";
    "syscall/js.valueNew" => syscall_js::value_new, "func valueNew(v ref, args []ref) (ref, bool)";
    "syscall/js.valueLength" => syscall_js::value_length, "func valueLength(v ref) int";
    "syscall/js.valuePrepareString" => syscall_js::value_prepare_string, "func valuePrepareString(v ref) (ref, int)";
    "syscall/js.valueLoadString" => syscall_js::value_load_string, "func valueLoadString(v ref, b []byte)";
    "syscall/js.valueInstanceOf" => syscall_js::value_instance_of, "func valueInstanceOf(v ref, t ref) bool";
    "syscall/js.copyBytesToGo" => syscall_js::copy_bytes_to_go, "func copyBytesToGo(dst []byte, src ref) (int, bool)";
    "syscall/js.copyBytesToJS" => syscall_js::copy_bytes_to_js, "func copyBytesToJS(dst ref, src []byte) (int, bool)";
}

/// The imports after which Cranelift's parts of a split first run are placed if ready
/// ([`crate::split::place_hot_during_call`]).
const PLACES_HOT: &[&str] = &[
    "runtime.wasmWrite",
    "runtime.nanotime1",
    "runtime.walltime",
    "runtime.scheduleTimeoutEvent",
    "runtime.clearTimeoutEvent",
    "runtime.getRandomData",
    "syscall/js.finalizeRef",
    "syscall/js.valueCall",
    "syscall/js.valueInvoke",
    "syscall/js.valueNew",
];

/// How many property names are kept as JS strings, and how long one may be.
const NAME_CACHE: usize = 4096;
const NAME_MAX: usize = 64;

/// Define every import under `module` (`gojs` or `go`), plus `debug` and the `_gotest` imports
/// that `syscall/js`'s own tests use.
pub(crate) fn link(linker: &mut Linker<HostState>, module: &str) -> wasmtime::Result<()> {
    for import in IMPORTS {
        let (name, go, func) = (import.name, import.go, import.func);
        // Imports that most programs call now and then, and that take long enough for a
        // look at whether Cranelift's code is ready to be placed not to count (not the
        // value getters, which programs call in loops).
        let places = PLACES_HOT.contains(&name);
        linker.func_wrap(
            module,
            name,
            move |mut caller: Caller<'_, HostState>, sp: i32| {
                let mut call = Call {
                    caller: &mut caller,
                    sp: sp as u32,
                };
                func(&mut call).map_err(|e| {
                    if e.is::<Unwind>() {
                        e
                    } else {
                        e.context(format!("in import {name} ({go})"))
                    }
                })?;
                if places
                    && caller
                        .data()
                        .hot_linker
                        .as_ref()
                        .is_some_and(|(first, _, _)| first.has_hot_news())
                {
                    crate::split::place_hot_during_call(&mut caller);
                }
                Ok(())
            },
        )?;
    }
    // The host's versions of Go's byte loops, which Go calls once rewritten (crate::rewrite).
    let trap = || wasmtime::Error::from(wasmtime::Trap::MemoryOutOfBounds);
    linker.func_wrap(
        crate::fill::MODULE,
        "memchr",
        move |mut caller: Caller<'_, HostState>, s: i32, c: i32, n: i32| {
            let (bytes, _) = crate::instance::memory_and_state(&mut caller)?;
            crate::fill::memchr(bytes, s as u32, c as u32, n as u32)
                .map(|at| at as i32)
                .ok_or_else(trap)
        },
    )?;
    linker.func_wrap(
        crate::fill::MODULE,
        "memcmp",
        move |mut caller: Caller<'_, HostState>, a: i32, b: i32, n: i32| {
            let (bytes, _) = crate::instance::memory_and_state(&mut caller)?;
            crate::fill::memcmp(bytes, a as u32, b as u32, n as u32).ok_or_else(trap)
        },
    )?;
    linker.func_wrap(
        crate::fill::MODULE,
        "memeqbody",
        move |mut caller: Caller<'_, HostState>, a: i64, b: i64, n: i64| {
            let (bytes, _) = crate::instance::memory_and_state(&mut caller)?;
            crate::fill::memeqbody(bytes, a as u64, b as u64, n as u64).ok_or_else(trap)
        },
    )?;
    // The fill that Go's `memclrNoHeapPointers` calls once rewritten (crate::rewrite).
    linker.func_wrap(
        crate::fill::MODULE,
        crate::fill::NAME,
        |mut caller: Caller<'_, HostState>, dst: i32, val: i32, len: i32| {
            let (bytes, state) = crate::instance::memory_and_state(&mut caller)?;
            if crate::fill::fill(bytes, state.fresh_from, dst as u32, val as u32, len as u32) {
                Ok(())
            } else {
                Err(wasmtime::Trap::MemoryOutOfBounds.into())
            }
        },
    )?;
    runtime::link_extras(linker, module)
}

fn prop(state: &mut HostState, bytes: &[u8]) -> rquickjs::Result<Prop> {
    if let Some(name) = state.names.get(bytes) {
        return Ok(Prop::Cached(name.clone()));
    }
    let v = crate::realm::string_from_go(&state.ctx, bytes)?;
    if bytes.len() <= NAME_MAX
        && state.names.len() < NAME_CACHE
        && let Ok(name) = crate::realm::PropName::new(v.clone())
    {
        let name = std::rc::Rc::new(name);
        state.names.insert(bytes.into(), name.clone());
        return Ok(Prop::Cached(name));
    }
    Ok(Prop::Other(v))
}

/// A property name read from Go: cached (string and atom), or a one-off string.
pub(crate) enum Prop {
    Cached(std::rc::Rc<crate::realm::PropName>),
    Other(JsValue),
}

/// One import call in progress: the caller, Go's current `sp`, and typed access to both.
pub(crate) struct Call<'a, 'c> {
    caller: &'a mut Caller<'c, HostState>,
    sp: u32,
}

impl Call<'_, '_> {
    fn frame(&self) -> Frame {
        Frame { sp: self.sp }
    }

    fn state(&mut self) -> &mut HostState {
        self.caller.data_mut()
    }

    /// Guest memory and host state, borrowed together.
    fn split(&mut self) -> wasmtime::Result<(Memory<'_>, &mut HostState)> {
        let (bytes, state) = crate::instance::memory_and_state(self.caller)?;
        Ok((Memory(bytes), state))
    }

    fn with_mem<R>(
        &mut self,
        f: impl FnOnce(&mut Memory, Frame) -> Result<R, crate::abi::OutOfBounds>,
    ) -> wasmtime::Result<R> {
        let frame = self.frame();
        let (mut mem, _) = self.split()?;
        Ok(f(&mut mem, frame)?)
    }

    /// The JS value of the `ref` at `sp + off` (`loadValue`).
    fn load(&mut self, off: u32) -> wasmtime::Result<JsValue> {
        let frame = self.frame();
        let (mem, state) = self.split()?;
        let r = frame.r#ref(&mem, off)?;
        Ok(state.load(r))
    }

    /// The Go string at `sp + off` as a JS string (`loadString`).
    fn load_string(&mut self, off: u32) -> wasmtime::Result<JsValue> {
        let bytes = self.with_mem(|m, f| f.bytes(m, off))?;
        let ctx = self.state().ctx.clone();
        Ok(crate::realm::string_from_go(&ctx, &bytes)?)
    }

    /// A property or method name at `sp + off` as a JS string.
    fn load_name(&mut self, off: u32) -> wasmtime::Result<JsValue> {
        Ok(match self.load_prop(off)? {
            Prop::Cached(name) => name.value.clone(),
            Prop::Other(v) => v,
        })
    }

    /// A property or method name at `sp + off`. Programs use few names many times, so short
    /// ones are kept as JS strings and atoms (up to [`NAME_CACHE`] of them) instead of decoding
    /// the bytes into a new string on every access.
    fn load_prop(&mut self, off: u32) -> wasmtime::Result<Prop> {
        let frame = self.frame();
        let (mem, state) = self.split()?;
        let s = frame.slice(&mem, off)?;
        Ok(prop(state, mem.bytes(s.ptr, s.len)?)?)
    }

    /// The `ref` at `sp + v_off` and the property name at `sp + p_off`, read together
    /// ([`Call::load`] and [`Call::load_prop`] with one look at memory).
    fn load_with_prop(&mut self, v_off: u32, p_off: u32) -> wasmtime::Result<(JsValue, Prop)> {
        let frame = self.frame();
        let (mem, state) = self.split()?;
        let v = state.load(frame.r#ref(&mem, v_off)?);
        let s = frame.slice(&mem, p_off)?;
        Ok((v, prop(state, mem.bytes(s.ptr, s.len)?)?))
    }

    /// The name `bytes` (e.g. `length`), through the same cache as Go's names.
    fn prop(&mut self, bytes: &[u8]) -> wasmtime::Result<Prop> {
        Ok(prop(self.state(), bytes)?)
    }

    /// Store `v` for Go (`storeValue`) and write its ref at `sp + off`.
    fn store(&mut self, off: u32, v: &JsValue) -> wasmtime::Result<()> {
        let frame = self.frame();
        let (mut mem, state) = self.split()?;
        let r: Ref = state.values.store(v);
        Ok(frame.set_ref(&mut mem, off, r)?)
    }

    /// Run JS with this caller published for re-entry; afterwards, unwind if Go stopped in a
    /// nested call, and re-read `sp` if Go ran meanwhile (its stack may have moved; it can't
    /// move unless Go code runs).
    fn run_js<R>(&mut self, f: impl FnOnce() -> R) -> wasmtime::Result<R> {
        let state = self.caller.data();
        state.host.gc_slack.tick(&state.ctx);
        let entries = state.host.go_entries.get();
        let mut store = wasmtime::AsContextMut::as_context_mut(&mut *self.caller);
        let r = reentry::publish(&mut store, f);
        let host = &self.caller.data().host;
        if host.stopped() {
            return Err(Unwind.into());
        }
        if host.go_entries.get() != entries {
            let getsp = self.caller.data().guest()?.getsp.clone();
            self.sp = getsp.call(&mut *self.caller, ())? as u32;
        }
        Ok(r)
    }

    /// A JS exception escaped an import that doesn't catch (Node lets it propagate out of the
    /// wasm call and exits 1): park it and unwind.
    fn uncaught(&mut self, err: JsValue) -> wasmtime::Result<()> {
        let msg = crate::realm::describe_error(&err);
        self.caller.data().host.park(Stop::Uncaught(msg));
        Err(Unwind.into())
    }
}
