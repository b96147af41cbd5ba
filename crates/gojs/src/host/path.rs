//! `path`: `resolve` with POSIX semantics against the instance's working directory
//! (Go 1.24+ resolves relative file names with it).

use std::rc::Rc;

use rquickjs::{Function, Object, function::Rest};

use super::Host;
use crate::realm::JsCtx;

pub(super) fn object(ctx: &JsCtx, host: &Rc<Host>) -> rquickjs::Result<Object<'static>> {
    let p = Object::new(ctx.clone())?;
    let h = host.clone();
    p.set(
        "resolve",
        Function::new(ctx.clone(), move |segments: Rest<String>| {
            let segs: Vec<&str> = segments.0.iter().map(String::as_str).collect();
            resolve(&h.process.cwd.borrow(), &segs)
        })?,
    )?;
    p.set("sep", "/")?;
    p.set("delimiter", ":")?;
    Ok(p)
}

/// Node's `path.posix.resolve`: the rightmost absolute segment (else `cwd`) joined with what
/// follows, normalized, without a trailing slash.
pub(crate) fn resolve(cwd: &str, segments: &[&str]) -> String {
    let start = segments.iter().rposition(|s| s.starts_with('/'));
    let mut parts: Vec<&str> = Vec::new();
    let base: Vec<&str> = match start {
        Some(_) => Vec::new(),
        None => vec![cwd],
    };
    let rest = match start {
        Some(i) => &segments[i..],
        None => segments,
    };
    for seg in base.iter().chain(rest.iter()) {
        for part in seg.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                p => parts.push(p),
            }
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::resolve;

    #[test]
    fn resolves_like_node() {
        assert_eq!(resolve("/a/b", &["c"]), "/a/b/c");
        assert_eq!(resolve("/a/b", &["../c/./d/"]), "/a/c/d");
        assert_eq!(resolve("/a", &["x", "/y", "z"]), "/y/z");
        assert_eq!(resolve("/", &[]), "/");
        assert_eq!(resolve("/", &["../../.."]), "/");
        assert_eq!(resolve("/a", &[""]), "/a");
    }
}
