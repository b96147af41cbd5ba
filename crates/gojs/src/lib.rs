//! Run Go programs compiled with `GOOS=js GOARCH=wasm` natively, without Node.
//!
//! gojs implements the host that Go's `wasm_exec.js` provides — the `gojs` import module
//! (`go` before Go 1.21), a JavaScript realm holding the values Go sees (QuickJS), the Go object
//! for `js.FuncOf` callbacks, and an event loop for timers — in Rust, on wasmtime.
//!
//! ```no_run
//! # fn main() -> Result<(), gojs::Error> {
//! let engine = gojs::Engine::new()?;
//! let module = gojs::Module::from_file(&engine, "hello.wasm")?;
//! let code = module.run(gojs::Config::new().args(["hello.wasm", "world"]))?;
//! std::process::exit(code);
//! # }
//! ```

mod abi;
mod cache;
mod convert;
mod engine;
mod error;
mod event_loop;
mod handle;
mod host;
mod imports;
mod instance;
mod module;
mod realm;
mod reentry;
mod values;
mod vfs;

pub use abi::ArgsTooLong;
pub use convert::{
    Bytes, ConversionError, FromValue, HostFn, IntoArgs, IntoResult, IntoValue, Json, Value,
};
pub use engine::Engine;
pub use error::Error;
pub use handle::{Handle, Running};
pub use instance::{Config, Input, Output};
pub use module::{GoAbi, Module};
pub use vfs::Grant;

impl Module {
    /// Run the program to completion on a new guest thread and return Go's exit code
    /// (`0` when `main` returns, `2` for a panic or deadlock, whatever `os.Exit` was given).
    ///
    /// # Errors
    /// [`Error::ArgsTooLong`] if `args` and `env` don't fit, [`Error::Trap`] if the guest traps,
    /// [`Error::UncaughtException`] if a JS exception escapes, [`Error::Host`] if the realm
    /// can't be set up.
    pub fn run(&self, config: Config) -> Result<i32, Error> {
        self.on_guest_thread(config, |_| ()).map(|(code, ())| code)
    }

    /// Like [`Module::run`], also reporting how many value ids Go held at exit and the values
    /// table's capacity (its high-water mark): for checking that the table stays bounded.
    #[doc(hidden)]
    pub fn run_with_table_stats(&self, config: Config) -> Result<(i32, usize, usize), Error> {
        self.on_guest_thread(config, |guest| guest.value_table_stats())
            .map(|(code, (live, cap))| (code, live, cap))
    }

    /// Instantiate and run on a new thread with a native stack big enough for the guest, then
    /// let `inspect` look at the finished guest before it is torn down.
    fn on_guest_thread<R: Send + 'static>(
        &self,
        config: Config,
        inspect: impl FnOnce(&instance::Guest) -> R + Send + 'static,
    ) -> Result<(i32, R), Error> {
        let module = self.clone();
        std::thread::Builder::new()
            .name("gojs-guest".into())
            .stack_size(engine::GUEST_THREAD_STACK)
            .spawn(move || {
                let (mut guest, args, env) = instance::Guest::new(&module, config)?;
                let code = event_loop::run(&mut guest, &args, &env, None)?;
                Ok((code, inspect(&guest)))
            })
            .map_err(|e| Error::Host(format!("cannot start the guest thread: {e}")))?
            .join()
            .unwrap_or_else(|_| Err(Error::Host("the guest thread panicked".into())))
    }
}
