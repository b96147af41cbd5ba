//! Re-entry between the two engines: the only module that hands the wasm store to JS code.
//!
//! Go calls an import (wasmtime gives it a `Caller`); the import calls JS (QuickJS); JS may call a
//! `js.FuncOf` wrapper, which must call Go's `resume` export — on the *same* store, which the
//! import is still borrowing further down the native stack. Rust can't express that borrow across
//! the C engine, so:
//!
//! * Whoever is about to run JS **publishes** its store context with [`publish`]: a raw pointer in
//!   a thread-local, restored to the previous value when the scope ends (also on unwind).
//!   Imports publish their `Caller`; the event loop publishes its `Store`.
//! * A wrapper **borrows** the published context with [`with_active`], which *takes* the pointer
//!   out of the thread-local for the duration of the borrow. Any JS that runs during that borrow
//!   can only be reached through another import, which publishes its own `Caller` first, so two
//!   `&mut` to one context never coexist.
//!
//! Invariants the rest of the crate keeps:
//! 1. Between `publish` and the end of its closure, the publisher does not touch its store
//!    context (it is exclusively borrowed by `publish` itself, so the compiler enforces this).
//! 2. Code inside `with_active` never runs JS directly (only wasm, via `resume`).
//! 3. Everything happens on the guest's own thread; the pointer is thread-local.
//!
//! When Go exits or traps in a nested `resume`, the wrapper can't unwind the wasm frames further
//! down. It parks the reason in [`Host::abort`](crate::host::Host) and throws an *uncatchable* JS
//! error; each import checks for a parked abort after every JS call and returns [`Unwind`],
//! which unwinds its own wasm activation, and so on down to the event loop.

use std::cell::Cell;
use std::ptr;

use wasmtime::StoreContextMut;

use crate::instance::HostState;

type Active = StoreContextMut<'static, HostState>;

thread_local! {
    static ACTIVE: Cell<*mut Active> = const { Cell::new(ptr::null_mut()) };
}

/// Restores the previously published pointer when dropped.
struct Restore(*mut Active);

impl Drop for Restore {
    fn drop(&mut self) {
        ACTIVE.with(|a| a.set(self.0));
    }
}

/// Run `f` (which runs JS) with `store` published for wrappers that need to resume Go.
pub(crate) fn publish<R>(store: &mut StoreContextMut<'_, HostState>, f: impl FnOnce() -> R) -> R {
    // Erasing the lifetime is sound: the pointer is only dereferenced while `store` is still
    // exclusively borrowed by this call (it is restored before we return or unwind).
    let p = (store as *mut StoreContextMut<'_, HostState>).cast::<Active>();
    let prev = ACTIVE.with(|a| a.replace(p));
    let _restore = Restore(prev);
    f()
}

/// Borrow the published store context, if any. The context is unpublished while `f` runs.
pub(crate) fn with_active<R>(
    f: impl FnOnce(&mut StoreContextMut<'_, HostState>) -> R,
) -> Option<R> {
    let p = ACTIVE.with(|a| a.replace(ptr::null_mut()));
    if p.is_null() {
        return None;
    }
    let _restore = Restore(p);
    // SAFETY: `p` was published by `publish`, whose exclusive borrow is still live further down
    // this thread's stack (it restores the slot before returning), and we took it out of the
    // slot, so this is the only live reference derived from it.
    Some(f(unsafe { &mut *p }))
}

/// The error an import returns to unwind its wasm activation after Go exited or trapped in a
/// nested call; the real reason is parked in the host and picked up by the event loop.
#[derive(Debug, thiserror::Error)]
#[error("unwinding after the Go program stopped in a nested call")]
pub(crate) struct Unwind;
