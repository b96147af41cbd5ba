//! The Go object (value id 6): `_makeFuncWrapper`, `_pendingEvent` and `exited`, through which
//! `js.FuncOf` callbacks reach Go's `handleEvent` (Go's `syscall/js/func.go`).

use std::rc::Rc;

use rquickjs::function::{Rest, This};
use rquickjs::{Atom, Exception, Function, Object, Value};

use super::{Host, Stop};
use crate::realm::{self, JsCtx, JsValue};
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
    id: Atom<'static>,
    this: Atom<'static>,
    args: Atom<'static>,
    pending: Atom<'static>,
    result: Atom<'static>,
}

fn event_atoms(ctx: &JsCtx, host: &Host) -> rquickjs::Result<Rc<EventAtoms>> {
    if let Some(a) = host.event_atoms.borrow().as_ref() {
        return Ok(a.clone());
    }
    let atoms = Rc::new(EventAtoms {
        id: Atom::from_str(ctx.clone(), "id")?,
        this: Atom::from_str(ctx.clone(), "this")?,
        args: Atom::from_str(ctx.clone(), "args")?,
        pending: Atom::from_str(ctx.clone(), "_pendingEvent")?,
        result: Atom::from_str(ctx.clone(), "result")?,
    });
    *host.event_atoms.borrow_mut() = Some(atoms.clone());
    Ok(atoms)
}

/// The JS function `_makeFuncWrapper(id)` returns: records `{id, this, args}` as the pending
/// event, resumes Go, and returns what Go left in `event.result`.
fn wrapper(ctx: &JsCtx, host: &Rc<Host>, id: u32) -> rquickjs::Result<Function<'static>> {
    let host = host.clone();
    Function::new(
        ctx.clone(),
        move |ctx: JsCtx, this: This<JsValue>, args: Rest<JsValue>| {
            let a = event_atoms(&ctx, &host)?;
            let event = Object::new(ctx.clone())?;
            event.set(a.id.clone(), id)?;
            event.set(a.this.clone(), this.0)?;
            let array = rquickjs::Array::new(ctx.clone())?;
            for (i, v) in args.0.into_iter().enumerate() {
                array.set(i, v)?;
            }
            event.set(a.args.clone(), array)?;
            let go = host
                .go_object()
                .ok_or_else(|| Exception::throw_internal(&ctx, "Go object is gone"))?;
            go.set(a.pending.clone(), event.clone())?;
            resume(&ctx, &host)?;
            event.get::<_, JsValue>(a.result.clone())
        },
    )
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
        if host.go_depth.get() > 0 {
            host.awaiting_result(|| host.in_go(|| resume.call(store, ())))
        } else {
            host.in_go(|| resume.call(store, ()))
        }
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
