//! `TextEncoder`/`TextDecoder` natives: UTF-8 encoding with lone surrogates replaced, and
//! WHATWG decoding (invalid sequences become U+FFFD, or a `TypeError` when `fatal`).

use rquickjs::function::Opt;
use rquickjs::{Exception, Function, Object};

use crate::realm::{self, JsCtx, JsValue};

pub(super) fn install(ctx: &JsCtx, native: &Object<'static>) -> rquickjs::Result<()> {
    native.set(
        "encodeUtf8",
        Function::new(
            ctx.clone(),
            |ctx: JsCtx, s: JsValue| -> rquickjs::Result<JsValue> {
                let bytes = realm::to_utf8(&s).map_err(|e| ctx.throw(e))?;
                realm::uint8_array(&ctx, &bytes).map_err(|e| ctx.throw(e))
            },
        )?,
    )?;
    native.set(
        "decodeUtf8",
        Function::new(
            ctx.clone(),
            |ctx: JsCtx, bytes: JsValue, fatal: Opt<bool>| -> rquickjs::Result<JsValue> {
                let data = realm::with_uint8_bytes(&bytes, |b| b.to_vec()).unwrap_or_default();
                if fatal.0.unwrap_or(false) && std::str::from_utf8(&data).is_err() {
                    return Err(Exception::throw_type(
                        &ctx,
                        "The encoded data was not valid for encoding utf-8",
                    ));
                }
                realm::string_from_go(&ctx, &data)
            },
        )?,
    )?;
    Ok(())
}
