//! The background compile gives way to other modules' first runs (RATIONALE.md, "Why does the
//! background compile stop while another module's first run compiles and runs?").
//!
//! A run that compiles its module ([`announce`]) holds a read lock on one byte of
//! `gojs-runs-UID.lock` in the temporary directory: an open-file-description lock, which goes
//! away with the process however it ends, so nothing is ever left behind. The byte says which
//! module's background compile the run waits for, if any (a split first run caches nothing
//! itself: its module's filler is what makes the next run fast), and the run's process id. The
//! background filler's watcher ([`give_way`]) asks every 2 ms whether any run that
//! doesn't wait for the module it is compiling ([`compiling`]) holds a lock; while one does —
//! unless the same run has held it for [`LONG_RUN`], a run that lasts, which gets the idle core
//! as before — the filler's threads wait in a signal handler.
//!
//! Linux only; elsewhere it all does nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often the watcher looks.
const POLL: Duration = Duration::from_millis(2);
/// A run that has held its lock this long is left to share the machine with the filler.
const LONG_RUN: Duration = Duration::from_secs(1);
/// Process ids take the low bits of a lock's offset (Linux's `pid_max` is at most 2^22).
const PID_BITS: u32 = 22;

/// The lock file: one per user on the machine, whatever the cache directory (a run with a
/// fresh cache directory slows a filler for another just the same).
fn lock_file() -> PathBuf {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("gojs-runs-{uid}.lock"))
}

/// The file in which runs of Winch's code say whose Cranelift code they wait for, to move to
/// it ([`want`]): one byte per module, whatever the process.
fn want_file() -> PathBuf {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("gojs-wanted-{uid}.lock"))
}

/// Say, while the returned file is open, that this process runs Winch's code for module `id`
/// ([`module_id`]) and would move to Cranelift's as soon as it is cached (`crate::tier`): the
/// background compile takes that module next ([`wanted`]). `None` where locks aren't to be had.
pub(crate) fn want(id: u32) -> Option<std::fs::File> {
    #[cfg(target_os = "linux")]
    {
        let file = linux::open(&want_file())?;
        linux::set(&file, libc::F_RDLCK, i64::from(id)).then_some(file)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = id;
        None
    }
}

/// In a background filler: whether any run [`want`]s a module now.
pub(crate) fn any_wanted() -> bool {
    #[cfg(target_os = "linux")]
    {
        linux::open(&want_file()).is_some_and(|file| linux::holder_in(&file, 0, 0).is_some())
    }
    #[cfg(not(target_os = "linux"))]
    false
}

/// In a background filler: of the modules `ids` (in queue order), the first that a run
/// [`want`]s; `None` if no run wants any.
pub(crate) fn wanted(ids: impl IntoIterator<Item = u32>) -> Option<u32> {
    #[cfg(target_os = "linux")]
    {
        let file = linux::open(&want_file())?;
        ids.into_iter()
            .find(|&id| linux::holder_in(&file, i64::from(id), 1).is_some())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = ids;
        None
    }
}

/// Which background compile a run can wait for: the module with content hash `content` in the
/// cache directory `dir` (in 1..2^31; 0 is "none").
pub(crate) fn module_id(dir: &Path, content: &blake3::Hash) -> u32 {
    let mut h = blake3::Hasher::new();
    h.update(dir.as_os_str().as_encoded_bytes());
    h.update(content.as_bytes());
    let bytes = h.finalize();
    let word = u32::from_le_bytes([
        bytes.as_bytes()[0],
        bytes.as_bytes()[1],
        bytes.as_bytes()[2],
        bytes.as_bytes()[3],
    ]);
    word % ((1 << 31) - 1) + 1
}

/// Say that this process runs a module it compiles: background compiles pause until the
/// process ends, [`retire`]s, or has run for [`LONG_RUN`] — except the one of `waiting_for`
/// ([`module_id`]), which this run's next runs need. A later call changes what the run waits
/// for. Failures (a file system without such locks) only lose the courtesy.
pub(crate) fn announce(waiting_for: Option<u32>) {
    #[cfg(target_os = "linux")]
    linux::announce(&lock_file(), waiting_for.unwrap_or(0));
    #[cfg(not(target_os = "linux"))]
    let _ = waiting_for;
}

/// Withdraw [`announce`]: this process found its module's code cached after all.
pub(crate) fn retire() {
    #[cfg(target_os = "linux")]
    linux::retire();
}

/// In a background filler process: watch for runs and pause the threads that
/// [`register_this_thread`] named while one that isn't waiting for this filler runs. Call
/// before lowering this thread's priority, so the watcher keeps the normal priority and
/// notices a run at once.
pub(crate) fn give_way() {
    #[cfg(target_os = "linux")]
    linux::give_way(&lock_file());
}

/// In a background filler: the module it compiles now ([`module_id`]); runs waiting for it
/// don't pause it.
pub(crate) fn compiling(id: u32) {
    #[cfg(target_os = "linux")]
    linux::CURRENT.store(id, std::sync::atomic::Ordering::Release);
    #[cfg(not(target_os = "linux"))]
    let _ = id;
}

/// Make the calling thread one that [`give_way`]'s watcher pauses.
pub(crate) fn register_this_thread() {
    #[cfg(target_os = "linux")]
    linux::register_this_thread();
}

#[cfg(target_os = "linux")]
mod linux {
    use std::fs::File;
    use std::os::fd::AsRawFd;
    use std::path::Path;
    use std::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize, Ordering};
    use std::sync::{Mutex, PoisonError};
    use std::time::Instant;

    use super::{LONG_RUN, PID_BITS, POLL};

    /// The file whose lock this process holds, and the lock's offset.
    static ANNOUNCED: Mutex<Option<(File, i64)>> = Mutex::new(None);

    /// The module the filler compiles now (0: none).
    pub(super) static CURRENT: AtomicU32 = AtomicU32::new(0);
    /// 1 while the registered threads are to wait.
    static PAUSED: AtomicU32 = AtomicU32::new(0);
    /// Thread ids to pause (a filler has its main thread and one per core; beyond this many
    /// cores, the rest keep compiling).
    static THREADS: [AtomicI32; 256] = [const { AtomicI32::new(0) }; 256];
    static REGISTERED: AtomicUsize = AtomicUsize::new(0);

    pub(super) fn open(path: &Path) -> Option<File> {
        File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .ok()
    }

    fn lock_range(kind: libc::c_int, start: i64, len: i64) -> libc::flock {
        // SAFETY: `flock` is plain data; all-zero is a valid value, filled in below.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = kind as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        fl.l_start = start;
        fl.l_len = len;
        fl
    }

    /// The byte a run of process `pid` waiting for module `id` locks.
    pub(super) fn offset(id: u32, pid: u32) -> i64 {
        (i64::from(id) << PID_BITS) | i64::from(pid & ((1 << PID_BITS) - 1))
    }

    /// Lock (`F_RDLCK`) or unlock (`F_UNLCK`) the byte at `at`.
    pub(super) fn set(file: &File, kind: libc::c_int, at: i64) -> bool {
        let fl = lock_range(kind, at, 1);
        // SAFETY: F_OFD_SETLK reads `fl`, a valid flock, for an open descriptor.
        unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) == 0 }
    }

    pub(super) fn announce(path: &Path, waiting_for: u32) {
        let at = offset(waiting_for, std::process::id());
        let mut held = ANNOUNCED.lock().unwrap_or_else(PoisonError::into_inner);
        match held.take() {
            Some((file, old)) if old == at => *held = Some((file, old)),
            // The new byte first, then the old one let go: never a moment without either.
            Some((file, old)) => {
                if set(&file, libc::F_RDLCK, at) {
                    set(&file, libc::F_UNLCK, old);
                    *held = Some((file, at));
                } else {
                    *held = Some((file, old));
                }
            }
            None => {
                if let Some(file) = open(path)
                    && set(&file, libc::F_RDLCK, at)
                {
                    *held = Some((file, at));
                }
            }
        }
    }

    pub(super) fn retire() {
        // Closing the file lets its lock go.
        ANNOUNCED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// The offset of a lock held in `file` within `len` bytes from `start` (0: to the end).
    pub(super) fn holder_in(file: &File, start: i64, len: i64) -> Option<i64> {
        let mut fl = lock_range(libc::F_WRLCK, start, len);
        // SAFETY: F_OFD_GETLK reads and writes `fl`, a valid flock, for an open descriptor.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
        (r == 0 && fl.l_type != libc::F_UNLCK as libc::c_short).then_some(fl.l_start)
    }

    /// A lock held in `file` by a run that isn't waiting for module `id` (its offset).
    pub(super) fn holder(file: &File, id: u32) -> Option<i64> {
        if id == 0 {
            return holder_in(file, 0, 0);
        }
        holder_in(file, 0, offset(id, 0)).or_else(|| holder_in(file, offset(id + 1, 0), 0))
    }

    pub(super) fn register_this_thread() {
        let slot = REGISTERED.fetch_add(1, Ordering::SeqCst);
        if let Some(t) = THREADS.get(slot) {
            // SAFETY: gettid has no preconditions.
            t.store(unsafe { libc::gettid() }, Ordering::SeqCst);
        }
        // A pause that began before this thread was registered signalled the others only:
        // this one waits here instead. (The watcher sets `PAUSED` before it reads the list,
        // this thread reads `PAUSED` after writing itself into it: one of the two sees the
        // other.)
        wait_while_paused(0);
    }

    /// The registered threads' signal handler: wait while paused. Only atomics and the futex
    /// syscall, which are async-signal-safe; errno is restored for the interrupted code.
    extern "C" fn wait_while_paused(_: libc::c_int) {
        // SAFETY: __errno_location returns this thread's errno slot.
        let errno = unsafe { *libc::__errno_location() };
        while PAUSED.load(Ordering::SeqCst) != 0 {
            // A timeout, so that a wake-up lost to a race costs at most this long.
            let timeout = libc::timespec {
                tv_sec: 0,
                tv_nsec: 50_000_000,
            };
            // SAFETY: FUTEX_WAIT on a live static word, with a valid timeout.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    PAUSED.as_ptr(),
                    libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                    1u32,
                    &timeout,
                );
            }
        }
        // SAFETY: as above.
        unsafe { *libc::__errno_location() = errno };
    }

    fn set_paused(paused: bool) {
        if paused {
            PAUSED.store(1, Ordering::SeqCst);
            // SAFETY: getpid has no preconditions.
            let pid = unsafe { libc::getpid() };
            let n = REGISTERED.load(Ordering::SeqCst).min(THREADS.len());
            for t in &THREADS[..n] {
                let tid = t.load(Ordering::SeqCst);
                if tid != 0 {
                    // SAFETY: tgkill only sends a signal, to a thread of this process (an
                    // exited one's id gives ESRCH).
                    unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGRTMIN()) };
                }
            }
        } else {
            PAUSED.store(0, Ordering::SeqCst);
            // SAFETY: FUTEX_WAKE on a live static word.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    PAUSED.as_ptr(),
                    libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                    i32::MAX,
                );
            }
        }
    }

    pub(super) fn give_way(path: &Path) {
        let Some(file) = open(path) else { return };
        // SAFETY: a sigaction for SIGRTMIN, which nothing else in a filler process uses; the
        // handler is async-signal-safe. SA_RESTART: interrupted system calls carry on.
        let installed = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = wait_while_paused as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGRTMIN(), &action, std::ptr::null_mut()) == 0
        };
        if !installed {
            return;
        }
        let watch = move || {
            let mut paused = false;
            let mut seen: Option<(i64, Instant)> = None;
            loop {
                let pause = match holder(&file, CURRENT.load(Ordering::Acquire)) {
                    None => {
                        seen = None;
                        false
                    }
                    Some(run) => {
                        let since = match seen {
                            Some((r, since)) if r == run => since,
                            _ => {
                                let now = Instant::now();
                                seen = Some((run, now));
                                now
                            }
                        };
                        since.elapsed() < LONG_RUN
                    }
                };
                if pause != paused {
                    set_paused(pause);
                    paused = pause;
                }
                std::thread::sleep(POLL);
            }
        };
        // Detached: it ends with the process.
        let _ = std::thread::Builder::new()
            .name("gojs-fill-watch".into())
            .spawn(watch);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use super::linux;

    /// A fresh directory under the system's temporary one, removed when dropped.
    struct Scratch(PathBuf);
    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("gojs-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
        fn lock(&self) -> PathBuf {
            self.0.join("runs.lock")
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn open(path: &Path) -> std::fs::File {
        linux::open(path).unwrap()
    }

    /// Hold a run's lock at `offset` through a file description of our own, as another
    /// process's run would.
    fn hold(path: &Path, offset: i64) -> std::fs::File {
        let file = open(path);
        assert!(linux::set(&file, libc::F_RDLCK, offset));
        file
    }

    /// A thread registered to pause, counting as fast as it can until `stop`.
    fn counting_worker(stop: &Arc<AtomicBool>) -> (Arc<AtomicU64>, std::thread::JoinHandle<()>) {
        let counter = Arc::new(AtomicU64::new(0));
        let (count, stop) = (counter.clone(), stop.clone());
        let worker = std::thread::spawn(move || {
            super::register_this_thread();
            while !stop.load(Ordering::Relaxed) {
                count.fetch_add(1, Ordering::Relaxed);
            }
        });
        (counter, worker)
    }

    #[test]
    fn module_ids_tell_modules_and_cache_directories_apart() {
        let (a, b) = (blake3::hash(b"a"), blake3::hash(b"b"));
        let ids = [
            super::module_id(Path::new("/c1"), &a),
            super::module_id(Path::new("/c1"), &b),
            super::module_id(Path::new("/c2"), &a),
        ];
        assert_eq!(ids[0], super::module_id(Path::new("/c1"), &a));
        assert!(ids[0] != ids[1] && ids[0] != ids[2] && ids[1] != ids[2]);
        assert!(ids.iter().all(|&id| id > 0 && id < 1 << 31));
        // The largest id's byte still fits an offset, with room for every process id.
        assert!(linux::offset(u32::MAX >> 1, u32::MAX) < i64::MAX >> 8);
    }

    #[test]
    fn announced_runs_are_seen_by_fillers_of_other_modules() {
        let dir = Scratch::new("runs-seen");
        let file = open(&dir.lock());
        assert_eq!(linux::holder(&file, 0), None);
        // Announced before the module is known: waiting for nothing, every filler pauses.
        linux::announce(&dir.lock(), 0);
        let early = Some(linux::offset(0, std::process::id()));
        assert_eq!(linux::holder(&file, 0), early);
        assert_eq!(linux::holder(&file, 7), early);
        // Then for module 7: only its filler carries on.
        linux::announce(&dir.lock(), 7);
        let ours = Some(linux::offset(7, std::process::id()));
        assert_eq!(linux::holder(&file, 0), ours);
        assert_eq!(linux::holder(&file, 6), ours);
        assert_eq!(linux::holder(&file, 8), ours);
        assert_eq!(linux::holder(&file, 7), None);
        // Withdrawn: nobody pauses.
        linux::retire();
        assert_eq!(linux::holder(&file, 0), None);
    }

    /// How far `counter` moves in `wait`.
    fn progress(counter: &AtomicU64, wait: Duration) -> u64 {
        let before = counter.load(Ordering::Relaxed);
        std::thread::sleep(wait);
        counter.load(Ordering::Relaxed) - before
    }

    /// Whether `counter` is (`true`) or isn't moving, within `deadline`: watched 50 ms at a
    /// time, since the watcher polls and a loaded machine may be slow to run it.
    fn becomes(counter: &AtomicU64, moving: bool, deadline: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < deadline {
            if (progress(counter, Duration::from_millis(50)) > 0) == moving {
                return true;
            }
        }
        false
    }

    #[test]
    fn registered_threads_wait_while_other_modules_run() {
        let dir = Scratch::new("runs-pause");
        linux::give_way(&dir.lock());
        super::compiling(5);
        let stop = Arc::new(AtomicBool::new(false));
        let (counter, worker) = counting_worker(&stop);
        let long = Duration::from_secs(10);
        let quiet = Duration::from_millis(300);
        assert!(becomes(&counter, true, long), "the worker runs");

        // A run waiting for the module being compiled doesn't stop it.
        let waiting = hold(&dir.lock(), linux::offset(5, 4241));
        assert!(
            !becomes(&counter, false, quiet),
            "paused for its own module's run"
        );

        // A run of another module (waiting for nothing, or for another compile) does.
        let run = hold(&dir.lock(), linux::offset(0, 4242));
        assert!(
            becomes(&counter, false, long),
            "not paused while another module runs"
        );

        // A thread registered during the pause waits too.
        let (late, late_worker) = counting_worker(&stop);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            progress(&late, Duration::from_millis(100)),
            0,
            "registered late, not paused"
        );

        // Another run takes over before the first ends: still paused.
        let next = hold(&dir.lock(), linux::offset(9, 4243));
        drop(run);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            progress(&counter, Duration::from_millis(100)),
            0,
            "resumed between runs"
        );

        // The runs end: the workers carry on.
        drop(next);
        assert!(becomes(&late, true, long), "the late one not resumed");
        assert!(
            becomes(&counter, true, long),
            "not resumed once the runs ended"
        );

        // A run that lasts: paused at first, then its company again after LONG_RUN.
        let lasting = hold(&dir.lock(), linux::offset(0, 4244));
        assert!(
            becomes(&counter, false, super::LONG_RUN),
            "not paused at first"
        );
        assert!(
            becomes(&counter, true, long),
            "not resumed during a long run"
        );
        drop((lasting, waiting));

        stop.store(true, Ordering::Relaxed);
        worker.join().unwrap();
        late_worker.join().unwrap();
    }
}
