//! Go's address arithmetic in 32 bits (RATIONALE.md, "Why narrow Go's address arithmetic?").
//!
//! Go's wasm code computes in 64 bits and wraps an address to 32 bits only at the end:
//! `s[i]` is `base i 2 i64.shl i64.add i32.wrap_i64 i64.load32_u`. Cranelift then computes the
//! address with a 64-bit `lea` and clears its upper half with a `mov` of its own before the
//! load, one more cycle on every indexed access; it has the 32-bit form in its e-graph too, but
//! picks the one with fewer instructions. [`Narrow`] rewrites the arithmetic under an
//! `i32.wrap_i64` to 32 bits instead: the low 32 bits of a sum, difference, product, bitwise
//! operation or shift by a constant under 32 are those of the same operation on the operands'
//! low 32 bits, so each operand is wrapped (a constant becomes an `i32.const`, an
//! `i64.extend_i32_*` is dropped), the operation becomes its `i32` form and the outer wrap
//! goes. A 32-bit operation zeroes the upper half of its register on x86-64, so the load needs
//! nothing more.
//!
//! And wherever it is, `x & 0xffffffff` (Go's `uint32` kept in a 64-bit local) becomes
//! `i64.extend_i32_u(i32.wrap_i64 x)`: a 32-bit `mov`, where Cranelift would `and` with the
//! mask loaded from memory (x86-64 has no 32-bit immediate that extends to it).
//!
//! Only straight-line code is followed: the values on the stack are tracked from the last
//! control instruction or call, and an instruction whose effect on the stack isn't modelled
//! forgets them all (never wrong, only less narrowing).

use wasmparser::Operator;

use crate::rewrite::{Patch, With};

const I32_WRAP_I64: u8 = 0xa7;
const I32_CONST: u8 = 0x41;
const I64_EXTEND_I32_U: u8 = 0xad;

/// The most values [`Narrow`] tracks at once (see `push`).
const MAX_NODES: usize = 1 << 16;

/// A value on the operand stack, as far as narrowing cares.
#[derive(Clone, Copy)]
enum Node {
    /// Computed by code that ends at `end` (wrapped by inserting a wrap there).
    Leaf { end: usize },
    /// `i64.const value` at `at`.
    Const { at: (usize, usize), value: i64 },
    /// `i64.extend_i32_*` at `at` of an `i32` (wrapped by dropping the extension).
    Extend { at: (usize, usize) },
    /// A 64-bit operation at `at` with a 32-bit twin `op32` on operands `l` and `r` (indices
    /// into [`Narrow::nodes`]).
    Bin {
        at: (usize, usize),
        op32: u8,
        l: u32,
        r: u32,
    },
}

/// Follows one function body's operators and patches the arithmetic under its wraps.
#[derive(Default)]
pub(crate) struct Narrow {
    nodes: Vec<Node>,
    /// The top of the operand stack (indices into `nodes`); below it, values we don't know.
    stack: Vec<u32>,
    pub patches: Vec<Patch>,
}

impl Narrow {
    /// Take in the operator at `start..end` of the body.
    pub(crate) fn step(&mut self, op: &Operator<'_>, start: usize, end: usize) {
        use Operator as O;
        // Nodes are only reachable from the stack: with it empty, they can all go, so memory
        // follows the deepest expression, not the length of the body.
        if self.stack.is_empty() {
            self.nodes.clear();
        }
        let at = (start, end);
        match *op {
            O::I64Const { value } => self.push(Node::Const { at, value }),
            O::LocalGet { .. }
            | O::GlobalGet { .. }
            | O::I32Const { .. }
            | O::F32Const { .. }
            | O::F64Const { .. } => self.push(Node::Leaf { end }),
            O::LocalSet { .. } | O::GlobalSet { .. } | O::Drop => self.pop_n(1),
            O::I64ExtendI32U | O::I64ExtendI32S => {
                self.pop_n(1);
                self.push(Node::Extend { at });
            }
            O::I32WrapI64 => {
                let top = self.stack.pop();
                if let Some(top) = top
                    && let Node::Bin { .. } = self.nodes[top as usize]
                {
                    self.narrow(top);
                    self.patches.push(Patch {
                        start,
                        end,
                        with: With::Bytes(Vec::new()),
                    });
                }
                self.push(Node::Leaf { end });
            }
            O::I64Add => self.binary(at, Some(0x6a)),
            O::I64Sub => self.binary(at, Some(0x6b)),
            O::I64Mul => self.binary(at, Some(0x6c)),
            O::I64And if self.masks_low_half() => {
                // `x & 0xffffffff` is `uextend(ireduce x)`: one 32-bit `mov` where Cranelift
                // would `and` with a constant loaded from memory (it has no 32-bit immediate
                // for the mask).
                if let Some(Node::Const { at: mask, .. }) =
                    self.stack.pop().map(|c| self.nodes[c as usize])
                {
                    self.patches.push(Patch {
                        start: mask.0,
                        end: mask.1,
                        with: With::Bytes(Vec::new()),
                    });
                }
                self.patches.push(Patch {
                    start,
                    end,
                    with: With::Bytes(vec![I32_WRAP_I64, I64_EXTEND_I32_U]),
                });
                self.pop_n(1);
                self.push(Node::Leaf { end });
            }
            O::I64And => self.binary(at, Some(0x71)),
            O::I64Or => self.binary(at, Some(0x72)),
            O::I64Xor => self.binary(at, Some(0x73)),
            O::I64Shl => {
                // Only by a constant under 32: `i32.shl` takes its count modulo 32.
                let by_small_const = self.stack.last().is_some_and(|&r| {
                    matches!(self.nodes[r as usize], Node::Const { value, .. } if (0..32).contains(&value))
                });
                self.binary(at, by_small_const.then_some(0x74));
            }
            O::LocalTee { .. }
            | O::I32Load { .. }
            | O::I64Load { .. }
            | O::F32Load { .. }
            | O::F64Load { .. }
            | O::I32Load8S { .. }
            | O::I32Load8U { .. }
            | O::I32Load16S { .. }
            | O::I32Load16U { .. }
            | O::I64Load8S { .. }
            | O::I64Load8U { .. }
            | O::I64Load16S { .. }
            | O::I64Load16U { .. }
            | O::I64Load32S { .. }
            | O::I64Load32U { .. }
            | O::I32Eqz
            | O::I64Eqz
            | O::F64ConvertI64S
            | O::F64ConvertI64U
            | O::I64TruncF64S
            | O::I64ReinterpretF64
            | O::F64ReinterpretI64 => {
                self.pop_n(1);
                self.push(Node::Leaf { end });
            }
            O::I32Add
            | O::I32Sub
            | O::I32Mul
            | O::I32And
            | O::I32Or
            | O::I32Xor
            | O::I32Shl
            | O::I32ShrU
            | O::I32ShrS
            | O::I64ShrU
            | O::I64ShrS
            | O::I64DivS
            | O::I64DivU
            | O::I64RemS
            | O::I64RemU
            | O::I64Rotl
            | O::I64Rotr
            | O::I32Eq
            | O::I32Ne
            | O::I32LtU
            | O::I32LtS
            | O::I32GtU
            | O::I32GtS
            | O::I32LeU
            | O::I32LeS
            | O::I32GeU
            | O::I32GeS
            | O::I64Eq
            | O::I64Ne
            | O::I64LtU
            | O::I64LtS
            | O::I64GtU
            | O::I64GtS
            | O::I64LeU
            | O::I64LeS
            | O::I64GeU
            | O::I64GeS
            | O::F64Add
            | O::F64Sub
            | O::F64Mul
            | O::F64Div => self.binary(at, None),
            O::I32Store { .. }
            | O::I64Store { .. }
            | O::F32Store { .. }
            | O::F64Store { .. }
            | O::I32Store8 { .. }
            | O::I32Store16 { .. }
            | O::I64Store8 { .. }
            | O::I64Store16 { .. }
            | O::I64Store32 { .. } => self.pop_n(2),
            O::Select => {
                self.pop_n(3);
                self.push(Node::Leaf { end });
            }
            // Control, calls, and whatever else: forget the stack.
            _ => self.stack.clear(),
        }
    }

    /// Whether the top of the stack is the constant `0xffffffff`.
    fn masks_low_half(&self) -> bool {
        self.stack.last().is_some_and(|&c| {
            matches!(
                self.nodes[c as usize],
                Node::Const {
                    value: 0xffff_ffff,
                    ..
                }
            )
        })
    }

    fn push(&mut self, node: Node) {
        // Go's expressions are a few dozen operators deep; a crafted body that never empties
        // the stack only loses its narrowing past this many.
        if self.nodes.len() >= MAX_NODES {
            self.stack.clear();
            self.nodes.clear();
        }
        self.nodes.push(node);
        self.stack.push((self.nodes.len() - 1) as u32);
    }

    fn pop_n(&mut self, n: usize) {
        let keep = self.stack.len().saturating_sub(n);
        self.stack.truncate(keep);
    }

    /// A binary operation at `at`; narrowable to `op32` if both operands are known.
    fn binary(&mut self, at: (usize, usize), op32: Option<u8>) {
        let (r, l) = (self.stack.pop(), self.stack.pop());
        match (op32, l, r) {
            (Some(op32), Some(l), Some(r)) => self.push(Node::Bin { at, op32, l, r }),
            _ => self.push(Node::Leaf { end: at.1 }),
        }
    }

    /// Patch the code of `node` to compute its low 32 bits as an `i32`.
    fn narrow(&mut self, node: u32) {
        // An explicit stack: operands nest as deep as the expression.
        let mut todo = vec![node];
        while let Some(n) = todo.pop() {
            match self.nodes[n as usize] {
                Node::Leaf { end } => self.patches.push(Patch {
                    start: end,
                    end,
                    with: With::Bytes(vec![I32_WRAP_I64]),
                }),
                Node::Const { at, value } => {
                    let mut bytes = vec![I32_CONST];
                    crate::rewrite::write_i32(&mut bytes, value as i32);
                    self.patches.push(Patch {
                        start: at.0,
                        end: at.1,
                        with: With::Bytes(bytes),
                    });
                }
                Node::Extend { at } => self.patches.push(Patch {
                    start: at.0,
                    end: at.1,
                    with: With::Bytes(Vec::new()),
                }),
                Node::Bin { at, op32, l, r } => {
                    self.patches.push(Patch {
                        start: at.0,
                        end: at.1,
                        with: With::Bytes(vec![op32]),
                    });
                    todo.push(l);
                    todo.push(r);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use wasm_encoder as enc;
    use wasm_encoder::Instruction as I;

    /// A module with memory and one exported function `f{i}: (i64, i64, i32) -> i64` per body.
    fn module(bodies: &[Vec<I<'static>>]) -> Vec<u8> {
        let mut m = enc::Module::new();
        let mut types = enc::TypeSection::new();
        types.ty().function(
            [enc::ValType::I64, enc::ValType::I64, enc::ValType::I32],
            [enc::ValType::I64],
        );
        m.section(&types);
        let mut funcs = enc::FunctionSection::new();
        for _ in bodies {
            funcs.function(0);
        }
        m.section(&funcs);
        let mut memory = enc::MemorySection::new();
        memory.memory(crate::rewrite::tests::memory_type(1));
        m.section(&memory);
        let mut exports = enc::ExportSection::new();
        let names: Vec<String> = (0..bodies.len()).map(|i| format!("f{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            exports.export(name, enc::ExportKind::Func, i as u32);
        }
        m.section(&exports);
        let mut code = enc::CodeSection::new();
        for body in bodies {
            let mut f = enc::Function::new([(1, enc::ValType::I64)]);
            for i in body {
                f.instruction(i);
            }
            f.instruction(&I::End);
            code.function(&f);
        }
        m.section(&code);
        let mut data = enc::DataSection::new();
        let bytes: Vec<u8> = (0..=255u8).map(|b| b.wrapping_mul(37) ^ 0x5a).collect();
        data.active(0, &enc::ConstExpr::i32_const(0), bytes);
        m.section(&data);
        m.finish()
    }

    /// The narrow pass alone.
    const NARROW: crate::rewrite::Passes = crate::rewrite::Passes {
        jumps: false,
        fill: false,
        dispatch: false,
        winch: false,
        data: false,
        narrow: true,
        tier: false,
        tier_stop: false,
    };

    fn narrowed(wasm: &[u8]) -> Vec<u8> {
        crate::rewrite::prepare(wasm, NARROW).expect("something is narrowed")
    }

    /// Every function's results over `inputs`.
    fn results(wasm: &[u8], functions: usize, inputs: &[(i64, i64, i32)]) -> Vec<i64> {
        let engine = wasmtime::Engine::default();
        let module = wasmtime::Module::new(&engine, wasm).expect("compiles");
        let mut store = wasmtime::Store::new(&engine, ());
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).expect("instantiates");
        let mut out = Vec::new();
        for i in 0..functions {
            let f = instance
                .get_typed_func::<(i64, i64, i32), i64>(&mut store, &format!("f{i}"))
                .unwrap();
            for &input in inputs {
                out.push(f.call(&mut store, input).expect("runs"));
            }
        }
        out
    }

    fn count(wasm: &[u8], which: fn(&wasmparser::Operator<'_>) -> bool) -> usize {
        let mut n = 0;
        for payload in wasmparser::Parser::new(0).parse_all(wasm) {
            if let wasmparser::Payload::CodeSectionEntry(body) = payload.unwrap() {
                let mut ops = body.get_operators_reader().unwrap();
                while !ops.eof() {
                    n += usize::from(which(&ops.read().unwrap()));
                }
            }
        }
        n
    }

    /// Damaged modules (every truncation, flipped bytes) never make narrowing panic, and
    /// what was valid stays valid.
    #[test]
    fn damaged_modules_never_panic() {
        let wasm = module(&[
            vec![
                I::LocalGet(0),
                I::LocalGet(1),
                I::I64Const(3),
                I::I64Shl,
                I::I64Add,
                I::I32WrapI64,
                I::I64Load32U(enc::MemArg {
                    offset: 4,
                    align: 2,
                    memory_index: 0,
                }),
                I::LocalGet(0),
                I::I64Const(0xffff_ffff),
                I::I64And,
                I::I64Xor,
            ],
            vec![
                I::LocalGet(2),
                I::I64ExtendI32U,
                I::LocalTee(3),
                I::I64Const(24),
                I::I64Mul,
                I::I32WrapI64,
                I::I64ExtendI32S,
            ],
        ]);
        crate::rewrite::tests::damage(&wasm, NARROW);
    }

    /// A crafted body whose stack grows past what narrowing tracks (70,000 values deep) is
    /// still rewritten into valid code that computes the same.
    #[test]
    fn deep_stacks_stay_bounded_and_correct() {
        const DEPTH: usize = 70_000;
        let mut body = vec![I::LocalGet(0)];
        for i in 0..DEPTH {
            body.push(I::I64Const(i as i64 * 0x1_0000_0001));
        }
        body.extend(std::iter::repeat_n(I::I64Add, DEPTH));
        body.extend([I::I32WrapI64, I::I64ExtendI32U]);
        // Then b << 3 under a wrap, which narrows, added on.
        body.extend([
            I::LocalGet(1),
            I::I64Const(3),
            I::I64Shl,
            I::I32WrapI64,
            I::I64ExtendI32U,
            I::I64Add,
        ]);
        let wasm = module(&[body]);
        let narrow = narrowed(&wasm);
        wasmparser::Validator::new()
            .validate_all(&narrow)
            .expect("the narrowed module is valid");
        let inputs = [(0, 0, 0), (-1, 5, 7), (i64::MAX, 1, 2)];
        assert_eq!(results(&wasm, 1, &inputs), results(&narrow, 1, &inputs));
    }

    /// Go's address arithmetic (sums, products, masks and shifts by constants under a wrap)
    /// becomes 32-bit, and masks of the low half zero extensions, and they compute what they
    /// did for any inputs: upper halves that the wrap drops, shifts by 31, 32 and a variable
    /// count, sign-extended operands, a `local.tee` and a block between operands.
    #[test]
    fn arithmetic_under_a_wrap_becomes_32_bit_and_computes_the_same() {
        let wrap = |mut e: Vec<I<'static>>| {
            e.extend([I::I32WrapI64, I::I64ExtendI32U]);
            e
        };
        let bodies = vec![
            // a + (b << 3) + 16
            wrap(vec![
                I::LocalGet(0),
                I::LocalGet(1),
                I::I64Const(3),
                I::I64Shl,
                I::I64Add,
                I::I64Const(16),
                I::I64Add,
            ]),
            // (a - b) * 24 ^ (a | b) & 0xffffffff
            wrap(vec![
                I::LocalGet(0),
                I::LocalGet(1),
                I::I64Sub,
                I::I64Const(24),
                I::I64Mul,
                I::LocalGet(0),
                I::LocalGet(1),
                I::I64Or,
                I::I64Const(0xffff_ffff),
                I::I64And,
                I::I64Xor,
            ]),
            // a << 31 + b << 32 + a << b: only the first shift narrows
            wrap(vec![
                I::LocalGet(0),
                I::I64Const(31),
                I::I64Shl,
                I::LocalGet(1),
                I::I64Const(32),
                I::I64Shl,
                I::I64Add,
                I::LocalGet(0),
                I::LocalGet(1),
                I::I64Shl,
                I::I64Add,
            ]),
            // sext(c) + (tee(a >> 7) * 3), then the teed local
            vec![
                I::LocalGet(2),
                I::I64ExtendI32S,
                I::LocalGet(0),
                I::I64Const(7),
                I::I64ShrU,
                I::LocalTee(3),
                I::I64Const(3),
                I::I64Mul,
                I::I64Add,
                I::I32WrapI64,
                I::I64ExtendI32S,
                I::LocalGet(3),
                I::I64Add,
            ],
            // A load at (a & 0xf0) + (c & 7) * 8 + 4, as Go indexes a slice.
            vec![
                I::LocalGet(0),
                I::I64Const(0xf0),
                I::I64And,
                I::LocalGet(2),
                I::I64ExtendI32U,
                I::I64Const(7),
                I::I64And,
                I::I64Const(3),
                I::I64Shl,
                I::I64Add,
                I::I32WrapI64,
                I::I64Load(enc::MemArg {
                    offset: 4,
                    align: 3,
                    memory_index: 0,
                }),
            ],
            // a & 0xffffffff, not under a wrap, plus b.
            vec![
                I::LocalGet(0),
                I::I64Const(0xffff_ffff),
                I::I64And,
                I::LocalGet(1),
                I::I64Add,
            ],
            // An operand from before a block is not followed: a + b is left as it is.
            wrap(vec![
                I::LocalGet(0),
                I::Block(enc::BlockType::Empty),
                I::End,
                I::LocalGet(1),
                I::I64Add,
            ]),
        ];
        let wasm = module(&bodies);
        let narrow = narrowed(&wasm);
        wasmparser::Validator::new()
            .validate_all(&narrow)
            .expect("the narrowed module is valid");
        let adds = |o: &wasmparser::Operator<'_>| matches!(o, wasmparser::Operator::I64Add);
        let i32_ops = |o: &wasmparser::Operator<'_>| {
            use wasmparser::Operator as O;
            matches!(o, O::I32Add | O::I32Sub | O::I32Mul | O::I32Shl | O::I32And)
        };
        // Every 64-bit add but the one after the block, and the two outside a wrap.
        assert_eq!(count(&wasm, adds), 9);
        assert_eq!(count(&narrow, adds), 3);
        assert_eq!(count(&wasm, i32_ops), 0);
        assert_eq!(count(&narrow, i32_ops), 14);
        // Masks of the low half are zero extensions.
        let masks = |o: &wasmparser::Operator<'_>| {
            matches!(o, wasmparser::Operator::I64Const { value: 0xffff_ffff })
        };
        assert_eq!(count(&wasm, masks), 2);
        assert_eq!(count(&narrow, masks), 0);
        let mut inputs = vec![(0, 0, 0), (-1, -1, -1), (i64::MIN, i64::MAX, i32::MIN)];
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..200 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            inputs.push((x as i64, x.rotate_left(29) as i64, (x >> 11) as i32));
        }
        assert_eq!(
            results(&wasm, bodies.len(), &inputs),
            results(&narrow, bodies.len(), &inputs)
        );
    }
}
