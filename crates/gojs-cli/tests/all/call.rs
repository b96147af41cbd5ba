//! `gojs call MODULE NAME [ARG...]`: run until idle, call what Go published, print JSON.

use std::process::Command;

use crate::harness::{Go, Outcome, gojs, run};

fn call(fixture: &str, name: &str, args: &[&str]) -> Outcome {
    let wasm = Go::path().build(fixture);
    let mut cmd = Command::new(gojs());
    cmd.arg("call").arg(&wasm).arg(name).args(args);
    run(cmd, b"")
}

#[test]
fn calls_a_published_function_and_prints_json() {
    let out = call("greeter", "greeter", &["\"gopher\""]);
    assert_eq!(
        out.stdout(),
        "greeter published\nHello gopher\n\"gopher\"\n"
    );
    assert_eq!(out.stderr(), "");
    assert_eq!(out.code, Some(0));
}

#[test]
fn calls_a_wasmexport_function() {
    let out = call("wasmexport", "add", &["40", "2"]);
    assert_eq!(out.stdout(), "exports ready\n42\n");
    assert_eq!(out.code, Some(0), "{}", out.stderr());
    let out = call("wasmexport", "scale", &["1.25", "2"]);
    assert_eq!(out.stdout(), "exports ready\n2.5\n");
}

#[test]
fn a_go_panic_exits_non_zero_with_the_message() {
    let out = call("greeter", "greeter", &["\"panic\""]);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr().contains("panic: greeter was asked to panic"),
        "{}",
        out.stderr()
    );
    assert!(
        out.stderr()
            .ends_with("gojs: greeter: Go program panicked: greeter was asked to panic\n"),
        "{}",
        out.stderr()
    );
}

#[test]
fn a_js_exception_exits_non_zero_with_the_message() {
    // `JSON` is a global but not a function: calling it throws a TypeError.
    let out = call("greeter", "JSON", &[]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr().starts_with("gojs: JSON: "), "{}", out.stderr());
}

#[test]
fn misuse_is_a_clean_error() {
    let out = call("greeter", "nope", &[]);
    assert_eq!(out.code, Some(1));
    assert_eq!(
        out.stderr(),
        "gojs: nope: nope is not a function Go published (no global function or wasm export of that name)\n"
    );
    let out = call("greeter", "greeter", &["not json"]);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr().contains("is not JSON"), "{}", out.stderr());
    // A program that exits before it is idle: its exit code, and why the call failed.
    let out = call("exitcode", "anything", &[]);
    assert_eq!(out.code, Some(3));
    assert!(
        out.stderr()
            .ends_with("gojs: anything: Go program exited with code 3\n"),
        "{}",
        out.stderr()
    );
}

#[test]
fn exports_stay_callable_after_main_returns() {
    // As under Node: Go exited (code 0), but a pure exported function still answers.
    let out = call("wasmexport_after_exit", "add", &["40", "2"]);
    assert_eq!(out.stdout(), "main returns\n42\n");
    assert_eq!(out.code, Some(0), "{}", out.stderr());
}
