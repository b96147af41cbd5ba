//! Function names from Go's own table of them, for modules without a name section.
//!
//! `go run` and `go test` link with `-s`, which leaves out the wasm name section that
//! [`crate::split`] picks a first run's functions by (and that tells a test binary, compiled
//! whole, from a program). Go's runtime keeps its own names for tracebacks: the `pclntab` in
//! the module's data, whose function table lists every defined function in order. Go 1.18–1.19
//! mark it with magic `0xfffffff0`, 1.20 and later with `0xfffffff1`; the layout we read is the
//! same (`runtime/symtab.go`: `pcHeader`, `functab`, `_func`). Names come back spelled as the
//! linker spells them in a name section (every character but letters, digits, `_` and `.` made
//! `_`), except that Go's table writes a generic function's type arguments as `[...]`.
//!
//! The data is untrusted like the rest of the module: every offset is checked, and a table that
//! doesn't fit (or doesn't list exactly the module's functions) gives no names.

use std::borrow::Cow;

/// The header's first 8 bytes: magic, two zero pad bytes, `minLC` 1 and pointer size 8.
const MAGICS: [[u8; 8]; 2] = [
    [0xf1, 0xff, 0xff, 0xff, 0, 0, 1, 8],
    [0xf0, 0xff, 0xff, 0xff, 0, 0, 1, 8],
];

/// A name longer than this is cut (Go's are far shorter, save some generic instances').
const NAME_MAX: usize = 4096;

/// The linear memory that active data segments initialise: sorted `(address, bytes)`; bytes
/// between segments are zero.
struct Image<'a> {
    segments: Vec<(u64, &'a [u8])>,
}

impl<'a> Image<'a> {
    /// The segment holding `addr`, and `addr`'s offset in it.
    fn find(&self, addr: u64) -> Option<(usize, usize)> {
        let i = self.segments.partition_point(|&(start, _)| start <= addr);
        let i = i.checked_sub(1)?;
        let (start, bytes) = self.segments[i];
        let at = usize::try_from(addr - start).ok()?;
        (at < bytes.len()).then_some((i, at))
    }

    /// `N` bytes at `addr` (zeros where no segment is).
    fn read<const N: usize>(&self, addr: u64) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some((i, at)) = self.find(addr)
            && let Some(bytes) = self.segments[i].1.get(at..at + N)
        {
            out.copy_from_slice(bytes);
            return out;
        }
        for (k, b) in out.iter_mut().enumerate() {
            if let Some((i, at)) = addr.checked_add(k as u64).and_then(|a| self.find(a)) {
                *b = self.segments[i].1[at];
            }
        }
        out
    }

    fn u32(&self, addr: u64) -> u32 {
        u32::from_le_bytes(self.read(addr))
    }

    fn u64(&self, addr: u64) -> u64 {
        u64::from_le_bytes(self.read(addr))
    }

    /// The NUL-terminated string at `addr`, at most [`NAME_MAX`] bytes.
    fn c_string(&self, addr: u64) -> Cow<'a, [u8]> {
        let Some((i, at)) = self.find(addr) else {
            return Cow::Borrowed(&[]);
        };
        let rest = &self.segments[i].1[at..];
        let end = memchr::memchr(0, rest).unwrap_or(rest.len()).min(NAME_MAX);
        if end < rest.len() || end == NAME_MAX {
            return Cow::Borrowed(&rest[..end]);
        }
        // Runs on into the next segment only if that starts right here.
        let mut owned = rest.to_vec();
        let mut next = i + 1;
        while owned.len() < NAME_MAX
            && let Some(&(start, bytes)) = self.segments.get(next)
            && Some(start) == addr.checked_add(owned.len() as u64)
        {
            let end = memchr::memchr(0, bytes).unwrap_or(bytes.len());
            owned.extend_from_slice(&bytes[..end]);
            if end < bytes.len() {
                break;
            }
            next += 1;
        }
        owned.truncate(NAME_MAX);
        Cow::Owned(owned)
    }

    /// The address of the first of `MAGICS` in a segment. `section` holds every segment's
    /// bytes: one search through it, not one per segment (Go writes tens of thousands).
    fn find_header(&self, section: &[u8]) -> Option<u64> {
        let base = section.as_ptr() as usize;
        MAGICS.iter().find_map(|magic| {
            let mut from = 0;
            while let Some(at) = memchr::memmem::find(section.get(from..)?, magic) {
                let found = base + from + at;
                // The segment whose bytes hold the match, if the magic lies wholly inside one.
                let i = self
                    .segments
                    .partition_point(|&(_, bytes)| (bytes.as_ptr() as usize) <= found);
                if let Some(&(start, bytes)) = i.checked_sub(1).and_then(|i| self.segments.get(i)) {
                    let off = found - bytes.as_ptr() as usize;
                    if off + magic.len() <= bytes.len() {
                        return start.checked_add(off as u64);
                    }
                }
                from += at + 1;
            }
            None
        })
    }
}

/// The names of a module's `defined` functions, in order, from the `pclntab` in its data
/// section (`data`, the section's contents); `None` if there is none that lists exactly
/// `defined` functions.
pub(crate) fn function_names(data: &[u8], defined: usize) -> Option<Vec<String>> {
    let segments = active_segments(data)?;
    // In the section's order (by where their bytes are), to find the header's segment; then
    // by address. Go writes them in both orders at once.
    let by_address = segments.is_sorted_by_key(|&(start, _)| start);
    let mut image = Image { segments };
    let header = if by_address {
        image.find_header(data)?
    } else {
        let header = image.find_header(data);
        image.segments.sort_by_key(|&(start, _)| start);
        header?
    };
    // pcHeader: magic, pads, minLC, ptrSize (8 bytes), then nfunc, nfiles, textStart,
    // funcnameOffset, cuOffset, filetabOffset, pctabOffset, pclnOffset (8 bytes each).
    let field = |n: u64| -> Option<u64> { Some(image.u64(header.checked_add(8 + 8 * n)?)) };
    if usize::try_from(field(0)?).ok()? != defined {
        return None;
    }
    let funcnames = header.checked_add(field(3)?)?;
    let pcln = header.checked_add(field(7)?)?;
    let mut names = Vec::with_capacity(defined);
    for f in 0..defined as u64 {
        // functab[f] = {entryoff, funcoff}; _func at pcln + funcoff: {entryOff, nameOff, …}.
        let funcoff = image.u32(pcln.checked_add(8 * f + 4)?);
        let name_off = image.u32(pcln.checked_add(u64::from(funcoff))?.checked_add(4)?) as i32;
        let at = funcnames.checked_add_signed(i64::from(name_off))?;
        names.push(linker_spelling(&image.c_string(at)));
    }
    Some(names)
}

/// `wasm` with a name section: as it is if it has one (or if Go's table can't be read), else
/// with one made from Go's table appended, so that what goes by name — the rewrite's passes,
/// the first run's split, trap backtraces — works for modules linked with `-s` as well.
pub(crate) fn with_names(wasm: &[u8]) -> Cow<'_, [u8]> {
    named(wasm).map_or(Cow::Borrowed(wasm), Cow::Owned)
}

fn named(wasm: &[u8]) -> Option<Vec<u8>> {
    use wasmparser::{Payload, TypeRef};
    let (mut imported, mut defined, mut data) = (0u32, 0usize, None);
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload.ok()? {
            Payload::ImportSection(r) => {
                for import in r.into_imports() {
                    imported += u32::from(matches!(import.ok()?.ty, TypeRef::Func(_)));
                }
            }
            Payload::FunctionSection(r) => defined = r.count() as usize,
            Payload::DataSection(r) => data = Some(wasm.get(r.range())?),
            Payload::CustomSection(c) if c.name() == "name" => return None,
            _ => {}
        }
    }
    let names = function_names(data?, defined)?;
    let mut map = wasm_encoder::NameMap::new();
    for (f, name) in (imported..).zip(&names) {
        map.append(f, name);
    }
    let mut section = wasm_encoder::NameSection::new();
    section.functions(&map);
    let mut out = Vec::with_capacity(wasm.len() + names.len() * 32);
    out.extend_from_slice(wasm);
    wasm_encoder::Section::append_to(&section.as_custom(), &mut out);
    Some(out)
}

/// The active segments of memory 0 in a data section's contents, as `(address, bytes)`, in
/// the section's order. Go writes tens of thousands, all `(i32.const N)`-placed: read here
/// directly (`wasmparser` took ~5 ms for 55,000). Any other kind of segment, or bytes after the
/// last: `None`.
pub(crate) fn active_segments(data: &[u8]) -> Option<Vec<(u64, &[u8])>> {
    use crate::rewrite::read_uleb as uleb;
    fn sleb32(data: &[u8], at: &mut usize) -> Option<i32> {
        let mut value = 0i64;
        let mut shift = 0;
        loop {
            let byte = *data.get(*at)?;
            *at += 1;
            value |= i64::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                if byte & 0x40 != 0 {
                    value |= -1 << shift;
                }
                return i32::try_from(value).ok();
            }
            if shift > 35 {
                return None;
            }
        }
    }
    let mut at = 0;
    let count = usize::try_from(uleb(data, &mut at)?).ok()?;
    let mut segments = Vec::with_capacity(count.min(data.len()));
    for _ in 0..count {
        // Flags 0: active, memory 0, an offset expression; Go's are `i32.const N end`.
        if uleb(data, &mut at)? != 0 || *data.get(at)? != 0x41 {
            return None;
        }
        at += 1;
        let start = sleb32(data, &mut at)? as u32;
        if *data.get(at)? != 0x0b {
            return None;
        }
        at += 1;
        let len = usize::try_from(uleb(data, &mut at)?).ok()?;
        let bytes = data.get(at..at.checked_add(len)?)?;
        at += len;
        segments.push((u64::from(start), bytes));
    }
    // Nothing after the last segment (a valid section ends there).
    (at == data.len()).then_some(segments)
}

/// A name as Go's wasm linker writes it in a name section: every character but ASCII letters,
/// digits, `_` and `.` made `_`.
fn linker_spelling(name: &[u8]) -> String {
    String::from_utf8_lossy(name)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_spelled_as_the_linker_spells_them() {
        assert_eq!(
            super::linker_spelling(b"bufio.(*Scanner).Scan"),
            "bufio.__Scanner_.Scan"
        );
        assert_eq!(
            super::linker_spelling(b"internal/cpu.Initialize"),
            "internal_cpu.Initialize"
        );
        assert_eq!(super::linker_spelling(b"go:buildid"), "go_buildid");
        assert_eq!(super::linker_spelling("main.h\u{e9}".as_bytes()), "main.h_");
    }

    #[test]
    fn strings_run_across_adjacent_segments_only() {
        let image = super::Image {
            segments: vec![(100, &b"abc"[..]), (103, &b"def\0x"[..]), (200, &b"gh"[..])],
        };
        assert_eq!(&*image.c_string(100), b"abcdef");
        assert_eq!(&*image.c_string(201), b"h");
        assert_eq!(&*image.c_string(150), b"");
        assert_eq!(image.u32(102), u32::from_le_bytes(*b"cdef"));
        assert_eq!(image.u32(198), u32::from_le_bytes([0, 0, b'g', b'h']));
    }

    #[test]
    fn data_segments_are_read_as_go_writes_them() {
        // Two segments: at 16 (LEB 0x10) "ab", at 300 (LEB 0xac 0x02) "c".
        let section = [
            2, 0, 0x41, 0x10, 0x0b, 2, b'a', b'b', 0, 0x41, 0xac, 0x02, 0x0b, 1, b'c',
        ];
        let segments = super::active_segments(&section).unwrap();
        assert_eq!(segments, vec![(16, &b"ab"[..]), (300, &b"c"[..])]);
        // Cut short, or another kind of segment: none.
        assert_eq!(super::active_segments(&section[..12]), None);
        assert_eq!(super::active_segments(&[1, 1, 0]), None);
    }

    #[test]
    fn garbage_gives_no_names() {
        assert_eq!(super::function_names(b"", 3), None);
        assert_eq!(super::function_names(&[1, 0, 0x41, 0, 0x0b, 8], 1), None);
    }
}
