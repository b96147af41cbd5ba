//! `syscall/js.*` imports: the bridge between Go's `js.Value` and the realm
//! (Go's `syscall/js/js.go`). Semantics are `wasm_exec.js`'s: `Reflect.get/set/deleteProperty/
//! apply/construct` for property access and calls, so getters, setters, proxies and frozen
//! objects behave as in Node.

use rquickjs::Value;

use super::{Call, Prop};
use crate::abi::Decoded;
use crate::realm::{self, JsValue, Raw, RawArgs};

fn undefined(c: &mut Call) -> JsValue {
    Value::new_undefined(c.state().ctx.clone())
}

/// `func finalizeRef(v ref)`: Go dropped a reference.
pub(super) fn finalize_ref(c: &mut Call) -> wasmtime::Result<()> {
    let id = c.with_mem(|m, f| f.u32(m, 8))?;
    let released = c.state().values.finalize(id);
    // Freeing the value may run engine finalizers; do it with no borrow of the table held.
    drop(released);
    Ok(())
}

/// `func stringVal(value string) ref`.
pub(super) fn string_val(c: &mut Call) -> wasmtime::Result<()> {
    let s = c.load_string(8)?;
    c.store(24, &s)
}

/// `Reflect.get(v, p)`: a direct property read when `v` is an object and `p` a cached name.
fn get(c: &mut Call, v: &JsValue, p: Prop) -> wasmtime::Result<Result<JsValue, JsValue>> {
    match p {
        Prop::Cached(name) if v.is_object() => c.run_js(|| realm::get_property(v, &name)),
        p => {
            let key = match p {
                Prop::Cached(name) => name.value.clone(),
                Prop::Other(key) => key,
            };
            let get = c.state().reflect.get.clone().into_value();
            let this = undefined(c);
            c.run_js(|| realm::apply(&get, &this, &[v.clone(), key]))
        }
    }
}

/// `func valueGet(v ref, p string) ref`: `Reflect.get(v, p)`.
pub(super) fn value_get(c: &mut Call) -> wasmtime::Result<()> {
    // An own data property of an ordinary object (Go's object, `globalThis`, `{...}`): read in
    // place, with no JS to run, so no copy of `v` and no re-entry bookkeeping.
    let frame = c.frame();
    let (mut mem, state) = c.split()?;
    let r = frame.r#ref(&mem, 8)?;
    let s = frame.slice(&mem, 16)?;
    if let Decoded::Id(id) = r.decode()
        && let Prop::Cached(name) = super::prop(state, mem.bytes(s.ptr, s.len)?)?
        && let Some(found) = state
            .values
            .get(id)
            .and_then(|v| realm::own_data_property(v, name.atom()))
    {
        let out = state.values.store_raw(&state.ctx, &found);
        return Ok(frame.set_ref(&mut mem, 32, out)?);
    }
    let (v, p) = c.load_with_prop(8, 16)?;
    match get(c, &v, p)? {
        Ok(r) => c.store(32, &r),
        Err(e) => c.uncaught(e),
    }
}

/// `func valueSet(v ref, p string, x ref)`: `Reflect.set(v, p, x)` (directly when that can't
/// fail: [`realm::set_ordinary`]).
pub(super) fn value_set(c: &mut Call) -> wasmtime::Result<()> {
    // The direct store runs no JS: do it on the values in place.
    let frame = c.frame();
    let (mem, state) = c.split()?;
    let (r, xr) = (frame.r#ref(&mem, 8)?, frame.r#ref(&mem, 32)?);
    let s = frame.slice(&mem, 16)?;
    if let Decoded::Id(id) = r.decode()
        && let Prop::Cached(name) = super::prop(state, mem.bytes(s.ptr, s.len)?)?
    {
        let x = state.load_raw(xr);
        if let Some(outcome) = state
            .values
            .get(id)
            .and_then(|v| realm::set_ordinary(v, &name, &x))
        {
            return match outcome {
                Ok(()) => Ok(()),
                Err(e) => c.uncaught(e),
            };
        }
    }
    let (v, p, x) = (c.load(8)?, c.load_name(16)?, c.load(32)?);
    let set = c.state().reflect.set.clone().into_value();
    let this = undefined(c);
    match c.run_js(|| realm::apply(&set, &this, &[v, p, x]))? {
        Ok(_) => Ok(()),
        Err(e) => c.uncaught(e),
    }
}

/// `func valueDelete(v ref, p string)`: `Reflect.deleteProperty(v, p)`.
pub(super) fn value_delete(c: &mut Call) -> wasmtime::Result<()> {
    let (v, p) = (c.load(8)?, c.load_name(16)?);
    let delete = c.state().reflect.delete_property.clone().into_value();
    let this = undefined(c);
    match c.run_js(|| realm::apply(&delete, &this, &[v, p]))? {
        Ok(_) => Ok(()),
        Err(e) => c.uncaught(e),
    }
}

/// The JS number `wasm_exec.js`'s `getInt64` produces (`low + high * 2^32`).
fn index_value(c: &mut Call, off: u32) -> wasmtime::Result<JsValue> {
    let i = c.with_mem(|m, f| f.i64(m, off))?;
    Ok(Value::new_number(c.state().ctx.clone(), i as f64))
}

/// `func valueIndex(v ref, i int) ref`: `Reflect.get(v, i)` (for an object and an index up to
/// 2^31−1, `v[i]` read directly: the same `[[Get]]` with `v` as receiver).
pub(super) fn value_index(c: &mut Call) -> wasmtime::Result<()> {
    // An element of an array or typed array (or an own index property of an ordinary object):
    // read in place.
    let frame = c.frame();
    let (mut mem, state) = c.split()?;
    let (r, i) = (frame.r#ref(&mem, 8)?, frame.i64(&mem, 16)?);
    let index = u32::try_from(i).ok().filter(|&i| i <= i32::MAX as u32);
    if let Decoded::Id(id) = r.decode()
        && let Some(i) = index
        && let Some(found) = state
            .values
            .get(id)
            .and_then(|v| realm::own_data_element(v, i))
    {
        let out = state.values.store_raw(&state.ctx, &found);
        return Ok(frame.set_ref(&mut mem, 24, out)?);
    }
    let v = c.load(8)?;
    let outcome = match index {
        Some(i) if v.is_object() => c.run_js(|| realm::get_index(&v, i))?,
        _ => {
            let i = index_value(c, 16)?;
            let get = c.state().reflect.get.clone().into_value();
            let this = undefined(c);
            c.run_js(|| realm::apply(&get, &this, &[v, i]))?
        }
    };
    match outcome {
        Ok(r) => c.store(24, &r),
        Err(e) => c.uncaught(e),
    }
}

/// `func valueSetIndex(v ref, i int, x ref)`: `Reflect.set(v, i, x)` (directly when that can't
/// fail: [`realm::set_own_element`]).
pub(super) fn value_set_index(c: &mut Call) -> wasmtime::Result<()> {
    // Overwriting an existing element runs no JS: do it on the values in place.
    let frame = c.frame();
    let (mem, state) = c.split()?;
    let (r, i, xr) = (
        frame.r#ref(&mem, 8)?,
        frame.i64(&mem, 16)?,
        frame.r#ref(&mem, 24)?,
    );
    if let Decoded::Id(id) = r.decode()
        && let Ok(i) = u32::try_from(i)
        && i <= i32::MAX as u32
    {
        let x = state.load_raw(xr);
        if let Some(outcome) = state
            .values
            .get(id)
            .and_then(|v| realm::set_own_element(v, i, &x))
        {
            return match outcome {
                Ok(()) => Ok(()),
                Err(e) => c.uncaught(e),
            };
        }
    }
    let (v, i, x) = (c.load(8)?, index_value(c, 16)?, c.load(24)?);
    let set = c.state().reflect.set.clone().into_value();
    let this = undefined(c);
    match c.run_js(|| realm::apply(&set, &this, &[v, i, x]))? {
        Ok(_) => Ok(()),
        Err(e) => c.uncaught(e),
    }
}

/// Write a `(ref, bool)` result pair: the value (or the thrown error) and whether it succeeded.
fn store_outcome(c: &mut Call, off: u32, outcome: Result<Raw, Raw>) -> wasmtime::Result<()> {
    let frame = c.frame();
    let (mut mem, state) = c.split()?;
    let (v, ok) = match &outcome {
        Ok(v) => (v, 1),
        Err(e) => (e, 0),
    };
    let r = state.values.store_raw(&state.ctx, v);
    frame.set_ref(&mut mem, off, r)?;
    Ok(frame.set_u8(&mut mem, off + 8, ok)?)
}

/// `func valueCall(v ref, m string, args []ref) (ref, bool)`:
/// `Reflect.apply(Reflect.get(v, m), v, args)`, catching what it throws.
///
/// The values live only during the call, so they are held as [`Raw`] values and the arguments
/// go to QuickJS from the stack, with no array.
pub(super) fn value_call(c: &mut Call) -> wasmtime::Result<()> {
    let frame = c.frame();
    let (mem, state) = c.split()?;
    let this = state.load_raw(frame.r#ref(&mem, 8)?);
    let m = frame.slice(&mem, 16)?;
    let name = super::prop(state, mem.bytes(m.ptr, m.len)?)?;
    let mut args = RawArgs::new(&state.ctx);
    state.load_args(frame.refs(&mem, 32)?, &mut args);
    let outcome = match name {
        Prop::Cached(name) if this.is_object() => {
            c.run_js(|| realm::call_method(&this, &name, &mut args))?
        }
        // A primitive receiver or an uncached name: `Reflect.get` does the conversions.
        name => {
            let v = this.to_value(&c.state().ctx);
            match get(c, &v, name)? {
                Ok(method) => {
                    let method = Raw::dup(&method);
                    c.run_js(|| realm::apply_raw(&method, &this, &mut args))?
                }
                Err(e) => Err(Raw::dup(&e)),
            }
        }
    };
    store_outcome(c, 56, outcome)
}

/// `func valueInvoke(v ref, args []ref) (ref, bool)`: `Reflect.apply(v, undefined, args)`.
pub(super) fn value_invoke(c: &mut Call) -> wasmtime::Result<()> {
    let frame = c.frame();
    let (mem, state) = c.split()?;
    let f = state.load_raw(frame.r#ref(&mem, 8)?);
    let mut args = RawArgs::new(&state.ctx);
    state.load_args(frame.refs(&mem, 16)?, &mut args);
    let this = Raw::undefined(&state.ctx);
    let outcome = c.run_js(|| realm::apply_raw(&f, &this, &mut args))?;
    store_outcome(c, 40, outcome)
}

/// `func valueNew(v ref, args []ref) (ref, bool)`: `Reflect.construct(v, args)`.
pub(super) fn value_new(c: &mut Call) -> wasmtime::Result<()> {
    let frame = c.frame();
    let (mem, state) = c.split()?;
    let f = state.load_raw(frame.r#ref(&mem, 8)?);
    let mut args = RawArgs::new(&state.ctx);
    state.load_args(frame.refs(&mem, 16)?, &mut args);
    let outcome = c.run_js(|| realm::construct(&f, &mut args))?;
    store_outcome(c, 40, outcome)
}

/// `func valueLength(v ref) int`: `parseInt(v.length)`.
pub(super) fn value_length(c: &mut Call) -> wasmtime::Result<()> {
    // An array's `length` is its own data property, always a valid index: read it in place,
    // with no JS to run (so no copy of the value and no re-entry bookkeeping).
    let frame = c.frame();
    let (mut mem, state) = c.split()?;
    if let Decoded::Id(id) = frame.r#ref(&mem, 8)?.decode()
        && let Some(len) = state.values.get(id).and_then(realm::array_length)
    {
        return Ok(frame.set_i64(&mut mem, 16, len)?);
    }
    let v = c.load(8)?;
    let length = c.prop(b"length")?;
    let len = match length {
        // An object's length, read directly; a number (arrays, typed arrays, strings' wrappers,
        // array-likes) needs no `parseInt` of its text.
        Prop::Cached(name) if v.is_object() => {
            match c.run_js(|| realm::get_property_number(&v, &name))? {
                Ok(Ok(n)) => parse_number(n),
                Ok(Err(other)) => parse_int(&other),
                Err(e) => return c.uncaught(e),
            }
        }
        length => match get(c, &v, length)? {
            Ok(len) => parse_int(&len),
            Err(e) => return c.uncaught(e),
        },
    };
    c.with_mem(|m, f| f.set_i64(m, 16, len))
}

/// `parseInt` of a number, as `setInt64` stores it (non-finite results become 0).
fn parse_number(n: f64) -> i64 {
    if n.is_finite() { n.trunc() as i64 } else { 0 }
}

/// `parseInt(x)` as `setInt64` stores it: non-finite results become 0.
fn parse_int(v: &JsValue) -> i64 {
    let text = match v.as_number() {
        Some(n) => return parse_number(n),
        None => realm::to_string_lossy(v),
    };
    let t = text.trim_start();
    let (neg, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let digits: String = digits.chars().take_while(char::is_ascii_digit).collect();
    let n: f64 = digits.parse().unwrap_or(0.0);
    (if neg { -n } else { n }) as i64
}

/// `func valuePrepareString(v ref) (ref, int)`: the UTF-8 bytes of `String(v)`, which
/// `wasm_exec.js` holds as a `Uint8Array` until `valueLoadString` copies them. Go uses that ref
/// for nothing else and releases it at once, so the bytes are held in the values table instead
/// (no JS object to make and collect).
pub(super) fn value_prepare_string(c: &mut Call) -> wasmtime::Result<()> {
    let v = c.load(8)?;
    match c.run_js(|| realm::to_utf8(&v))? {
        Ok(bytes) => {
            let len = bytes.len();
            let r = c.state().values.store_prepared(bytes.into_boxed_slice());
            c.with_mem(|m, f| {
                f.set_ref(m, 16, r)?;
                f.set_i64(m, 24, len as i64)
            })
        }
        Err(e) => c.uncaught(e),
    }
}

/// `func valueLoadString(v ref, b []byte)`: copy prepared bytes into Go's buffer.
pub(super) fn value_load_string(c: &mut Call) -> wasmtime::Result<()> {
    let frame = c.frame();
    let (mut mem, state) = c.split()?;
    let r = frame.r#ref(&mem, 8)?;
    let dst = frame.slice(&mem, 16)?;
    let src = match r.decode() {
        crate::abi::Decoded::Id(id) => state.values.prepared(id),
        _ => None,
    };
    // `Uint8Array.set` throws if the source is longer than the target; Go always sizes it.
    // A ref that isn't a prepared string (Go never passes one) copies nothing, like
    // `wasm_exec.js` given a non-array.
    if let Some(src) = src {
        let n = src.len().min(dst.len as usize);
        mem.bytes_mut(dst.ptr, n as u64)?.copy_from_slice(&src[..n]);
    }
    Ok(())
}

/// `func valueInstanceOf(v ref, t ref) bool`.
pub(super) fn value_instance_of(c: &mut Call) -> wasmtime::Result<()> {
    let frame = c.frame();
    let (mut mem, state) = c.split()?;
    let (v, t) = (frame.r#ref(&mem, 8)?, frame.r#ref(&mem, 16)?);
    // Most need no JS (`InstanceOf::ordinary`): answered in place, with no copy of either value
    // and no re-entry bookkeeping.
    if let (Decoded::Id(vi), Decoded::Id(ti)) = (v.decode(), t.decode())
        && let (Some(value), Some(ctor)) = (state.values.get(vi), state.values.get(ti))
        && let Some(b) = state.instance_of.ordinary(value, ctor)
    {
        return Ok(frame.set_u8(&mut mem, 24, u8::from(b))?);
    }
    let v = state.load_raw(v);
    let t = state.load_raw(t);
    match c.run_js(|| realm::instance_of(&v, &t))? {
        Ok(b) => c.with_mem(|m, f| f.set_u8(m, 24, u8::from(b))),
        Err(e) => {
            let e = e.to_value(&c.state().ctx);
            c.uncaught(e)
        }
    }
}

/// Write a copy's `(n int, ok bool)` result: `None` means the JS value was not a byte array.
fn copy_result(
    m: &mut crate::abi::Memory,
    f: crate::abi::Frame,
    copied: Option<Result<usize, crate::abi::OutOfBounds>>,
) -> Result<(), crate::abi::OutOfBounds> {
    match copied {
        None => f.set_u8(m, 48, 0),
        Some(n) => {
            f.set_i64(m, 40, n? as i64)?;
            f.set_u8(m, 48, 1)
        }
    }
}

/// `func copyBytesToGo(dst []byte, src ref) (int, bool)`: from a `Uint8Array`/`Uint8ClampedArray`.
/// Copying runs no JS, so it reads the array in place in the values table.
pub(super) fn copy_bytes_to_go(c: &mut Call) -> wasmtime::Result<()> {
    let frame = c.frame();
    let (mut mem, state) = c.split()?;
    let src = table_value(state, frame.r#ref(&mem, 32)?);
    let dst = frame.slice(&mem, 8)?;
    let copied = src.and_then(|src| {
        realm::with_uint8_bytes(src, |bytes| {
            let n = bytes.len().min(dst.len as usize);
            mem.bytes_mut(dst.ptr, n as u64)
                .map(|d| {
                    if n >= crate::fill::POPULATE_MIN {
                        crate::fill::populate(d);
                    }
                    d.copy_from_slice(&bytes[..n])
                })
                .map(|()| n)
        })
    });
    Ok(copy_result(&mut mem, frame, copied)?)
}

/// `func copyBytesToJS(dst ref, src []byte) (int, bool)`: into a `Uint8Array`/`Uint8ClampedArray`,
/// in place as [`copy_bytes_to_go`].
pub(super) fn copy_bytes_to_js(c: &mut Call) -> wasmtime::Result<()> {
    let frame = c.frame();
    let (mut mem, state) = c.split()?;
    let dst = table_value(state, frame.r#ref(&mem, 8)?);
    let src = frame.slice(&mem, 16)?;
    let copied = dst.and_then(|dst| {
        realm::with_uint8_bytes(dst, |bytes| {
            let n = bytes.len().min(src.len as usize);
            mem.bytes(src.ptr, n as u64)
                .map(|s| {
                    if n >= crate::fill::POPULATE_MIN {
                        crate::fill::populate(&mut bytes[..n]);
                    }
                    bytes[..n].copy_from_slice(s)
                })
                .map(|()| n)
        })
    });
    Ok(copy_result(&mut mem, frame, copied)?)
}

/// The value an id ref denotes, borrowed from the table (numbers and `undefined` have none).
fn table_value(state: &crate::instance::HostState, r: crate::abi::Ref) -> Option<&JsValue> {
    match r.decode() {
        Decoded::Id(id) => state.values.get(id),
        _ => None,
    }
}
