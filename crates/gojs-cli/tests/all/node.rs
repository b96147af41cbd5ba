//! Differential tests: the same binary under Node (Go's `wasm_exec_node.js`) and gojs must print
//! the same bytes and exit the same way.

use crate::harness::{Go, Invocation, run_gojs_like_node, run_node};

/// Fixtures whose stderr is not byte-comparable with Node's, with the reason; stdout and the exit
/// code must still match (and their goldens pin what stderr must contain).
const NOT_COMPARABLE: &[(&str, &str)] = &[
    (
        "bigargs",
        "Node appends a JS stack trace to the limit error",
    ),
    (
        "trap",
        "Node prints V8's RuntimeError and JS stack; gojs prints the trap and wasm backtrace",
    ),
    (
        "unhandled_rejection",
        "the JS stack trace of the rejection reason is engine-specific",
    ),
];

/// Fixtures Node cannot run at all, or that show gojs's own access model (see each fixture's
/// `node-differs`).
const NODE_CANNOT_RUN: &[&str] = &["deep_callbacks", "fsprobe", "wasmimport"];

fn differential(name: &str) {
    if NODE_CANNOT_RUN.contains(&name) {
        return;
    }
    let go = Go::path();
    let wasm = go.build(name);
    // Separate invocations: each gets its own scratch directory, if the fixture uses one.
    let node = run_node(&go, &wasm, &Invocation::of(name));
    let ours = run_gojs_like_node(&wasm, &Invocation::of(name));
    if let Some((_, why)) = NOT_COMPARABLE.iter().find(|(n, _)| *n == name) {
        assert_eq!(ours.code, node.code, "{name}: exit codes differ ({why})");
        assert_eq!(ours.stdout(), node.stdout(), "{name}: stdout differs");
        return;
    }
    assert_eq!(
        ours.stdout(),
        node.stdout(),
        "{name}: stdout differs from Node's"
    );
    assert_eq!(
        mask_heap_addresses(&ours.stderr()),
        mask_heap_addresses(&node.stderr()),
        "{name}: stderr differs from Node's"
    );
    assert_eq!(
        ours.code, node.code,
        "{name}: exit code differs from Node's"
    );
}

#[test]
fn every_fixture_matches_node() {
    let mut failures = Vec::new();
    for name in crate::fixtures::ALL {
        if let Err(e) = std::panic::catch_unwind(|| differential(name)) {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "panic".into());
            failures.push(format!("--- {name}: {msg}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} fixture(s) differ from Node:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Go panic traces print argument words, which include heap addresses; those depend on the
/// allocation history, which differs because gojs completes fs calls synchronously (RATIONALE.md).
/// Mask long hex words; everything else in stderr must match byte for byte.
pub fn mask_heap_addresses(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("0x") {
        out.push_str(&rest[..i]);
        let hex = rest[i + 2..]
            .bytes()
            .take_while(u8::is_ascii_hexdigit)
            .count();
        if hex >= 5 && rest[..i].ends_with(['(', ' ', '{']) {
            out.push_str("0x?");
        } else {
            out.push_str(&rest[i..i + 2 + hex]);
        }
        rest = &rest[i + 2 + hex..];
    }
    out.push_str(rest);
    out
}
