//! What gojs changes in a Go module before compiling it. Two passes, each optional:
//!
//! - **jumps** ([`crate::jumps`]): forward jumps branch straight to their block;
//! - **fill** ([`crate::fill`]): Go's `runtime.memclrNoHeapPointers` calls an import of ours,
//!   `gojs:host.fill`, in place of its `memory.fill`. The import is added after Go's, so every
//!   function defined by the module moves up one index: calls, `ref.func`, the element
//!   segments, exports, the start function and the function names follow.
//!
//! Both passes only patch instructions in place (a `br`'s depth, a call's index) and re-encode
//! the few sections that hold function indices; everything else is copied byte for byte.

use rayon::prelude::*;
use wasmparser::{BinaryReader, FunctionBody, Operator};

/// What [`prepare`] does.
#[derive(Clone, Copy)]
pub(crate) struct Passes {
    pub jumps: bool,
    pub fill: bool,
}

impl Passes {
    /// The passes this process runs: all, less those turned off (`GOJS_JUMPS=off`,
    /// `GOJS_FILL=off`).
    pub(crate) fn enabled() -> Passes {
        let on = |var| std::env::var_os(var).is_none_or(|v| v != "off");
        Passes {
            jumps: on("GOJS_JUMPS"),
            fill: on("GOJS_FILL"),
        }
    }

    /// What the cache key records: compiled code depends on it. Bump a number whenever its
    /// pass changes what it writes.
    pub(crate) fn version(self) -> String {
        format!(
            "jumps-{} fill-{}",
            if self.jumps { "1" } else { "off" },
            if self.fill { "1" } else { "off" }
        )
    }
}

/// A patch to an instruction: bytes `start..end` of a function body become `op` followed by
/// `index` (LEB128).
pub(crate) struct Patch {
    pub start: usize,
    pub end: usize,
    pub op: u8,
    pub index: u32,
}

pub(crate) const BR: u8 = 0x0c;
const CALL: u8 = 0x10;
const RETURN_CALL: u8 = 0x12;
const REF_FUNC: u8 = 0xd2;

const TYPE_SECTION: u8 = 1;
const IMPORT_SECTION: u8 = 2;
const EXPORT_SECTION: u8 = 7;
const START_SECTION: u8 = 8;
const ELEMENT_SECTION: u8 = 9;
const CODE_SECTION: u8 = 10;
const CUSTOM_SECTION: u8 = 0;

/// `wasm` with `passes` applied, or `None` if it can't be read or neither pass changes
/// anything. A module the fill pass can't handle still gets its jumps.
pub(crate) fn prepare(wasm: &[u8], passes: Passes) -> Option<Vec<u8>> {
    let sections = sections(wasm)?;
    let fill = if passes.fill {
        FillPlan::find(wasm, &sections)
    } else {
        None
    };
    let out = assemble(wasm, &sections, passes.jumps, fill.as_ref());
    match out {
        Some(out) => Some(out),
        // The fill pass found a body it can't shift: jumps only.
        None if fill.is_some() => assemble(wasm, &sections, passes.jumps, None),
        None => None,
    }
    .filter(|out| out.as_slice() != wasm)
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
    /// `runtime.memclrNoHeapPointers`'s function index (before the shift).
    memclr: u32,
}

impl FillPlan {
    /// The plan for `wasm`, or `None` if it has no `runtime.memclrNoHeapPointers` made of one
    /// `memory.fill`, or sections the pass doesn't rewrite (GC types, other kinds of imports
    /// than functions, element expressions).
    fn find(wasm: &[u8], sections: &[Section]) -> Option<FillPlan> {
        let mut types = 0u32;
        let mut fill_type = None;
        let mut imported = None;
        let mut memclr = None;
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
                    }
                }
                _ => {}
            }
        }
        let import = imported?;
        let memclr = memclr?;
        let (_, start, end) = *bodies.get(memclr.checked_sub(import)? as usize)?;
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
        Some(FillPlan {
            import,
            ty: fill_type.unwrap_or(types),
            add_type: fill_type.is_none(),
            memclr,
        })
    }

    /// A function index after the shift.
    fn shift(&self, index: u32) -> u32 {
        if index >= self.import {
            index + 1
        } else {
            index
        }
    }
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
/// fill plan, nothing changed).
fn assemble(
    wasm: &[u8],
    sections: &[Section],
    jumps: bool,
    fill: Option<&FillPlan>,
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(wasm.len() + 64);
    out.extend_from_slice(&wasm[..8]);
    let mut changed = false;
    for s in sections {
        let content = &wasm[s.content.clone()];
        let new = match (s.id, fill) {
            (CODE_SECTION, _) => code_section(content, jumps, fill)?,
            (TYPE_SECTION, Some(f)) if f.add_type => Some(append_fill_type(content)?),
            (IMPORT_SECTION, Some(f)) => Some(append_fill_import(content, f)?),
            (EXPORT_SECTION, Some(f)) => Some(shift_exports(content, s.content.start, f)?),
            (START_SECTION, Some(f)) => {
                let (index, n) = read_u32(content)?;
                (n == content.len()).then_some(())?;
                let mut v = Vec::new();
                write_u32(&mut v, f.shift(index));
                Some(v)
            }
            (ELEMENT_SECTION, Some(f)) => Some(shift_elements(content, s.content.start, f)?),
            (CUSTOM_SECTION, Some(f)) => shift_names(content, s.content.start, f)?,
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

/// The code section's contents with each body patched; `Some(None)` if no body changed. Bodies
/// are read in parallel (on the current rayon pool). `None` if a body can't be read while
/// function indices must shift.
fn code_section(content: &[u8], jumps: bool, fill: Option<&FillPlan>) -> Option<Option<Vec<u8>>> {
    let entries = code_entries(content)?;
    let patches: Vec<Option<Vec<Patch>>> = entries
        .par_iter()
        .enumerate()
        .map(|(i, &(_, start, end))| {
            let index = fill.map(|f| f.import + i as u32);
            body_patches(&content[start..end], jumps, fill, index)
        })
        .collect();
    if fill.is_some() && patches.iter().any(Option::is_none) {
        return None;
    }
    if patches.iter().all(|p| p.as_ref().is_none_or(Vec::is_empty)) {
        return Some(None);
    }
    let mut out = Vec::with_capacity(content.len() + 16);
    write_u32(&mut out, u32::try_from(entries.len()).ok()?);
    for (&(entry, start, end), patches) in entries.iter().zip(&patches) {
        match patches {
            Some(patches) if !patches.is_empty() => {
                let body = apply(&content[start..end], patches);
                write_u32(&mut out, u32::try_from(body.len()).ok()?);
                out.extend_from_slice(&body);
            }
            _ => out.extend_from_slice(&content[entry..end]),
        }
    }
    Some(Some(out))
}

/// The patches of one function body (function `index` before the shift, when there is one).
fn body_patches(
    body: &[u8],
    jumps: bool,
    fill: Option<&FillPlan>,
    index: Option<u32>,
) -> Option<Vec<Patch>> {
    let reader = || {
        FunctionBody::new(BinaryReader::new(body, 0))
            .get_operators_reader()
            .ok()
    };
    let mut ops = reader()?;
    let mut patches = Vec::new();
    // Go's prologue holds no calls: after it, both passes read on together.
    let mut tracker = None;
    if jumps {
        match crate::jumps::Dispatch::read(&mut ops) {
            Some(d) => tracker = Some(crate::jumps::Jumps::new(d)),
            None => ops = reader()?,
        }
    }
    if tracker.is_none() && fill.is_none() {
        return Some(patches);
    }
    let is_memclr = fill.is_some_and(|f| Some(f.memclr) == index);
    while !ops.eof() {
        let start = ops.original_position();
        let op = ops.read().ok()?;
        let end = ops.original_position();
        if let Some(t) = &mut tracker {
            t.step(&op, start, end, &mut patches);
        }
        if let Some(f) = fill {
            let (code, callee) = match op {
                Operator::Call { function_index } => (CALL, function_index),
                Operator::ReturnCall { function_index } => (RETURN_CALL, function_index),
                Operator::RefFunc { function_index } => (REF_FUNC, function_index),
                Operator::MemoryFill { .. } if is_memclr => (CALL, f.import),
                _ => continue,
            };
            let moved = if matches!(op, Operator::MemoryFill { .. }) {
                callee
            } else {
                f.shift(callee)
            };
            if moved != callee || matches!(op, Operator::MemoryFill { .. }) {
                patches.push(Patch {
                    start,
                    end,
                    op: code,
                    index: moved,
                });
            }
        }
    }
    patches.sort_by_key(|p| p.start);
    Some(patches)
}

/// `body` with each patch applied (patches in order, not overlapping).
fn apply(body: &[u8], patches: &[Patch]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + patches.len());
    let mut at = 0;
    for p in patches {
        out.extend_from_slice(&body[at..p.start]);
        out.push(p.op);
        write_u32(&mut out, p.index);
        at = p.end;
    }
    out.extend_from_slice(&body[at..]);
    out
}

/// The type section with `[i32 i32 i32] -> []` appended.
fn append_fill_type(content: &[u8]) -> Option<Vec<u8>> {
    let (count, n) = read_u32(content)?;
    let mut out = Vec::with_capacity(content.len() + 8);
    write_u32(&mut out, count.checked_add(1)?);
    out.extend_from_slice(&content[n..]);
    out.extend_from_slice(&[0x60, 3, 0x7f, 0x7f, 0x7f, 0]);
    Some(out)
}

/// The import section with `gojs:host.fill` appended.
fn append_fill_import(content: &[u8], f: &FillPlan) -> Option<Vec<u8>> {
    let (count, n) = read_u32(content)?;
    let mut out = Vec::with_capacity(content.len() + 32);
    write_u32(&mut out, count.checked_add(1)?);
    out.extend_from_slice(&content[n..]);
    for name in [crate::fill::MODULE, crate::fill::NAME] {
        write_u32(&mut out, name.len() as u32);
        out.extend_from_slice(name.as_bytes());
    }
    out.push(0x00);
    write_u32(&mut out, f.ty);
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

/// The name section with function indices shifted and `fill` named; `Some(None)` for other
/// custom sections (copied as they are).
fn shift_names(content: &[u8], offset: usize, f: &FillPlan) -> Option<Option<Vec<u8>>> {
    let reader = wasmparser::CustomSectionReader::new(BinaryReader::new(content, offset)).ok()?;
    if reader.name() != "name" {
        return Some(None);
    }
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
                let mut added = false;
                for naming in wasmparser::NameMap::new(reader).ok()? {
                    let naming = naming.ok()?;
                    if !added && naming.index >= f.import {
                        map.append(f.import, "gojs:host.fill");
                        added = true;
                    }
                    map.append(f.shift(naming.index), naming.name);
                }
                if !added {
                    map.append(f.import, "gojs:host.fill");
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
                    map.append(f.shift(indirect.index), &inner);
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

/// A section's encoding without its leading size (wasm-encoder writes it; `assemble` adds
/// its own).
fn strip_size(encoded: Vec<u8>) -> Option<Vec<u8>> {
    let (_, n) = read_u32(&encoded)?;
    Some(encoded[n..].to_vec())
}

/// An unsigned LEB128 number at the start of `bytes`, and how many bytes it took.
pub(crate) fn read_u32(bytes: &[u8]) -> Option<(u32, usize)> {
    let mut r = BinaryReader::new(bytes, 0);
    let v = r.read_var_u32().ok()?;
    Some((v, r.original_position()))
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
mod tests {
    use super::*;
    use wasm_encoder as enc;

    /// A module with two imports, `runtime.memclrNoHeapPointers` (one `memory.fill` of 320 KiB
    /// at its argument), `main.run` and `helper`, a table segment, exports and names.
    /// `run(p)` writes 7s over `p..p+320K`, clears them, and returns the byte at `p + 4096`
    /// plus `helper(41)` called through the table, plus `helper(0)` called directly.
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
        let mut tables = enc::TableSection::new();
        tables.table(enc::TableType {
            element_type: enc::RefType::FUNCREF,
            table64: false,
            minimum: 4,
            maximum: None,
            shared: false,
        });
        m.section(&tables);
        let mut mems = enc::MemorySection::new();
        mems.memory(enc::MemoryType {
            minimum: 16,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        m.section(&mems);
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
        let mut memclr = enc::Function::new([]);
        memclr
            .instruction(&I::LocalGet(0))
            .instruction(&I::I32Const(0))
            .instruction(&I::I32Const(len))
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
            .instruction(&I::I32Load8U(enc::MemArg {
                offset: 4096,
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
        let engine = wasmtime::Engine::default();
        let module = wasmtime::Module::new(&engine, wasm).expect("compiles");
        let mut store = wasmtime::Store::new(&engine, ());
        let mut linker = wasmtime::Linker::new(&engine);
        linker.func_wrap("gojs", "a", |_: i32| {}).unwrap();
        linker.func_wrap("gojs", "b", |_: i32| {}).unwrap();
        linker
            .func_wrap(
                crate::fill::MODULE,
                crate::fill::NAME,
                |mut c: wasmtime::Caller<'_, ()>, dst: i32, val: i32, len: i32| {
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
        (r, mem.data(&store).to_vec())
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
        };
        let rewritten = prepare(&wasm, all).expect("rewritten");
        wasmparser::Validator::new()
            .validate_all(&rewritten)
            .unwrap();
        for p in [0, 100, 65536 + 10] {
            assert_eq!(run(&wasm, p), run(&rewritten, p), "p = {p}");
        }
        assert_eq!(run(&rewritten, 100).0, 43);
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
        // Only memclr's fill became a call; `main.run`'s own fill stays.
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
        assert_eq!((fills(&wasm), fills(&rewritten)), (2, 1));
        // Without the pass, or without a memclr to rewrite, nothing changes.
        let none = Passes {
            jumps: true,
            fill: false,
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
    fn damaged_modules_never_panic() {
        let wasm = module();
        let all = Passes {
            jumps: true,
            fill: true,
        };
        for i in 0..wasm.len() {
            let _ = prepare(&wasm[..i], all);
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = wasm.clone();
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
    }
}
