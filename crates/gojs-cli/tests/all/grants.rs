//! The filesystem access model: what a guest reaches through `--dir`/`--ro-dir` grants, and
//! that nothing outside them is reachable by `..`, absolute paths or symlinks.

use std::path::Path;
use std::process::Command;

use crate::harness::{Go, fresh_scratch_dir, gojs, run};

/// Run `fsprobe` with `flags` from the host directory `cwd`; its output lines.
fn probe(cwd: &Path, flags: &[String], ops: &[&str]) -> Vec<String> {
    let wasm = Go::path().build("fsprobe");
    let mut cmd = Command::new(gojs());
    cmd.current_dir(cwd)
        .arg("run")
        .args(flags)
        .arg(&wasm)
        .args(ops);
    let out = run(cmd, b"");
    assert_eq!(out.code, Some(0), "fsprobe failed: {}", out.stderr());
    out.stdout().lines().map(String::from).collect()
}

fn assert_probe(cwd: &Path, flags: &[String], want: &[(&str, &str)]) {
    let ops: Vec<&str> = want.iter().map(|(op, _)| *op).collect();
    let got = probe(cwd, flags, &ops);
    let want: Vec<String> = want.iter().map(|(op, r)| format!("{op} -> {r}")).collect();
    assert_eq!(got, want);
}

/// host layout: rw/ (→ /data), ro/ (→ /ro, read-only), other/ (→ /other), secret.txt (not granted).
fn layout() -> (std::path::PathBuf, Vec<String>) {
    let root = fresh_scratch_dir("grants");
    for d in ["rw/sub", "ro", "other"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("rw/file.txt"), "data").unwrap();
    std::fs::write(root.join("ro/r.txt"), "readonly").unwrap();
    std::fs::write(root.join("secret.txt"), "secret").unwrap();
    std::os::unix::fs::symlink("/etc", root.join("rw/abs")).unwrap();
    std::os::unix::fs::symlink("../ro", root.join("rw/up")).unwrap();
    std::os::unix::fs::symlink("../secret.txt", root.join("rw/leak")).unwrap();
    std::os::unix::fs::symlink("file.txt", root.join("rw/inner")).unwrap();
    let flags = vec![
        format!("--dir={}::/data", root.join("rw").display()),
        format!("--ro-dir={}::/ro", root.join("ro").display()),
        format!("--dir={}::/other", root.join("other").display()),
    ];
    (root, flags)
}

#[test]
fn grants_show_only_granted_directories() {
    let (root, flags) = layout();
    let secret = root.join("secret.txt");
    let secret_op = format!("read:{}", secret.display());
    assert_probe(
        &root,
        &flags,
        &[
            // The host cwd (root) isn't inside a grant, so the guest starts at `/`.
            ("getwd", "/ ok"),
            ("ls:/", "[data other ro] ok"),
            ("stat:/data", "dir=true ok"),
            ("read:/data/file.txt", "\"data\" ok"),
            ("read:/data/inner", "\"data\" ok"),
            ("read:/ro/r.txt", "\"readonly\" ok"),
            (&secret_op, "\"\" ENOENT"),
            ("read:/etc/passwd", "\"\" ENOENT"),
            ("ls:/data/sub", "[] ok"),
            ("cd:/data/sub", "ok"),
            ("read:../file.txt", "\"data\" ok"),
            ("cd:/ro/r.txt", "ENOTDIR"),
        ],
    );
}

#[test]
fn escapes_by_dotdot_absolute_paths_and_symlinks_are_refused() {
    let (root, flags) = layout();
    assert_probe(
        &root,
        &flags,
        &[
            // `..` is resolved in the guest's namespace: above /data is `/`, not the host's root.
            ("read:/data/../secret.txt", "\"\" ENOENT"),
            ("read:/data/sub/../../secret.txt", "\"\" ENOENT"),
            ("read:/../../../../etc/passwd", "\"\" ENOENT"),
            // Symlinks out of the grant, absolute or relative, are refused.
            ("read:/data/abs/passwd", "\"\" EACCES"),
            ("ls:/data/abs", "[] EACCES"),
            ("read:/data/leak", "\"\" EACCES"),
            ("read:/data/up/r.txt", "\"\" EACCES"),
            ("write:/data/leak", "EACCES"),
            // A symlink the guest makes can't be followed out either.
            ("symlink:/etc/passwd:/data/evil", "ok"),
            ("read:/data/evil", "\"\" EACCES"),
            ("symlink:../../secret.txt:/data/evil2", "ok"),
            ("read:/data/evil2", "\"\" EACCES"),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(root.join("secret.txt")).unwrap(),
        "secret"
    );
}

#[test]
fn read_only_grants_refuse_every_change() {
    let (root, flags) = layout();
    assert_probe(
        &root,
        &flags,
        &[
            ("read:/ro/r.txt", "\"readonly\" ok"),
            ("write:/ro/r.txt", "EACCES"),
            ("write:/ro/new", "EACCES"),
            ("append:/ro/r.txt", "EACCES"),
            ("mkdir:/ro/d", "EACCES"),
            ("rm:/ro/r.txt", "EACCES"),
            ("chmod:/ro/r.txt", "EACCES"),
            ("mv:/ro/r.txt:/ro/s.txt", "EACCES"),
            ("symlink:r.txt:/ro/l", "EACCES"),
            // Nor can anything be created above the grants.
            ("write:/new", "EACCES"),
            ("mkdir:/data", "EEXIST"),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(root.join("ro/r.txt")).unwrap(),
        "readonly"
    );
    assert_eq!(std::fs::read_dir(root.join("ro")).unwrap().count(), 1);
}

#[test]
fn read_write_grants_allow_changes_within_one_grant() {
    let (root, flags) = layout();
    assert_probe(
        &root,
        &flags,
        &[
            ("write:/data/new", "ok"),
            ("read:/data/new", "\"written\" ok"),
            ("mkdir:/data/d", "ok"),
            ("mv:/data/new:/data/d/new", "ok"),
            ("ln:/data/d/new:/data/hard", "ok"),
            // Across grants a rename or link is a cross-device one.
            ("mv:/data/hard:/other/hard", "EXDEV"),
            ("ln:/data/hard:/other/hard", "EXDEV"),
            ("rm:/data/hard", "ok"),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(root.join("rw/d/new")).unwrap(),
        "written"
    );
    assert!(!root.join("rw/hard").exists());
}

#[test]
fn cwd_starts_at_the_host_cwd_inside_a_grant() {
    let (root, flags) = layout();
    assert_probe(
        &root.join("rw/sub"),
        &flags,
        &[
            ("getwd", "/data/sub ok"),
            ("read:../file.txt", "\"data\" ok"),
        ],
    );
    // The default guest path is the host path itself.
    let same = vec![format!("--ro-dir={}", root.join("ro").display())];
    let want = format!("{} ok", root.join("ro").display());
    assert_probe(
        &root.join("ro"),
        &same,
        &[("getwd", &want), ("read:r.txt", "\"readonly\" ok")],
    );
}

#[test]
fn bad_grants_are_clean_cli_errors() {
    let root = fresh_scratch_dir("badgrant");
    let wasm = Go::path().build("fsprobe");
    for (flag, msg) in [
        (
            format!("--dir={}", root.join("missing").display()),
            "cannot grant",
        ),
        (
            format!("--dir={}::relative", root.display()),
            "must be absolute",
        ),
    ] {
        let mut cmd = Command::new(gojs());
        cmd.arg("run").arg(&flag).arg(&wasm);
        let out = run(cmd, b"");
        assert_eq!(out.code, Some(2), "{flag}");
        assert!(
            out.stderr().starts_with("gojs: ") && out.stderr().contains(msg),
            "{}",
            out.stderr()
        );
    }
}

/// Inherited stdio is the host's own descriptor: Go sees a redirected file as a file.
#[test]
fn fstat_of_inherited_stdin_is_the_hosts() {
    let root = fresh_scratch_dir("stdin");
    let input = root.join("input.txt");
    std::fs::write(&input, "12345").unwrap();
    let wasm = Go::path().build("fsprobe");
    let out = Command::new(gojs())
        .arg("run")
        .arg(&wasm)
        .arg("stdin")
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "stdin -> regular file of 5 bytes ok\n"
    );
    // Piped, it is a pipe.
    assert_eq!(probe(&root, &[], &["stdin"]), ["stdin -> pipe ok"]);
}

/// `gojs run` of a program that fails after being refused a path names the first such path and
/// the flag that grants it; a program that succeeds gets no note.
#[test]
fn a_failing_program_is_told_which_path_it_was_refused() {
    let (root, flags) = layout();
    let run_probe = |ops: &[&str]| {
        let mut cmd = Command::new(gojs());
        cmd.current_dir(&root)
            .arg("run")
            .args(&flags)
            .arg(Go::path().build("fsprobe"))
            .args(ops);
        run(cmd, b"")
    };
    let out = run_probe(&[
        "read:/data/file.txt",
        "read:/etc/passwd",
        "read:/usr/x",
        "exit:1",
    ]);
    assert_eq!(out.code, Some(1));
    assert_eq!(
        out.stderr(),
        "gojs: note: the program was refused a path: /etc/passwd is outside the directories \
         granted to it (grant its directory with --dir or --ro-dir, or everything with \
         --allow-all)\n"
    );
    let out = run_probe(&["write:/ro/r.txt", "exit:3"]);
    assert_eq!(out.code, Some(3));
    assert_eq!(
        out.stderr(),
        "gojs: note: the program was refused a path: /ro/r.txt can't be changed: it is not \
         granted read-write (grant its directory with --dir, or --allow-all)\n"
    );
    // Refused, but the program carries on and succeeds: its business.
    let out = run_probe(&["read:/etc/passwd"]);
    assert_eq!((out.code, out.stderr()), (Some(0), String::new()));
    // Failing without a refusal: nothing to say.
    let out = run_probe(&["read:/data/file.txt", "exit:2"]);
    assert_eq!((out.code, out.stderr()), (Some(2), String::new()));
}

/// `memlimit` under `gojs run --max-memory=64` holding `mib` mebibytes in `place` ("go" or
/// "js").
fn memlimit(flags: &[&str], place: &str, mib: u32) -> crate::harness::Outcome {
    let wasm = Go::path().build("memlimit");
    let mut cmd = Command::new(gojs());
    cmd.env_remove("RUST_BACKTRACE")
        .arg("run")
        .args(flags)
        .arg(&wasm)
        .arg(place)
        .arg(mib.to_string());
    run(cmd, b"")
}

/// Go's heap grows within `--max-memory`: past it, Go's runtime is out of memory (exit 2), as
/// when a wasm32 guest reaches 4 GiB.
#[test]
fn max_memory_stops_go_s_heap() {
    let o = memlimit(&["--max-memory=64"], "go", 200);
    assert_eq!(o.code, Some(2), "stderr: {}", o.stderr());
    assert!(o.stdout.is_empty(), "{}", o.stdout());
    assert!(
        o.stderr().contains("fatal error: out of memory"),
        "{}",
        o.stderr()
    );
    assert!(!o.stderr().contains("panicked"), "{}", o.stderr());
    let o = memlimit(&[], "go", 200);
    assert_eq!(
        (o.code, o.stdout().as_str()),
        (Some(0), "held 200 MiB in Go\n")
    );
}

/// The JS heap counts against the same limit: past it, JS throws, and Go's `syscall/js`
/// panics with that error (the fixture recovers and says so).
#[test]
fn max_memory_stops_the_js_heap() {
    let o = memlimit(&["--max-memory=64"], "js", 200);
    assert_eq!(o.code, Some(0), "stderr: {}", o.stderr());
    let out = o.stdout();
    let held: u32 = out
        .strip_prefix("refused after ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    // The rest of the 64 MiB is Go's memory and the realm's own objects.
    assert!((48..64).contains(&held), "{out}");
    assert!(
        out.ends_with("MiB: JavaScript error: out of memory\n"),
        "{out}"
    );
    let o = memlimit(&[], "js", 200);
    assert_eq!(
        (o.code, o.stdout().as_str()),
        (Some(0), "held 200 MiB in JS\n")
    );
    // Not a number of MiB, or none: refused by the command line.
    let o = memlimit(&["--max-memory=0"], "js", 1);
    assert_eq!(o.code, Some(2), "{}", o.stderr());
}

/// A limit below what the module needs to start (its initial memory, the realm) is a one-line
/// error saying so, not Go's out-of-memory crash.
#[test]
fn max_memory_below_the_start_is_one_line() {
    let o = memlimit(&["--max-memory=1"], "js", 1);
    assert_eq!(o.code, Some(1), "{}", o.stderr());
    let err = o.stderr();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("gojs: the program needs at least ")
            && err.ends_with(" MiB to start, more than its memory limit of 1.0 MiB\n"),
        "{err}"
    );
}
