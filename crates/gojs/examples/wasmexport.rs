//! Typed calls into `//go:wasmexport` functions (Go 1.24+).
//!
//! `cargo run --release --example wasmexport`

mod support;

fn main() -> Result<(), gojs::Error> {
    if support::go_minor().is_none_or(|m| m < 24) {
        println!("skipped: //go:wasmexport needs Go 1.24 or newer on PATH");
        return Ok(());
    }
    let wasm = support::build_go("wasmexport");
    let engine = gojs::Engine::new()?;
    let module = gojs::Module::from_file(&engine, &wasm)?;
    let running = module.spawn(gojs::Config::new())?;
    let h = running.handle();
    let sum: i32 = h.call_export("add", (40, 2))?;
    let f: i64 = h.call_export("fib", (50,))?;
    println!("add(40, 2) = {sum}");
    println!("fib(50) = {f}");
    Ok(())
}
