//! `go_js_wasm_exec`: a drop-in for Go's script of the same name, so that
//! `GOOS=js GOARCH=wasm go run` and `go test` work without Node.
//!
//! Usage: `go_js_wasm_exec MODULE [ARGS...]`. Like Node's runner it gives the program the host's
//! whole filesystem and working directory, the whole host environment plus `TMPDIR` (when
//! unset), and reports itself as `node` in `process.argv0` — which is what makes net/http use
//! its in-process fake network in `*.test` binaries.

use std::process::ExitCode;

fn main() -> ExitCode {
    gojs_cli::fill_cache_if_asked();
    gojs_cli::init_logging();
    let mut args = std::env::args_os().skip(1);
    let Some(module) = args.next() else {
        eprintln!("usage: go_js_wasm_exec [wasm binary] [arguments]");
        return ExitCode::from(1);
    };
    let module = std::path::PathBuf::from(module);
    let mut argv = vec![module.to_string_lossy().into_owned()];
    argv.extend(args.map(|a| a.to_string_lossy().into_owned()));
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    if !env.iter().any(|(k, _)| k == "TMPDIR") {
        env.push((
            "TMPDIR".into(),
            std::env::temp_dir().to_string_lossy().into_owned(),
        ));
    }
    let options = gojs_cli::RunOptions {
        args: argv,
        env,
        argv0: "node".into(),
        no_cache: false,
        // `GOJS_COMPILER=cranelift|winch|auto` (default auto: Winch for a binary not yet in the
        // cache, which `go test` builds fresh each time, with Cranelift filling the cache).
        compiler: std::env::var("GOJS_COMPILER")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(gojs::Compiler::Auto),
        grants: vec![gojs::Grant::host_filesystem()],
        // Like Node's runner: no limit of its own.
        max_memory: None,
    };
    let code = gojs_cli::run(&module, options);
    gojs_cli::exit_now(code)
}
