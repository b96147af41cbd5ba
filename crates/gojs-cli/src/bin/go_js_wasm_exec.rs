//! `go_js_wasm_exec`: a drop-in for Go's script of the same name, so that
//! `GOOS=js GOARCH=wasm go run` and `go test` work without Node.
//!
//! Usage: `go_js_wasm_exec MODULE [ARGS...]`. Like Node's runner it passes the whole host
//! environment plus `TMPDIR` (when unset) and reports itself as `node` in `process.argv0`.
//! (Host filesystem access arrives with the filesystem grants.)

use std::process::ExitCode;

fn main() -> ExitCode {
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
    let code = gojs_cli::run(&module, argv, env, "node", false);
    std::process::exit(code)
}
