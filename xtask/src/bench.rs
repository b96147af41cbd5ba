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
    for line in out.lines() {
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

pub fn run(runs: usize, write_docs: bool) -> Result<()> {
    let root = repo();
    let gojs = super::build_gojs_exec(&root)?;
    let node_exec = super::goroot_wasm_file("go", "wasm_exec_node.js")?;
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;

    // (label, gojs value, node value, unit)
    let mut rows: Vec<(String, f64, f64, String)> = Vec::new();
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
        // Cold: an empty compile cache, the first run of this binary.
        let cold_dir = out_dir.join(format!("cold-cache-{prog}"));
        let _ = std::fs::remove_dir_all(&cold_dir);
        let cold = measure(
            Command::new(&gojs)
                .arg(&wasm)
                .env("GOJS_CACHE_DIR", &cold_dir),
        )?;
        let mut g = Vec::new();
        let mut n = Vec::new();
        for _ in 0..runs {
            g.push(measure(Command::new(&gojs).arg(&wasm))?);
            n.push(measure(
                Command::new("node")
                    .arg("--stack-size=8192")
                    .arg(&node_exec)
                    .arg(&wasm),
            )?);
        }
        let (g, n) = (best(&g), best(&n));
        eprintln!(
            "{prog}: gojs {:.0} ms (cold {:.0} ms), node {:.0} ms",
            g.wall_ms, cold.wall_ms, n.wall_ms
        );
        rows.push((
            format!("{prog}: wall, warm"),
            g.wall_ms,
            n.wall_ms,
            "ms".into(),
        ));
        rows.push((
            format!("{prog}: wall, cold"),
            cold.wall_ms,
            n.wall_ms,
            "ms".into(),
        ));
        rows.push((
            format!("{prog}: peak RSS"),
            g.rss_mib,
            n.rss_mib,
            "MiB".into(),
        ));
        for (k, (v, unit)) in &g.metrics {
            let nv = n.metrics.get(k).map_or(f64::NAN, |m| m.0);
            rows.push((format!("{prog}: {k}"), *v, nv, unit.clone()));
        }
    }

    let mut table =
        String::from("| measurement | gojs | Node | gojs/Node |\n|---|---:|---:|---:|\n");
    for (label, g, n, unit) in &rows {
        // For throughput, the ratio is inverted so that lower is better everywhere.
        let ratio = if unit.ends_with("/s") { n / g } else { g / n };
        table.push_str(&format!(
            "| {label} | {g:.1} {unit} | {n:.1} {unit} | {ratio:.2} |\n"
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

/// A horizontal bar chart of the gojs/Node ratios (log scale, 1.0 marked).
fn chart(rows: &[(String, f64, f64, String)]) -> String {
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
    for (i, (label, g, n, unit)) in rows.iter().enumerate() {
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
