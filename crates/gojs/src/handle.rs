//! Running a Go program on its own thread and posting work into its event loop from others.

use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::event_loop::Task;
use crate::{Config, Error, Module, engine, event_loop, instance};

/// A call made on the loop thread: the outer `Err` is fatal to the instance, the inner the
/// caller's.
type GuestCall =
    fn(&mut instance::Guest, &str, Vec<crate::Value>) -> Result<Result<crate::Value, Error>, Error>;

/// A Go program running on its own event-loop thread (from [`Module::spawn`]).
///
/// The program runs to completion like under [`Module::run`], except that while any [`Handle`]
/// to it is alive its event loop waits for posted work instead of declaring a deadlock.
/// [`Running::wait`] waits for the end; dropping a `Running` instead stops the program at its
/// event loop's next turn (Go is not told; later calls through handles get [`Error::Exited`]).
pub struct Running {
    handle: Option<Handle>,
    thread: Option<JoinHandle<Result<i32, Error>>>,
    /// Go's exit code, sent as soon as Go exits (the thread may serve exports longer).
    exit: mpsc::Receiver<i32>,
}

/// A cloneable, thread-safe way to post work into a running program's event loop.
///
/// A live handle keeps the program's event loop waiting for work, as an open handle keeps
/// Node's loop alive: drop every handle (and call [`Running::wait`]) to let a program that is
/// blocked forever report its deadlock.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Task>,
}

impl Module {
    /// Start the program on a new event-loop thread and return at once.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), gojs::Error> {
    /// let engine = gojs::Engine::new()?;
    /// let module = gojs::Module::from_file(&engine, "greeter.wasm")?;
    /// let running = module.spawn(gojs::Config::new())?;
    /// // Once Go is idle (blocked on `select {}` after publishing `greeter`), call it.
    /// let reply = running.handle().eval_json(r#"greeter("gopher")"#)?;
    /// assert_eq!(reply, r#""Hello gopher""#);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Host`] if the thread can't be started. Errors of the program itself (traps,
    /// uncaught exceptions, a failed setup) are returned by [`Running::wait`].
    pub fn spawn(&self, config: Config) -> Result<Running, Error> {
        let (tx, rx) = mpsc::channel();
        let (exit_tx, exit) = mpsc::sync_channel(1);
        let module = self.clone();
        let thread = std::thread::Builder::new()
            .name("gojs-guest".into())
            .stack_size(engine::GUEST_THREAD_STACK)
            .spawn(move || {
                let (mut guest, args, env) = instance::Guest::new(&module, config)?;
                event_loop::run(&mut guest, &args, &env, Some(rx), |code| {
                    let _ = exit_tx.send(code);
                })
            })
            .map_err(|e| Error::Host(format!("cannot start the guest thread: {e}")))?;
        Ok(Running {
            handle: Some(Handle { tx }),
            thread: Some(thread),
            exit,
        })
    }
}

impl Running {
    /// A handle for posting work into this program's event loop.
    pub fn handle(&self) -> Handle {
        self.handle
            .clone()
            .expect("the handle is only taken by `wait`")
    }

    /// Drop this `Running`'s own handle and wait for the program to exit; Go's exit code.
    ///
    /// Handles still held elsewhere keep the instance (not Go) alive after that: its
    /// `//go:wasmexport` functions stay callable, as under Node.
    ///
    /// # Errors
    /// As [`Module::run`].
    pub fn wait(mut self) -> Result<i32, Error> {
        self.handle = None;
        let thread = self.thread.take().expect("only `wait` takes the thread");
        match self.exit.recv() {
            Ok(code) => Ok(code),
            // The loop ended without Go exiting normally: a trap, an uncaught exception.
            Err(_) => thread
                .join()
                .unwrap_or_else(|_| Err(Error::Host("the guest thread panicked".into()))),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.thread.is_none() {
            return;
        }
        if let Some(h) = self.handle.take() {
            // End the event loop at its next turn; the thread then tears the instance down.
            let _ = h.tx.send(Task {
                when_idle: false,
                run: Box::new(|_| {
                    Err(Error::Exited {
                        code: None,
                        panic: None,
                    })
                }),
            });
        }
    }
}

impl Handle {
    /// Once Go is idle, evaluate JavaScript `source` in the program's realm (where Go's
    /// `js.Global()` lives) and return the result as JSON (`JSON.stringify`; `undefined` and
    /// functions give `"undefined"`). The call blocks until the result is ready.
    ///
    /// "Idle" means nothing but posted work can wake Go: `run` returned or every goroutine is
    /// blocked, and no Go timer is pending.
    ///
    /// # Errors
    /// [`Error::JsException`] if the code throws (a Go panic inside a `js.FuncOf` callback
    /// surfaces like this while Go keeps running), [`Error::Exited`] if the program has exited
    /// (before or during the call), and the program's fatal errors ([`Error::Trap`], ...) are
    /// returned by [`Running::wait`], this call sees [`Error::Exited`].
    pub fn eval_json(&self, source: impl Into<String>) -> Result<String, Error> {
        let source = source.into();
        self.request(true, move |guest| guest.eval_json(&source))
    }

    /// Once Go is idle, call the global function `name` that Go published
    /// (`js.Global().Set(name, js.FuncOf(…))`) — or, if there is none, the `//go:wasmexport`
    /// function `name` — with `args`, and convert its result to `R`.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), gojs::Error> {
    /// # let engine = gojs::Engine::new()?;
    /// # let module = gojs::Module::from_file(&engine, "greeter.wasm")?;
    /// let running = module.spawn(gojs::Config::new())?;
    /// let name: String = running.handle().call("greeter", ("gopher",))?;
    /// let sum: i32 = running.handle().call("add", (40, 2))?; // a //go:wasmexport function
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::NoSuchFunction`] if Go published nothing of that name, [`Error::JsException`]
    /// if the function throws, [`Error::Conversion`] if the result isn't an `R` (or an
    /// export's arguments aren't numbers), [`Error::Exited`] — with the panic message when a Go
    /// panic ended the program — if Go exited before or during the call.
    pub fn call<R: crate::FromValue>(
        &self,
        name: &str,
        args: impl crate::IntoArgs,
    ) -> Result<R, Error> {
        self.call_with(name, args, instance::Guest::call)
    }

    /// Like [`Handle::call`], but only `//go:wasmexport` functions (Go 1.24+).
    ///
    /// # Errors
    /// As [`Handle::call`].
    pub fn call_export<R: crate::FromValue>(
        &self,
        name: &str,
        args: impl crate::IntoArgs,
    ) -> Result<R, Error> {
        self.call_with(name, args, instance::Guest::call_export)
    }

    /// Once Go is idle: whether the program has moved from Winch's code to Cranelift's
    /// ([`crate::Compiler::Auto`]). For tests.
    #[doc(hidden)]
    pub fn moved_to_cranelift(&self) -> Result<bool, Error> {
        self.request(true, |guest| Ok(Ok(guest.moved())))
    }

    /// Wait until Go is idle (nothing but posted work can wake it): `run_until_idle`, where
    /// [`Running::wait`] is `run_to_exit`.
    ///
    /// # Errors
    /// [`Error::Exited`] if Go exits instead.
    pub fn run_until_idle(&self) -> Result<(), Error> {
        self.request(true, |guest| {
            Ok(match guest.exit_code() {
                Some(_) => Err(guest.exited()),
                None => Ok(()),
            })
        })
    }

    /// Once Go is idle, call a JS function Rust kept (see [`crate::JsFunction`]) — typically a
    /// `js.FuncOf` callback Go handed to a host function — and convert its result.
    ///
    /// # Errors
    /// As [`Handle::call`]; [`Error::Conversion`] for a function of another instance.
    pub fn invoke<R: crate::FromValue>(
        &self,
        f: &crate::JsFunction,
        args: impl crate::IntoArgs,
    ) -> Result<R, Error> {
        let f = f.clone();
        let args = args.into_args();
        let v = self.request(true, move |guest| guest.invoke(&f, args))?;
        Ok(R::from_value(v)?)
    }

    /// [`Handle::call`] for async code: returns at once with a future of the result, so an
    /// async task awaits Go without blocking its executor's thread. Works with any executor.
    ///
    /// ```no_run
    /// # async fn demo(running: &gojs::Running) -> Result<(), gojs::Error> {
    /// let reply: String = running.handle().call_async("greeter", ("gopher",)).await?;
    /// # Ok(()) }
    /// ```
    pub fn call_async<R: crate::FromValue + Send + 'static>(
        &self,
        name: &str,
        args: impl crate::IntoArgs,
    ) -> Reply<R> {
        let name = name.to_string();
        let args = args.into_args();
        let (reply, responder) = Reply::new();
        let task = Task {
            when_idle: true,
            run: Box::new(move |guest| {
                let outcome = guest.call(&name, args)?;
                responder.answer(outcome.and_then(|v| Ok(R::from_value(v)?)));
                Ok(())
            }),
        };
        // If the loop is gone the task (and its responder) is dropped: the reply says so.
        let _ = self.tx.send(task);
        reply
    }

    /// Once idle, `how(guest, name, args)`; convert the result.
    fn call_with<R: crate::FromValue>(
        &self,
        name: &str,
        args: impl crate::IntoArgs,
        how: GuestCall,
    ) -> Result<R, Error> {
        let name = name.to_string();
        let args = args.into_args();
        let v = self.request(true, move |guest| how(guest, &name, args))?;
        Ok(R::from_value(v)?)
    }

    /// Post `f` to run on the loop thread and wait for its answer.
    fn request<R: Send + 'static>(
        &self,
        when_idle: bool,
        f: impl FnOnce(&mut instance::Guest) -> Result<Result<R, Error>, Error> + Send + 'static,
    ) -> Result<R, Error> {
        let (reply, answer) = mpsc::sync_channel(1);
        let task = Task {
            when_idle,
            run: Box::new(move |guest| {
                let outcome = f(guest)?;
                let _ = reply.send(outcome);
                Ok(())
            }),
        };
        let gone = || Error::Exited {
            code: None,
            panic: None,
        };
        self.tx.send(task).map_err(|_| gone())?;
        answer.recv().unwrap_or_else(|_| Err(gone()))
    }
}

/// The future result of [`Handle::call_async`].
pub struct Reply<R> {
    slot: std::sync::Arc<std::sync::Mutex<Slot<R>>>,
}

struct Slot<R> {
    value: Option<Result<R, Error>>,
    waker: Option<std::task::Waker>,
}

/// The loop's end of a [`Reply`]; answers `Exited` if dropped unanswered.
struct Responder<R> {
    slot: Option<std::sync::Arc<std::sync::Mutex<Slot<R>>>>,
}

impl<R> Reply<R> {
    fn new() -> (Reply<R>, Responder<R>) {
        let slot = std::sync::Arc::new(std::sync::Mutex::new(Slot {
            value: None,
            waker: None,
        }));
        (Reply { slot: slot.clone() }, Responder { slot: Some(slot) })
    }
}

impl<R> Responder<R> {
    fn answer(mut self, value: Result<R, Error>) {
        if let Some(slot) = self.slot.take() {
            let mut s = slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            s.value = Some(value);
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        }
    }
}

impl<R> Drop for Responder<R> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let mut s = slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            s.value = Some(Err(Error::Exited {
                code: None,
                panic: None,
            }));
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        }
    }
}

impl<R> std::future::Future for Reply<R> {
    type Output = Result<R, Error>;
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let mut s = self
            .slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match s.value.take() {
            Some(v) => std::task::Poll::Ready(v),
            None => {
                s.waker = Some(cx.waker().clone());
                std::task::Poll::Pending
            }
        }
    }
}
