//! The library API directly: the values table stays bounded, outputs can be captured.

use std::sync::{Arc, Mutex};

use crate::harness::Go;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn refcount_soak_keeps_the_values_table_bounded() {
    let engine = gojs::Engine::new().unwrap();
    let module = gojs::Module::from_file(&engine, Go::path().build("refcount_soak")).unwrap();
    let out = Buffer::default();
    let config = gojs::Config::new().stdout(gojs::Output::Writer(Box::new(out.clone())));
    let (code, live, capacity) = module.run_with_table_stats(config).unwrap();
    assert_eq!(code, 0);
    assert!(String::from_utf8_lossy(&out.0.lock().unwrap()).contains("ok"));
    // The soak creates 200,000 values and runs Go's GC every 20,000: finalizers release ids and
    // they are reused, so the table's high-water mark tracks the GC interval, not the total.
    assert!(
        capacity < 50_000,
        "values table grew to {capacity} ids (live at exit: {live})"
    );
    assert!(live < 2_000, "{live} ids still live at exit");
}

/// `Config::max_memory` limits each instance on its own: two instances of one module, one
/// limited (its JS allocations refused past the limit), one not.
#[test]
fn a_memory_limit_is_per_instance() {
    let engine = gojs::Engine::new().unwrap();
    let module = gojs::Module::from_file(&engine, Go::path().build("memlimit")).unwrap();
    let run = |limit: Option<usize>| {
        let out = Buffer::default();
        let mut config = gojs::Config::new()
            .args(["memlimit", "js", "100"])
            .stdout(gojs::Output::Writer(Box::new(out.clone())));
        if let Some(bytes) = limit {
            config = config.max_memory(bytes);
        }
        let code = module.run(config).unwrap();
        let text = String::from_utf8_lossy(&out.0.lock().unwrap()).into_owned();
        (code, text)
    };
    let (code, text) = run(Some(48 << 20));
    assert_eq!(code, 0);
    assert!(
        text.starts_with("refused after ") && text.ends_with("JavaScript error: out of memory\n"),
        "{text}"
    );
    assert_eq!(run(None), (0, "held 100 MiB in JS\n".to_string()));
    // Too little to start: an error before Go runs.
    let e = module
        .run(gojs::Config::new().max_memory(1 << 20))
        .unwrap_err();
    assert!(
        matches!(e, gojs::Error::MemoryLimit { limit, .. } if limit == 1 << 20),
        "{e}"
    );
    // Too little even for the JS realm (set up first, then checked): the same error.
    let e = module
        .run(gojs::Config::new().max_memory(1000))
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with("the program needs at least ")
            && text.ends_with(" bytes to start, more than its memory limit of 1000 bytes"),
        "{text}"
    );
}

#[test]
fn captures_output_and_feeds_stdin() {
    let engine = gojs::Engine::new().unwrap();
    let module = gojs::Module::from_file(&engine, Go::path().build("stdin")).unwrap();
    let out = Buffer::default();
    let input = std::fs::read(crate::harness::fixtures_dir().join("stdin/stdin")).unwrap();
    let config = gojs::Config::new()
        .args(["stdin.wasm"])
        .stdin(gojs::Input::Reader(Box::new(std::io::Cursor::new(input))))
        .stdout(gojs::Output::Writer(Box::new(out.clone())));
    assert_eq!(module.run(config).unwrap(), 0);
    let want =
        std::fs::read_to_string(crate::harness::fixtures_dir().join("stdin/want.stdout")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.0.lock().unwrap()), want);
}

/// `run_with_refusal` reports the first path refused for want of a grant, and only that.
#[test]
fn the_first_refused_path_is_reported() {
    let engine = gojs::Engine::new().unwrap();
    let module = gojs::Module::from_file(&engine, Go::path().build("fsprobe")).unwrap();
    let probe = |config: gojs::Config, ops: &[&str]| {
        let args = std::iter::once("fsprobe").chain(ops.iter().copied());
        let config = config.args(args).stdout(gojs::Output::Null);
        module.run_with_refusal(config).unwrap()
    };
    let dir = crate::harness::fresh_scratch_dir("refusal");
    std::fs::write(dir.join("f"), "x").unwrap();
    let ro = gojs::Config::new().ro_dir(&dir, "/ro");
    assert_eq!(
        probe(
            ro,
            &["read:/ro/f", "read:/etc/passwd", "write:/ro/f", "exit:4"]
        ),
        (4, Some(gojs::Refusal::Ungranted("/etc/passwd".into())))
    );
    let ro = gojs::Config::new().ro_dir(&dir, "/ro");
    assert_eq!(
        probe(ro, &["cd:/ro", "write:f", "read:/nope"]),
        (0, Some(gojs::Refusal::ReadOnly("/ro/f".into())))
    );
    let rw = gojs::Config::new().dir(&dir, "/rw");
    assert_eq!(probe(rw, &["write:/rw/f", "read:/rw/missing"]), (0, None));
}

#[test]
fn args_too_long_is_an_error() {
    let engine = gojs::Engine::new().unwrap();
    let module = gojs::Module::from_file(&engine, Go::path().build("hello")).unwrap();
    let err = module
        .run(gojs::Config::new().args(["x".repeat(10_000)]))
        .unwrap_err();
    assert!(matches!(err, gojs::Error::ArgsTooLong(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "total length of command line and environment variables exceeds limit"
    );
}

fn spawn_greeter() -> (gojs::Running, Buffer) {
    let engine = gojs::Engine::new().unwrap();
    let module = gojs::Module::from_file(&engine, Go::path().build("greeter")).unwrap();
    let out = Buffer::default();
    let config = gojs::Config::new()
        .stdout(gojs::Output::Writer(Box::new(out.clone())))
        .stderr(gojs::Output::Null);
    (module.spawn(config).unwrap(), out)
}

#[test]
fn handle_calls_a_go_function_once_go_is_idle() {
    let (running, out) = spawn_greeter();
    let handle = running.handle();
    assert_eq!(
        handle.eval_json(r#"greeter("gopher")"#).unwrap(),
        r#""gopher""#
    );
    // Handles work from any thread, and keep the loop alive between calls.
    let h2 = handle.clone();
    let other = std::thread::spawn(move || h2.eval_json(r#"greeter("from a thread")"#));
    assert_eq!(other.join().unwrap().unwrap(), r#""from a thread""#);
    // A JS exception is the caller's error; the program keeps running.
    let err = handle.eval_json("greeter(1).message.x.y").unwrap_err();
    assert!(matches!(err, gojs::Error::JsException(_)), "{err}");
    assert_eq!(
        handle.eval_json("greeter(1).message").unwrap(),
        r#""greeter wants one string""#
    );
    assert_eq!(handle.eval_json("undefined").unwrap(), "undefined");
    drop(handle);
    // With every handle gone, Go blocked in `select {}` is told it is deadlocked.
    assert_eq!(running.wait().unwrap(), 2);
    assert_eq!(
        String::from_utf8_lossy(&out.0.lock().unwrap()),
        "greeter published\nHello gopher\nHello from a thread\n"
    );
}

/// A program running Winch's code that an embedder only calls into (Go idle in between, no
/// timer, no fs) moves to Cranelift's code at the next call once that is cached.
#[test]
fn an_embedder_s_call_moves_an_idle_program_to_cranelift_s_code() {
    let dir = crate::harness::fresh_scratch_dir("embedder-move");
    std::fs::create_dir_all(&dir).unwrap();
    // The background compile waits for this lock: only what the test puts there is cached.
    let lock = crate::harness::lock_filler(&dir);
    let wasm = Go::path().build("greeter");
    let cranelift = gojs::Engine::with_cache_dir(gojs::Compiler::Cranelift, &dir).unwrap();
    drop(gojs::Module::from_file(&cranelift, &wasm).unwrap());
    let entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let aside = dir.join("aside");
    std::fs::rename(&entries[0], &aside).unwrap();

    let auto = gojs::Engine::with_cache_dir(gojs::Compiler::Auto, &dir).unwrap();
    let module = gojs::Module::from_file(&auto, &wasm).unwrap();
    let out = Buffer::default();
    let config = gojs::Config::new()
        .stdout(gojs::Output::Writer(Box::new(out.clone())))
        .stderr(gojs::Output::Null);
    let running = module.spawn(config).unwrap();
    let handle = running.handle();
    let greet = |who: &str| handle.call::<String>("greeter", (who,)).unwrap();
    assert_eq!(greet("winch"), "winch");
    assert!(!handle.moved_to_cranelift().unwrap());
    std::fs::rename(&aside, &entries[0]).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut calls = 0;
    while !handle.moved_to_cranelift().unwrap() {
        assert!(std::time::Instant::now() < deadline, "never moved");
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(greet("waiting"), "waiting");
        calls += 1;
    }
    assert_eq!(greet("cranelift"), "cranelift");
    drop(handle);
    assert_eq!(running.wait().unwrap(), 2);
    let printed = String::from_utf8_lossy(&out.0.lock().unwrap()).into_owned();
    let want = format!(
        "greeter published\nHello winch\n{}Hello cranelift\n",
        "Hello waiting\n".repeat(calls)
    );
    assert_eq!(printed, want);
    drop(lock);
    let _ = std::fs::remove_dir_all(&dir);
}

/// With `Compiler::Auto`, a module seen for the first time is split, and Cranelift's code for
/// its own functions is compiled once for all its instances: instances of `hotmain`, one after
/// another and side by side, print what Node prints.
#[test]
fn instances_of_a_first_run_module_share_its_cranelift_parts() {
    let dir = crate::harness::fresh_scratch_dir("hot-instances");
    // No background compile: the instances run the split's code.
    let lock = crate::harness::lock_filler(&dir);
    let wasm = Go::path().build("hotmain");
    let want = std::fs::read_to_string(crate::harness::fixtures_dir().join("hotmain/want.stdout"))
        .unwrap();
    let auto = gojs::Engine::with_cache_dir(gojs::Compiler::Auto, &dir).unwrap();
    let module = gojs::Module::from_file(&auto, &wasm).unwrap();
    let spawn = || {
        let out = Buffer::default();
        let config = gojs::Config::new()
            .stdout(gojs::Output::Writer(Box::new(out.clone())))
            .stderr(gojs::Output::Null);
        (module.spawn(config).unwrap(), out)
    };
    let printed = |out: &Buffer| String::from_utf8_lossy(&out.0.lock().unwrap()).into_owned();
    let (first, out) = spawn();
    assert_eq!(first.wait().unwrap(), 0);
    assert_eq!(printed(&out), want);
    let both = [spawn(), spawn()];
    for (running, out) in both {
        assert_eq!(running.wait().unwrap(), 0);
        assert_eq!(printed(&out), want);
    }
    drop(lock);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_panicking_callback_is_an_error_with_the_panic_message() {
    let (running, _out) = spawn_greeter();
    let handle = running.handle();
    // A Go panic in a callback ends the Go program, as under Node; the caller learns why.
    let err = handle.call::<String>("greeter", ("panic",)).unwrap_err();
    match &err {
        gojs::Error::Exited { code, panic } => {
            assert_eq!(*code, Some(2));
            assert_eq!(panic.as_deref(), Some("greeter was asked to panic"));
        }
        other => panic!("unexpected error: {other}"),
    }
    assert_eq!(
        err.to_string(),
        "Go program panicked: greeter was asked to panic"
    );
    // Calling after exit is a distinct error, and so are values of the dead instance.
    let again = handle.call::<String>("greeter", ("again",)).unwrap_err();
    assert!(matches!(again, gojs::Error::Exited { .. }), "{again}");
    assert_eq!(running.wait().unwrap(), 2);
    // The instance outlives Go for this handle (for exports), but JS work is refused.
    let late = handle.eval_json("1").unwrap_err();
    assert!(
        matches!(late, gojs::Error::Exited { code: Some(2), .. }),
        "{late}"
    );
}

#[test]
fn typed_calls_convert_arguments_and_results() {
    let (running, out) = spawn_greeter();
    let h = running.handle();
    let name: String = h.call("greeter", ("gopher",)).unwrap();
    assert_eq!(name, "gopher");
    // A result of the wrong type is a conversion error; Go keeps running.
    let err = h.call::<f64>("greeter", ("x",)).unwrap_err();
    assert!(matches!(err, gojs::Error::Conversion(_)), "{err}");
    assert_eq!(err.to_string(), "expected number, got string");
    // Go answers a wrong argument with a JS Error value (not an exception).
    let v: gojs::Value = h.call("greeter", (42,)).unwrap();
    assert_eq!(v, gojs::Value::Object(vec![]));
    let err = h.call::<()>("nope", ()).unwrap_err();
    assert!(matches!(err, gojs::Error::NoSuchFunction(_)), "{err}");
    // JSON-like values through serde.
    let v: gojs::Json<serde_json::Value> = h.call("greeter", ("json",)).unwrap();
    assert_eq!(v.0, serde_json::json!("json"));
    drop(h);
    assert_eq!(running.wait().unwrap(), 2);
    assert!(String::from_utf8_lossy(&out.0.lock().unwrap()).contains("Hello x\nHello json\n"));
}

#[test]
fn wasmexport_functions_are_callable_with_typed_signatures() {
    let engine = gojs::Engine::new().unwrap();
    let module = gojs::Module::from_file(&engine, Go::path().build("wasmexport")).unwrap();
    let out = Buffer::default();
    let config = gojs::Config::new()
        .stdout(gojs::Output::Writer(Box::new(out.clone())))
        .stderr(gojs::Output::Null);
    let running = module.spawn(config).unwrap();
    let h = running.handle();
    assert_eq!(h.call_export::<i32>("add", (40, 2)).unwrap(), 42);
    assert_eq!(h.call::<i32>("add", (-1, 1)).unwrap(), 0);
    assert_eq!(h.call_export::<f64>("scale", (1.5, 4)).unwrap(), 6.0);
    assert_eq!(h.call_export::<i32>("count", ()).unwrap(), 1);
    assert_eq!(h.call_export::<i32>("count", ()).unwrap(), 2);
    let err = h.call_export::<i32>("add", (1,)).unwrap_err();
    assert!(matches!(err, gojs::Error::Conversion(_)), "{err}");
    let err = h.call_export::<i32>("add", ("1", 2)).unwrap_err();
    assert!(matches!(err, gojs::Error::Conversion(_)), "{err}");
    let err = h.call_export::<i32>("resume", ()).unwrap_err();
    assert!(matches!(err, gojs::Error::NoSuchFunction(_)), "{err}");
    drop(h);
    assert_eq!(running.wait().unwrap(), 2);
    assert_eq!(
        String::from_utf8_lossy(&out.0.lock().unwrap()),
        "exports ready\ncount called 1\ncount called 2\n"
    );
}

#[test]
fn go_calls_rust_functions_and_reads_host_globals() {
    let engine = gojs::Engine::new().unwrap();
    let module = gojs::Module::from_file(&engine, Go::path().build("host_functions")).unwrap();
    let out = Buffer::default();
    #[derive(serde::Serialize)]
    struct Settings {
        name: String,
        limits: Vec<u32>,
    }
    let config = gojs::Config::new()
        .stdout(gojs::Output::Writer(Box::new(out.clone())))
        .func("hostAdd", |a: f64, b: f64| a + b)
        .func("hostGreeting", |name: String| format!("hello, {name}"))
        .func("hostDivide", |a: i64, b: i64| -> Result<i64, String> {
            a.checked_div(b)
                .ok_or_else(|| format!("cannot divide {a} by {b}"))
        })
        .func("hostReverse", |b: gojs::Bytes| {
            gojs::Bytes(b.0.into_iter().rev().collect())
        })
        .func("hostFind", |key: String| -> Option<u32> {
            ["a", "b", "c"]
                .iter()
                .position(|k| *k == key)
                .map(|i| i as u32)
        })
        .func("hostStats", |xs: Vec<f64>| {
            let mut m = std::collections::BTreeMap::new();
            m.insert("count".to_string(), xs.len() as f64);
            m.insert("sum".to_string(), xs.iter().sum());
            m
        })
        // A Rust "object": methods under one global name.
        .func("kv.get", |k: String| if k == "a" { Some(1) } else { None })
        .func("kv.put", |k: String, v: f64| format!("{k}={v}"))
        .global(
            "settings",
            gojs::Json(Settings {
                name: "gojs".into(),
                limits: vec![1, 20, 300],
            }),
        );
    assert_eq!(module.run(config).unwrap(), 0);
    assert_eq!(
        String::from_utf8_lossy(&out.0.lock().unwrap()),
        "hostAdd(40, 2) = 42\n\
         hostAdd('x', 2) threw TypeError: hostAdd: argument 1: expected number, got string\n\
         hostGreeting('gopher') = \"hello, gopher\"\n\
         hostDivide(1, 0) threw Error: cannot divide 1 by 0\n\
         hostReverse: [3 2 1] true\n\
         hostFind('b') = 1\n\
         hostFind('z') = null\n\
         hostStats([1,2,3]) = {\"count\":3,\"sum\":6}\n\
         kv.get('a') = 1\n\
         kv.put('b', 2) = \"b=2\"\n\
         settings.name: gojs\n\
         settings.limits[1]: 20\n"
    );
}

#[test]
fn one_module_runs_many_instances_on_many_threads() {
    let engine = gojs::Engine::new().unwrap();
    let module = gojs::Module::from_file(&engine, Go::path().build("greeter")).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let module = module.clone();
            std::thread::spawn(move || {
                let config = gojs::Config::new()
                    .stdout(gojs::Output::Null)
                    .stderr(gojs::Output::Null);
                let running = module.spawn(config).unwrap();
                let name = format!("instance {i}");
                let got: String = running.handle().call("greeter", (name.as_str(),)).unwrap();
                assert_eq!(got, name);
                running.wait().unwrap()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 2);
    }
}

#[test]
fn dropping_a_running_instance_mid_call_is_clean() {
    let (running, _out) = spawn_greeter();
    let h = running.handle();
    let caller = std::thread::spawn(move || h.call::<String>("greeter", ("late",)));
    // Waiting drops our handle; the caller's keeps the loop alive until its call is done.
    assert_eq!(running.wait().unwrap(), 2);
    assert_eq!(caller.join().unwrap().unwrap(), "late");
}

#[test]
fn dropping_running_stops_the_program_quietly() {
    let engine = gojs::Engine::new().unwrap();
    let module = gojs::Module::from_file(&engine, Go::path().build("greeter")).unwrap();
    let err_out = Buffer::default();
    let config = gojs::Config::new()
        .stdout(gojs::Output::Null)
        .stderr(gojs::Output::Writer(Box::new(err_out.clone())));
    let running = module.spawn(config).unwrap();
    let h = running.handle();
    assert_eq!(h.call::<String>("greeter", ("x",)).unwrap(), "x");
    drop(running);
    let err = h.call::<String>("greeter", ("y",)).unwrap_err();
    assert!(matches!(err, gojs::Error::Exited { .. }), "{err}");
    // Go was stopped, not told it is deadlocked.
    assert_eq!(String::from_utf8_lossy(&err_out.0.lock().unwrap()), "");
}

#[test]
fn wasmimport_functions_are_satisfied_by_rust_closures() {
    let engine = gojs::Engine::new().unwrap();
    let module = gojs::Module::from_file(&engine, Go::path().build("wasmimport")).unwrap();
    let out = Buffer::default();
    let config = gojs::Config::new()
        .stdout(gojs::Output::Writer(Box::new(out.clone())))
        .stderr(gojs::Output::Null)
        .wasm_import("env", "add", |a: i32, b: i32| a + b)
        .wasm_import("env", "mean", |a: f64, b: f64| (a + b) / 2.0)
        .wasm_import("env", "fail", |code: i64| -> Result<i64, String> {
            if code == 0 {
                Ok(7)
            } else {
                Err(format!("asked to fail with {code}"))
            }
        });
    // A closure's error traps the guest, with the message and Go's backtrace.
    let err = module.run(config).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, gojs::Error::Trap(_)), "{msg}");
    assert!(msg.starts_with("env.fail: asked to fail with 1"), "{msg}");
    assert!(msg.contains("main.main"), "{msg}");
    assert_eq!(
        String::from_utf8_lossy(&out.0.lock().unwrap()),
        "add(40, 2) = 42\nmean(1, 2) = 1.5\nfail(0) = 7\n"
    );
    // Without the imports, instantiation fails naming the first missing one.
    let err = module.run(gojs::Config::new()).unwrap_err();
    assert!(
        matches!(err, gojs::Error::MissingImport(ref i) if i == "env.add"),
        "{err}"
    );
}

#[test]
fn run_until_idle_then_call() {
    let (running, out) = spawn_greeter();
    let h = running.handle();
    h.run_until_idle().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.0.lock().unwrap()),
        "greeter published\n"
    );
    assert_eq!(h.call::<String>("greeter", ("idle",)).unwrap(), "idle");
}

#[test]
fn exports_are_callable_after_go_exits_while_handles_live() {
    let engine = gojs::Engine::new().unwrap();
    let module =
        gojs::Module::from_file(&engine, Go::path().build("wasmexport_after_exit")).unwrap();
    let running = module
        .spawn(gojs::Config::new().stdout(gojs::Output::Null))
        .unwrap();
    let h = running.handle();
    // `wait` returns when Go exits; the handle keeps the instance for its exports.
    assert_eq!(running.wait().unwrap(), 0);
    assert_eq!(h.call_export::<i32>("add", (40, 2)).unwrap(), 42);
    assert_eq!(h.call::<i32>("add", (1, 2)).unwrap(), 3);
    let err = h.call::<i32>("nope", ()).unwrap_err();
    assert!(
        matches!(err, gojs::Error::Exited { code: Some(0), .. }),
        "{err}"
    );
}

/// A minimal executor: poll, park until woken.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct ThreadWaker(std::thread::Thread);
    impl std::task::Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(ThreadWaker(std::thread::current())).into();
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[test]
fn async_calls_are_futures() {
    let (running, out) = spawn_greeter();
    let h = running.handle();
    // Several calls in flight at once; each future resolves with its own answer.
    let replies: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| h.call_async::<String>("greeter", (*n,)))
        .collect();
    let got: Vec<String> = replies.into_iter().map(|r| block_on(r).unwrap()).collect();
    assert_eq!(got, ["a", "b", "c"]);
    assert!(
        String::from_utf8_lossy(&out.0.lock().unwrap()).ends_with("Hello a\nHello b\nHello c\n")
    );
    // A call the instance can no longer answer resolves to `Exited`, not a hang.
    drop(running);
    let err = block_on(h.call_async::<String>("greeter", ("late",))).unwrap_err();
    assert!(matches!(err, gojs::Error::Exited { .. }), "{err}");
}

#[test]
fn rust_keeps_a_go_callback_and_invokes_it_later() {
    let engine = gojs::Engine::new().unwrap();
    let module = gojs::Module::from_file(&engine, Go::path().build("subscribe")).unwrap();
    let out = Buffer::default();
    let saved: Arc<Mutex<Option<gojs::JsFunction>>> = Arc::default();
    let keep = saved.clone();
    let config = gojs::Config::new()
        .stdout(gojs::Output::Writer(Box::new(out.clone())))
        .stderr(gojs::Output::Null)
        .func("subscribe", move |f: gojs::JsFunction| {
            *keep.lock().unwrap() = Some(f);
        })
        .func("notAFunction", |f: gojs::JsFunction| drop(f));
    let running = module.spawn(config).unwrap();
    let h = running.handle();
    h.run_until_idle().unwrap();
    let f = saved.lock().unwrap().clone().expect("Go subscribed");
    assert_eq!(
        h.invoke::<String>(&f, ("tick",)).unwrap(),
        "handled tick (#1)"
    );
    // From another thread, through a clone of the function.
    let (h2, f2) = (h.clone(), f.clone());
    let t = std::thread::spawn(move || h2.invoke::<String>(&f2, ("tock",)));
    assert_eq!(t.join().unwrap().unwrap(), "handled tock (#2)");
    // A non-function where a JsFunction is expected is a TypeError for JS.
    let err = h.eval_json("notAFunction(1)").unwrap_err();
    assert!(
        err.to_string()
            .contains("notAFunction: argument 1: expected function, got number"),
        "{err}"
    );
    drop(running);
    let err = h.invoke::<String>(&f, ("late",)).unwrap_err();
    assert!(matches!(err, gojs::Error::Exited { .. }), "{err}");
    assert_eq!(
        String::from_utf8_lossy(&out.0.lock().unwrap()),
        "subscribed\nevent: tick\nevent: tock\n"
    );
}

#[test]
fn the_guest_clock_can_start_at_a_given_time() {
    let engine = gojs::Engine::new().unwrap();
    let module = gojs::Module::from_file(&engine, Go::path().build("clock")).unwrap();
    let out = Buffer::default();
    let start = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    let config = gojs::Config::new()
        .args(["clock", "show"])
        .start_time(start)
        .stdout(gojs::Output::Writer(Box::new(out.clone())));
    assert_eq!(module.run(config).unwrap(), 0);
    assert_eq!(
        String::from_utf8_lossy(&out.0.lock().unwrap()),
        "recent: false\nadvances: true\n2001-09-09 01:46\n"
    );
}
