//! Go calling Rust: typed closures become JS functions Go calls with `js.Global().Call`, with
//! bytes going both ways as `Uint8Array`s and a Rust error thrown to Go as a `js.Error`.
//!
//! `cargo run --release --example host_functions`

mod support;

fn main() -> Result<(), gojs::Error> {
    let wasm = support::build_go("host_functions");
    let engine = gojs::Engine::new()?;
    let module = gojs::Module::from_file(&engine, &wasm)?;
    let config = gojs::Config::new()
        .func("checksum", |data: gojs::Bytes| {
            data.0.iter().fold(0u32, |acc, b| {
                acc.wrapping_mul(31).wrapping_add(u32::from(*b))
            })
        })
        .func("makeBlob", |len: i32| -> Result<gojs::Bytes, String> {
            let len = usize::try_from(len).map_err(|_| format!("bad length {len}"))?;
            Ok(gojs::Bytes((0..len).map(|i| i as u8 * 3).collect()))
        });
    let code = module.run(config)?;
    std::process::exit(code);
}
