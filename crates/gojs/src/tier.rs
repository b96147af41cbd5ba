//! Tiering up within a run: moving a running Go program from Winch's code to Cranelift's once
//! Cranelift's code for its module is in the cache (RATIONALE.md, "Why move a running program to
//! Cranelift's code?").
//!
//! Everything a Go js/wasm program is lives in its linear memory and eight globals (`SP`, `CTXT`,
//! `g`, `RET0`–`RET3`, `PAUSE`, numbered so by Go's linker); the wasm stack holds nothing that
//! matters whenever control is back in `wasm_pc_f_loop`, Go's trampoline: it calls the function
//! whose PC is stored at `SP-8` until `PAUSE` is set, and every goroutine switch unwinds the wasm
//! stack back to it. So a program stopped in that loop continues in another instance of the same
//! program, compiled by another compiler, once memory and globals are copied over.
//!
//! The rewrite ([`TierPlan`]) exports the globals and the loop from every module Go's linker
//! made (from a split module's first part), and in Winch's code also makes the loop stop on a
//! request ([`FLAG`]) and records the current `g` at [`SHADOW`] whenever Go sets it (in every
//! part). A watcher thread of the instance waits for Cranelift's code (and, meanwhile, asks
//! the background compile to take its module next: [`crate::courtesy::want`]), then requests
//! the stop and preempts the running goroutine the way Go's own scheduler does
//! (`g.stackguard0 = stackPreempt`), so that its next call switches goroutines and so returns
//! to the loop. The instance then continues in Cranelift's code (`Guest::move_to`).
//!
//! Both words lie below 4096, where no Go data is (Go's linker starts data at 4096 + 8192, the
//! argument block comes at 4096) and which Go never reads: it checks nil pointers itself.

use wasmparser::{BinaryReader, Operator};

use crate::rewrite::{Patch, With, read_u32, write_u32};

/// The word the loop reads: [`REQUESTED`] | [`ALLOWED`] makes it stop; it then writes
/// [`STOPPED`].
pub(crate) const FLAG: u32 = 0xf00;
/// Where Go's current `g` is recorded (an i64) whenever Go sets it.
pub(crate) const SHADOW: u32 = 0xf08;
/// Set by the watcher: Cranelift's code is ready, stop in the loop.
pub(crate) const REQUESTED: u32 = 1;
/// Set by the host while it runs Go for the event loop (`run`, `resume` for a timeout, a
/// completed fs call's callback), not for a callback or an export whose caller waits for Go's
/// answer.
pub(crate) const ALLOWED: u32 = 2;
/// Written by the loop when it stopped on request.
pub(crate) const STOPPED: u32 = 4;

/// The names of the exports the rewrite adds: the loop, and the globals in Go's order.
pub(crate) const LOOP_EXPORT: &str = "gojs.loop";
pub(crate) const GLOBAL_EXPORTS: [&str; 8] = [
    "gojs.sp",
    "gojs.ctxt",
    "gojs.g",
    "gojs.ret0",
    "gojs.ret1",
    "gojs.ret2",
    "gojs.ret3",
    "gojs.pause",
];

/// Go's globals.
const G: u32 = 2;
const PAUSE: u32 = 7;

/// What the rewrite adds for tiering up.
pub(crate) struct TierPlan {
    /// `wasm_pc_f_loop`'s function index (before any shift).
    pub loop_fn: u32,
    /// How many functions the module imports (the first body's index; at most `loop_fn`).
    pub imported: u32,
}

impl TierPlan {
    /// The plan for a module shaped as Go's linker makes them (or a split module's primary):
    /// eight mutable globals of Go's types and no imported ones, a `resume` export whose last
    /// call is the loop, and none of the names the plan exports. `None` otherwise (the module
    /// then can't tier up; a split module's other parts import their globals).
    pub(crate) fn find(wasm: &[u8]) -> Option<TierPlan> {
        use wasmparser::{Parser, Payload, ValType};
        let mut imported = 0u32;
        let mut resume = None;
        let mut globals = Vec::new();
        let mut bodies = Vec::new();
        for payload in Parser::new(0).parse_all(wasm) {
            match payload.ok()? {
                Payload::ImportSection(r) => {
                    for imp in r.into_imports() {
                        match imp.ok()?.ty {
                            wasmparser::TypeRef::Func(_) => imported += 1,
                            wasmparser::TypeRef::Global(_) => return None,
                            _ => {}
                        }
                    }
                }
                Payload::GlobalSection(r) => {
                    for g in r.into_iter().take(8) {
                        let g = g.ok()?.ty;
                        globals.push((g.content_type, g.mutable));
                    }
                }
                Payload::ExportSection(r) => {
                    for e in r {
                        let e = e.ok()?;
                        if e.name == LOOP_EXPORT || GLOBAL_EXPORTS.contains(&e.name) {
                            return None;
                        }
                        if e.name == "resume" && e.kind == wasmparser::ExternalKind::Func {
                            resume = Some(e.index);
                        }
                    }
                }
                Payload::CodeSectionEntry(body) => bodies.push(body),
                _ => {}
            }
        }
        let (i32, i64) = (ValType::I32, ValType::I64);
        let expected = [i32, i64, i64, i64, i64, i64, i64, i32];
        if globals.len() != 8 || globals.iter().zip(expected).any(|(g, t)| *g != (t, true)) {
            return None;
        }
        let resume = bodies.get(resume?.checked_sub(imported)? as usize)?;
        let mut last_call = None;
        let mut ops = resume.get_operators_reader().ok()?;
        while !ops.eof() {
            if let Operator::Call { function_index } = ops.read().ok()? {
                last_call = Some(function_index);
            }
        }
        let loop_fn = last_call?;
        let body = bodies.get(loop_fn.checked_sub(imported)? as usize)?;
        loop_patches(body.as_bytes())?;
        Some(TierPlan { loop_fn, imported })
    }

    /// The export section's contents (already shifted, if the fill pass shifted functions) with
    /// the plan's exports added; `shift` maps a function index to its new one.
    pub(crate) fn add_exports(
        &self,
        content: &[u8],
        shift: impl Fn(u32) -> u32,
    ) -> Option<Vec<u8>> {
        let (count, n) = read_u32(content)?;
        let mut out = Vec::with_capacity(content.len() + 128);
        write_u32(
            &mut out,
            count.checked_add(1 + GLOBAL_EXPORTS.len() as u32)?,
        );
        out.extend_from_slice(&content[n..]);
        let mut export = |name: &str, kind: u8, index: u32| {
            write_u32(&mut out, name.len() as u32);
            out.extend_from_slice(name.as_bytes());
            out.push(kind);
            write_u32(&mut out, index);
        };
        export(LOOP_EXPORT, 0x00, shift(self.loop_fn));
        for (i, name) in GLOBAL_EXPORTS.iter().enumerate() {
            export(name, 0x03, i as u32);
        }
        Some(out)
    }
}

/// The loop's patches for Winch's code: `global.get PAUSE; i32.eqz; br_if 0` at the loop's end
/// also asks that [`FLAG`] is not exactly [`REQUESTED`] | [`ALLOWED`], and the exit (`i32.const
/// 0; global.set PAUSE`) first writes [`STOPPED`] if `PAUSE` is clear (the loop stopped on
/// request: Go pauses and exits with `PAUSE` set). `None` unless the body has each exactly once.
pub(crate) fn loop_patches(body: &[u8]) -> Option<Vec<Patch>> {
    let mut ops = wasmparser::FunctionBody::new(BinaryReader::new(body, 0))
        .get_operators_reader()
        .ok()?;
    let mut seen: Vec<(Operator<'_>, usize, usize)> = Vec::new();
    let (mut test, mut exit) = (None, None);
    while !ops.eof() {
        let start = ops.original_position();
        let op = ops.read().ok()?;
        seen.push((op, start, ops.original_position()));
        let n = seen.len();
        if n >= 3
            && matches!(
                seen[n - 3].0,
                Operator::GlobalGet {
                    global_index: PAUSE
                }
            )
            && matches!(seen[n - 2].0, Operator::I32Eqz)
            && matches!(seen[n - 1].0, Operator::BrIf { relative_depth: 0 })
        {
            test.is_none().then_some(())?;
            test = Some((seen[n - 3].1, seen[n - 1].2));
        }
        if n >= 2
            && matches!(seen[n - 2].0, Operator::I32Const { value: 0 })
            && matches!(
                seen[n - 1].0,
                Operator::GlobalSet {
                    global_index: PAUSE
                }
            )
        {
            (test.is_some() && exit.is_none()).then_some(())?;
            exit = Some((seen[n - 2].1, seen[n - 1].2));
        }
    }
    let ((t0, t1), (e0, e1)) = (test?, exit?);
    let mut flag = Vec::new();
    write_u32(&mut flag, FLAG);
    let mut new_test = vec![0x23, PAUSE as u8, 0x45, 0x41, 0x00, 0x28, 0x02];
    new_test.extend_from_slice(&flag);
    new_test.extend_from_slice(&[0x41, (REQUESTED | ALLOWED) as u8, 0x47, 0x71, 0x0d, 0x00]);
    let mut new_exit = vec![0x23, PAUSE as u8, 0x45, 0x04, 0x40, 0x41, 0x00];
    new_exit.extend_from_slice(&[0x41, STOPPED as u8, 0x36, 0x02]);
    new_exit.extend_from_slice(&flag);
    new_exit.extend_from_slice(&[0x0b, 0x41, 0x00, 0x24, PAUSE as u8]);
    Some(vec![
        Patch {
            start: t0,
            end: t1,
            with: With::Bytes(new_test),
        },
        Patch {
            start: e0,
            end: e1,
            with: With::Bytes(new_exit),
        },
    ])
}

/// What replaces `global.set g` in Winch's code: the same, then `g` stored at [`SHADOW`].
pub(crate) fn shadow_set() -> Vec<u8> {
    let mut out = vec![0x24, G as u8, 0x41, 0x00, 0x23, G as u8, 0x37, 0x03];
    write_u32(&mut out, SHADOW);
    out
}

/// Whether `op` sets Go's `g`.
pub(crate) fn sets_g(op: &Operator<'_>) -> bool {
    matches!(op, Operator::GlobalSet { global_index: G })
}

/// Where a module's Cranelift code will be: the engine it loads into and its cache entry.
#[derive(Clone)]
pub(crate) struct Upgrade {
    pub engine: wasmtime::Engine,
    pub entry: std::path::PathBuf,
    /// The module's id for the background compile ([`crate::courtesy::want`]).
    pub module: u32,
}

/// How often the watcher looks for Cranelift's code in the cache.
pub(crate) const POLL: std::time::Duration = std::time::Duration::from_millis(20);
/// How often it asks again for a stop once the code is there, while Go runs where it may stop
/// (until the instance has moved; otherwise every [`POLL`]).
const NUDGE: std::time::Duration = std::time::Duration::from_millis(2);

/// How long Go runs, resumed for a timer, before it is asked to stop for a move.
pub(crate) const HOLD: std::time::Duration = std::time::Duration::from_millis(10);

/// About how long moving a program whose memory is `len` bytes takes: the loop moves a
/// paused program only if no timer is due sooner (measured 2026-12-01 on the 2-core machine,
/// with pages made present before the copy: RATIONALE.md, "Why move a running program…").
pub(crate) fn move_time(len: usize) -> std::time::Duration {
    // 2.5 MiB: 2.4–3.0 ms; 19 MiB: ~15 ms (and the new code's first pages fault in after).
    std::time::Duration::from_micros(1500 + (len >> 20) as u64 * 1000)
}

/// Go's `stackPreempt` (`uintptrMask & -1314`): set as a goroutine's `stackguard0`, its next
/// call's stack check fails and `newstack` makes it yield.
const STACK_PREEMPT: u64 = 0xffff_ffff_ffff_fade;
/// Offsets in Go's `g` (`stack.lo`, `stack.hi`, `stackguard0`, `stackguard1`, `_panic`,
/// `_defer`, `m`: unchanged since Go 1.4) and in its `m` (`g0` first).
const G_STACKGUARD0: usize = 16;
const G_M: usize = 48;

/// What an instance and its watcher thread share.
pub(crate) struct Shared {
    /// The guest memory the watcher may write to; held while it writes, and by the instance
    /// while it moves (a base of 0: nothing to write to any more).
    target: std::sync::Mutex<Target>,
    /// Cranelift's code, once the watcher found it.
    ready: std::sync::Mutex<Option<wasmtime::Module>>,
    /// The instance moved, gave up moving, or is gone: the watcher ends.
    done: std::sync::atomic::AtomicBool,
    /// The event loop's thread while it waits with Go paused: woken when the code is ready,
    /// so that the program moves while it has nothing else to do.
    waiter: std::sync::Mutex<Option<std::thread::Thread>>,
    /// How many parts of Cranelift's code for a split first run the instance has placed
    /// (`Guest::install_hot`): the watcher asks for a stop while a later one is ready.
    hot_placed: std::sync::atomic::AtomicUsize,
}

#[derive(Clone, Copy)]
struct Target {
    base: usize,
    /// Bytes known to be accessible from `base` (memory only grows).
    len: usize,
    /// No stop is asked for before then ([`Shared::hold`]).
    hold: Option<std::time::Instant>,
}

impl Shared {
    pub(crate) fn new(base: *mut u8, len: usize) -> std::sync::Arc<Shared> {
        std::sync::Arc::new(Shared {
            target: std::sync::Mutex::new(Target {
                base: base as usize,
                len,
                hold: None,
            }),
            ready: std::sync::Mutex::new(None),
            done: std::sync::atomic::AtomicBool::new(false),
            waiter: std::sync::Mutex::new(None),
            hot_placed: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// The instance has placed (or passed over) the first `n` parts of Cranelift's code.
    pub(crate) fn hot_placed(&self, n: usize) {
        self.hot_placed
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the watcher has Cranelift's code; if not, the calling thread (the event loop,
    /// about to wait) is woken when it has.
    pub(crate) fn is_ready_or_wake_me(&self) -> bool {
        let ready = self
            .ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if ready.is_some() {
            return true;
        }
        *self
            .waiter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(std::thread::current());
        false
    }

    fn target(&self) -> std::sync::MutexGuard<'_, Target> {
        self.target
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Guest memory grew to at least `len` bytes (at `base`, which never moves).
    pub(crate) fn grew(&self, len: usize) {
        let mut t = self.target();
        if t.base != 0 {
            t.len = t.len.max(len);
        }
    }

    /// Cranelift's code, if the watcher has found it (taken: one move per instance).
    pub(crate) fn take_ready(&self) -> Option<wasmtime::Module> {
        self.ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// Stop the watcher: it writes to guest memory no more.
    pub(crate) fn finish(&self) {
        self.finish_with(|| ());
    }

    /// Run `f` (which moves the program, releasing the memory the watcher writes to) with that
    /// memory locked, then stop the watcher before letting go of the lock.
    pub(crate) fn finish_with<R>(&self, f: impl FnOnce() -> R) -> R {
        let mut t = self.target();
        let r = f();
        *t = Target {
            base: 0,
            len: 0,
            hold: None,
        };
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
        r
    }

    /// Ask for no stop during the next `d`, and withdraw a request made before: the loop
    /// resumes Go for a timer, and what the timer starts runs first. If Go pauses meanwhile
    /// the program moves while the loop waits (`Guest::move_while_idle`); if it runs on, it
    /// stops after `d`.
    pub(crate) fn hold(&self, d: std::time::Duration) {
        let mut t = self.target();
        if t.base == 0 || t.len < 4096 {
            return;
        }
        t.hold = Some(std::time::Instant::now() + d);
        // SAFETY: FLAG lies in the first 4096 bytes of the memory, there while `t` is held.
        let flag = unsafe {
            std::sync::atomic::AtomicU32::from_ptr((t.base as *mut u8).add(FLAG as usize).cast())
        };
        flag.fetch_and(!REQUESTED, std::sync::atomic::Ordering::SeqCst);
    }

    /// Ask the loop to stop and the running goroutine to yield (the watcher, with
    /// Cranelift's code ready); whether Go runs where it may stop (else the instance moves
    /// when Go resumes, or Go runs for a caller that waits: no need to ask again soon).
    fn request(&self) -> bool {
        use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
        let t = self.target();
        if t.base == 0 || t.len < 4096 {
            return false;
        }
        if t.hold.is_some_and(|h| std::time::Instant::now() < h) {
            return true;
        }
        let base = t.base as *mut u8;
        let word = |at: usize| -> Option<&AtomicU64> {
            (at.is_multiple_of(8) && at >= 4096 && at.checked_add(8)? <= t.len)
                // SAFETY: `at..at + 8` lies in guest memory's accessible bytes (its length
                // only grows, and the instance holds the lock while it moves or drops the
                // memory), aligned for an `AtomicU64`. Go's code may access the same bytes
                // meanwhile, as it may in a shared memory: the accesses are plain loads and
                // stores of whole words, which race but can't tear our view of memory.
                .then(|| unsafe { AtomicU64::from_ptr(base.add(at).cast()) })
        };
        // SAFETY: as above; FLAG and SHADOW lie in the first 4096 bytes, which are there.
        let (flag, shadow) = unsafe {
            (
                AtomicU32::from_ptr(base.add(FLAG as usize).cast()),
                AtomicU64::from_ptr(base.add(SHADOW as usize).cast()),
            )
        };
        let was = flag.fetch_or(REQUESTED, Ordering::SeqCst);
        if was & ALLOWED == 0 {
            return false;
        }
        // The running goroutine, unless it is its thread's `g0` (the scheduler's, which must
        // never be asked to grow its stack). Any other `g` it finds — a goroutine that has
        // just stopped running — only yields at its next call, as Go's own preemption does.
        let Ok(g) = usize::try_from(shadow.load(Ordering::SeqCst)) else {
            return true;
        };
        let Some(m) = g
            .checked_add(G_M)
            .and_then(word)
            .and_then(|m| usize::try_from(m.load(Ordering::SeqCst)).ok())
        else {
            return true;
        };
        let Some(g0) = word(m).map(|g0| g0.load(Ordering::SeqCst)) else {
            return true;
        };
        if g0 as usize != g
            && let Some(guard) = g.checked_add(G_STACKGUARD0).and_then(word)
        {
            guard.store(STACK_PREEMPT, Ordering::SeqCst);
        }
        true
    }
}

/// Watch for `upgrade`'s code on a thread of its own: once it is in the cache, load it and
/// ask the program to stop in its loop until the instance has moved ([`Shared::finish`]).
/// For a split first run (`first`, its cold side), also ask for a stop while Cranelift's code
/// for the program's own functions waits to be put in place (`Guest::install_hot`).
pub(crate) fn watch(
    upgrade: Upgrade,
    shared: std::sync::Arc<Shared>,
    first: Option<std::sync::Arc<crate::split::Secondary>>,
) {
    use std::sync::atomic::Ordering;
    let _ = std::thread::Builder::new()
        .name("gojs-tier-watch".into())
        .spawn(move || {
            tracing::debug!("tier-up: waiting for {}", upgrade.entry.display());
            // The background compile takes this module next while the file is open.
            let mut wanted = crate::courtesy::want(upgrade.module);
            let mut found = false;
            while !shared.done.load(Ordering::SeqCst) {
                // Cranelift's code for the program's own functions, ready: it is put in place
                // at the next stop (or while Go is paused), as a move would be.
                let hot = first
                    .as_ref()
                    .is_some_and(|f| f.hot_ready_from(shared.hot_placed.load(Ordering::SeqCst)));
                if !found {
                    if !hot {
                        std::thread::sleep(POLL);
                    }
                    match look(&upgrade, &shared) {
                        None => return,
                        Some(true) => {
                            found = true;
                            drop(wanted.take());
                        }
                        Some(false) if !hot => continue,
                        Some(false) => {}
                    }
                }
                let running = shared.request();
                std::thread::sleep(if running { NUDGE } else { POLL });
            }
        });
}

/// Whether `upgrade`'s code is in the cache: if so, load it for the instance and wake the
/// event loop if it waits. `None` if it can't be moved to (no loop to go on in).
fn look(upgrade: &Upgrade, shared: &Shared) -> Option<bool> {
    if !upgrade.entry.exists() {
        return Some(false);
    }
    let started = std::time::Instant::now();
    let Some(module) = crate::cache::load(&upgrade.engine, &upgrade.entry) else {
        return Some(false);
    };
    module.get_export(LOOP_EXPORT)?;
    // Its pages present now, on this thread: after the move, the program's first steps in the
    // new code (a timer's callback) don't wait for them.
    let image = module.image_range();
    // SAFETY: the module's own mapping, alive while `module` is; populating page tables for
    // reading changes nothing in it.
    let _ = unsafe {
        rustix::mm::madvise(
            image.start.cast_mut().cast(),
            image.end as usize - image.start as usize,
            rustix::mm::Advice::LinuxPopulateRead,
        )
    };
    tracing::debug!(
        "tier-up: Cranelift's code from the cache ({:.1?})",
        started.elapsed()
    );
    *shared
        .ready
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(module);
    if let Some(waiter) = shared
        .waiter
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
    {
        waiter.unpark();
    }
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake guest memory of `len` bytes (8-aligned).
    struct Memory(Vec<u64>);

    impl Memory {
        fn new(len: usize) -> Memory {
            Memory(vec![0; len / 8])
        }
        fn base(&mut self) -> *mut u8 {
            self.0.as_mut_ptr().cast()
        }
        fn len(&self) -> usize {
            self.0.len() * 8
        }
        fn get(&self, at: usize) -> u64 {
            self.0[at / 8]
        }
        fn set(&mut self, at: usize, v: u64) {
            self.0[at / 8] = v;
        }
        fn flag(&self) -> u32 {
            self.get(FLAG as usize) as u32
        }
    }

    /// A memory with goroutine `g`, its `m` and the `m`'s `g0` (as Go lays them out).
    fn goroutines() -> (Memory, usize, usize, usize) {
        let (g, g0, m) = (0x8000usize, 0x9000usize, 0xa000usize);
        let mut mem = Memory::new(0x10000);
        mem.set(g + G_M, m as u64);
        mem.set(m, g0 as u64);
        mem.set(g0 + G_M, m as u64);
        (mem, g, g0, m)
    }

    #[test]
    fn requests_preempt_only_the_running_goroutine_and_only_within_memory() {
        let (mut mem, g, g0, m) = goroutines();
        let shared = Shared::new(mem.base(), mem.len());

        // Go doesn't run where it may stop: only the request is noted.
        mem.set(SHADOW as usize, g as u64);
        assert!(!shared.request());
        assert_eq!(mem.flag(), REQUESTED);
        assert_eq!(mem.get(g + G_STACKGUARD0), 0);

        mem.set(FLAG as usize, u64::from(ALLOWED));
        assert!(shared.request());
        assert_eq!(mem.flag(), REQUESTED | ALLOWED);
        assert_eq!(mem.get(g + G_STACKGUARD0), STACK_PREEMPT);

        // Never the scheduler's g0.
        mem.set(SHADOW as usize, g0 as u64);
        assert!(shared.request());
        assert_eq!(mem.get(g0 + G_STACKGUARD0), 0);

        // Wild values in guest memory: nothing is written outside it (nor misaligned, nor
        // into the first 4096 bytes).
        let before = mem.0.clone();
        for wild in [
            0,
            8,
            4095,
            g as u64 + 1,
            mem.len() as u64 - 8,
            mem.len() as u64,
            u64::MAX,
            u64::MAX - 40,
        ] {
            mem.set(SHADOW as usize, wild);
            assert!(shared.request());
            mem.set(SHADOW as usize, g as u64);
            mem.set(g + G_M, wild);
            assert!(shared.request());
            mem.set(g + G_M, m as u64);
        }
        mem.set(SHADOW as usize, before[SHADOW as usize / 8]);
        assert_eq!(mem.0, before);

        // Finished (the instance moved or is gone): nothing is written at all.
        mem.set(g + G_STACKGUARD0, 0);
        mem.set(FLAG as usize, u64::from(ALLOWED));
        shared.finish();
        assert!(!shared.request());
        assert_eq!(mem.flag(), ALLOWED);
        assert_eq!(mem.get(g + G_STACKGUARD0), 0);
    }

    #[test]
    fn a_hold_withdraws_the_request_and_defers_the_next() {
        let (mut mem, g, _, _) = goroutines();
        mem.set(SHADOW as usize, g as u64);
        mem.set(FLAG as usize, u64::from(REQUESTED | ALLOWED));
        let shared = Shared::new(mem.base(), mem.len());
        shared.hold(std::time::Duration::from_secs(60));
        assert_eq!(mem.flag(), ALLOWED);
        // Held: the watcher looks again soon, and writes nothing.
        assert!(shared.request());
        assert_eq!(mem.flag(), ALLOWED);
        assert_eq!(mem.get(g + G_STACKGUARD0), 0);
        // Once the hold is over, it asks as before.
        shared.hold(std::time::Duration::ZERO);
        assert!(shared.request());
        assert_eq!(mem.flag(), REQUESTED | ALLOWED);
        assert_eq!(mem.get(g + G_STACKGUARD0), STACK_PREEMPT);
        // Finished: a hold writes nothing either.
        shared.finish();
        mem.set(FLAG as usize, u64::from(REQUESTED));
        shared.hold(std::time::Duration::from_secs(60));
        assert_eq!(mem.flag(), REQUESTED);
    }

    #[test]
    fn memory_known_to_the_watcher_only_grows() {
        let mut mem = Memory::new(0x2000);
        let shared = Shared::new(mem.base(), 0x1000);
        let g = 0x1800usize;
        mem.set(SHADOW as usize, g as u64);
        mem.set(FLAG as usize, u64::from(ALLOWED));
        // `g` lies beyond what the watcher knows of: left alone.
        shared.request();
        assert_eq!(mem.get(g + G_STACKGUARD0), 0);
        shared.grew(0x2000);
        shared.grew(0x1000);
        mem.set(g + G_M, 0x1f00);
        mem.set(0x1f00, 0x1f80);
        shared.request();
        assert_eq!(mem.get(g + G_STACKGUARD0), STACK_PREEMPT);
    }
}
