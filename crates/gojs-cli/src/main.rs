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
    /// (add variables with --env or pass the whole host environment with --inherit-env).
    /// stdin, stdout and stderr are the terminal's.
    #[command(trailing_var_arg = true)]
    Run {
        /// Set an environment variable for the guest: NAME=VALUE, or NAME to copy it from the host.
        #[arg(long = "env", value_name = "NAME[=VALUE]")]
        env: Vec<String>,
        /// Pass the host's whole environment to the guest.
        #[arg(long)]
        inherit_env: bool,
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
            no_cache,
            module,
            args,
        } => {
            let mut vars: Vec<(String, String)> = Vec::new();
            if inherit_env {
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
            exit(gojs_cli::run(&module, argv, vars, "gojs", no_cache))
        }
    }
}

fn exit(code: i32) -> ExitCode {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // Skip tearing down the guest's realm: the process is ending anyway.
    std::process::exit(code)
}
