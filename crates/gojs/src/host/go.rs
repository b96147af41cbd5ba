//! The Go object (value id 6): `_makeFuncWrapper`, `_pendingEvent` and `exited`, through which
//! `js.FuncOf` callbacks reach Go's `handleEvent` (Go's `syscall/js/func.go`).

use std::rc::Rc;

use rquickjs::{Ctx, Exception, Function, Object, Value, qjs};

use super::{Host, Stop};
use crate::realm::{self, JsCtx, JsValue, PropName};
use crate::reentry::{self, Unwind};

/// Create the Go object. The host keeps it (not the wrappers: a JS function holding it from
/// Rust would be a cycle the JS collector can't see).
pub(crate) fn object(ctx: &JsCtx, host: &Rc<Host>) -> rquickjs::Result<Object<'static>> {
    let go = Object::new(ctx.clone())?;
    go.set("_pendingEvent", Value::new_null(ctx.clone()))?;
    let h = host.clone();
    go.set(
        "_makeFuncWrapper",
        Function::new(ctx.clone(), move |ctx: JsCtx, id: f64| {
            wrapper(&ctx, &h, id as u32)
        })?,
    )?;
    let h = host.clone();
    go.prop(
        "exited",
        rquickjs::object::Accessor::new_get(move || h.exit_code.get().is_some()).enumerable(),
    )?;
    // `wasm_exec.js` keeps Go's values in `_values`; Go's own tests read its `length` to check
    // that finalizers release ids. Ours live in Rust: report the table's size the same way.
    go.prop(
        "_values",
        rquickjs::object::Accessor::new_get(|ctx: JsCtx| -> rquickjs::Result<Object<'static>> {
            let len = reentry::with_active(|store| store.data().values.capacity()).unwrap_or(0);
            let o = Object::new(ctx)?;
            o.set("length", len)?;
            Ok(o)
        }),
    )?;
    Ok(go)
}

/// The property names a callback uses, as atoms: looked up once per realm instead of on every
/// call. Held by the host (not by the wrappers: an atom keeps the context alive, and a function
/// holding its own context from Rust is a cycle the JS collector can't see).
pub(crate) struct EventAtoms {
    id: PropName,
    this: PropName,
    args: PropName,
    pending: PropName,
    result: PropName,
}

fn event_atoms(ctx: &JsCtx, host: &Host) -> rquickjs::Result<Rc<EventAtoms>> {
    if let Some(a) = host.event_atoms.borrow().as_ref() {
        return Ok(a.clone());
    }
    let name = |s: &str| -> rquickjs::Result<PropName> {
        let v = rquickjs::String::from_str(ctx.clone(), s)?.into_value();
        PropName::new(v).map_err(|e| ctx.throw(e))
    };
    let atoms = Rc::new(EventAtoms {
        id: name("id")?,
        this: name("this")?,
        args: name("args")?,
        pending: name("_pendingEvent")?,
        result: name("result")?,
    });
    *host.event_atoms.borrow_mut() = Some(atoms.clone());
    Ok(atoms)
}

/// The JS function `_makeFuncWrapper(id)` returns (see [`call_wrapper`]). A plain C function
/// whose only data is the id: every Go→JS→Go round trip runs it, so it goes through QuickJS's
/// API directly rather than through typed closure conversions.
fn wrapper(ctx: &JsCtx, host: &Rc<Host>, id: u32) -> rquickjs::Result<JsValue> {
    // Create the atoms now, so a call never has to.
    event_atoms(ctx, host)?;
    let raw = ctx.as_raw().as_ptr();
    let mut data = [qjs::JS_NewFloat64(f64::from(id))];
    // SAFETY: `data` holds one number (no reference to transfer); QuickJS copies it.
    let f =
        unsafe { qjs::JS_NewCFunctionData(raw, Some(call_wrapper), 0, 0, 1, data.as_mut_ptr()) };
    // SAFETY: a value QuickJS just returned to us, owned by us.
    let f = unsafe { JsValue::from_raw(ctx.clone(), f) };
    if f.is_exception() {
        return Err(rquickjs::Error::Exception);
    }
    Ok(f)
}

/// A call of a `js.FuncOf` wrapper, as `wasm_exec.js`'s: record `{id, this, args}` as the Go
/// object's `_pendingEvent`, resume Go, and return what Go left in `event.result`.
///
/// The host is the one whose store the caller published (see [`crate::reentry`]): JS only runs
/// on behalf of an import or the event loop, which publish theirs first.
unsafe extern "C" fn call_wrapper(
    ctx: *mut qjs::JSContext,
    this: qjs::JSValue,
    argc: std::ffi::c_int,
    argv: *mut qjs::JSValue,
    _magic: std::ffi::c_int,
    data: *mut qjs::JSValue,
) -> qjs::JSValue {
    let Some(ctx_nn) = std::ptr::NonNull::new(ctx) else {
        return qjs::JS_EXCEPTION;
    };
    // SAFETY: QuickJS calls us with a live context on the realm's thread.
    let js_ctx: JsCtx = unsafe { Ctx::from_raw(ctx_nn) };
    let Some(host) = reentry::with_active(|store| store.data().host.clone()) else {
        let _ = Exception::throw_internal(&js_ctx, "gojs: no Go program is running on this thread");
        return qjs::JS_EXCEPTION;
    };
    // The Go object is held by the host until teardown, which no JS can cause: a raw copy stays
    // valid for this call.
    let go = host.go.borrow().as_ref().map(|o| o.as_raw());
    let (Some(atoms), Some(go)) = (host.event_atoms.borrow().clone(), go) else {
        let _ = Exception::throw_internal(&js_ctx, "Go object is gone");
        return qjs::JS_EXCEPTION;
    };
    host.gc_slack.tick(&js_ctx);
    // SAFETY: QuickJS passes `argc` live arguments and the one data value we created the function
    // with; every value handed to a `...From` constructor is a reference we own (dup'd here),
    // which the constructor consumes, also when it fails.
    unsafe {
        // One more reference to each argument, which the array takes over (it copies the
        // values, not the slots).
        let argc = argc.max(0);
        for i in 0..argc as usize {
            qjs::JS_DupValue(ctx, *argv.add(i));
        }
        let args = qjs::JS_NewArrayFrom(ctx, argc, argv);
        if qjs::JS_IsException(args) {
            return args;
        }
        // `{id, this, args}`. Only Go's `handleEvent` ever sees the object (the Go object is not
        // reachable from JS), so each nesting depth reuses one: made the way an object literal
        // is (properties defined, no setters run), then its own properties are set again.
        let depth = host.event_depth.get();
        let _depth = Depth::enter(&host, depth);
        let reused = host
            .events
            .borrow()
            .get(depth)
            .map(|o| qjs::JS_DupValue(ctx, o.as_raw()));
        let event = match reused {
            Some(e) => e,
            None => {
                let e = qjs::JS_NewObject(ctx);
                if qjs::JS_IsException(e) {
                    qjs::JS_FreeValue(ctx, args);
                    return e;
                }
                let kept = JsValue::from_raw(js_ctx.clone(), qjs::JS_DupValue(ctx, e));
                if let Ok(kept) = Object::from_value(kept) {
                    host.events.borrow_mut().push(kept);
                }
                e
            }
        };
        let fields = [
            (atoms.id.atom(), *data),
            (atoms.this.atom(), qjs::JS_DupValue(ctx, this)),
            (atoms.args.atom(), args),
            (atoms.result.atom(), qjs::JS_UNDEFINED),
        ];
        let mut failed = false;
        for (atom, value) in fields {
            if failed {
                qjs::JS_FreeValue(ctx, value);
            } else if reused.is_some() {
                failed = qjs::JS_SetProperty(ctx, event, atom, value) < 0;
            } else {
                // Consumes `value`, also when it fails.
                let flags = qjs::JS_PROP_C_W_E as std::ffi::c_int;
                failed = qjs::JS_DefinePropertyValue(ctx, event, atom, value, flags) < 0;
            }
        }
        if failed {
            qjs::JS_FreeValue(ctx, event);
            return qjs::JS_EXCEPTION;
        }
        // `this._pendingEvent = event` (strict mode: a failed assignment throws).
        if qjs::JS_SetProperty(ctx, go, atoms.pending.atom(), qjs::JS_DupValue(ctx, event)) < 0 {
            qjs::JS_FreeValue(ctx, event);
            return qjs::JS_EXCEPTION;
        }
        if let Err(e) = resume(&js_ctx, &host) {
            qjs::JS_FreeValue(ctx, event);
            if !matches!(e, rquickjs::Error::Exception) {
                let _ = Exception::throw_internal(&js_ctx, &e.to_string());
            }
            return qjs::JS_EXCEPTION;
        }
        let result = qjs::JS_GetProperty(ctx, event, atoms.result.atom());
        qjs::JS_FreeValue(ctx, event);
        result
    }
}

/// Counts a `js.FuncOf` call in [`Host::event_depth`] while it lasts.
struct Depth<'h>(&'h Host, usize);

impl<'h> Depth<'h> {
    fn enter(host: &'h Host, depth: usize) -> Depth<'h> {
        host.event_depth.set(depth + 1);
        Depth(host, depth)
    }
}

impl Drop for Depth<'_> {
    fn drop(&mut self) {
        self.0.event_depth.set(self.1);
    }
}

/// Resume Go from JS (`_resume()`), on the store whoever called into JS published.
pub(crate) fn resume(ctx: &JsCtx, host: &Host) -> rquickjs::Result<()> {
    if host.exit_code.get().is_some() {
        return Err(Exception::throw_message(
            ctx,
            "Go program has already exited",
        ));
    }
    let outcome = reentry::with_active(|store| {
        let resume = store.data().guest().map(|g| g.resume.clone())?;
        // Called from Go (through JS), the caller needs the answer before it can go on.
        // A completed fs call's callback, called by the loop itself, may stop for a tier-up;
        // any other call's caller waits for Go's answer.
        let outermost = host.go_depth.get() == 0 && host.event_depth.get() == 1;
        if host.stop_in_callback.replace(false) && outermost {
            return host.allowing_stop(|| host.in_go(|| resume.call(store, ())));
        }
        host.without_stop(|| {
            if host.go_depth.get() > 0 {
                host.awaiting_result(|| host.in_go(|| resume.call(store, ())))
            } else {
                host.in_go(|| resume.call(store, ()))
            }
        })
    });
    match outcome {
        None => Err(Exception::throw_internal(
            ctx,
            "gojs: no Go program is running on this thread",
        )),
        Some(Ok(())) if !host.stopped() => Ok(()),
        Some(Ok(())) => Err(realm::throw_uncatchable(ctx, "Go program has exited")),
        Some(Err(e)) => {
            if !e.is::<Unwind>() {
                host.park(Stop::Trap(e));
            }
            Err(realm::throw_uncatchable(ctx, "Go program stopped"))
        }
    }
}
