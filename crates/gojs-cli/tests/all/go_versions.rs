//! Binaries from every supported Go generation run: Debian's Go 1.19 and the toolchain module's
//! Go 1.20 (module `go`), Debian's 1.21, 1.22, 1.23 and the Go on PATH (module `gojs`), each fixture matching its golden and Node running
//! the same binary. Missing toolchains fail with the install command.

use crate::harness::{Go, Invocation, assert_golden, run_gojs, run_gojs_like_node, run_node};

/// Fixtures whose output is the same for every Go version.
const PORTABLE: &[&str] = &[
    "hello",
    "values",
    "strings",
    "callbacks",
    "timers",
    "stdin",
    "exitcode",
    "deadlock",
    "realm",
    "fs",
];

fn check(go: &Go) {
    for name in PORTABLE {
        let wasm = go.build(name);
        assert_golden(name, &run_gojs(&wasm, &Invocation::of(name)));
        let ours = run_gojs_like_node(&wasm, &Invocation::of(name));
        let node = run_node(go, &wasm, &Invocation::of(name));
        let mask = crate::node::mask_heap_addresses;
        assert_eq!(
            (ours.stdout(), mask(&ours.stderr()), ours.code),
            (node.stdout(), mask(&node.stderr()), node.code),
            "{name} under {} differs from Node",
            go.version
        );
    }
}

/// Go 1.19's own `wasm_exec_node.js` runs on Node 20 with `tests/node_preload.js` first (it
/// assigns `globalThis.crypto`, which Node ≥ 19 made read-only).
#[test]
fn go_1_19() {
    check(&Go::debian(19));
}

/// Go 1.20 (module `go`), from its toolchain module; compared with Node under Go 1.19's runner.
#[test]
fn go_1_20() {
    check(&Go::go_1_20());
}

#[test]
fn go_1_21() {
    check(&Go::debian(21));
}

#[test]
fn go_1_22() {
    check(&Go::debian(22));
}

#[test]
fn go_1_23() {
    check(&Go::debian(23));
}

#[test]
fn go_on_path() {
    check(&Go::path());
}
