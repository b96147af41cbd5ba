//! The one error type of the library.

use std::path::PathBuf;

/// Why a Go module could not be loaded or run.
///
/// The Go program's own exit (any code, 0 included) is not an error: see
/// [`crate::Module::run`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The module file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The bytes are not a WebAssembly module, or a damaged one.
    #[error("{0}")]
    InvalidModule(String),
    /// A valid WebAssembly module that was not built with `GOOS=js GOARCH=wasm`.
    #[error("not a Go js/wasm module: {0}")]
    NotGoJs(String),
    /// The module imports a `//go:wasmimport` function nobody provided
    /// (see [`Config::wasm_import`](crate::Config::wasm_import)).
    #[error(
        "the module imports `{0}` (a //go:wasmimport function), which the host doesn't provide"
    )]
    MissingImport(String),
    /// `args` and `env` don't fit where Go expects them.
    #[error(transparent)]
    ArgsTooLong(#[from] crate::abi::ArgsTooLong),
    /// The guest trapped; the message includes the wasm backtrace with Go function names.
    #[error("{0}")]
    Trap(String),
    /// A JavaScript exception that nothing caught (Node prints it and exits 1).
    #[error("Uncaught {0}")]
    UncaughtException(String),
    /// JavaScript run by the host (e.g. [`crate::Handle::eval_json`]) threw this exception.
    #[error("{0}")]
    JsException(String),
    /// The Go program exited before or during the request. `code` is its exit code when known;
    /// `panic` the message of the Go panic that ended it, if one did.
    #[error("{}", exited_message(*code, panic.as_deref()))]
    Exited {
        code: Option<i32>,
        panic: Option<String>,
    },
    /// No global JS function and no wasm export has this name.
    #[error("{0} is not a function Go published (no global function or wasm export of that name)")]
    NoSuchFunction(String),
    /// A value had the wrong type for the Rust side of a call.
    #[error("{0}")]
    Conversion(#[from] crate::ConversionError),
    /// The program can't start within its memory limit
    /// ([`Config::max_memory`](crate::Config::max_memory)): its initial linear memory and JS
    /// realm need at least `needed` bytes.
    #[error(
        "the program needs at least {} to start, more than its memory limit of {}",
        size(*needed),
        size(*limit)
    )]
    MemoryLimit { needed: usize, limit: usize },
    /// Setting up the engine or the JS realm failed.
    #[error("{0}")]
    Host(String),
}

impl From<rquickjs::Error> for Error {
    fn from(e: rquickjs::Error) -> Self {
        Error::Host(format!("JS realm: {e}"))
    }
}

/// `n` bytes in MiB to a tenth, or in bytes under a MiB.
fn size(n: usize) -> String {
    if n < 1 << 20 {
        format!("{n} bytes")
    } else {
        format!("{:.1} MiB", n as f64 / (1 << 20) as f64)
    }
}

fn exited_message(code: Option<i32>, panic: Option<&str>) -> String {
    match (code, panic) {
        (_, Some(p)) => format!("Go program panicked: {p}"),
        (Some(c), None) => format!("Go program exited with code {c}"),
        (None, None) => "Go program has already exited".into(),
    }
}
