//! One compiled module, many instances: each runs on its own event-loop thread with its own
//! state, and threads call into them concurrently.
//!
//! `cargo run --release --example plugins`

mod support;

use std::time::Instant;

fn main() -> Result<(), gojs::Error> {
    let wasm = support::build_go("plugin");
    let engine = gojs::Engine::new()?;
    // Compile (or load from the cache) once...
    let module = gojs::Module::from_file(&engine, &wasm)?;

    // ...instantiate many times (each instance: its own memory, realm and event-loop thread).
    let started = Instant::now();
    let plugins: Vec<gojs::Running> = (0..8)
        .map(|_| module.spawn(gojs::Config::new()))
        .collect::<Result<_, _>>()?;
    for p in &plugins {
        p.handle().run_until_idle()?;
    }
    let ready = started.elapsed();
    let words = ["alpha", "beta", "gamma", "delta"];
    std::thread::scope(|s| {
        for (i, plugin) in plugins.iter().enumerate() {
            let handle = plugin.handle();
            s.spawn(move || {
                for w in words {
                    let v: gojs::Value = handle.call("transform", (w,)).expect("transform");
                    if w == "delta" {
                        println!("plugin {i}: {}", v.to_json());
                    }
                }
            });
        }
    });
    eprintln!(
        "8 instances ready in {:.1} ms ({:.2} ms each); with 4 calls each: {:.1} ms",
        ready.as_secs_f64() * 1e3,
        ready.as_secs_f64() * 1e3 / 8.0,
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}
