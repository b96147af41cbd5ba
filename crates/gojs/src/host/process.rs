//! `process`: ids, `umask`, `cwd`/`chdir` (per instance, never the host process's), `argv0`.
//!
//! With no filesystem granted, the guest's filesystem is just `/`, so `chdir` anywhere else
//! fails with `ENOENT`.

use std::rc::Rc;

use rquickjs::function::Opt;
use rquickjs::{Array, Function, Object};

use super::Host;
use crate::realm::{self, JsCtx, JsValue};

pub(super) fn object(ctx: &JsCtx, host: &Rc<Host>) -> rquickjs::Result<Object<'static>> {
    let p = Object::new(ctx.clone())?;
    p.set("pid", std::process::id())?;
    p.set("ppid", unsafe { libc::getppid() })?;
    p.set("argv0", host.process.argv0.as_str())?;
    p.set("platform", "linux")?;
    p.set(
        "getuid",
        Function::new(ctx.clone(), || unsafe { libc::getuid() })?,
    )?;
    p.set(
        "getgid",
        Function::new(ctx.clone(), || unsafe { libc::getgid() })?,
    )?;
    p.set(
        "geteuid",
        Function::new(ctx.clone(), || unsafe { libc::geteuid() })?,
    )?;
    p.set(
        "getegid",
        Function::new(ctx.clone(), || unsafe { libc::getegid() })?,
    )?;
    p.set(
        "getgroups",
        Function::new(
            ctx.clone(),
            |ctx: JsCtx| -> rquickjs::Result<Array<'static>> {
                let a = Array::new(ctx)?;
                for (i, g) in host_groups().into_iter().enumerate() {
                    a.set(i, g)?;
                }
                Ok(a)
            },
        )?,
    )?;
    let h = host.clone();
    p.set(
        "umask",
        Function::new(ctx.clone(), move |mask: Opt<JsValue>| {
            let old = h.process.umask.get();
            if let Some(m) = mask.0.filter(|m| !m.is_undefined()) {
                h.process.umask.set(super::to_integer(&m) as u32 & 0o777);
            }
            old
        })?,
    )?;
    let h = host.clone();
    p.set(
        "cwd",
        Function::new(ctx.clone(), move || h.process.cwd.borrow().clone())?,
    )?;
    let h = host.clone();
    p.set(
        "chdir",
        Function::new(
            ctx.clone(),
            move |ctx: JsCtx, dir: String| -> rquickjs::Result<()> {
                let target = super::path::resolve(&h.process.cwd.borrow(), &[dir.as_str()]);
                if target != "/" {
                    let msg = format!("ENOENT: no such file or directory, chdir '{dir}'");
                    let e = realm::error_with_code(&ctx, &msg, "ENOENT")?;
                    return Err(ctx.throw(e));
                }
                *h.process.cwd.borrow_mut() = target;
                Ok(())
            },
        )?,
    )?;
    Ok(p)
}

fn host_groups() -> Vec<u32> {
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if n <= 0 {
        return vec![unsafe { libc::getegid() }];
    }
    let mut groups = vec![0 as libc::gid_t; n as usize];
    let n = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
    groups.truncate(n.max(0) as usize);
    groups
}

/// The host's umask, read without changing it for other threads for longer than two syscalls.
pub(crate) fn host_umask() -> u32 {
    let old = unsafe { libc::umask(0o022) };
    unsafe { libc::umask(old) };
    old as u32
}
