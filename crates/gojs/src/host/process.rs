//! `process`: ids, `umask`, `cwd`/`chdir` (per instance, never the host process's), `argv0`.
//!
//! `chdir` checks the target through the guest's filesystem, so the guest can only move to
//! directories it can see.

use std::rc::Rc;

use rquickjs::function::Opt;
use rquickjs::{Array, Function, Object};

use super::Host;
use crate::realm::{JsCtx, JsValue};

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
                let cwd = h.process.cwd.borrow().clone();
                let target = super::path::resolve(&cwd, &[dir.as_str()]);
                let st = h.vfs.borrow().stat(&cwd, &dir, true);
                let err = match st {
                    Ok(st) if st.mode & libc::S_IFMT == libc::S_IFDIR => None,
                    Ok(_) => Some(std::io::Error::from_raw_os_error(libc::ENOTDIR)),
                    Err(e) => Some(e),
                };
                if let Some(err) = err {
                    let e = super::io_error(&ctx, &err, "chdir", Some(&dir))?;
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
