//! Timer natives behind the prelude's `setTimeout`, `setInterval`, `setImmediate`, their `clear*`
//! counterparts and Node's `Timeout` methods, plus `queueMicrotask`. The timers themselves live
//! in the event loop ([`crate::event_loop::Timers`]).

use std::rc::Rc;
use std::time::Duration;

use rquickjs::{Array, Function, Object};

use super::Host;
use crate::event_loop::JsTimer;
use crate::realm::{JsCtx, JsValue};

pub(super) fn install(
    ctx: &JsCtx,
    host: &Rc<Host>,
    native: &Object<'static>,
) -> rquickjs::Result<()> {
    let h = host.clone();
    native.set(
        "setTimer",
        Function::new(
            ctx.clone(),
            move |callback: Function<'static>, delay: f64, args: Array<'static>, repeat: bool| {
                let args: Vec<JsValue> = args.iter().collect::<rquickjs::Result<_>>()?;
                let delay = Duration::from_secs_f64(delay.max(0.0) / 1000.0);
                let timer = JsTimer {
                    callback,
                    args,
                    interval: repeat.then_some(delay),
                    refed: true,
                };
                Ok::<_, rquickjs::Error>(h.timers.borrow_mut().set_js(timer, delay))
            },
        )?,
    )?;
    let h = host.clone();
    native.set(
        "clearTimer",
        Function::new(ctx.clone(), move |id: f64| {
            h.timers.borrow_mut().clear_js(id as u32)
        })?,
    )?;
    let h = host.clone();
    native.set(
        "refTimer",
        Function::new(ctx.clone(), move |id: f64, refed: bool| {
            h.timers.borrow_mut().set_ref(id as u32, refed)
        })?,
    )?;
    let h = host.clone();
    native.set(
        "hasRef",
        Function::new(ctx.clone(), move |id: f64| {
            h.timers.borrow().has_ref(id as u32)
        })?,
    )?;
    let h = host.clone();
    native.set(
        "refreshTimer",
        Function::new(ctx.clone(), move |id: f64| {
            h.timers.borrow_mut().refresh(id as u32)
        })?,
    )?;
    native.set(
        "queueMicrotask",
        Function::new(ctx.clone(), |callback: Function<'static>| {
            callback.defer(())
        })?,
    )?;
    Ok(())
}
