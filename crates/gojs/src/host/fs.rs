//! `fs`: the Node `fs` API surface Go's `syscall/fs_js.go` calls, over the instance's
//! [`Vfs`](crate::vfs::Vfs) (its grants and open files) plus stdio on fds 0–2.
//!
//! Every method takes Node's arguments and a callback, and calls the callback before it returns
//! (see RATIONALE.md, "Why do fs callbacks complete synchronously?"); each also has a `…Sync`
//! twin that returns or throws. Errors are `Error`s with Node's `code` (`ENOENT`, …), limited to
//! codes Go's `syscall.errnoByCode` knows.

use std::io::Read;
use std::rc::Rc;

use rquickjs::function::Rest;
use rquickjs::{Function, Object, Value};

use super::{Host, to_integer, to_number};
use crate::realm::{self, JsCtx, JsValue};
use crate::vfs::{OpenFlags, Stat};

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

/// `read` or `write`: `(fd, buffer, offset, length, position)` → bytes transferred.
type BufferOp = fn(
    &Host,
    &JsCtx,
    &JsValue,
    &JsValue,
    Option<&JsValue>,
    Option<&JsValue>,
    Option<&JsValue>,
) -> Result<usize, JsValue>;

/// A method body: the arguments before the callback; `Ok` is the callback's second argument.
type Body = fn(&Host, &JsCtx, &[JsValue]) -> Result<JsValue, JsValue>;

/// Every method but `write`/`writeSync`/`read` (which need the buffer's bytes in place).
const METHODS: &[(&str, Body)] = &[
    ("open", open),
    ("close", |h, ctx, a| {
        let fd = int(a, 0);
        if (0..=2).contains(&fd) {
            return undefined(ctx);
        }
        h.vfs
            .borrow_mut()
            .close(fd as i32)
            .map_err(|e| io_err(ctx, e, "close", None))?;
        undefined(ctx)
    }),
    ("fstat", |h, ctx, a| {
        let fd = int(a, 0);
        let st = match fd {
            0..=2 => stdio_stat(h, fd),
            _ => h.vfs.borrow().fstat(fd as i32),
        };
        stats(h, ctx, st.map_err(|e| io_err(ctx, e, "fstat", None))?)
    }),
    ("stat", |h, ctx, a| {
        path_op(h, ctx, a, "stat", |v, cwd, p| v.stat(cwd, p, true))
            .and_then(|st| stats(h, ctx, st))
    }),
    ("lstat", |h, ctx, a| {
        path_op(h, ctx, a, "lstat", |v, cwd, p| v.stat(cwd, p, false))
            .and_then(|st| stats(h, ctx, st))
    }),
    ("readdir", |h, ctx, a| {
        let names = path_op(h, ctx, a, "scandir", |v, cwd, p| v.readdir(cwd, p))?;
        let arr = rquickjs::Array::new(ctx.clone()).map_err(|e| caught(ctx, e))?;
        for (i, n) in names.into_iter().enumerate() {
            arr.set(i, n).map_err(|e| caught(ctx, e))?;
        }
        Ok(arr.into_value())
    }),
    ("mkdir", |h, ctx, a| {
        let mode = mode_arg(a, 1, 0o777) & !h.process.umask.get();
        path_op(h, ctx, a, "mkdir", |v, cwd, p| v.mkdir(cwd, p, mode))?;
        undefined(ctx)
    }),
    ("rmdir", |h, ctx, a| {
        unit(
            ctx,
            path_op(h, ctx, a, "rmdir", |v, cwd, p| v.rmdir(cwd, p)),
        )
    }),
    ("unlink", |h, ctx, a| {
        unit(
            ctx,
            path_op(h, ctx, a, "unlink", |v, cwd, p| v.unlink(cwd, p)),
        )
    }),
    ("rename", |h, ctx, a| {
        let to = string(a, 1);
        unit(
            ctx,
            path_op(h, ctx, a, "rename", |v, cwd, p| v.rename(cwd, p, &to)),
        )
    }),
    ("link", |h, ctx, a| {
        let to = string(a, 1);
        unit(
            ctx,
            path_op(h, ctx, a, "link", |v, cwd, p| v.link(cwd, p, &to)),
        )
    }),
    ("symlink", |h, ctx, a| {
        // symlink(target, path): the target is stored verbatim, the path is resolved.
        let target = string(a, 0);
        let rest: Vec<JsValue> = a.iter().skip(1).cloned().collect();
        unit(
            ctx,
            path_op(h, ctx, &rest, "symlink", |v, cwd, p| {
                v.symlink(cwd, &target, p)
            }),
        )
    }),
    ("readlink", |h, ctx, a| {
        let target = path_op(h, ctx, a, "readlink", |v, cwd, p| v.readlink(cwd, p))?;
        rquickjs::String::from_str(ctx.clone(), &target)
            .map(|s| s.into_value())
            .map_err(|e| caught(ctx, e))
    }),
    ("chmod", |h, ctx, a| {
        let mode = mode_arg(a, 1, 0);
        unit(
            ctx,
            path_op(h, ctx, a, "chmod", |v, cwd, p| v.chmod(cwd, p, mode)),
        )
    }),
    ("fchmod", |h, ctx, a| {
        let mode = mode_arg(a, 1, 0);
        unit(ctx, fd_op(h, ctx, a, "fchmod", |v, fd| v.fchmod(fd, mode)))
    }),
    ("chown", |h, ctx, a| {
        let (uid, gid) = (int(a, 1) as u32, int(a, 2) as u32);
        unit(
            ctx,
            path_op(h, ctx, a, "chown", |v, cwd, p| {
                v.chown(cwd, p, uid, gid, true)
            }),
        )
    }),
    ("lchown", |h, ctx, a| {
        let (uid, gid) = (int(a, 1) as u32, int(a, 2) as u32);
        unit(
            ctx,
            path_op(h, ctx, a, "lchown", |v, cwd, p| {
                v.chown(cwd, p, uid, gid, false)
            }),
        )
    }),
    ("fchown", |h, ctx, a| {
        let (uid, gid) = (int(a, 1) as u32, int(a, 2) as u32);
        unit(
            ctx,
            fd_op(h, ctx, a, "fchown", |v, fd| v.fchown(fd, uid, gid)),
        )
    }),
    ("truncate", |h, ctx, a| {
        let len = int(a, 1);
        unit(
            ctx,
            path_op(h, ctx, a, "open", |v, cwd, p| v.truncate(cwd, p, len)),
        )
    }),
    ("ftruncate", |h, ctx, a| {
        let len = int(a, 1);
        unit(
            ctx,
            fd_op(h, ctx, a, "ftruncate", |v, fd| v.ftruncate(fd, len)),
        )
    }),
    ("fsync", |h, ctx, a| {
        unit(ctx, fd_op(h, ctx, a, "fsync", |v, fd| v.fsync(fd)))
    }),
    ("utimes", |h, ctx, a| {
        let (at, mt) = (time_arg(a, 1), time_arg(a, 2));
        unit(
            ctx,
            path_op(h, ctx, a, "utime", |v, cwd, p| v.utimes(cwd, p, at, mt)),
        )
    }),
];

pub(crate) fn object(ctx: &JsCtx, host: &Rc<Host>) -> rquickjs::Result<Object<'static>> {
    let fs = Object::new(ctx.clone())?;
    let constants = Object::new(ctx.clone())?;
    for (name, v) in CONSTANTS {
        constants.set(*name, *v)?;
    }
    fs.set("constants", constants)?;

    for &(name, body) in METHODS {
        let h = host.clone();
        fs.set(
            name,
            Function::new(ctx.clone(), move |ctx: JsCtx, args: Rest<JsValue>| {
                let mut args = args.0;
                let cb = args.last().and_then(|f| f.as_function()).cloned();
                if cb.is_some() {
                    args.pop();
                }
                let result = body(&h, &ctx, &args);
                match cb {
                    Some(cb) => callback(&h, &ctx, &cb, result).map(|()| undefined_value(&ctx)),
                    None => Err(missing_callback(&ctx)),
                }
            })?,
        )?;
        let h = host.clone();
        fs.set(
            format!("{name}Sync"),
            Function::new(ctx.clone(), move |ctx: JsCtx, args: Rest<JsValue>| {
                body(&h, &ctx, &args.0).map_err(|e| ctx.throw(e))
            })?,
        )?;
    }

    // `read`/`write` (and their `…Sync` twins) work on the buffer's bytes in place:
    // `(fd, buffer, offset, length, position[, callback])`.
    for (name, op) in [("read", read as BufferOp), ("write", write as BufferOp)] {
        let h = host.clone();
        fs.set(
            name,
            Function::new(ctx.clone(), move |ctx: JsCtx, args: Rest<JsValue>| {
                let mut a = args.0;
                let cb = pop_callback(&ctx, &mut a)?;
                let buffer = arg(&ctx, &a, 1);
                let n = op(
                    &h,
                    &ctx,
                    &arg(&ctx, &a, 0),
                    &buffer,
                    a.get(2),
                    a.get(3),
                    a.get(4),
                );
                complete(&h, &ctx, &cb, n, buffer)
            })?,
        )?;
        let h = host.clone();
        fs.set(
            format!("{name}Sync"),
            Function::new(ctx.clone(), move |ctx: JsCtx, args: Rest<JsValue>| {
                let a = args.0;
                let (fd, buffer) = (arg(&ctx, &a, 0), arg(&ctx, &a, 1));
                let n = op(&h, &ctx, &fd, &buffer, a.get(2), a.get(3), a.get(4))
                    .map_err(|e| ctx.throw(e))?;
                Ok::<_, rquickjs::Error>(n as f64)
            })?,
        )?;
    }
    Ok(fs)
}

fn undefined_value(ctx: &JsCtx) -> JsValue {
    Value::new_undefined(ctx.clone())
}

fn undefined(ctx: &JsCtx) -> Result<JsValue, JsValue> {
    Ok(undefined_value(ctx))
}

fn unit<T>(ctx: &JsCtx, r: Result<T, JsValue>) -> Result<JsValue, JsValue> {
    r.map(|_| undefined_value(ctx))
}

/// A realm error (out of memory, …) as the value the callback receives.
fn caught(ctx: &JsCtx, e: rquickjs::Error) -> JsValue {
    if e.is_exception() {
        ctx.catch()
    } else {
        rquickjs::String::from_str(ctx.clone(), &e.to_string())
            .map(|s| s.into_value())
            .unwrap_or_else(|_| undefined_value(ctx))
    }
}

fn arg(ctx: &JsCtx, a: &[JsValue], i: usize) -> JsValue {
    a.get(i).cloned().unwrap_or_else(|| undefined_value(ctx))
}

fn int(a: &[JsValue], i: usize) -> i64 {
    a.get(i).map(to_integer).unwrap_or(0)
}

fn string(a: &[JsValue], i: usize) -> String {
    a.get(i).map(realm::to_string_lossy).unwrap_or_default()
}

/// A mode argument: a number, or an octal string like Node accepts; `default` if absent.
fn mode_arg(a: &[JsValue], i: usize, default: u32) -> u32 {
    match a.get(i) {
        None => default,
        Some(v) if v.is_undefined() || v.is_null() => default,
        Some(v) if v.is_string() => {
            u32::from_str_radix(&realm::to_string_lossy(v), 8).unwrap_or(default) & 0o7777
        }
        Some(v) => (to_integer(v) as u32) & 0o7777,
    }
}

/// A time argument of `utimes`: seconds (a number), or a `Date`.
fn time_arg(a: &[JsValue], i: usize) -> f64 {
    match a.get(i) {
        Some(v) if v.is_number() => to_number(v),
        // A Date converts to milliseconds.
        Some(v) if v.is_object() => to_number(v) / 1000.0,
        Some(v) => to_number(v),
        None => f64::NAN,
    }
}

fn missing_callback(ctx: &JsCtx) -> rquickjs::Error {
    match realm::error_with_code(
        ctx,
        "The \"cb\" argument must be of type function",
        "ERR_INVALID_ARG_TYPE",
    ) {
        Ok(e) => ctx.throw(e),
        Err(e) => e,
    }
}

fn pop_callback(ctx: &JsCtx, a: &mut Vec<JsValue>) -> rquickjs::Result<Function<'static>> {
    match a.last().and_then(|f| f.as_function()).cloned() {
        Some(f) => {
            a.pop();
            Ok(f)
        }
        None => Err(missing_callback(ctx)),
    }
}

/// Run a path operation: argument 0 is the path, resolved against the instance's cwd.
fn path_op<T>(
    h: &Host,
    ctx: &JsCtx,
    a: &[JsValue],
    syscall: &str,
    f: impl FnOnce(&crate::vfs::Vfs, &str, &str) -> std::io::Result<T>,
) -> Result<T, JsValue> {
    let path = string(a, 0);
    let cwd = h.process.cwd.borrow().clone();
    f(&h.vfs.borrow(), &cwd, &path).map_err(|e| io_err(ctx, e, syscall, Some(&path)))
}

/// Run an operation on an open file: argument 0 is the fd.
fn fd_op<T>(
    h: &Host,
    ctx: &JsCtx,
    a: &[JsValue],
    syscall: &str,
    f: impl FnOnce(&crate::vfs::Vfs, i32) -> std::io::Result<T>,
) -> Result<T, JsValue> {
    let fd = i32::try_from(int(a, 0)).unwrap_or(-1);
    f(&h.vfs.borrow(), fd).map_err(|e| io_err(ctx, e, syscall, None))
}

fn open(h: &Host, ctx: &JsCtx, a: &[JsValue]) -> Result<JsValue, JsValue> {
    let flags = match a.get(1) {
        None => OpenFlags::from_bits(libc::O_RDONLY),
        Some(v) if v.is_undefined() || v.is_null() => OpenFlags::from_bits(libc::O_RDONLY),
        Some(v) if v.is_string() => {
            let s = realm::to_string_lossy(v);
            OpenFlags::from_str(&s).ok_or_else(|| {
                let msg = format!("The value \"{s}\" is invalid for option \"flags\"");
                realm::error_with_code(ctx, &msg, "ERR_INVALID_ARG_VALUE")
                    .unwrap_or_else(|_| undefined_value(ctx))
            })?
        }
        Some(v) => OpenFlags::from_bits(to_integer(v) as i32),
    };
    let mode = mode_arg(a, 2, 0o666) & !h.process.umask.get();
    let path = string(a, 0);
    let cwd = h.process.cwd.borrow().clone();
    let fd = h
        .vfs
        .borrow_mut()
        .open(&cwd, &path, flags, mode)
        .map_err(|e| io_err(ctx, e, "open", Some(&path)))?;
    Ok(Value::new_int(ctx.clone(), fd))
}

/// `fstat` of stdin/stdout/stderr: the host's own descriptors when inherited (so Go can tell a
/// terminal from a pipe), else a pipe.
fn stdio_stat(h: &Host, fd: i64) -> std::io::Result<Stat> {
    if h.stdio_inherited[fd as usize] {
        // SAFETY: fds 0-2 belong to the host process for its whole life; if one was closed,
        // fstat reports EBADF.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd as i32) };
        return crate::vfs::fstat_host(fd);
    }
    Ok(Stat {
        mode: libc::S_IFIFO | 0o600,
        nlink: 1,
        blksize: 4096,
        ino: fd as u64,
        ..Stat::default()
    })
}

/// A Node `Stats` object.
fn stats(h: &Host, ctx: &JsCtx, st: Stat) -> Result<JsValue, JsValue> {
    (|| -> rquickjs::Result<JsValue> {
        let o = Object::new(ctx.clone())?;
        o.set("dev", st.dev as f64)?;
        o.set("mode", st.mode)?;
        o.set("nlink", st.nlink as f64)?;
        o.set("uid", st.uid)?;
        o.set("gid", st.gid)?;
        o.set("rdev", st.rdev as f64)?;
        o.set("blksize", st.blksize as f64)?;
        o.set("ino", st.ino as f64)?;
        o.set("size", st.size as f64)?;
        o.set("blocks", st.blocks as f64)?;
        o.set("atimeMs", st.atime_ms)?;
        o.set("mtimeMs", st.mtime_ms)?;
        o.set("ctimeMs", st.ctime_ms)?;
        o.set("birthtimeMs", st.ctime_ms)?;
        if let Some(proto) = h.stats_prototype.borrow().as_ref() {
            o.set_prototype(Some(proto))?;
        }
        Ok(o.into_value())
    })()
    .map_err(|e| caught(ctx, e))
}

/// Call a Node-style callback with `(err)` or `(null, value)`.
///
/// Like Node, the callback runs from the event loop after the current task — except while a
/// caller waits for Go's answer (a `js.FuncOf` callback called from Go, or by the embedder),
/// where waiting for the loop would deadlock: then it runs before the call returns (see
/// RATIONALE.md).
fn callback(
    h: &Host,
    ctx: &JsCtx,
    cb: &Function<'static>,
    result: Result<JsValue, JsValue>,
) -> rquickjs::Result<()> {
    // Node's shapes: `(err)`, `(null)` for calls without a result, `(null, result)`.
    let args = match result {
        Ok(v) if v.is_undefined() => vec![Value::new_null(ctx.clone())],
        Ok(v) => vec![Value::new_null(ctx.clone()), v],
        Err(e) => vec![e],
    };
    call_back(h, ctx, cb, args)
}

/// Call (or queue) `cb` with `args` (and no receiver: Node's `this` is `undefined` in the
/// strict-mode wrappers Go's callbacks are).
fn call_back(
    h: &Host,
    ctx: &JsCtx,
    cb: &Function<'static>,
    args: Vec<JsValue>,
) -> rquickjs::Result<()> {
    if h.defer_callbacks() {
        h.deferred.borrow_mut().push_back((cb.clone(), args));
        return Ok(());
    }
    realm::call(cb.as_value(), Value::new_undefined(ctx.clone()), args)
        .map(drop)
        .map_err(|e| ctx.throw(e))
}

/// Complete `read`/`write` like Node: `cb(err)` or `cb(null, bytes, buffer)`.
fn complete(
    h: &Host,
    ctx: &JsCtx,
    cb: &Function<'static>,
    result: Result<usize, JsValue>,
    buffer: JsValue,
) -> rquickjs::Result<()> {
    let args = match result {
        Ok(n) => vec![
            Value::new_null(ctx.clone()),
            Value::new_number(ctx.clone(), n as f64),
            buffer,
        ],
        Err(e) => vec![e],
    };
    call_back(h, ctx, cb, args)
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

fn io_err(ctx: &JsCtx, e: std::io::Error, syscall: &str, path: Option<&str>) -> JsValue {
    super::io_error(ctx, &e, syscall, path).unwrap_or_else(|_| undefined_value(ctx))
}

/// A `position` argument: `None` (null, undefined, negative) means the file's own offset.
fn position(v: Option<&JsValue>) -> Option<u64> {
    let v = v.filter(|v| !v.is_undefined() && !v.is_null())?;
    let p = if v.is_big_int() {
        v.as_big_int()
            .and_then(|b| b.clone().to_i64().ok())
            .unwrap_or(-1)
    } else {
        to_integer(v)
    };
    u64::try_from(p).ok()
}

fn write(
    host: &Host,
    ctx: &JsCtx,
    fd: &JsValue,
    buf: &JsValue,
    offset: Option<&JsValue>,
    length: Option<&JsValue>,
    pos: Option<&JsValue>,
) -> Result<usize, JsValue> {
    let fd = to_integer(fd);
    let to_host = |bytes: &[u8], pos: Option<u64>| -> std::io::Result<usize> {
        match fd {
            1 | 2 => host.write_fd(fd, bytes).map(|()| bytes.len()),
            0 => Err(std::io::Error::from_raw_os_error(libc::EBADF)),
            _ => host
                .vfs
                .borrow()
                .write(i32::try_from(fd).unwrap_or(-1), bytes, pos),
        }
    };
    if buf.is_string() {
        // write(fd, string[, position[, encoding]])
        let bytes = realm::to_utf8(buf)?;
        return to_host(&bytes, position(offset)).map_err(|e| io_err(ctx, e, "write", None));
    }
    let len = realm::with_typed_array_bytes(buf, |b| b.len()).ok_or_else(|| bad_buffer(ctx))?;
    let (off, n) = range(ctx, len, offset, length)?;
    let pos = position(pos);
    // Straight from the JS buffer: writing runs no JS, so the buffer can't change meanwhile.
    realm::with_typed_array_bytes(buf, |b| to_host(&b[off..off + n], pos))
        .ok_or_else(|| bad_buffer(ctx))?
        .map_err(|e| io_err(ctx, e, "write", None))
}

fn read(
    host: &Host,
    ctx: &JsCtx,
    fd: &JsValue,
    buf: &JsValue,
    offset: Option<&JsValue>,
    length: Option<&JsValue>,
    pos: Option<&JsValue>,
) -> Result<usize, JsValue> {
    let fd = to_integer(fd);
    let len = realm::with_typed_array_bytes(buf, |b| b.len()).ok_or_else(|| bad_buffer(ctx))?;
    let (off, n) = range(ctx, len, offset, length)?;
    let pos = position(pos);
    if fd == 0 {
        // The stdin reader is the embedder's code: give it a buffer of its own.
        let mut tmp = vec![0u8; n];
        let got = loop {
            match host.stdin.borrow_mut().read(&mut tmp) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r.map_err(|e| io_err(ctx, e, "read", None))?,
            }
        };
        return realm::with_typed_array_bytes(buf, |data| {
            let got = got.min(data.len().saturating_sub(off));
            data[off..off + got].copy_from_slice(&tmp[..got]);
            got
        })
        .ok_or_else(|| bad_buffer(ctx));
    }
    let fd = match fd {
        1 | 2 => -1,
        fd => i32::try_from(fd).unwrap_or(-1),
    };
    // Straight into the JS buffer: reading a file runs no JS.
    realm::with_typed_array_bytes(buf, |b| {
        let dst = &mut b[off..off + n];
        if n >= crate::fill::POPULATE_MIN {
            crate::fill::populate(dst);
        }
        host.vfs.borrow().read(fd, dst, pos)
    })
    .ok_or_else(|| bad_buffer(ctx))?
    .map_err(|e| io_err(ctx, e, "read", None))
}
