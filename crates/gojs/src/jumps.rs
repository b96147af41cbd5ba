//! Direct jumps and loops in Go's functions (RATIONALE.md, "Why rewrite the jumps of Go's
//! functions?").
//!
//! Go compiles a function that has more than one basic block into a dispatch loop, so that a
//! goroutine can resume it at any block:
//!
//! ```text
//! loop $entry
//!   block block … block            ;; one per block, the innermost first
//!     local.get $PC_B
//!     br_table …                   ;; block number → the `end` that starts its code
//!   end  code of block 0
//!   end  code of block 1
//!   …
//! end
//! ```
//!
//! and every jump to a block, forward or back, is `i32.const k; local.set $PC_B; br $entry`:
//! a trip through the loop header and an indirect jump through the table. [`Jumps`] follows a
//! function's code and then rewrites its jumps:
//!
//! - A jump **forward**, to block `t` from the code of block `s < t`, branches straight to the
//!   `end` of dispatch block `t`, which encloses it: the place the table would send it.
//! - A jump **back**, to block `k` from block `s ≥ k`, makes blocks `k..=s` a wasm `loop`: the
//!   dispatch blocks of `k+1..=s` are opened inside it instead of in the prologue, and the jump
//!   branches to the loop. Loops nest (one that would cross another is widened to contain it).
//!   A block inside a loop that is entered from outside it (a loop's condition block, which
//!   Go's first jump goes to; a resume point, entered through the table) can only be reached
//!   through the loop's start, so the loop starts with a test per such block number:
//!   `local.get $PC_B; i32.const k; i32.eq; br_if` to block `k`. A loop that would need more
//!   than [`MAX_TESTS`] stays a dispatch loop.
//! - A loop entered from outside only at one block `e` after its first, its condition block
//!   (nothing enters block `k` from outside, nor runs on into it), is **rotated**
//!   ([`Plan::rotatable`]): its code is written in the order `e..=s`, `k..e`, so it starts at
//!   `e` and tests nothing. A block that ran on into the block after it, which now comes
//!   elsewhere, jumps there instead (`i32.const; local.set 0; br`, as Go's jumps do). The
//!   function's body is then put together from its parts in the new order
//!   ([`crate::rewrite::Edits`]).
//!
//! `$PC_B` is still set before every jump, so each block sees it as before, and the tests work:
//! while a block runs, `$PC_B` holds the number of that block or of one before it, never that of
//! a block later inside a loop that starts here.
//!
//! The table can be entered with block 0 (a call), 1 (Go's `goexit` + 1), or the block of a
//! return address the function stores (an `i64.const` whose low 16 bits are the block number;
//! every such constant counts, unless the call it is stored for is one of Go's panics, which
//! never return: [`never_returns`]). A block number nothing enters and whose block moved into a loop
//! goes where the table's default goes.

use std::collections::{BTreeSet, HashSet};
use std::ops::Range;

use wasm_encoder as enc;
use wasmparser::{BlockType, Operator, OperatorsReader};

use crate::rewrite::{BR, Patch, With};

const BR_IF: u8 = 0x0d;

/// The most block-number tests a loop may start with; a loop that needs more is left to the
/// dispatch table.
const MAX_TESTS: usize = 4;

/// Whether Go's function `name` never returns to its caller: the runtime's panics (bounds,
/// nil, division and shift checks, `panic` itself, type assertions) and fatal errors. A
/// recovered panic resumes at a `deferreturn` call, never after the call that panicked.
pub(crate) fn never_returns(name: &str) -> bool {
    name.starts_with("runtime.goPanic")
        || matches!(
            name,
            "runtime.sigpanic"
                | "runtime.gopanic"
                | "runtime.throw"
                | "runtime.fatal"
                | "runtime.panicdivide"
                | "runtime.panicshift"
                | "runtime.panicmem"
                | "runtime.panicmemAddr"
                | "runtime.panicnildottype"
                | "runtime.panicdottypeE"
                | "runtime.panicdottypeI"
                | "runtime.panicwrap"
                | "runtime.panicmakeslicelen"
                | "runtime.panicmakeslicecap"
                | "runtime.panicunsafeslicelen"
                | "runtime.panicunsafeslicenilptr"
                | "runtime.panicunsafestringlen"
                | "runtime.panicunsafestringnilptr"
                | "runtime.panicrangestate"
        )
}

/// `wasm` with the jumps and loops of its Go-shaped functions made direct (and nothing else),
/// or `None` if the module can't be read as a sequence of sections or has no jump to rewrite.
pub(crate) fn thread(wasm: &[u8]) -> Option<Vec<u8>> {
    crate::rewrite::prepare(
        wasm,
        crate::rewrite::Passes {
            jumps: true,
            fill: false,
            dispatch: false,
            winch: false,
            data: false,
            narrow: false,
            tier: false,
            tier_stop: false,
        },
    )
}

/// A function's dispatch loop, read from its prologue.
pub(crate) struct Dispatch {
    /// How many dispatch blocks there are: the function's blocks of code.
    blocks: u32,
    /// The `br_table`: block number → depth (= which block's code).
    table: Vec<u32>,
    default: u32,
    /// Where the prologue's dispatch `block`s are, its `br_table`, and the `end` after it.
    openers: Range<usize>,
    br_table: Range<usize>,
    first_end: Range<usize>,
}

impl Dispatch {
    /// Read the prologue `[global.get; local.set] [block] loop block… local.get 0 br_table end`
    /// from `ops`, leaving it at the first instruction of block 0's code. `None` (with `ops`
    /// somewhere in the prologue) if the function isn't shaped like that.
    pub(crate) fn read(ops: &mut OperatorsReader<'_>) -> Option<Dispatch> {
        let mut op = ops.read().ok()?;
        if let Operator::GlobalGet { .. } = op {
            let Operator::LocalSet { local_index } = ops.read().ok()? else {
                return None;
            };
            if local_index == 0 {
                return None;
            }
            op = ops.read().ok()?;
        }
        if is_plain_block(&op) {
            op = ops.read().ok()?;
        }
        if !matches!(
            op,
            Operator::Loop {
                blockty: BlockType::Empty
            }
        ) {
            return None;
        }
        let first = ops.original_position();
        let mut openers = first..first;
        let mut blocks: u32 = 0;
        loop {
            match ops.read().ok()? {
                op if is_plain_block(&op) => {
                    blocks += 1;
                    openers.end = ops.original_position();
                }
                Operator::LocalGet { local_index: 0 } => break,
                _ => return None,
            }
        }
        // Each `block` with no type is two bytes; the pass rewrites them as such.
        if blocks == 0 || openers.len() != 2 * blocks as usize {
            return None;
        }
        let table_start = ops.original_position();
        let Operator::BrTable { targets } = ops.read().ok()? else {
            return None;
        };
        let br_table = table_start..ops.original_position();
        let default = targets.default();
        let table = targets.targets().collect::<Result<Vec<u32>, _>>().ok()?;
        let end_start = ops.original_position();
        if !matches!(ops.read().ok()?, Operator::End) {
            return None;
        }
        Some(Dispatch {
            blocks,
            table,
            default,
            openers,
            br_table,
            first_end: end_start..ops.original_position(),
        })
    }

    /// Where the table sends block number `k`: the code of block `table[k]`, if that is one of
    /// the dispatch blocks.
    fn target(&self, k: i32) -> Option<u32> {
        let depth = u32::try_from(k)
            .ok()
            .and_then(|k| self.table.get(k as usize).copied())
            .unwrap_or(self.default);
        (depth < self.blocks).then_some(depth)
    }

    /// What a branch `rel` frames out from the code of block `seg` (`None`: from the
    /// prologue's `br_table`) goes to.
    fn frame(&self, seg: Option<u32>, rel: u32) -> Target {
        // Dispatch blocks between here and the loop: those of the blocks after `seg`.
        let after = self.blocks - seg.map_or(0, |s| s + 1);
        let first = seg.map_or(0, |s| s + 1);
        match rel.cmp(&after) {
            std::cmp::Ordering::Less => Target::Seg(first + rel),
            std::cmp::Ordering::Equal => Target::Entry,
            std::cmp::Ordering::Greater => Target::Outer(rel - after - 1),
        }
    }
}

/// Where a branch in dispatch code goes, as the original function has it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    /// The start of block `k`'s code (the `end` of its dispatch block).
    Seg(u32),
    /// The dispatch loop, `$entry`.
    Entry,
    /// The `k`th frame outside the dispatch loop.
    Outer(u32),
}

/// A branch out of a block's own frames, into the dispatch structure.
struct Branch {
    at: Range<usize>,
    seg: u32,
    /// How many of the block's own frames (`block`/`loop`/`if`) enclose the branch.
    inner: u32,
    kind: Kind,
}

impl Branch {
    /// The depths past the block's own frames that it may branch to.
    fn targets(&self) -> impl Iterator<Item = u32> + '_ {
        let (one, table) = match &self.kind {
            Kind::Br { rel, .. } | Kind::BrIf { rel } => (Some(*rel), None),
            Kind::BrTable { depths, default } => (None, Some(depths.iter().chain([default]))),
        };
        let inner = self.inner;
        one.into_iter().chain(
            table
                .into_iter()
                .flatten()
                .filter(move |&&depth| depth >= inner)
                .map(move |&depth| depth - inner),
        )
    }
}

enum Kind {
    /// `br`, `rel` frames out of the block's own; after `i32.const k; local.set 0` when `pc`
    /// is `Some(k)`: a jump to block number `k`.
    Br {
        rel: u32,
        pc: Option<i32>,
    },
    BrIf {
        rel: u32,
    },
    /// Depths as written (those below `inner` stay inside the block), and the default.
    BrTable {
        depths: Vec<u32>,
        default: u32,
    },
}

/// Follows the instructions after a [`Dispatch`] prologue, then rewrites the function's jumps.
pub(crate) struct Jumps<'a> {
    dispatch: Dispatch,
    /// The code of block `seg` is running, `inner` frames deep in its own blocks/loops/ifs.
    seg: u32,
    inner: u32,
    /// `Some(k)` right after `i32.const k`, and right after `i32.const k; local.set 0`.
    after_const: Option<i32>,
    after_set: Option<i32>,
    /// Past the dispatch loop: nothing more to find.
    done: bool,
    /// Met something the pass doesn't follow (exception handling, typed branches): the
    /// function is left as it is.
    unsure: bool,
    /// `ends[k]`: the `end` that starts block `k`'s code; `ends[blocks]`: the dispatch loop's.
    ends: Vec<Range<usize>>,
    branches: Vec<Branch>,
    /// Block numbers of the function's return addresses (and perhaps a few other constants').
    resumes: BTreeSet<u32>,
    /// `falls[k]`: whether block `k`'s code may run on into the next block's.
    falls: Vec<bool>,
    /// Functions that never return to their caller ([`never_returns`]).
    no_return: &'a HashSet<u32>,
    /// The block number of the last `i64.const` that could be a return address, until the
    /// call it is for shows whether the call can return.
    pending: Option<u32>,
    /// The code of block `seg` has ended with a branch, `return` or `unreachable`.
    ended: bool,
}

impl<'a> Jumps<'a> {
    pub(crate) fn new(dispatch: Dispatch, no_return: &'a HashSet<u32>) -> Jumps<'a> {
        let ends = vec![dispatch.first_end.clone()];
        Jumps {
            dispatch,
            seg: 0,
            inner: 0,
            after_const: None,
            after_set: None,
            done: false,
            unsure: false,
            ends,
            branches: Vec::new(),
            resumes: BTreeSet::new(),
            falls: Vec::new(),
            ended: false,
            no_return,
            pending: None,
        }
    }

    /// Look at the next instruction, `op` at `start..end` of the body.
    pub(crate) fn step(&mut self, op: &Operator<'_>, start: usize, end: usize) {
        if self.done || self.unsure {
            return;
        }
        let (seg, inner) = (self.seg, self.inner);
        let kind = match *op {
            Operator::Block { .. } | Operator::Loop { .. } | Operator::If { .. } => {
                self.inner += 1;
                None
            }
            Operator::End if inner > 0 => {
                self.inner -= 1;
                None
            }
            Operator::End => {
                // A dispatch block ends and the next block's code starts (after the last one,
                // the loop ends: past the code we rewrite).
                self.seg += 1;
                self.ends.push(start..end);
                self.falls.push(!self.ended);
                self.ended = false;
                self.done = self.seg >= self.dispatch.blocks;
                None
            }
            Operator::Br { relative_depth } if relative_depth >= inner => Some(Kind::Br {
                rel: relative_depth - inner,
                pc: self.after_set,
            }),
            Operator::BrIf { relative_depth } if relative_depth >= inner => Some(Kind::BrIf {
                rel: relative_depth - inner,
            }),
            Operator::BrTable { ref targets } => {
                let Ok(depths) = targets.targets().collect::<Result<Vec<u32>, _>>() else {
                    self.unsure = true;
                    return;
                };
                let default = targets.default();
                (default >= inner || depths.iter().any(|&d| d >= inner))
                    .then_some(Kind::BrTable { depths, default })
            }
            Operator::I64Const { value } => {
                if let Ok(v) = u32::try_from(value)
                    && v >> 16 != 0
                {
                    self.resume(Some(v & 0xffff));
                }
                None
            }
            // Go stores a call's return address (`i64.const; i64.store`), then calls.
            Operator::Call { function_index } if self.no_return.contains(&function_index) => {
                self.pending = None;
                None
            }
            Operator::I64Store { .. } | Operator::I32Const { .. } | Operator::LocalGet { .. } => {
                None
            }
            // Exception handling and typed branches: not Go's code, and not worth following.
            Operator::Try { .. }
            | Operator::TryTable { .. }
            | Operator::Catch { .. }
            | Operator::CatchAll
            | Operator::Delegate { .. }
            | Operator::Rethrow { .. }
            | Operator::BrOnNull { .. }
            | Operator::BrOnNonNull { .. }
            | Operator::BrOnCast { .. }
            | Operator::BrOnCastFail { .. } => {
                self.unsure = true;
                return;
            }
            _ => None,
        };
        if !matches!(
            op,
            Operator::I64Const { .. }
                | Operator::I64Store { .. }
                | Operator::I32Const { .. }
                | Operator::LocalGet { .. }
        ) {
            self.resume(None);
        }
        if inner == 0
            && matches!(
                op,
                Operator::Br { .. }
                    | Operator::BrTable { .. }
                    | Operator::Return
                    | Operator::Unreachable
                    | Operator::ReturnCall { .. }
                    | Operator::ReturnCallIndirect { .. }
                    | Operator::ReturnCallRef { .. }
            )
        {
            self.ended = true;
        }
        if let Some(kind) = kind {
            self.branches.push(Branch {
                at: start..end,
                seg,
                inner,
                kind,
            });
        }
        self.after_set = match op {
            Operator::LocalSet { local_index: 0 } => self.after_const,
            _ => None,
        };
        self.after_const = match *op {
            Operator::I32Const { value } => Some(value),
            _ => None,
        };
    }

    /// Count the pending return address as a resume point, and keep `next` pending instead.
    fn resume(&mut self, next: Option<u32>) {
        if let Some(k) = std::mem::replace(&mut self.pending, next) {
            self.resumes.insert(k);
        }
    }

    /// The function's rewritten jumps and loops, added to `patches`, and the new order of the
    /// body's parts if blocks move (nothing if the function wasn't followed to the end of its
    /// dispatch loop).
    pub(crate) fn finish(mut self, patches: &mut Vec<Patch>) -> Option<Vec<Range<usize>>> {
        if self.unsure || !self.done {
            return None;
        }
        self.resume(None);
        let plan = Plan::new(&self);
        let mut found = plan.emit(&self)?;
        patches.append(&mut found);
        let n = self.dispatch.blocks as usize;
        let moved = plan.order.iter().enumerate().any(|(i, &k)| i != k as usize);
        moved.then(|| {
            // The locals and prologue, each block's `end` and code in the new order, the rest.
            let mut parts = Vec::with_capacity(n + 2);
            parts.push(0..self.ends[0].start);
            parts.extend(
                plan.order
                    .iter()
                    .map(|&k| self.ends[k as usize].start..self.ends[k as usize + 1].start),
            );
            parts.push(self.ends[n].start..usize::MAX);
            parts
        })
    }
}

/// A loop made of blocks `first..=last`, entered at `head`: `first`, or, rotated, the block
/// that jumps from outside go to (its code is put first: `head..=last`, then `first..head`).
#[derive(Clone)]
struct Loop {
    first: u32,
    last: u32,
    head: u32,
    /// Block numbers it starts by testing for: blocks inside it entered from outside.
    tests: BTreeSet<i32>,
}

impl Loop {
    fn holds(&self, seg: u32) -> bool {
        (self.first..=self.last).contains(&seg)
    }
}

/// The loops a function gets, and which one each block's dispatch block opens in.
struct Plan {
    /// Sorted by `first` (outer loops before the loops inside them).
    loops: Vec<Loop>,
    /// `owner[k]`: the innermost loop block `k` is inside of (not its head), if any.
    owner: Vec<Option<usize>>,
    /// `loop_at[k]`: the loop block `k` heads.
    loop_at: Vec<Option<usize>>,
    /// Block numbers the table is entered with: 0, 1, the return addresses', and those of
    /// jumps back that stay jumps through the table.
    entered: BTreeSet<i32>,
    /// The blocks in the order their code is written, and each block's place in it.
    order: Vec<u32>,
    place: Vec<u32>,
    /// `number[k]`: a block number the table sends to block `k`, if any.
    number: Vec<Option<i32>>,
}

/// The most loops a function is planned with (more are left to the table; Go's functions
/// have far fewer).
const MAX_LOOPS: usize = 256;

impl Plan {
    fn new(j: &Jumps) -> Plan {
        let d = &j.dispatch;
        let n = d.blocks as usize;
        let mut number = vec![None; n];
        for k in (0..d.table.len()).rev() {
            if let Some(t) = d.target(k as i32) {
                number[t as usize] = Some(k as i32);
            }
        }
        let mut plan = Plan {
            loops: Vec::new(),
            owner: vec![None; n],
            loop_at: vec![None; n],
            entered: BTreeSet::from([0, 1]),
            order: (0..d.blocks).collect(),
            place: (0..d.blocks).collect(),
            number,
        };
        let in_table = |k: &i32| usize::try_from(*k).is_ok_and(|k| k < d.table.len());
        plan.entered
            .extend(j.resumes.iter().map(|&k| k as i32).filter(in_table));
        // Jumps back: each block jumped back to heads a loop to the last block jumping there.
        let mut last_at: Vec<Option<u32>> = vec![None; n];
        let mut jumps = Vec::new();
        for b in &j.branches {
            let to_entry = |rel: u32| d.frame(Some(b.seg), rel) == Target::Entry;
            let known = match &b.kind {
                Kind::Br { rel, pc } if to_entry(*rel) => pc.and_then(|k| Some((k, d.target(k)?))),
                Kind::BrIf { rel } if to_entry(*rel) => None,
                Kind::BrTable { depths, default }
                    if depths
                        .iter()
                        .chain([default])
                        .any(|&depth| depth >= b.inner && to_entry(depth - b.inner)) =>
                {
                    None
                }
                _ => continue,
            };
            // A jump to a block number the pass can't tell: any block may be entered.
            let Some((k, t)) = known else { return plan };
            jumps.push((b.seg, k, t));
            if t <= b.seg {
                let last = last_at[t as usize].get_or_insert(b.seg);
                *last = (*last).max(b.seg);
            }
        }
        let mut loops: Vec<Loop> = last_at
            .iter()
            .enumerate()
            .filter_map(|(first, last)| {
                Some(Loop {
                    first: first as u32,
                    last: (*last)?,
                    head: first as u32,
                    tests: BTreeSet::new(),
                })
            })
            .collect();
        if loops.len() > MAX_LOOPS {
            return plan;
        }
        // Widen loops until no two cross: a loop that starts inside another and ends after it
        // makes the other end there too.
        let mut widened = true;
        while widened {
            widened = false;
            for a in 0..loops.len() {
                for b in a + 1..loops.len() {
                    if loops[b].first <= loops[a].last && loops[b].last > loops[a].last {
                        loops[a].last = loops[b].last;
                        widened = true;
                    }
                }
            }
        }
        // The table's default can't be tested for: it stays out of loops' insides.
        if let Target::Seg(k) = d.frame(None, d.default) {
            loops.retain(|l| !(l.first < k && k <= l.last));
        }
        plan.loops = loops;
        // Find each loop's tests; drop the loops that need too many, which sends their jumps
        // back through the table, which may give others more tests.
        let entered = plan.entered.clone();
        let mut entries: Vec<(Option<u32>, i32, u32)>;
        loop {
            plan.index();
            plan.entered = entered.clone();
            entries = Vec::new();
            for &(seg, k, t) in &jumps {
                if t > seg {
                    entries.push((Some(seg), k, t));
                } else if plan.loop_at[t as usize].is_none() {
                    plan.entered.insert(k);
                }
            }
            entries.extend(
                plan.entered
                    .iter()
                    .filter_map(|&k| Some((None, k, d.target(k)?))),
            );
            for l in &mut plan.loops {
                l.tests.clear();
            }
            for &(from, k, t) in &entries {
                let mut at = plan.owner[t as usize];
                while let Some(i) = at {
                    if from.is_some_and(|s| plan.loops[i].holds(s)) {
                        break;
                    }
                    plan.loops[i].tests.insert(k);
                    at = plan.parent(i);
                }
            }
            let before = plan.loops.len();
            plan.loops.retain(|l| l.tests.len() <= MAX_TESTS);
            if plan.loops.len() == before {
                break;
            }
        }
        // A branch straight to a block (not Go's) sets no block number to test for: it may
        // only land where no test is needed.
        let tested = |b: &Branch, rel: u32| match d.frame(Some(b.seg), rel) {
            Target::Seg(x) => plan.route(Some(b.seg), x) != x,
            _ => false,
        };
        if j.branches
            .iter()
            .any(|b| b.targets().any(|rel| tested(b, rel)))
        {
            plan.loops.clear();
            plan.index();
            return plan;
        }
        plan.rotate(j, &entries);
        plan
    }

    /// Rotate the loops that can be: those entered from outside only at one block (`head`)
    /// after their first, so that they start there and need no test. See [`Plan::rotatable`].
    fn rotate(&mut self, j: &Jumps, entries: &[(Option<u32>, i32, u32)]) {
        let mut rotated = false;
        for i in 0..self.loops.len() {
            if let Some(head) = self.rotatable(j, entries, i) {
                let l = &mut self.loops[i];
                l.head = head;
                l.tests.clear();
                // The loop's blocks are in order in `order` (outer loops rotate first and
                // move whole inner loops): put `head..=last` first.
                let (first, last) = (l.first, l.last);
                let at = self.place[first as usize] as usize;
                let len = (last - first + 1) as usize;
                self.order[at..at + len].rotate_left((head - first) as usize);
                for (p, &k) in self.order.iter().enumerate().skip(at).take(len) {
                    self.place[k as usize] = p as u32;
                }
                rotated = true;
            }
        }
        if rotated {
            self.index();
        }
    }

    /// The block loop `i` can be rotated to start at, if any: the one block it tests for, if
    /// nothing from outside enters its first block (no jump, no table entry, no falling in from
    /// the block before), no loop inside it holds that block, and
    /// after the rotation every jump inside it goes forward or to the start of a loop holding
    /// it. The blocks after its last one must exist (the block falling out of it jumps there),
    /// and no loop inside it may start at that block.
    fn rotatable(&self, j: &Jumps, entries: &[(Option<u32>, i32, u32)], i: usize) -> Option<u32> {
        let d = &j.dispatch;
        let l = &self.loops[i];
        let mut heads = l.tests.iter().filter_map(|&k| d.target(k));
        let head = heads.next()?;
        if heads.any(|t| t != head) || head <= l.first || l.last + 1 >= d.blocks {
            return None;
        }
        let first = l.first;
        if first == 0 || j.falls[first as usize - 1] {
            return None;
        }
        if entries
            .iter()
            .any(|&(from, _, t)| t == first && !from.is_some_and(|s| l.holds(s)))
        {
            return None;
        }
        let crossed = self.loops.iter().enumerate().any(|(m, inner)| {
            m != i && l.holds(inner.first) && inner.first <= head && head <= inner.last
        });
        if crossed {
            return None;
        }
        // The blocks falling out of the loop and into its head get jumps.
        if j.falls[l.last as usize] && self.number[l.last as usize + 1].is_none() {
            return None;
        }
        // Where each of its blocks goes.
        let place = |k: u32| {
            if k >= head {
                k - head
            } else {
                k - first + (l.last - head + 1)
            }
        };
        for b in &j.branches {
            if !l.holds(b.seg) {
                continue;
            }
            for rel in b.targets() {
                let to = match d.frame(Some(b.seg), rel) {
                    Target::Seg(x) => Some(x),
                    Target::Entry => match &b.kind {
                        Kind::Br { pc, .. } => pc.and_then(|k| d.target(k)),
                        _ => None,
                    },
                    Target::Outer(_) => None,
                };
                let Some(to) = to else { continue };
                if !l.holds(to) || to == head {
                    continue;
                }
                let to_loop =
                    self.loop_at[to as usize].is_some_and(|m| m != i && self.loops[m].holds(b.seg));
                if !to_loop && place(to) <= place(b.seg) {
                    return None;
                }
            }
        }
        Some(head)
    }

    /// Fill `owner` and `loop_at` from `loops`.
    fn index(&mut self) {
        self.owner.fill(None);
        self.loop_at.fill(None);
        for (i, l) in self.loops.iter().enumerate() {
            self.loop_at[l.head as usize] = Some(i);
            for k in l.first..=l.last {
                if k != l.head {
                    self.owner[k as usize] = Some(i);
                }
            }
        }
    }

    /// The loop loop `i` is inside of.
    fn parent(&self, i: usize) -> Option<usize> {
        self.owner[self.loops[i].head as usize]
    }

    /// Where a jump from block `from` (or from the start of the loop it heads; `None`: from
    /// the prologue) to block `to` branches to: the block of the outermost loop that holds
    /// `to` but not `from` (whose start tests for `to`), or `to` itself.
    fn route(&self, from: Option<u32>, to: u32) -> u32 {
        let mut dest = to;
        let mut at = self.owner[to as usize];
        while let Some(i) = at {
            if from.is_some_and(|s| self.loops[i].holds(s)) {
                break;
            }
            dest = self.loops[i].head;
            at = self.parent(i);
        }
        dest
    }

    /// The frame a jump from block `from` to block `to` branches to: the loop `to` heads if
    /// that holds `from`; the dispatch block of `to` (or of the loop to enter first) if its
    /// code comes later; else the dispatch loop, through the table.
    fn jump_frame(&self, from: u32, to: u32) -> Frame {
        match self.loop_at[to as usize] {
            Some(i) if self.loops[i].holds(from) => Frame::Loop(i),
            _ if self.place[to as usize] > self.place[from as usize] => {
                Frame::Block(self.route(Some(from), to))
            }
            _ => Frame::Entry,
        }
    }

    /// The block whose code is written last in loop `i`.
    fn last_written(&self, i: usize) -> u32 {
        let l = &self.loops[i];
        (l.first..=l.last)
            .max_by_key(|&k| self.place[k as usize])
            .unwrap_or(l.last)
    }

    /// The patches that build the planned structure (`None` if it can't be built, a bug).
    fn emit(&self, j: &Jumps) -> Option<Vec<Patch>> {
        let d = &j.dispatch;
        let n = d.blocks;
        let moved = self.order.iter().enumerate().any(|(i, &k)| i != k as usize);
        let mut patches = Vec::new();
        let mut frames = Frames::new(n as usize, self.loops.len());
        // The prologue: the dispatch blocks that stay there (the last written outermost), and
        // the table.
        let mut top: Vec<u32> = (0..n)
            .filter(|&k| self.owner[k as usize].is_none())
            .collect();
        top.sort_by_key(|&k| std::cmp::Reverse(self.place[k as usize]));
        for &k in &top {
            frames.push(Frame::Block(k));
        }
        if top.len() != n as usize {
            patches.push(Patch {
                start: d.openers.start,
                end: d.openers.end,
                with: With::Bytes([0x02, 0x40].repeat(top.len())),
            });
        }
        let default = self.table_depth(d, &frames, d.default, true)?;
        let table: Vec<u32> = d
            .table
            .iter()
            .enumerate()
            .map(|(k, &depth)| {
                let entered = self.entered.contains(&(k as i32));
                Some(
                    self.table_depth(d, &frames, depth, entered)
                        .unwrap_or(default),
                )
            })
            .collect::<Option<_>>()?;
        if table != d.table || default != d.default {
            patches.push(Patch {
                start: d.br_table.start,
                end: d.br_table.end,
                with: With::Bytes(encode(&[enc::Instruction::BrTable(table.into(), default)])),
            });
        }
        let last_written: Vec<u32> = (0..self.loops.len())
            .map(|i| self.last_written(i))
            .collect();
        // Each block's branches, in order.
        let mut branches: Vec<Vec<&Branch>> = vec![Vec::new(); n as usize];
        for b in &j.branches {
            branches[b.seg as usize].push(b);
        }
        for p in 0..=n as usize {
            let seg = self.order.get(p).copied();
            let before = p.checked_sub(1).map(|p| self.order[p]);
            let mut code = Vec::new();
            // The block written before, if it runs on into a block that is no longer next,
            // jumps there.
            if let Some(b) = before
                && j.falls[b as usize]
                && b + 1 < n
                && seg != Some(b + 1)
            {
                let number = self.number[b as usize + 1]?;
                let depth = frames.depth(self.jump_frame(b, b + 1))?;
                code.extend([
                    enc::Instruction::I32Const(number),
                    enc::Instruction::LocalSet(0),
                    enc::Instruction::Br(depth),
                ]);
            }
            // Close the loops written up to here, then this block's dispatch block (after the
            // last block, the dispatch loop).
            while let Some(Frame::Loop(i)) = frames.top() {
                if Some(last_written[i]) != before {
                    break;
                }
                frames.pop();
                code.push(enc::Instruction::End);
            }
            if frames.pop() != Some(seg.map_or(Frame::Entry, Frame::Block)) {
                return None;
            }
            code.push(enc::Instruction::End);
            let Some(seg) = seg else {
                if code.len() > 1 || moved {
                    patches.push(end_patch(&j.ends[n as usize], &code));
                }
                break;
            };
            if let Some(i) = self.loop_at[seg as usize] {
                let l = &self.loops[i];
                frames.push(Frame::Loop(i));
                code.push(enc::Instruction::Loop(enc::BlockType::Empty));
                let mut inside: Vec<u32> = (l.first..=l.last)
                    .filter(|&k| self.owner[k as usize] == Some(i))
                    .collect();
                inside.sort_by_key(|&k| std::cmp::Reverse(self.place[k as usize]));
                for k in inside {
                    frames.push(Frame::Block(k));
                    code.push(enc::Instruction::Block(enc::BlockType::Empty));
                }
                for &k in &l.tests {
                    let to = self.route(Some(seg), d.target(k)?);
                    code.extend([
                        enc::Instruction::LocalGet(0),
                        enc::Instruction::I32Const(k),
                        enc::Instruction::I32Eq,
                        enc::Instruction::BrIf(frames.depth(Frame::Block(to))?),
                    ]);
                }
            }
            if code.len() > 1 || moved {
                patches.push(end_patch(&j.ends[seg as usize], &code));
            }
            for b in &branches[seg as usize] {
                patches.extend(self.branch(d, &frames, b)?);
            }
        }
        Some(patches)
    }

    /// The depth, from the prologue's `br_table`, of its entry `depth`; `entered`: whether a
    /// goroutine may come in with it (if not, a block inside a loop gets `None`).
    fn table_depth(&self, d: &Dispatch, frames: &Frames, depth: u32, entered: bool) -> Option<u32> {
        match d.frame(None, depth) {
            Target::Seg(t) if entered || self.owner[t as usize].is_none() => {
                frames.depth(Frame::Block(self.route(None, t)))
            }
            Target::Seg(_) => None,
            Target::Entry => frames.depth(Frame::Entry),
            Target::Outer(k) => frames.depth(Frame::Entry)?.checked_add(k)?.checked_add(1),
        }
    }

    /// `b`'s patch, if its depth(s) change (`None`: a frame is missing, a bug).
    fn branch(&self, d: &Dispatch, frames: &Frames, b: &Branch) -> Option<Option<Patch>> {
        // The new depth of `rel` (past the block's own frames), for a jump to block number
        // `pc` if it is one.
        let depth = |rel: u32, pc: Option<i32>| -> Option<u32> {
            let frame = match d.frame(Some(b.seg), rel) {
                Target::Seg(x) => Frame::Block(self.route(Some(b.seg), x)),
                Target::Entry => match pc.and_then(|k| d.target(k)) {
                    Some(t) => self.jump_frame(b.seg, t),
                    None => Frame::Entry,
                },
                Target::Outer(k) => {
                    let past = frames.depth(Frame::Entry)?.checked_add(k)?.checked_add(1)?;
                    return b.inner.checked_add(past);
                }
            };
            b.inner.checked_add(frames.depth(frame)?)
        };
        let with = match &b.kind {
            Kind::Br { rel, pc } => {
                let new = depth(*rel, *pc)?;
                (new != b.inner + rel).then_some(With::Op(BR, new))
            }
            Kind::BrIf { rel } => {
                let new = depth(*rel, None)?;
                (new != b.inner + rel).then_some(With::Op(BR_IF, new))
            }
            Kind::BrTable { depths, default } => {
                let map = |old: u32| {
                    if old < b.inner {
                        Some(old)
                    } else {
                        depth(old - b.inner, None)
                    }
                };
                let new: Vec<u32> = depths.iter().map(|&old| map(old)).collect::<Option<_>>()?;
                let new_default = map(*default)?;
                (new != *depths || new_default != *default).then(|| {
                    With::Bytes(encode(&[enc::Instruction::BrTable(
                        new.into(),
                        new_default,
                    )]))
                })
            }
        };
        Some(with.map(|with| Patch {
            start: b.at.start,
            end: b.at.end,
            with,
        }))
    }
}

fn end_patch(at: &Range<usize>, code: &[enc::Instruction<'_>]) -> Patch {
    Patch {
        start: at.start,
        end: at.end,
        with: With::Bytes(encode(code)),
    }
}

/// A frame of the rewritten dispatch structure.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Frame {
    /// The dispatch block whose `end` starts block `k`'s code.
    Block(u32),
    /// The planned loop `i`.
    Loop(usize),
    /// The dispatch loop.
    Entry,
}

/// The frames open at a point of the rewritten function, innermost last, and where each is.
struct Frames {
    stack: Vec<Frame>,
    block_at: Vec<usize>,
    loop_at: Vec<usize>,
}

impl Frames {
    fn new(blocks: usize, loops: usize) -> Frames {
        Frames {
            stack: vec![Frame::Entry],
            block_at: vec![usize::MAX; blocks],
            loop_at: vec![usize::MAX; loops],
        }
    }

    fn slot(&mut self, f: Frame) -> Option<&mut usize> {
        match f {
            Frame::Block(k) => self.block_at.get_mut(k as usize),
            Frame::Loop(i) => self.loop_at.get_mut(i),
            Frame::Entry => None,
        }
    }

    fn push(&mut self, f: Frame) {
        let at = self.stack.len();
        if let Some(slot) = self.slot(f) {
            *slot = at;
        }
        self.stack.push(f);
    }

    fn pop(&mut self) -> Option<Frame> {
        let f = self.stack.pop()?;
        if let Some(slot) = self.slot(f) {
            *slot = usize::MAX;
        }
        Some(f)
    }

    fn top(&self) -> Option<Frame> {
        self.stack.last().copied()
    }

    /// How many frames out `f` is from the innermost (`None` if it isn't open).
    fn depth(&self, f: Frame) -> Option<u32> {
        let at = match f {
            Frame::Block(k) => *self.block_at.get(k as usize)?,
            Frame::Loop(i) => *self.loop_at.get(i)?,
            Frame::Entry => 0,
        };
        if self.stack.get(at) != Some(&f) {
            return None;
        }
        u32::try_from(self.stack.len() - 1 - at).ok()
    }
}

fn encode(code: &[enc::Instruction<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for i in code {
        enc::Encode::encode(i, &mut out);
    }
    out
}

fn is_plain_block(op: &Operator<'_>) -> bool {
    matches!(
        op,
        Operator::Block {
            blockty: BlockType::Empty
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_encoder as enc;

    /// A module with one function shaped like Go's dispatch loop (`f`, behind an exported
    /// `run(n)`), which computes the sum over `i < n` of `i` (even `i`) or `2i` (odd `i`).
    /// Its five blocks are reached by block numbers 0–1, 2, 3–4, 5 and 6; it jumps forward
    /// from block 0 to 2 (over block 1), from block 2 to 4 and to 3 (from inside an `if`),
    /// and back from blocks 2 and 3 to block 2. Block 4 ends with an unreachable jump to a
    /// block number outside the table.
    fn go_shaped() -> Vec<u8> {
        use enc::Instruction as I;
        let mut m = enc::Module::new();
        let mut types = enc::TypeSection::new();
        types
            .ty()
            .function([enc::ValType::I32], [enc::ValType::I32]);
        m.section(&types);
        let mut funcs = enc::FunctionSection::new();
        funcs.function(0);
        funcs.function(0);
        m.section(&funcs);
        let mut globals = enc::GlobalSection::new();
        for _ in 0..3 {
            globals.global(
                enc::GlobalType {
                    val_type: enc::ValType::I32,
                    mutable: true,
                    shared: false,
                },
                &enc::ConstExpr::i32_const(0),
            );
        }
        m.section(&globals);
        let mut exports = enc::ExportSection::new();
        exports.export("run", enc::ExportKind::Func, 1);
        m.section(&exports);
        let mut code = enc::CodeSection::new();
        let mut f = enc::Function::new([(2, enc::ValType::I32)]);
        let jump = |f: &mut enc::Function, k: i32, depth: u32| {
            f.instruction(&I::I32Const(k))
                .instruction(&I::LocalSet(0))
                .instruction(&I::Br(depth));
        };
        let acc_add = |f: &mut enc::Function, times: i32| {
            f.instruction(&I::GlobalGet(1))
                .instruction(&I::LocalGet(1))
                .instruction(&I::I32Const(times))
                .instruction(&I::I32Mul)
                .instruction(&I::I32Add)
                .instruction(&I::GlobalSet(1))
                .instruction(&I::LocalGet(1))
                .instruction(&I::I32Const(1))
                .instruction(&I::I32Add)
                .instruction(&I::LocalSet(1));
        };
        f.instruction(&I::GlobalGet(2))
            .instruction(&I::LocalSet(2))
            .instruction(&I::Block(enc::BlockType::Empty))
            .instruction(&I::Loop(enc::BlockType::Empty));
        for _ in 0..5 {
            f.instruction(&I::Block(enc::BlockType::Empty));
        }
        f.instruction(&I::LocalGet(0))
            .instruction(&I::BrTable(vec![0, 0, 1, 2, 2, 3, 4].into(), 6))
            .instruction(&I::End);
        // Block 0: i = 0, acc = 0, on to block 2 (number 4).
        f.instruction(&I::I32Const(0))
            .instruction(&I::LocalSet(1))
            .instruction(&I::I32Const(0))
            .instruction(&I::GlobalSet(1));
        jump(&mut f, 4, 4);
        f.instruction(&I::End);
        // Block 1 (never reached): acc += 1000.
        f.instruction(&I::GlobalGet(1))
            .instruction(&I::I32Const(1000))
            .instruction(&I::I32Add)
            .instruction(&I::GlobalSet(1))
            .instruction(&I::End);
        // Block 2: done when i >= n (block 4); odd i in block 3; else acc += i, again.
        f.instruction(&I::LocalGet(1))
            .instruction(&I::GlobalGet(0))
            .instruction(&I::I32GeS)
            .instruction(&I::If(enc::BlockType::Empty));
        jump(&mut f, 6, 3);
        f.instruction(&I::End)
            .instruction(&I::LocalGet(1))
            .instruction(&I::I32Const(1))
            .instruction(&I::I32And)
            .instruction(&I::If(enc::BlockType::Empty));
        jump(&mut f, 5, 3);
        f.instruction(&I::End);
        acc_add(&mut f, 1);
        jump(&mut f, 3, 2);
        f.instruction(&I::End);
        // Block 3: acc += 2i, back to block 2.
        acc_add(&mut f, 2);
        jump(&mut f, 4, 1);
        f.instruction(&I::End);
        // Block 4: the result.
        f.instruction(&I::GlobalGet(1)).instruction(&I::Return);
        jump(&mut f, 99, 0);
        f.instruction(&I::End)
            .instruction(&I::Unreachable)
            .instruction(&I::End)
            .instruction(&I::I32Const(1))
            .instruction(&I::End);
        code.function(&f);
        let mut run = enc::Function::new([]);
        run.instruction(&I::LocalGet(0))
            .instruction(&I::GlobalSet(0))
            .instruction(&I::I32Const(0))
            .instruction(&I::Call(0))
            .instruction(&I::End);
        code.function(&run);
        m.section(&code);
        m.finish()
    }

    fn expected(n: i32) -> i32 {
        (0..n).map(|i| if i % 2 == 1 { 2 * i } else { i }).sum()
    }

    fn run(wasm: &[u8], n: i32) -> i32 {
        let engine = wasmtime::Engine::default();
        let module = wasmtime::Module::new(&engine, wasm).expect("compiles");
        let mut store = wasmtime::Store::new(&engine, ());
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).expect("instantiates");
        let run = instance
            .get_typed_func::<i32, i32>(&mut store, "run")
            .expect("run");
        run.call(&mut store, n).expect("runs")
    }

    fn validate(wasm: &[u8]) -> bool {
        wasmparser::Validator::new().validate_all(wasm).is_ok()
    }

    /// An instruction of a block in [`shaped`]: a plain one, a jump to block number `k` (Go's
    /// `i32.const k; local.set 0; br $entry`), or such a jump under `if`.
    enum Op {
        I(enc::Instruction<'static>),
        Jump(u32),
        JumpIf(Vec<enc::Instruction<'static>>, u32),
    }

    /// A module whose function `f` has Go's shape with `blocks` as its blocks (block number
    /// `k` is block `k`; the table's default is the last block), behind an exported
    /// `run(n, pc)` that sets global 0 to `n` and global 1 to 0, calls `f(pc)` and returns
    /// global 1. `f` has three i32 locals after `PC_B`.
    fn shaped(blocks: &[Vec<Op>]) -> Vec<u8> {
        shaped_calling(blocks, "main.g")
    }

    /// [`shaped`], with a memory, and a function 2 (`(i32) -> i32`, traps) called `callee` in
    /// the name section.
    fn shaped_calling(blocks: &[Vec<Op>], callee: &str) -> Vec<u8> {
        use enc::Instruction as I;
        let n = blocks.len() as u32;
        let mut m = enc::Module::new();
        let mut types = enc::TypeSection::new();
        types
            .ty()
            .function([enc::ValType::I32], [enc::ValType::I32]);
        types
            .ty()
            .function([enc::ValType::I32, enc::ValType::I32], [enc::ValType::I32]);
        m.section(&types);
        let mut funcs = enc::FunctionSection::new();
        funcs.function(0);
        funcs.function(1);
        funcs.function(0);
        m.section(&funcs);
        let mut memory = enc::MemorySection::new();
        memory.memory(enc::MemoryType {
            minimum: 1,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        m.section(&memory);
        let mut globals = enc::GlobalSection::new();
        for _ in 0..2 {
            globals.global(
                enc::GlobalType {
                    val_type: enc::ValType::I32,
                    mutable: true,
                    shared: false,
                },
                &enc::ConstExpr::i32_const(0),
            );
        }
        m.section(&globals);
        let mut exports = enc::ExportSection::new();
        exports.export("run", enc::ExportKind::Func, 1);
        m.section(&exports);
        let mut code = enc::CodeSection::new();
        let mut f = enc::Function::new([(3, enc::ValType::I32)]);
        f.instruction(&I::Loop(enc::BlockType::Empty));
        for _ in 0..n {
            f.instruction(&I::Block(enc::BlockType::Empty));
        }
        f.instruction(&I::LocalGet(0))
            .instruction(&I::BrTable((0..n).collect::<Vec<_>>().into(), n - 1))
            .instruction(&I::End);
        let jump = |f: &mut enc::Function, k: u32, depth: u32| {
            f.instruction(&I::I32Const(k as i32))
                .instruction(&I::LocalSet(0))
                .instruction(&I::Br(depth));
        };
        for (s, ops) in blocks.iter().enumerate() {
            let out = n - 1 - s as u32;
            for op in ops {
                match op {
                    Op::I(i) => {
                        f.instruction(i);
                    }
                    Op::Jump(k) => jump(&mut f, *k, out),
                    Op::JumpIf(cond, k) => {
                        for i in cond {
                            f.instruction(i);
                        }
                        f.instruction(&I::If(enc::BlockType::Empty));
                        jump(&mut f, *k, out + 1);
                        f.instruction(&I::End);
                    }
                }
            }
            f.instruction(&I::End);
        }
        f.instruction(&I::Unreachable).instruction(&I::End);
        code.function(&f);
        let mut run = enc::Function::new([]);
        run.instruction(&I::LocalGet(0))
            .instruction(&I::GlobalSet(0))
            .instruction(&I::I32Const(0))
            .instruction(&I::GlobalSet(1))
            .instruction(&I::LocalGet(1))
            .instruction(&I::Call(0))
            .instruction(&I::Drop)
            .instruction(&I::GlobalGet(1))
            .instruction(&I::End);
        code.function(&run);
        let mut callee_body = enc::Function::new([]);
        callee_body
            .instruction(&I::Unreachable)
            .instruction(&I::End);
        code.function(&callee_body);
        m.section(&code);
        let mut names = enc::NameSection::new();
        let mut functions = enc::NameMap::new();
        functions.append(0, "main.f");
        functions.append(1, "run");
        functions.append(2, callee);
        names.functions(&functions);
        m.section(&names);
        m.finish()
    }

    fn run_at(wasm: &[u8], n: i32, pc: i32) -> i32 {
        let engine = wasmtime::Engine::default();
        let module = wasmtime::Module::new(&engine, wasm).expect("compiles");
        let mut store = wasmtime::Store::new(&engine, ());
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).expect("instantiates");
        let run = instance
            .get_typed_func::<(i32, i32), i32>(&mut store, "run")
            .expect("run");
        run.call(&mut store, (n, pc)).expect("runs")
    }

    /// How many instructions of `f`, the first function, are `which`.
    fn count(wasm: &[u8], which: impl Fn(&Operator<'_>) -> bool) -> usize {
        for payload in wasmparser::Parser::new(0).parse_all(wasm) {
            if let wasmparser::Payload::CodeSectionEntry(b) = payload.unwrap() {
                let mut ops = b.get_operators_reader().unwrap();
                let mut n = 0;
                while !ops.eof() {
                    n += usize::from(which(&ops.read().unwrap()));
                }
                return n;
            }
        }
        0
    }

    /// How many `loop`s `f` has.
    fn loops(wasm: &[u8]) -> usize {
        count(wasm, |op| matches!(op, Operator::Loop { .. }))
    }

    /// `acc += v` (global 1).
    fn add(v: enc::Instruction<'static>) -> [Op; 4] {
        use enc::Instruction as I;
        [
            Op::I(I::GlobalGet(1)),
            Op::I(v),
            Op::I(I::I32Add),
            Op::I(I::GlobalSet(1)),
        ]
    }

    /// `local += 1`.
    fn incr(local: u32) -> [Op; 4] {
        use enc::Instruction as I;
        [
            Op::I(I::LocalGet(local)),
            Op::I(I::I32Const(1)),
            Op::I(I::I32Add),
            Op::I(I::LocalSet(local)),
        ]
    }

    /// `local < bound`'s instructions.
    fn less(local: u32, bound: enc::Instruction<'static>) -> Vec<enc::Instruction<'static>> {
        vec![
            enc::Instruction::LocalGet(local),
            bound,
            enc::Instruction::I32LtS,
        ]
    }

    /// Go's shape of `for i := 0; i < n; i++ { for j := 0; j < i; j++ { acc = acc*31 + 7i + j } }`
    /// (both loops rotated: entered at their condition), with block 2 (the inner loop's
    /// body) stored as a return address by block 1.
    fn nested() -> Vec<Vec<Op>> {
        use enc::Instruction as I;
        let (i, j) = (1, 2);
        vec![
            vec![Op::I(I::I32Const(0)), Op::I(I::LocalSet(i)), Op::Jump(4)],
            vec![
                Op::I(I::I64Const((9 << 16) | 2)),
                Op::I(I::Drop),
                Op::I(I::I32Const(0)),
                Op::I(I::LocalSet(j)),
                Op::Jump(3),
            ],
            [
                Op::I(I::GlobalGet(1)),
                Op::I(I::I32Const(31)),
                Op::I(I::I32Mul),
                Op::I(I::LocalGet(i)),
                Op::I(I::I32Const(7)),
                Op::I(I::I32Mul),
                Op::I(I::I32Add),
                Op::I(I::LocalGet(j)),
                Op::I(I::I32Add),
                Op::I(I::GlobalSet(1)),
            ]
            .into_iter()
            .chain(incr(j))
            .collect(),
            [Op::JumpIf(less(j, I::LocalGet(i)), 2)]
                .into_iter()
                .chain(incr(i))
                .collect(),
            vec![Op::JumpIf(less(i, I::GlobalGet(0)), 1)],
            vec![Op::I(I::I32Const(0)), Op::I(I::Return)],
        ]
    }

    fn nested_expected(n: i32) -> i32 {
        let mut acc = 0i32;
        for i in 0..n {
            for j in 0..i {
                acc = acc.wrapping_mul(31).wrapping_add(7 * i + j);
            }
        }
        acc
    }

    #[test]
    fn jumps_back_become_loops() {
        let wasm = shaped(&nested());
        assert!(validate(&wasm));
        let looped = thread(&wasm).expect("rewritten");
        assert!(validate(&looped));
        // The dispatch loop and the two of the function.
        assert_eq!((loops(&wasm), loops(&looped)), (1, 3));
        for n in [0, 1, 2, 5, 40] {
            assert_eq!(run_at(&wasm, n, 0), nested_expected(n), "original, n = {n}");
            assert_eq!(
                run_at(&looped, n, 0),
                nested_expected(n),
                "rewritten, n = {n}"
            );
            // Entered at the return address's block, inside both loops (through the outer
            // one's test), it runs as the original does.
            assert_eq!(
                run_at(&looped, n, 2),
                run_at(&wasm, n, 2),
                "resumed, n = {n}"
            );
        }
    }

    /// How many `i32.eq`s `f` has: its loops' tests.
    fn tests(wasm: &[u8]) -> usize {
        count(wasm, |op| matches!(op, Operator::I32Eq))
    }

    /// [`nested`] without the return address, and with block 1 (which the table may be
    /// entered with) left unreachable, as Go has it: both loops are entered only at their
    /// condition, so both can start there.
    fn rotatable() -> Vec<Vec<Op>> {
        use enc::Instruction as I;
        let j = 2;
        let mut blocks = nested();
        // Block numbers one up.
        for ops in &mut blocks {
            for op in ops {
                match op {
                    Op::Jump(k) | Op::JumpIf(_, k) => *k += 1,
                    Op::I(_) => {}
                }
            }
        }
        blocks[1] = vec![Op::I(I::I32Const(0)), Op::I(I::LocalSet(j)), Op::Jump(4)];
        blocks.insert(1, vec![Op::I(I::Unreachable)]);
        blocks
    }

    /// [`rotatable`] whose outer loop body calls function 2 when `i < 0` (never), storing a
    /// return address for block 3 (the inner loop's first block) first, as Go does.
    fn calling() -> Vec<Vec<Op>> {
        use enc::Instruction as I;
        let mut blocks = rotatable();
        let call = vec![
            Op::I(I::LocalGet(1)),
            Op::I(I::I32Const(0)),
            Op::I(I::I32LtS),
            Op::I(I::If(enc::BlockType::Empty)),
            Op::I(I::I32Const(0)),
            Op::I(I::I64Const((9 << 16) | 3)),
            Op::I(I::I64Store(enc::MemArg {
                offset: 0,
                align: 3,
                memory_index: 0,
            })),
            Op::I(I::I32Const(0)),
            Op::I(I::Call(2)),
            Op::I(I::Drop),
            Op::I(I::End),
        ];
        blocks[2].splice(0..0, call);
        blocks
    }

    #[test]
    fn calls_that_never_return_leave_no_resume_point() {
        // A panic of Go's: its return address enters nothing, and both loops rotate.
        let panics = shaped_calling(&calling(), "runtime.goPanicIndex");
        let looped = thread(&panics).expect("rewritten");
        assert!(validate(&looped));
        assert_eq!((loops(&looped), tests(&looped)), (3, 0));
        for n in [0, 1, 2, 5, 40] {
            assert_eq!(run_at(&looped, n, 0), nested_expected(n), "n = {n}");
        }
        // Any other function may return there: the inner loop's first block is a resume
        // point, tested for.
        let returns = shaped_calling(&calling(), "main.g");
        let looped = thread(&returns).expect("rewritten");
        assert!(validate(&looped));
        assert!(tests(&looped) > 0);
        for n in [0, 1, 2, 5, 40] {
            assert_eq!(run_at(&looped, n, 0), nested_expected(n), "n = {n}");
            assert_eq!(
                run_at(&looped, n, 3),
                run_at(&returns, n, 3),
                "resumed, n = {n}"
            );
        }
        for name in [
            "runtime.goPanicSliceAlen",
            "runtime.sigpanic",
            "runtime.throw",
        ] {
            assert!(never_returns(name), "{name}");
        }
        for name in ["runtime.panicCheck1", "runtime.gopark", "main.goPanic"] {
            assert!(!never_returns(name), "{name}");
        }
    }

    #[test]
    fn loops_entered_at_their_condition_start_there() {
        let wasm = shaped(&rotatable());
        assert!(validate(&wasm));
        let looped = thread(&wasm).expect("rewritten");
        assert!(validate(&looped));
        // Two loops, and no test: each starts at its condition block.
        assert_eq!((loops(&looped), tests(&looped)), (3, 0));
        for n in [0, 1, 2, 5, 40] {
            assert_eq!(run_at(&wasm, n, 0), nested_expected(n), "original, n = {n}");
            assert_eq!(
                run_at(&looped, n, 0),
                nested_expected(n),
                "rewritten, n = {n}"
            );
        }
        // Not rotated, the same loops would test for their condition blocks.
        assert_eq!(tests(&thread(&shaped(&nested())).unwrap()), 3);
    }

    /// A loop over blocks 1–6 entered at its condition (block 6) whose blocks 2.. are
    /// `resumes` return addresses.
    fn long_loop(resumes: &[u32]) -> Vec<Vec<Op>> {
        use enc::Instruction as I;
        let i = 1;
        let mut blocks = vec![vec![
            Op::I(I::I32Const(0)),
            Op::I(I::LocalSet(i)),
            Op::Jump(6),
        ]];
        for k in 1..=5 {
            let mut ops: Vec<Op> = add(I::I32Const(k)).into();
            if k == 1 {
                for &r in resumes {
                    ops.extend([Op::I(I::I64Const((9 << 16) | i64::from(r))), Op::I(I::Drop)]);
                }
            }
            if k == 5 {
                ops.extend(incr(i));
            }
            blocks.push(ops);
        }
        blocks.push(vec![Op::JumpIf(less(i, I::GlobalGet(0)), 1)]);
        blocks.push(vec![Op::I(I::I32Const(0)), Op::I(I::Return)]);
        blocks
    }

    #[test]
    fn loops_entered_in_too_many_places_stay_dispatched() {
        // Four tests (blocks 2–4 and the condition): a loop.
        let wasm = shaped(&long_loop(&[2, 3, 4]));
        let looped = thread(&wasm).expect("rewritten");
        assert!(validate(&looped));
        assert_eq!(loops(&looped), 2);
        // Five: left to the table.
        let wasm5 = shaped(&long_loop(&[2, 3, 4, 5]));
        let dispatched = thread(&wasm5).expect("rewritten");
        assert!(validate(&dispatched));
        assert_eq!(loops(&dispatched), 1);
        for n in [0, 1, 3, 10] {
            assert_eq!(run_at(&looped, n, 0), 15 * n, "n = {n}");
            assert_eq!(run_at(&dispatched, n, 0), 15 * n, "n = {n}");
            // Return addresses' blocks run as in the original.
            for pc in 2..=4 {
                assert_eq!(
                    run_at(&looped, n, pc),
                    run_at(&wasm, n, pc),
                    "n = {n}, pc = {pc}"
                );
            }
            for pc in 2..=5 {
                assert_eq!(
                    run_at(&dispatched, n, pc),
                    run_at(&wasm5, n, pc),
                    "n = {n}, pc = {pc}"
                );
            }
        }
    }

    #[test]
    fn crossing_loops_are_widened() {
        use enc::Instruction as I;
        let i = 1;
        // Back from 3 to 1 and from 4 to 2: loops 1–3 and 2–4 become 1–4 holding 2–4.
        let odd = vec![
            I::LocalGet(i),
            I::I32Const(1),
            I::I32And,
            I::LocalGet(i),
            I::GlobalGet(0),
            I::I32LtS,
            I::I32And,
        ];
        let blocks = vec![
            vec![Op::I(I::I32Const(0)), Op::I(I::LocalSet(i)), Op::Jump(1)],
            [add(I::I32Const(1)), incr(i)]
                .into_iter()
                .flatten()
                .collect(),
            [add(I::I32Const(10)), incr(i)]
                .into_iter()
                .flatten()
                .collect(),
            vec![Op::JumpIf(odd, 1)],
            add(I::I32Const(100))
                .into_iter()
                .chain([Op::JumpIf(less(i, I::GlobalGet(0)), 2)])
                .collect(),
            vec![Op::I(I::I32Const(0)), Op::I(I::Return)],
        ];
        let wasm = shaped(&blocks);
        let looped = thread(&wasm).expect("rewritten");
        assert!(validate(&looped));
        assert_eq!(loops(&looped), 3);
        for n in [0, 1, 2, 7, 30] {
            assert_eq!(run_at(&looped, n, 0), run_at(&wasm, n, 0), "n = {n}");
        }
        assert_eq!(run_at(&wasm, 7, 0), 243);
    }

    #[test]
    fn forward_jumps_go_straight_to_their_block() {
        let wasm = go_shaped();
        assert!(validate(&wasm));
        for n in [0, 1, 2, 7, 100] {
            assert_eq!(run(&wasm, n), expected(n), "original, n = {n}");
        }
        let direct = thread(&wasm).expect("rewritten");
        assert!(validate(&direct));
        for n in [0, 1, 2, 7, 100] {
            assert_eq!(run(&direct, n), expected(n), "rewritten, n = {n}");
        }
        // The three forward jumps, and only they, now branch to their block's end.
        let body = |wasm: &[u8]| {
            let mut depths = Vec::new();
            for payload in wasmparser::Parser::new(0).parse_all(wasm) {
                if let wasmparser::Payload::CodeSectionEntry(b) = payload.unwrap() {
                    let mut ops = b.get_operators_reader().unwrap();
                    while !ops.eof() {
                        if let Operator::Br { relative_depth } = ops.read().unwrap() {
                            depths.push(relative_depth);
                        }
                    }
                    return depths;
                }
            }
            depths
        };
        assert_eq!(body(&wasm), [4, 3, 3, 2, 1, 0]);
        assert_eq!(body(&direct), [1, 2, 1, 2, 1, 0]);
        assert_eq!(direct.len(), wasm.len());
    }

    #[test]
    fn other_shapes_are_left_alone() {
        let mut m = enc::Module::new();
        let mut types = enc::TypeSection::new();
        types
            .ty()
            .function([enc::ValType::I32], [enc::ValType::I32]);
        m.section(&types);
        let mut funcs = enc::FunctionSection::new();
        funcs.function(0);
        m.section(&funcs);
        let mut code = enc::CodeSection::new();
        // A loop with a table dispatch, but not on local 0.
        let mut f = enc::Function::new([(1, enc::ValType::I32)]);
        f.instructions()
            .loop_(enc::BlockType::Empty)
            .block(enc::BlockType::Empty)
            .local_get(1)
            .br_table([0], 0)
            .end()
            .i32_const(0)
            .local_set(0)
            .br(0)
            .end()
            .unreachable()
            .end();
        code.function(&f);
        m.section(&code);
        assert!(thread(&m.finish()).is_none());
        assert!(thread(b"\0asm\x01\0\0\0").is_none());
        assert!(thread(b"not wasm").is_none());
    }

    #[test]
    fn damaged_modules_never_panic() {
        for wasm in [go_shaped(), shaped(&nested()), shaped(&rotatable())] {
            damage(&wasm);
        }
    }

    /// Every truncation and a few flips of every byte of `wasm`: no panic, and what validated
    /// before the rewrite validates after it.
    fn damage(wasm: &[u8]) {
        for i in 0..wasm.len() {
            let _ = thread(&wasm[..i]);
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = wasm.to_vec();
                bad[i] ^= flip;
                if let Some(direct) = thread(&bad)
                    && validate(&bad)
                {
                    assert!(validate(&direct), "byte {i} ^ {flip:#x}");
                }
            }
        }
    }
}
