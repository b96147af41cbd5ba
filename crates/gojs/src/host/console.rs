//! `console`: `log`/`info`/`debug` to stdout, `error`/`warn`/`trace` to stderr, formatted by the
//! prelude like Node's `util.format`. Go itself uses `console.error` to report calls to released
//! functions.

use std::rc::Rc;

use rquickjs::{Function, Object};

use super::Host;
use crate::realm::{JsCtx, JsValue};

pub(super) fn install(
    ctx: &JsCtx,
    host: &Rc<Host>,
    native: &Object<'static>,
) -> rquickjs::Result<()> {
    let host = host.clone();
    native.set(
        "print",
        Function::new(ctx.clone(), move |fd: i32, text: JsValue| {
            let bytes = crate::realm::to_utf8(&text).unwrap_or_default();
            // Console output to a closed pipe is dropped, as Node does for console methods.
            let _ = host.write_fd(i64::from(fd), &bytes);
        })?,
    )?;
    Ok(())
}
