//! `runtime.*` imports: exit, output, clocks, timeout events, random data
//! (Go's `runtime/os_js.go`, `runtime/lock_js.go`, `runtime/mem_js.go`, `runtime/timestub2.go`).

use wasmtime::{Caller, Linker};

use super::Call;
use crate::instance::HostState;

/// `func wasmExit(code int32)`: Go is exiting; after this import returns, Go unwinds its own
/// stack out of the current `run`/`resume`.
pub(super) fn wasm_exit(c: &mut Call) -> wasmtime::Result<()> {
    let code = c.with_mem(|m, f| f.i32(m, 8))?;
    c.state().host.exit_code.set(Some(code));
    Ok(())
}

/// `func wasmWrite(fd uintptr, p unsafe.Pointer, n int32)`: the runtime's own prints
/// (`println`, panics, fatal errors).
pub(super) fn wasm_write(c: &mut Call) -> wasmtime::Result<()> {
    let bytes = c.with_mem(|m, f| {
        let fd = f.i64(m, 8)?;
        let p = f.i64(m, 16)? as u64;
        let n = f.i32(m, 24)?;
        Ok((fd, m.bytes(p, u64::from(n.max(0) as u32))?.to_vec()))
    })?;
    // A closed stdout/stderr must not kill the host; Go ignores write errors here too.
    let _ = c.state().host.write_fd(bytes.0, &bytes.1);
    Ok(())
}

/// `func resetMemoryDataView()`: memory grew. Nothing is cached across calls, so nothing to do.
pub(super) fn reset_memory_data_view(_: &mut Call) -> wasmtime::Result<()> {
    Ok(())
}

/// `func nanotime1() int64`: monotonic nanoseconds (origin: wall clock at instance start).
pub(super) fn nanotime1(c: &mut Call) -> wasmtime::Result<()> {
    let now = c.state().host.clock.nanotime();
    c.with_mem(|m, f| f.set_i64(m, 8, now))
}

/// `func walltime() (sec int64, nsec int32)`: the instance's clock (see `Config::start_time`).
pub(super) fn walltime(c: &mut Call) -> wasmtime::Result<()> {
    let (sec, nsec) = c.state().host.clock.walltime();
    c.with_mem(|m, f| {
        f.set_i64(m, 8, sec)?;
        f.set_i32(m, 16, nsec)
    })
}

/// `func scheduleTimeoutEvent(delay int64) int32`: ask for a `resume` after `delay` ms.
pub(super) fn schedule_timeout_event(c: &mut Call) -> wasmtime::Result<()> {
    let delay = c.with_mem(|m, f| f.i64(m, 8))?;
    let id = c.state().host.timers.borrow_mut().schedule_go(delay);
    c.with_mem(|m, f| f.set_i32(m, 16, id))
}

/// `func clearTimeoutEvent(id int32)`.
pub(super) fn clear_timeout_event(c: &mut Call) -> wasmtime::Result<()> {
    let id = c.with_mem(|m, f| f.i32(m, 8))?;
    c.state().host.timers.borrow_mut().clear_go(id);
    Ok(())
}

/// `func getRandomData(r []byte)`: fill from the OS CSPRNG.
pub(super) fn get_random_data(c: &mut Call) -> wasmtime::Result<()> {
    c.with_mem(|m, f| {
        let s = f.slice(m, 8)?;
        let buf = m.bytes_mut(s.ptr, s.len)?;
        // The OS random source failing is not something Go can handle; fill what we can.
        let _ = getrandom::fill(buf);
        Ok(())
    })
}

/// Imports that aren't `(func (param i32))`: `debug(value)` and `syscall/js`'s test hooks
/// `_gotest.add(a, b uint32) uint32` and `_gotest.callExport(a int32, b int64) int64`.
pub(super) fn link_extras(linker: &mut Linker<HostState>, module: &str) -> wasmtime::Result<()> {
    linker.func_wrap(
        module,
        "debug",
        |caller: Caller<'_, HostState>, value: i32| {
            let _ = caller
                .data()
                .host
                .write_fd(1, format!("{value}\n").as_bytes());
        },
    )?;
    linker.func_wrap("_gotest", "add", |a: i32, b: i32| a.wrapping_add(b))?;
    linker.func_wrap(
        "_gotest",
        "callExport",
        |mut caller: Caller<'_, HostState>, a: i32, b: i64| {
            // The module's exports, not the caller's: with a split module the caller may be
            // the secondary, which exports nothing.
            let instance = caller.data().guest()?.instance;
            let export0 = instance.get_func(&mut caller, "testExport0");
            let export = instance.get_func(&mut caller, "testExport");
            let (Some(export0), Some(export)) = (export0, export) else {
                return Err(wasmtime::Error::msg(
                    "_gotest.callExport: module has no testExport0/testExport exports",
                ));
            };
            export0.typed::<(), ()>(&caller)?.call(&mut caller, ())?;
            export
                .typed::<(i32, i64), i64>(&caller)?
                .call(&mut caller, (a, b))
        },
    )?;
    Ok(())
}
