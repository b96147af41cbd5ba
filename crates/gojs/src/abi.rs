//! The Go js/wasm calling convention: the one place that knows the Go stack layout.
//!
//! Every import is `(func (param i32))`; the argument is Go's stack pointer `sp`. Arguments start
//! at `sp + 8` in 8-byte slots and results follow them. A Go string is `(ptr, len)`, a slice
//! `(ptr, len, cap)`, a `js.ref` a float64 that NaN-boxes an id (see [`Ref`]).
//!
//! Reading and writing go through [`Memory`], which bounds-checks every access and names the
//! import and address in its error, so a wild pointer from the guest becomes a trap with context
//! instead of a host panic.

use std::fmt;

/// High word of a NaN-boxed reference (before the type flag is or-ed in).
const NAN_HEAD: u32 = 0x7FF8_0000;

/// Offset where `run(argc, argv)` expects the argument strings; `wasm_exec.js` uses 4096.
pub(crate) const ARGV_START: usize = 4096;
/// The Go linker places global data at or above this address (`cmd/link`'s `wasmMinDataAddr`).
pub(crate) const WASM_MIN_DATA_ADDR: usize = 4096 + 8192;

/// A guest memory access that fell outside linear memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutOfBounds {
    pub addr: u64,
    pub len: u64,
    pub mem_size: usize,
}

impl fmt::Display for OutOfBounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "out-of-bounds guest memory access: {} bytes at {:#x} (memory is {:#x} bytes)",
            self.len, self.addr, self.mem_size
        )
    }
}

impl std::error::Error for OutOfBounds {}

/// Bounds-checked little-endian access to a snapshot of guest linear memory.
pub(crate) struct Memory<'a>(pub &'a mut [u8]);

impl Memory<'_> {
    fn range(&self, addr: u64, len: u64) -> Result<std::ops::Range<usize>, OutOfBounds> {
        let oob = || OutOfBounds {
            addr,
            len,
            mem_size: self.0.len(),
        };
        let end = addr.checked_add(len).ok_or_else(oob)?;
        if end > self.0.len() as u64 {
            return Err(oob());
        }
        Ok(addr as usize..end as usize)
    }

    pub fn bytes(&self, addr: u64, len: u64) -> Result<&[u8], OutOfBounds> {
        let r = self.range(addr, len)?;
        Ok(&self.0[r])
    }

    pub fn bytes_mut(&mut self, addr: u64, len: u64) -> Result<&mut [u8], OutOfBounds> {
        let r = self.range(addr, len)?;
        Ok(&mut self.0[r])
    }

    fn array<const N: usize>(&self, addr: u64) -> Result<[u8; N], OutOfBounds> {
        let b = self.bytes(addr, N as u64)?;
        let mut out = [0; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    pub fn u32(&self, addr: u64) -> Result<u32, OutOfBounds> {
        self.array(addr).map(u32::from_le_bytes)
    }
    pub fn i32(&self, addr: u64) -> Result<i32, OutOfBounds> {
        self.array(addr).map(i32::from_le_bytes)
    }
    pub fn i64(&self, addr: u64) -> Result<i64, OutOfBounds> {
        self.array(addr).map(i64::from_le_bytes)
    }
    pub fn u64(&self, addr: u64) -> Result<u64, OutOfBounds> {
        self.array(addr).map(u64::from_le_bytes)
    }

    pub fn set_u8(&mut self, addr: u64, v: u8) -> Result<(), OutOfBounds> {
        self.bytes_mut(addr, 1)?[0] = v;
        Ok(())
    }
    pub fn set_i32(&mut self, addr: u64, v: i32) -> Result<(), OutOfBounds> {
        self.bytes_mut(addr, 4)?.copy_from_slice(&v.to_le_bytes());
        Ok(())
    }
    pub fn set_i64(&mut self, addr: u64, v: i64) -> Result<(), OutOfBounds> {
        self.bytes_mut(addr, 8)?.copy_from_slice(&v.to_le_bytes());
        Ok(())
    }
    pub fn set_u64(&mut self, addr: u64, v: u64) -> Result<(), OutOfBounds> {
        self.bytes_mut(addr, 8)?.copy_from_slice(&v.to_le_bytes());
        Ok(())
    }
}

/// The argument frame of one import call: typed readers and writers at `sp + offset`.
///
/// Offsets are the byte offsets `wasm_exec.js` uses (`sp + 8` is the first argument).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Frame {
    pub sp: u32,
}

/// A Go string or byte slice header: where its bytes are in guest memory.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GuestSlice {
    pub ptr: u64,
    pub len: u64,
}

impl Frame {
    fn at(&self, off: u32) -> u64 {
        u64::from(self.sp) + u64::from(off)
    }
    pub fn i32(&self, m: &Memory, off: u32) -> Result<i32, OutOfBounds> {
        m.i32(self.at(off))
    }
    pub fn i64(&self, m: &Memory, off: u32) -> Result<i64, OutOfBounds> {
        m.i64(self.at(off))
    }
    /// A `js.ref` argument.
    pub fn r#ref(&self, m: &Memory, off: u32) -> Result<Ref, OutOfBounds> {
        m.u64(self.at(off)).map(Ref)
    }
    /// The id inside a `js.ref` argument (`finalizeRef` passes the boxed ref; its low word is the id).
    pub fn u32(&self, m: &Memory, off: u32) -> Result<u32, OutOfBounds> {
        m.u32(self.at(off))
    }
    /// A string or slice header `(ptr, len)` (a slice's `cap` follows and is ignored).
    pub fn slice(&self, m: &Memory, off: u32) -> Result<GuestSlice, OutOfBounds> {
        // wasm_exec.js reads 64-bit values as `low + high * 2^32`; Go never passes negative ones.
        Ok(GuestSlice {
            ptr: m.u64(self.at(off))?,
            len: m.u64(self.at(off + 8))?,
        })
    }
    /// The bytes of a string or slice argument, copied out of guest memory.
    pub fn bytes(&self, m: &Memory, off: u32) -> Result<Vec<u8>, OutOfBounds> {
        let s = self.slice(m, off)?;
        m.bytes(s.ptr, s.len).map(<[u8]>::to_vec)
    }
    /// The `[]ref` argument at `off`, decoded.
    pub fn refs<'m>(
        &self,
        m: &'m Memory,
        off: u32,
    ) -> Result<impl ExactSizeIterator<Item = Ref> + 'm, OutOfBounds> {
        let s = self.slice(m, off)?;
        let len = s.len.checked_mul(8).ok_or(OutOfBounds {
            addr: s.ptr,
            len: s.len,
            mem_size: m.0.len(),
        })?;
        let raw = m.bytes(s.ptr, len)?;
        Ok(raw
            .chunks_exact(8)
            .map(|c| Ref(u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))))
    }
    pub fn set_u8(&self, m: &mut Memory, off: u32, v: u8) -> Result<(), OutOfBounds> {
        m.set_u8(self.at(off), v)
    }
    pub fn set_i32(&self, m: &mut Memory, off: u32, v: i32) -> Result<(), OutOfBounds> {
        m.set_i32(self.at(off), v)
    }
    pub fn set_i64(&self, m: &mut Memory, off: u32, v: i64) -> Result<(), OutOfBounds> {
        m.set_i64(self.at(off), v)
    }
    pub fn set_ref(&self, m: &mut Memory, off: u32, v: Ref) -> Result<(), OutOfBounds> {
        m.set_u64(self.at(off), v.0)
    }
}

/// The type flag in a boxed reference's high word, as `wasm_exec.js` assigns it from `typeof`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum TypeFlag {
    None = 0,
    Object = 1,
    String = 2,
    Symbol = 3,
    Function = 4,
}

/// A `js.ref`: 64 bits that are either an inline float64 or a NaN-boxed `(flag, id)`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ref(pub u64);

/// What a [`Ref`] denotes before the values table is consulted.
#[derive(Debug, PartialEq)]
pub(crate) enum Decoded {
    Undefined,
    Number(f64),
    Id(u32),
}

impl Ref {
    /// The encoding of `undefined`: all-zero bits.
    pub const UNDEFINED: Ref = Ref(0);

    /// Box an id from the values table.
    pub fn boxed(flag: TypeFlag, id: u32) -> Ref {
        Ref((u64::from(NAN_HEAD | flag as u32) << 32) | u64::from(id))
    }

    /// Encode a number the way `storeValue` does. Returns `None` for `0` and `NaN`, which live in
    /// the values table (ids 1 and 0) and must go through it.
    pub fn number(v: f64) -> Option<Ref> {
        (v != 0.0 && !v.is_nan()).then(|| Ref(v.to_bits()))
    }

    /// Decode as `loadValue` does: `0` (either sign) is undefined, a non-NaN is a number, a NaN
    /// carries an id in its low word.
    pub fn decode(self) -> Decoded {
        let f = f64::from_bits(self.0);
        if f == 0.0 {
            Decoded::Undefined
        } else if !f.is_nan() {
            Decoded::Number(f)
        } else {
            Decoded::Id(self.0 as u32)
        }
    }
}

impl fmt::Debug for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ref({:#018x} = {:?})", self.0, self.decode())
    }
}

/// The argv/env block `run(argc, argv)` expects, laid out as `wasm_exec.js` does.
#[derive(Debug)]
pub(crate) struct ArgvBlock {
    /// Bytes to copy to guest memory at [`ARGV_START`].
    pub bytes: Vec<u8>,
    pub argc: i32,
    /// Guest address of the pointer array.
    pub argv: i32,
}

/// The command line and environment don't fit below the Go data segment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("total length of command line and environment variables exceeds limit")]
pub struct ArgsTooLong;

/// Lay out `args` and `env` (already `KEY=VALUE`, sorted by key) from [`ARGV_START`]:
/// NUL-terminated strings each padded to 8 bytes, then 8-byte pointers `argv…, 0, env…, 0`.
/// Everything must end below [`WASM_MIN_DATA_ADDR`].
pub(crate) fn argv_block(args: &[String], env: &[String]) -> Result<ArgvBlock, ArgsTooLong> {
    let limit = WASM_MIN_DATA_ADDR - ARGV_START;
    let mut bytes = Vec::new();
    let mut ptrs: Vec<u64> = Vec::new();
    let push_str = |bytes: &mut Vec<u8>, s: &str| -> Result<u64, ArgsTooLong> {
        if bytes.len() + s.len() >= limit {
            return Err(ArgsTooLong);
        }
        let ptr = (ARGV_START + bytes.len()) as u64;
        bytes.extend_from_slice(s.as_bytes());
        bytes.push(0);
        bytes.resize(bytes.len().next_multiple_of(8), 0);
        Ok(ptr)
    };
    for a in args {
        ptrs.push(push_str(&mut bytes, a)?);
    }
    ptrs.push(0);
    for e in env {
        ptrs.push(push_str(&mut bytes, e)?);
    }
    ptrs.push(0);
    let argv = ARGV_START + bytes.len();
    for p in &ptrs {
        bytes.extend_from_slice(&p.to_le_bytes());
    }
    if ARGV_START + bytes.len() >= WASM_MIN_DATA_ADDR {
        return Err(ArgsTooLong);
    }
    Ok(ArgvBlock {
        bytes,
        argc: args.len() as i32,
        argv: argv as i32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_decode_like_wasm_exec() {
        assert_eq!(Ref::UNDEFINED.decode(), Decoded::Undefined);
        assert_eq!(Ref((-0.0f64).to_bits()).decode(), Decoded::Undefined);
        assert_eq!(Ref(1.5f64.to_bits()).decode(), Decoded::Number(1.5));
        assert_eq!(Ref::boxed(TypeFlag::String, 42).decode(), Decoded::Id(42));
        assert_eq!(Ref::boxed(TypeFlag::Function, 7).0 >> 32, 0x7FF8_0004);
        assert_eq!(Ref::number(0.0), None);
        assert_eq!(Ref::number(f64::NAN), None);
    }

    #[test]
    fn argv_layout_matches_wasm_exec() {
        let b = argv_block(&["js".into(), "a".into()], &["K=V".into()]).unwrap();
        assert_eq!(b.argc, 2);
        // "js\0" padded to 8, "a\0" padded to 8, "K=V\0" padded to 8, then 5 pointers.
        assert_eq!(b.argv as usize, ARGV_START + 24);
        assert_eq!(&b.bytes[..3], b"js\0");
        let ptr =
            |i: usize| u64::from_le_bytes(b.bytes[24 + 8 * i..32 + 8 * i].try_into().unwrap());
        assert_eq!(
            [ptr(0), ptr(1), ptr(2), ptr(3), ptr(4)],
            [4096, 4104, 0, 4112, 0]
        );
    }

    #[test]
    fn argv_limit() {
        let big = "x".repeat(9000);
        assert_eq!(argv_block(&[big], &[]).unwrap_err(), ArgsTooLong);
        let many: Vec<String> = (0..1000).map(|i| format!("{i}")).collect();
        assert_eq!(argv_block(&many, &[]).unwrap_err(), ArgsTooLong);
    }

    #[test]
    fn memory_bounds() {
        let mut buf = vec![0u8; 16];
        let mut m = Memory(&mut buf);
        assert!(m.u64(8).is_ok());
        assert!(m.u64(9).is_err());
        assert!(m.bytes(u64::MAX, 2).is_err());
        assert!(m.set_i64(12, 1).is_err());
    }
}
