//! Shared by the examples: build a Go program from the repository's `examples/` directory.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Build `examples/<name>` with `GOOS=js GOARCH=wasm` into `target/examples/<name>.wasm`.
pub fn build_go(name: &str) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = repo.join("target/examples").join(format!("{name}.wasm"));
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let status = Command::new("go")
        .current_dir(repo.join("examples"))
        .env("GOOS", "js")
        .env("GOARCH", "wasm")
        .args(["build", "-o"])
        .arg(&out)
        .arg(format!("./{name}"))
        .status()
        .unwrap_or_else(|e| panic!("cannot run `go` ({e}): install Go from https://go.dev/dl"));
    assert!(status.success(), "building examples/{name} failed");
    out
}

/// The minor version of the `go` on PATH (`26` for go1.26.x).
#[allow(dead_code)]
pub fn go_minor() -> Option<u32> {
    let out = Command::new("go")
        .args(["env", "GOVERSION"])
        .output()
        .ok()?;
    let v = String::from_utf8(out.stdout).ok()?;
    v.trim()
        .strip_prefix("go1.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}
