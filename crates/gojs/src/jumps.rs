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

use wasmparser::{BinaryReader, BlockType, FunctionBody, Operator};

/// Whether Go modules get direct jumps: unless `GOJS_JUMPS=off`.
pub(crate) fn enabled() -> bool {
    std::env::var_os("GOJS_JUMPS").is_none_or(|v| v != "off")
}

/// What the cache key records about the rewrite: compiled code depends on it. Bump the number
/// whenever [`thread`] changes what it writes.
pub(crate) fn version() -> &'static str {
    if enabled() { "jumps-1" } else { "jumps-off" }
}

/// `wasm` with the forward jumps of its Go-shaped functions made direct, or `None` if the
/// module can't be read as a sequence of sections or has no such jump to rewrite.
pub(crate) fn thread(wasm: &[u8]) -> Option<Vec<u8>> {
    const HEADER: usize = 8;
    let mut out = Vec::with_capacity(wasm.len());
    out.extend_from_slice(wasm.get(..HEADER)?);
    let mut at = HEADER;
    let mut rewrote = false;
    while at < wasm.len() {
        let id = wasm[at];
        let (size, n) = read_u32(wasm.get(at + 1..)?)?;
        let start = at + 1 + n;
        let end = start.checked_add(size as usize)?;
        let content = wasm.get(start..end)?;
        if id == CODE_SECTION {
            let code = code_section(content)?;
            rewrote |= code.is_some();
            let content = code.as_deref().unwrap_or(content);
            out.push(id);
            write_u32(&mut out, u32::try_from(content.len()).ok()?);
            out.extend_from_slice(content);
        } else {
            out.extend_from_slice(&wasm[at..end]);
        }
        at = end;
    }
    rewrote.then_some(out)
}

const CODE_SECTION: u8 = 10;
const BR: u8 = 0x0c;

/// The code section's contents with its functions' jumps rewritten; `Some(None)` when no
/// function had one to rewrite. Functions are read in parallel (on the current rayon pool).
fn code_section(content: &[u8]) -> Option<Option<Vec<u8>>> {
    use rayon::prelude::*;
    let (count, n) = read_u32(content)?;
    // Each body's whole entry (size included) and the body within it.
    let mut entries = Vec::with_capacity(count.min(1 << 20) as usize);
    let mut at = n;
    for _ in 0..count {
        let (size, n) = read_u32(content.get(at..)?)?;
        let start = at + n;
        let end = start.checked_add(size as usize)?;
        content.get(start..end)?;
        entries.push((at, start, end));
        at = end;
    }
    if at != content.len() {
        return None;
    }
    let patches: Vec<Vec<Patch>> = entries
        .par_iter()
        .map(|&(_, start, end)| jumps(&content[start..end]).unwrap_or_default())
        .collect();
    if patches.iter().all(Vec::is_empty) {
        return Some(None);
    }
    let mut out = Vec::with_capacity(content.len());
    write_u32(&mut out, count);
    for (&(entry, start, end), patches) in entries.iter().zip(&patches) {
        if patches.is_empty() {
            out.extend_from_slice(&content[entry..end]);
        } else {
            let body = patch(&content[start..end], patches);
            write_u32(&mut out, u32::try_from(body.len()).ok()?);
            out.extend_from_slice(&body);
        }
    }
    Some(Some(out))
}

/// A `br` to rewrite: its bytes in the body and its new depth.
struct Patch {
    start: usize,
    end: usize,
    depth: u32,
}

/// The forward jumps of a Go-shaped function body that can branch straight to their block.
/// `None` if the body isn't shaped like Go's dispatch loop or can't be read.
fn jumps(body: &[u8]) -> Option<Vec<Patch>> {
    let body = FunctionBody::new(BinaryReader::new(body, 0));
    let mut ops = body.get_operators_reader().ok()?;
    // The prologue: [global.get; local.set] [block] loop block… local.get 0 br_table end.
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
    // Where the table sends block number `k`: the code of block `table[k]` if that is one of
    // the dispatch blocks.
    let target = |k: i32| {
        let depth = u32::try_from(k)
            .ok()
            .and_then(|k| table.get(k as usize).copied())
            .unwrap_or(default);
        (depth < blocks).then_some(depth)
    };

    let mut patches = Vec::new();
    // The code of block `seg` is running, `inner` frames deep in its own blocks/loops/ifs.
    let (mut seg, mut inner) = (0u32, 0u32);
    // `Some(k)` right after `i32.const k`, and right after `i32.const k; local.set 0`.
    let (mut after_const, mut after_set): (Option<i32>, Option<i32>) = (None, None);
    while !ops.eof() {
        let start = ops.original_position();
        let op = ops.read().ok()?;
        let end = ops.original_position();
        match op {
            Operator::Block { .. } | Operator::Loop { .. } | Operator::If { .. } => inner += 1,
            // Exception handling frames: not Go's code, and not worth following.
            Operator::Try { .. }
            | Operator::TryTable { .. }
            | Operator::Catch { .. }
            | Operator::CatchAll
            | Operator::Delegate { .. } => return None,
            Operator::End if inner > 0 => inner -= 1,
            Operator::End => {
                // A dispatch block ends and the next block's code starts (after the last
                // one, the loop ends: past the code we rewrite).
                seg += 1;
                if seg >= blocks {
                    break;
                }
            }
            Operator::Br { relative_depth } => {
                let to_loop = inner + (blocks - 1 - seg);
                if relative_depth == to_loop
                    && let Some(k) = after_set
                    && let Some(t) = target(k)
                    && t > seg
                {
                    patches.push(Patch {
                        start,
                        end,
                        depth: inner + (t - seg - 1),
                    });
                }
            }
            _ => {}
        }
        after_set = match op {
            Operator::LocalSet { local_index: 0 } => after_const,
            _ => None,
        };
        after_const = match op {
            Operator::I32Const { value } => Some(value),
            _ => None,
        };
    }
    Some(patches)
}

fn is_plain_block(op: &Operator<'_>) -> bool {
    matches!(
        op,
        Operator::Block {
            blockty: BlockType::Empty
        }
    )
}

/// `body` with each patch's `br` given its new depth.
fn patch(body: &[u8], patches: &[Patch]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut at = 0;
    for p in patches {
        out.extend_from_slice(&body[at..p.start]);
        out.push(BR);
        write_u32(&mut out, p.depth);
        at = p.end;
    }
    out.extend_from_slice(&body[at..]);
    out
}

/// An unsigned LEB128 number at the start of `bytes`, and how many bytes it took.
fn read_u32(bytes: &[u8]) -> Option<(u32, usize)> {
    let mut r = BinaryReader::new(bytes, 0);
    let v = r.read_var_u32().ok()?;
    Some((v, r.original_position()))
}

fn write_u32(out: &mut Vec<u8>, mut v: u32) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
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
