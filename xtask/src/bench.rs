//! `cargo xtask bench`: the same Go programs under gojs and Node, with ratios.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The programs under bench/, in report order.
const PROGRAMS: &[&str] = &[
    "hello",
    "cpu",
    "goroutines",
    "jsops",
    "funcof",
    "fsio",
    "timers",
];

/// One run: wall time, peak RSS and the program's own metrics.
#[derive(Default, Clone)]
struct Sample {
    wall_ms: f64,
    rss_mib: f64,
    metrics: BTreeMap<String, (f64, String)>,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Run a command to completion, measuring wall time and the child's peak RSS (wait4).
fn measure(cmd: &mut Command) -> Result<Sample> {
    use std::io::Read;
    // Start every run with nothing left to write back: fsio writes 64 MiB, and the kernel
    // throttled the next run's writes (either runtime's) while it wrote the last one's back
    // (fs_write 205–1754 MiB/s in consecutive runs).
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out)?;
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err)?;
    let mut status = 0;
    // SAFETY: rusage is plain data filled in by wait4 for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall_ms = start.elapsed().as_secs_f64() * 1e3;
    if r != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{cmd:?} failed:\n{out}\n{err}");
    }
    let mut metrics = BTreeMap::new();
    for line in out.lines().chain(err.lines()) {
        let mut f = line.split_whitespace();
        if f.next() == Some("METRIC")
            && let (Some(name), Some(v), Some(unit)) = (f.next(), f.next(), f.next())
        {
            metrics.insert(
                name.to_string(),
                (v.parse().unwrap_or(f64::NAN), unit.to_string()),
            );
        }
    }
    Ok(Sample {
        wall_ms,
        rss_mib: usage.ru_maxrss as f64 / 1024.0,
        metrics,
    })
}

/// Best of `runs`: least wall time and RSS; for metrics the best value (lower is better except
/// throughput in MiB/s).
fn best(samples: &[Sample]) -> Sample {
    let mut b = samples[0].clone();
    for s in &samples[1..] {
        b.wall_ms = b.wall_ms.min(s.wall_ms);
        b.rss_mib = b.rss_mib.min(s.rss_mib);
        for (k, (v, unit)) in &s.metrics {
            let e = b.metrics.entry(k.clone()).or_insert((*v, unit.clone()));
            e.0 = if unit.ends_with("/s") {
                e.0.max(*v)
            } else {
                e.0.min(*v)
            };
        }
    }
    b
}

/// Bridge programs also run under the do-nothing host (xtask/src/floor.rs): the Go-side floor.
const FLOOR_PROGRAMS: &[&str] = &["jsops", "funcof"];

/// Std packages whose test binaries make the batch (like `go test` of a few packages).
const STD_BATCH: &[&str] = &[
    "bytes",
    "strings",
    "strconv",
    "sort",
    "encoding/base64",
    "encoding/json",
    "errors",
    "hash/crc32",
    "unicode/utf8",
    "container/list",
    "path",
    "encoding/hex",
];

/// How many runs of hello world follow its first run at once (each cold measurement).
const AFTER_COLD: usize = 5;

/// One table row: label, gojs value, Node value, unit, Go-side floor (bridge metrics only).
type Row = (String, f64, f64, String, Option<f64>);

/// Wait until `--compiler=auto`'s background compiles queued in `cache` are done, so that
/// they don't run during the next measurement.
fn wait_for_fill(cache: &Path) -> Result<()> {
    let deadline = Instant::now() + std::time::Duration::from_secs(900);
    loop {
        let queued = std::fs::read_dir(cache).is_ok_and(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().starts_with(".pending-"))
        });
        if !queued {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("background compiles in {} did not finish", cache.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

pub fn run(runs: usize, write_docs: bool) -> Result<()> {
    let root = repo();
    let gojs = super::build_gojs_exec(&root)?;
    let node_exec = super::node_runner(&root, &super::goroot_wasm_file("go", "wasm_exec_node.js")?);
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let xtask = std::env::current_exe()?;
    let node = |wasm: &Path| {
        let mut c = Command::new("node");
        c.arg("--stack-size=8192").args(&node_exec).arg(wasm);
        c
    };

    let mut rows: Vec<Row> = Vec::new();
    for prog in PROGRAMS {
        let wasm = out_dir.join(format!("{prog}.wasm"));
        let ok = Command::new("go")
            .current_dir(root.join("bench"))
            .env("GOOS", "js")
            .env("GOARCH", "wasm")
            .args(["build", "-o"])
            .arg(&wasm)
            .arg(format!("./{prog}"))
            .status()?
            .success();
        if !ok {
            bail!("building bench/{prog} failed");
        }
        // Cold: an empty compile cache, the first run of this binary (--compiler=auto); best
        // of `runs`, each with a new cache, like the warm runs (one sample swings ±20%).
        let cold_dir = out_dir.join(format!("cold-cache-{prog}"));
        let mut colds = Vec::new();
        // Hello world only: the mean of the AFTER_COLD runs that follow its first at once, as
        // a harness that doesn't wait for the background compile sees them.
        let mut afters = Vec::new();
        for _ in 0..runs {
            let _ = std::fs::remove_dir_all(&cold_dir);
            let cold_run = || {
                measure(
                    Command::new(&gojs)
                        .arg(&wasm)
                        .env("GOJS_CACHE_DIR", &cold_dir)
                        .env_remove("GOJS_COMPILER"),
                )
            };
            colds.push(cold_run()?);
            if *prog == "hello" {
                let mut total = 0.0;
                for _ in 0..AFTER_COLD {
                    total += cold_run()?.wall_ms;
                }
                afters.push(total / AFTER_COLD as f64);
            }
            wait_for_fill(&cold_dir)?;
        }
        let cold = best(&colds);
        let after = afters.iter().copied().reduce(f64::min);
        // Warm: Cranelift's code in the cache (this first run puts it there, and a program
        // that runs for 200 ms queues its tier-up to inlined code, which is waited for).
        let warm_dir = out_dir.join(format!("warm-cache-{prog}"));
        let _ = std::fs::remove_dir_all(&warm_dir);
        measure(
            Command::new(&gojs)
                .arg(&wasm)
                .env("GOJS_CACHE_DIR", &warm_dir)
                .env("GOJS_COMPILER", "cranelift"),
        )?;
        wait_for_fill(&warm_dir)?;
        let mut g = Vec::new();
        let mut n = Vec::new();
        let mut f = Vec::new();
        for _ in 0..runs {
            g.push(measure(
                Command::new(&gojs)
                    .arg(&wasm)
                    .env("GOJS_CACHE_DIR", &warm_dir)
                    .env_remove("GOJS_COMPILER"),
            )?);
            n.push(measure(&mut node(&wasm))?);
            if FLOOR_PROGRAMS.contains(prog) {
                f.push(measure(Command::new(&xtask).arg("floor-host").arg(&wasm))?);
            }
        }
        let (g, n) = (best(&g), best(&n));
        let f = (!f.is_empty()).then(|| best(&f));
        eprintln!(
            "{prog}: gojs {:.0} ms (cold {:.0} ms), node {:.0} ms",
            g.wall_ms, cold.wall_ms, n.wall_ms
        );
        rows.push((
            format!("{prog}: wall, warm"),
            g.wall_ms,
            n.wall_ms,
            "ms".into(),
            None,
        ));
        rows.push((
            format!("{prog}: wall, cold"),
            cold.wall_ms,
            n.wall_ms,
            "ms".into(),
            None,
        ));
        if let Some(after) = after {
            rows.push((
                format!("{prog}: wall, next {AFTER_COLD} runs at once (mean)"),
                after,
                n.wall_ms,
                "ms".into(),
                None,
            ));
        }
        rows.push((
            format!("{prog}: peak RSS"),
            g.rss_mib,
            n.rss_mib,
            "MiB".into(),
            None,
        ));
        for (k, (v, unit)) in &g.metrics {
            let nv = n.metrics.get(k).map_or(f64::NAN, |m| m.0);
            let fv = f.as_ref().and_then(|f| f.metrics.get(k)).map(|m| m.0);
            rows.push((format!("{prog}: {k}"), *v, nv, unit.clone(), fv));
        }
    }
    rows.extend(std_batch(&root, &gojs, &node, runs)?);

    let mut table = String::from(
        "| measurement | gojs | Node | gojs/Node | Go-side floor | gojs host share |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for (label, g, n, unit, floor) in &rows {
        // For throughput, the ratio is inverted so that lower is better everywhere.
        let ratio = if unit.ends_with("/s") { n / g } else { g / n };
        let (fl, share) = match floor {
            Some(fl) => (format!("{fl:.1} {unit}"), format!("{:.1} {unit}", g - fl)),
            None => (String::new(), String::new()),
        };
        table.push_str(&format!(
            "| {label} | {g:.1} {unit} | {n:.1} {unit} | {ratio:.2} | {fl} | {share} |\n"
        ));
    }
    println!("{table}");
    if write_docs {
        let svg = chart(&rows);
        std::fs::write(root.join("docs/bench-ratios.svg"), svg)?;
        std::fs::write(root.join("target/bench/table.md"), &table)?;
        eprintln!("wrote docs/bench-ratios.svg and target/bench/table.md");
    }
    Ok(())
}

/// The std test batch: each package's test binary (`go test -c`), run in the package's
/// directory with `-test.short`, one after another; total wall time. Cold: an empty compile
/// cache (`--compiler=auto`), the binaries back to back with the background compiles they
/// queue, one run; warm: Cranelift's code cached, best of `runs` batches, as for Node.
fn std_batch(
    root: &Path,
    gojs: &Path,
    node: &dyn Fn(&Path) -> Command,
    runs: usize,
) -> Result<Vec<Row>> {
    let dir = root.join("target/bench/std");
    std::fs::create_dir_all(&dir)?;
    let goroot = super::capture(Command::new("go").args(["env", "GOROOT"]))?;
    let mut bins = Vec::new();
    for pkg in STD_BATCH {
        let bin = dir.join(format!("{}.test", pkg.replace('/', "_")));
        let ok = Command::new("go")
            .env("GOOS", "js")
            .env("GOARCH", "wasm")
            .args(["test", "-c", "-o"])
            .arg(&bin)
            .arg(pkg)
            .status()?
            .success();
        if !ok {
            bail!("building the test binary of {pkg} failed");
        }
        bins.push((Path::new(&goroot).join("src").join(pkg), bin));
    }
    let batch = |make: &dyn Fn(&Path) -> Command, cache: Option<&Path>| -> Result<Sample> {
        let mut total = Sample::default();
        for (pkg_dir, bin) in &bins {
            let mut cmd = make(bin);
            cmd.arg("-test.short").current_dir(pkg_dir);
            if let Some(c) = cache {
                cmd.env("GOJS_CACHE_DIR", c);
            }
            let s = measure(&mut cmd)?;
            total.wall_ms += s.wall_ms;
            total.rss_mib = total.rss_mib.max(s.rss_mib);
        }
        Ok(total)
    };
    let plain = |bin: &Path| {
        let mut c = Command::new(gojs);
        c.arg(bin).env_remove("GOJS_COMPILER");
        c
    };
    let cold_dir = dir.join("cold-cache");
    let _ = std::fs::remove_dir_all(&cold_dir);
    let cold = batch(&plain, Some(&cold_dir))?;
    // The background compiles the cold batch queued (paused while its binaries ran) finish
    // before the warm batches.
    wait_for_fill(&cold_dir)?;
    // Warm: the cache that the cold batch filled. Warm and Node batches alternate, best of
    // `runs` each, like the programs (the machine's first big allocation after a pause can
    // cost seconds of kernel time in either runtime). Cold runs once: each needs a new cache.
    let (mut warm, mut n) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        warm.push(batch(&plain, Some(&cold_dir))?);
        n.push(batch(node, None)?);
    }
    let (warm, n) = (best(&warm), best(&n));
    eprintln!(
        "std batch ({} packages): gojs {:.0} ms (cold {:.0} ms), node {:.0} ms",
        bins.len(),
        warm.wall_ms,
        cold.wall_ms,
        n.wall_ms
    );
    Ok(vec![
        (
            "std test batch: wall, warm".into(),
            warm.wall_ms,
            n.wall_ms,
            "ms".into(),
            None,
        ),
        (
            "std test batch: wall, cold".into(),
            cold.wall_ms,
            n.wall_ms,
            "ms".into(),
            None,
        ),
        (
            "std test batch: peak RSS".into(),
            warm.rss_mib,
            n.rss_mib,
            "MiB".into(),
            None,
        ),
    ])
}

/// A horizontal bar chart of the gojs/Node ratios (log scale, 1.0 marked).
fn chart(rows: &[Row]) -> String {
    let h = 22;
    let (left, width) = (300.0, 420.0);
    let height = rows.len() * h + 40;
    let x = |r: f64| left + (r.max(0.01).log10() + 2.0) / 4.0 * width; // 0.01 .. 100
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"760\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n"
    );
    s.push_str(&format!(
        "<text x=\"10\" y=\"16\">gojs / Node (log scale; left of the line: gojs is faster or smaller)</text>\n<line x1=\"{0}\" y1=\"24\" x2=\"{0}\" y2=\"{1}\" stroke=\"#444\"/>\n",
        x(1.0),
        height
    ));
    for (i, (label, g, n, unit, _)) in rows.iter().enumerate() {
        let ratio = if unit.ends_with("/s") { n / g } else { g / n };
        if !ratio.is_finite() {
            continue;
        }
        let y = 30 + i * h;
        let (x0, x1) = (x(1.0), x(ratio));
        let (a, b) = if x1 < x0 { (x1, x0) } else { (x0, x1) };
        let color = if ratio <= 1.0 { "#3a7" } else { "#c54" };
        s.push_str(&format!(
            "<text x=\"10\" y=\"{}\">{}</text><rect x=\"{a:.1}\" y=\"{y}\" width=\"{:.1}\" height=\"16\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{}\">{ratio:.2}</text>\n",
            y + 12,
            label.replace('&', "&amp;").replace('<', "&lt;"),
            (b - a).max(1.0),
            b + 4.0,
            y + 12
        ));
    }
    s.push_str("</svg>\n");
    s
}
