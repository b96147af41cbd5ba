//! Repository tasks. `cargo xtask conformance`: run Go standard-library tests under gojs's
//! `go_js_wasm_exec` and under Node's runner, and write the comparison table.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Run std packages' tests (`go test -short`) under gojs and Node; write a Markdown table.
    ///
    /// Exits non-zero if a package that passes under Node fails under gojs, or if gojs passes
    /// fewer top-level tests in total.
    Conformance {
        /// File listing the packages, one per line (`#` comments).
        #[arg(long, default_value = "conformance/packages.txt")]
        packages: PathBuf,
        /// The `go` command to test with.
        #[arg(long, default_value = "go")]
        go: String,
        /// Skip the Node runs (only gojs's column is filled).
        #[arg(long)]
        no_node: bool,
        /// Where to write the table.
        #[arg(long, default_value = "docs/CONFORMANCE.md")]
        output: PathBuf,
        /// Use this `go_js_wasm_exec` instead of building the workspace's (e.g. a copy, so that
        /// rebuilding during a long run doesn't change the binary under test).
        #[arg(long)]
        exec: Option<PathBuf>,
        /// Per-package time limit, in seconds.
        #[arg(long, default_value_t = 900)]
        timeout: u64,
    },
    /// Run the programs under bench/ with gojs and Node, back to back; print gojs/Node ratios.
    ///
    /// Wall time and peak RSS are measured by the runner (best of --runs); programs report
    /// their own figures as `METRIC name value unit` lines. Cold: an empty compile cache;
    /// warm: Cranelift's code cached; for hello world also the mean of the five runs that
    /// follow its first at once, before the background compile is done.
    Bench {
        /// Runs per program and runtime (the best is kept).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Also write the results as Markdown and an SVG chart under docs/.
        #[arg(long)]
        write_docs: bool,
    },
    /// Regenerate crates/gojs/src/hot_functions.txt: the functions small programs run, which a
    /// first run compiles before starting (the rest compiles in the background). Needs Node.
    HotFunctions,
    /// Run a Go js/wasm module under the do-nothing host that `bench` measures the Go-side
    /// floor with (see xtask/src/floor.rs).
    #[command(hide = true)]
    FloorHost { wasm: PathBuf },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Conformance {
            packages,
            go,
            no_node,
            output,
            exec,
            timeout,
        } => conformance(
            &packages,
            &go,
            !no_node,
            &output,
            exec,
            Duration::from_secs(timeout),
        ),
        Task::Bench { runs, write_docs } => bench::run(runs, write_docs),
        Task::HotFunctions => hot::run(),
        Task::FloorHost { wasm } => std::process::exit(floor::run(&wasm)?),
    }
}

mod bench;
mod floor;
mod hot;

/// How one package fared under one runner.
#[derive(Clone, Debug, Default)]
struct Outcome {
    /// `ok`, `FAIL`, `timeout`, `build failed`, `no tests`.
    result: String,
    passed: usize,
    failed: Vec<String>,
    seconds: f64,
}

impl Outcome {
    fn ok(&self) -> bool {
        self.result == "ok" || self.result == "no tests"
    }
}

fn conformance(
    list: &Path,
    go: &str,
    with_node: bool,
    output: &Path,
    exec: Option<PathBuf>,
    timeout: Duration,
) -> Result<()> {
    let root = workspace_root()?;
    let packages = read_list(&root.join(list))?;
    let gojs_exec = match exec {
        Some(p) => std::path::absolute(p)?,
        None => build_gojs_exec(&root)?,
    };
    let node_exec = goroot_wasm_file(go, "go_js_wasm_exec")?;
    if with_node && capture(Command::new("node").arg("--version")).is_err() {
        bail!("node is not on PATH (install Node 20, or pass --no-node)");
    }

    let mut rows: BTreeMap<String, (Outcome, Option<Outcome>)> = BTreeMap::new();
    for pkg in &packages {
        eprint!("{pkg:<28}");
        // Build once first, so neither runner's time includes compiling the package.
        let _ = Command::new(go)
            .args([
                "test",
                "-short",
                "-count=1",
                "-run=^$",
                "-exec=/bin/true",
                pkg,
            ])
            .env("GOOS", "js")
            .env("GOARCH", "wasm")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let g = run_package(go, pkg, &gojs_exec, timeout)?;
        eprint!(" gojs {:<8} {:>4} {:>7.1}s", g.result, g.passed, g.seconds);
        let n = if with_node {
            let n = run_package(go, pkg, &node_exec, timeout)?;
            eprint!(
                "   node {:<8} {:>4} {:>7.1}s",
                n.result, n.passed, n.seconds
            );
            Some(n)
        } else {
            None
        };
        eprintln!();
        rows.insert(pkg.clone(), (g, n));
    }

    let mut report = render(go, &rows, with_node)?;
    if let Ok(notes) = std::fs::read_to_string(root.join("conformance/notes.md")) {
        report.push('\n');
        report.push_str(&notes);
    }
    std::fs::write(root.join(output), &report)
        .with_context(|| format!("writing {}", output.display()))?;
    eprintln!("wrote {}", output.display());

    if with_node {
        let regressions: Vec<&String> = rows
            .iter()
            .filter(|(_, (g, n))| n.as_ref().is_some_and(|n| n.ok()) && !g.ok())
            .map(|(p, _)| p)
            .collect();
        let (gp, np) = totals(&rows);
        if !regressions.is_empty() {
            bail!("passing under Node but not under gojs: {regressions:?}");
        }
        if gp < np {
            bail!("gojs passed {gp} top-level tests, Node {np}");
        }
    }
    Ok(())
}

fn totals(rows: &BTreeMap<String, (Outcome, Option<Outcome>)>) -> (usize, usize) {
    rows.values().fold((0, 0), |(g, n), (go, no)| {
        (g + go.passed, n + no.as_ref().map_or(0, |o| o.passed))
    })
}

/// Run one package's tests with `-exec exec` and read `go test -json`'s events.
fn run_package(go: &str, pkg: &str, exec: &Path, timeout: Duration) -> Result<Outcome> {
    let mut child = Command::new(go)
        .args(["test", "-short", "-count=1", "-json"])
        .arg(format!("-timeout={}s", timeout.as_secs()))
        .arg(format!("-exec={}", exec.display()))
        .arg(pkg)
        .env("GOOS", "js")
        .env("GOARCH", "wasm")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running go test")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let start = Instant::now();
    // Kill the run if it outlives the time limit by a margin (Go's own -timeout failed).
    let pid = child.id();
    let guard_deadline = timeout + Duration::from_secs(60);
    let guard = std::thread::spawn(move || {
        let t = Instant::now();
        while t.elapsed() < guard_deadline {
            std::thread::sleep(Duration::from_millis(500));
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return;
            }
        }
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
    });
    let mut out = Outcome::default();
    let mut package_action = String::new();
    let mut build_failed = false;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        let Ok(ev) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let action = ev["Action"].as_str().unwrap_or("");
        match ev["Test"].as_str() {
            Some(test) if !test.contains('/') => match action {
                "pass" => out.passed += 1,
                "fail" => out.failed.push(test.to_string()),
                _ => {}
            },
            Some(_) => {}
            None => match action {
                "pass" | "fail" | "skip" => {
                    package_action = action.to_string();
                    out.seconds = ev["Elapsed"].as_f64().unwrap_or(0.0);
                }
                "build-fail" => build_failed = true,
                "output" => {
                    let text = ev["Output"].as_str().unwrap_or("");
                    if text.contains("panic: test timed out") {
                        package_action = "timeout".into();
                    }
                }
                _ => {}
            },
        }
    }
    let _ = child.wait();
    let _ = guard.join();
    if out.seconds == 0.0 {
        out.seconds = start.elapsed().as_secs_f64();
    }
    out.result = match package_action.as_str() {
        _ if build_failed => "build failed".into(),
        "pass" if out.passed == 0 => "no tests".into(),
        "pass" => "ok".into(),
        "skip" => "no tests".into(),
        "timeout" => "timeout".into(),
        "fail" => "FAIL".into(),
        _ => "killed".into(),
    };
    Ok(out)
}

fn render(
    go: &str,
    rows: &BTreeMap<String, (Outcome, Option<Outcome>)>,
    with_node: bool,
) -> Result<String> {
    use std::fmt::Write;
    let go_version = capture(Command::new(go).arg("version"))?;
    let node_version = if with_node {
        capture(Command::new("node").arg("--version"))?
    } else {
        "not run".into()
    };
    let date = capture(Command::new("date").args(["-u", "+%Y-%m-%d"]))?;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (gp, np) = totals(rows);
    let g_ok = rows.values().filter(|(g, _)| g.ok()).count();
    let n_ok = rows
        .values()
        .filter(|(_, n)| n.as_ref().is_some_and(|n| n.ok()))
        .count();

    let mut s = String::new();
    writeln!(
        s,
        "# Conformance: Go's standard-library tests under gojs and Node\n"
    )?;
    writeln!(
        s,
        "Generated by `cargo xtask conformance` on {date}: `go test -short` of each package with \
         `-exec` gojs's `go_js_wasm_exec`, then with Go's own (Node).\n"
    )?;
    writeln!(s, "- Go: `{go_version}`")?;
    writeln!(s, "- Node: `{node_version}`")?;
    writeln!(s, "- Machine: {cores} cores, {cpu}\n")?;
    writeln!(
        s,
        "**{g_ok}/{} packages pass under gojs, {n_ok} under Node; top-level tests passed: \
         gojs {gp}, Node {np}.** Seconds are the test binary's run time as `go test` reports it \
         (gojs's includes compiling the module, cached across runs).\n",
        rows.len()
    )?;
    writeln!(
        s,
        "| package | gojs | tests passed | s | Node | tests passed | s |\n|---|---|---:|---:|---|---:|---:|"
    )?;
    for (pkg, (g, n)) in rows {
        let (nr, np, ns) = match n {
            Some(n) => (
                n.result.clone(),
                n.passed.to_string(),
                format!("{:.1}", n.seconds),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        writeln!(
            s,
            "| {pkg} | {} | {} | {:.1} | {nr} | {np} | {ns} |",
            g.result, g.passed, g.seconds
        )?;
    }
    let failing: Vec<String> = rows
        .iter()
        .filter(|(_, (g, _))| !g.failed.is_empty())
        .map(|(p, (g, _))| format!("- {p}: {}", g.failed.join(", ")))
        .collect();
    if !failing.is_empty() {
        writeln!(s, "\n## Tests failing under gojs\n\n{}", failing.join("\n"))?;
    }
    let node_failing: Vec<String> = rows
        .iter()
        .filter_map(|(p, (_, n))| {
            n.as_ref()
                .filter(|n| !n.failed.is_empty())
                .map(|n| format!("- {p}: {}", n.failed.join(", ")))
        })
        .collect();
    if !node_failing.is_empty() {
        writeln!(
            s,
            "\n## Tests failing under Node\n\n{}",
            node_failing.join("\n")
        )?;
    }
    Ok(s)
}

/// Build the workspace's `go_js_wasm_exec` (release) and return its path.
fn build_gojs_exec(root: &Path) -> Result<PathBuf> {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--bin", "go_js_wasm_exec"])
        .current_dir(root)
        .status()?;
    if !status.success() {
        bail!("building go_js_wasm_exec failed");
    }
    Ok(root.join("target/release/go_js_wasm_exec"))
}

/// A file of Go's wasm support (`lib/wasm` since Go 1.24, `misc/wasm` before).
fn goroot_wasm_file(go: &str, name: &str) -> Result<PathBuf> {
    let goroot = capture(Command::new(go).args(["env", "GOROOT"]))?;
    ["lib/wasm", "misc/wasm"]
        .iter()
        .map(|d| Path::new(&goroot).join(d).join(name))
        .find(|p| p.exists())
        .with_context(|| format!("no {name} in {goroot}/lib/wasm or misc/wasm"))
}

/// Node's arguments for running Go's `wasm_exec_node.js` at `runner`: with
/// `crates/gojs-cli/tests/node_preload.js` first for Go 1.19's, which assigns
/// `globalThis.crypto` (read-only since Node 19) and otherwise never starts.
fn node_runner(root: &Path, runner: &Path) -> Vec<std::ffi::OsString> {
    let mut args = Vec::new();
    if std::fs::read_to_string(runner).is_ok_and(|s| s.contains("globalThis.crypto = {")) {
        args.push("--require".into());
        args.push(root.join("crates/gojs-cli/tests/node_preload.js").into());
    }
    args.push(runner.into());
    args
}

fn read_list(path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

fn capture(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn workspace_root() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent directory")
}
