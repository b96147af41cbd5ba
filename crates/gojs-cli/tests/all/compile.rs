//! Ahead-of-time artifacts (`gojs compile`), the compile cache, and `--compiler=auto`'s
//! background fill.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{Go, fresh_scratch_dir, gojs, lock_filler, run};

/// `gojs ARGS…` with its own compile cache directory, and the compiler and inlining settings
/// left at their defaults whatever the environment running the tests says.
fn gojs_in(cache: &Path, args: &[&str]) -> crate::harness::Outcome {
    let mut cmd = Command::new(gojs());
    cmd.env("GOJS_CACHE_DIR", cache)
        .env_remove("GOJS_COMPILER")
        .env_remove("GOJS_INLINE")
        .args(args);
    run(cmd, b"")
}

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

fn pending(dir: &Path) -> Vec<PathBuf> {
    files(dir, ".wasm")
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".pending-")
        })
        .collect()
}

const HELLO: &str = "hello, world\nargc: 1\narg0-nonempty: true\n";

fn hello() -> String {
    Go::path().build("hello").to_string_lossy().into_owned()
}

#[test]
fn artifact_runs_like_the_module_and_damage_is_refused() {
    let wasm = hello();
    let dir = fresh_scratch_dir("artifact");
    let cache = dir.join("cache");
    let expected = gojs_in(&cache, &["run", "--compiler=cranelift", &wasm, "a", "b"]);
    assert_eq!(expected.code, Some(0), "{}", expected.stderr());

    for compiler in ["cranelift", "winch"] {
        let art = dir.join(format!("hello-{compiler}.cwasm"));
        let art_s = art.to_string_lossy().into_owned();
        let o = gojs_in(
            &cache,
            &[
                "compile",
                &format!("--compiler={compiler}"),
                &wasm,
                "-o",
                &art_s,
            ],
        );
        assert_eq!(o.code, Some(0), "{}", o.stderr());
        assert!(o.stdout.is_empty() && o.stderr.is_empty());
        // Whatever compiler the run asks for, the artifact's own code runs.
        for run_with in [
            "--compiler=cranelift",
            "--compiler=winch",
            "--compiler=auto",
        ] {
            let got = gojs_in(&cache, &["run", run_with, &art_s, "a", "b"]);
            assert_eq!(got, expected, "{compiler} artifact run with {run_with}");
        }
    }

    let good = std::fs::read(dir.join("hello-cranelift.cwasm")).unwrap();
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 1;
    let damaged = [
        ("truncated", good[..good.len() / 3].to_vec()),
        ("flipped", flipped),
        (
            "header-and-trailer",
            [&good[..64], &good[good.len() - 40..]].concat(),
        ),
        ("elf-magic-only", b"\x7fELF".to_vec()),
    ];
    for (name, bytes) in damaged {
        let p = dir.join(format!("{name}.cwasm"));
        std::fs::write(&p, bytes).unwrap();
        let o = gojs_in(&cache, &["run", &p.to_string_lossy()]);
        assert_eq!(o.code, Some(1), "{name}: {}", o.stderr());
        assert!(o.stdout.is_empty(), "{name}");
        let err = o.stderr();
        assert!(
            err.starts_with("gojs: cannot load compiled artifact") && err.lines().count() == 1,
            "{name}: {err}"
        );
    }

    let o = gojs_in(&cache, &["compile", "/etc/hostname", "-o", "/dev/null"]);
    assert_eq!(o.code, Some(1));
    assert!(
        o.stderr().contains("not a WebAssembly module"),
        "{}",
        o.stderr()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `-o` naming a pipe or a device (`/dev/null`) writes the artifact into it: an artifact is
/// otherwise renamed into place, which would replace the device with a file.
#[test]
fn compile_writes_into_a_pipe_without_replacing_it() {
    use std::io::Read;
    use std::os::unix::fs::FileTypeExt;
    let wasm = hello();
    let dir = fresh_scratch_dir("compile-pipe");
    let fifo = dir.join("artifact.pipe");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            std::fs::File::open(fifo)
                .unwrap()
                .read_to_end(&mut bytes)
                .unwrap();
            bytes
        })
    };
    let o = gojs_in(&dir, &["compile", &wasm, "-o", &fifo.to_string_lossy()]);
    assert_eq!(o.code, Some(0), "{}", o.stderr());
    // (Before the reader is joined: it waits for ever on a pipe nobody opened.)
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    let bytes = reader.join().unwrap();
    assert!(
        bytes.len() > 1 << 20,
        "{} bytes through the pipe",
        bytes.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compile_fills_the_cache_and_runs_use_it() {
    let wasm = hello();
    let dir = fresh_scratch_dir("compile-cache");
    let o = gojs_in(&dir, &["compile", &wasm]);
    assert_eq!(o.code, Some(0), "{}", o.stderr());
    let entries = files(&dir, ".cwasm");
    assert_eq!(entries.len(), 1, "{entries:?}");
    let before = std::fs::read(&entries[0]).unwrap();

    // A hit: nothing is queued for a background compile and the entry is not rewritten.
    let o = gojs_in(&dir, &["run", &wasm]);
    assert_eq!(o.stdout(), HELLO, "{}", o.stderr());
    assert!(pending(&dir).is_empty());
    assert_eq!(std::fs::read(&entries[0]).unwrap(), before);

    // Compiled again: nothing to do.
    let o = gojs_in(&dir, &["compile", &wasm]);
    assert_eq!(o.code, Some(0), "{}", o.stderr());
    assert_eq!(files(&dir, ".cwasm"), entries);

    // A damaged entry is dropped and recompiled, never loaded (a run compiles Cranelift's
    // plain code; `gojs compile` the code with inlining, in the same entry as before).
    std::fs::write(&entries[0], &before[..before.len() - 1]).unwrap();
    let o = gojs_in(&dir, &["run", "--compiler=cranelift", &wasm]);
    assert_eq!(o.stdout(), HELLO, "{}", o.stderr());
    assert!(!entries[0].exists());
    assert_eq!(files(&dir, ".cwasm").len(), 1);
    std::fs::write(&entries[0], &before[..before.len() - 1]).unwrap();
    let o = gojs_in(&dir, &["compile", &wasm]);
    assert_eq!(o.code, Some(0), "{}", o.stderr());
    assert_eq!(std::fs::read(&entries[0]).unwrap().len(), before.len());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn auto_runs_at_once_and_fills_the_cache_in_the_background() {
    let wasm = hello();
    let dir = fresh_scratch_dir("auto");
    let o = gojs_in(&dir, &["run", &wasm]);
    assert_eq!(o.stdout(), HELLO, "{}", o.stderr());
    // The first run split the module and cached nothing itself; it queued the module for the
    // background filler (which may be done already), which caches Winch's code for the whole
    // module first, then Cranelift's.
    assert!(
        !pending(&dir).is_empty() || !files(&dir, ".cwasm").is_empty(),
        "nothing queued or cached"
    );
    let o = gojs_in(&dir, &["run", &wasm]);
    assert_eq!(o.stdout(), HELLO, "{}", o.stderr());
    // The filler runs at idle priority: give it time on a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(600);
    while !(pending(&dir).is_empty() && files(&dir, ".cwasm").len() == 1) {
        assert!(
            Instant::now() < deadline,
            "the background compile did not finish: {:?}",
            std::fs::read_dir(&dir).unwrap().collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Cranelift's entry replaced Winch's. The next run loads it: nothing more is queued.
    let o = gojs_in(&dir, &["run", &wasm]);
    assert_eq!(o.stdout(), HELLO, "{}", o.stderr());
    assert!(pending(&dir).is_empty());
    assert_eq!(files(&dir, ".cwasm").len(), 1);

    // A first run compiled whole writes Winch's code itself, on a helper thread its exit waits
    // for: the entry is there the moment the run is over.
    let whole = dir.join("whole");
    let mut cmd = Command::new(gojs());
    cmd.env("GOJS_CACHE_DIR", &whole)
        .env("GOJS_SPLIT", "off")
        .env_remove("GOJS_COMPILER")
        .args(["run", &wasm]);
    let o = run(cmd, b"");
    assert_eq!(o.stdout(), HELLO, "{}", o.stderr());
    assert!(
        !files(&whole, ".cwasm").is_empty(),
        "Winch's code not written by exit"
    );

    // Without a cache, auto is Winch (split): nothing is written anywhere.
    let empty = dir.join("unused");
    let o = gojs_in(&empty, &["run", "--no-cache", &wasm]);
    assert_eq!(o.stdout(), HELLO, "{}", o.stderr());
    assert!(!empty.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A split first run caches its primary's code and the split's plan, and the runs that come
/// before the background filler has cached code for the whole module load them instead of
/// making the split and compiling it again; a damaged one is made again; the filler removes
/// them once Cranelift's code is cached.
#[test]
fn split_runs_cache_their_primary_until_the_whole_module_is_compiled() {
    let wasm = hello();
    let dir = fresh_scratch_dir("primary");
    std::fs::create_dir_all(&dir).unwrap();
    // Holding the filler's lock keeps the background compile from starting: only what the
    // runs themselves write appears.
    let lock = lock_filler(&dir);
    let primaries = || files(&dir, ".cwasm");

    let o = gojs_in(&dir, &["run", &wasm]);
    assert_eq!(o.stdout(), HELLO, "{}", o.stderr());
    let cached = primaries();
    assert_eq!(cached.len(), 1, "{cached:?}");
    let primary = cached[0].clone();
    assert!(
        primary.to_string_lossy().contains(".primary-"),
        "{primary:?}"
    );
    let len = std::fs::metadata(&primary).unwrap().len();

    // With the split's plan, so that the next runs don't make the split again.
    let plans = || {
        files(&dir, "")
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(".primary-plan-"))
            .collect::<Vec<_>>()
    };
    assert_eq!(plans().len(), 1, "no plan");
    let logged_run = || hello_logged(&dir, &wasm, Some("debug"));

    // The next run loads it (a load marks the entry used), resumes the split and writes
    // nothing new.
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    let age = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    std::fs::File::options()
        .append(true)
        .open(&primary)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let log = logged_run();
    assert!(log.contains("split: resumed"), "{log}");
    assert_eq!(primaries(), std::slice::from_ref(&primary));
    assert!(age(&primary) > old, "the cached primary was not loaded");

    // A damaged plan: the split is made again, the primary still loaded, the plan rewritten.
    let plan = plans()[0].clone();
    let good = std::fs::read(&plan).unwrap();
    let mut bad = good.clone();
    bad[10] ^= 1;
    std::fs::write(&plan, &bad).unwrap();
    let log = logged_run();
    assert!(!log.contains("split: resumed"), "{log}");
    assert!(
        log.contains("the first part's code from the cache"),
        "{log}"
    );
    assert_eq!(std::fs::read(&plan).unwrap(), good);

    // A damaged entry is compiled again and replaced.
    let mut bytes = std::fs::read(&primary).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&primary, &bytes).unwrap();
    let o = gojs_in(&dir, &["run", &wasm]);
    assert_eq!(o.stdout(), HELLO, "{}", o.stderr());
    assert_eq!(primaries(), std::slice::from_ref(&primary));
    assert_eq!(std::fs::metadata(&primary).unwrap().len(), len);
    assert_ne!(std::fs::read(&primary).unwrap(), bytes, "not rewritten");

    // The filler, let go, caches the whole module's code and removes the primary. (The
    // first run's filler, refused the lock, may still be starting: either does the work.)
    drop(lock);
    let queued = pending(&dir);
    assert_eq!(queued.len(), 1, "{queued:?}");
    let mut cmd = Command::new(gojs());
    cmd.env("GOJS_FILL_CACHE_FROM", "1").arg(&queued[0]);
    let o = run(cmd, b"");
    assert_eq!(o.code, Some(0), "{}", o.stderr());
    wait_for_filler(&dir);
    let left = primaries();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(!left[0].to_string_lossy().contains(".primary-"), "{left:?}");
    assert!(plans().is_empty(), "{:?}", plans());
    let o = gojs_in(&dir, &["run", &wasm]);
    assert_eq!(o.stdout(), HELLO, "{}", o.stderr());
    assert_eq!(primaries(), left);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The one entry a run with `--compiler=cranelift` left in `cache`, moved to `aside` (the test
/// puts it back when it likes); returns where it was.
fn set_aside(cache: &Path, aside: &Path) -> PathBuf {
    let cached = files(cache, ".cwasm");
    assert_eq!(cached.len(), 1, "{cached:?}");
    std::fs::rename(&cached[0], aside).unwrap();
    cached[0].clone()
}

/// Put the code set aside at `entry` whole, as the background compile writes it (a rename).
fn land(aside: &Path, entry: &Path) {
    let landing = aside.with_extension("landing");
    std::fs::copy(aside, &landing).unwrap();
    std::fs::rename(&landing, entry).unwrap();
}

/// `child`'s stderr, line by line, as it writes it (and the thread reading it).
fn log_lines(
    child: &mut std::process::Child,
) -> (
    std::sync::mpsc::Receiver<String>,
    std::thread::JoinHandle<()>,
) {
    use std::io::BufRead;
    let (lines, log) = std::sync::mpsc::channel();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        for line in stderr.lines() {
            let _ = lines.send(line.unwrap());
        }
    });
    (log, reader)
}

/// Runs of the `tierup` fixture (`wasm`) that move to Cranelift's code midway, with the
/// compile cache `dir` (whose background compile the caller holds off).
struct Mover {
    dir: PathBuf,
    wasm: String,
    want: String,
    /// Where a run looks for Cranelift's code, and the code, set aside.
    entry: PathBuf,
    aside: PathBuf,
}

impl Mover {
    /// Compile the module with Cranelift into the cache, and set the code aside.
    fn new(dir: &Path, wasm: &str) -> Mover {
        let want =
            std::fs::read_to_string(crate::harness::fixtures_dir().join("tierup/want.stdout"))
                .unwrap();
        let mut cmd = Command::new(gojs());
        cmd.env("GOJS_CACHE_DIR", dir)
            .env("GOJS_INLINE", "off")
            .env_remove("GOJS_COMPILER")
            .args(["run", "--compiler=cranelift", wasm]);
        let o = run(cmd, b"go\n");
        assert_eq!(o.stdout(), want, "{}", o.stderr());
        let aside = dir.join("aside");
        let entry = set_aside(dir, &aside);
        Mover {
            dir: dir.to_path_buf(),
            wasm: wasm.to_string(),
            want,
            entry,
            aside,
        }
    }

    /// A run (`GOJS_SPLIT=split`, `GOJS_TIER=tier`) during which Cranelift's code lands in
    /// the cache while the program waits on stdin; its output checked, its log returned.
    fn run(&self, split: &str, tier: Option<&str>) -> String {
        use std::io::{BufRead, Write};
        let mut child = Command::new(gojs())
            .env("GOJS_CACHE_DIR", &self.dir)
            .env("GOJS_SPLIT", split)
            .env("GOJS_LOG", "debug")
            .env_remove("GOJS_COMPILER")
            .envs(tier.map(|t| ("GOJS_TIER", t)))
            .args(["run", &self.wasm])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        assert_eq!(first, "ready\n");
        let (log, reader) = log_lines(&mut child);
        let mut stderr = String::new();
        // Winch's code runs; Cranelift's arrives (as the filler would write it). Once the run
        // has loaded it (or, not tiering up, a moment later), the program goes on.
        land(&self.aside, &self.entry);
        let deadline = Instant::now() + Duration::from_secs(if tier.is_some() { 1 } else { 60 });
        while let Ok(line) = log.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            stderr += &line;
            stderr += "\n";
            if line.contains("Cranelift's code from the cache") {
                break;
            }
        }
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
        let status = child.wait().unwrap();
        reader.join().unwrap();
        stderr.extend(log.try_iter().map(|l| l + "\n"));
        assert_eq!(status.code(), Some(0), "{stderr}");
        assert_eq!(first + &rest, self.want, "{stderr}");
        std::fs::remove_file(&self.entry).unwrap();
        stderr
    }
}

/// A program running Winch's code (for the whole module, or split) moves to Cranelift's once
/// that is in the cache: the `tierup` fixture waits for a line on stdin while the test puts Cranelift's code in place, then works
/// with goroutines, timers, the heap and JS values, and must print what it prints under Node.
/// A run with `GOJS_TIER=off` stays with Winch's code.
#[test]
fn a_running_program_moves_to_cranelift_s_code() {
    let wasm = Go::path().build("tierup").to_string_lossy().into_owned();
    let dir = fresh_scratch_dir("move");
    // Only the runs write to the cache: the background compile waits for this lock.
    let lock = lock_filler(&dir);
    let mover = Mover::new(&dir, &wasm);
    let moving_run = |split: &str, tier: Option<&str>| mover.run(split, tier);
    let log = moving_run("off", None);
    assert!(log.contains("compiled WinchWhole"), "{log}");
    assert!(
        log.contains(&format!("waiting for {}", mover.entry.display())),
        "{:?} {log}",
        mover.entry
    );
    assert!(log.contains("tier-up: moved to Cranelift's code"), "{log}");
    // From a split module (its other functions' code compiling, or compiled, on a thread):
    // without Winch's code for the whole module, which the first run cached.
    for f in files(&dir, ".cwasm") {
        std::fs::remove_file(f).unwrap();
    }
    let log = moving_run("on", None);
    assert!(log.contains("functions first"), "{log}");
    assert!(log.contains("tier-up: moved to Cranelift's code"), "{log}");
    // (Compiled again: the rewrite differs without the tier pass.)
    let log = moving_run("off", Some("off"));
    assert!(log.contains("compiled WinchWhole"), "{log}");
    assert!(!log.contains("tier-up"), "{log}");
    drop(lock);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The move relies on Go's own layout (the running `g`, its `stackguard0` and `m`, the loop
/// and its globals): binaries of Go 1.19 (module `go`) and 1.21 (the first with module `gojs`)
/// move as the Go on PATH's do, from a whole module's code and from a split one's.
#[test]
fn programs_of_older_go_move_too() {
    for go in [Go::debian(19), Go::debian(21)] {
        let wasm = go.build("tierup").to_string_lossy().into_owned();
        let dir = fresh_scratch_dir("move-older-go");
        let lock = lock_filler(&dir);
        let mover = Mover::new(&dir, &wasm);
        for split in ["off", "on"] {
            // Nothing but the code set aside: the run compiles (whole or split) with Winch.
            for f in files(&dir, ".cwasm") {
                std::fs::remove_file(f).unwrap();
            }
            let log = mover.run(split, None);
            assert!(
                log.contains("tier-up: moved to Cranelift's code"),
                "Go {}, GOJS_SPLIT={split}: {log}",
                go.version
            );
        }
        drop(lock);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A first run compiles the program's own functions (package `main`) with Cranelift, in Winch's
/// calling convention, and puts that code in place before `main.main` is called: `hotmain`'s
/// work (recursion, loops, methods `sort` calls through an interface, panics recovered in
/// main's code, goroutines) runs there, with Node's output, built by Go 1.26, 1.21 and 1.19
/// (module `go`). With `GOJS_HOT=off` it doesn't, and the output is the same.
#[test]
fn a_first_run_runs_its_own_functions_in_cranelift_s_code() {
    let want = std::fs::read_to_string(crate::harness::fixtures_dir().join("hotmain/want.stdout"))
        .unwrap();
    let runs = [
        (Go::path(), None, true),
        (Go::path(), Some("off"), false),
        (Go::debian(21), None, true),
        (Go::debian(19), None, true),
    ];
    for (go, hot, placed) in runs {
        let wasm = go.build("hotmain").to_string_lossy().into_owned();
        let o = held_first_run(
            "hot",
            &wasm,
            &hot.map(|h| ("GOJS_HOT", h)).into_iter().collect::<Vec<_>>(),
            &[],
        );
        let log = o.stderr();
        assert_eq!(o.code, Some(0), "{log}");
        assert_eq!(o.stdout(), want, "{log}");
        let line = "Cranelift's code for hot functions in place";
        assert_eq!(
            log.contains(line),
            placed,
            "Go {}, GOJS_HOT={hot:?}: {log}",
            go.version
        );
        if placed {
            // Before Go started: the split's other slots are filled after it.
            let at = log.find(line).unwrap();
            assert!(
                at < log.find("the other functions' slots filled").unwrap(),
                "{log}"
            );
        }
        assert!(!log.contains("tier-up: moved"), "{log}");
    }
    // The rest of the module comes while the program sleeps, and a function it calls then
    // instantiates it: its element segment takes every slot, and the parts placed before it
    // must be placed again right after it (the work after the pause runs in them).
    let wasm = Go::path().build("hotmain").to_string_lossy().into_owned();
    let mut rest_came = false;
    for pause in ["1000", "4000"] {
        let o = held_first_run("hot-rest", &wasm, &[], &["3", pause]);
        let log = o.stderr();
        assert_eq!(o.code, Some(0), "{log}");
        assert!(
            o.stdout() == want.repeat(3) + "AFTER A PAUSE\n" + &want,
            "{log}"
        );
        if let Some(rest) = log.find("the rest of the module in place") {
            assert!(
                log[rest..].contains("of Cranelift's code placed again after the rest"),
                "{log}"
            );
            rest_came = true;
            break;
        }
    }
    assert!(rest_came, "the rest of the module never came");
}

/// A split first run of `wasm` with `args`, logged (`GOJS_LOG=debug`), in a fresh cache
/// directory (named after `label`) whose background compile is held off, so that the run stays
/// on the code it starts with; the default compiler, split and parts, but for `env`.
fn held_first_run(
    label: &str,
    wasm: &str,
    env: &[(&str, &str)],
    args: &[&str],
) -> crate::harness::Outcome {
    let dir = fresh_scratch_dir(label);
    let _lock = lock_filler(&dir);
    let mut cmd = Command::new(gojs());
    cmd.env("GOJS_CACHE_DIR", &dir)
        .env("GOJS_LOG", "debug")
        .env_remove("GOJS_COMPILER")
        .env_remove("GOJS_SPLIT")
        .env_remove("GOJS_HOT")
        .env_remove("GOJS_SAMPLE")
        .envs(env.iter().copied())
        .arg("run")
        .arg(wasm)
        .args(args);
    run(cmd, b"")
}

/// A first run samples where its time goes and has Cranelift compile that too: `hotlib` spends
/// its time in `hash/crc32`'s loop, which it reaches only through a function value, so neither
/// its own functions' part nor the libraries' (found through direct calls) holds it; a round of
/// samples must find it and put Cranelift's code for it in place. `GOJS_SAMPLE=off` takes no
/// samples. The output is the same either way.
#[test]
fn a_first_run_compiles_where_its_time_goes() {
    let want =
        std::fs::read_to_string(crate::harness::fixtures_dir().join("hotlib/want.stdout")).unwrap();
    for (go, sample) in [
        (Go::path(), None),
        (Go::path(), Some("off")),
        (Go::debian(21), None),
        (Go::debian(19), None),
    ] {
        let wasm = go.build("hotlib").to_string_lossy().into_owned();
        // Long enough for the parts before the rounds on a loaded machine.
        let o = held_first_run(
            "sampled",
            &wasm,
            &sample
                .map(|s| ("GOJS_SAMPLE", s))
                .into_iter()
                .collect::<Vec<_>>(),
            &["5000"],
        );
        let log = o.stderr();
        assert_eq!(o.code, Some(0), "{log}");
        assert_eq!(o.stdout(), want, "{log}");
        let round = log
            .lines()
            .find(|l| l.contains("sampled hot") && l.contains("crc32"));
        if sample.is_some() {
            assert!(!log.contains("sampled hot"), "{log}");
            continue;
        }
        let Some(round) = round else {
            panic!("Go {}: no round found crc32's loop: {log}", go.version);
        };
        // Its code compiled and placed after it.
        let after = &log[log.find(round).unwrap()..];
        assert!(
            after.contains("Cranelift's code for hot functions in place"),
            "Go {}: {log}",
            go.version
        );
        assert!(!log.contains("tier-up: moved"), "{log}");
    }
}

/// A first run of a program of goroutines has Cranelift compile the scheduler's functions
/// from the start (not only once the samples find them): `goroutines` sends on channels,
/// starts goroutines, selects and waits on a `WaitGroup` and a mutex, so its part holds the
/// functions behind all of those; hello world starts none and gets no such part. Without
/// samples, so that the part is picked before Go starts.
#[test]
fn a_first_run_of_goroutines_compiles_the_scheduler() {
    for go in [Go::path(), Go::debian(21), Go::debian(19)] {
        let wasm = go.build("goroutines").to_string_lossy().into_owned();
        let want =
            std::fs::read_to_string(crate::harness::fixtures_dir().join("goroutines/want.stdout"))
                .unwrap();
        let o = held_first_run(
            "scheduler",
            &wasm,
            &[("GOJS_LOG", "trace"), ("GOJS_SAMPLE", "off")],
            &[],
        );
        let log = o.stderr();
        assert_eq!(o.code, Some(0), "{log}");
        assert_eq!(o.stdout(), want, "{log}");
        let part = log
            .lines()
            .find(|l| l.contains("TRACE split: the scheduler's part: "))
            .unwrap_or_else(|| panic!("Go {}: no scheduler's part: {log}", go.version));
        for name in [
            "runtime.gopark",
            "runtime.schedule",
            "runtime.chansend",
            "runtime.chanrecv",
            "runtime.newproc1",
            "runtime.semacquire1",
            "runtime.selectgo",
        ] {
            assert!(
                part.split(": ")
                    .last()
                    .unwrap()
                    .split(", ")
                    .any(|n| n == name),
                "Go {}: {name} missing from {part}",
                go.version
            );
        }
        let hello = go.build("hello").to_string_lossy().into_owned();
        let o = held_first_run("scheduler-hello", &hello, &[("GOJS_SAMPLE", "off")], &[]);
        assert_eq!(o.code, Some(0), "{}", o.stderr());
        assert!(!o.stderr().contains("scheduler's part"), "{}", o.stderr());
    }
}

/// Parts of Cranelift's code that become ready while Go is inside an import's call are put in
/// place from the call: `hotcall` calls a `js.FuncOf` function from Go for 5 s (JS calls Go
/// back inside Go's call) and never returns to the event loop meanwhile, so there is no stop
/// to put the libraries' part (its callback's `crc32`) in place at.
/// The rest of a split module compiles only a second after the first call outside the
/// primary (or at once from the sixteenth part): a short run that calls a few functions
/// outside it gets parts for them and never compiles the rest; one that keeps calling more
/// (all of it cold) compiles the rest at its sixteenth part.
#[test]
fn a_short_first_run_leaves_the_rest_of_the_module_alone() {
    const REST: &str = "split: compiling the whole module in the background";
    let wasm = Go::path()
        .build("goroutines")
        .to_string_lossy()
        .into_owned();
    let o = held_first_run("rest-later", &wasm, &[], &[]);
    let log = o.stderr();
    assert_eq!(o.code, Some(0), "{log}");
    assert!(log.contains("split: a part for "), "no part: {log}");
    assert!(!log.contains(REST), "{log}");
    let o = held_first_run("rest-hurried", &hello(), &[("GOJS_SPLIT", "all-cold")], &[]);
    let log = o.stderr();
    assert_eq!(o.stdout(), HELLO, "{log}");
    let rest = log.find(REST).unwrap_or_else(|| panic!("no rest: {log}"));
    // Logged by the compile's thread, which may see the sixteenth part a few parts late.
    assert!(
        log[..rest].matches("split: a part for ").count() >= 16,
        "{log}"
    );
}

#[test]
fn parts_are_placed_during_calls_into_the_host() {
    let wasm = Go::path().build("hotcall").to_string_lossy().into_owned();
    let want = std::fs::read_to_string(crate::harness::fixtures_dir().join("hotcall/want.stdout"))
        .unwrap();
    let o = held_first_run("hotcall", &wasm, &[("GOJS_SAMPLE", "off")], &["5000"]);
    let log = o.stderr();
    assert_eq!(o.code, Some(0), "{log}");
    assert_eq!(o.stdout(), want, "{log}");
    assert!(
        log.contains("Cranelift's code for hot functions in place, in a call"),
        "{log}"
    );
}

/// A program that sleeps moves while the event loop waits for its timer, not when the timer
/// fires (which would make it late by as long as the move takes): Cranelift's code lands in the
/// cache while `tieridle` sleeps for 2 s, and the move must come long before the sleep ends.
#[test]
fn a_sleeping_program_moves_while_it_sleeps() {
    use std::io::BufRead;
    let wasm = Go::path().build("tieridle").to_string_lossy().into_owned();
    let want = std::fs::read_to_string(crate::harness::fixtures_dir().join("tieridle/want.stdout"))
        .unwrap();
    let dir = fresh_scratch_dir("move-idle");
    // Only the runs write to the cache: the background compile waits for this lock.
    let lock = lock_filler(&dir);
    let mut cmd = Command::new(gojs());
    cmd.env("GOJS_CACHE_DIR", &dir)
        .env("GOJS_INLINE", "off")
        .env_remove("GOJS_COMPILER")
        .args(["run", "--compiler=cranelift", &wasm]);
    let o = run(cmd, b"");
    assert_eq!(o.stdout(), want, "{}", o.stderr());
    let aside = dir.join("aside");
    set_aside(&dir, &aside);

    let mut child = Command::new(gojs())
        .env("GOJS_CACHE_DIR", &dir)
        .env("GOJS_LOG", "debug")
        .env_remove("GOJS_COMPILER")
        .env_remove("GOJS_TIER")
        .args(["run", &wasm])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert_eq!(first, "ready\n");
    let (log, reader) = log_lines(&mut child);
    let mut seen = String::new();
    let mut placed = None;
    let mut moved = None;
    while let Ok(line) = log.recv_timeout(Duration::from_secs(10)) {
        seen += &line;
        seen += "\n";
        if let Some(entry) = line.split("waiting for ").nth(1) {
            land(&aside, Path::new(entry));
            placed = Some(Instant::now());
        }
        if line.contains("tier-up: moved to Cranelift's code") {
            moved = placed.map(|p| p.elapsed());
            break;
        }
    }
    let moved = moved.unwrap_or_else(|| panic!("no move:\n{seen}"));
    // Moving at the timer would take the rest of the 2 s sleep.
    assert!(
        moved < Duration::from_millis(1500),
        "moved after {moved:?}:\n{seen}"
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "{seen}");
    assert_eq!(first + &rest, want, "{seen}");
    drop(lock);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A big real program moves midway and still works: `archive/tar`'s tests (an 8 MB test
/// binary: files, goroutines, timers, the garbage collector) run under `go_js_wasm_exec` from
/// Winch's code, Cranelift's code lands in the cache as soon as the run says it waits for it,
/// and every test must still pass.
#[test]
fn std_tests_pass_after_moving_to_cranelift_s_code_midway() {
    let dir = fresh_scratch_dir("move-std");
    let bin = std_test_binary(&dir, "archive/tar");
    let bin = bin.to_string_lossy().into_owned();
    let package = Go::path().goroot.join("src/archive/tar");
    let cache = dir.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    // Only the runs write to the cache: the background compile waits for this lock.
    let lock = lock_filler(&cache);
    // Cranelift's code for the module, set aside (a test binary never inlines).
    let mut cmd = Command::new(gojs());
    cmd.env("GOJS_CACHE_DIR", &cache)
        .env_remove("GOJS_COMPILER")
        .env_remove("GOJS_INLINE")
        .current_dir(&package)
        .args([
            "run",
            "--allow-all",
            "--compiler=cranelift",
            &bin,
            "-test.run=^$",
        ]);
    let o = run(cmd, b"");
    assert_eq!(o.code, Some(0), "{}\n{}", o.stdout(), o.stderr());
    let aside = dir.join("aside");
    set_aside(&cache, &aside);

    let mut child = Command::new(env!("CARGO_BIN_EXE_go_js_wasm_exec"))
        .env("GOJS_CACHE_DIR", &cache)
        .env("GOJS_LOG", "debug")
        .env_remove("GOJS_COMPILER")
        .env_remove("GOJS_TIER")
        .current_dir(&package)
        .args([&bin, "-test.short", "-test.v"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).unwrap();
        s
    });
    let (lines, reader) = log_lines(&mut child);
    let mut log = String::new();
    for line in lines {
        if let Some(entry) = line.split("waiting for ").nth(1) {
            land(&aside, Path::new(entry));
        }
        log += &line;
        log += "\n";
    }
    reader.join().unwrap();
    let status = child.wait().unwrap();
    let out = out.join().unwrap();
    assert_eq!(status.code(), Some(0), "{out}\n{log}");
    assert!(whole_first_part(&log), "{log}");
    assert!(log.contains("tier-up: moved to Cranelift's code"), "{log}");
    assert_eq!(out.lines().last(), Some("PASS"), "{out}");
    assert!(!out.contains("--- FAIL"), "{out}");
    // The whole run, not a truncated one.
    assert!(out.matches("--- PASS").count() > 20, "{out}");
    drop(lock);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Run hello world (`wasm`) with the compile cache `cache` and `GOJS_LOG=level` (unset if
/// `None`); its output checked, its stderr returned.
fn hello_logged(cache: &Path, wasm: &str, level: Option<&str>) -> String {
    let mut cmd = Command::new(gojs());
    cmd.env("GOJS_CACHE_DIR", cache)
        .env_remove("GOJS_COMPILER")
        .env_remove("GOJS_LOG")
        .args(["run", wasm]);
    if let Some(level) = level {
        cmd.env("GOJS_LOG", level);
    }
    let o = run(cmd, b"");
    assert_eq!(o.stdout(), HELLO, "{}", o.stderr());
    o.stderr()
}

/// `GOJS_LOG=debug` says what a run loaded or compiled and how long it took; without it the
/// runtime logs nothing, and a level it doesn't know is named as such.
#[test]
fn gojs_log_shows_what_runs_compile_and_load() {
    let wasm = hello();
    let dir = fresh_scratch_dir("log");
    let logged = |level| hello_logged(&dir, &wasm, level);
    let first = logged(Some("debug"));
    for line in [
        "not in the cache",
        "split: ",
        "compiled WinchPart",
        "cache: wrote",
    ] {
        assert!(first.contains(line), "no {line:?} in:\n{first}");
    }
    // Hello world never calls outside its first part, so the rest of the module is never
    // compiled in the run; a program that does (all of it cold) starts compiling it.
    const REST: &str = "split: compiling the whole module in the background";
    assert!(!first.contains(REST), "{first}");
    let mut cmd = Command::new(gojs());
    cmd.env("GOJS_LOG", "debug")
        .env("GOJS_SPLIT", "all-cold")
        .env_remove("GOJS_COMPILER")
        .args(["run", "--no-cache", &wasm]);
    let o = run(cmd, b"");
    assert_eq!(o.stdout(), HELLO, "{}", o.stderr());
    assert!(o.stderr().contains(REST), "{}", o.stderr());
    // The first part's code is cached, whatever the filler has done by now: this run loads
    // the whole module's code, or the first part's.
    let second = logged(Some("DEBUG"));
    assert!(
        second.contains("from the cache"),
        "nothing loaded from the cache:\n{second}"
    );
    assert!(!second.contains("compiled WinchPart"), "{second}");
    assert_eq!(logged(None), "");
    assert_eq!(logged(Some("warn")), "");
    assert!(logged(Some("loud")).contains("GOJS_LOG=loud is not a level"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Wait (at most 10 minutes: the filler runs at idle priority) until nothing is queued in `dir`.
fn wait_for_filler(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while !pending(dir).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the background compile did not finish: {:?}",
            std::fs::read_dir(dir).unwrap().collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A run that keeps a module for 200 ms queues its compile with inlining; the runs after load
/// that code (their trap's backtrace says so), and short runs never queue it.
#[test]
fn runs_of_200_ms_tier_up_to_inlined_code() {
    let wasm = Go::path().build("trap").to_string_lossy().into_owned();
    let inlined = "GOJS_INLINE=off keeps them";
    let dir = fresh_scratch_dir("tier-up");
    let trap = |args: &[&str]| {
        let o = gojs_in(
            &dir,
            &[&["run", "--compiler=cranelift", &wasm], args].concat(),
        );
        assert_eq!(o.code, Some(1), "{}", o.stderr());
        assert!(o.stderr().contains("main.main"), "{}", o.stderr());
        o.stderr()
    };
    // Short runs: plain code, cached by the first, and nothing queued.
    assert!(!trap(&[]).contains(inlined));
    assert!(!trap(&[]).contains(inlined));
    assert!(pending(&dir).is_empty());
    assert_eq!(files(&dir, ".cwasm").len(), 1);
    // A run of 400 ms queues the inlined compile, which then replaces the plain code.
    assert!(!trap(&["400"]).contains(inlined));
    wait_for_filler(&dir);
    assert_eq!(files(&dir, ".cwasm").len(), 1);
    assert!(trap(&[]).contains(inlined));
    // With GOJS_INLINE=off runs keep to plain code (compiled again, since it was replaced).
    let mut cmd = Command::new(gojs());
    cmd.env("GOJS_CACHE_DIR", &dir)
        .env("GOJS_INLINE", "off")
        .args(["run", "--compiler=cranelift", &wasm, "400"]);
    let o = run(cmd, b"");
    assert!(!o.stderr().contains(inlined), "{}", o.stderr());
    wait_for_filler(&dir);
    assert_eq!(files(&dir, ".cwasm").len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The js/wasm test binary of std package `pkg`, built into `dir` with the Go on PATH.
fn std_test_binary(dir: &Path, pkg: &str) -> PathBuf {
    let bin = dir.join(format!("{pkg}.test"));
    let mut cmd = Command::new(&Go::path().bin);
    cmd.env("GOOS", "js")
        .env("GOARCH", "wasm")
        .env("GOTOOLCHAIN", "local")
        .args(["test", "-c", "-o"])
        .arg(&bin)
        .arg(pkg);
    let o = run(cmd, b"");
    assert_eq!(o.code, Some(0), "{}", o.stderr());
    bin
}

/// A Go test binary doesn't tier up, however long it runs: `go test` runs each build once.
#[test]
fn test_binaries_do_not_tier_up() {
    let dir = fresh_scratch_dir("no-tier-up");
    let bin = std_test_binary(&dir, "sort");
    // Small enough to tier up if it were a program.
    assert!(std::fs::metadata(&bin).unwrap().len() < 6 << 20);
    let cache = dir.join("cache");
    let bin = bin.to_string_lossy().into_owned();
    let args = [
        "run",
        "--compiler=cranelift",
        &bin,
        "-test.run=^$",
        "-test.bench=SortInt1K$",
        "-test.benchtime=400ms",
    ];
    let started = Instant::now();
    let o = gojs_in(&cache, &args);
    assert_eq!(o.code, Some(0), "{}\n{}", o.stdout(), o.stderr());
    assert!(o.stdout().contains("BenchmarkSortInt1K"), "{}", o.stdout());
    assert!(started.elapsed() > Duration::from_millis(400));
    wait_for_filler(&cache);
    assert_eq!(files(&cache, ".cwasm").len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A test binary's first run compiles the whole module with Winch, its table open to
/// Cranelift's parts: the runtime's, and what the sampled rounds find its tests spending their
/// time in (here `sort`'s benchmark, for 3 s: the rounds come after the runtime's part, which a
/// loaded machine compiles slowly). No function is left out of the first part,
/// so none is compiled on demand.
#[test]
fn a_test_binary_s_first_run_gets_cranelift_s_parts() {
    let dir = fresh_scratch_dir("test-binary-parts");
    let bin = std_test_binary(&dir, "sort").to_string_lossy().into_owned();
    let args = [
        "-test.run=^$",
        "-test.bench=SortInt1K$",
        "-test.benchtime=3s",
    ];
    let o = held_first_run("test-binary-parts-run", &bin, &[], &args);
    let log = o.stderr();
    assert_eq!(o.code, Some(0), "{}\n{log}", o.stdout());
    assert!(o.stdout().contains("BenchmarkSortInt1K"), "{}", o.stdout());
    assert!(whole_first_part(&log), "{log}");
    assert!(log.contains("split: the runtime's part"), "{log}");
    assert!(log.contains("split: round 1: "), "{log}");
    assert!(
        log.contains("Cranelift's code for hot functions in place"),
        "{log}"
    );
    assert!(!log.contains("split: a part for "), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether a first run's log says it compiled every function in its first part, as a test
/// binary's does (`split: N of N functions first`).
fn whole_first_part(log: &str) -> bool {
    log.lines().any(|l| {
        l.split("split: ")
            .nth(1)
            .and_then(|rest| rest.split_once(" functions first"))
            .and_then(|(counts, _)| counts.split_once(" of "))
            .is_some_and(|(a, b)| a == b)
    })
}

/// The lock file runs announce themselves in, under the temporary directory `tmp` (the runs'
/// and fillers' `TMPDIR`).
fn runs_lock(tmp: &Path) -> PathBuf {
    // SAFETY: getuid has no preconditions.
    tmp.join(format!("gojs-runs-{}.lock", unsafe { libc::getuid() }))
}

/// The offset of a lock a run holds on `lock` (module id << 22 | process id), if any.
fn run_lock_holder(lock: &Path) -> Option<i64> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(lock).ok()?;
    // SAFETY: zeroed flock, filled in below; F_OFD_GETLK reads and writes it.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    (r == 0 && fl.l_type != libc::F_UNLCK as libc::c_short).then_some(fl.l_start)
}

/// Lock byte `offset` of `lock`, as a run would.
fn pretend_run(lock: &Path, offset: i64) -> std::fs::File {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock)
        .unwrap();
    // SAFETY: zeroed flock, filled in below; F_OFD_SETLK reads it.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_RDLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = offset;
    fl.l_len = 1;
    assert_eq!(
        unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) },
        0
    );
    file
}

/// CPU time (user + system) of process `pid` so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is the 1st, utime the 12th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<u64> = after
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
    Duration::from_millis(ticks * 1000 / hz.max(1))
}

/// The lock a first run of `args` (a `gojs run` command line) holds at last while it runs, with the
/// temporary directory `tmp` and the compile cache `cache`; checks that it goes with the run.
fn lock_of_first_run(tmp: &Path, cache: &Path, args: &[&std::ffi::OsStr]) -> (Option<i64>, u32) {
    let mut child = Command::new(gojs())
        .env("GOJS_CACHE_DIR", cache)
        .env("TMPDIR", tmp)
        .env_remove("GOJS_COMPILER")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The last lock seen: a run announces itself at once, then says what it waits for once it
    // knows its module.
    let mut seen = None;
    while child.try_wait().unwrap().is_none() {
        if let Some(holder) = run_lock_holder(&runs_lock(tmp)) {
            seen = Some(holder);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let pid = child.id();
    child.wait().unwrap();
    assert_eq!(
        run_lock_holder(&runs_lock(tmp)),
        None,
        "the lock outlived the run"
    );
    (seen, pid)
}

/// A first run says so while it compiles and runs, and background compiles wait while first
/// runs of other modules follow one another (RATIONALE.md, "Why does the background compile
/// stop while another module's first run compiles and runs?").
#[test]
fn background_compiles_wait_for_first_runs_of_other_modules() {
    let dir = fresh_scratch_dir("courtesy");
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let pid_bits = |offset: i64| offset & ((1 << 22) - 1);

    // A test binary's first run caches its code itself: it waits for no background compile.
    let bin = std_test_binary(&dir, "sort");
    let cache = dir.join("cache");
    let args = [
        "run".as_ref(),
        bin.as_os_str(),
        "-test.run=^$".as_ref(),
        "-test.bench=SortInt1K$".as_ref(),
        "-test.benchtime=300ms".as_ref(),
    ];
    let (seen, pid) = lock_of_first_run(&tmp, &cache, &args);
    assert_eq!(seen, Some(i64::from(pid)));
    wait_for_filler(&cache);
    // A split first run waits for its own module's background compile (id in the high bits).
    let trap = Go::path().build("trap");
    let args = ["run".as_ref(), trap.as_os_str(), "300".as_ref()];
    let (seen, pid) = lock_of_first_run(&tmp, &cache, &args);
    let seen = seen.expect("a split first run holds no lock");
    assert_eq!(pid_bits(seen), i64::from(pid));
    assert!(seen >> 22 > 0, "{seen:#x}");
    wait_for_filler(&cache);

    // A filler with work to do makes (almost) none while other modules' runs follow one
    // another, for longer than one long run (a second) ...
    let queue = dir.join("queue");
    std::fs::create_dir_all(&queue).unwrap();
    let hello = std::fs::read(hello()).unwrap();
    std::fs::write(queue.join(".pending-hello.wasm"), hello).unwrap();
    let lock = runs_lock(&tmp);
    let mut run = Some(pretend_run(&lock, 1_000_001));
    let mut filler = Command::new(gojs())
        .env("GOJS_FILL_CACHE_FROM", "1")
        .env("TMPDIR", &tmp)
        .arg(queue.join(".pending-hello.wasm"))
        .spawn()
        .unwrap();
    let started = cpu_time(filler.id());
    for next in 1_000_002..1_000_012 {
        std::thread::sleep(Duration::from_millis(300));
        // The next run starts before the last one ends.
        let following = pretend_run(&lock, next);
        run = Some(following);
    }
    let during = cpu_time(filler.id()).saturating_sub(started);
    assert!(
        filler.try_wait().unwrap().is_none(),
        "the filler finished while paused"
    );
    assert!(
        during < Duration::from_millis(300),
        "the filler used {during:?} of CPU in 3 s of runs"
    );
    // ... and finishes once they are over.
    drop(run);
    assert!(filler.wait().unwrap().success());
    assert!(pending(&queue).is_empty());
    assert!(!files(&queue, ".cwasm").is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn queued_modules_are_compiled_by_one_filler() {
    // The protocol `--compiler=auto` uses, driven by hand: two queued modules, one filler.
    let dir = fresh_scratch_dir("fill-queue");
    let go = Go::path();
    for name in ["hello", "exitcode"] {
        let bytes = std::fs::read(go.build(name)).unwrap();
        std::fs::write(dir.join(format!(".pending-{name}.wasm")), bytes).unwrap();
    }
    std::fs::write(dir.join(".pending-junk.wasm"), b"not wasm").unwrap();
    let mut cmd = Command::new(gojs());
    cmd.env("GOJS_FILL_CACHE_FROM", "1")
        .arg(dir.join(".pending-hello.wasm"));
    let o = run(cmd, b"");
    assert_eq!(o.code, Some(0), "{}", o.stderr());
    assert!(pending(&dir).is_empty(), "{:?}", pending(&dir));
    assert_eq!(files(&dir, ".cwasm").len(), 2);
    // Both entries are the ones runs look up.
    for name in ["hello", "exitcode"] {
        let o = gojs_in(&dir, &["run", &go.build(name).to_string_lossy()]);
        assert!(o.code.is_some(), "{}", o.stderr());
    }
    assert!(pending(&dir).is_empty());
    assert_eq!(files(&dir, ".cwasm").len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The split reads the calls in Go's function bodies itself, the same as wasmparser reads them,
/// under every Go on this machine (and in a test binary): no body is left to
/// wasmparser, which would make first runs slower.
#[test]
fn the_split_reads_go_s_calls_itself() {
    use crate::harness::Go;
    let dir = fresh_scratch_dir("call-scan");
    let mut modules = vec![std::fs::read(std_test_binary(&dir, "errors")).unwrap()];
    for go in [
        Go::path(),
        Go::debian(19),
        Go::debian(21),
        Go::debian(22),
        Go::debian(23),
    ] {
        modules.push(std::fs::read(go.build("hello")).unwrap());
    }
    for wasm in &modules {
        let (decoded, unknown, differ) = gojs::call_scan_report(wasm).expect("parses");
        assert!(decoded > 1000, "{decoded} bodies");
        assert_eq!((unknown, differ), (0, 0), "of {decoded} bodies");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The hot list (crates/gojs/src/hot_functions.txt) covers hello world and its usual variants
/// under every supported Go that Node can run: their first run compiles about a third of their
/// functions before starting. A program whose own code reaches beyond the list has what it calls
/// compiled first as well; a test binary is compiled whole.
#[test]
fn first_runs_of_hello_world_are_split() {
    use crate::harness::Go;
    let gos = [Go::path(), Go::debian(21), Go::debian(22), Go::debian(23)];
    for go in &gos {
        // The hello fixture: `fmt.Println`, `fmt.Printf` with %d, %v and %q, `os.Args`.
        let wasm = std::fs::read(go.build("hello")).unwrap();
        let (first, later) = gojs::first_run_split(&wasm)
            .unwrap_or_else(|| panic!("{go:?}: hello is compiled whole"));
        let total = first + later;
        assert!(
            first * 2 < total && first > 100,
            "{go:?}: hello compiles {first} of {total} functions first"
        );
    }
    // The cpu fixture's own code calls functions hello world doesn't run (`sort`, `crypto`):
    // they join the first part.
    let hello = std::fs::read(Go::path().build("hello")).unwrap();
    let cpu = std::fs::read(Go::path().build("cpu")).unwrap();
    let (hello_first, _) = gojs::first_run_split(&hello).unwrap();
    let (cpu_first, cpu_later) = gojs::first_run_split(&cpu).expect("cpu is split");
    assert!(
        cpu_first > hello_first + 20 && cpu_later > 100,
        "cpu compiles {cpu_first} functions first (hello {hello_first}), {cpu_later} later"
    );
    let dir = fresh_scratch_dir("test-binary-whole");
    let test = std::fs::read(std_test_binary(&dir, "errors")).unwrap();
    assert_eq!(gojs::first_run_split(&test), None, "a test binary is split");
    // `go test` and `go run` link with -s, without the name section: the names come from
    // Go's own table, and the same functions are picked (a few generic ones are named
    // differently there).
    assert_eq!(
        gojs::first_run_split(&without_names(&test)),
        None,
        "a test binary without names is split"
    );
    for go in &gos {
        let wasm = std::fs::read(go.build("hello")).unwrap();
        let (named, _) = gojs::first_run_split(&wasm).unwrap();
        let (unnamed, _) = gojs::first_run_split(&without_names(&wasm))
            .unwrap_or_else(|| panic!("{go:?}: hello without names is compiled whole"));
        assert!(
            unnamed.abs_diff(named) * 50 <= named,
            "{go:?}: {unnamed} functions first without names, {named} with"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// In a module rewritten for tiering up (crates/gojs/src/tier.rs): how many of its exports are
/// the tier pass's, how often it sets Go's `g` (global 2), how often it records `g` at 0xf08
/// right after, and how often it reads the stop flag at 0xf00.
fn tier_pass_report(wasm: &[u8]) -> (usize, usize, usize, usize) {
    use wasmparser::{Operator, Payload};
    let (mut exports, mut sets, mut records, mut reads) = (0, 0, 0, 0);
    for p in wasmparser::Parser::new(0).parse_all(wasm) {
        match p.unwrap() {
            Payload::ExportSection(r) => {
                for e in r {
                    exports += usize::from(e.unwrap().name.starts_with("gojs."));
                }
            }
            Payload::CodeSectionEntry(body) => {
                let mut ops = body.get_operators_reader().unwrap();
                let mut last_set = false;
                let mut seen = Vec::new();
                while !ops.eof() {
                    let op = ops.read().unwrap();
                    match &op {
                        Operator::GlobalSet { global_index: 2 } => sets += 1,
                        Operator::I64Store { memarg } if memarg.offset == 0xf08 => {
                            records += usize::from(last_set)
                        }
                        Operator::I32Load { memarg } if memarg.offset == 0xf00 => reads += 1,
                        _ => {}
                    }
                    seen.push(matches!(op, Operator::GlobalSet { global_index: 2 }));
                    // `global.set g; i32.const 0; global.get g; i64.store`: the store comes
                    // three operators after the set.
                    last_set = seen.len() >= 3 && seen[seen.len() - 3];
                }
            }
            _ => {}
        }
    }
    (exports, sets, records, reads)
}

/// `wasm` without its name section, as `go test` and `go run` link it (`-ldflags=-s`).
fn without_names(wasm: &[u8]) -> Vec<u8> {
    let mut out = wasm[..8].to_vec();
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        let payload = payload.unwrap();
        if let wasmparser::Payload::CustomSection(c) = &payload
            && c.name() == "name"
        {
            continue;
        }
        if let Some((id, range)) = payload.as_section() {
            out.push(id);
            let mut len = range.len();
            loop {
                let byte = (len & 0x7f) as u8;
                len >>= 7;
                out.push(if len == 0 { byte } else { byte | 0x80 });
                if len == 0 {
                    break;
                }
            }
            out.extend_from_slice(&wasm[range]);
        }
    }
    assert!(out.len() < wasm.len());
    out
}

/// Go clears a large allocation when its heap was used before; gojs's fill (crates/gojs/src/
/// fill.rs) leaves the pages nobody touched to the kernel instead of writing zeros over them.
/// The bigclear fixture clears 256 MiB that it then only reads: gojs's peak RSS stays far below
/// that (~100 MiB; ~280 MiB with `GOJS_FILL=off`), with the fixture's golden output.
#[test]
fn clearing_a_large_block_leaves_fresh_pages_alone() {
    use crate::harness::{Go, assert_golden};
    let wasm = Go::path().build("bigclear");
    // A first run compiles the module (and compiling takes memory of its own): measure the next.
    let warm = std::process::Command::new(crate::harness::gojs())
        .args(["run", "--compiler=cranelift"])
        .arg(&wasm)
        .output()
        .unwrap();
    assert!(warm.status.success(), "{warm:?}");
    let mut cmd = std::process::Command::new(crate::harness::gojs());
    cmd.args(["run", "--compiler=cranelift"]).arg(&wasm);
    let out = crate::harness::fresh_scratch_dir("bigclear").join("stdout");
    #[expect(
        clippy::zombie_processes,
        reason = "reaped by the wait4 below, which also reports its peak RSS"
    )]
    let child = cmd
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    // SAFETY: waiting for the child we spawned, with valid out-pointers.
    assert_eq!(unsafe { libc::wait4(pid, &mut status, 0, &mut usage) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    let peak_mib = usage.ru_maxrss / 1024;
    assert!(peak_mib < 192, "peak RSS {peak_mib} MiB");
    let got = crate::harness::Outcome {
        stdout: std::fs::read(&out).unwrap(),
        stderr: Vec::new(),
        code: Some(0),
    };
    assert_golden("bigclear", &got);
}

/// What every supported Go writes is rewritten with direct jumps (crates/gojs/src/jumps.rs)
/// and, from Go 1.21 (whose `memclrNoHeapPointers` is one `memory.fill`), with Go's clearing
/// going through `gojs:host.fill`; for Winch, its indirect calls go through dispatchers, for
/// Cranelift its address arithmetic is 32-bit; the rewritten modules are valid WebAssembly. That they
/// compute the same is what every other test checks: gojs only ever runs rewritten code.
#[test]
fn go_binaries_are_rewritten() {
    use crate::harness::Go;
    let gos = [
        Go::debian(19),
        Go::debian(21),
        Go::debian(22),
        Go::debian(23),
        Go::path(),
    ];
    for go in &gos {
        let wasm = std::fs::read(go.build("hello")).unwrap();
        let direct =
            gojs::direct_jumps(&wasm).unwrap_or_else(|| panic!("{go:?}: no jump was rewritten"));
        assert_ne!(direct, wasm);
        wasmparser::Validator::new()
            .validate_all(&direct)
            .unwrap_or_else(|e| panic!("{go:?}: the rewritten module is invalid: {e}"));
        let all = gojs::rewritten(&wasm, false).unwrap();
        wasmparser::Validator::new()
            .validate_all(&all)
            .unwrap_or_else(|e| panic!("{go:?}: the rewritten module is invalid: {e}"));
        // For Winch, indirect calls go through dispatchers: no table segment is left.
        let winch = gojs::rewritten(&wasm, true).unwrap();
        wasmparser::Validator::new()
            .validate_all(&winch)
            .unwrap_or_else(|e| panic!("{go:?}: the module for Winch is invalid: {e}"));
        // Both export Go's loop and globals, so that a run can move from Winch's code to
        // Cranelift's; Winch's loop stops on request and every `global.set g` records `g`.
        for (m, stops) in [(&all, false), (&winch, true)] {
            let (exports, sets, records, flag_reads) = tier_pass_report(m);
            assert_eq!(exports, 9, "{go:?}: tier exports");
            assert!(sets > 3, "{go:?}: {sets} sets of g");
            assert_eq!(
                records,
                if stops { sets } else { 0 },
                "{go:?}: records of g"
            );
            assert_eq!(flag_reads, usize::from(stops), "{go:?}: reads of the flag");
        }
        let segments = wasmparser::Parser::new(0)
            .parse_all(&winch)
            .filter(|p| matches!(p, Ok(wasmparser::Payload::ElementSection(_))))
            .count();
        assert_eq!(segments, 0, "{go:?}: the table is still filled");
        // Most of Go's 64-bit adds compute addresses, and become 32-bit for Cranelift.
        let adds = |wasm: &[u8]| {
            let mut n = 0usize;
            for p in wasmparser::Parser::new(0).parse_all(wasm) {
                if let wasmparser::Payload::CodeSectionEntry(body) = p.unwrap() {
                    let mut ops = body.get_operators_reader().unwrap();
                    while !ops.eof() {
                        n += usize::from(matches!(
                            ops.read().unwrap(),
                            wasmparser::Operator::I64Add
                        ));
                    }
                }
            }
            n
        };
        // (Winch's code isn't narrowed; the fill pass drops a few adds of its own.)
        let (before, after) = (adds(&winch), adds(&all));
        assert!(
            after < before / 2,
            "{go:?}: {after} of {before} 64-bit adds left after narrowing"
        );
        let imports_fill = |wasm: &[u8]| {
            wasmparser::Parser::new(0)
                .parse_all(wasm)
                .filter_map(|p| match p.unwrap() {
                    wasmparser::Payload::ImportSection(r) => Some(r),
                    _ => None,
                })
                .flat_map(|r| r.into_imports())
                .any(|i| i.unwrap().module == "gojs:host")
        };
        // `version` is like "go1.21.13".
        let minor: u32 = go.version.split('.').nth(1).unwrap().parse().unwrap();
        assert_eq!(imports_fill(&all), minor >= 21, "{go:?}: fill import");
        // Linked with -s (no name section), the passes find Go's functions all the same, by
        // the names in Go's own table, which the rewritten module carries as its name section.
        let stripped = gojs::rewritten(&without_names(&wasm), false).unwrap();
        assert_eq!(
            imports_fill(&stripped),
            minor >= 21,
            "{go:?}: fill import, no names"
        );
        assert_eq!(
            adds(&stripped),
            after,
            "{go:?}: narrowed differently without names"
        );
        let named = wasmparser::Parser::new(0).parse_all(&stripped).any(
            |p| matches!(p.unwrap(), wasmparser::Payload::CustomSection(c) if c.name() == "name"),
        );
        assert!(named, "{go:?}: no name section");
    }
}

/// A program linked with -s (as `go run` links it) that traps: its backtrace names Go's
/// functions, whether its first run was split or compiled whole.
#[test]
fn traps_in_modules_without_names_are_named() {
    let dir = fresh_scratch_dir("trap-unnamed");
    let wasm = dir.join("trap.wasm");
    std::fs::write(
        &wasm,
        without_names(&std::fs::read(Go::path().build("trap")).unwrap()),
    )
    .unwrap();
    for split in ["on", "off"] {
        let mut cmd = Command::new(gojs());
        cmd.env("GOJS_SPLIT", split)
            .env_remove("GOJS_COMPILER")
            .args(["run", "--no-cache"])
            .arg(&wasm);
        let o = run(cmd, b"");
        assert_eq!(o.code, Some(1), "{}", o.stderr());
        assert!(
            o.stderr().contains("main.main"),
            "split {split}: {}",
            o.stderr()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
