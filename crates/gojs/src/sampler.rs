//! Where a first run spends its time: a timer on the CPU time of the thread that runs Go
//! sends it `SIGPROF` every millisecond (at the kernel's tick, in fact: 4 ms at 250 Hz), and
//! the handler notes the interrupted instruction and the return addresses up the
//! frame-pointer chain (wasmtime's code, Winch's and Cranelift's, keeps frame pointers). A split first run's compile thread reads the samples and compiles
//! the functions the time goes to with Cranelift (`crate::split::Hot`; RATIONALE.md, "Why
//! compile where a first run spends its time?").
//!
//! The samples go to one of a few static buffers (a signal handler can't allocate, and
//! memory it writes must outlive any signal still pending after its timer is gone). The
//! handler is installed only while `SIGPROF` has its default action: an embedder's profiler
//! keeps its own, and first runs then go without samples. Linux on x86-64 only.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Samples are up to this many addresses deep.
const DEPTH: usize = 16;
/// Words per buffer: ~3,800 samples 16 deep (a run's first 15 s at the 250 Hz tick).
const WORDS: usize = 1 << 16;
/// Buffers, so at most this many instances sample at once.
const SLOTS: usize = 8;
/// The sampling period, in CPU time of Go's thread.
const PERIOD_NS: i64 = 1_000_000;
/// `si_code` of a signal from a POSIX timer (Linux's `SI_TIMER`, which `libc` lacks here).
const SI_TIMER: libc::c_int = -2;

/// One thread's samples: `[n, pc, return address…]` records, `n` addresses each.
struct Slot {
    /// Taken by a [`Samples`].
    claimed: AtomicBool,
    /// A timer writes here: records from a signal that arrives when not are dropped.
    armed: AtomicBool,
    /// The sampled thread's stack: a signal taken elsewhere, or a frame pointer outside it,
    /// isn't followed.
    stack_lo: AtomicUsize,
    stack_hi: AtomicUsize,
    len: AtomicUsize,
    words: [AtomicU64; WORDS],
}

#[allow(clippy::declare_interior_mutable_const)]
const SLOT: Slot = Slot {
    claimed: AtomicBool::new(false),
    armed: AtomicBool::new(false),
    stack_lo: AtomicUsize::new(0),
    stack_hi: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    words: [const { AtomicU64::new(0) }; WORDS],
};

static BUFFERS: [Slot; SLOTS] = [SLOT; SLOTS];

/// A claimed buffer: the samples of one instance's first run, read by the compile thread.
/// Released (emptied for another) when the last holder drops it.
pub(crate) struct Samples {
    slot: usize,
    /// Whether a [`Sampler`] has started on it (only one does).
    started: AtomicBool,
}

impl Samples {
    /// A free buffer, if there is one and sampling is possible here.
    pub fn claim() -> Option<Samples> {
        if !handler_installed() {
            return None;
        }
        let slot = BUFFERS.iter().position(|s| {
            s.claimed
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        })?;
        BUFFERS[slot].len.store(0, Ordering::SeqCst);
        Some(Samples {
            slot,
            started: AtomicBool::new(false),
        })
    }

    /// The records written from word `from` on, and where the next ones will start.
    pub fn read(&self, from: usize) -> (Vec<Vec<u64>>, usize) {
        let slot = &BUFFERS[self.slot];
        let end = slot.len.load(Ordering::Acquire).min(WORDS);
        let mut records = Vec::new();
        let mut at = from;
        while at < end {
            let n = slot.words[at].load(Ordering::Relaxed) as usize;
            if n == 0 || at + 1 + n > end {
                break;
            }
            records.push(
                (at + 1..at + 1 + n)
                    .map(|i| slot.words[i].load(Ordering::Relaxed))
                    .collect(),
            );
            at += 1 + n;
        }
        (records, at)
    }

    /// Whether the buffer is full from word `cursor` on (what [`Samples::read`] returned):
    /// no more samples come.
    pub fn is_full(&self, cursor: usize) -> bool {
        cursor + 1 + DEPTH > WORDS
    }

    /// Whether a timer writes here now.
    pub fn is_live(&self) -> bool {
        BUFFERS[self.slot].armed.load(Ordering::SeqCst)
    }

    /// Stop taking samples (the timer, if any, goes on until its sampler drops).
    pub fn disarm(&self) {
        BUFFERS[self.slot].armed.store(false, Ordering::SeqCst);
    }

    /// Whether a sampler has started (and perhaps stopped) on this buffer.
    pub fn has_started(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }
}

impl Drop for Samples {
    fn drop(&mut self) {
        let slot = &BUFFERS[self.slot];
        slot.armed.store(false, Ordering::SeqCst);
        slot.claimed.store(false, Ordering::SeqCst);
    }
}

/// A timer sampling the current thread into a [`Samples`] buffer while it lives.
pub(crate) struct Sampler {
    timer: libc::timer_t,
    slot: usize,
    /// Keeps the buffer claimed while the timer may still write to it.
    _samples: std::sync::Arc<Samples>,
}

impl Sampler {
    /// Sample the calling thread into `samples`, unless another sampler has already (a
    /// module's first instance samples for all of them) or the timer can't be made.
    pub fn start(samples: &std::sync::Arc<Samples>) -> Option<Sampler> {
        if samples.started.swap(true, Ordering::SeqCst) {
            return None;
        }
        let (lo, hi) = current_stack()?;
        let slot = &BUFFERS[samples.slot];
        slot.stack_lo.store(lo, Ordering::SeqCst);
        slot.stack_hi.store(hi, Ordering::SeqCst);
        // SAFETY: a zeroed sigevent is valid; the kernel reads the fields set below.
        let mut event: libc::sigevent = unsafe { std::mem::zeroed() };
        event.sigev_notify = libc::SIGEV_THREAD_ID;
        event.sigev_signo = libc::SIGPROF;
        // SAFETY: a plain system call.
        event.sigev_notify_thread_id = unsafe { libc::gettid() };
        // The buffer's index travels in the signal's value (an integer, not a pointer).
        event.sigev_value = libc::sigval {
            sival_ptr: samples.slot as *mut libc::c_void,
        };
        let mut timer: libc::timer_t = std::ptr::null_mut();
        // SAFETY: both pointers are to live locals; the timer is deleted in `drop`.
        if unsafe { libc::timer_create(libc::CLOCK_THREAD_CPUTIME_ID, &mut event, &mut timer) } != 0
        {
            return None;
        }
        slot.armed.store(true, Ordering::SeqCst);
        let period = libc::timespec {
            tv_sec: 0,
            tv_nsec: PERIOD_NS,
        };
        let spec = libc::itimerspec {
            it_interval: period,
            it_value: period,
        };
        // SAFETY: `timer` was just created; `spec` is a live local.
        if unsafe { libc::timer_settime(timer, 0, &spec, std::ptr::null_mut()) } != 0 {
            slot.armed.store(false, Ordering::SeqCst);
            // SAFETY: the timer was created above and is deleted once.
            unsafe { libc::timer_delete(timer) };
            return None;
        }
        Some(Sampler {
            timer,
            slot: samples.slot,
            _samples: samples.clone(),
        })
    }
}

impl Sampler {
    /// Whether its samples are still wanted ([`Samples::disarm`] says not).
    pub fn is_armed(&self) -> bool {
        BUFFERS[self.slot].armed.load(Ordering::SeqCst)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        // A signal still pending finds the buffer disarmed (and its memory is static).
        BUFFERS[self.slot].armed.store(false, Ordering::SeqCst);
        // SAFETY: created in `start`, deleted only here.
        unsafe { libc::timer_delete(self.timer) };
    }
}

/// The calling thread's stack, lowest and highest address.
fn current_stack() -> Option<(usize, usize)> {
    // SAFETY: `attr` is initialized by `pthread_getattr_np` before it is read, and destroyed
    // once; the out-pointers are live locals.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let got = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        (got == 0 && !addr.is_null()).then(|| (addr as usize, addr as usize + size))
    }
}

/// Install the `SIGPROF` handler once, if nobody else has one.
fn handler_installed() -> bool {
    static INSTALLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *INSTALLED.get_or_init(|| {
        if std::env::var_os("GOJS_SAMPLE").is_some_and(|v| v == "off") {
            return false;
        }
        // SAFETY: sigaction with live, zero-initialized structs; the handler below only reads
        // its context and the sampled thread's stack and stores to static atomics.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGPROF, std::ptr::null(), &mut old) != 0
                || old.sa_sigaction != libc::SIG_DFL
            {
                return false;
            }
            let mut new: libc::sigaction = std::mem::zeroed();
            new.sa_sigaction = on_sigprof as *const () as usize;
            new.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
            libc::sigemptyset(&mut new.sa_mask);
            libc::sigaction(libc::SIGPROF, &new, std::ptr::null_mut()) == 0
        }
    })
}

/// The handler: one record of the interrupted thread's addresses. Async-signal-safe: it reads
/// the context and the stack between the interrupted stack pointer and the stack's top, and
/// stores to a static buffer (one writer: the signal is blocked while its handler runs, and
/// each buffer's timer signals one thread).
extern "C" fn on_sigprof(
    _sig: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    if info.is_null() || context.is_null() {
        return;
    }
    // SAFETY: the kernel passes a valid siginfo and ucontext to an SA_SIGINFO handler.
    let (code, value, gregs) = unsafe {
        let info = &*info;
        let context = &*(context as *const libc::ucontext_t);
        (
            info.si_code,
            info.si_value().sival_ptr as usize,
            context.uc_mcontext.gregs,
        )
    };
    if code != SI_TIMER {
        return;
    }
    let Some(slot) = BUFFERS.get(value) else {
        return;
    };
    if !slot.armed.load(Ordering::Relaxed) {
        return;
    }
    let pc = gregs[libc::REG_RIP as usize] as u64;
    let sp = gregs[libc::REG_RSP as usize] as usize;
    let mut fp = gregs[libc::REG_RBP as usize] as usize;
    let (lo, hi) = (
        slot.stack_lo.load(Ordering::Relaxed),
        slot.stack_hi.load(Ordering::Relaxed),
    );
    // Not on the sampled thread's stack (a signal of a timer whose thread is gone, say).
    if sp < lo || sp >= hi {
        return;
    }
    let at = slot.len.load(Ordering::Relaxed);
    if at + 1 + DEPTH > WORDS {
        return;
    }
    slot.words[at + 1].store(pc, Ordering::Relaxed);
    let mut n = 1;
    while n < DEPTH && fp >= sp && fp.is_multiple_of(8) && fp.saturating_add(16) <= hi {
        // SAFETY: `fp` and `fp + 8` lie between the interrupted stack pointer and the top of
        // this thread's stack: mapped, in use, readable.
        let (next, ret) = unsafe {
            (
                std::ptr::read_volatile(fp as *const usize),
                std::ptr::read_volatile((fp + 8) as *const usize),
            )
        };
        slot.words[at + 1 + n].store(ret as u64, Ordering::Relaxed);
        n += 1;
        if next <= fp {
            break;
        }
        fp = next;
    }
    slot.words[at].store(n as u64, Ordering::Relaxed);
    slot.len.store(at + 1 + n, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn spin(ms: u64) -> u64 {
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(ms) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x)
    }

    #[test]
    fn a_busy_thread_is_sampled_until_its_sampler_stops() {
        let samples = std::sync::Arc::new(Samples::claim().expect("a buffer and the handler"));
        let sampler = Sampler::start(&samples).expect("a timer");
        assert!(Sampler::start(&samples).is_none(), "one sampler a buffer");
        assert!(samples.is_live());
        spin(60);
        let (records, next) = samples.read(0);
        // A timer on CPU time fires at the kernel's tick (100–1000 Hz).
        assert!(records.len() >= 5, "{} samples in 60 ms", records.len());
        assert!(records.iter().all(|r| !r.is_empty() && r.len() <= DEPTH));
        drop(sampler);
        assert!(!samples.is_live());
        spin(20);
        let (more, _) = samples.read(next);
        assert!(more.is_empty(), "{} samples after the stop", more.len());
    }
}
