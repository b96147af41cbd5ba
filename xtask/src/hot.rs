//! `cargo xtask hot-functions`: the lists of functions a first run compiles before it starts
//! (crates/gojs/src/hot_functions.txt, hot_goroutines.txt and hot_libraries.txt; see
//! RATIONALE.md, "Why split a module…").
//!
//! Node compiles wasm lazily, one function at a time on its first call, and can log each
//! compile: running `bench/hello`, `xtask/hot/greet` (hello world's usual variants),
//! `xtask/hot/basics` (what small programs commonly do next), `xtask/hot/concurrency`
//! (goroutines, channels, timers) and `xtask/hot/libraries` (json, regexp, hashes, …) that way
//! under every Go toolchain on the machine names the functions a small program runs. The lists
//! are their union, by the names in the modules' name sections; the runtime functions only the
//! concurrency program runs go in a list of their own, as do the functions of hello world's
//! packages that only the libraries program runs.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The programs whose functions go in the list (directories under the workspace root).
const PROGRAMS: &[&str] = &["bench/hello", "xtask/hot/greet", "xtask/hot/basics"];

/// A program whose runtime functions go in a list of their own, compiled ahead only for
/// programs that start goroutines or use channels (every Go binary links the scheduler's
/// functions, and hello world would compile them for nothing); its other functions (of `flag`,
/// `bufio`, `context`, …) join the main list.
const GOROUTINES: &str = "xtask/hot/concurrency";

/// A program whose functions join the main list for the packages hello world doesn't link
/// (`encoding/json`, `regexp`, `crypto/sha256`, …): a package's functions are only in binaries
/// that link it. Those of the packages every binary links (the runtime's, `reflect`'s,
/// `strconv`'s) go in a list of their own, compiled ahead only for programs that link
/// `encoding/json` or `regexp` (see RATIONALE.md).
const LIBRARIES: &str = "xtask/hot/libraries";

pub fn run() -> Result<()> {
    let root = super::workspace_root()?;
    let out_dir = root.join("target/hot");
    std::fs::create_dir_all(&out_dir)?;
    let mut toolchains = vec![PathBuf::from("go")];
    for v in 19..=30 {
        // Debian's packages, and Go 1.20 from its toolchain module (.ci/install-deps).
        for dir in ["/usr/lib", "/usr/local/lib"] {
            let go = PathBuf::from(format!("{dir}/go-1.{v}/bin/go"));
            if go.exists() {
                toolchains.push(go);
            }
        }
    }
    let mut hot = BTreeSet::new();
    let mut goroutines = BTreeSet::new();
    let mut libraries = BTreeSet::new();
    // The packages hello world links, under any toolchain.
    let mut linked = BTreeSet::new();
    for go in &toolchains {
        let version = super::capture(Command::new(go).args(["env", "GOVERSION"]))?;
        // Go 1.20's toolchain module ships without misc/wasm: Go 1.19's runner imports the
        // same functions.
        let runner = super::goroot_wasm_file(&go.to_string_lossy(), "wasm_exec_node.js")
            .or_else(|_| super::goroot_wasm_file("/usr/lib/go-1.19/bin/go", "wasm_exec_node.js"))?;
        let wasm_exec = super::node_runner(&root, &runner);
        for prog in PROGRAMS.iter().chain([&GOROUTINES, &LIBRARIES]) {
            let stem = prog.rsplit('/').next().unwrap_or(prog);
            let out = out_dir.join(format!("{stem}-{version}.wasm"));
            let wasm = build(go, &root.join(prog), &out)?;
            if *prog == "bench/hello" {
                let names = function_names(&std::fs::read(&wasm)?)?;
                linked.extend(names.values().map(|n| package(n).to_string()));
            }
            // A few runs: which functions run can depend on timing (a collection, a timer).
            for _ in 0..3 {
                match executed(&wasm, &wasm_exec) {
                    Ok(names) => {
                        eprintln!("{version} {prog}: {} functions", names.len());
                        if *prog == GOROUTINES {
                            goroutines.extend(names);
                        } else if *prog == LIBRARIES {
                            libraries.extend(names);
                        } else {
                            hot.extend(names);
                        }
                    }
                    Err(e) => {
                        eprintln!("{version} {prog}: left out: {e:#}");
                        break;
                    }
                }
            }
        }
    }
    let (runtime, other): (BTreeSet<String>, BTreeSet<String>) = goroutines
        .difference(&hot)
        .cloned()
        .partition(|name| is_runtime(name));
    hot.extend(other);
    let (own, shared): (BTreeSet<String>, BTreeSet<String>) = libraries
        .into_iter()
        .partition(|n| !linked.contains(package(n)));
    hot.extend(own);
    let shared: BTreeSet<String> = shared.difference(&hot).cloned().collect();
    write_list(&root.join("crates/gojs/src/hot_functions.txt"), &hot)?;
    write_list(&root.join("crates/gojs/src/hot_goroutines.txt"), &runtime)?;
    write_list(&root.join("crates/gojs/src/hot_libraries.txt"), &shared)?;
    Ok(())
}

/// The package of a function named as in Go's name section (`encoding_json.Marshal`).
fn package(name: &str) -> &str {
    name.split('.').next().unwrap_or(name)
}

/// Whether `name` belongs to the runtime or the packages it is made of.
fn is_runtime(name: &str) -> bool {
    ["runtime.", "internal_", "sync.", "sync_atomic."]
        .iter()
        .any(|p| name.starts_with(p))
}

fn write_list(path: &Path, names: &BTreeSet<String>) -> Result<()> {
    let mut text = String::new();
    for name in names {
        text.push_str(name);
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {} names to {}", names.len(), path.display());
    Ok(())
}

/// Build the program in `dir` with `go`, as a module of its own (so any toolchain accepts it).
fn build(go: &Path, dir: &Path, out: &Path) -> Result<PathBuf> {
    let tmp = out.with_extension("src");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    std::fs::copy(dir.join("main.go"), tmp.join("main.go"))?;
    std::fs::write(tmp.join("go.mod"), "module hot\n\ngo 1.19\n")?;
    let ok = Command::new(go)
        .args(["build", "-o"])
        .arg(out)
        .arg(".")
        .current_dir(&tmp)
        .env("GOOS", "js")
        .env("GOARCH", "wasm")
        .env("GOTOOLCHAIN", "local")
        .status()?
        .success();
    if !ok {
        bail!("{} build in {} failed", go.display(), dir.display());
    }
    Ok(out.to_path_buf())
}

/// The names of the functions Node compiles while running `wasm`.
fn executed(wasm: &Path, wasm_exec: &[std::ffi::OsString]) -> Result<BTreeSet<String>> {
    let out = Command::new("node")
        .args([
            "--trace-wasm-compilation-times",
            "--wasm-lazy-compilation",
            "--stack-size=8192",
        ])
        .args(wasm_exec)
        .arg(wasm)
        .output()
        .context("running node (apt-get install nodejs)")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().find(|l| l.contains("Error")).unwrap_or("");
        bail!("{} failed under node: {first}", wasm.display());
    }
    let names = function_names(&std::fs::read(wasm)?)?;
    let log = String::from_utf8_lossy(&out.stdout);
    let mut found = BTreeSet::new();
    // "Compiled function 0x…#1433 using Liftoff, took …"
    for line in log.lines().filter(|l| l.contains(" using Liftoff")) {
        let index = line
            .split('#')
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse::<u32>().ok());
        if let Some(name) = index.and_then(|i| names.get(&i)) {
            found.insert(name.clone());
        }
    }
    if found.is_empty() {
        bail!("node logged no compiled functions for {}", wasm.display());
    }
    Ok(found)
}

/// Function index → name, from the name section.
fn function_names(wasm: &[u8]) -> Result<HashMap<u32, String>> {
    use wasmparser::{KnownCustom, Name, Parser, Payload};
    let mut names = HashMap::new();
    for payload in Parser::new(0).parse_all(wasm) {
        if let Payload::CustomSection(c) = payload?
            && let KnownCustom::Name(reader) = c.as_known()
        {
            for name in reader {
                if let Name::Function(map) = name? {
                    for naming in map {
                        let naming = naming?;
                        names.insert(naming.index, naming.name.to_string());
                    }
                }
            }
        }
    }
    Ok(names)
}
