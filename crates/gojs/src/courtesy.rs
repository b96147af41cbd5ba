//! The background compile gives way to test binaries' first runs (RATIONALE.md, "Why does the
//! background compile stop while a test binary compiles and runs?").
//!
//! A run that compiles a Go test binary itself ([`announce`]) holds a read lock on one byte of
//! `.runs.lock` in the cache directory, the byte at its process id: an open-file-description
//! lock, which goes away with the process however it ends, so nothing is ever left behind. The
//! background filler's watcher ([`give_way`]) asks every few milliseconds whether any such lock
//! is held; while one is — unless the same process has held it for [`LONG_RUN`], a run that
//! lasts, which gets the idle core as before — the filler's threads wait in a signal handler.
//!
//! Linux only; elsewhere both halves do nothing.

use std::path::Path;
use std::time::Duration;

/// The lock file in the cache directory.
const LOCK_FILE: &str = ".runs.lock";
/// How often the watcher looks.
const POLL: Duration = Duration::from_millis(5);
/// A run that has held its lock this long is left to share the machine with the filler.
const LONG_RUN: Duration = Duration::from_secs(1);

/// Say, for the rest of this process, that a test binary is running from the cache directory
/// `dir`: background compiles for `dir` pause until the process ends or has run for
/// [`LONG_RUN`]. Once per process; failures (a file system without such locks) only lose the
/// courtesy.
pub(crate) fn announce(dir: &Path) {
    #[cfg(target_os = "linux")]
    linux::announce(dir);
    #[cfg(not(target_os = "linux"))]
    let _ = dir;
}

/// In a background filler process: watch `dir`'s runs and pause the threads that
/// [`register_this_thread`] named while a test binary runs. Call before lowering this thread's
/// priority, so the watcher keeps the normal priority and notices a run at once.
pub(crate) fn give_way(dir: &Path) {
    #[cfg(target_os = "linux")]
    linux::give_way(dir);
    #[cfg(not(target_os = "linux"))]
    let _ = dir;
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
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize, Ordering};
    use std::time::Instant;

    use super::{LOCK_FILE, LONG_RUN, POLL};

    /// The file whose lock this process holds (kept open for the process's life).
    static ANNOUNCED: OnceLock<Option<File>> = OnceLock::new();

    /// 1 while the registered threads are to wait.
    static PAUSED: AtomicU32 = AtomicU32::new(0);
    /// Thread ids to pause (a filler has its main thread and one per core).
    static THREADS: [AtomicI32; 64] = [const { AtomicI32::new(0) }; 64];
    static REGISTERED: AtomicUsize = AtomicUsize::new(0);

    fn open(dir: &Path) -> Option<File> {
        File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
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

    pub(super) fn announce(dir: &Path) {
        ANNOUNCED.get_or_init(|| {
            // The first run with this cache directory may be this one.
            std::fs::create_dir_all(dir).ok()?;
            let file = open(dir)?;
            let fl = lock_range(libc::F_RDLCK, i64::from(std::process::id()), 1);
            // SAFETY: F_OFD_SETLK reads `fl`, a valid flock, for an open descriptor.
            let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
            (r == 0).then_some(file)
        });
    }

    /// The process id whose run holds a lock in `file`, if any.
    pub(super) fn holder(file: &File) -> Option<i64> {
        let mut fl = lock_range(libc::F_WRLCK, 0, 0);
        // SAFETY: F_OFD_GETLK reads and writes `fl`, a valid flock, for an open descriptor.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
        (r == 0 && fl.l_type != libc::F_UNLCK as libc::c_short).then_some(fl.l_start)
    }

    pub(super) fn register_this_thread() {
        let slot = REGISTERED.fetch_add(1, Ordering::AcqRel);
        if let Some(t) = THREADS.get(slot) {
            // SAFETY: gettid has no preconditions.
            t.store(unsafe { libc::gettid() }, Ordering::Release);
        }
    }

    /// The registered threads' signal handler: wait while paused. Only atomics and the futex
    /// syscall, which are async-signal-safe; errno is restored for the interrupted code.
    extern "C" fn wait_while_paused(_: libc::c_int) {
        // SAFETY: __errno_location returns this thread's errno slot.
        let errno = unsafe { *libc::__errno_location() };
        while PAUSED.load(Ordering::Acquire) != 0 {
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
            PAUSED.store(1, Ordering::Release);
            // SAFETY: getpid has no preconditions.
            let pid = unsafe { libc::getpid() };
            let n = REGISTERED.load(Ordering::Acquire).min(THREADS.len());
            for t in &THREADS[..n] {
                let tid = t.load(Ordering::Acquire);
                if tid != 0 {
                    // SAFETY: tgkill only sends a signal, to a thread of this process (an
                    // exited one's id gives ESRCH).
                    unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGRTMIN()) };
                }
            }
        } else {
            PAUSED.store(0, Ordering::Release);
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

    pub(super) fn give_way(dir: &Path) {
        let Some(file) = open(dir) else { return };
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
                let pause = match holder(&file) {
                    None => {
                        seen = None;
                        false
                    }
                    Some(pid) => {
                        let since = match seen {
                            Some((p, since)) if p == pid => since,
                            _ => {
                                let now = Instant::now();
                                seen = Some((pid, now));
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
    use std::os::fd::AsRawFd;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use super::linux;

    /// Hold a run's lock at `offset` through a file description of our own, as another
    /// process's run would.
    fn hold(dir: &std::path::Path, offset: i64) -> std::fs::File {
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(super::LOCK_FILE))
            .unwrap();
        // SAFETY: zeroed flock, filled in below; F_OFD_SETLK reads it.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_RDLCK as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        fl.l_start = offset;
        fl.l_len = 1;
        assert_eq!(
            unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) },
            0
        );
        file
    }

    /// A fresh directory under the system's temporary one, removed when dropped.
    struct Scratch(std::path::PathBuf);
    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("gojs-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
        fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// How far `counter` moves in `wait`.
    fn progress(counter: &AtomicU64, wait: Duration) -> u64 {
        let before = counter.load(Ordering::Relaxed);
        std::thread::sleep(wait);
        counter.load(Ordering::Relaxed) - before
    }

    #[test]
    fn announced_runs_are_seen_with_their_process_id() {
        let dir = Scratch::new("runs-seen");
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.path().join(super::LOCK_FILE))
            .unwrap();
        assert_eq!(linux::holder(&file), None);
        super::announce(dir.path());
        assert_eq!(linux::holder(&file), Some(i64::from(std::process::id())));
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
    fn registered_threads_wait_while_a_short_run_holds_the_lock() {
        let dir = Scratch::new("runs-pause");
        super::give_way(dir.path());
        let counter = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let worker = {
            let (counter, stop) = (counter.clone(), stop.clone());
            std::thread::spawn(move || {
                super::register_this_thread();
                while !stop.load(Ordering::Relaxed) {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let long = Duration::from_secs(10);
        assert!(becomes(&counter, true, long), "the worker runs");

        // A run starts: the worker stops.
        let run = hold(dir.path(), 4242);
        assert!(
            becomes(&counter, false, long),
            "paused while a run holds the lock"
        );

        // Another run takes over before the first ends: still paused.
        let next = hold(dir.path(), 4243);
        drop(run);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            progress(&counter, Duration::from_millis(100)),
            0,
            "paused for the next run"
        );

        // The runs end: the worker carries on.
        drop(next);
        assert!(
            becomes(&counter, true, long),
            "resumed once no run holds the lock"
        );

        // A run that lasts: paused at first, then its company again after LONG_RUN.
        let lasting = hold(dir.path(), 4244);
        assert!(becomes(&counter, false, super::LONG_RUN), "paused at first");
        assert!(becomes(&counter, true, long), "resumed during a long run");
        drop(lasting);

        stop.store(true, Ordering::Relaxed);
        worker.join().unwrap();
    }
}
