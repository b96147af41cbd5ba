//! Run Go programs compiled with `GOOS=js GOARCH=wasm` natively, without Node — and embed them
//! in Rust.
//!
//! gojs implements the host that Go's `wasm_exec.js` provides — the `gojs` import module
//! (`go` before Go 1.21), a JavaScript realm holding the values Go sees (QuickJS), the Go object
//! for `js.FuncOf` callbacks, an event loop for timers, and Node's `fs`/`process` over a
//! capability-checked filesystem — in Rust, on wasmtime.
//!
//! # Calling Go from Rust, and Rust from Go
//!
//! The Go side publishes a function and gets one from its host:
//!
//! ```go
//! func main() {
//!     js.Global().Set("greeter", js.FuncOf(func(this js.Value, args []js.Value) any {
//!         stamp := js.Global().Call("hostStamp", args[0]).String() // a Rust closure
//!         fmt.Println("Hello", args[0].String())
//!         return stamp
//!     }))
//!     select {} // stay alive to be called
//! }
//! ```
//!
//! The Rust side loads the module once, runs an instance on its own event-loop thread, waits
//! until Go is idle and calls `greeter` with typed arguments and result:
//!
//! ```no_run
//! # fn main() -> Result<(), gojs::Error> {
//! let engine = gojs::Engine::new()?; // compiled code is cached on disk
//! let module = gojs::Module::from_file(&engine, "greeter.wasm")?;
//! let config = gojs::Config::new()
//!     .args(["greeter.wasm"])
//!     .func("hostStamp", |name: String| format!("{name}@{}", std::process::id()))
//!     .ro_dir("assets", "/assets"); // the only host files the guest may read
//! let running = module.spawn(config)?;
//! let stamp: String = running.handle().call("greeter", ("gopher",))?; // prints "Hello gopher"
//! println!("{stamp}");
//! # Ok(()) }
//! ```
//!
//! To just run a program to completion (like `gojs run`), use [`Module::run`]:
//!
//! ```no_run
//! # fn main() -> Result<(), gojs::Error> {
//! let engine = gojs::Engine::new()?;
//! let module = gojs::Module::from_file(&engine, "hello.wasm")?;
//! let code = module.run(gojs::Config::new().args(["hello.wasm", "world"]))?;
//! std::process::exit(code);
//! # }
//! ```
//!
//! # Safety model
//!
//! [`Config`]'s defaults deny: no environment, no files, empty stdin. A guest reaches only what
//! the embedder grants ([`Config::dir`], [`Config::ro_dir`], [`Config::env`],
//! [`Config::func`], …); wild pointers and bad values from the guest become JS exceptions or
//! traps with a clear message ([`Error`]), never a host crash. Its memory is bounded: linear
//! memory by wasm32's 4 GiB and its JS heap by 4 GiB, or both together by
//! [`Config::max_memory`].
//!
//! # Values
//!
//! Arguments and results cross as [`Value`]s, converted with [`IntoValue`] and [`FromValue`]:
//! numbers, `bool`, `String`, `Option`, `Vec`, [`Bytes`] (a `Uint8Array`), maps, and any serde
//! type through [`Json`].
//!
//! # Logging
//!
//! gojs emits [`tracing`](https://docs.rs/tracing) events: at `debug`, what each load takes
//! from the compile cache or compiles and how long each step takes (a first run's split, the
//! rewrite, the compile, parts, cache writes). It installs no subscriber; an embedder that
//! wants them installs its own (the `gojs` command does, under `GOJS_LOG`).

mod abi;
mod cache;
mod convert;
mod courtesy;
mod engine;
mod error;
mod event_loop;
mod fill;
mod handle;
mod host;
mod imports;
mod instance;
mod jumps;
mod module;
mod narrow;
mod pclntab;
mod realm;
mod reentry;
mod rewrite;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod sampler;
#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
#[path = "sampler_none.rs"]
mod sampler;
mod split;
mod tier;
mod values;
mod vfs;

pub use abi::ArgsTooLong;
pub use convert::{
    Bytes, ConversionError, FromValue, HostFn, IntoArgs, IntoResult, IntoValue, JsFunction, Json,
    Value,
};
pub use engine::{
    Compiler, Engine, call_scan_report, direct_jumps, first_run_split, rewritten,
    wait_for_background_work,
};
pub use error::Error;
pub use handle::{Handle, Reply, Running};
pub use instance::{Config, Input, Output};
pub use module::{GoAbi, Module};
pub use vfs::{Grant, Refusal};

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

    /// Like [`Module::run`], also returning the first path the program was refused for want
    /// of a grant ([`Grant`]), if any: what a host can tell its user when the program then
    /// fails (`gojs run` does, for a non-zero exit code).
    ///
    /// ```no_run
    /// # fn main() -> Result<(), gojs::Error> {
    /// let engine = gojs::Engine::new()?;
    /// let module = gojs::Module::from_file(&engine, "prog.wasm")?;
    /// let (code, refused) = module.run_with_refusal(gojs::Config::new())?;
    /// if let (1.., Some(r)) = (code, refused) {
    ///     eprintln!("note: {r}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`Module::run`].
    pub fn run_with_refusal(&self, config: Config) -> Result<(i32, Option<Refusal>), Error> {
        self.on_guest_thread(config, |guest| guest.refusal())
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
                let code = event_loop::run(&mut guest, &args, &env, None, |_| ())?;
                Ok((code, inspect(&guest)))
            })
            .map_err(|e| Error::Host(format!("cannot start the guest thread: {e}")))?
            .join()
            .unwrap_or_else(|_| Err(Error::Host("the guest thread panicked".into())))
    }
}
