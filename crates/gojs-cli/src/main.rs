//! `gojs`: run Go programs compiled with `GOOS=js GOARCH=wasm`, without Node.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Run Go programs compiled with GOOS=js GOARCH=wasm natively (no Node needed).
#[derive(Parser)]
#[command(
    name = "gojs",
    version,
    about,
    long_about = None,
    after_help = "Environment: GOJS_CACHE_DIR (compile cache), GOJS_CACHE_MAX_MB, GOJS_COMPILER, \
                  GOJS_LOG=debug (what each run loads or compiles, with times, on stderr)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What the guest may reach. Nothing of the host is granted unless asked for.
#[derive(Args)]
struct Access {
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
    /// Limit the memory the guest holds, its linear memory and its JS heap together, to MIB
    /// mebibytes. Past it, Go's runtime reports `out of memory` (exit code 2) and JS
    /// allocations throw. Without it, each stops at 4 GiB.
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u32).range(1..))]
    max_memory: Option<u32>,
    /// Compile the module from scratch instead of using the compile cache.
    #[arg(long)]
    no_cache: bool,
    /// The compiler. auto: Cranelift's cached code if this module was seen before, else Winch
    /// (compiles ~4x faster, runs ~2x slower; for a program other than a test binary, only the
    /// functions small programs run and what its own code calls before starting, the rest in
    /// the background and, where Go calls them sooner, in small parts on demand;
    /// GOJS_SPLIT=off compiles it all first; and Cranelift compiles its own functions, then
    /// the library functions they call and the runtime's allocator and collector, then those
    /// its samples show its time goes to
    /// (GOJS_SAMPLE=off takes none), to run beside Winch's code: GOJS_HOT=off leaves that
    /// out), while Cranelift fills the cache at idle priority;
    /// a run of Winch's code moves to Cranelift's as soon as that is cached (GOJS_TIER=off
    /// stays). cranelift: always the optimizing
    /// compiler (cached; once a run has kept a module of up to 6 MiB for 200 ms, it is compiled
    /// again with inlining in the background for the runs after, test binaries excepted, as `gojs compile` does at
    /// once; GOJS_INLINE=off never, =all at any size; a trap's backtrace then lacks the
    /// inlined functions). winch: always the baseline compiler, whole module. Either way Go's
    /// jumps are made direct and loops structured first (GOJS_JUMPS=off leaves them) and its clearing of
    /// large blocks leaves untouched pages alone and its byte loops (memchr, memcmp, memeqbody) are the host's (GOJS_FILL=off leaves both); Winch's
    /// Cranelift's does Go's address arithmetic in 32 bits (GOJS_NARROW=off), and data
    /// segments a few bytes apart are merged (GOJS_DATA=off).
    #[arg(
        long,
        value_name = "auto|cranelift|winch",
        env = "GOJS_COMPILER",
        default_value = "auto"
    )]
    compiler: gojs::Compiler,
}

#[derive(Subcommand)]
enum Command {
    /// Run MODULE.wasm with ARGS; exits with the Go program's exit code.
    ///
    /// Nothing of the host is granted unless asked for: the guest's environment is empty
    /// (add variables with --env or pass the whole host environment with --inherit-env) and it
    /// sees no files (grant directories with --dir and --ro-dir, or everything with
    /// --allow-all). The guest's working directory is the host's when that is inside a granted
    /// directory, else `/`. stdin, stdout and stderr are the terminal's. A program that exits
    /// with a non-zero code after being refused a path gets a note on stderr naming the first
    /// one and the flag that grants it.
    #[command(trailing_var_arg = true)]
    Run {
        #[command(flatten)]
        access: Access,
        /// The Go program, built with GOOS=js GOARCH=wasm.
        #[arg(value_name = "MODULE.wasm")]
        module: PathBuf,
        /// Arguments for the program (os.Args[1:]).
        #[arg(allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run MODULE.wasm until Go is idle, call the function NAME it published, print the result.
    ///
    /// NAME is a global JS function Go set (`js.Global().Set(NAME, js.FuncOf(...))`) or, if
    /// there is none, a `//go:wasmexport` function. Each ARG is JSON (`'"gopher"'`, `42`,
    /// `'{"a":1}'`). The result is printed as JSON on its own line after anything Go printed,
    /// and gojs exits 0. A Go panic or JS exception prints its message and exits non-zero (Go's
    /// exit code if Go exited). Access flags are as for `gojs run`.
    Call {
        #[command(flatten)]
        access: Access,
        /// The Go program, built with GOOS=js GOARCH=wasm.
        #[arg(value_name = "MODULE.wasm")]
        module: PathBuf,
        /// The function to call.
        name: String,
        /// Arguments, each a JSON value.
        #[arg(allow_hyphen_values = true, value_name = "ARG")]
        args: Vec<String>,
    },
    /// Compile MODULE.wasm ahead of time: into the compile cache (so the first `gojs run`
    /// starts at once), or with -o into an artifact file that `gojs run` accepts in place of the
    /// .wasm. An artifact is machine code for this gojs version and CPU: run only artifacts you
    /// made or trust like an executable.
    Compile {
        /// The Go program, built with GOOS=js GOARCH=wasm.
        #[arg(value_name = "MODULE.wasm")]
        module: PathBuf,
        /// Write the artifact here instead of into the cache.
        #[arg(short = 'o', long = "output", value_name = "OUT")]
        out: Option<PathBuf>,
        /// cranelift (default; fastest code: inlines calls in modules up to 6 MiB,
        /// GOJS_INLINE=off never, =all at any size) or winch (fastest compile).
        #[arg(long, value_name = "cranelift|winch", default_value = "cranelift")]
        compiler: gojs::Compiler,
    },
}

fn main() -> ExitCode {
    gojs_cli::fill_cache_if_asked();
    gojs_cli::init_logging();
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            access,
            module,
            args,
        } => {
            let mut argv = vec![module.to_string_lossy().into_owned()];
            argv.extend(args);
            let options = match options(access, argv) {
                Ok(o) => o,
                Err(code) => return code,
            };
            exit(gojs_cli::run(&module, options))
        }
        Command::Call {
            access,
            module,
            name,
            args,
        } => {
            let argv = vec![module.to_string_lossy().into_owned()];
            let options = match options(access, argv) {
                Ok(o) => o,
                Err(code) => return code,
            };
            exit(gojs_cli::call(&module, options, &name, &args))
        }
        Command::Compile {
            module,
            out,
            compiler,
        } => exit(gojs_cli::compile(&module, out.as_deref(), compiler)),
    }
}

/// Turn the access flags into run options (a bad grant is a usage error, exit 2).
fn options(access: Access, args: Vec<String>) -> Result<gojs_cli::RunOptions, ExitCode> {
    let mut grants = Vec::new();
    if access.allow_all {
        grants.push(gojs::Grant::host_filesystem());
    }
    let rw = access.dirs.iter().map(|d| (d, false));
    for (spec, read_only) in rw.chain(access.ro_dirs.iter().map(|d| (d, true))) {
        match gojs_cli::parse_grant(spec, read_only) {
            Ok(g) => grants.push(g),
            Err(e) => {
                eprintln!("gojs: {e}");
                return Err(ExitCode::from(2));
            }
        }
    }
    let mut vars: Vec<(String, String)> = Vec::new();
    if access.inherit_env || access.allow_all {
        vars.extend(std::env::vars());
    }
    for e in access.env {
        match e.split_once('=') {
            Some((k, v)) => vars.push((k.to_string(), v.to_string())),
            None => {
                if let Ok(v) = std::env::var(&e) {
                    vars.push((e, v));
                }
            }
        }
    }
    Ok(gojs_cli::RunOptions {
        args,
        env: vars,
        argv0: "gojs".into(),
        no_cache: access.no_cache,
        compiler: access.compiler,
        grants,
        max_memory: access.max_memory.map(|mib| (mib as usize) << 20),
    })
}

fn exit(code: i32) -> ExitCode {
    // Skip tearing down the guest's realm and the allocator: the process is ending anyway.
    gojs_cli::exit_now(code)
}
