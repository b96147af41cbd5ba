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
