//! Shared pieces of the `gojs` and `go_js_wasm_exec` binaries.

use std::path::Path;

/// Load and run a module with inherited stdio; print errors as one line (plus a trap's
/// backtrace) on stderr. Returns the process exit code.
pub fn run(
    module: &Path,
    args: Vec<String>,
    env: Vec<(String, String)>,
    argv0: &str,
    no_cache: bool,
) -> i32 {
    match try_run(module, args, env, argv0, no_cache) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gojs: {e}");
            1
        }
    }
}

fn try_run(
    module: &Path,
    args: Vec<String>,
    env: Vec<(String, String)>,
    argv0: &str,
    no_cache: bool,
) -> Result<i32, gojs::Error> {
    let engine = if no_cache {
        gojs::Engine::without_cache()?
    } else {
        gojs::Engine::new()?
    };
    let module = gojs::Module::from_file(&engine, module)?;
    let mut config = gojs::Config::new()
        .args(args)
        .argv0(argv0)
        .stdin(gojs::Input::Inherit)
        .stdout(gojs::Output::Inherit)
        .stderr(gojs::Output::Inherit);
    for (k, v) in env {
        config = config.env(k, v);
    }
    module.run(config)
}
