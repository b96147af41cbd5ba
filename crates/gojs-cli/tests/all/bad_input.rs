//! Bad modules and bad arguments get a one-line error and a non-zero exit, never a panic.

use std::process::Command;

use crate::harness::{Go, Invocation, gojs, run, run_gojs_in_env};

fn gojs_run(path: &std::path::Path) -> crate::harness::Outcome {
    let mut cmd = Command::new(gojs());
    cmd.arg("run").arg(path);
    run(cmd, b"")
}

fn assert_one_line_error(o: &crate::harness::Outcome, needle: &str) {
    let err = o.stderr();
    assert_eq!(o.code, Some(1), "stderr: {err}");
    assert!(o.stdout.is_empty());
    assert_eq!(err.lines().count(), 1, "expected one line, got:\n{err}");
    assert!(err.starts_with("gojs: "), "{err}");
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    assert!(!err.contains("panicked"), "{err}");
}

fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let dir = crate::harness::repo().join("target/bad-input");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn missing_module() {
    assert_one_line_error(
        &gojs_run(std::path::Path::new("/nonexistent/prog.wasm")),
        "cannot read /nonexistent/prog.wasm",
    );
}

#[test]
fn not_wasm() {
    assert_one_line_error(
        &gojs_run(&temp_file("text.wasm", b"#!/bin/sh\necho hi\n")),
        "not a WebAssembly module",
    );
}

#[test]
fn truncated_module() {
    let wasm = std::fs::read(Go::path().build("hello")).unwrap();
    let p = temp_file("truncated.wasm", &wasm[..wasm.len() / 2]);
    assert_one_line_error(&gojs_run(&p), "truncated");
}

#[test]
fn built_for_wasip1() {
    let wasm = Go::path().build_for("hello", "wasip1");
    assert_one_line_error(&gojs_run(&wasm), "GOOS=wasip1");
}

#[test]
fn empty_file() {
    assert_one_line_error(
        &gojs_run(&temp_file("empty.wasm", b"")),
        "not a WebAssembly module",
    );
}

#[test]
fn trap_prints_go_backtrace() {
    let inv = Invocation::of("trap");
    let wasm = Go::path().build("trap");
    let o = run_gojs_in_env(&wasm, &inv, &[], &[("GOJS_INLINE", "off")]);
    crate::harness::assert_golden("trap", &o);
    let err = o.stderr();
    assert!(
        err.starts_with("gojs: wasm trap: out of bounds memory access"),
        "{err}"
    );
    assert!(err.contains("wasm backtrace:"), "{err}");
    assert!(err.contains("main.load"), "{err}");
    assert!(!err.contains("inlined"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Cranelift's code with inlining (what `gojs compile` makes of a module up to 6 MiB, and
/// what runs of 200 ms tier up to) traps the same way, but `main.load` was inlined into
/// `main.main`: the backtrace says frames may be missing and how to keep them.
#[test]
fn inlined_trap_says_frames_are_missing() {
    let inv = Invocation::of("trap");
    let wasm = Go::path().build("trap");
    let art = crate::harness::fresh_scratch_dir("inlined-trap").join("trap.cwasm");
    let mut cmd = std::process::Command::new(crate::harness::gojs());
    cmd.env_remove("GOJS_INLINE")
        .args(["compile", "--compiler=cranelift"])
        .arg(&wasm)
        .arg("-o")
        .arg(&art);
    let o = crate::harness::run(cmd, b"");
    assert_eq!(o.code, Some(0), "{}", o.stderr());
    let o = run_gojs_in_env(&art, &inv, &[], &[]);
    assert_eq!(o.code, Some(1));
    assert_eq!(o.stdout(), "before\n");
    let err = o.stderr();
    assert!(
        err.starts_with("gojs: wasm trap: out of bounds memory access"),
        "{err}"
    );
    assert!(err.contains("main.main"), "{err}");
    assert!(
        err.trim_end().ends_with(
            "(functions inlined into others have no frame here; GOJS_INLINE=off keeps them)"
        ),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let o = run(Command::new(gojs()), b"");
    assert_eq!(o.code, Some(2));
    assert!(o.stderr().contains("Usage: gojs"), "{}", o.stderr());
    let mut cmd = Command::new(gojs());
    cmd.args(["run", "--help"]);
    let o = run(cmd, b"");
    assert_eq!(o.code, Some(0));
    assert!(o.stdout().contains("--inherit-env"), "{}", o.stdout());
}

/// Where the code of the function named `name` starts in `wasm` (after its locals).
fn first_instruction_of(wasm: &[u8], name: &str) -> usize {
    use wasmparser::{KnownCustom, Name, Parser, Payload};
    let mut index = None;
    let mut imported = 0;
    let mut bodies = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.unwrap() {
            Payload::ImportSection(r) => {
                for imports in r {
                    for import in imports.unwrap() {
                        let (_, import) = import.unwrap();
                        if matches!(import.ty, wasmparser::TypeRef::Func(_)) {
                            imported += 1;
                        }
                    }
                }
            }
            Payload::CodeSectionEntry(body) => {
                bodies.push(body.get_operators_reader().unwrap().original_position());
            }
            Payload::CustomSection(c) => {
                if let KnownCustom::Name(names) = c.as_known() {
                    for n in names {
                        if let Name::Function(map) = n.unwrap() {
                            for naming in map {
                                let naming = naming.unwrap();
                                if naming.name == name {
                                    index = Some(naming.index as usize);
                                }
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    bodies[index.expect("no such function") - imported]
}

/// A module whose code is invalid where a first run's split leaves it for later (here every
/// function: `GOJS_SPLIT=all-cold`) starts, and the first call of the bad function fails
/// with the compile error and exit 1 (the rest of the module, which the run then waits for,
/// is compiled at once rather than a second in, and fails too); compiled whole, it fails
/// before it starts.
#[test]
fn an_invalid_function_fails_at_its_first_call_or_before_the_start() {
    let mut wasm = std::fs::read(Go::path().build("hello")).unwrap();
    let at = first_instruction_of(&wasm, "runtime.args");
    wasm[at] = 0xff; // not an opcode
    let p = temp_file("invalid-function.wasm", &wasm);
    for split in ["all-cold", "off"] {
        let cache = crate::harness::repo().join(format!("target/bad-input/cache-{split}"));
        let _ = std::fs::remove_dir_all(&cache);
        let mut cmd = Command::new(gojs());
        cmd.arg("run")
            .arg(&p)
            .env("GOJS_SPLIT", split)
            .env("GOJS_CACHE_DIR", &cache)
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE");
        let o = run(cmd, b"");
        let err = o.stderr();
        assert_eq!(o.code, Some(1), "GOJS_SPLIT={split}: {err}");
        assert!(o.stdout.is_empty(), "GOJS_SPLIT={split}: {}", o.stdout());
        assert!(
            err.starts_with("gojs: invalid WebAssembly module: ")
                && err.contains("runtime.args")
                && err.contains("illegal opcode"),
            "GOJS_SPLIT={split}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        let _ = std::fs::remove_dir_all(&cache);
    }
}
