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

#[test]
fn handle_reports_exit_when_a_callback_panics() {
    let (running, _out) = spawn_greeter();
    let handle = running.handle();
    // A Go panic in a callback is fatal to the Go program, as under Node.
    let err = handle.eval_json(r#"greeter("panic")"#).unwrap_err();
    assert!(matches!(err, gojs::Error::Exited), "{err}");
    let err = handle.eval_json(r#"greeter("again")"#).unwrap_err();
    assert!(matches!(err, gojs::Error::Exited), "{err}");
    assert_eq!(running.wait().unwrap(), 2);
}
