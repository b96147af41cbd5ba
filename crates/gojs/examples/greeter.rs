//! The seed's greeter, called from Rust: Go publishes `greeter` with `js.FuncOf`, Rust calls it
//! once Go is idle and gets its result back as a `String`.
//!
//! `cargo run --release --example greeter [NAME]`

mod support;

fn main() -> Result<(), gojs::Error> {
    let wasm = support::build_go("greeter");
    let name = std::env::args().nth(1).unwrap_or_else(|| "gopher".into());

    let engine = gojs::Engine::new()?;
    let module = gojs::Module::from_file(&engine, &wasm)?;
    let running = module.spawn(gojs::Config::new())?;
    // Go prints "Hello <name>" and returns the name.
    let reply: String = running.handle().call("greeter", (name.as_str(),))?;
    println!("greeter returned {reply:?}");
    Ok(())
}
