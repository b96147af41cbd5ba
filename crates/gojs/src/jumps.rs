//! Direct jumps in Go's functions (RATIONALE.md, "Why rewrite the jumps of Go's functions?").
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
//! a trip through the loop header and an indirect jump through the table. A jump forward, to
//! block `t` from the code of block `s < t`, can instead branch straight to the `end` of
//! dispatch block `t`, which encloses it: the same place the table would send it, with
//! `$PC_B` set as before. [`thread`] rewrites those branches' depths and nothing else, so the
//! module's behaviour is unchanged and every other byte stays where it was.

use wasmparser::{BlockType, Operator, OperatorsReader};

use crate::rewrite::{BR, Patch, With};

/// `wasm` with the forward jumps of its Go-shaped functions made direct (and nothing else), or
/// `None` if the module can't be read as a sequence of sections or has no jump to rewrite.
pub(crate) fn thread(wasm: &[u8]) -> Option<Vec<u8>> {
    crate::rewrite::prepare(
        wasm,
        crate::rewrite::Passes {
            jumps: true,
            fill: false,
            dispatch: false,
            data: false,
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
        let mut blocks: u32 = 0;
        loop {
            match ops.read().ok()? {
                op if is_plain_block(&op) => blocks += 1,
                Operator::LocalGet { local_index: 0 } => break,
                _ => return None,
            }
        }
        if blocks == 0 {
            return None;
        }
        let Operator::BrTable { targets } = ops.read().ok()? else {
            return None;
        };
        let default = targets.default();
        let table = targets.targets().collect::<Result<Vec<u32>, _>>().ok()?;
        if !matches!(ops.read().ok()?, Operator::End) {
            return None;
        }
        Some(Dispatch {
            blocks,
            table,
            default,
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
}

/// Follows the instructions after a [`Dispatch`] prologue and finds the forward jumps.
pub(crate) struct Jumps {
    dispatch: Dispatch,
    /// The code of block `seg` is running, `inner` frames deep in its own blocks/loops/ifs.
    seg: u32,
    inner: u32,
    /// `Some(k)` right after `i32.const k`, and right after `i32.const k; local.set 0`.
    after_const: Option<i32>,
    after_set: Option<i32>,
    /// Past the dispatch loop, or given up (on exception handling): nothing more to find.
    done: bool,
}

impl Jumps {
    pub(crate) fn new(dispatch: Dispatch) -> Jumps {
        Jumps {
            dispatch,
            seg: 0,
            inner: 0,
            after_const: None,
            after_set: None,
            done: false,
        }
    }

    /// Look at the next instruction, `op` at `start..end` of the body; a forward jump gets a
    /// patch in `patches`.
    pub(crate) fn step(
        &mut self,
        op: &Operator<'_>,
        start: usize,
        end: usize,
        patches: &mut Vec<Patch>,
    ) {
        if self.done {
            return;
        }
        let blocks = self.dispatch.blocks;
        match *op {
            Operator::Block { .. } | Operator::Loop { .. } | Operator::If { .. } => self.inner += 1,
            // Exception handling frames: not Go's code, and not worth following.
            Operator::Try { .. }
            | Operator::TryTable { .. }
            | Operator::Catch { .. }
            | Operator::CatchAll
            | Operator::Delegate { .. } => {
                // Jumps found so far stay right: the frames before were followed exactly.
                self.done = true;
                return;
            }
            Operator::End if self.inner > 0 => self.inner -= 1,
            Operator::End => {
                // A dispatch block ends and the next block's code starts (after the last one,
                // the loop ends: past the code we rewrite).
                self.seg += 1;
                if self.seg >= blocks {
                    self.done = true;
                    return;
                }
            }
            Operator::Br { relative_depth } => {
                let (seg, inner) = (self.seg, self.inner);
                if relative_depth == inner + (blocks - 1 - seg)
                    && let Some(k) = self.after_set
                    && let Some(t) = self.dispatch.target(k)
                    && t > seg
                {
                    patches.push(Patch {
                        start,
                        end,
                        with: With::Op(BR, inner + (t - seg - 1)),
                    });
                }
            }
            _ => {}
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
        let wasm = go_shaped();
        for i in 0..wasm.len() {
            let _ = thread(&wasm[..i]);
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = wasm.clone();
                bad[i] ^= flip;
                // What validated before the rewrite validates after it.
                if let Some(direct) = thread(&bad)
                    && validate(&bad)
                {
                    assert!(validate(&direct), "byte {i} ^ {flip:#x}");
                }
            }
        }
    }
}
