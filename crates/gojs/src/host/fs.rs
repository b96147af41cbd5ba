//! `fs`: the Node `fs` API surface Go's `syscall/fs_js.go` calls.
//!
//! This slice provides `constants`, `writeSync`, `write` to fds 1 and 2 and `read` from fd 0
//! (stdin). Every other method exists and completes with an `ENOSYS` error, as `wasm_exec.js`'s
//! fallback does, until filesystem grants land. Callbacks run before the call returns (see
//! RATIONALE.md, "Why do fs callbacks complete synchronously?").

use std::io::Read;
use std::rc::Rc;

use rquickjs::{Function, Object, Value};

use super::{Host, to_integer};
use crate::realm::{self, JsCtx, JsValue};

/// Node's `fs.constants` on Linux (the subset Go reads, plus the file-type bits).
const CONSTANTS: &[(&str, i32)] = &[
    ("O_RDONLY", libc::O_RDONLY),
    ("O_WRONLY", libc::O_WRONLY),
    ("O_RDWR", libc::O_RDWR),
    ("O_CREAT", libc::O_CREAT),
    ("O_EXCL", libc::O_EXCL),
    ("O_NOCTTY", libc::O_NOCTTY),
    ("O_TRUNC", libc::O_TRUNC),
    ("O_APPEND", libc::O_APPEND),
    ("O_DIRECTORY", libc::O_DIRECTORY),
    ("O_NOFOLLOW", libc::O_NOFOLLOW),
    ("O_SYNC", libc::O_SYNC),
    ("O_DSYNC", libc::O_DSYNC),
    ("O_NONBLOCK", libc::O_NONBLOCK),
    ("S_IFMT", libc::S_IFMT as i32),
    ("S_IFREG", libc::S_IFREG as i32),
    ("S_IFDIR", libc::S_IFDIR as i32),
    ("S_IFCHR", libc::S_IFCHR as i32),
    ("S_IFBLK", libc::S_IFBLK as i32),
    ("S_IFIFO", libc::S_IFIFO as i32),
    ("S_IFLNK", libc::S_IFLNK as i32),
    ("S_IFSOCK", libc::S_IFSOCK as i32),
    ("F_OK", libc::F_OK),
    ("R_OK", libc::R_OK),
    ("W_OK", libc::W_OK),
    ("X_OK", libc::X_OK),
];

/// Methods not provided yet: each calls its callback (the last argument) with `ENOSYS`.
const NOT_YET: &[&str] = &[
    "open",
    "close",
    "fstat",
    "stat",
    "lstat",
    "readdir",
    "mkdir",
    "rmdir",
    "unlink",
    "rename",
    "chmod",
    "fchmod",
    "chown",
    "fchown",
    "lchown",
    "truncate",
    "ftruncate",
    "fsync",
    "link",
    "symlink",
    "readlink",
    "utimes",
];

pub(crate) fn object(ctx: &JsCtx, host: &Rc<Host>) -> rquickjs::Result<Object<'static>> {
    let fs = Object::new(ctx.clone())?;
    let constants = Object::new(ctx.clone())?;
    for (name, v) in CONSTANTS {
        constants.set(*name, *v)?;
    }
    fs.set("constants", constants)?;

    let h = host.clone();
    fs.set(
        "writeSync",
        Function::new(
            ctx.clone(),
            move |ctx: JsCtx,
                  fd: JsValue,
                  buf: JsValue,
                  rest: rquickjs::function::Rest<JsValue>| {
                let n = write(&h, &ctx, &fd, &buf, rest.0.first(), rest.0.get(1))
                    .map_err(|e| ctx.throw(e))?;
                Ok::<_, rquickjs::Error>(n as f64)
            },
        )?,
    )?;
    let h = host.clone();
    fs.set(
        "write",
        Function::new(
            ctx.clone(),
            move |ctx: JsCtx,
                  fd: JsValue,
                  buf: JsValue,
                  offset: JsValue,
                  length: JsValue,
                  _position: JsValue,
                  cb: Function<'static>| {
                complete(
                    &ctx,
                    &cb,
                    write(&h, &ctx, &fd, &buf, Some(&offset), Some(&length)),
                )
            },
        )?,
    )?;
    let h = host.clone();
    fs.set(
        "read",
        Function::new(
            ctx.clone(),
            move |ctx: JsCtx,
                  fd: JsValue,
                  buf: JsValue,
                  offset: JsValue,
                  length: JsValue,
                  _position: JsValue,
                  cb: Function<'static>| {
                complete(&ctx, &cb, read(&h, &ctx, &fd, &buf, &offset, &length))
            },
        )?,
    )?;
    for name in NOT_YET {
        let f = Function::new(
            ctx.clone(),
            move |ctx: JsCtx, args: rquickjs::function::Rest<JsValue>| {
                let err = realm::error_with_code(&ctx, "not implemented", "ENOSYS")?;
                match args.0.last().and_then(|cb| cb.as_function()) {
                    Some(cb) => cb.call::<_, ()>((err,)),
                    None => Err(ctx.throw(err)),
                }
            },
        )?;
        fs.set(*name, f)?;
    }
    Ok(fs)
}

/// Call a Node-style callback: `cb(err)` or `cb(null, n)`.
fn complete(
    ctx: &JsCtx,
    cb: &Function<'static>,
    result: Result<usize, JsValue>,
) -> rquickjs::Result<()> {
    match result {
        Ok(n) => cb.call((Value::new_null(ctx.clone()), n as f64)),
        Err(e) => cb.call((e,)),
    }
}

/// The `[offset, offset + length)` range of `buf`, checked like Node's `fs.write`/`fs.read`.
fn range(
    ctx: &JsCtx,
    len: usize,
    offset: Option<&JsValue>,
    length: Option<&JsValue>,
) -> Result<(usize, usize), JsValue> {
    let off = offset
        .filter(|v| !v.is_undefined() && !v.is_null())
        .map(to_integer)
        .unwrap_or(0);
    let n = length
        .filter(|v| !v.is_undefined() && !v.is_null())
        .map(to_integer)
        .unwrap_or(len as i64 - off);
    if off < 0 || off as usize > len {
        return Err(range_error(ctx, "offset", off, len));
    }
    if n < 0 || (off as usize).saturating_add(n as usize) > len {
        return Err(range_error(ctx, "length", n, len));
    }
    Ok((off as usize, n as usize))
}

fn range_error(ctx: &JsCtx, what: &str, v: i64, len: usize) -> JsValue {
    let msg = format!(
        "The value of \"{what}\" is out of range. It must be >= 0 && <= {len}. Received {v}"
    );
    realm::error_with_code(ctx, &msg, "ERR_OUT_OF_RANGE")
        .unwrap_or_else(|_| Value::new_undefined(ctx.clone()))
}

fn bad_buffer(ctx: &JsCtx) -> JsValue {
    let msg = "The \"buffer\" argument must be an instance of Buffer, TypedArray, or DataView.";
    realm::error_with_code(ctx, msg, "ERR_INVALID_ARG_TYPE")
        .unwrap_or_else(|_| Value::new_undefined(ctx.clone()))
}

fn io_err(ctx: &JsCtx, e: std::io::Error, syscall: &str) -> JsValue {
    super::io_error(ctx, &e, syscall).unwrap_or_else(|_| Value::new_undefined(ctx.clone()))
}

fn write(
    host: &Host,
    ctx: &JsCtx,
    fd: &JsValue,
    buf: &JsValue,
    offset: Option<&JsValue>,
    length: Option<&JsValue>,
) -> Result<usize, JsValue> {
    let fd = to_integer(fd);
    if buf.is_string() {
        let bytes = realm::to_utf8(buf)?;
        host.write_fd(fd, &bytes)
            .map_err(|e| io_err(ctx, e, "write"))?;
        return Ok(bytes.len());
    }
    let len = realm::with_typed_array_bytes(buf, |b| b.len()).ok_or_else(|| bad_buffer(ctx))?;
    let (off, n) = range(ctx, len, offset, length)?;
    let chunk = realm::with_typed_array_bytes(buf, |b| b[off..off + n].to_vec())
        .ok_or_else(|| bad_buffer(ctx))?;
    host.write_fd(fd, &chunk)
        .map_err(|e| io_err(ctx, e, "write"))?;
    Ok(n)
}

fn read(
    host: &Host,
    ctx: &JsCtx,
    fd: &JsValue,
    buf: &JsValue,
    offset: &JsValue,
    length: &JsValue,
) -> Result<usize, JsValue> {
    let fd = to_integer(fd);
    let len = realm::with_typed_array_bytes(buf, |b| b.len()).ok_or_else(|| bad_buffer(ctx))?;
    let (off, n) = range(ctx, len, Some(offset), Some(length))?;
    if fd != 0 {
        return Err(io_err(
            ctx,
            std::io::Error::from_raw_os_error(libc::EBADF),
            "read",
        ));
    }
    // Read into a host buffer first: the stdin reader must not alias the JS buffer.
    let mut tmp = vec![0u8; n];
    let got = loop {
        match host.stdin.borrow_mut().read(&mut tmp) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => break r.map_err(|e| io_err(ctx, e, "read"))?,
        }
    };
    realm::with_typed_array_bytes(buf, |data| {
        let got = got.min(data.len().saturating_sub(off));
        data[off..off + got].copy_from_slice(&tmp[..got]);
        got
    })
    .ok_or_else(|| bad_buffer(ctx))
}
