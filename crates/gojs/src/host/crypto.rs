//! `crypto.getRandomValues`: fills an integer typed array from the OS CSPRNG, with Web Crypto's
//! 65,536-byte limit.

use rquickjs::{Exception, Function, Object, qjs};

use crate::realm::{JsCtx, JsValue};

/// Web Crypto's per-call limit (`QuotaExceededError` beyond it).
const MAX_BYTES: usize = 65536;

pub(super) fn object(ctx: &JsCtx) -> rquickjs::Result<Object<'static>> {
    let o = Object::new(ctx.clone())?;
    o.set(
        "getRandomValues",
        Function::new(ctx.clone(), |ctx: JsCtx, array: JsValue| -> rquickjs::Result<JsValue> {
            if !is_integer_typed_array(&array) {
                return Err(Exception::throw_type(
                    &ctx,
                    "The \"typedArray\" argument must be an instance of Int8Array, Int16Array, Int32Array, Uint8Array, Uint16Array, Uint32Array, or Uint8ClampedArray.",
                ));
            }
            let len = crate::realm::with_typed_array_bytes(&array, |b| b.len()).unwrap_or(0);
            if len > MAX_BYTES {
                let e = crate::realm::error_with_code(
                    &ctx,
                    &format!("The ArrayBufferView's byte length ({}) exceeds the number of bytes of entropy available via this API ({MAX_BYTES})", len),
                    "22",
                )?;
                if let Some(o) = e.as_object() {
                    o.set("name", "QuotaExceededError")?;
                }
                return Err(ctx.throw(e));
            }
            let filled = crate::realm::with_typed_array_bytes(&array, getrandom::fill);
            if let Some(Err(e)) = filled {
                return Err(Exception::throw_internal(&ctx, &format!("OS random source failed: {e}")));
            }
            Ok(array)
        })?,
    )?;
    Ok(o)
}

/// Whether `v` is an integer typed array (not float, not DataView).
fn is_integer_typed_array(v: &JsValue) -> bool {
    if !v.is_object() {
        return false;
    }
    let Ok(kind) = u32::try_from(unsafe { qjs::JS_GetTypedArrayType(v.as_raw()) }) else {
        return false;
    };
    matches!(
        kind,
        qjs::JSTypedArrayEnum_JS_TYPED_ARRAY_UINT8C
            | qjs::JSTypedArrayEnum_JS_TYPED_ARRAY_INT8
            | qjs::JSTypedArrayEnum_JS_TYPED_ARRAY_UINT8
            | qjs::JSTypedArrayEnum_JS_TYPED_ARRAY_INT16
            | qjs::JSTypedArrayEnum_JS_TYPED_ARRAY_UINT16
            | qjs::JSTypedArrayEnum_JS_TYPED_ARRAY_INT32
            | qjs::JSTypedArrayEnum_JS_TYPED_ARRAY_UINT32
            | qjs::JSTypedArrayEnum_JS_TYPED_ARRAY_BIG_INT64
            | qjs::JSTypedArrayEnum_JS_TYPED_ARRAY_BIG_UINT64
    )
}
