//! `performance`: `now()` in milliseconds since the instance started, and `timeOrigin`.

use std::rc::Rc;

use rquickjs::{Function, Object};

use super::Host;
use crate::realm::JsCtx;

pub(super) fn object(ctx: &JsCtx, host: &Rc<Host>) -> rquickjs::Result<Object<'static>> {
    let o = Object::new(ctx.clone())?;
    let h = host.clone();
    o.set("now", Function::new(ctx.clone(), move || h.clock.now_ms())?)?;
    o.set("timeOrigin", host.clock.origin_ms())?;
    Ok(o)
}
