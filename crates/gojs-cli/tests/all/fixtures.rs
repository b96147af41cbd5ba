//! Every fixture under gojs, against its golden files (which record Node's output).

use crate::harness::{Go, Invocation, assert_golden, fixtures_dir, run_gojs_in_env};

/// What gojs itself is given to run fixture `name`. The trap's backtrace must name the
/// function that trapped, as Node's does; Cranelift's inlining (code that a run of 200 ms
/// tiered up to, which the shared compile cache may hold) would leave that frame out:
/// `inlined_trap_says_frames_are_missing` covers that case.
fn gojs_env(name: &str) -> &'static [(&'static str, &'static str)] {
    if name == "trap" {
        &[("GOJS_INLINE", "off")]
    } else {
        &[]
    }
}

macro_rules! fixtures {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let name = stringify!($name);
                let wasm = Go::path().build(name);
                let o = run_gojs_in_env(&wasm, &Invocation::of(name), &[], gojs_env(name));
                assert_golden(name, &o);
            }
        )*

        /// Every fixture directory has a test here (and in the differential tests).
        pub const ALL: &[&str] = &[$(stringify!($name)),*];
    };
}

fixtures! {
    bigargs, bigclear, byteloops, bytes, callback_panic, callbacks, calls, clock, cpu, deadlock, deep_callbacks, env, exit_in_callback, exitcode, fs, fsprobe, greeter, host_functions, memlimit,
    goroutines, hello, host_globals, hotcall, hotlib, hotmain, panic, process, realm, refcount_soak, stdin, strings, subscribe, tieridle, tierup, timers, trap, unhandled_rejection, values, wasmexport, wasmexport_after_exit, wasmimport,
}

#[test]
fn every_fixture_has_a_test() {
    let mut dirs: Vec<String> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().join("main.go").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut listed: Vec<String> = ALL.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(
        dirs, listed,
        "fixtures/ and the fixtures! list in tests/all/fixtures.rs disagree"
    );
}

/// The baseline compiler (`--compiler=winch`) runs programs the same as Cranelift.
#[test]
fn fixtures_under_winch() {
    under(
        "winch",
        &["hello", "values", "callbacks", "cpu", "goroutines"],
    );
}

/// Cranelift's code runs programs as Node does: plain (a first run with
/// `--compiler=cranelift`) and with inlining (what `gojs compile` makes of these modules, all
/// under 6 MiB, and what a run of 200 ms tiers up to).
#[test]
fn fixtures_under_cranelift() {
    under(
        "cranelift",
        &[
            "hello",
            "values",
            "callbacks",
            "cpu",
            "goroutines",
            "byteloops",
            "bytes",
            "strings",
            "panic",
            "callback_panic",
        ],
    );
}

fn under(compiler: &str, fixtures: &[&str]) {
    let scratch = crate::harness::fresh_scratch_dir(&format!("under-{compiler}"));
    for &name in fixtures {
        let wasm = Go::path().build(name);
        let inv = Invocation::of(name);
        let mut modules = vec![wasm.clone()];
        if compiler == "cranelift" {
            let art = scratch.join(format!("{name}.cwasm"));
            let mut cmd = std::process::Command::new(crate::harness::gojs());
            cmd.args(["compile", "--compiler=cranelift"])
                .arg(&wasm)
                .arg("-o")
                .arg(&art);
            let o = crate::harness::run(cmd, b"");
            assert_eq!(o.code, Some(0), "{name}: {}", o.stderr());
            modules.push(art);
        }
        for module in modules {
            let mut cmd = std::process::Command::new(crate::harness::gojs());
            cmd.env("GOJS_CACHE_DIR", scratch.join("cache"))
                .arg("run")
                .arg(format!("--compiler={compiler}"));
            for (k, v) in inv.env.iter().flatten() {
                cmd.arg(format!("--env={k}={v}"));
            }
            cmd.arg(&module).args(&inv.args);
            assert_golden(name, &crate::harness::run(cmd, &inv.stdin));
        }
    }
}

/// A first run with `--compiler=auto` compiles the program's own functions with Cranelift
/// (Winch's calling convention) and runs them beside Winch's code for the rest: each fixture
/// must run exactly as it does whole (the default split, nothing cached).
#[test]
fn fixtures_with_their_own_functions_in_cranelift_s_code() {
    for name in ALL {
        let wasm = Go::path().build(name);
        let inv = Invocation::of(name);
        let o = crate::harness::run_gojs_in_env(
            &wasm,
            &inv,
            &["--no-cache".into(), "--compiler=auto".into()],
            gojs_env(name),
        );
        assert_golden(name, &o);
    }
}

/// A first run with `--compiler=auto` splits the module, compiling the functions small programs
/// run before starting and the rest in the background. With `GOJS_SPLIT=all-cold` only the
/// exports are compiled first, so every other function is reached through the half loaded on
/// first use: each fixture must run exactly as it does whole.
#[test]
fn fixtures_through_a_split_module() {
    for name in ALL {
        let wasm = Go::path().build(name);
        let inv = Invocation::of(name);
        let o = crate::harness::run_gojs_in_env(
            &wasm,
            &inv,
            &["--no-cache".into(), "--compiler=auto".into()],
            &[("GOJS_SPLIT", "all-cold")],
        );
        assert_golden(name, &o);
    }
}
