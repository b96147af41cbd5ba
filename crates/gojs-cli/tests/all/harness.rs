//! Builds Go fixtures from source (cached by content under `target/`) and runs them under gojs
//! or Node, capturing what they print.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

pub fn fixtures_dir() -> PathBuf {
    repo().join("fixtures")
}

/// A Go toolchain: `go` on PATH, or one of Debian's `/usr/lib/go-1.XX/bin/go`.
#[derive(Clone, Debug)]
pub struct Go {
    pub bin: PathBuf,
    pub version: String,
    pub goroot: PathBuf,
}

impl Go {
    /// The `go` on PATH (fails with how to get it).
    pub fn path() -> Go {
        Go::at(Path::new("go")).unwrap_or_else(|| {
            panic!("no `go` on PATH: install Go (https://go.dev/dl) to build the fixtures")
        })
    }

    /// Debian's packaged Go 1.`minor` (fails with the install command).
    pub fn debian(minor: u32) -> Go {
        let bin = PathBuf::from(format!("/usr/lib/go-1.{minor}/bin/go"));
        Go::at(&bin).unwrap_or_else(|| {
            let how = if minor == 19 {
                "apt-get install golang-1.19-go".to_string()
            } else {
                format!("apt-get install -t bookworm-backports golang-1.{minor}-go (after adding bookworm-backports to apt's sources; see .ci/install-deps)")
            };
            panic!("Go 1.{minor} is missing at {}: {how}", bin.display())
        })
    }

    /// Go 1.20, which Debian doesn't package: the toolchain module `.ci/install-deps` puts in
    /// /usr/local/lib/go-1.20 (fails with that command).
    pub fn go_1_20() -> Go {
        let bin = Path::new("/usr/local/lib/go-1.20/bin/go");
        Go::at(bin).unwrap_or_else(|| {
            panic!(
                "Go 1.20 is missing at {}: run .ci/install-deps (it downloads \
                 golang.org/toolchain@v0.0.1-go1.20.14.linux-amd64 from the Go module proxy)",
                bin.display()
            )
        })
    }

    fn at(bin: &Path) -> Option<Go> {
        let out = Command::new(bin)
            .args(["env", "GOVERSION", "GOROOT"])
            .env("GOTOOLCHAIN", "local")
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8(out.stdout).ok()?;
        let mut lines = text.lines();
        let version = lines.next()?.trim().to_string();
        let goroot = PathBuf::from(lines.next()?.trim());
        Some(Go {
            bin: bin.to_owned(),
            version,
            goroot,
        })
    }

    /// Go's own Node runner for this version. Go 1.20's toolchain module ships without
    /// misc/wasm: it gets Go 1.19's, which imports the same functions from module `go`.
    pub fn wasm_exec_node(&self) -> PathBuf {
        let goroot = if self.version.starts_with("go1.20") {
            Go::debian(19).goroot
        } else {
            self.goroot.clone()
        };
        let new = goroot.join("lib/wasm/wasm_exec_node.js");
        if new.exists() {
            new
        } else {
            goroot.join("misc/wasm/wasm_exec_node.js")
        }
    }

    /// Build fixture `name` for js/wasm (or `goos`), cached by source hash.
    pub fn build(&self, name: &str) -> PathBuf {
        self.build_for(name, "js")
    }

    pub fn build_for(&self, name: &str, goos: &str) -> PathBuf {
        let dir = fixtures_dir().join(name);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for entry in walk(&dir) {
            if entry.extension().is_some_and(|e| e == "go") {
                entry.hash(&mut h);
                std::fs::read(&entry).unwrap().hash(&mut h);
            }
        }
        std::fs::read(fixtures_dir().join("go.mod"))
            .unwrap()
            .hash(&mut h);
        (&self.version, goos).hash(&mut h);
        let out_dir = repo().join("target/fixtures");
        std::fs::create_dir_all(&out_dir).unwrap();
        let out = out_dir.join(format!(
            "{name}-{}-{goos}-{:016x}.wasm",
            self.version,
            h.finish()
        ));
        // One build per output at a time within this test process.
        static LOCKS: OnceLock<Mutex<HashMap<PathBuf, std::sync::Arc<Mutex<()>>>>> =
            OnceLock::new();
        let lock = LOCKS
            .get_or_init(Default::default)
            .lock()
            .unwrap()
            .entry(out.clone())
            .or_default()
            .clone();
        let _guard = lock.lock().unwrap();
        if out.exists() {
            return out;
        }
        let tmp = out.with_extension(format!("tmp{}", std::process::id()));
        let arch = if goos == "js" || goos == "wasip1" {
            "wasm"
        } else {
            "amd64"
        };
        let result = Command::new(&self.bin)
            .args(["build", "-o"])
            .arg(&tmp)
            .arg(format!("./{name}"))
            .current_dir(fixtures_dir())
            .env("GOOS", goos)
            .env("GOARCH", arch)
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=mod")
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.bin.display()));
        assert!(
            result.status.success(),
            "building fixture {name} with {}: {}",
            self.version,
            String::from_utf8_lossy(&result.stderr)
        );
        std::fs::rename(&tmp, &out).unwrap();
        out
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// What a program printed and how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub code: Option<i32>,
}

impl Outcome {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// How a fixture is invoked: its `args`, `stdin` and `env` files.
pub struct Invocation {
    pub args: Vec<String>,
    pub stdin: Vec<u8>,
    pub env: Option<Vec<(String, String)>>,
    /// A fresh scratch directory, passed as the last argument and granted read-write to gojs
    /// (fixtures with a `scratch` file).
    pub scratch: Option<PathBuf>,
}

impl Invocation {
    pub fn of(name: &str) -> Invocation {
        let dir = fixtures_dir().join(name);
        let lines = |file: &str| -> Option<Vec<String>> {
            let text = std::fs::read_to_string(dir.join(file)).ok()?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            Some(text.split('\n').map(str::to_string).collect())
        };
        let scratch = dir
            .join("scratch")
            .exists()
            .then(|| fresh_scratch_dir(name));
        let mut args = lines("args").unwrap_or_default();
        if let Some(s) = &scratch {
            args.push(s.to_string_lossy().into_owned());
        }
        Invocation {
            scratch,
            args,
            stdin: std::fs::read(dir.join("stdin")).unwrap_or_default(),
            env: lines("env").map(|l| {
                l.into_iter()
                    .map(|kv| {
                        kv.split_once('=')
                            .map(|(k, v)| (k.into(), v.into()))
                            .unwrap()
                    })
                    .collect()
            }),
        }
    }
}

/// A new empty directory under `target/tmp/scratch`, unique to this process and call.
pub fn fresh_scratch_dir(name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = repo()
        .join("target/tmp/scratch")
        .join(format!("{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Canonical, so the guest path gojs grants equals what Go's Getwd reports.
    dir.canonicalize().unwrap()
}

/// Hold the background compile's lock in the cache directory `dir`: a filler started for it
/// waits meanwhile, so only what a test's runs write appears there.
pub fn lock_filler(dir: &Path) -> std::fs::File {
    use std::os::fd::AsRawFd;
    let lock = std::fs::File::create(dir.join(".fill.lock")).unwrap();
    // SAFETY: flock on a file descriptor this test owns.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    lock
}

pub fn gojs() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gojs"))
}

/// Run `gojs run` on a module with a fixture's invocation.
pub fn run_gojs(wasm: &Path, inv: &Invocation) -> Outcome {
    run_gojs_with(wasm, inv, &[])
}

/// Run `gojs run` with the environment Node's runner gives Go under `env -i`: the fixture's
/// variables plus `TMPDIR=/tmp` (Go copies the environment to its heap, so even heap addresses in
/// panic traces depend on it).
pub fn run_gojs_like_node(wasm: &Path, inv: &Invocation) -> Outcome {
    run_gojs_with(wasm, inv, &["--env=TMPDIR=/tmp".to_string()])
}

fn run_gojs_with(wasm: &Path, inv: &Invocation, extra: &[String]) -> Outcome {
    run_gojs_in_env(wasm, inv, extra, &[])
}

/// `gojs run` with extra options and environment variables for gojs itself.
pub fn run_gojs_in_env(
    wasm: &Path,
    inv: &Invocation,
    extra: &[String],
    env: &[(&str, &str)],
) -> Outcome {
    let mut cmd = Command::new(gojs());
    cmd.envs(env.iter().copied());
    cmd.arg("run").args(extra);
    if let Some(dir) = &inv.scratch {
        cmd.arg(format!("--dir={}", dir.display()));
    }
    for (k, v) in inv.env.iter().flatten() {
        cmd.arg(format!("--env={k}={v}"));
    }
    cmd.arg(wasm).args(&inv.args);
    run(cmd, &inv.stdin)
}

/// Run Go's Node runner on a module (fails with the install command when Node is missing).
pub fn run_node(go: &Go, wasm: &Path, inv: &Invocation) -> Outcome {
    let node = which("node").unwrap_or_else(|| {
        panic!("Node.js is missing (needed for differential tests): apt-get install nodejs")
    });
    let mut cmd = Command::new("env");
    cmd.arg("-i");
    for (k, v) in inv.env.iter().flatten() {
        cmd.arg(format!("{k}={v}"));
    }
    cmd.arg(node).arg("--stack-size=8192");
    let runner = go.wasm_exec_node();
    if assigns_crypto(&runner) {
        cmd.arg("--require")
            .arg(repo().join("crates/gojs-cli/tests/node_preload.js"));
    }
    cmd.arg(runner).arg(wasm).args(&inv.args);
    run(cmd, &inv.stdin)
}

/// Whether a `wasm_exec_node.js` assigns `globalThis.crypto` (Go 1.19's), which Node ≥ 19
/// refuses unless `tests/node_preload.js` runs first.
fn assigns_crypto(runner: &Path) -> bool {
    std::fs::read_to_string(runner).is_ok_and(|s| s.contains("globalThis.crypto = {"))
}

pub fn run(mut cmd: Command, stdin: &[u8]) -> Outcome {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    Outcome {
        stdout: out.stdout,
        stderr: out.stderr,
        code: out.status.code(),
    }
}

pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Assert an outcome matches a fixture's golden files.
pub fn assert_golden(name: &str, got: &Outcome) {
    let dir = fixtures_dir().join(name);
    let want_code: i32 = std::fs::read_to_string(dir.join("want.exit"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let want_stdout = std::fs::read_to_string(dir.join("want.stdout")).unwrap();
    assert_eq!(
        got.stdout(),
        want_stdout,
        "{name}: stdout differs (stderr: {})",
        got.stderr()
    );
    if let Ok(want) = std::fs::read_to_string(dir.join("want.stderr")) {
        assert_eq!(got.stderr(), want, "{name}: stderr differs");
    }
    if let Ok(want) = std::fs::read_to_string(dir.join("want.stderr.contains")) {
        for line in want.lines().filter(|l| !l.is_empty()) {
            assert!(
                got.stderr().contains(line),
                "{name}: stderr lacks {line:?}; stderr:\n{}",
                got.stderr()
            );
        }
    }
    assert_eq!(
        got.code,
        Some(want_code),
        "{name}: exit code (stderr: {})",
        got.stderr()
    );
}
