//! What gojs changes in a Go module before compiling it. Five passes, each optional:
//!
//! - **jumps** ([`crate::jumps`]): forward jumps branch straight to their block, jumps back
//!   make wasm loops;
//! - **fill** ([`crate::fill`]): Go's `runtime.memclrNoHeapPointers` calls an import of ours,
//!   `gojs:host.fill`, in place of its `memory.fill` for large clears, and Go's byte loops `memchr`, `memcmp`
//!   and `memeqbody` call the host's for long operands. The imports are added after Go's, so every function defined by the
//!   module moves up: calls, `ref.func`, the element segments, exports, the start function and
//!   the function names follow.
//!
//! - **dispatch** ([`DispatchPlan`], Winch's whole-module compiles only): `call_indirect`s call
//!   generated dispatchers instead of going through the table, which is left empty.
//! - **narrow** ([`crate::narrow`], Cranelift's compiles only): the arithmetic under an
//!   `i32.wrap_i64` is done in 32 bits, and masks of a low half become zero extensions.
//! - **data** ([`merge_data`]): data segments a few bytes apart become one, the bytes between
//!   them zeros (Go's linker starts a new segment after every run of 16 zero bytes or more: tens
//!   of thousands of segments, each validated and translated on its own).
//!
//! The passes only patch instructions in place (a `br`'s depth, a call's index, an
//! operator's width; the jumps pass also moves `block`s and adds `loop`s and tests at
//! `end`s), re-encode the few sections
//! that hold function indices and append what they add; everything else is copied byte for
//! byte.

use std::collections::HashSet;

use rayon::prelude::*;
use wasm_encoder as enc;
use wasmparser::{BinaryReader, FunctionBody, Operator, ValType};

/// What [`prepare`] does.
#[derive(Clone, Copy)]
pub(crate) struct Passes {
    pub jumps: bool,
    pub fill: bool,
    /// The code is Winch's: the fill pass's byte loops call the host from fewer bytes on
    /// ([`crate::fill::host_from`]).
    pub winch: bool,
    /// `call_indirect` through dispatch functions instead of the table ([`DispatchPlan`]): for
    /// Winch's whole-module compiles only.
    pub dispatch: bool,
    /// Nearby data segments merged ([`merge_data`]).
    pub data: bool,
    /// Address arithmetic in 32 bits ([`crate::narrow`]): for Cranelift's compiles.
    pub narrow: bool,
    /// Go's loop and globals exported, so that a running program can move between instances
    /// ([`crate::tier`]) (by a module that has them: a split module's primary, not its other
    /// parts).
    pub tier: bool,
    /// The loop stops on request and Go's `g` is recorded ([`crate::tier`]): for Winch's
    /// compiles, the code a program moves from.
    pub tier_stop: bool,
}

impl Passes {
    /// The passes this process runs on a module compiled to `code`: all, less those turned
    /// off (`GOJS_JUMPS=off`, `GOJS_FILL=off`, `GOJS_DATA=off`, `GOJS_NARROW=off`);
    /// dispatch only when asked for (`GOJS_DISPATCH=on`) and for a whole module compiled by
    /// Winch, narrowing only for Cranelift (Winch's code gained nothing from it: 18 kernels,
    /// geometric mean +0.5%).
    pub(crate) fn enabled(code: crate::engine::Code) -> Passes {
        use crate::engine::Code;
        let on = |var| std::env::var_os(var).is_none_or(|v| v != "off");
        Passes {
            jumps: on("GOJS_JUMPS"),
            fill: on("GOJS_FILL"),
            dispatch: code == Code::WinchWhole
                && std::env::var_os("GOJS_DISPATCH").is_some_and(|v| v == "on"),
            winch: code != Code::Cranelift,
            data: on("GOJS_DATA"),
            narrow: code == Code::Cranelift && on("GOJS_NARROW"),
            tier: on("GOJS_TIER"),
            tier_stop: code != Code::Cranelift && on("GOJS_TIER"),
        }
    }

    /// What the cache key records: compiled code depends on it. Bump a number whenever its
    /// pass changes what it writes.
    pub(crate) fn version(self) -> String {
        let v = |on: bool, n: &'static str| if on { n } else { "off" };
        format!(
            "jumps-{} fill-{} dispatch-{} data-{} narrow-{} tier-{} tier-stop-{}",
            v(self.jumps, "4"),
            v(self.fill, "6"),
            v(self.dispatch, "1"),
            v(self.data, "1"),
            v(self.narrow, "1"),
            v(self.tier, "1"),
            v(self.tier_stop, "1")
        )
    }
}

/// A patch to a function body: bytes `start..end` are replaced.
pub(crate) struct Patch {
    pub start: usize,
    pub end: usize,
    pub with: With,
}

/// What a [`Patch`] puts in place of the bytes it replaces.
pub(crate) enum With {
    /// An instruction with one index: `op` followed by the index (LEB128).
    Op(u8, u32),
    /// These bytes (instructions, or a body's local declarations).
    Bytes(Vec<u8>),
}

pub(crate) const BR: u8 = 0x0c;
const CALL: u8 = 0x10;
const RETURN_CALL: u8 = 0x12;
const REF_FUNC: u8 = 0xd2;

const TYPE_SECTION: u8 = 1;
const IMPORT_SECTION: u8 = 2;
const FUNCTION_SECTION: u8 = 3;
const TABLE_SECTION: u8 = 4;
const EXPORT_SECTION: u8 = 7;
const START_SECTION: u8 = 8;
const ELEMENT_SECTION: u8 = 9;
const CODE_SECTION: u8 = 10;
const DATA_SECTION: u8 = 11;
const DATA_COUNT_SECTION: u8 = 12;
const CUSTOM_SECTION: u8 = 0;

/// `wasm` with `passes` applied, or `None` if it can't be read or no pass changes anything. A
/// module the dispatch or fill pass can't handle still gets the others.
pub(crate) fn prepare(wasm: &[u8], passes: Passes) -> Option<Vec<u8>> {
    // The passes find Go's functions by name: a module linked with `-s` gets its names back.
    let named = crate::pclntab::with_names(wasm);
    let wasm = named.as_ref();
    let sections = sections(wasm)?;
    let no_return = if passes.jumps {
        no_return(wasm, &sections)
    } else {
        HashSet::new()
    };
    let jumps = passes.jumps.then_some(&no_return);
    let fill = if passes.fill {
        FillPlan::find(wasm, &sections).map(|f| FillPlan {
            winch: passes.winch,
            ..f
        })
    } else {
        None
    };
    let dispatch = if passes.dispatch {
        DispatchPlan::find(wasm, &sections, fill.as_ref())
    } else {
        None
    };
    let tier = if passes.tier {
        crate::tier::TierPlan::find(wasm)
    } else {
        None
    };
    // A pass that meets something it can't handle (a body it can't read, a table use other
    // than `call_indirect`) is left out, the last one first.
    let attempts = [
        (fill.as_ref(), dispatch.as_ref()),
        (fill.as_ref(), None),
        (None, None),
    ];
    let mut tried = Vec::new();
    for (f, d) in attempts {
        let key = (f.is_some(), d.is_some());
        if tried.contains(&key) {
            continue;
        }
        tried.push(key);
        if let Some(out) = assemble(wasm, &sections, passes, jumps, f, d, tier.as_ref()) {
            return (out.as_slice() != wasm).then_some(out);
        }
        if !key.0 && !key.1 {
            break;
        }
    }
    None
}

/// A section: its id, the whole section's bytes (header included), and its contents.
struct Section {
    id: u8,
    whole: std::ops::Range<usize>,
    content: std::ops::Range<usize>,
}

fn sections(wasm: &[u8]) -> Option<Vec<Section>> {
    const HEADER: usize = 8;
    if wasm.get(..HEADER)? != b"\0asm\x01\0\0\0" {
        return None;
    }
    let mut out = Vec::new();
    let mut at = HEADER;
    while at < wasm.len() {
        let id = wasm[at];
        let (size, n) = read_u32(wasm.get(at + 1..)?)?;
        let start = at + 1 + n;
        let end = start.checked_add(size as usize)?;
        wasm.get(start..end)?;
        out.push(Section {
            id,
            whole: at..end,
            content: start..end,
        });
        at = end;
    }
    Some(out)
}

/// Where the fill pass puts its import and which function it changes.
struct FillPlan {
    /// The new import's function index: the number of functions the module imports.
    import: u32,
    /// The type of `fill` (`[i32 i32 i32] -> []`), and whether it must be added to the types.
    ty: u32,
    add_type: bool,
    /// For Winch's code, whose loops are slower ([`crate::fill::host_from`]).
    winch: bool,
    /// `runtime.memclrNoHeapPointers`'s function index (before the shift), and how many
    /// parameters it has (its locals are numbered after them).
    memclr: u32,
    memclr_params: u32,
    /// Go's byte-loop helpers found in the module (`memchr`, `memcmp`, `memeqbody` of
    /// `internal/bytealg`), each with its function index (before the shift) and type. Each body
    /// calls the host's version for long operands ([`FillPlan::host_body`]), imported after
    /// `fill` in this order ([`crate::fill::HOST_CALLS`]).
    calls: Vec<HostCall>,
}

/// One of Go's helpers that calls the host instead ([`FillPlan::calls`]).
struct HostCall {
    name: &'static str,
    func: u32,
    ty: u32,
}

/// Each of Go's helpers takes three parameters (two addresses or an address and a byte, and a
/// length).
const HOST_CALL_PARAMS: u32 = 3;

impl FillPlan {
    /// The plan for `wasm`, or `None` if it has no `runtime.memclrNoHeapPointers` made of one
    /// `memory.fill`, or sections the pass doesn't rewrite (GC types, other kinds of imports
    /// than functions, element expressions).
    fn find(wasm: &[u8], sections: &[Section]) -> Option<FillPlan> {
        let mut types = 0u32;
        let mut fill_type = None;
        let mut imported = None;
        let mut memclr = None;
        let mut helpers: Vec<Option<u32>> = vec![None; crate::fill::HOST_CALLS.len()];
        let mut func_types: Vec<u32> = Vec::new();
        let mut signatures: Vec<(Vec<wasmparser::ValType>, Vec<wasmparser::ValType>)> = Vec::new();
        let mut bodies = Vec::new();
        for s in sections {
            let content = &wasm[s.content.clone()];
            match s.id {
                TYPE_SECTION => {
                    let reader = wasmparser::TypeSectionReader::new(BinaryReader::new(
                        content,
                        s.content.start,
                    ))
                    .ok()?;
                    for ty in reader.into_iter_err_on_gc_types() {
                        let ty = ty.ok()?;
                        if fill_type.is_none()
                            && ty.params() == [wasmparser::ValType::I32; 3]
                            && ty.results().is_empty()
                        {
                            fill_type = Some(types);
                        }
                        signatures.push((ty.params().to_vec(), ty.results().to_vec()));
                        types += 1;
                    }
                }
                IMPORT_SECTION => {
                    let reader = wasmparser::ImportSectionReader::new(BinaryReader::new(
                        content,
                        s.content.start,
                    ))
                    .ok()?;
                    let mut n = 0u32;
                    for import in reader.into_imports() {
                        let import = import.ok()?;
                        if !matches!(import.ty, wasmparser::TypeRef::Func(_)) {
                            return None;
                        }
                        if import.module == crate::fill::MODULE {
                            // Already ours.
                            return None;
                        }
                        n += 1;
                    }
                    imported = Some(n);
                }
                FUNCTION_SECTION => {
                    let reader = wasmparser::FunctionSectionReader::new(BinaryReader::new(
                        content,
                        s.content.start,
                    ))
                    .ok()?;
                    for ty in reader {
                        func_types.push(ty.ok()?);
                    }
                }
                CODE_SECTION => bodies = code_entries(content)?,
                CUSTOM_SECTION => {
                    let reader = wasmparser::CustomSectionReader::new(BinaryReader::new(
                        content,
                        s.content.start,
                    ))
                    .ok()?;
                    if reader.name() == "name" {
                        memclr = memclr.or(function_named(
                            reader.data(),
                            reader.data_offset(),
                            "runtime.memclrNoHeapPointers",
                        ));
                        for (found, (name, _)) in helpers.iter_mut().zip(crate::fill::HOST_CALLS) {
                            *found =
                                found.or(function_named(reader.data(), reader.data_offset(), name));
                        }
                    }
                }
                _ => {}
            }
        }
        let import = imported?;
        let memclr = memclr?;
        let (_, start, end) = *bodies.get(memclr.checked_sub(import)? as usize)?;
        let memclr_type = *func_types.get(memclr.checked_sub(import)? as usize)?;
        let memclr_params = u32::try_from(signatures.get(memclr_type as usize)?.0.len()).ok()?;
        // Its body must hold exactly one `memory.fill` (of memory 0).
        let code = &wasm[sections
            .iter()
            .find(|s| s.id == CODE_SECTION)?
            .content
            .clone()];
        let body = FunctionBody::new(BinaryReader::new(&code[start..end], 0));
        let mut ops = body.get_operators_reader().ok()?;
        let mut fills = 0;
        while !ops.eof() {
            if let Operator::MemoryFill { mem } = ops.read().ok()? {
                if mem != 0 {
                    return None;
                }
                fills += 1;
            }
        }
        if fills != 1 {
            return None;
        }
        // Each helper is a defined function of the type Go gives it: three parameters and a
        // result, all i32 (`memchr`, `memcmp`) or all i64 (`memeqbody`).
        let calls = helpers
            .iter()
            .zip(crate::fill::HOST_CALLS)
            .filter_map(|(&f, (name, wide))| {
                let f = f?;
                let ty = *func_types.get(f.checked_sub(import)? as usize)?;
                let (params, results) = signatures.get(ty as usize)?;
                let t = if wide {
                    wasmparser::ValType::I64
                } else {
                    wasmparser::ValType::I32
                };
                (params[..] == [t; HOST_CALL_PARAMS as usize] && results[..] == [t])
                    .then_some(HostCall { name, func: f, ty })
            })
            .collect();
        Some(FillPlan {
            import,
            ty: fill_type.unwrap_or(types),
            add_type: fill_type.is_none(),
            winch: false,
            memclr,
            memclr_params,
            calls,
        })
    }

    /// How many imports the plan adds.
    fn added(&self) -> u32 {
        1 + self.calls.len() as u32
    }

    /// A function index after the shift.
    fn shift(&self, index: u32) -> u32 {
        if index >= self.import {
            index + self.added()
        } else {
            index
        }
    }

    /// The body that replaces one of Go's helpers (function `index`, before the shift), if it
    /// is one: from [`crate::fill::HOST_FROM`] bytes on, its parameters passed on to the host's
    /// version; below, Go's own loop (`body`, the helper's body as the other passes left it),
    /// which is faster than a call into the host for a few bytes.
    fn host_body(&self, index: Option<u32>, body: &[u8]) -> Option<Vec<u8>> {
        let index = index?;
        let j = self.calls.iter().position(|c| c.func == index)?;
        let (name, wide) = crate::fill::HOST_CALLS[j];
        let from = crate::fill::host_from(name, self.winch);
        let locals_end = FunctionBody::new(BinaryReader::new(body, 0))
            .get_locals_reader()
            .ok()
            .and_then(|mut locals| {
                for _ in 0..locals.get_count() {
                    locals.read().ok()?;
                }
                Some(locals.original_position())
            })?;
        let mut prefix = enc::Function::new([]);
        let mut ins = prefix.instructions();
        ins.local_get(HOST_CALL_PARAMS - 1);
        if wide {
            ins.i64_const(from as i64).i64_ge_u();
        } else {
            ins.i32_const(from as i32).i32_ge_u();
        }
        ins.if_(enc::BlockType::Empty);
        for p in 0..HOST_CALL_PARAMS {
            ins.local_get(p);
        }
        ins.call(self.import + 1 + j as u32).return_().end();
        // The prefix's instructions (its encoding less the size and the empty locals vector),
        // between Go's locals and Go's code.
        let mut encoded = Vec::new();
        enc::Encode::encode(&prefix, &mut encoded);
        let (_, size_len) = read_u32(&encoded)?;
        let code = &encoded[size_len + 1..];
        let mut joined = Vec::with_capacity(body.len() + code.len());
        joined.extend_from_slice(&body[..locals_end]);
        joined.extend_from_slice(code);
        joined.extend_from_slice(&body[locals_end..]);
        let mut out = Vec::with_capacity(joined.len() + 5);
        write_u32(&mut out, u32::try_from(joined.len()).ok()?);
        out.extend_from_slice(&joined);
        Some(out)
    }
}

/// The functions that never return to their caller, by the name section: Go's panics
/// ([`crate::jumps::never_returns`]). Their callers' return addresses are no resume points.
fn no_return(wasm: &[u8], sections: &[Section]) -> HashSet<u32> {
    let mut found = HashSet::new();
    for s in sections.iter().filter(|s| s.id == CUSTOM_SECTION) {
        let Ok(reader) = wasmparser::CustomSectionReader::new(BinaryReader::new(
            &wasm[s.content.clone()],
            s.content.start,
        )) else {
            continue;
        };
        if reader.name() != "name" {
            continue;
        }
        let names = wasmparser::NameSectionReader::new(BinaryReader::new(
            reader.data(),
            reader.data_offset(),
        ));
        for sub in names {
            let Ok(wasmparser::Name::Function(map)) = sub else {
                continue;
            };
            for naming in map.into_iter().flatten() {
                if crate::jumps::never_returns(naming.name) {
                    found.insert(naming.index);
                }
            }
        }
    }
    found
}

/// The index the name section gives `name`, if any.
fn function_named(data: &[u8], offset: usize, name: &str) -> Option<u32> {
    let reader = wasmparser::NameSectionReader::new(BinaryReader::new(data, offset));
    for sub in reader {
        if let wasmparser::Name::Function(map) = sub.ok()? {
            for naming in map {
                let naming = naming.ok()?;
                if naming.name == name {
                    return Some(naming.index);
                }
            }
        }
    }
    None
}

/// Each entry of a code section: (entry start, body start, body end), offsets in `content`.
fn code_entries(content: &[u8]) -> Option<Vec<(usize, usize, usize)>> {
    let (count, n) = read_u32(content)?;
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
    (at == content.len()).then_some(entries)
}

/// The module with the passes applied; `None` if a section can't be rewritten (or, with no
/// plan, nothing changed).
fn assemble(
    wasm: &[u8],
    sections: &[Section],
    passes: Passes,
    jumps: Option<&HashSet<u32>>,
    fill: Option<&FillPlan>,
    dispatch: Option<&DispatchPlan>,
    tier: Option<&crate::tier::TierPlan>,
) -> Option<Vec<u8>> {
    // Segments are numbered only for `memory.init` and `data.drop`, which need a data count
    // section: without one, merging renumbers nothing anyone refers to.
    let merge = passes.data && !sections.iter().any(|s| s.id == DATA_COUNT_SECTION);
    let mut out = Vec::with_capacity(wasm.len() + 64);
    out.extend_from_slice(&wasm[..8]);
    let mut changed = false;
    for s in sections {
        let content = &wasm[s.content.clone()];
        let new = match s.id {
            CODE_SECTION => {
                // Which body is the loop, when `g` is recorded.
                let stop = passes
                    .tier_stop
                    .then(|| tier.map(|t| (t.loop_fn - t.imported) as usize));
                code_section(content, jumps, fill, dispatch, passes.narrow, stop)?
            }
            TYPE_SECTION => append_types(content, fill, dispatch)?,
            IMPORT_SECTION if fill.is_some() => Some(append_fill_import(content, fill?)?),
            FUNCTION_SECTION if dispatch.is_some() => Some(dispatch?.append_functions(content)?),
            EXPORT_SECTION if fill.is_some() || tier.is_some() => {
                let shifted = match fill {
                    Some(f) => Some(shift_exports(content, s.content.start, f)?),
                    None => None,
                };
                match tier {
                    Some(t) => {
                        let shift = |i| fill.map_or(i, |f| f.shift(i));
                        Some(t.add_exports(shifted.as_deref().unwrap_or(content), shift)?)
                    }
                    None => shifted,
                }
            }
            START_SECTION if fill.is_some() => {
                let (index, n) = read_u32(content)?;
                (n == content.len()).then_some(())?;
                let mut v = Vec::new();
                write_u32(&mut v, fill?.shift(index));
                Some(v)
            }
            // The table is no longer filled: every `call_indirect` goes through a dispatcher.
            ELEMENT_SECTION if dispatch.is_some() => {
                changed = true;
                continue;
            }
            ELEMENT_SECTION if fill.is_some() => {
                Some(shift_elements(content, s.content.start, fill?)?)
            }
            CUSTOM_SECTION if fill.is_some() || dispatch.is_some() => {
                shift_names(content, s.content.start, fill, dispatch)?
            }
            DATA_SECTION if merge => merge_data(content, s.content.start),
            _ => None,
        };
        match new {
            Some(new) => {
                changed = true;
                out.push(s.id);
                write_u32(&mut out, u32::try_from(new.len()).ok()?);
                out.extend_from_slice(&new);
            }
            None => out.extend_from_slice(&wasm[s.whole.clone()]),
        }
    }
    if fill.is_some() && !sections.iter().any(|s| s.id == IMPORT_SECTION) {
        return None;
    }
    changed.then_some(out)
}

/// Segments no further apart than this are merged by [`merge_data`]. Go's linker leaves gaps
/// of 17 bytes and more (it starts a new segment after 16 zero bytes): at 32, hello world's
/// 30,947 segments become 128 and 0.5 MB of zeros is added to its 0.76 MB of data.
const DATA_GAP: u64 = 32;

/// The data section's contents (`content`, at `offset` in the module) with each active segment
/// of memory 0 that starts at most [`DATA_GAP`] bytes after the previous one ends merged into
/// it, the bytes between them zeros: what memory holds after instantiation doesn't change,
/// since no other segment writes there (segments that overlap anywhere, or reach past 4 GiB,
/// leave the section as it is). `None` if the section has other kinds of segments or offsets,
/// can't be read, or nothing merges.
fn merge_data(content: &[u8], offset: usize) -> Option<Vec<u8>> {
    // Go's segments are all read directly (wasmparser took 5–7 ms for hello world's 30,947);
    // anything else through wasmparser.
    let segments = match crate::pclntab::active_segments(content) {
        Some(segments) => segments,
        None => data_segments(content, offset)?,
    };
    merge_segments(&segments)
}

/// The active segments of memory 0 in a data section's contents (at `offset` in the module),
/// placed by `i32.const`, as `(address, bytes)`; `None` if there are others.
fn data_segments(content: &[u8], offset: usize) -> Option<Vec<(u64, &[u8])>> {
    let reader = wasmparser::DataSectionReader::new(BinaryReader::new(content, offset)).ok()?;
    let mut segments: Vec<(u64, &[u8])> = Vec::with_capacity(reader.count() as usize);
    for data in reader {
        let data = data.ok()?;
        let wasmparser::DataKind::Active {
            memory_index: 0,
            offset_expr,
        } = data.kind
        else {
            return None;
        };
        let mut ops = offset_expr.get_operators_reader();
        let Ok(Operator::I32Const { value }) = ops.read() else {
            return None;
        };
        if !matches!(ops.read(), Ok(Operator::End)) || !ops.eof() {
            return None;
        }
        // An i32 offset is an unsigned address.
        segments.push((u64::from(value as u32), data.data));
    }
    Some(segments)
}

/// [`merge_data`]'s merge of `segments`.
fn merge_segments(segments: &[(u64, &[u8])]) -> Option<Vec<u8>> {
    let end = |(at, bytes): (u64, &[u8])| at + bytes.len() as u64;
    let mut sorted: Vec<(u64, u64)> = segments.iter().map(|&s| (s.0, end(s))).collect();
    sorted.sort_unstable();
    let disjoint = sorted.windows(2).all(|w| w[0].1 <= w[1].0);
    if !disjoint || sorted.last().is_some_and(|&(_, e)| e > 1 << 32) {
        return None;
    }
    // Runs of segments (by index) that become one, and the size of each with its gaps.
    let mut runs: Vec<(usize, usize, u64)> = Vec::new();
    for (i, &(at, bytes)) in segments.iter().enumerate() {
        match runs.last_mut() {
            Some((first, last, len))
                if at >= segments[*first].0 + *len
                    && at - (segments[*first].0 + *len) <= DATA_GAP =>
            {
                *last = i;
                *len = at + bytes.len() as u64 - segments[*first].0;
            }
            _ => runs.push((i, i, bytes.len() as u64)),
        }
    }
    if runs.len() == segments.len() {
        return None;
    }
    let total: u64 = runs.iter().map(|r| r.2 + 16).sum();
    let mut out = Vec::with_capacity(usize::try_from(total).ok()? + 8);
    write_u32(&mut out, u32::try_from(runs.len()).ok()?);
    for &(first, last, len) in &runs {
        let start = segments[first].0;
        // Active, memory 0, offset `i32.const start` (below 2^32, checked above: as an i32 it
        // is the same bits).
        out.extend_from_slice(&[0x00, 0x41]);
        write_i32(&mut out, start as u32 as i32);
        out.push(0x0b);
        write_u32(&mut out, u32::try_from(len).ok()?);
        let base = out.len();
        for &(at, bytes) in &segments[first..=last] {
            out.resize(base + (at - start) as usize, 0);
            out.extend_from_slice(bytes);
        }
    }
    Some(out)
}

/// The code section's contents with each body patched (and the dispatchers appended);
/// `Some(None)` if nothing changed. Bodies are read in parallel (on the current rayon pool).
/// `None` if a body can't be read while function indices must shift, or uses the table other
/// than through `call_indirect` while a dispatch plan is followed.
fn code_section(
    content: &[u8],
    jumps: Option<&HashSet<u32>>,
    fill: Option<&FillPlan>,
    dispatch: Option<&DispatchPlan>,
    narrow: bool,
    stop: Option<Option<usize>>,
) -> Option<Option<Vec<u8>>> {
    let entries = code_entries(content)?;
    let imported = fill.map(|f| f.import).or(dispatch.map(|d| d.imported));
    let patches: Vec<Option<Edits>> = entries
        .par_iter()
        .enumerate()
        .map(|(i, &(_, start, end))| {
            let index = imported.map(|n| n + i as u32);
            let stop = stop.map(|loop_body| loop_body == Some(i));
            let body = &content[start..end];
            body_patches(body, jumps, fill, dispatch, narrow, index, stop)
        })
        .collect();
    if (fill.is_some() || dispatch.is_some()) && patches.iter().any(Option::is_none) {
        return None;
    }
    if dispatch.is_none()
        && patches
            .iter()
            .all(|p| p.as_ref().is_none_or(Edits::is_empty))
    {
        return Some(None);
    }
    let extra = dispatch.map(|d| d.bodies(fill)).unwrap_or_default();
    let mut out =
        Vec::with_capacity(content.len() + 16 + extra.iter().map(Vec::len).sum::<usize>());
    write_u32(&mut out, u32::try_from(entries.len() + extra.len()).ok()?);
    for (i, (&(entry, start, end), patches)) in entries.iter().zip(&patches).enumerate() {
        if let Some(f) = fill
            && f.calls
                .iter()
                .any(|c| Some(c.func) == imported.map(|n| n + i as u32))
        {
            let go_s = match patches {
                Some(edits) if !edits.is_empty() => edits.apply(&content[start..end]),
                _ => content[start..end].to_vec(),
            };
            out.extend_from_slice(&f.host_body(imported.map(|n| n + i as u32), &go_s)?);
            continue;
        }
        match patches {
            Some(edits) if !edits.is_empty() => {
                let body = edits.apply(&content[start..end]);
                write_u32(&mut out, u32::try_from(body.len()).ok()?);
                out.extend_from_slice(&body);
            }
            _ => out.extend_from_slice(&content[entry..end]),
        }
    }
    for body in &extra {
        out.extend_from_slice(body);
    }
    Some(Some(out))
}

/// What changes in one function body: patches, and perhaps a new order of its parts.
#[derive(Default)]
pub(crate) struct Edits {
    /// In order, not overlapping.
    pub patches: Vec<Patch>,
    /// The body's byte ranges in their new order (each patch inside one of them), if they
    /// move: every byte of the body is in exactly one (the last may end at `usize::MAX`, the
    /// body's end).
    pub order: Option<Vec<std::ops::Range<usize>>>,
}

impl Edits {
    fn is_empty(&self) -> bool {
        self.patches.is_empty() && self.order.is_none()
    }

    /// `body` with the patches applied and its parts in their new order.
    fn apply(&self, body: &[u8]) -> Vec<u8> {
        let whole = 0..body.len();
        let order = self
            .order
            .as_deref()
            .unwrap_or(std::slice::from_ref(&whole));
        let mut out = Vec::with_capacity(body.len() + 2 * self.patches.len());
        for part in order {
            let part = part.start..part.end.min(body.len());
            let first = self.patches.partition_point(|p| p.start < part.start);
            let mut at = part.start;
            for p in self.patches[first..]
                .iter()
                .take_while(|p| p.start < part.end)
            {
                out.extend_from_slice(&body[at..p.start]);
                match &p.with {
                    With::Op(op, index) => {
                        out.push(*op);
                        write_u32(&mut out, *index);
                    }
                    With::Bytes(bytes) => out.extend_from_slice(bytes),
                }
                at = p.end;
            }
            out.extend_from_slice(&body[at..part.end]);
        }
        out
    }
}

/// The edits of one function body (function `index` before the shift, when there is one).
fn body_patches(
    body: &[u8],
    jumps: Option<&HashSet<u32>>,
    fill: Option<&FillPlan>,
    dispatch: Option<&DispatchPlan>,
    narrow: bool,
    index: Option<u32>,
    stop: Option<bool>,
) -> Option<Edits> {
    let reader = || {
        FunctionBody::new(BinaryReader::new(body, 0))
            .get_operators_reader()
            .ok()
    };
    let mut ops = reader()?;
    let mut patches = Vec::new();
    // Go's prologue holds no calls: after it, every pass reads on together.
    let mut tracker = None;
    if let Some(no_return) = jumps {
        match crate::jumps::Dispatch::read(&mut ops) {
            Some(d) => tracker = Some(crate::jumps::Jumps::new(d, no_return)),
            None => ops = reader()?,
        }
    }
    if tracker.is_none() && fill.is_none() && dispatch.is_none() && !narrow && stop.is_none() {
        return Some(Edits::default());
    }
    // The tier pass: the loop stops on request, and `g` is recorded wherever Go sets it.
    if stop == Some(true) {
        patches.extend(crate::tier::loop_patches(body)?);
    }
    let mut narrowing = narrow.then(crate::narrow::Narrow::default);
    let is_memclr = fill.is_some_and(|f| Some(f.memclr) == index);
    // `memclr` gets three more locals for its fill's operands (`memclr_fill`).
    let mut memclr_locals = None;
    if let Some(f) = fill
        && is_memclr
    {
        let (declaration, declared) = add_locals(body, 3, ValType::I32)?;
        patches.push(declaration);
        memclr_locals = Some(f.memclr_params.checked_add(declared)?);
    }
    let shift = |i: u32| fill.map_or(i, |f| f.shift(i));
    while !ops.eof() {
        let start = ops.original_position();
        let op = ops.read().ok()?;
        let end = ops.original_position();
        if let Some(t) = &mut tracker {
            t.step(&op, start, end);
        }
        if let Some(n) = &mut narrowing {
            n.step(&op, start, end);
        }
        if stop.is_some() && crate::tier::sets_g(&op) {
            patches.push(Patch {
                start,
                end,
                with: With::Bytes(crate::tier::shadow_set()),
            });
        }
        if let Some(d) = dispatch {
            match op {
                Operator::CallIndirect {
                    type_index,
                    table_index: 0,
                } => {
                    patches.push(Patch {
                        start,
                        end,
                        with: With::Op(CALL, d.dispatcher_for(type_index)?),
                    });
                    continue;
                }
                // Anything else that reaches the table (or a function reference) keeps the
                // table as it is.
                Operator::CallIndirect { .. }
                | Operator::ReturnCallIndirect { .. }
                | Operator::TableGet { .. }
                | Operator::TableSet { .. }
                | Operator::TableSize { .. }
                | Operator::TableGrow { .. }
                | Operator::TableFill { .. }
                | Operator::TableCopy { .. }
                | Operator::TableInit { .. }
                | Operator::ElemDrop { .. }
                | Operator::RefFunc { .. } => return None,
                _ => {}
            }
        }
        if fill.is_some() || dispatch.is_some() {
            let (code, callee) = match op {
                Operator::Call { function_index } => (CALL, function_index),
                Operator::ReturnCall { function_index } => (RETURN_CALL, function_index),
                Operator::RefFunc { function_index } => (REF_FUNC, function_index),
                Operator::MemoryFill { .. } if is_memclr => {
                    patches.push(Patch {
                        start,
                        end,
                        with: With::Bytes(memclr_fill(memclr_locals?, fill?.import)),
                    });
                    continue;
                }
                _ => continue,
            };
            if shift(callee) != callee {
                patches.push(Patch {
                    start,
                    end,
                    with: With::Op(code, shift(callee)),
                });
            }
        }
    }
    let order = tracker.and_then(|t| t.finish(&mut patches));
    if let Some(mut n) = narrowing {
        // Narrowing patches only arithmetic, never what the other passes patch; should one
        // overlap another anyway, narrowing is left out.
        let mut ranges: Vec<(usize, usize)> = patches
            .iter()
            .chain(&n.patches)
            .map(|p| (p.start, p.end))
            .collect();
        ranges.sort_unstable();
        if ranges.windows(2).all(|w| w[0].1 <= w[1].0) {
            patches.append(&mut n.patches);
        }
    }
    // Stable, and an insertion (`start == end`) goes before a patch that starts there.
    patches.sort_by_key(|p| (p.start, p.end));
    Some(Edits { patches, order })
}

/// A patch of `body`'s local declarations that adds `n` locals of type `ty` after the others,
/// and how many locals were declared before (the first new one's index, less the function's
/// parameters).
fn add_locals(body: &[u8], n: u32, ty: ValType) -> Option<(Patch, u32)> {
    let mut locals = FunctionBody::new(BinaryReader::new(body, 0))
        .get_locals_reader()
        .ok()?;
    let mut declared: Vec<(u32, enc::ValType)> =
        Vec::with_capacity(locals.get_count() as usize + 1);
    let mut count = 0u32;
    for _ in 0..locals.get_count() {
        let (k, t) = locals.read().ok()?;
        if matches!(t, ValType::Ref(_)) {
            return None;
        }
        count = count.checked_add(k)?;
        declared.push((k, val_type(t)));
    }
    let end = locals.original_position();
    declared.push((n, val_type(ty)));
    // Encoded as a body with no instructions; its size prefix dropped.
    let mut bytes = Vec::new();
    enc::Encode::encode(&enc::Function::new(declared), &mut bytes);
    let (_, prefix) = read_u32(&bytes)?;
    let patch = Patch {
        start: 0,
        end,
        with: With::Bytes(bytes.split_off(prefix)),
    };
    Some((patch, count))
}

/// What replaces `memclr`'s `memory.fill` (its operands, address, value and length, on the
/// stack; `locals` is the first of three i32 locals added for them): `memory.fill` itself below
/// [`crate::fill::RELEASE_MIN`] bytes, else a call of `gojs:host.fill` (function `import`),
/// which gives large blocks' pages back. Go clears each small allocation it hands out, so most
/// clears are small, and wasmtime's `memory.fill` costs less than a call of the host (an
/// allocation-heavy program ran ~10% faster).
fn memclr_fill(locals: u32, import: u32) -> Vec<u8> {
    let (dst, val, len) = (locals, locals + 1, locals + 2);
    let operands = [
        enc::Instruction::LocalGet(dst),
        enc::Instruction::LocalGet(val),
        enc::Instruction::LocalGet(len),
    ];
    let mut code = vec![
        enc::Instruction::LocalSet(len),
        enc::Instruction::LocalSet(val),
        enc::Instruction::LocalSet(dst),
        enc::Instruction::LocalGet(len),
        enc::Instruction::I32Const(crate::fill::RELEASE_MIN as i32),
        enc::Instruction::I32LtU,
        enc::Instruction::If(enc::BlockType::Empty),
    ];
    code.extend(operands.clone());
    code.push(enc::Instruction::MemoryFill(0));
    code.push(enc::Instruction::Else);
    code.extend(operands);
    code.push(enc::Instruction::Call(import));
    code.push(enc::Instruction::End);
    let mut out = Vec::new();
    for i in &code {
        enc::Encode::encode(i, &mut out);
    }
    out
}

/// The type section with the new types appended: `fill`'s `[i32 i32 i32] -> []` (unless the
/// module has it), then the dispatchers'. `Some(None)` if there are none.
fn append_types(
    content: &[u8],
    fill: Option<&FillPlan>,
    dispatch: Option<&DispatchPlan>,
) -> Option<Option<Vec<u8>>> {
    let fill_type = fill.is_some_and(|f| f.add_type);
    let dispatchers = dispatch.map_or(0, |d| d.types.len());
    if !fill_type && dispatchers == 0 {
        return Some(None);
    }
    let (count, n) = read_u32(content)?;
    let mut out = Vec::with_capacity(content.len() + 8 + 16 * dispatchers);
    write_u32(
        &mut out,
        count.checked_add(u32::from(fill_type) + dispatchers as u32)?,
    );
    out.extend_from_slice(&content[n..]);
    if fill_type {
        out.extend_from_slice(&[0x60, 3, 0x7f, 0x7f, 0x7f, 0]);
    }
    if let Some(d) = dispatch {
        for t in &d.types {
            let mut ty = enc::TypeSection::new();
            let params: Vec<enc::ValType> = t
                .params
                .iter()
                .copied()
                .chain([ValType::I32])
                .map(val_type)
                .collect();
            ty.ty()
                .function(params, t.results.iter().copied().map(val_type));
            let mut bytes = Vec::new();
            enc::Encode::encode(&ty, &mut bytes);
            // A section of one type: its size, its count (1), then the type.
            let (_, a) = read_u32(&bytes)?;
            let (_, b) = read_u32(&bytes[a..])?;
            out.extend_from_slice(&bytes[a + b..]);
        }
    }
    Some(Some(out))
}

fn val_type(t: ValType) -> enc::ValType {
    match t {
        ValType::I32 => enc::ValType::I32,
        ValType::I64 => enc::ValType::I64,
        ValType::F32 => enc::ValType::F32,
        ValType::F64 => enc::ValType::F64,
        ValType::V128 => enc::ValType::V128,
        // DispatchPlan::find only takes numeric and vector types.
        ValType::Ref(_) => enc::ValType::I32,
    }
}

/// The import section with `gojs:host.fill` appended.
fn append_fill_import(content: &[u8], f: &FillPlan) -> Option<Vec<u8>> {
    let (count, n) = read_u32(content)?;
    let mut out = Vec::with_capacity(content.len() + 48);
    write_u32(&mut out, count.checked_add(f.added())?);
    out.extend_from_slice(&content[n..]);
    let mut imports = vec![(crate::fill::NAME, f.ty)];
    imports.extend(f.calls.iter().map(|c| (c.name, c.ty)));
    for (name, ty) in imports {
        for s in [crate::fill::MODULE, name] {
            write_u32(&mut out, s.len() as u32);
            out.extend_from_slice(s.as_bytes());
        }
        out.push(0x00);
        write_u32(&mut out, ty);
    }
    Some(out)
}

fn shift_exports(content: &[u8], offset: usize, f: &FillPlan) -> Option<Vec<u8>> {
    use wasm_encoder::{Encode, ExportKind, ExportSection};
    let reader = wasmparser::ExportSectionReader::new(BinaryReader::new(content, offset)).ok()?;
    let mut exports = ExportSection::new();
    for e in reader {
        let e = e.ok()?;
        let (kind, index) = match e.kind {
            wasmparser::ExternalKind::Func => (ExportKind::Func, f.shift(e.index)),
            wasmparser::ExternalKind::Table => (ExportKind::Table, e.index),
            wasmparser::ExternalKind::Memory => (ExportKind::Memory, e.index),
            wasmparser::ExternalKind::Global => (ExportKind::Global, e.index),
            _ => return None,
        };
        exports.export(e.name, kind, index);
    }
    let mut out = Vec::new();
    exports.encode(&mut out);
    strip_size(out)
}

fn shift_elements(content: &[u8], offset: usize, f: &FillPlan) -> Option<Vec<u8>> {
    use std::borrow::Cow;
    use wasm_encoder::{ConstExpr, ElementSection, Elements, Encode};
    let reader = wasmparser::ElementSectionReader::new(BinaryReader::new(content, offset)).ok()?;
    let mut elements = ElementSection::new();
    for elem in reader {
        let elem = elem.ok()?;
        let wasmparser::ElementItems::Functions(funcs) = elem.items else {
            return None;
        };
        let funcs = funcs
            .into_iter()
            .map(|i| i.map(|i| f.shift(i)))
            .collect::<Result<Vec<u32>, _>>()
            .ok()?;
        let items = Elements::Functions(Cow::Owned(funcs));
        match elem.kind {
            wasmparser::ElementKind::Active {
                table_index,
                offset_expr,
            } => {
                let mut ops = offset_expr.get_operators_reader();
                let expr = match ops.read().ok()? {
                    Operator::I32Const { value } => ConstExpr::i32_const(value),
                    Operator::GlobalGet { global_index } => ConstExpr::global_get(global_index),
                    _ => return None,
                };
                if !matches!(ops.read().ok()?, Operator::End) || !ops.eof() {
                    return None;
                }
                elements.active(table_index, &expr, items);
            }
            wasmparser::ElementKind::Passive => {
                elements.passive(items);
            }
            wasmparser::ElementKind::Declared => {
                elements.declared(items);
            }
        }
    }
    let mut out = Vec::new();
    elements.encode(&mut out);
    strip_size(out)
}

/// Name the imports the fill plan adds.
fn name_imports(map: &mut wasm_encoder::NameMap, f: &FillPlan) {
    map.append(f.import, "gojs:host.fill");
    for (j, c) in f.calls.iter().enumerate() {
        map.append(f.import + 1 + j as u32, &format!("gojs:host.{}", c.name));
    }
}

/// The name section with function indices shifted and `fill` and the dispatchers named;
/// `Some(None)` for other custom sections (copied as they are).
fn shift_names(
    content: &[u8],
    offset: usize,
    fill: Option<&FillPlan>,
    dispatch: Option<&DispatchPlan>,
) -> Option<Option<Vec<u8>>> {
    let reader = wasmparser::CustomSectionReader::new(BinaryReader::new(content, offset)).ok()?;
    if reader.name() != "name" {
        return Some(None);
    }
    let shift = |i: u32| fill.map_or(i, |f| f.shift(i));
    let data = reader.data();
    let base = reader.data_offset();
    let mut names = wasm_encoder::NameSection::new();
    // Subsections: id, size, contents.
    let mut at = 0;
    while at < data.len() {
        let id = data[at];
        let (size, n) = read_u32(data.get(at + 1..)?)?;
        let start = at + 1 + n;
        let end = start.checked_add(size as usize)?;
        let sub = data.get(start..end)?;
        let reader = BinaryReader::new(sub, base + start);
        match id {
            // Function names.
            1 => {
                let mut map = wasm_encoder::NameMap::new();
                let mut fill_named = fill.is_none();
                for naming in wasmparser::NameMap::new(reader).ok()? {
                    let naming = naming.ok()?;
                    if let Some(f) = fill
                        && !fill_named
                        && naming.index >= f.import
                    {
                        name_imports(&mut map, f);
                        fill_named = true;
                    }
                    map.append(shift(naming.index), naming.name);
                }
                if let Some(f) = fill
                    && !fill_named
                {
                    name_imports(&mut map, f);
                }
                if let Some(d) = dispatch {
                    for (j, t) in d.types.iter().enumerate() {
                        let name = format!("gojs:dispatch.{}", t.canonical);
                        map.append(d.first_func + j as u32, &name);
                    }
                }
                names.functions(&map);
            }
            // Local and label names, by function.
            2 | 3 => {
                let mut map = wasm_encoder::IndirectNameMap::new();
                for indirect in wasmparser::IndirectNameMap::new(reader).ok()? {
                    let indirect = indirect.ok()?;
                    let mut inner = wasm_encoder::NameMap::new();
                    for naming in indirect.names {
                        let naming = naming.ok()?;
                        inner.append(naming.index, naming.name);
                    }
                    map.append(shift(indirect.index), &inner);
                }
                if id == 2 {
                    names.locals(&map);
                } else {
                    names.labels(&map);
                }
            }
            _ => names.raw(id, sub),
        }
        at = end;
    }
    let mut out = Vec::new();
    write_u32(&mut out, 4);
    out.extend_from_slice(b"name");
    out.extend_from_slice(names.as_custom().data.as_ref());
    Some(Some(out))
}

/// One dispatcher: for `call_indirect`s of type `canonical` (and of types equal to it).
struct Dispatcher {
    canonical: u32,
    params: Vec<ValType>,
    results: Vec<ValType>,
}

/// The dispatch pass, for Winch's whole-module compiles when asked for (`GOJS_DISPATCH=on`;
/// RATIONALE.md, "Why can Winch's code call through dispatchers instead of the table?"): each
/// `call_indirect` of type `t` calls a dispatcher `(params…, i32 slot) → results`
/// that jumps on the slot (`br_table`) to a direct call of the function the table would hold
/// there, or traps for a slot that is empty or of another type; the table is left empty.
struct DispatchPlan {
    /// The number of imported functions (before the fill pass's).
    imported: u32,
    /// The type index of every type, mapped to its first structurally equal one.
    canonical: Vec<u32>,
    types: Vec<Dispatcher>,
    /// The type index of the first dispatcher (they follow one another).
    first_type: u32,
    /// The function index of the first dispatcher (after every defined function, shifted).
    first_func: u32,
    /// The table's segment: its offset and the functions in it (indices before the shift).
    offset: u32,
    slots: Vec<u32>,
    /// The type index of every function, imports first.
    func_types: Vec<u32>,
}

impl DispatchPlan {
    fn find(wasm: &[u8], sections: &[Section], fill: Option<&FillPlan>) -> Option<DispatchPlan> {
        let mut sigs: Vec<(Vec<ValType>, Vec<ValType>)> = Vec::new();
        let mut func_types = Vec::new();
        let mut imported = 0u32;
        let mut tables = 0;
        let mut segment = None;
        for s in sections {
            let content = &wasm[s.content.clone()];
            let reader = BinaryReader::new(content, s.content.start);
            match s.id {
                TYPE_SECTION => {
                    let r = wasmparser::TypeSectionReader::new(reader).ok()?;
                    for ty in r.into_iter_err_on_gc_types() {
                        let ty = ty.ok()?;
                        let plain = |v: &[ValType]| {
                            v.iter()
                                .all(|t| !matches!(t, ValType::Ref(_)))
                                .then(|| v.to_vec())
                        };
                        sigs.push((plain(ty.params())?, plain(ty.results())?));
                    }
                }
                IMPORT_SECTION => {
                    let r = wasmparser::ImportSectionReader::new(reader).ok()?;
                    for import in r.into_imports() {
                        match import.ok()?.ty {
                            wasmparser::TypeRef::Func(t) => {
                                func_types.push(t);
                                imported += 1;
                            }
                            // An imported table could be filled from outside.
                            _ => return None,
                        }
                    }
                }
                FUNCTION_SECTION => {
                    let r = wasmparser::FunctionSectionReader::new(reader).ok()?;
                    for t in r {
                        func_types.push(t.ok()?);
                    }
                }
                TABLE_SECTION => {
                    let r = wasmparser::TableSectionReader::new(reader).ok()?;
                    for t in r {
                        let t = t.ok()?;
                        if t.ty.element_type != wasmparser::RefType::FUNCREF
                            || t.ty.table64
                            || !matches!(t.init, wasmparser::TableInit::RefNull)
                        {
                            return None;
                        }
                        tables += 1;
                    }
                }
                EXPORT_SECTION => {
                    let r = wasmparser::ExportSectionReader::new(reader).ok()?;
                    for e in r {
                        if matches!(e.ok()?.kind, wasmparser::ExternalKind::Table) {
                            return None;
                        }
                    }
                }
                ELEMENT_SECTION => {
                    let r = wasmparser::ElementSectionReader::new(reader).ok()?;
                    for elem in r {
                        let elem = elem.ok()?;
                        let wasmparser::ElementKind::Active {
                            table_index: None | Some(0),
                            offset_expr,
                        } = elem.kind
                        else {
                            return None;
                        };
                        let wasmparser::ElementItems::Functions(funcs) = elem.items else {
                            return None;
                        };
                        let mut ops = offset_expr.get_operators_reader();
                        let Operator::I32Const { value } = ops.read().ok()? else {
                            return None;
                        };
                        if segment.is_some() {
                            return None;
                        }
                        let funcs = funcs.into_iter().collect::<Result<Vec<u32>, _>>().ok()?;
                        segment = Some((u32::try_from(value).ok()?, funcs));
                    }
                }
                _ => {}
            }
        }
        let (offset, slots) = segment?;
        if tables != 1 || slots.is_empty() {
            return None;
        }
        let canonical: Vec<u32> = (0..sigs.len())
            .map(|i| sigs.iter().position(|s| *s == sigs[i]).unwrap_or(i) as u32)
            .collect();
        // One dispatcher per type of the functions in the table.
        let mut seen: Vec<u32> = Vec::new();
        for &f in &slots {
            let ty = *func_types.get(f as usize)?;
            let c = *canonical.get(ty as usize)?;
            if !seen.contains(&c) {
                seen.push(c);
            }
        }
        let types: Vec<Dispatcher> = seen
            .into_iter()
            .map(|c| Dispatcher {
                canonical: c,
                params: sigs[c as usize].0.clone(),
                results: sigs[c as usize].1.clone(),
            })
            .collect();
        let fill_type = fill.is_some_and(|f| f.add_type);
        let fill_func = fill.map_or(0, FillPlan::added);
        Some(DispatchPlan {
            imported,
            first_type: sigs.len() as u32 + u32::from(fill_type),
            first_func: u32::try_from(func_types.len()).ok()? + fill_func,
            canonical,
            types,
            offset,
            slots,
            func_types,
        })
    }

    /// The dispatcher for `call_indirect`s of type `ty`, if the table holds functions of it.
    fn dispatcher_for(&self, ty: u32) -> Option<u32> {
        let c = *self.canonical.get(ty as usize)?;
        let j = self.types.iter().position(|d| d.canonical == c)?;
        Some(self.first_func + j as u32)
    }

    /// The function section with the dispatchers' types appended.
    fn append_functions(&self, content: &[u8]) -> Option<Vec<u8>> {
        let (count, n) = read_u32(content)?;
        let mut out = Vec::with_capacity(content.len() + 4 * self.types.len());
        write_u32(&mut out, count.checked_add(self.types.len() as u32)?);
        out.extend_from_slice(&content[n..]);
        for j in 0..self.types.len() {
            write_u32(&mut out, self.first_type + j as u32);
        }
        Some(out)
    }

    /// The dispatchers' bodies, each encoded with its size, ready for the code section.
    fn bodies(&self, fill: Option<&FillPlan>) -> Vec<Vec<u8>> {
        use enc::Instruction as I;
        let shift = |i: u32| fill.map_or(i, |f| f.shift(i));
        self.types
            .iter()
            .map(|d| {
                // Its cases: the distinct functions of its type, in slot order.
                let mut cases: Vec<u32> = Vec::new();
                let targets: Vec<u32> = self
                    .slots
                    .iter()
                    .map(|&f| {
                        let ty = self.func_types[f as usize];
                        if self.canonical[ty as usize] != d.canonical {
                            return u32::MAX;
                        }
                        match cases.iter().position(|&c| c == f) {
                            Some(k) => k as u32,
                            None => {
                                cases.push(f);
                                (cases.len() - 1) as u32
                            }
                        }
                    })
                    .collect();
                let trap = cases.len() as u32;
                let targets: Vec<u32> = targets
                    .into_iter()
                    .map(|t| if t == u32::MAX { trap } else { t })
                    .collect();
                let slot = d.params.len() as u32;
                let mut f = enc::Function::new([]);
                f.instruction(&I::Block(enc::BlockType::Empty));
                for _ in 0..cases.len() {
                    f.instruction(&I::Block(enc::BlockType::Empty));
                }
                f.instruction(&I::LocalGet(slot))
                    .instruction(&I::I32Const(self.offset as i32))
                    .instruction(&I::I32Sub)
                    .instruction(&I::BrTable(targets.into(), trap));
                for &callee in &cases {
                    f.instruction(&I::End);
                    for p in 0..slot {
                        f.instruction(&I::LocalGet(p));
                    }
                    f.instruction(&I::Call(shift(callee)))
                        .instruction(&I::Return);
                }
                f.instruction(&I::End)
                    .instruction(&I::Unreachable)
                    .instruction(&I::End);
                let mut bytes = Vec::new();
                enc::Encode::encode(&f, &mut bytes);
                bytes
            })
            .collect()
    }
}

/// A section's encoding without its leading size (wasm-encoder writes it; `assemble` adds
/// its own).
fn strip_size(encoded: Vec<u8>) -> Option<Vec<u8>> {
    let (_, n) = read_u32(&encoded)?;
    Some(encoded[n..].to_vec())
}

/// An unsigned LEB128 number at the start of `bytes`, and how many bytes it took.
/// The unsigned LEB128 number at `*at` in `bytes` (up to 64 bits), moving `at` past it.
/// Decoded directly where wasmparser's readers cost too much (Go's tens of thousands of data
/// segments, every hot body's calls).
pub(crate) fn read_uleb(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

pub(crate) fn read_u32(bytes: &[u8]) -> Option<(u32, usize)> {
    let mut r = BinaryReader::new(bytes, 0);
    let v = r.read_var_u32().ok()?;
    Some((v, r.original_position()))
}

/// Signed LEB128.
pub(crate) fn write_i32(out: &mut Vec<u8>, mut v: i32) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if (v == 0 && byte & 0x40 == 0) || (v == -1 && byte & 0x40 != 0) {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

pub(crate) fn write_u32(out: &mut Vec<u8>, mut v: u32) {
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
pub(crate) mod tests {
    use super::*;
    use wasm_encoder as enc;

    /// A module with two imports, `runtime.memclrNoHeapPointers` (one `memory.fill` at its
    /// argument: 320 KiB at an even address, 100 bytes at an odd one), `main.run` and
    /// `helper`, a table segment, exports and names. `run(p)` writes 7s over `p..p+320K`,
    /// clears them (or 100 of them), and returns the byte at `p + 4096` (or `p + 50`) plus
    /// `helper(41)` called through the table, plus `helper(0)` called directly.
    /// A 32-bit memory of `pages` pages, unbounded.
    pub(crate) fn memory_type(pages: u64) -> enc::MemoryType {
        enc::MemoryType {
            minimum: pages,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        }
    }

    /// Add a funcref table of `slots` slots and a memory of `pages` pages to `m`.
    fn table_and_memory(m: &mut enc::Module, slots: u64, pages: u64) {
        let mut tables = enc::TableSection::new();
        tables.table(enc::TableType {
            element_type: enc::RefType::FUNCREF,
            table64: false,
            minimum: slots,
            maximum: None,
            shared: false,
        });
        m.section(&tables);
        let mut mems = enc::MemorySection::new();
        mems.memory(memory_type(pages));
        m.section(&mems);
    }

    fn module() -> Vec<u8> {
        use enc::Instruction as I;
        let mut m = enc::Module::new();
        let mut types = enc::TypeSection::new();
        types
            .ty()
            .function([enc::ValType::I32], [enc::ValType::I32]);
        types.ty().function([enc::ValType::I32], []);
        m.section(&types);
        let mut imports = enc::ImportSection::new();
        imports.import("gojs", "a", enc::EntityType::Function(1));
        imports.import("gojs", "b", enc::EntityType::Function(1));
        m.section(&imports);
        let mut funcs = enc::FunctionSection::new();
        for _ in 0..3 {
            funcs.function(0);
        }
        m.section(&funcs);
        table_and_memory(&mut m, 4, 16);
        let mut exports = enc::ExportSection::new();
        exports.export("run", enc::ExportKind::Func, 3);
        exports.export("mem", enc::ExportKind::Memory, 0);
        m.section(&exports);
        let mut elems = enc::ElementSection::new();
        elems.active(
            None,
            &enc::ConstExpr::i32_const(1),
            enc::Elements::Functions(std::borrow::Cow::Owned(vec![2, 3, 4])),
        );
        m.section(&elems);
        let mut code = enc::CodeSection::new();
        let len = 320 << 10;
        // Like Go's: locals of another type than the fill's operands, which come from them;
        // a large clear at an even address, a small one (100 bytes) at an odd one.
        let mut memclr = enc::Function::new([(1, enc::ValType::I32), (2, enc::ValType::I64)]);
        memclr
            .instruction(&I::LocalGet(0))
            .instruction(&I::I64ExtendI32U)
            .instruction(&I::LocalSet(2))
            .instruction(&I::I64Const(100))
            .instruction(&I::I64Const(len.into()))
            .instruction(&I::LocalGet(0))
            .instruction(&I::I32Const(1))
            .instruction(&I::I32And)
            .instruction(&I::Select)
            .instruction(&I::LocalSet(3))
            .instruction(&I::LocalGet(2))
            .instruction(&I::I32WrapI64)
            .instruction(&I::I32Const(0))
            .instruction(&I::LocalGet(3))
            .instruction(&I::I32WrapI64)
            .instruction(&I::MemoryFill(0))
            .instruction(&I::I32Const(0))
            .instruction(&I::End);
        code.function(&memclr);
        let mut run = enc::Function::new([]);
        run.instruction(&I::LocalGet(0))
            .instruction(&I::I32Const(7))
            .instruction(&I::I32Const(len))
            .instruction(&I::MemoryFill(0))
            .instruction(&I::LocalGet(0))
            .instruction(&I::Call(2))
            .instruction(&I::Drop)
            .instruction(&I::LocalGet(0))
            .instruction(&I::I32Const(50))
            .instruction(&I::I32Const(4096))
            .instruction(&I::LocalGet(0))
            .instruction(&I::I32Const(1))
            .instruction(&I::I32And)
            .instruction(&I::Select)
            .instruction(&I::I32Add)
            .instruction(&I::I32Load8U(enc::MemArg {
                offset: 0,
                align: 0,
                memory_index: 0,
            }))
            .instruction(&I::I32Const(41))
            .instruction(&I::I32Const(3))
            .instruction(&I::CallIndirect {
                type_index: 0,
                table_index: 0,
            })
            .instruction(&I::I32Add)
            .instruction(&I::I32Const(0))
            .instruction(&I::Call(4))
            .instruction(&I::I32Add)
            .instruction(&I::End);
        code.function(&run);
        let mut helper = enc::Function::new([]);
        helper
            .instruction(&I::LocalGet(0))
            .instruction(&I::I32Const(1))
            .instruction(&I::I32Add)
            .instruction(&I::End);
        code.function(&helper);
        m.section(&code);
        let mut names = enc::NameMap::new();
        names.append(0, "gojs.a");
        names.append(2, "runtime.memclrNoHeapPointers");
        names.append(3, "main.run");
        names.append(4, "helper");
        let mut locals = enc::IndirectNameMap::new();
        let mut run_locals = enc::NameMap::new();
        run_locals.append(0, "p");
        locals.append(3, &run_locals);
        let mut section = enc::NameSection::new();
        section.functions(&names);
        section.locals(&locals);
        m.section(&section);
        m.finish()
    }

    /// `run(p)` and the memory afterwards; `fill` is linked to the host's.
    fn run(wasm: &[u8], p: i32) -> (i32, Vec<u8>) {
        run_counting(wasm, p).0
    }

    /// [`run`], and how many times the host's `fill` was called.
    fn run_counting(wasm: &[u8], p: i32) -> ((i32, Vec<u8>), u32) {
        let engine = wasmtime::Engine::default();
        let module = wasmtime::Module::new(&engine, wasm).expect("compiles");
        let mut store = wasmtime::Store::new(&engine, 0u32);
        let mut linker = wasmtime::Linker::new(&engine);
        linker.func_wrap("gojs", "a", |_: i32| {}).unwrap();
        linker.func_wrap("gojs", "b", |_: i32| {}).unwrap();
        linker
            .func_wrap(
                crate::fill::MODULE,
                crate::fill::NAME,
                |mut c: wasmtime::Caller<'_, u32>, dst: i32, val: i32, len: i32| {
                    *c.data_mut() += 1;
                    let mem = c.get_export("mem").unwrap().into_memory().unwrap();
                    let bytes = mem.data_mut(&mut c);
                    assert!(crate::fill::fill(
                        bytes, 65536, dst as u32, val as u32, len as u32
                    ));
                },
            )
            .unwrap();
        let instance = linker
            .instantiate(&mut store, &module)
            .expect("instantiates");
        let f = instance
            .get_typed_func::<i32, i32>(&mut store, "run")
            .unwrap();
        let r = f.call(&mut store, p).expect("runs");
        let mem = instance.get_memory(&mut store, "mem").unwrap();
        ((r, mem.data(&store).to_vec()), *store.data())
    }

    fn names(wasm: &[u8]) -> Vec<(u32, String)> {
        let mut out = Vec::new();
        for payload in wasmparser::Parser::new(0).parse_all(wasm) {
            if let wasmparser::Payload::CustomSection(c) = payload.unwrap()
                && let wasmparser::KnownCustom::Name(reader) = c.as_known()
            {
                for sub in reader {
                    if let wasmparser::Name::Function(map) = sub.unwrap() {
                        for n in map {
                            let n = n.unwrap();
                            out.push((n.index, n.name.to_string()));
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn fill_pass_calls_the_host_and_shifts_every_function_index() {
        let wasm = module();
        wasmparser::Validator::new().validate_all(&wasm).unwrap();
        let all = Passes {
            jumps: true,
            fill: true,
            dispatch: false,
            winch: false,
            data: false,
            narrow: false,
            tier: false,
            tier_stop: false,
        };
        let rewritten = prepare(&wasm, all).expect("rewritten");
        wasmparser::Validator::new()
            .validate_all(&rewritten)
            .unwrap();
        for p in [0, 100, 65536 + 10, 101, 65536 + 11] {
            assert_eq!(run(&wasm, p), run(&rewritten, p), "p = {p}");
        }
        assert_eq!(run(&rewritten, 100).0, 43);
        assert_eq!(run(&rewritten, 101).0, 43);
        // The large clear goes to the host, the small one stays a `memory.fill`.
        assert_eq!(run_counting(&rewritten, 100).1, 1);
        assert_eq!(run_counting(&rewritten, 101).1, 0);
        assert_eq!(
            names(&rewritten),
            [
                (0, "gojs.a".to_string()),
                (2, "gojs:host.fill".to_string()),
                (3, "runtime.memclrNoHeapPointers".to_string()),
                (4, "main.run".to_string()),
                (5, "helper".to_string()),
            ]
        );
        // memclr's fill is still there, for small clears; `main.run`'s own fill stays.
        let fills = |wasm: &[u8]| {
            let mut n = 0;
            for payload in wasmparser::Parser::new(0).parse_all(wasm) {
                if let wasmparser::Payload::CodeSectionEntry(body) = payload.unwrap() {
                    let mut ops = body.get_operators_reader().unwrap();
                    while !ops.eof() {
                        n +=
                            usize::from(matches!(ops.read().unwrap(), Operator::MemoryFill { .. }));
                    }
                }
            }
            n
        };
        assert_eq!((fills(&wasm), fills(&rewritten)), (2, 2));
        // Without the pass, or without a memclr to rewrite, nothing changes.
        let none = Passes {
            jumps: true,
            fill: false,
            dispatch: false,
            winch: false,
            data: false,
            narrow: false,
            tier: false,
            tier_stop: false,
        };
        assert!(prepare(&wasm, none).is_none());
        let renamed = {
            let mut w = wasm.clone();
            let at = w.windows(6).position(|x| x == b"memclr").expect("the name");
            w[at] = b'M';
            w
        };
        assert!(prepare(&renamed, all).is_none());
    }

    #[test]
    fn dispatch_pass_calls_through_dispatchers_instead_of_the_table() {
        let wasm = module();
        for fill in [false, true] {
            let passes = Passes {
                jumps: true,
                fill,
                winch: true,
                dispatch: true,
                data: false,
                narrow: false,
                tier: false,
                tier_stop: false,
            };
            let rewritten = prepare(&wasm, passes).expect("rewritten");
            wasmparser::Validator::new()
                .validate_all(&rewritten)
                .unwrap();
            for p in [0, 100] {
                assert_eq!(run(&wasm, p), run(&rewritten, p), "fill {fill}, p = {p}");
            }
            // No element segment, no call_indirect; one dispatcher, named.
            let mut elements = 0;
            let mut indirect = 0;
            for payload in wasmparser::Parser::new(0).parse_all(&rewritten) {
                match payload.unwrap() {
                    wasmparser::Payload::ElementSection(r) => elements += r.count(),
                    wasmparser::Payload::CodeSectionEntry(body) => {
                        let mut ops = body.get_operators_reader().unwrap();
                        while !ops.eof() {
                            indirect += usize::from(matches!(
                                ops.read().unwrap(),
                                Operator::CallIndirect { .. }
                            ));
                        }
                    }
                    _ => {}
                }
            }
            assert_eq!((elements, indirect), (0, 0), "fill {fill}");
            let names = names(&rewritten);
            let last = names.last().unwrap();
            assert_eq!(last.1, "gojs:dispatch.0");
            assert_eq!(last.0, 5 + u32::from(fill));
        }
    }

    /// A slot the table doesn't fill, or fills with a function of another type, traps through
    /// the dispatcher as it does through the table.
    #[test]
    fn dispatchers_trap_where_call_indirect_does() {
        let wat = |slot: i32| {
            let mut m = enc::Module::new();
            let mut types = enc::TypeSection::new();
            types
                .ty()
                .function([enc::ValType::I32], [enc::ValType::I32]);
            types.ty().function([], [enc::ValType::I32]);
            m.section(&types);
            let mut funcs = enc::FunctionSection::new();
            funcs.function(1); // run
            funcs.function(0); // inc
            funcs.function(1); // other type
            m.section(&funcs);
            table_and_memory(&mut m, 8, 1);
            let mut exports = enc::ExportSection::new();
            exports.export("run", enc::ExportKind::Func, 0);
            exports.export("mem", enc::ExportKind::Memory, 0);
            m.section(&exports);
            let mut elems = enc::ElementSection::new();
            elems.active(
                None,
                &enc::ConstExpr::i32_const(2),
                enc::Elements::Functions(std::borrow::Cow::Owned(vec![1, 2])),
            );
            m.section(&elems);
            let mut code = enc::CodeSection::new();
            let mut run = enc::Function::new([]);
            run.instructions()
                .i32_const(41)
                .i32_const(slot)
                .call_indirect(0, 0)
                .end();
            code.function(&run);
            let mut inc = enc::Function::new([]);
            inc.instructions().local_get(0).i32_const(1).i32_add().end();
            code.function(&inc);
            let mut other = enc::Function::new([]);
            other.instructions().i32_const(7).end();
            code.function(&other);
            m.section(&code);
            m.finish()
        };
        let call = |wasm: &[u8]| {
            let engine = wasmtime::Engine::default();
            let module = wasmtime::Module::new(&engine, wasm).unwrap();
            let mut store = wasmtime::Store::new(&engine, ());
            let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
            let f = instance
                .get_typed_func::<(), i32>(&mut store, "run")
                .unwrap();
            f.call(&mut store, ()).ok()
        };
        let passes = Passes {
            jumps: false,
            fill: false,
            dispatch: true,
            winch: false,
            data: false,
            narrow: false,
            tier: false,
            tier_stop: false,
        };
        // Slot 2 holds `inc`; 3 a function of another type; 0, 7, 8 and -1 nothing.
        for slot in [2, 3, 0, 7, 8, -1] {
            let wasm = wat(slot);
            let rewritten = prepare(&wasm, passes).expect("rewritten");
            assert_eq!(call(&wasm), call(&rewritten), "slot {slot}");
        }
        assert_eq!(call(&prepare(&wat(2), passes).unwrap()), Some(42));
    }

    /// A Go-like module with `runtime.memclrNoHeapPointers` and byte-loop stand-ins for Go's
    /// `memchr`, `memcmp` and `memeqbody`, exporting `find(s, c, n)` (a direct call of
    /// `memchr`), `find_indirect` (through the table), `cmp(a, b, n)` and `eq(a, b, n)`, with
    /// "hello world" at address 100 and "hello there" at 200 of its one page.
    fn helpers_module() -> Vec<u8> {
        use enc::Instruction as I;
        let (i32, i64) = (enc::ValType::I32, enc::ValType::I64);
        let mut m = enc::Module::new();
        let mut types = enc::TypeSection::new();
        types.ty().function([i32], [i32]);
        types.ty().function([i32, i32, i32], [i32]);
        types.ty().function([i32], []);
        types.ty().function([i64, i64, i64], [i64]);
        m.section(&types);
        let mut imports = enc::ImportSection::new();
        imports.import("gojs", "a", enc::EntityType::Function(2));
        m.section(&imports);
        let mut funcs = enc::FunctionSection::new();
        for ty in [0, 1, 1, 1, 1, 3, 1, 3] {
            funcs.function(ty);
        }
        m.section(&funcs);
        table_and_memory(&mut m, 8, 1);
        let mut exports = enc::ExportSection::new();
        exports.export("find", enc::ExportKind::Func, 3);
        exports.export("find_indirect", enc::ExportKind::Func, 4);
        exports.export("cmp", enc::ExportKind::Func, 7);
        exports.export("eq", enc::ExportKind::Func, 8);
        exports.export("mem", enc::ExportKind::Memory, 0);
        m.section(&exports);
        let mut elems = enc::ElementSection::new();
        elems.active(
            None,
            &enc::ConstExpr::i32_const(1),
            enc::Elements::Functions(std::borrow::Cow::Owned(vec![1, 2, 3, 4])),
        );
        m.section(&elems);
        let mut code = enc::CodeSection::new();
        let mut memclr = enc::Function::new([]);
        memclr
            .instruction(&I::LocalGet(0))
            .instruction(&I::I32Const(0))
            .instruction(&I::I32Const(16))
            .instruction(&I::MemoryFill(0))
            .instruction(&I::I32Const(0))
            .instruction(&I::End);
        code.function(&memclr);
        let load = I::I32Load8U(enc::MemArg {
            offset: 0,
            align: 0,
            memory_index: 0,
        });
        let step = |f: &mut enc::Function, wide: bool| {
            // a += 1; b += 1; n -= 1
            for (local, delta) in [(0, 1), (1, 1), (2, -1)] {
                f.instruction(&I::LocalGet(local));
                if wide {
                    f.instruction(&I::I64Const(delta)).instruction(&I::I64Add);
                } else {
                    f.instruction(&I::I32Const(delta as i32))
                        .instruction(&I::I32Add);
                }
                f.instruction(&I::LocalSet(local));
            }
        };
        let mut memchr = enc::Function::new([]);
        memchr
            .instruction(&I::Loop(enc::BlockType::Empty))
            .instruction(&I::LocalGet(2))
            .instruction(&I::I32Eqz)
            .instruction(&I::If(enc::BlockType::Empty))
            .instruction(&I::I32Const(0))
            .instruction(&I::Return)
            .instruction(&I::End)
            .instruction(&I::LocalGet(0))
            .instruction(&load)
            .instruction(&I::LocalGet(1))
            .instruction(&I::I32Eq)
            .instruction(&I::If(enc::BlockType::Empty))
            .instruction(&I::LocalGet(0))
            .instruction(&I::Return)
            .instruction(&I::End);
        // Only `s` and `n` move here: `c` stays. Step all three, then put `c` back.
        memchr.instruction(&I::LocalGet(1));
        step(&mut memchr, false);
        memchr
            .instruction(&I::LocalSet(1))
            .instruction(&I::Br(0))
            .instruction(&I::End)
            .instruction(&I::Unreachable)
            .instruction(&I::End);
        code.function(&memchr);
        let call3 = |callee: u32| {
            let mut f = enc::Function::new([]);
            f.instruction(&I::LocalGet(0))
                .instruction(&I::LocalGet(1))
                .instruction(&I::LocalGet(2))
                .instruction(&I::Call(callee))
                .instruction(&I::End);
            f
        };
        code.function(&call3(2));
        let mut find_indirect = enc::Function::new([]);
        find_indirect
            .instruction(&I::LocalGet(0))
            .instruction(&I::LocalGet(1))
            .instruction(&I::LocalGet(2))
            .instruction(&I::I32Const(2))
            .instruction(&I::CallIndirect {
                type_index: 1,
                table_index: 0,
            })
            .instruction(&I::End);
        code.function(&find_indirect);
        // memcmp: the difference of the first bytes that differ, or 0.
        let mut memcmp = enc::Function::new([]);
        memcmp
            .instruction(&I::Loop(enc::BlockType::Empty))
            .instruction(&I::LocalGet(2))
            .instruction(&I::I32Eqz)
            .instruction(&I::If(enc::BlockType::Empty))
            .instruction(&I::I32Const(0))
            .instruction(&I::Return)
            .instruction(&I::End)
            .instruction(&I::LocalGet(0))
            .instruction(&load)
            .instruction(&I::LocalGet(1))
            .instruction(&load)
            .instruction(&I::I32Ne)
            .instruction(&I::If(enc::BlockType::Empty))
            .instruction(&I::LocalGet(0))
            .instruction(&load)
            .instruction(&I::LocalGet(1))
            .instruction(&load)
            .instruction(&I::I32Sub)
            .instruction(&I::Return)
            .instruction(&I::End);
        step(&mut memcmp, false);
        memcmp
            .instruction(&I::Br(0))
            .instruction(&I::End)
            .instruction(&I::Unreachable)
            .instruction(&I::End);
        code.function(&memcmp);
        // memeqbody, as Go writes it: 1 at once if a == b; else byte by byte.
        let load64 = |f: &mut enc::Function, local: u32| {
            f.instruction(&I::LocalGet(local))
                .instruction(&I::I32WrapI64)
                .instruction(&I::I64Load8U(enc::MemArg {
                    offset: 0,
                    align: 0,
                    memory_index: 0,
                }));
        };
        let mut memeq = enc::Function::new([]);
        memeq
            .instruction(&I::LocalGet(0))
            .instruction(&I::LocalGet(1))
            .instruction(&I::I64Eq)
            .instruction(&I::If(enc::BlockType::Empty))
            .instruction(&I::I64Const(1))
            .instruction(&I::Return)
            .instruction(&I::End)
            .instruction(&I::Loop(enc::BlockType::Empty))
            .instruction(&I::LocalGet(2))
            .instruction(&I::I64Eqz)
            .instruction(&I::If(enc::BlockType::Empty))
            .instruction(&I::I64Const(1))
            .instruction(&I::Return)
            .instruction(&I::End);
        load64(&mut memeq, 0);
        load64(&mut memeq, 1);
        memeq
            .instruction(&I::I64Ne)
            .instruction(&I::If(enc::BlockType::Empty))
            .instruction(&I::I64Const(0))
            .instruction(&I::Return)
            .instruction(&I::End);
        step(&mut memeq, true);
        memeq
            .instruction(&I::Br(0))
            .instruction(&I::End)
            .instruction(&I::Unreachable)
            .instruction(&I::End);
        code.function(&memeq);
        code.function(&call3(5));
        code.function(&call3(6));
        m.section(&code);
        let mut data = enc::DataSection::new();
        data.active(
            0,
            &enc::ConstExpr::i32_const(100),
            b"hello world".iter().copied(),
        );
        data.active(
            0,
            &enc::ConstExpr::i32_const(200),
            b"hello there".iter().copied(),
        );
        m.section(&data);
        let mut names = enc::NameMap::new();
        for (i, name) in [
            (1, "runtime.memclrNoHeapPointers"),
            (2, "memchr"),
            (3, "main.find"),
            (4, "main.find_indirect"),
            (5, "memcmp"),
            (6, "memeqbody"),
            (7, "main.cmp"),
            (8, "main.eq"),
        ] {
            names.append(i, name);
        }
        let mut section = enc::NameSection::new();
        section.functions(&names);
        m.section(&section);
        m.finish()
    }

    #[test]
    fn fill_pass_gives_go_s_byte_loops_to_the_host() {
        let wasm = helpers_module();
        wasmparser::Validator::new().validate_all(&wasm).unwrap();
        // Calls of the host's versions.
        static HOST_CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let host_calls = || HOST_CALLS.load(std::sync::atomic::Ordering::SeqCst);
        fn link(linker: &mut wasmtime::Linker<()>) {
            let count = || HOST_CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            type C<'a> = wasmtime::Caller<'a, ()>;
            fn mem<'a>(c: &'a mut C<'_>) -> &'a [u8] {
                let m = c.get_export("mem").unwrap().into_memory().unwrap();
                m.data(c)
            }
            let trap = || wasmtime::Error::from(wasmtime::Trap::MemoryOutOfBounds);
            linker.func_wrap("gojs", "a", |_: i32| {}).unwrap();
            let m = crate::fill::MODULE;
            linker
                .func_wrap(m, crate::fill::NAME, |_: i32, _: i32, _: i32| {})
                .unwrap();
            linker
                .func_wrap(m, "memchr", move |mut c: C<'_>, s: i32, ch: i32, n: i32| {
                    count();
                    crate::fill::memchr(mem(&mut c), s as u32, ch as u32, n as u32)
                        .map(|at| at as i32)
                        .ok_or_else(trap)
                })
                .unwrap();
            linker
                .func_wrap(m, "memcmp", move |mut c: C<'_>, a: i32, b: i32, n: i32| {
                    count();
                    crate::fill::memcmp(mem(&mut c), a as u32, b as u32, n as u32).ok_or_else(trap)
                })
                .unwrap();
            linker
                .func_wrap(
                    m,
                    "memeqbody",
                    move |mut c: C<'_>, a: i64, b: i64, n: i64| {
                        count();
                        crate::fill::memeqbody(mem(&mut c), a as u64, b as u64, n as u64)
                            .ok_or_else(trap)
                    },
                )
                .unwrap();
        }
        let instance = |wasm: &[u8]| {
            let engine = wasmtime::Engine::default();
            let module = wasmtime::Module::new(&engine, wasm).expect("compiles");
            let mut store = wasmtime::Store::new(&engine, ());
            let mut linker = wasmtime::Linker::new(&engine);
            link(&mut linker);
            let instance = linker.instantiate(&mut store, &module).unwrap();
            (store, instance)
        };
        // `export(a, b, n)`, or `None` if it traps.
        let call32 = |wasm: &[u8], export: &str, args: (i32, i32, i32)| {
            let (mut store, instance) = instance(wasm);
            let f = instance
                .get_typed_func::<(i32, i32, i32), i32>(&mut store, export)
                .unwrap();
            f.call(&mut store, args).ok()
        };
        let call64 = |wasm: &[u8], args: (i64, i64, i64)| {
            let (mut store, instance) = instance(wasm);
            let f = instance
                .get_typed_func::<(i64, i64, i64), i64>(&mut store, "eq")
                .unwrap();
            f.call(&mut store, args).ok()
        };
        let c = |b: u8| i32::from(b);
        let finds = [
            (100, c(b'o'), 11),
            (100, c(b'z'), 11),
            (100, c(b'h'), 0),
            (105, c(b'w'), 6),
            (100, c(b'd'), 10),
            // Past the end of memory: found before it, not found (a trap), and a length that
            // wraps around.
            (65530, 0, 100),
            (65530, 1, 100),
            (65530, 1, -1),
        ];
        let compares = [
            (100, 200, 11),
            (200, 100, 11),
            (100, 200, 6),
            (100, 100, 0),
            (65530, 100, 100),
            (65530, 65531, 100),
            (65530, 65531, -1),
            (70000, 100, 1),
            (70000, 70001, 0),
            (100, 70001, 1),
        ];
        for dispatch in [false, true] {
            let passes = Passes {
                jumps: false,
                fill: true,
                winch: dispatch,
                dispatch,
                data: false,
                narrow: false,
                tier: false,
                tier_stop: false,
            };
            let rewritten = prepare(&wasm, passes).expect("rewritten");
            wasmparser::Validator::new()
                .validate_all(&rewritten)
                .unwrap();
            let named = names(&rewritten);
            for (i, name) in [(2, "memchr"), (3, "memcmp"), (4, "memeqbody")] {
                assert!(
                    named.contains(&(i, format!("gojs:host.{name}"))),
                    "{named:?}"
                );
            }
            for export in ["find", "find_indirect"] {
                for args in finds {
                    assert_eq!(
                        call32(&wasm, export, args),
                        call32(&rewritten, export, args),
                        "{export}{args:?}, dispatch {dispatch}"
                    );
                }
            }
            for args in compares {
                assert_eq!(
                    call32(&wasm, "cmp", args),
                    call32(&rewritten, "cmp", args),
                    "cmp{args:?}, dispatch {dispatch}"
                );
                let wide = (i64::from(args.0), i64::from(args.1), i64::from(args.2));
                assert_eq!(
                    call64(&wasm, wide),
                    call64(&rewritten, wide),
                    "eq{wide:?}, dispatch {dispatch}"
                );
            }
            assert_eq!(call32(&rewritten, "find", (100, c(b'o'), 11)), Some(104));
            assert_eq!(call32(&rewritten, "find", (65530, 1, 100)), None);
            assert_eq!(call32(&rewritten, "cmp", (100, 200, 11)), Some(3));
            assert_eq!(call64(&rewritten, (100, 200, 6)), Some(1));
            assert_eq!(call64(&rewritten, (100, 200, 11)), Some(0));
            assert_eq!(call64(&rewritten, (7, 7, -1)), Some(1));
            // A few bytes stay in Go's loop; from `host_from` on (Winch's thresholds with the
            // dispatch pass, Cranelift's without), the host answers.
            let from = |name| crate::fill::host_from(name, dispatch) as i32;
            let before = host_calls();
            let find = |n| call32(&rewritten, "find", (100, c(b'o'), n));
            let cmp = |n| call32(&rewritten, "cmp", (100, 200, n));
            let eq = |n: i32| call64(&rewritten, (100, 200, i64::from(n)));
            assert_eq!(find(from("memchr") - 1), Some(104));
            assert_eq!(cmp(from("memcmp") - 1), Some(3));
            assert_eq!(eq(from("memeqbody") - 1), Some(0));
            assert_eq!(host_calls(), before);
            assert_eq!(find(from("memchr")), Some(104));
            assert_eq!(cmp(from("memcmp")), Some(3));
            assert_eq!(eq(from("memeqbody")), Some(0));
            assert_eq!(host_calls(), before + 3);
        }
    }

    /// A module with one memory (exported as "mem") and these data segments: `(offset, bytes)`,
    /// active in memory 0, or passive when the offset is `None`.
    fn with_data(segments: &[(Option<i32>, &[u8])]) -> Vec<u8> {
        let mut m = enc::Module::new();
        let mut memories = enc::MemorySection::new();
        memories.memory(memory_type(1));
        m.section(&memories);
        let mut exports = enc::ExportSection::new();
        exports.export("mem", enc::ExportKind::Memory, 0);
        m.section(&exports);
        let mut data = enc::DataSection::new();
        for &(at, bytes) in segments {
            match at {
                Some(at) => data.active(0, &enc::ConstExpr::i32_const(at), bytes.iter().copied()),
                None => data.passive(bytes.iter().copied()),
            };
        }
        m.section(&data);
        m.finish()
    }

    /// The memory an instance of `wasm` starts with, or `None` if it can't be instantiated.
    fn initial_memory(wasm: &[u8]) -> Option<Vec<u8>> {
        let engine = wasmtime::Engine::default();
        let module = wasmtime::Module::new(&engine, wasm).unwrap();
        let mut store = wasmtime::Store::new(&engine, ());
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).ok()?;
        let mem = instance.get_memory(&mut store, "mem").unwrap();
        Some(mem.data(&store).to_vec())
    }

    fn segment_count(wasm: &[u8]) -> usize {
        for payload in wasmparser::Parser::new(0).parse_all(wasm) {
            if let wasmparser::Payload::DataSection(r) = payload.unwrap() {
                return r.count() as usize;
            }
        }
        0
    }

    #[test]
    fn data_pass_merges_nearby_segments_and_keeps_memory_the_same() {
        let data_only = Passes {
            jumps: false,
            fill: false,
            dispatch: false,
            winch: false,
            data: true,
            narrow: false,
            tier: false,
            tier_stop: false,
        };
        // 100 and 110 merge (7 bytes apart); 200 is too far; 20 comes after 200 in the
        // section; 203 follows 20, not 200. At 0x8000 + 32 the gap is just short enough.
        let wasm = with_data(&[
            (Some(100), b"abc"),
            (Some(110), b"def"),
            (Some(200), b"ghi"),
            (Some(20), b"zz"),
            (Some(203), b"jk"),
            (Some(0x8000), b"x"),
            (Some(0x8000 + 1 + 32), b"y"),
            (Some(0x9000), b"p"),
            (Some(0x9000 + 1 + 33), b"q"),
        ]);
        let merged = prepare(&wasm, data_only).expect("merged");
        wasmparser::Validator::new().validate_all(&merged).unwrap();
        // Go's kind of segments are read directly, the same as wasmparser reads them.
        let all = sections(&wasm).unwrap();
        let data = all.iter().find(|s| s.id == DATA_SECTION).unwrap();
        let content = &wasm[data.content.clone()];
        let direct = crate::pclntab::active_segments(content).expect("read directly");
        assert_eq!(Some(direct), data_segments(content, data.content.start));
        // Bytes after the last segment: neither reads it.
        let mut longer = content.to_vec();
        longer.push(0);
        assert_eq!(crate::pclntab::active_segments(&longer), None);
        assert_eq!(data_segments(&longer, 0), None);
        assert_eq!((segment_count(&wasm), segment_count(&merged)), (9, 7));
        let memory = initial_memory(&wasm).expect("instantiates");
        assert_eq!(&memory[100..113], b"abc\0\0\0\0\0\0\0def");
        assert_eq!(initial_memory(&merged).as_deref(), Some(memory.as_slice()));
        // Nothing merges, or merging could change what memory holds: the section stays.
        for segments in [
            &[(Some(100), &b"ab"[..]), (Some(200), b"cd")][..],
            &[(Some(100), b"abcd"), (Some(102), b"xy")],
            &[(Some(100), b"ab"), (Some(103), b"cd"), (None, b"passive")],
            &[
                (Some(100), b"ab"),
                (Some(103), b"cd"),
                (Some(-1), b"past 4 GiB"),
            ],
        ] {
            let wasm = with_data(segments);
            assert!(prepare(&wasm, data_only).is_none(), "{segments:?}");
        }
        // Without the pass, nothing changes either.
        let off = Passes {
            data: false,
            ..data_only
        };
        assert!(prepare(&wasm, off).is_none());
    }

    #[test]
    fn damaged_modules_never_panic() {
        let wasm = module();
        // Every pass (Winch's compiles dispatch, Cranelift's narrow).
        for (dispatch, narrow) in [(true, false), (false, true)] {
            damage(
                &wasm,
                Passes {
                    jumps: true,
                    fill: true,
                    winch: dispatch,
                    dispatch,
                    data: true,
                    narrow,
                    tier: true,
                    tier_stop: dispatch,
                },
            );
        }
    }

    /// Every truncation and a few flips of every byte of `wasm`: no panic, and what validated
    /// before the rewrite validates after it.
    pub(crate) fn damage(wasm: &[u8], all: Passes) {
        for i in 0..wasm.len() {
            let _ = prepare(&wasm[..i], all);
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = wasm.to_vec();
                bad[i] ^= flip;
                if let Some(out) = prepare(&bad, all)
                    && wasmparser::Validator::new().validate_all(&bad).is_ok()
                {
                    assert!(
                        wasmparser::Validator::new().validate_all(&out).is_ok(),
                        "byte {i} ^ {flip:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn leb128_round_trips() {
        for v in [0, 1, 127, 128, 300, 16_384, u32::MAX] {
            let mut out = Vec::new();
            super::write_u32(&mut out, v);
            assert_eq!(super::read_u32(&out), Some((v, out.len())));
        }
        for v in [0, 1, -1, 63, 64, -64, -65, 8191, -8192, i32::MAX, i32::MIN] {
            let mut out = Vec::new();
            super::write_i32(&mut out, v);
            let mut r = BinaryReader::new(&out, 0);
            assert_eq!(r.read_var_i32().ok(), Some(v), "{v}");
            assert!(r.eof(), "{v}");
        }
    }
}
