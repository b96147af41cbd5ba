//! `go_js_wasm_exec` as Go's toolchain uses it: `go test -exec` on a subset of the standard
//! library (the full list and the Node comparison are `cargo xtask conformance`), and `go run`
//! / `go test` finding it on PATH.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::{Go, fixtures_dir, repo, run};

fn exec() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_go_js_wasm_exec"))
}

fn go_for_wasm() -> Command {
    go_for_wasm_with(&Go::path())
}

fn go_for_wasm_with(go: &Go) -> Command {
    let mut cmd = Command::new(&go.bin);
    cmd.env("GOOS", "js")
        .env("GOARCH", "wasm")
        .env("GOTOOLCHAIN", "local");
    cmd
}

#[test]
fn std_subset_passes_under_go_test_exec() {
    let list = std::fs::read_to_string(repo().join("conformance/ci-packages.txt")).unwrap();
    let packages: Vec<&str> = list
        .lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter(|l| !l.is_empty())
        .collect();
    assert!(packages.len() >= 10, "{packages:?}");
    let mut cmd = go_for_wasm();
    cmd.args(["test", "-short", "-count=1"])
        .arg(format!("-exec={}", exec().display()))
        .args(&packages);
    let out = run(cmd, b"");
    assert_eq!(
        out.code,
        Some(0),
        "go test -exec go_js_wasm_exec failed:\n{}\n{}",
        out.stdout(),
        out.stderr()
    );
    for p in &packages {
        assert!(
            out.stdout()
                .lines()
                .any(|l| l.starts_with("ok") && l.contains(p)),
            "{p} did not pass:\n{}",
            out.stdout()
        );
    }
}

/// With `go_js_wasm_exec` on PATH, `go run` and `go test` use it (that is how Go finds Node's).
#[test]
fn go_run_and_go_test_find_it_on_path() {
    let bin_dir = exec().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = go_for_wasm();
    cmd.current_dir(fixtures_dir())
        .env("PATH", &path)
        .args(["run", "./hello", "from", "go run"]);
    let out = run(cmd, b"");
    assert_eq!(out.code, Some(0), "{}", out.stderr());
    assert_eq!(
        out.stdout(),
        "hello, world\nargc: 3\narg0-nonempty: true\narg1: \"from\" (4 bytes)\narg2: \"go run\" (6 bytes)\n"
    );

    let mut cmd = go_for_wasm();
    cmd.env("PATH", &path);
    assert_gotest_passes(cmd, &[]);
}

/// `go test -count=1 ./gotest` with `cmd` (a `go` set up for js/wasm) and `flags` passes.
fn assert_gotest_passes(mut cmd: Command, flags: &[String]) {
    cmd.current_dir(fixtures_dir())
        .args(["test", "-count=1"])
        .args(flags)
        .arg("./gotest");
    let out = run(cmd, b"");
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout(), out.stderr());
    assert!(out.stdout().starts_with("ok"), "{}", out.stdout());
}

/// `go test -exec` with gojs's `go_js_wasm_exec` under `go`.
fn go_test_with(go: &Go) {
    assert_gotest_passes(
        go_for_wasm_with(go),
        &[format!("-exec={}", exec().display())],
    );
}

/// Go 1.19's own `go_js_wasm_exec` can't run its test binaries on Node 20 (its runner assigns
/// the read-only `globalThis.crypto`); gojs's can.
#[test]
fn go_1_19_tests_run_where_node_cannot() {
    go_test_with(&Go::debian(19));
}

/// Go 1.20's toolchain module has no `go_js_wasm_exec` at all (no misc/wasm); gojs's runs its
/// test binaries.
#[test]
fn go_1_20_tests_run() {
    go_test_with(&Go::go_1_20());
}
