//! `gojs:host.fill`: `memory.fill` for Go's `runtime.memclrNoHeapPointers` when it clears at
//! least [`RELEASE_MIN`] bytes (RATIONALE.md, "Why does clearing a large block give pages
//! back?"), and the host's versions of Go's byte loops `memchr`, `memcmp` and `memeqbody` ("Why
//! do Go's byte loops call the host?"), and [`populate`], which large copies call on their
//! destination ("Why do large copies make their destination present first?").
//!
//! Go clears every large allocation it can't prove is already zero. `memory.fill` writes each
//! byte, so clearing memory the program never touched first faults in every page. This fill
//! does what `memory.fill` does, except that for a large zero fill it leaves the pages that
//! aren't resident to the kernel (`MADV_DONTNEED`: they read as zeros, and are made when first
//! written), and only writes the resident ones. The rewrite that calls it is in
//! [`crate::rewrite`].

/// The import module and name the rewrite adds.
pub(crate) const MODULE: &str = "gojs:host";
pub(crate) const NAME: &str = "fill";
/// Go's byte loops (`internal/bytealg`) that the rewrite makes call the host's versions, by
/// name, and whether their parameters and result are i64 (else i32): the import of each has
/// the same name. `memchr` is behind `bytes.IndexByte` and `strings.IndexByte`, `memcmp`
/// behind `bytes.Compare` and `strings.Compare`, `memeqbody` behind every comparison of strings
/// and byte arrays for equality.
pub(crate) const HOST_CALLS: [(&str, bool); 3] =
    [("memchr", false), ("memcmp", false), ("memeqbody", true)];

/// From how many bytes a helper calls the host's version, in Cranelift's code or (`winch`)
/// Winch's: below, Go's own loop is faster than the call. Measured 2026-12-01, best of 9: with
/// Cranelift, a string `==` of 16 bytes 10.7 ns in Go's loop against 11.8 ns through the host
/// and of 24 bytes 15.8 against 12.1, `bytes.Compare` equal at 48–64 bytes, `bytes.IndexByte`
/// 11.1 against 13.7 ns at 64 bytes and 15.2 against 13.6 at 96; with Winch (slower loops,
/// the same call) `==` 20 against 22–28 ns at 8 bytes and 30 at 16, `Compare` 21 against 34–43
/// ns at 4 bytes and 38 at 8, `IndexByte` 21 against 23–27 ns at 24 bytes and 29 at 48.
pub(crate) fn host_from(name: &str, winch: bool) -> u64 {
    match (name, winch) {
        ("memeqbody", false) => 20,
        ("memeqbody", true) => 12,
        ("memcmp", false) => 64,
        ("memcmp", true) => 8,
        (_, false) => 80,
        (_, true) => 32,
    }
}

/// Go's `memcmp(a, b, n)`: the difference of the first bytes that differ (as unsigned bytes),
/// or 0. `None` where Go's loop would trap: it reads past the end of memory before finding a
/// difference.
pub(crate) fn memcmp(mem: &[u8], a: u32, b: u32, n: u32) -> Option<i32> {
    if n == 0 {
        return Some(0);
    }
    let (a, b, n) = (a as usize, b as usize, n as usize);
    let k = n
        .min(mem.len().saturating_sub(a))
        .min(mem.len().saturating_sub(b));
    let (x, y) = (mem.get(a..a + k)?, mem.get(b..b + k)?);
    // Equal chunks are compared by the C library's `memcmp` (`==` on slices); the byte loop
    // only runs in the chunk that differs.
    let differs = x
        .chunks(256)
        .zip(y.chunks(256))
        .enumerate()
        .find(|(_, (p, q))| p != q)
        .and_then(|(c, (p, q))| Some(c * 256 + p.iter().zip(q).position(|(u, v)| u != v)?));
    match differs {
        Some(i) => Some(i32::from(x[i]) - i32::from(y[i])),
        None if k < n => None,
        None => Some(0),
    }
}

/// Go's `memeqbody(a, b, n)`: 1 if the `n` bytes at `a` and `b` are equal (or `a == b`), else
/// 0. `None` where Go's loop would trap: it reads past the end of memory before finding a
/// difference. Go's loop reads at the low 32 bits of each address.
pub(crate) fn memeqbody(mem: &[u8], a: u64, b: u64, n: u64) -> Option<i64> {
    if a == b || n == 0 {
        return Some(1);
    }
    let (a, b) = (a as u32 as usize, b as u32 as usize);
    let k = usize::try_from(n)
        .unwrap_or(usize::MAX)
        .min(mem.len().saturating_sub(a))
        .min(mem.len().saturating_sub(b));
    if mem.get(a..a + k)? != mem.get(b..b + k)? {
        Some(0)
    } else if (k as u64) < n {
        None
    } else {
        Some(1)
    }
}

/// Go's `memchr(s, c, n)`: the address of the first byte `c` among the `n` at `s`, or 0. Go's
/// version (C's, compiled to wasm) reads a word at a time; this one is the C library's. `None`
/// where Go's would trap: the search reaches past the end of memory without finding `c`. Only
/// `c`'s low byte counts (Go passes a byte).
pub(crate) fn memchr(mem: &[u8], s: u32, c: u32, n: u32) -> Option<u32> {
    if n == 0 {
        return Some(0);
    }
    let start = s as usize;
    let end = start.checked_add(n as usize)?;
    let inside = mem.get(start..end.min(mem.len())).unwrap_or(&[]);
    match memchr::memchr(c as u8, inside) {
        // Below 2^32: it is in memory, which a 32-bit address reaches.
        Some(i) => Some((start + i) as u32),
        None if end > mem.len() => None,
        None => Some(0),
    }
}

/// Fills at least this long look for pages to give back: Go clears a large allocation in
/// chunks of 256 KiB (`memclrNoHeapPointersChunked`). Shorter clears don't call the host at all
/// (the rewrite keeps Go's `memory.fill` for them).
pub(crate) const RELEASE_MIN: usize = 256 << 10;

/// Fill `mem[dst..dst + len]` with `val`, as `memory.fill` does; `Err` if the range is out of
/// bounds (the trap `memory.fill` would raise). Memory below `fresh_from` is never given back:
/// it may be mapped from the module's data (a copy-on-write image), where giving a page back
/// would bring the data back instead of zeros. Above it, the memory is anonymous.
pub(crate) fn fill(mem: &mut [u8], fresh_from: usize, dst: u32, val: u32, len: u32) -> bool {
    let (dst, len) = (dst as usize, len as usize);
    let Some(region) = dst.checked_add(len).and_then(|end| mem.get_mut(dst..end)) else {
        return false;
    };
    let val = val as u8;
    if val != 0 || len < RELEASE_MIN {
        region.fill(val);
        return true;
    }
    let base = mem.as_mut_ptr() as usize;
    let page = page_size();
    // The whole pages of the region that may be given back.
    let from = (base + dst.max(fresh_from)).next_multiple_of(page);
    let to = (base + dst + len) / page * page;
    if from >= to {
        mem[dst..dst + len].fill(0);
        return true;
    }
    let (head, tail) = (from - base, to - base);
    mem[dst..head].fill(0);
    mem[tail..dst + len].fill(0);
    clear_pages(&mut mem[head..tail], page);
    true
}

/// Zero `pages` (page-aligned, whole pages): write the resident ones, give the others back.
fn clear_pages(pages: &mut [u8], page: usize) {
    #[cfg(target_os = "linux")]
    {
        let n = pages.len() / page;
        let mut resident = vec![0u8; n];
        // SAFETY: `pages` is page-aligned mapped memory we hold exclusively; `resident` has one
        // byte per page.
        let ok = unsafe {
            libc::mincore(
                pages.as_mut_ptr().cast(),
                pages.len(),
                resident.as_mut_ptr(),
            )
        } == 0;
        if ok {
            let mut i = 0;
            while i < n {
                let in_core = resident[i] & 1;
                let mut j = i + 1;
                while j < n && resident[j] & 1 == in_core {
                    j += 1;
                }
                let run = &mut pages[i * page..j * page];
                if in_core == 1
                    // SAFETY: private anonymous memory (above the module's image) that we hold
                    // exclusively: after MADV_DONTNEED it reads as zeros, which is the fill.
                    || unsafe {
                        libc::madvise(run.as_mut_ptr().cast(), run.len(), libc::MADV_DONTNEED)
                    } != 0
                {
                    run.fill(0);
                }
                i = j;
            }
            return;
        }
    }
    let _ = page;
    pages.fill(0);
}

/// Copies of at least this many bytes make their destination present first ([`populate`]):
/// a 64 MiB `fs` read or write copies into fresh memory on each side (RATIONALE.md, "Why do
/// large copies make their destination present first?").
pub(crate) const POPULATE_MIN: usize = 1 << 20;

/// Make the whole pages of `bytes` (memory about to be written whole) present with one call
/// instead of one page fault per page. Only a hint: without `MADV_POPULATE_WRITE` (Linux
/// 5.14) the writes fault the pages in as before.
pub(crate) fn populate(bytes: &mut [u8]) {
    populate_uninit(bytes.as_mut_ptr().cast(), bytes.len());
}

/// [`populate`] for a vector's spare capacity (about to be written).
pub(crate) fn populate_spare(v: &mut Vec<u8>) {
    let spare = v.spare_capacity_mut();
    populate_uninit(spare.as_mut_ptr(), spare.len());
}

fn populate_uninit(ptr: *mut std::mem::MaybeUninit<u8>, len: usize) {
    let page = page_size();
    let start = ptr as usize;
    let head = start.next_multiple_of(page) - start;
    let tail = (start + len) / page * page;
    if start + head >= tail {
        return;
    }
    // SAFETY: whole pages inside the `len` bytes at `ptr`, memory this process owns and is
    // about to overwrite completely; populating them changes no byte.
    let _ = unsafe {
        rustix::mm::madvise(
            ptr.add(head).cast(),
            tail - start - head,
            rustix::mm::Advice::LinuxPopulateWrite,
        )
    };
}

fn page_size() -> usize {
    #[cfg(unix)]
    {
        // SAFETY: sysconf has no preconditions.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if n > 0 {
            return n as usize;
        }
    }
    4096
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Populating changes no byte, inside the range or around it, whatever the alignment, and
    /// a range without a whole page is left alone.
    #[test]
    fn populating_changes_no_byte() {
        let mut v: Vec<u8> = (0..(3 << 20) + 123).map(|i| (i * 7 % 251) as u8).collect();
        let before = v.clone();
        populate(&mut v[17..(2 << 20) + 5]);
        populate(&mut v[100..200]);
        populate(&mut []);
        assert!(v == before);
        // Fresh memory reads as zeros after it too.
        let mut z = vec![0u8; 4 << 20];
        populate(&mut z[1..]);
        assert!(z.iter().all(|&b| b == 0));
        // A vector's spare room: its contents and length stay, and it fills as usual.
        let mut w = Vec::with_capacity(3 << 20);
        w.extend_from_slice(&before[..5000]);
        populate_spare(&mut w);
        assert_eq!(w.len(), 5000);
        w.extend_from_slice(&before[5000..]);
        assert!(w == before);
    }

    /// An anonymous mapping, as wasmtime makes guest memory.
    struct Mapping(&'static mut [u8]);

    impl Mapping {
        fn new(len: usize) -> Mapping {
            // SAFETY: a fresh private anonymous mapping, unmapped in drop.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            // SAFETY: just mapped, `len` bytes, ours alone.
            Mapping(unsafe { std::slice::from_raw_parts_mut(p.cast(), len) })
        }
    }

    impl Drop for Mapping {
        fn drop(&mut self) {
            // SAFETY: the mapping made in `new`.
            unsafe { libc::munmap(self.0.as_mut_ptr().cast(), self.0.len()) };
        }
    }

    #[test]
    fn byte_loops_answer_as_go_s() {
        let mut mem = vec![0u8; 4096];
        for i in 0..1000 {
            mem[i] = (i % 251) as u8;
            mem[1000 + i] = (i % 251) as u8;
        }
        assert_eq!(memcmp(&mem, 0, 1000, 1000), Some(0));
        mem[1700] = 3;
        // A difference past the first chunks: 700 % 251 - 3.
        assert_eq!(memcmp(&mem, 0, 1000, 1000), Some(195));
        assert_eq!(memcmp(&mem, 1000, 0, 1000), Some(-195));
        assert_eq!(memcmp(&mem, 0, 1000, 0), Some(0));
        assert_eq!(memeqbody(&mem, 0, 1000, 700), Some(1));
        assert_eq!(memeqbody(&mem, 0, 1000, 701), Some(0));
        assert_eq!(memeqbody(&mem, 5000, 5000, u64::MAX), Some(1));
        assert_eq!(memchr(&mem, 0, 250, 1000), Some(250));
        assert_eq!(memchr(&mem, 0, 250 + 256, 1000), Some(250));
        assert_eq!(memchr(&mem, 1, 0, 1000), Some(251));
        // Past the end of memory: a difference (or the byte) found before it answers; none
        // found is a trap.
        assert_eq!(memcmp(&mem, 4000, 4001, 200), None);
        assert_eq!(memcmp(&mem, 4000, 100, 200), Some(-100));
        assert_eq!(memeqbody(&mem, 4000, 4001, 200), None);
        assert_eq!(memeqbody(&mem, 4000, 100, 200), Some(0));
        assert_eq!(memchr(&mem, 4000, 9, 200), None);
        assert_eq!(memchr(&mem, 4000, 0, 200), Some(4000));
        assert_eq!(memchr(&mem, 9000, 0, 1), None);
        // Nothing to read, nothing to trap on.
        assert_eq!(memcmp(&mem, 9000, 9001, 0), Some(0));
        assert_eq!(memeqbody(&mem, 9000, 9001, 0), Some(1));
        assert_eq!(memchr(&mem, 9000, 0, 0), Some(0));
        assert_eq!(memcmp(&mem, 100, 9001, 1), None);
        assert_eq!(memeqbody(&mem, 100, 9001, 1), None);
    }

    #[test]
    fn fills_like_memory_fill() {
        let len = 8 << 20;
        let m = Mapping::new(len);
        // Some pages written (resident), some never touched.
        for (i, b) in m.0.iter_mut().enumerate().step_by(3 * 4096) {
            *b = (i % 251) as u8 | 1;
        }
        m.0[len - 1] = 9;
        // A zero fill of an unaligned range that leaves bytes on both sides alone.
        let (dst, n) = (4096 * 3 + 17, len - 4096 * 5 - 40);
        assert!(fill(m.0, 0, dst as u32, 0, n as u32));
        assert!(m.0[..dst].iter().step_by(3 * 4096).all(|&b| b != 0));
        assert!(m.0[dst..dst + n].iter().all(|&b| b == 0));
        assert_eq!(m.0[len - 1], 9);
        // A non-zero fill, and a small one.
        assert!(fill(m.0, 0, 100, 0xab, 3 << 20));
        assert!(m.0[100..100 + (3 << 20)].iter().all(|&b| b == 0xab));
        assert!(fill(m.0, 0, 200, 0, 10));
        assert!(m.0[200..210].iter().all(|&b| b == 0));
        assert_eq!((m.0[199], m.0[210]), (0xab, 0xab));
    }

    #[test]
    fn memory_below_fresh_from_is_written_not_given_back() {
        let len = 4 << 20;
        let m = Mapping::new(len);
        m.0.fill(7);
        assert!(fill(m.0, 2 << 20, 0, 0, len as u32));
        assert!(m.0.iter().all(|&b| b == 0));
    }

    #[test]
    fn out_of_bounds_fills_fail_and_change_nothing() {
        let m = Mapping::new(2 << 20);
        m.0.fill(1);
        assert!(!fill(m.0, 0, (2 << 20) - 10, 0, 11));
        assert!(!fill(m.0, 0, u32::MAX, 0, u32::MAX));
        assert!(m.0.iter().all(|&b| b == 1));
        // A fill that ends exactly at the end is fine, as is an empty one there.
        assert!(fill(m.0, 0, (2 << 20) - 10, 0, 10));
        assert!(fill(m.0, 0, 2 << 20, 0, 0));
    }
}
