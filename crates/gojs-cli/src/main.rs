//! `gojs`: run Go programs compiled with `GOOS=js GOARCH=wasm`, without Node.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Run Go programs compiled with GOOS=js GOARCH=wasm natively (no Node needed).
#[derive(Parser)]
#[command(name = "gojs", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run MODULE.wasm with ARGS; exits with the Go program's exit code.
    ///
    /// Nothing of the host is granted unless asked for: the guest's environment is empty
    /// (add variables with --env or pass the whole host environment with --inherit-env) and it
    /// sees no files (grant directories with --dir and --ro-dir, or everything with
    /// --allow-all). The guest's working directory is the host's when that is inside a granted
    /// directory, else `/`. stdin, stdout and stderr are the terminal's.
    #[command(trailing_var_arg = true)]
    Run {
        /// Set an environment variable for the guest: NAME=VALUE, or NAME to copy it from the host.
        #[arg(long = "env", value_name = "NAME[=VALUE]")]
        env: Vec<String>,
        /// Pass the host's whole environment to the guest.
        #[arg(long)]
        inherit_env: bool,
        /// Grant a host directory read-write, at GUEST in the guest (default: the same path).
        /// Paths can't leave it: `..`, absolute paths and symlinks out of it are refused.
        #[arg(long = "dir", value_name = "HOST[::GUEST]")]
        dirs: Vec<String>,
        /// Grant a host directory read-only, at GUEST in the guest (default: the same path).
        #[arg(long = "ro-dir", value_name = "HOST[::GUEST]")]
        ro_dirs: Vec<String>,
        /// Grant the host's whole filesystem and environment, like Node.
        #[arg(long)]
        allow_all: bool,
        /// Compile the module from scratch instead of using the compile cache.
        #[arg(long)]
        no_cache: bool,
        /// The Go program, built with GOOS=js GOARCH=wasm.
        #[arg(value_name = "MODULE.wasm")]
        module: PathBuf,
        /// Arguments for the program (os.Args[1:]).
        #[arg(allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            env,
            inherit_env,
            dirs,
            ro_dirs,
            allow_all,
            no_cache,
            module,
            args,
        } => {
            let mut vars: Vec<(String, String)> = Vec::new();
            let mut grants = Vec::new();
            if allow_all {
                grants.push(gojs::Grant::host_filesystem());
            }
            let specs = dirs.iter().map(|d| (d, false));
            for (spec, read_only) in specs.chain(ro_dirs.iter().map(|d| (d, true))) {
                match gojs_cli::parse_grant(spec, read_only) {
                    Ok(g) => grants.push(g),
                    Err(e) => {
                        eprintln!("gojs: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
            if inherit_env || allow_all {
                vars.extend(std::env::vars());
            }
            for e in env {
                match e.split_once('=') {
                    Some((k, v)) => vars.push((k.to_string(), v.to_string())),
                    None => {
                        if let Ok(v) = std::env::var(&e) {
                            vars.push((e, v));
                        }
                    }
                }
            }
            let mut argv = vec![module.to_string_lossy().into_owned()];
            argv.extend(args);
            let options = gojs_cli::RunOptions {
                args: argv,
                env: vars,
                argv0: "gojs".into(),
                no_cache,
                grants,
            };
            exit(gojs_cli::run(&module, options))
        }
    }
}

fn exit(code: i32) -> ExitCode {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // Skip tearing down the guest's realm: the process is ending anyway.
    std::process::exit(code)
}
