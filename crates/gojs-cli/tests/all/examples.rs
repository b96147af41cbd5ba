//! The library's examples (`crates/gojs/examples`), built by `cargo test --workspace`, run and
//! print what their docs say.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::run;

fn example(name: &str) -> Command {
    // target/<profile>/deps/all-… → target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let path: PathBuf = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds the examples",
        path.display()
    );
    Command::new(path)
}

#[test]
fn greeter() {
    let out = run(example("greeter"), b"");
    assert_eq!(out.code, Some(0), "{}", out.stderr());
    assert_eq!(out.stdout(), "Hello gopher\ngreeter returned \"gopher\"\n");
}

#[test]
fn host_functions() {
    let out = run(example("host_functions"), b"");
    assert_eq!(out.code, Some(0), "{}", out.stderr());
    assert_eq!(
        out.stdout(),
        "host checksum: 4029420528\nhost blob: [0 3 6 9 12 15 18 21]\nhost refused: bad length -1\n"
    );
}

#[test]
fn plugins() {
    let out = run(example("plugins"), b"");
    assert_eq!(out.code, Some(0), "{}", out.stderr());
    let lines: Vec<&str> = out.stdout().lines().map(|_| "").collect();
    assert_eq!(lines.len(), 8);
    for i in 0..8 {
        assert!(
            out.stdout().contains(&format!(
                "plugin {i}: {{\"calls\":4,\"upper\":\"DELTA\"}}\n"
            )),
            "{}",
            out.stdout()
        );
    }
}

#[test]
fn wasmexport() {
    let out = run(example("wasmexport"), b"");
    assert_eq!(out.code, Some(0), "{}", out.stderr());
    assert_eq!(out.stdout(), "add(40, 2) = 42\nfib(50) = 12586269025\n");
}
