//! The event loop: one thread runs the guest; timers and posted work reach it through here.
//!
//! Like Node's loop for `wasm_exec.js`: `run` returns when Go is idle; from then on the loop owns
//! time. Go's `scheduleTimeoutEvent` timers and JS's `setTimeout`/`setInterval` share one queue in
//! deadline order (ties in creation order); microtasks drain after every task. When nothing is
//! pending and Go hasn't exited, Go is told (`_pendingEvent = {id: 0}`) and reports the deadlock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use rquickjs::Function;

use crate::realm::JsValue;

/// A JS timer from `setTimeout`/`setInterval`/`setImmediate`.
pub(crate) struct JsTimer {
    pub callback: Function<'static>,
    pub args: Vec<JsValue>,
    /// `Some` for `setInterval`.
    pub interval: Option<Duration>,
    /// Whether it keeps the loop alive (Node's `ref`/`unref`).
    pub refed: bool,
}

/// What a due timer asks the loop to do.
pub(crate) enum Due {
    /// Resume Go for the timeout event with this id.
    Go(i32),
    /// Call a JS timer's callback (re-armed already if it is an interval).
    Js {
        callback: Function<'static>,
        args: Vec<JsValue>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct Slot {
    deadline: Instant,
    seq: u64,
}

enum Entry {
    Go(i32),
    Js(u32),
}

struct JsEntry {
    timer: JsTimer,
    slot: Slot,
    delay: Duration,
}

/// All timers of one instance.
#[derive(Default)]
pub(crate) struct Timers {
    queue: BTreeMap<Slot, Entry>,
    seq: u64,
    /// Go timeout events not yet cleared: id → queue slot (`None` once fired).
    go: HashMap<i32, Option<Slot>>,
    next_go: i32,
    js: HashMap<u32, JsEntry>,
    next_js: u32,
}

impl Timers {
    fn slot(&mut self, delay: Duration) -> Slot {
        self.seq += 1;
        Slot {
            deadline: Instant::now() + delay,
            seq: self.seq,
        }
    }

    /// `scheduleTimeoutEvent(ms)`: ids count up from 1 like `wasm_exec.js`'s.
    pub fn schedule_go(&mut self, delay_ms: i64) -> i32 {
        self.next_go = self.next_go.wrapping_add(1).max(1);
        let id = self.next_go;
        // Node clamps delays outside [1, 2^31-1] to 1 ms.
        let ms = if (1..=i64::from(i32::MAX)).contains(&delay_ms) {
            delay_ms as u64
        } else {
            1
        };
        let slot = self.slot(Duration::from_millis(ms));
        self.queue.insert(slot, Entry::Go(id));
        self.go.insert(id, Some(slot));
        id
    }

    /// `clearTimeoutEvent(id)`.
    pub fn clear_go(&mut self, id: i32) {
        if let Some(Some(slot)) = self.go.remove(&id) {
            self.queue.remove(&slot);
        }
    }

    /// Whether Go still has this timeout event registered (the "missed timeout event" rule).
    pub fn go_registered(&self, id: i32) -> bool {
        self.go.contains_key(&id)
    }

    pub fn set_js(&mut self, timer: JsTimer, delay: Duration) -> u32 {
        self.next_js = self.next_js.wrapping_add(1).max(1);
        let id = self.next_js;
        let slot = self.slot(delay);
        self.queue.insert(slot, Entry::Js(id));
        self.js.insert(id, JsEntry { timer, slot, delay });
        id
    }

    pub fn clear_js(&mut self, id: u32) {
        if let Some(e) = self.js.remove(&id) {
            self.queue.remove(&e.slot);
        }
    }

    pub fn set_ref(&mut self, id: u32, refed: bool) {
        if let Some(e) = self.js.get_mut(&id) {
            e.timer.refed = refed;
        }
    }

    pub fn has_ref(&self, id: u32) -> bool {
        self.js.get(&id).is_some_and(|e| e.timer.refed)
    }

    /// Restart a JS timer's countdown (`Timeout.refresh()`).
    pub fn refresh(&mut self, id: u32) {
        let Some(delay) = self.js.get(&id).map(|e| e.delay) else {
            return;
        };
        let slot = self.slot(delay);
        if let Some(e) = self.js.get_mut(&id) {
            self.queue.remove(&e.slot);
            e.slot = slot;
            self.queue.insert(slot, Entry::Js(id));
        }
    }

    /// Whether anything that keeps the loop alive is pending: a Go timeout or a ref'd JS timer.
    pub fn alive(&self) -> bool {
        self.queue.values().any(|e| match e {
            Entry::Go(_) => true,
            Entry::Js(id) => self.js.get(id).is_some_and(|e| e.timer.refed),
        })
    }

    /// When the next timer is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.queue.keys().next().map(|s| s.deadline)
    }

    /// Take the earliest timer if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Due> {
        let (&slot, _) = self
            .queue
            .iter()
            .next()
            .filter(|(s, _)| s.deadline <= now)?;
        match self.queue.remove(&slot)? {
            Entry::Go(id) => {
                self.go.insert(id, None);
                Some(Due::Go(id))
            }
            Entry::Js(id) => {
                let e = self.js.get(&id)?;
                let due = Due::Js {
                    callback: e.timer.callback.clone(),
                    args: e.timer.args.clone(),
                };
                match e.timer.interval {
                    Some(interval) => {
                        let next = self.slot(interval.max(Duration::from_millis(1)));
                        if let Some(e) = self.js.get_mut(&id) {
                            e.slot = next;
                        }
                        self.queue.insert(next, Entry::Js(id));
                    }
                    None => {
                        self.js.remove(&id);
                    }
                }
                Some(due)
            }
        }
    }

    /// Drop every timer (and the JS values they hold).
    pub fn clear(&mut self) {
        self.queue.clear();
        self.go.clear();
        self.js.clear();
    }
}

/// The body of a [`Task`].
pub(crate) type TaskFn =
    Box<dyn FnOnce(&mut crate::instance::Guest) -> Result<(), crate::Error> + Send>;

/// Work another thread posted into the loop (see [`crate::Handle`]).
pub(crate) struct Task {
    /// Run only once Go is idle (nothing but posted work can wake it), or at the next turn.
    pub when_idle: bool,
    /// Runs on the loop thread. An `Err` is fatal to the instance (a trap, an uncaught exception);
    /// results for the poster travel through the task's own channel.
    pub run: TaskFn,
}

/// Run a Go program to completion on this thread: `run`, then timers, microtasks and posted
/// tasks until Go exits. Returns Go's exit code.
///
/// While any sender of `inbox` is alive the loop waits for posted work instead of declaring a
/// deadlock (like a ref'd handle in Node); once they are all gone and nothing else is pending,
/// Go is told about the deadlock.
pub(crate) fn run(
    guest: &mut crate::instance::Guest,
    args: &[String],
    env: &[String],
    inbox: Option<Receiver<Task>>,
    on_exit: impl FnOnce(i32),
) -> Result<i32, crate::Error> {
    let mut inbox = inbox;
    let mut on_exit = Some(on_exit);
    let mut when_idle: VecDeque<Task> = VecDeque::new();
    guest.start(args, env)?;
    loop {
        guest.drain_microtasks()?;
        if let Some(code) = guest.exit_code() {
            if let Some(f) = on_exit.take() {
                f(code);
            }
            // Like Node, the instance outlives Go's exit for whoever still holds it: its
            // `//go:wasmexport` functions stay callable until the last handle is dropped.
            if let Some(rx) = inbox.take() {
                for task in when_idle.drain(..) {
                    (task.run)(guest)?;
                }
                for task in rx.iter() {
                    (task.run)(guest)?;
                }
            }
            return Ok(code);
        }
        guest.host().kept.drain_released();
        // Completed I/O first, as Node's loop delivers fs callbacks before timers.
        if guest.run_deferred()? {
            continue;
        }
        if let Some(rx) = &inbox {
            match rx.try_recv() {
                Ok(task) if task.when_idle => when_idle.push_back(task),
                Ok(task) => (task.run)(guest)?,
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => inbox = None,
            }
        }
        let now = Instant::now();
        let due = guest.host().timers.borrow_mut().pop_due(now);
        if let Some(due) = due {
            guest.fire(due)?;
            continue;
        }
        let (alive, next) = {
            let t = guest.host().timers.borrow();
            (t.alive(), t.next_deadline())
        };
        if !alive && let Some(task) = when_idle.pop_front() {
            (task.run)(guest)?;
            continue;
        }
        let wait = next.map(|d| d.saturating_duration_since(now));
        if guest.move_while_idle(wait) {
            continue;
        }
        match (&inbox, wait) {
            (Some(rx), wait) => {
                // The watcher's wake-up can't end a wait on the channel: look again soon.
                let wait = match wait {
                    _ if !guest.may_move() => wait,
                    Some(w) => Some(w.min(crate::tier::POLL)),
                    None => Some(crate::tier::POLL),
                };
                let got = match wait {
                    Some(wait) => rx.recv_timeout(wait),
                    None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                };
                match got {
                    Ok(task) if task.when_idle => when_idle.push_back(task),
                    Ok(task) => (task.run)(guest)?,
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => inbox = None,
                }
            }
            // Woken early by the tier-up watcher (or spuriously), the loop just looks again.
            (None, Some(wait)) if alive => std::thread::park_timeout(wait),
            (None, _) => {
                guest.report_deadlock()?;
                guest.drain_microtasks()?;
                // Node exits 0 if Go somehow survives being told (its loop is already closing).
                return Ok(guest.exit_code().unwrap_or(0));
            }
        }
    }
}
