//! The JavaScript realm: an embedded QuickJS runtime holding every JS value Go sees.
//!
//! The realm lives on the guest thread for the instance's whole life. Values are kept as
//! `Value<'static>`: the `'js` brand is erased because the wasm store (which must be `'static`)
//! holds them. That is sound because (a) everything runs on the one guest thread, and
//! (b) [`JsEngine`] outlives every value: the instance drops its store (and clears the host's
//! timers and tables) before the engine.

use rquickjs::{Context, Ctx, Function, Object, Runtime, Value, qjs};
use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// A JS value usable from the store (see the module docs for why `'static`).
pub(crate) type JsValue = Value<'static>;
pub(crate) type JsCtx = Ctx<'static>;

/// Native stack QuickJS may use before throwing `RangeError` (see [`crate::instance`]).
pub(crate) const JS_MAX_STACK: usize = 224 << 20;

/// The QuickJS runtime and context. Must be dropped after every [`JsValue`].
pub(crate) struct JsEngine {
    // Field order is drop order: context before runtime.
    context: Context,
    _pins: ArenaPins,
    runtime: Runtime,
}

/// One block held in each of QuickJS's small-block size classes for the runtime's life.
///
/// QuickJS serves allocations up to 512 bytes from 4 KiB arenas, one list per size class, and
/// frees an arena the moment its last block is freed; the next allocation of that class then
/// makes a new one, threading a free list through every block of it (up to 255). A bridge loop
/// that makes and drops one short-lived string or object of a class no live value shares paid
/// that on every call (`JSON.stringify` through `Call`: 7% of the loop). A block held in each
/// class keeps its first arena alive.
struct ArenaPins {
    rt: *mut qjs::JSRuntime,
    blocks: Vec<*mut std::ffi::c_void>,
}

/// The block sizes of QuickJS's size classes (its `arena_block_sizes`), headers included.
const ARENA_BLOCK_SIZES: [usize; 31] = [
    16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104, 112, 120, 128, 144, 160, 176, 192, 208, 224,
    240, 256, 288, 320, 352, 384, 416, 448, 480, 512,
];
/// QuickJS's header before each block it hands out.
const ARENA_BLOCK_HEADER: usize = 8;

impl ArenaPins {
    fn new(context: &Context) -> ArenaPins {
        // SAFETY: the context's live runtime; each block is freed once, in `drop`, before the
        // runtime is.
        let rt = unsafe { qjs::JS_GetRuntime(context.as_raw().as_ptr()) };
        let blocks = ARENA_BLOCK_SIZES
            .iter()
            .map(|&size| unsafe {
                qjs::js_malloc_rt(rt, (size - ARENA_BLOCK_HEADER) as qjs::size_t)
            })
            .filter(|b| !b.is_null())
            .collect();
        ArenaPins { rt, blocks }
    }
}

impl Drop for ArenaPins {
    fn drop(&mut self) {
        for &b in &self.blocks {
            // SAFETY: allocated from this runtime in `new`, freed once.
            unsafe { qjs::js_free_rt(self.rt, b) };
        }
    }
}

/// QuickJS's allocator (RATIONALE.md, "Why does QuickJS allocate through Rust's allocator?").
/// Blocks under [`JS_LARGE`] come from Rust's global allocator (mimalloc in gojs's binaries):
/// QuickJS makes and frees arenas of small objects constantly, and glibc's per-thread heap grew
/// and shrank with them, one `mprotect` each. Larger blocks (typed arrays' buffers, mostly) come
/// from the C library, which maps each on its own and unmaps it when freed, so a program that
/// reads a big file holds no freed buffer in its resident memory. Sizes no allocation can have
/// get a null pointer, as from `malloc`.
struct JsAllocator {
    /// The guest's memory limit, if it has one: every block counts against it.
    budget: Option<Arc<MemoryBudget>>,
}

/// The JS heap's size without a memory limit ([`crate::Config::max_memory`]): as much as a
/// wasm32 guest's linear memory can be, so that nothing a guest does grows the host without
/// bound (RATIONALE.md, "Why a memory limit, and what does it count?").
pub(crate) const JS_HEAP_MAX: usize = 4 << 30;

/// The memory a guest with a limit ([`crate::Config::max_memory`]) holds: its JS heap (the
/// blocks [`JsAllocator`] hands QuickJS, with their headers) and its linear memory (what the
/// store's limiter last let it grow to). Either fails to grow past `limit` together.
/// It refuses nothing until [`MemoryBudget::arm`]ed: the realm is made before (QuickJS and
/// rquickjs don't all survive an allocation failing while they set up), then checked.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    limit: usize,
    js: AtomicUsize,
    wasm: AtomicUsize,
    armed: std::sync::atomic::AtomicBool,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit,
            js: AtomicUsize::new(0),
            wasm: AtomicUsize::new(0),
            armed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// From now on, refuse what would pass the limit.
    pub fn arm(&self) {
        self.armed.store(true, Relaxed);
    }

    /// Count `n` more bytes of JS heap, unless that would pass the limit. (One thread runs a
    /// guest: its JS and its memory's growth; the atomics are for the limiter's `Send`.)
    fn take_js(&self, n: usize) -> bool {
        let js = self.js.load(Relaxed).saturating_add(n);
        if js.saturating_add(self.wasm.load(Relaxed)) > self.limit && self.armed.load(Relaxed) {
            return false;
        }
        self.js.store(js, Relaxed);
        true
    }

    fn give_js(&self, n: usize) {
        self.js
            .store(self.js.load(Relaxed).saturating_sub(n), Relaxed);
    }

    /// Let linear memory grow to `desired` bytes, unless that would pass the limit.
    pub fn grow_wasm(&self, desired: usize) -> bool {
        if desired.saturating_add(self.js.load(Relaxed)) > self.limit && self.armed.load(Relaxed) {
            return false;
        }
        self.wasm.store(desired, Relaxed);
        true
    }

    /// Bytes of JS heap counted now.
    pub fn js(&self) -> usize {
        self.js.load(Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// No single allocation is larger.
const JS_ALLOC_MAX: usize = isize::MAX as usize / 2;
/// Blocks at least this big come from the C library.
const JS_LARGE: usize = 1 << 20;
/// Each block starts with its [`JsBlock`] header; the pointer QuickJS gets follows it, as
/// aligned as the block (16 bytes).
const JS_HEADER: usize = 16;

#[repr(C)]
struct JsBlock {
    size: usize,
    large: bool,
}

impl JsAllocator {
    fn small_layout(size: usize) -> Option<std::alloc::Layout> {
        std::alloc::Layout::from_size_align(size.checked_add(JS_HEADER)?, JS_HEADER).ok()
    }

    /// The block at `base` (null if allocation failed), with its header written.
    ///
    /// # Safety
    /// `base` is null or a new block of at least `JS_HEADER + size` bytes, 16-byte aligned.
    unsafe fn finish(base: *mut u8, size: usize, large: bool) -> *mut u8 {
        if base.is_null() {
            return base;
        }
        // SAFETY: the caller's contract.
        unsafe {
            base.cast::<JsBlock>().write(JsBlock { size, large });
            base.add(JS_HEADER)
        }
    }

    /// The header of a block this allocator returned.
    ///
    /// # Safety
    /// `ptr` came from this allocator and is live.
    unsafe fn block(ptr: *mut u8) -> (*mut u8, usize, bool) {
        // SAFETY: the header precedes every pointer handed out.
        unsafe {
            let base = ptr.sub(JS_HEADER);
            let b = base.cast::<JsBlock>().read();
            (base, b.size, b.large)
        }
    }

    /// Count `n` more bytes (a block's size and [`JS_HEADER`], or a growth) against the
    /// budget, if there is one.
    fn take(&self, n: usize) -> bool {
        self.budget.as_ref().is_none_or(|b| b.take_js(n))
    }

    fn give(&self, n: usize) {
        if let Some(b) = &self.budget {
            b.give_js(n);
        }
    }

    /// A new block, counted against the budget (null past it, or if allocation fails).
    fn allocate_counted(&self, size: usize, zeroed: bool) -> *mut u8 {
        if size > JS_ALLOC_MAX || !self.take(size + JS_HEADER) {
            return std::ptr::null_mut();
        }
        let p = Self::allocate(size, zeroed);
        if p.is_null() {
            self.give(size + JS_HEADER);
        }
        p
    }

    fn allocate(size: usize, zeroed: bool) -> *mut u8 {
        if size > JS_ALLOC_MAX {
            return std::ptr::null_mut();
        }
        #[cfg(test)]
        tests::BACKING_ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: each branch allocates `JS_HEADER + size` bytes, 16-byte aligned (glibc's
        // malloc aligns to 16 on 64-bit targets), or returns null.
        unsafe {
            if size >= JS_LARGE {
                let base = if zeroed {
                    libc::calloc(1, size + JS_HEADER)
                } else {
                    libc::malloc(size + JS_HEADER)
                };
                Self::finish(base.cast(), size, true)
            } else {
                let Some(layout) = Self::small_layout(size) else {
                    return std::ptr::null_mut();
                };
                let base = if zeroed {
                    std::alloc::alloc_zeroed(layout)
                } else {
                    std::alloc::alloc(layout)
                };
                Self::finish(base, size, false)
            }
        }
    }
}

// SAFETY: every block is allocated and freed here, by the allocator its header names.
unsafe impl rquickjs::allocator::Allocator for JsAllocator {
    fn alloc(&mut self, size: usize) -> *mut u8 {
        self.allocate_counted(size, false)
    }

    fn calloc(&mut self, count: usize, size: usize) -> *mut u8 {
        match count.checked_mul(size) {
            Some(n) => self.allocate_counted(n, true),
            None => std::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&mut self, ptr: *mut u8) {
        // SAFETY: `ptr` is live and ours (the trait's contract); its header says whose it is.
        unsafe {
            let (base, size, large) = Self::block(ptr);
            self.give(size + JS_HEADER);
            Self::free_block(base, size, large);
        }
    }

    unsafe fn realloc(&mut self, ptr: *mut u8, new_size: usize) -> *mut u8 {
        if new_size > JS_ALLOC_MAX {
            return std::ptr::null_mut();
        }
        // SAFETY: `ptr` is live and ours (the trait's contract). A failed reallocation leaves
        // it as it was.
        unsafe {
            let (base, size, large) = Self::block(ptr);
            // Growth counts first (given back if it fails); shrinking once done.
            let grows = new_size > size;
            if grows && !self.take(new_size - size) {
                return std::ptr::null_mut();
            }
            let q = Self::reallocate(ptr, base, size, large, new_size);
            match (q.is_null(), grows) {
                (true, true) => self.give(new_size - size),
                (false, false) => self.give(size - new_size),
                _ => {}
            }
            q
        }
    }

    unsafe fn usable_size(ptr: *mut u8) -> usize {
        // SAFETY: `ptr` is live and ours (the trait's contract).
        unsafe { Self::block(ptr).1 }
    }
}

impl JsAllocator {
    /// Free the block at `base` of `size` bytes (`large`: from the C library), not counted.
    ///
    /// # Safety
    /// `base` is a live block of this allocator, as [`JsAllocator::block`] read it.
    unsafe fn free_block(base: *mut u8, size: usize, large: bool) {
        // SAFETY: the caller's contract.
        unsafe {
            if large {
                libc::free(base.cast());
            } else if let Some(layout) = Self::small_layout(size) {
                std::alloc::dealloc(base, layout);
            }
        }
    }

    /// `realloc` of the block `ptr` (at `base`, of `size` bytes, `large` or not), not counted.
    ///
    /// # Safety
    /// `ptr` is a live block of this allocator, at `base`, as [`JsAllocator::block`] read it.
    unsafe fn reallocate(
        ptr: *mut u8,
        base: *mut u8,
        size: usize,
        large: bool,
        new_size: usize,
    ) -> *mut u8 {
        // SAFETY: the caller's contract.
        unsafe {
            match (large, new_size >= JS_LARGE) {
                (true, true) => {
                    let nb = libc::realloc(base.cast(), new_size + JS_HEADER);
                    Self::finish(nb.cast(), new_size, true)
                }
                (false, false) => match Self::small_layout(size) {
                    Some(layout) => {
                        let nb = std::alloc::realloc(base, layout, new_size + JS_HEADER);
                        Self::finish(nb, new_size, false)
                    }
                    None => std::ptr::null_mut(),
                },
                // Crossing the line: a block from the other allocator.
                _ => {
                    let q = Self::allocate(new_size, false);
                    if !q.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, q, size.min(new_size));
                        Self::free_block(base, size, large);
                    }
                    q
                }
            }
        }
    }
}

impl JsEngine {
    /// A realm without a memory limit (its heap still stops at [`JS_HEAP_MAX`]).
    #[cfg(test)]
    pub fn new() -> rquickjs::Result<Self> {
        Self::with_budget(None)
    }

    /// A realm whose heap counts against `budget`, or, without one, stops at [`JS_HEAP_MAX`].
    /// Past either, allocations fail: QuickJS throws an out-of-memory `InternalError`.
    pub fn with_budget(budget: Option<Arc<MemoryBudget>>) -> rquickjs::Result<Self> {
        let unlimited = budget.is_none();
        let runtime = Runtime::new_with_alloc(JsAllocator { budget })?;
        if unlimited {
            runtime.set_memory_limit(JS_HEAP_MAX);
        }
        runtime.set_max_stack_size(JS_MAX_STACK);
        let context = Context::full(&runtime)?;
        let pins = ArenaPins::new(&context);
        Ok(JsEngine {
            context,
            _pins: pins,
            runtime,
        })
    }

    /// A context handle with the brand erased.
    pub fn ctx(&self) -> JsCtx {
        // SAFETY: see the module docs; the returned Ctx dups the context and is only used on this
        // thread while `self` is alive.
        unsafe { Ctx::from_raw(self.context.as_raw()) }
    }

    /// Report promise rejections: `on_change(promise identity, reason, handled)`.
    pub fn track_rejections(&self, on_change: impl Fn(usize, &JsValue, bool) + 'static) {
        self.runtime
            .set_host_promise_rejection_tracker(Some(Box::new(
                move |_ctx, promise, reason, handled| {
                    let id = unsafe { qjs::JS_VALUE_GET_PTR(promise.as_raw()) as usize };
                    // SAFETY: the reason is only read during this call, on the realm's thread.
                    let reason: JsValue =
                        unsafe { std::mem::transmute::<Value<'_>, JsValue>(reason) };
                    on_change(id, &reason, handled);
                },
            )));
    }

    /// Run the garbage collector (after the host dropped its values, before teardown).
    pub fn collect(&self) {
        let ctx = self.ctx();
        unsafe { qjs::JS_RunGC(qjs::JS_GetRuntime(ctx.as_raw().as_ptr())) };
    }
}

fn raw_ctx(ctx: &JsCtx) -> *mut qjs::JSContext {
    ctx.as_raw().as_ptr()
}

/// Run every pending promise job (microtask). Returns an uncaught job error, if one threw.
pub(crate) fn drain_microtasks(ctx: &JsCtx) -> Option<JsValue> {
    loop {
        let mut job_ctx: *mut qjs::JSContext = std::ptr::null_mut();
        let rt = unsafe { qjs::JS_GetRuntime(raw_ctx(ctx)) };
        let r = unsafe { qjs::JS_ExecutePendingJob(rt, &mut job_ctx) };
        if r == 0 {
            return None;
        }
        if r < 0 {
            return Some(ctx.catch());
        }
    }
}

/// How far the JS heap may grow past its live size before QuickJS's cycle collector runs.
///
/// QuickJS collects when its heap reaches 1.5× the size it had after the last collection — with
/// a realm of ~1 MiB, every ~0.5 MiB. Go holds the JS objects it was given until its own
/// finalizers release them, so in a busy bridge loop (a `js.FuncOf` event and its arguments per
/// call) those collections walk the whole realm and free nothing: 7% of a round trip's host
/// instructions. Leaving at least this much headroom makes them rare (see [`GcSlack`]).
const GC_SLACK: usize = 8 << 20;

/// After a collection that freed less than 1/[`GC_FUTILE`] of the heap, the next waits until
/// the heap is [`GC_FUTILE_GROWTH`] times its live size instead of QuickJS's 1.5
/// (RATIONALE.md, "Why does the JS heap grow further after a futile collection?").
const GC_FUTILE: usize = 4;
const GC_FUTILE_GROWTH: usize = 3;

/// Keeps [`GC_SLACK`] of headroom above the live JS heap, and more after futile collections,
/// checked every [`GcSlack::EVERY`] entries into JS (a check is two calls into QuickJS; between
/// two checks the heap can grow by no more than that many bridge calls' worth of objects).
#[derive(Default)]
pub(crate) struct GcSlack {
    /// The threshold set last time: a different one means QuickJS collected since and computed
    /// a new threshold (1.5× the live size).
    last: std::cell::Cell<usize>,
    countdown: std::cell::Cell<u32>,
}

impl GcSlack {
    const EVERY: u32 = 64;

    /// Count one entry into JS; every [`GcSlack::EVERY`]th, restore the headroom if QuickJS
    /// collected since the last check.
    pub fn tick(&self, ctx: &JsCtx) {
        let n = self.countdown.get();
        if n > 0 {
            self.countdown.set(n - 1);
            return;
        }
        self.countdown.set(Self::EVERY - 1);
        // SAFETY: reading and setting a number on the live runtime of this context.
        unsafe {
            let rt = qjs::JS_GetRuntime(raw_ctx(ctx));
            let t = qjs::JS_GetGCThreshold(rt) as usize;
            if t == self.last.get() {
                return;
            }
            let wanted = next_gc_threshold(self.last.get(), t);
            qjs::JS_SetGCThreshold(rt, wanted as qjs::size_t);
            self.last.set(wanted);
        }
    }
}

/// The threshold to set after QuickJS collected at about `before` bytes (the threshold set
/// last, 0 at first) and set `t` (1.5× the heap it left).
fn next_gc_threshold(before: usize, t: usize) -> usize {
    let live = t / 3 * 2;
    let wanted = t.max(live + GC_SLACK);
    // The collection freed next to nothing: the heap is the objects Go holds, which only its
    // finalizers release, so collecting at 1.5× would walk them all again for as little.
    if before.saturating_sub(live) < before / GC_FUTILE {
        wanted.max(live.saturating_mul(GC_FUTILE_GROWTH))
    } else {
        wanted
    }
}

/// The bytes of a JS string as QuickJS stores them, in WTF-8 (lone surrogates kept as 3-byte
/// sequences): the identity key for strings.
pub(crate) fn wtf8(v: &JsValue) -> Vec<u8> {
    with_wtf8(v, <[u8]>::to_vec)
}

/// Call `f` with [`wtf8`]'s bytes, borrowed: for an ASCII string, QuickJS's own buffer.
pub(crate) fn with_wtf8<R>(v: &JsValue, f: impl FnOnce(&[u8]) -> R) -> R {
    let ctx = v.ctx();
    let mut len: qjs::size_t = 0;
    let p = unsafe { qjs::JS_ToCStringLen2(raw_ctx(ctx), &mut len, v.as_raw(), false) };
    if p.is_null() {
        // Out of memory or a throwing toString: clear the exception, give an empty string.
        let _ = ctx.catch();
        return f(&[]);
    }
    // SAFETY: QuickJS returned `len` bytes at `p`, valid until `JS_FreeCString`; `f` can't run
    // JS (it gets no context), so nothing frees them meanwhile.
    let r = f(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len as usize) });
    unsafe { qjs::JS_FreeCString(raw_ctx(ctx), p) };
    r
}

/// `TextEncoder.encode(String(v))`: UTF-8, with lone surrogates replaced by U+FFFD.
/// `Err` carries the exception if `String(v)` threw.
pub(crate) fn to_utf8(v: &JsValue) -> Result<Vec<u8>, JsValue> {
    let ctx = v.ctx();
    let s = if v.is_string() {
        v.clone()
    } else {
        if v.is_symbol() {
            // String(symbol) is "Symbol(desc)"; JS_ToString throws for symbols.
            let desc: Option<String> = v
                .as_symbol()
                .and_then(|s| s.description().ok())
                .and_then(|d| d.as_string().and_then(|s| s.to_string().ok()));
            return Ok(format!("Symbol({})", desc.unwrap_or_default()).into_bytes());
        }
        let raw = unsafe { qjs::JS_ToString(raw_ctx(ctx), v.as_raw()) };
        let s = unsafe { Value::from_raw(ctx.clone(), raw) };
        if s.is_exception() {
            return Err(ctx.catch());
        }
        s
    };
    Ok(replace_surrogates(wtf8(&s)))
}

/// `String(v)` for display (host messages, console): never throws.
pub(crate) fn to_string_lossy(v: &JsValue) -> String {
    match to_utf8(v) {
        Ok(b) => String::from_utf8(b)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        Err(_) => "<value whose toString threw>".to_string(),
    }
}

/// Replace WTF-8 encoded surrogates (ED A0..BF xx) with U+FFFD, making valid UTF-8.
fn replace_surrogates(mut b: Vec<u8>) -> Vec<u8> {
    let has = b.windows(2).any(|w| w[0] == 0xED && w[1] >= 0xA0);
    if !has {
        return b;
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == 0xED && i + 2 < b.len() && b[i + 1] >= 0xA0 {
            out.extend_from_slice("\u{FFFD}".as_bytes());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    b.clear();
    out
}

/// A JS string from Go bytes, decoded as `TextDecoder` does (invalid UTF-8 becomes U+FFFD).
///
/// Like `TextDecoder` by default, a leading byte order mark is dropped.
pub(crate) fn string_from_go(ctx: &JsCtx, bytes: &[u8]) -> rquickjs::Result<JsValue> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let s: Cow<str> = String::from_utf8_lossy(bytes);
    Ok(rquickjs::String::from_str(ctx.clone(), &s)?.into_value())
}

/// A new `Uint8Array` holding a copy of `bytes`.
pub(crate) fn uint8_array(ctx: &JsCtx, bytes: &[u8]) -> Result<JsValue, JsValue> {
    let raw = unsafe { qjs::JS_NewUint8ArrayCopy(raw_ctx(ctx), bytes.as_ptr(), bytes.len() as _) };
    let v = unsafe { Value::from_raw(ctx.clone(), raw) };
    if v.is_exception() {
        Err(ctx.catch())
    } else {
        Ok(v)
    }
}

/// QuickJS's class ids of `Uint8Array` and `Uint8ClampedArray` (the same in every runtime of
/// this build), learned from the first of each seen; 0 until then.
static UINT8_CLASSES: [std::sync::atomic::AtomicU32; 2] = [
    std::sync::atomic::AtomicU32::new(0),
    std::sync::atomic::AtomicU32::new(0),
];

/// Whether `v` is a `Uint8Array` or `Uint8ClampedArray`: one look at its class id once the
/// class ids are known (`copyBytesTo*` ask this on every call).
#[inline]
fn is_uint8_array(v: qjs::JSValue) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    // SAFETY: reads the tag, and the class id of an object (JS_INVALID_CLASS_ID, 0, otherwise).
    let class = unsafe { qjs::JS_GetClassID(v) };
    if class == 0 {
        return false;
    }
    if class == UINT8_CLASSES[0].load(Relaxed) || class == UINT8_CLASSES[1].load(Relaxed) {
        return true;
    }
    // SAFETY: `v` is an object.
    let kind = unsafe { qjs::JS_GetTypedArrayType(v) };
    let Ok(kind) = u32::try_from(kind) else {
        return false;
    };
    let known = match kind {
        qjs::JSTypedArrayEnum_JS_TYPED_ARRAY_UINT8 => &UINT8_CLASSES[0],
        qjs::JSTypedArrayEnum_JS_TYPED_ARRAY_UINT8C => &UINT8_CLASSES[1],
        _ => return false,
    };
    known.store(class, Relaxed);
    true
}

/// The bytes of a `Uint8Array` or `Uint8ClampedArray` (what `instanceof Uint8Array ||
/// instanceof Uint8ClampedArray` accepts), or `None` for anything else.
///
/// `f` sees the engine's buffer in place; it must not run JS.
pub(crate) fn with_uint8_bytes<R>(v: &JsValue, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
    if !is_uint8_array(v.as_raw()) {
        return None;
    }
    let ctx = v.ctx();
    let mut size: qjs::size_t = 0;
    // SAFETY: `v` is a live Uint8Array of this context.
    let p = unsafe { qjs::JS_GetUint8Array(raw_ctx(ctx), &mut size, v.as_raw()) };
    if p.is_null() {
        // Detached or out of bounds (QuickJS threw): as `wasm_exec.js` sees it, no bytes.
        let _ = ctx.catch();
        return Some(f(&mut []));
    }
    // SAFETY: `v` holds its buffer; `f` runs no JS, so the buffer can't be detached or resized
    // meanwhile, and this is the only slice made from it.
    Some(f(unsafe {
        std::slice::from_raw_parts_mut(p, size as usize)
    }))
}

/// Call `f` with the bytes behind any typed array, or return `None` if `v` is not one. A detached
/// buffer gives an empty slice. `f` sees the engine's buffer in place; it must not run JS.
pub(crate) fn with_typed_array_bytes<R>(v: &JsValue, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
    if !v.is_object() || unsafe { qjs::JS_GetTypedArrayType(v.as_raw()) } < 0 {
        return None;
    }
    let ctx = v.ctx();
    let (mut off, mut len, mut elem): (qjs::size_t, qjs::size_t, qjs::size_t) = (0, 0, 0);
    let buf = unsafe {
        qjs::JS_GetTypedArrayBuffer(raw_ctx(ctx), v.as_raw(), &mut off, &mut len, &mut elem)
    };
    let buf = unsafe { Value::from_raw(ctx.clone(), buf) };
    if buf.is_exception() {
        let _ = ctx.catch();
        return None;
    }
    let mut size: qjs::size_t = 0;
    let p = unsafe { qjs::JS_GetArrayBuffer(raw_ctx(ctx), &mut size, buf.as_raw()) };
    let (off, len) = (off as usize, len as usize);
    if p.is_null() || off.checked_add(len).is_none_or(|end| end > size as usize) {
        let _ = ctx.catch();
        return Some(f(&mut []));
    }
    // SAFETY: `buf` keeps the buffer alive until we return; `f` runs no JS, so the buffer can't
    // be detached or resized meanwhile, and this is the only slice made from it.
    Some(f(unsafe {
        std::slice::from_raw_parts_mut(p.add(off), len)
    }))
}

/// Mark `err` uncatchable and throw it: JS `try`/`catch` can't swallow it, so it unwinds all
/// the JS frames back to the import that called into JS.
pub(crate) fn throw_uncatchable(ctx: &JsCtx, message: &str) -> rquickjs::Error {
    match rquickjs::Exception::from_message(ctx.clone(), message) {
        Ok(e) => {
            let v = e.into_value();
            unsafe { qjs::JS_SetUncatchableError(raw_ctx(ctx), v.as_raw()) };
            ctx.throw(v)
        }
        Err(e) => e,
    }
}

/// An `Error` with a Node-style `code` property (e.g. `ENOSYS`).
pub(crate) fn error_with_code(ctx: &JsCtx, message: &str, code: &str) -> rquickjs::Result<JsValue> {
    let e = rquickjs::Exception::from_message(ctx.clone(), message)?;
    e.set("code", code)?;
    Ok(e.into_value())
}

/// Cached `Reflect` functions: bridge operations with exactly `wasm_exec.js`'s semantics.
/// (`Reflect.apply`/`construct` and `Reflect.get` on objects are done directly: [`apply`],
/// [`construct`], [`get_property`].)
pub(crate) struct Reflect {
    pub get: Function<'static>,
    pub set: Function<'static>,
    pub delete_property: Function<'static>,
}

impl Reflect {
    pub fn new(ctx: &JsCtx) -> rquickjs::Result<Self> {
        let r: Object = ctx.globals().get("Reflect")?;
        Ok(Reflect {
            get: r.get("get")?,
            set: r.get("set")?,
            delete_property: r.get("deleteProperty")?,
        })
    }
}

/// Call `f` with a receiver and arguments; `Err` is the thrown value.
pub(crate) fn call(f: &JsValue, this: JsValue, args: Vec<JsValue>) -> Result<JsValue, JsValue> {
    apply(f, &this, &args)
}

/// Raw arguments for a call, on the stack for the usual few.
fn raw_args(args: &[JsValue], f: impl FnOnce(&mut [qjs::JSValue]) -> qjs::JSValue) -> qjs::JSValue {
    const INLINE: usize = 8;
    if args.len() <= INLINE {
        let mut raw = [qjs::JS_UNDEFINED; INLINE];
        for (r, a) in raw.iter_mut().zip(args) {
            *r = a.as_raw();
        }
        f(&mut raw[..args.len()])
    } else {
        let mut raw: Vec<qjs::JSValue> = args.iter().map(|a| a.as_raw()).collect();
        f(&mut raw)
    }
}

fn outcome(ctx: &JsCtx, r: qjs::JSValue) -> Result<JsValue, JsValue> {
    // SAFETY: `r` is a value QuickJS just returned to us, owned by the caller.
    let v = unsafe { Value::from_raw(ctx.clone(), r) };
    if v.is_exception() {
        Err(ctx.catch())
    } else {
        Ok(v)
    }
}

/// `f.apply(this, args)` without building an arguments array (what `Reflect.apply` does for an
/// array of arguments); `Err` is the thrown value (a `TypeError` if `f` isn't callable).
pub(crate) fn apply(f: &JsValue, this: &JsValue, args: &[JsValue]) -> Result<JsValue, JsValue> {
    let ctx = f.ctx();
    let r = raw_args(args, |raw| unsafe {
        // SAFETY: the raw values are borrowed from `args`, which outlive the call; QuickJS
        // dups what it keeps.
        qjs::JS_Call(
            raw_ctx(ctx),
            f.as_raw(),
            this.as_raw(),
            raw.len() as i32,
            raw.as_mut_ptr(),
        )
    });
    outcome(ctx, r)
}

/// A JS value held as a raw QuickJS value: one reference, freed on drop, and no handle on the
/// context. A [`JsValue`] also counts a reference to its context (taken and released per value,
/// ~100 instructions); the bridge's call imports use `Raw` for the values that live only while
/// the import runs, when the context is certainly alive.
pub(crate) struct Raw {
    ctx: *mut qjs::JSContext,
    v: qjs::JSValue,
}

impl Raw {
    /// A new reference to `v`.
    pub fn dup(v: &JsValue) -> Raw {
        let ctx = raw_ctx(v.ctx());
        // SAFETY: a live value of this context.
        Raw {
            ctx,
            v: unsafe { qjs::JS_DupValue(ctx, v.as_raw()) },
        }
    }

    /// A value QuickJS returned to us (owned), or the thrown value if it is the exception marker.
    fn outcome(ctx: *mut qjs::JSContext, v: qjs::JSValue) -> Result<Raw, Raw> {
        // SAFETY: reading the tag of a value; taking the pending exception of a live context.
        unsafe {
            if qjs::JS_VALUE_GET_NORM_TAG(v) == qjs::JS_TAG_EXCEPTION {
                Err(Raw {
                    ctx,
                    v: qjs::JS_GetException(ctx),
                })
            } else {
                Ok(Raw { ctx, v })
            }
        }
    }

    pub fn as_raw(&self) -> qjs::JSValue {
        self.v
    }

    pub fn is_object(&self) -> bool {
        // SAFETY: reading the tag.
        unsafe { qjs::JS_VALUE_GET_NORM_TAG(self.v) == qjs::JS_TAG_OBJECT }
    }

    /// `undefined`.
    pub fn undefined(ctx: &JsCtx) -> Raw {
        Raw {
            ctx: raw_ctx(ctx),
            v: qjs::JS_UNDEFINED,
        }
    }

    /// A number (an integer-valued one as QuickJS's integer, as [`Value::new_number`] does).
    pub fn number(ctx: &JsCtx, n: f64) -> Raw {
        Raw {
            ctx: raw_ctx(ctx),
            v: qjs::JS_NewFloat64(n),
        }
    }

    /// A new reference to this value as a [`JsValue`] of `ctx` (this value's context).
    pub fn to_value(&self, ctx: &JsCtx) -> JsValue {
        debug_assert_eq!(raw_ctx(ctx), self.ctx);
        // SAFETY: a live value of this context; the new reference goes to the new value.
        unsafe { Value::from_raw(ctx.clone(), qjs::JS_DupValue(self.ctx, self.v)) }
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        // SAFETY: we own one reference; the context outlives every import call (see `Raw`).
        unsafe { qjs::JS_FreeValue(self.ctx, self.v) }
    }
}

/// How many arguments [`RawArgs`] holds without allocating.
const INLINE_ARGS: usize = 8;

/// The arguments of a call as raw values, one reference each, on the stack for the usual few.
pub(crate) struct RawArgs {
    ctx: *mut qjs::JSContext,
    len: usize,
    inline: [qjs::JSValue; INLINE_ARGS],
    /// All of them, once there are more than fit inline.
    spill: Vec<qjs::JSValue>,
}

impl RawArgs {
    pub fn new(ctx: &JsCtx) -> RawArgs {
        RawArgs {
            ctx: raw_ctx(ctx),
            len: 0,
            inline: [qjs::JS_UNDEFINED; INLINE_ARGS],
            spill: Vec::new(),
        }
    }

    /// Add `undefined`.
    pub fn push_undefined(&mut self) {
        self.push_raw(qjs::JS_UNDEFINED);
    }

    /// Add a number (an integer-valued one as QuickJS's integer, as [`Value::new_number`] does).
    pub fn push_number(&mut self, n: f64) {
        self.push_raw(qjs::JS_NewFloat64(n));
    }

    /// Add a new reference to `v`.
    pub fn push(&mut self, v: &JsValue) {
        debug_assert_eq!(raw_ctx(v.ctx()), self.ctx);
        // SAFETY: a live value of this context.
        self.push_raw(unsafe { qjs::JS_DupValue(self.ctx, v.as_raw()) });
    }

    /// Add a value we own a reference to.
    fn push_raw(&mut self, v: qjs::JSValue) {
        if self.len < INLINE_ARGS {
            self.inline[self.len] = v;
        } else {
            if self.spill.is_empty() {
                self.spill.extend_from_slice(&self.inline);
            }
            self.spill.push(v);
        }
        self.len += 1;
    }

    fn as_mut_slice(&mut self) -> &mut [qjs::JSValue] {
        if self.len <= INLINE_ARGS {
            &mut self.inline[..self.len]
        } else {
            &mut self.spill
        }
    }
}

impl Drop for RawArgs {
    fn drop(&mut self) {
        let ctx = self.ctx;
        for &mut v in self.as_mut_slice() {
            // SAFETY: we own one reference to each; the context outlives us (see `Raw`).
            unsafe { qjs::JS_FreeValue(ctx, v) }
        }
    }
}

/// `this[name](...args)` (`Reflect.apply(Reflect.get(this, name), this, args)`) on raw values,
/// with no arguments array; `Err` is the thrown value.
pub(crate) fn call_method(this: &Raw, name: &PropName, args: &mut RawArgs) -> Result<Raw, Raw> {
    let ctx = this.ctx;
    debug_assert_eq!(ctx, args.ctx);
    // SAFETY: live values and atom of this context; QuickJS dups what it keeps of the arguments.
    unsafe {
        let f = Raw::outcome(ctx, qjs::JS_GetProperty(ctx, this.v, name.atom))?;
        let r = qjs::JS_Call(
            ctx,
            f.v,
            this.v,
            args.len as i32,
            args.as_mut_slice().as_mut_ptr(),
        );
        Raw::outcome(ctx, r)
    }
}

/// `f.apply(this, args)` (`Reflect.apply(f, this, args)`) on raw values; `Err` is the thrown
/// value (a `TypeError` if `f` isn't callable).
pub(crate) fn apply_raw(f: &Raw, this: &Raw, args: &mut RawArgs) -> Result<Raw, Raw> {
    let ctx = f.ctx;
    debug_assert_eq!(ctx, args.ctx);
    // SAFETY: as in `call_method`.
    unsafe {
        let r = qjs::JS_Call(
            ctx,
            f.v,
            this.v,
            args.len as i32,
            args.as_mut_slice().as_mut_ptr(),
        );
        Raw::outcome(ctx, r)
    }
}

/// `new f(...args)` (`Reflect.construct(f, args)`) on raw values; `Err` is the thrown value.
pub(crate) fn construct(f: &Raw, args: &mut RawArgs) -> Result<Raw, Raw> {
    let ctx = f.ctx;
    debug_assert_eq!(ctx, args.ctx);
    // SAFETY: as in `call_method`.
    unsafe {
        let r =
            qjs::JS_CallConstructor(ctx, f.v, args.len as i32, args.as_mut_slice().as_mut_ptr());
        Raw::outcome(ctx, r)
    }
}

/// A property name held both as a JS string and as an atom, for direct property access.
pub(crate) struct PropName {
    pub value: JsValue,
    atom: qjs::JSAtom,
}

impl PropName {
    pub fn new(value: JsValue) -> Result<PropName, JsValue> {
        let ctx = value.ctx();
        // SAFETY: a live value of this context; the atom is freed in `drop`.
        let atom = unsafe { qjs::JS_ValueToAtom(raw_ctx(ctx), value.as_raw()) };
        if atom == qjs::JS_ATOM_NULL {
            return Err(ctx.catch());
        }
        Ok(PropName { value, atom })
    }

    /// The atom, valid while `self` lives.
    pub fn atom(&self) -> qjs::JSAtom {
        self.atom
    }
}

impl Drop for PropName {
    fn drop(&mut self) {
        // SAFETY: we own one reference to the atom, taken in `new`.
        unsafe { qjs::JS_FreeAtom(raw_ctx(self.value.ctx()), self.atom) }
    }
}

/// `obj[name]` for an object (`Reflect.get(obj, name)`, getters and proxies included);
/// `Err` is the thrown value.
pub(crate) fn get_property(obj: &JsValue, name: &PropName) -> Result<JsValue, JsValue> {
    let ctx = obj.ctx();
    // SAFETY: both are live values of this context.
    let r = unsafe { qjs::JS_GetProperty(raw_ctx(ctx), obj.as_raw(), name.atom) };
    outcome(ctx, r)
}

/// `obj[name]` for an object when the answer is a number, without making a value of it:
/// `Ok(Ok(n))`; `Ok(Err(v))` for any other value; `Err` is the thrown value.
pub(crate) fn get_property_number(
    obj: &JsValue,
    name: &PropName,
) -> Result<Result<f64, JsValue>, JsValue> {
    let ctx = obj.ctx();
    // SAFETY: both are live values of this context; a number has no reference to free.
    let r = unsafe { qjs::JS_GetProperty(raw_ctx(ctx), obj.as_raw(), name.atom) };
    match unsafe { qjs::JS_VALUE_GET_NORM_TAG(r) } {
        qjs::JS_TAG_INT => Ok(Ok(f64::from(unsafe { qjs::JS_VALUE_GET_INT(r) }))),
        qjs::JS_TAG_FLOAT64 => Ok(Ok(unsafe { qjs::JS_VALUE_GET_FLOAT64(r) })),
        _ => outcome(ctx, r).map(Err),
    }
}

/// The length of an `Array` (not a proxy or array-like), or `None` for anything else. Runs no
/// JS: an array's `length` is an own data property.
pub(crate) fn array_length(v: &JsValue) -> Option<i64> {
    // SAFETY: a live value of this context; reading an array's length can't fail or call JS.
    unsafe {
        if !qjs::JS_IsArray(v.as_raw()) {
            return None;
        }
        let mut len = 0i64;
        (qjs::JS_GetLength(raw_ctx(v.ctx()), v.as_raw(), &mut len) == 0).then_some(len)
    }
}

/// `obj[i]` for an object (`Reflect.get(obj, i)`); `Err` is the thrown value.
pub(crate) fn get_index(obj: &JsValue, i: u32) -> Result<JsValue, JsValue> {
    let ctx = obj.ctx();
    // SAFETY: a live value of this context.
    let r = unsafe { qjs::JS_GetPropertyUint32(raw_ctx(ctx), obj.as_raw(), i) };
    outcome(ctx, r)
}

/// QuickJS's class id of ordinary objects (`{}`, `new Object()`, the global object).
const JS_CLASS_OBJECT: qjs::JSClassID = 1;
/// QuickJS's class id of arrays (exotic only in how they define properties: reading is
/// ordinary).
const JS_CLASS_ARRAY: qjs::JSClassID = 2;

#[inline]
fn class_of(v: qjs::JSValue) -> Option<qjs::JSClassID> {
    // SAFETY: reads the tag, and the class id of an object value.
    unsafe { qjs::JS_IsObject(v).then(|| qjs::JS_GetClassID(v)) }
}

#[inline]
fn is_ordinary(v: qjs::JSValue) -> bool {
    class_of(v) == Some(JS_CLASS_OBJECT)
}

/// An own property, as far as the in-place paths need to know it.
enum Own {
    Missing,
    Data(OwnData),
    /// An accessor, or reading it threw (cleared: the general path throws it again).
    Unusable,
}

/// A data property's value (a reference we hold, freed on drop unless taken) and writability.
struct OwnData {
    ctx: *mut qjs::JSContext,
    value: qjs::JSValue,
    writable: bool,
}

impl OwnData {
    /// The value, as a [`Raw`] (the reference we held, handed on: no handle on the context).
    fn into_raw(self) -> Raw {
        let raw = Raw {
            ctx: self.ctx,
            v: self.value,
        };
        std::mem::forget(self);
        raw
    }
}

impl Drop for OwnData {
    fn drop(&mut self) {
        // SAFETY: the one reference we hold.
        unsafe { qjs::JS_FreeValue(self.ctx, self.value) }
    }
}

/// Look up an own property of `obj` (a live object of `ctx`'s realm) without running JS.
#[inline(always)]
fn own_property(ctx: &JsCtx, obj: qjs::JSValue, atom: qjs::JSAtom) -> Own {
    let raw = raw_ctx(ctx);
    let mut desc = std::mem::MaybeUninit::<qjs::JSPropertyDescriptor>::uninit();
    // SAFETY: `obj` is live; the descriptor's references are ours, each freed or kept once.
    unsafe {
        match qjs::JS_GetOwnProperty(raw, desc.as_mut_ptr(), obj, atom) {
            r if r < 0 => {
                // e.g. a `let` binding read before it is initialised.
                let _ = ctx.catch();
                Own::Unusable
            }
            0 => Own::Missing,
            _ => {
                let desc = desc.assume_init();
                qjs::JS_FreeValue(raw, desc.getter);
                qjs::JS_FreeValue(raw, desc.setter);
                let data = OwnData {
                    ctx: raw,
                    value: desc.value,
                    writable: desc.flags as u32 & qjs::JS_PROP_WRITABLE != 0,
                };
                if desc.flags as u32 & qjs::JS_PROP_GETSET != 0 {
                    Own::Unusable
                } else {
                    Own::Data(data)
                }
            }
        }
    }
}

/// Call `f` with the atom of index `i` (a tagged integer up to 2^31−1: nothing to allocate).
#[inline]
fn with_index_atom<R>(ctx: &JsCtx, i: u32, f: impl FnOnce(qjs::JSAtom) -> R) -> R {
    // SAFETY: an atom made and freed here.
    let atom = unsafe { qjs::JS_NewAtomUInt32(raw_ctx(ctx), i) };
    let r = f(atom);
    unsafe { qjs::JS_FreeAtom(raw_ctx(ctx), atom) };
    r
}

/// The value of an own data property of an ordinary object, an array or a typed array — what
/// reading it (`[[Get]]`) returns — or `None` when reading could run JS or look further (not an
/// own property, an accessor, another kind of object). Runs no JS.
pub(crate) fn own_data_property(obj: &JsValue, atom: qjs::JSAtom) -> Option<Raw> {
    let raw = obj.as_raw();
    let class = class_of(raw)?;
    // A typed array's own properties are its elements (and any expandos): reading one never
    // reaches the prototype.
    // SAFETY: `raw` is a live object.
    if class != JS_CLASS_OBJECT
        && class != JS_CLASS_ARRAY
        && unsafe { qjs::JS_GetTypedArrayType(raw) } < 0
    {
        return None;
    }
    match own_property(obj.ctx(), raw, atom) {
        Own::Data(data) => Some(data.into_raw()),
        Own::Missing | Own::Unusable => None,
    }
}

/// [`own_data_property`] for an array index (up to 2^31−1).
pub(crate) fn own_data_element(obj: &JsValue, i: u32) -> Option<Raw> {
    with_index_atom(obj.ctx(), i, |atom| own_data_property(obj, atom))
}

/// Run `JS_SetProperty…` (which takes `x`'s reference and throws where `Reflect.set` would
/// return false; the callers have made sure it can't fail that way).
#[inline]
fn set_with(ctx: &JsCtx, x: &Raw, set: impl FnOnce(qjs::JSValue) -> i32) -> Result<(), JsValue> {
    // SAFETY: the setter takes the reference we dup for it.
    if set(unsafe { qjs::JS_DupValue(raw_ctx(ctx), x.v) }) < 0 {
        Err(ctx.catch())
    } else {
        Ok(())
    }
}

/// `obj[i] = x` (`Reflect.set(obj, i, x)`) done directly when it can't fail: `obj` is an array
/// or an ordinary object whose own element `i` (up to 2^31−1) is a writable data property —
/// overwriting it calls no JS and, for an array, leaves its length alone. `None` otherwise (the
/// caller goes through `Reflect.set`).
pub(crate) fn set_own_element(obj: &JsValue, i: u32, x: &Raw) -> Option<Result<(), JsValue>> {
    let (raw, ctx) = (obj.as_raw(), obj.ctx());
    let class = class_of(raw)?;
    if class != JS_CLASS_OBJECT && class != JS_CLASS_ARRAY {
        return None;
    }
    match with_index_atom(ctx, i, |atom| own_property(ctx, raw, atom)) {
        Own::Data(data) if data.writable => Some(set_with(ctx, x, |x| unsafe {
            // SAFETY: `raw` is a live object of this context.
            qjs::JS_SetPropertyUint32(raw_ctx(ctx), raw, i, x)
        })),
        _ => None,
    }
}

/// `Reflect.set(obj, name, x)` done directly, when it can't fail: `obj` and every object on its
/// prototype chain up to the property are ordinary objects (no proxies or other exotic
/// behaviour), and the property is a writable data property found on that chain, or found
/// nowhere while `obj` is extensible. Then the ordinary `[[Set]]` stores the value (or creates
/// it) without calling any JS. `None` when that isn't so (setters, read-only properties,
/// exotic objects): the caller goes through `Reflect.set`, which returns `false` where a plain
/// assignment would throw.
pub(crate) fn set_ordinary(obj: &JsValue, name: &PropName, x: &Raw) -> Option<Result<(), JsValue>> {
    if !is_ordinary(obj.as_raw()) {
        return None;
    }
    let ctx = obj.ctx();
    let raw = raw_ctx(ctx);
    // The object whose own properties are being looked at: `obj`, then its prototypes.
    // The prototype being looked at (`None`: `obj` itself).
    let mut proto: Option<JsValue> = None;
    let mut own = true;
    loop {
        let cur = proto.as_ref().unwrap_or(obj).as_raw();
        match own_property(ctx, cur, name.atom) {
            Own::Data(data) if data.writable => break,
            Own::Data(_) | Own::Unusable => return None,
            Own::Missing => own = false,
        }
        // SAFETY: `cur` is a live ordinary object: reading its prototype runs no JS.
        let next = unsafe { Value::from_raw(ctx.clone(), qjs::JS_GetPrototype(raw, cur)) };
        if next.is_null() {
            break;
        }
        if !is_ordinary(next.as_raw()) {
            return None;
        }
        proto = Some(next);
    }
    // Not an own property: the assignment creates one, which needs an extensible object.
    // SAFETY: `obj` is a live ordinary object.
    if !own && unsafe { qjs::JS_IsExtensible(raw, obj.as_raw()) } != 1 {
        return None;
    }
    Some(set_with(ctx, x, |x| unsafe {
        // SAFETY: `obj` is a live object of this context.
        qjs::JS_SetProperty(raw, obj.as_raw(), name.atom, x)
    }))
}

/// QuickJS's class ids of functions written in C (the built-in constructors) and in JS (not
/// bound functions, proxies or generators).
const JS_CLASS_C_FUNCTION: qjs::JSClassID = 12;
const JS_CLASS_BYTECODE_FUNCTION: qjs::JSClassID = 13;

/// What [`InstanceOf::ordinary`] needs: the atoms of `Symbol.hasInstance` and `prototype`, and
/// `Function.prototype`.
pub(crate) struct InstanceOf {
    has_instance: PropName,
    prototype: PropName,
    function_proto: JsValue,
}

impl InstanceOf {
    pub fn new(ctx: &JsCtx) -> rquickjs::Result<Self> {
        let name = |v: JsValue| PropName::new(v).map_err(|_| rquickjs::Error::Exception);
        let symbol: Object = ctx.globals().get("Symbol")?;
        let function: Object = ctx.globals().get("Function")?;
        Ok(InstanceOf {
            has_instance: name(symbol.get("hasInstance")?)?,
            prototype: name(rquickjs::String::from_str(ctx.clone(), "prototype")?.into_value())?,
            function_proto: function.get("prototype")?,
        })
    }

    /// `value instanceof ctor` answered without running JS, or `None` when that can't be known
    /// so (the caller runs the real `instanceof`). It can when `ctor` is a plain function (C or
    /// JS; not bound, a proxy or a generator) with no own `Symbol.hasInstance` on it or on its
    /// prototypes up to `Function.prototype`, whose `Symbol.hasInstance` is non-writable and
    /// non-configurable: that one decides, by `OrdinaryHasInstance`. That reads `ctor`'s own
    /// `prototype` (a data property holding an object here) and walks `value`'s prototype chain,
    /// which calls no JS unless a proxy is on it.
    pub fn ordinary(&self, value: &JsValue, ctor: &JsValue) -> Option<bool> {
        let c = ctor.as_raw();
        let class = class_of(c)?;
        if class != JS_CLASS_C_FUNCTION && class != JS_CLASS_BYTECODE_FUNCTION {
            return None;
        }
        let ctx = ctor.ctx();
        let raw = raw_ctx(ctx);
        // Whether `a` is the object `b` (an object): by identity, as `===` compares objects.
        let same = |a: qjs::JSValue, b: qjs::JSValue| unsafe {
            // SAFETY: reads the tag and the pointer of two live values.
            qjs::JS_IsObject(a) && qjs::JS_VALUE_GET_PTR(a) == qjs::JS_VALUE_GET_PTR(b)
        };
        // `ctor`, then its prototypes, down to `Function.prototype`.
        let mut cur: Option<Raw> = None;
        loop {
            let obj = cur.as_ref().map_or(c, |r| r.v);
            if !matches!(own_property(ctx, obj, self.has_instance.atom), Own::Missing) {
                return None;
            }
            // SAFETY: `obj` is a live object other than a proxy: reading its prototype runs no
            // JS. The result is a reference we own (freed by `Raw`'s drop).
            let next = Raw {
                ctx: raw,
                v: unsafe { qjs::JS_GetPrototype(raw, obj) },
            };
            if same(next.v, self.function_proto.as_raw()) {
                break;
            }
            // SAFETY: reads the tag and class of a live value.
            if !unsafe { qjs::JS_IsObject(next.v) } || unsafe { qjs::JS_IsProxy(next.v) } {
                return None;
            }
            cur = Some(next);
        }
        // SAFETY: reads the tag of a live value.
        if !unsafe { qjs::JS_IsObject(value.as_raw()) } {
            return Some(false);
        }
        let proto = match own_property(ctx, c, self.prototype.atom) {
            Own::Data(data) => data.into_raw(),
            Own::Missing | Own::Unusable => return None,
        };
        // SAFETY: reads the tag of a live value.
        if !unsafe { qjs::JS_IsObject(proto.v) } {
            return None;
        }
        let mut cur: Option<Raw> = None;
        loop {
            let obj = cur.as_ref().map_or(value.as_raw(), |r| r.v);
            // SAFETY: reads the class of a live object.
            if unsafe { qjs::JS_IsProxy(obj) } {
                return None;
            }
            // SAFETY: as above: not a proxy, so no JS runs; the reference is ours.
            let next = Raw {
                ctx: raw,
                v: unsafe { qjs::JS_GetPrototype(raw, obj) },
            };
            // SAFETY: reads the tag of a live value.
            if !unsafe { qjs::JS_IsObject(next.v) } {
                return Some(false);
            }
            if same(next.v, proto.v) {
                return Some(true);
            }
            cur = Some(next);
        }
    }
}

/// `value instanceof ctor`; `Err` is the thrown value (e.g. `ctor` not callable).
pub(crate) fn instance_of(value: &Raw, ctor: &Raw) -> Result<bool, Raw> {
    let ctx = value.ctx;
    // SAFETY: live values of this context; a pending exception is taken at once.
    unsafe {
        let r = qjs::JS_IsInstanceOf(ctx, value.v, ctor.v);
        if r < 0 {
            Err(Raw {
                ctx,
                v: qjs::JS_GetException(ctx),
            })
        } else {
            Ok(r != 0)
        }
    }
}

/// How an uncaught exception reads in a report: `Name: message` and the stack for errors,
/// `String(v)` otherwise.
pub(crate) fn describe_error(err: &JsValue) -> String {
    if err.is_error()
        && let Some(o) = err.as_object()
    {
        let name: String = o
            .get::<_, JsValue>("name")
            .map(|v| to_string_lossy(&v))
            .unwrap_or_default();
        let message: String = o
            .get::<_, JsValue>("message")
            .map(|v| to_string_lossy(&v))
            .unwrap_or_default();
        let stack: String = o
            .get::<_, JsValue>("stack")
            .ok()
            .filter(|v| v.is_string())
            .map(|v| to_string_lossy(&v))
            .unwrap_or_default();
        let head = if message.is_empty() {
            name
        } else {
            format!("{name}: {message}")
        };
        return if stack.is_empty() {
            head
        } else {
            format!("{head}\n{}", stack.trim_end())
        };
    }
    to_string_lossy(err)
}

/// Copy a Rust [`Value`](crate::Value) into the realm (functions come from `kept`).
pub(crate) fn to_js(ctx: &JsCtx, v: &crate::Value, kept: &Kept) -> rquickjs::Result<JsValue> {
    use crate::Value as V;
    Ok(match v {
        V::Function(f) => kept
            .get(f)
            .unwrap_or_else(|| Value::new_undefined(ctx.clone())),
        V::Undefined => Value::new_undefined(ctx.clone()),
        V::Null => Value::new_null(ctx.clone()),
        V::Bool(b) => Value::new_bool(ctx.clone(), *b),
        V::Number(n) => Value::new_number(ctx.clone(), *n),
        V::String(s) => rquickjs::String::from_str(ctx.clone(), s)?.into_value(),
        V::Bytes(b) => uint8_array(ctx, b).map_err(|e| ctx.throw(e))?,
        V::Array(items) => {
            let a = rquickjs::Array::new(ctx.clone())?;
            for (i, item) in items.iter().enumerate() {
                a.set(i, to_js(ctx, item, kept)?)?;
            }
            a.into_value()
        }
        V::Object(props) => {
            let o = Object::new(ctx.clone())?;
            for (k, item) in props {
                o.set(k.as_str(), to_js(ctx, item, kept)?)?;
            }
            o.into_value()
        }
    })
}

/// Copy a JS value out of the realm: typed arrays and `ArrayBuffer`s become bytes, functions
/// are kept in `kept` and referred to, symbols become `undefined`; nesting deeper than 128 is an
/// error.
pub(crate) fn from_js(v: &JsValue, kept: &Kept) -> Result<crate::Value, String> {
    from_js_at(v, kept, 0)
}

fn from_js_at(v: &JsValue, kept: &Kept, depth: usize) -> Result<crate::Value, String> {
    use crate::Value as V;
    if depth > 128 {
        return Err("value nested too deeply (or cyclic)".into());
    }
    if v.is_function() {
        return Ok(V::Function(kept.keep(v.clone())));
    }
    if v.is_undefined() || v.is_symbol() {
        return Ok(V::Undefined);
    }
    if v.is_null() {
        return Ok(V::Null);
    }
    if let Some(b) = v.as_bool() {
        return Ok(V::Bool(b));
    }
    if let Some(n) = v.as_number() {
        return Ok(V::Number(n));
    }
    if v.is_string() {
        return Ok(V::String(to_string_lossy(v)));
    }
    if v.is_big_int() {
        return Ok(V::String(to_string_lossy(v)));
    }
    if let Some(bytes) = with_typed_array_bytes(v, |b| b.to_vec()) {
        return Ok(V::Bytes(bytes));
    }
    if let Some(ab) = rquickjs::ArrayBuffer::from_value(v.clone()) {
        // SAFETY: the slice is copied at once, running no JS that could detach the buffer.
        let bytes = ab
            .as_raw()
            .map(|p| unsafe { p.as_ref() }.to_vec())
            .unwrap_or_default();
        return Ok(V::Bytes(bytes));
    }
    if let Some(a) = v.as_array() {
        let mut items = Vec::with_capacity(a.len());
        for item in a.iter::<JsValue>() {
            items.push(from_js_at(
                &item.map_err(|e| e.to_string())?,
                kept,
                depth + 1,
            )?);
        }
        return Ok(V::Array(items));
    }
    if let Some(o) = v.as_object() {
        let mut props = Vec::new();
        for prop in o.props::<String, JsValue>() {
            let (k, item) = prop.map_err(|e| e.to_string())?;
            props.push((k, from_js_at(&item, kept, depth + 1)?));
        }
        return Ok(V::Object(props));
    }
    Ok(V::Undefined)
}

/// JS values Rust holds through [`JsFunction`](crate::JsFunction)s, by id. Released ids arrive
/// on a channel (a `JsFunction` may be dropped on any thread) and are freed on the guest thread.
pub(crate) struct Kept {
    instance: u64,
    values: std::cell::RefCell<std::collections::HashMap<u64, JsValue>>,
    next: std::cell::Cell<u64>,
    release_tx: std::sync::mpsc::Sender<u64>,
    release_rx: std::sync::mpsc::Receiver<u64>,
}

impl Kept {
    pub fn new() -> Kept {
        static INSTANCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let (release_tx, release_rx) = std::sync::mpsc::channel();
        Kept {
            instance: INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            values: Default::default(),
            next: std::cell::Cell::new(1),
            release_tx,
            release_rx,
        }
    }

    pub fn keep(&self, v: JsValue) -> crate::JsFunction {
        self.drain_released();
        let id = self.next.get();
        self.next.set(id + 1);
        self.values.borrow_mut().insert(id, v);
        crate::JsFunction(std::sync::Arc::new(crate::convert::KeptRef {
            instance: self.instance,
            id,
            release: self.release_tx.clone(),
        }))
    }

    /// The value of a `JsFunction` of this instance.
    pub fn get(&self, f: &crate::JsFunction) -> Option<JsValue> {
        if f.0.instance != self.instance {
            return None;
        }
        self.values.borrow().get(&f.0.id).cloned()
    }

    pub fn owns(&self, f: &crate::JsFunction) -> bool {
        f.0.instance == self.instance
    }

    /// Free the values whose last `JsFunction` was dropped.
    pub fn drain_released(&self) {
        let mut values = self.values.borrow_mut();
        for id in self.release_rx.try_iter() {
            values.remove(&id);
        }
    }

    pub fn clear(&self) {
        self.values.borrow_mut().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Blocks `JsAllocator` handed QuickJS on this thread.
        pub(super) static BACKING_ALLOCATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// QuickJS's 1.5× after a collection that freed much; after one that freed little (the
    /// heap is what Go holds), 3× the live heap; never under [`GC_SLACK`] of headroom.
    #[test]
    fn futile_collections_leave_the_heap_more_room() {
        const MB: usize = 1 << 20;
        // The first collection, at QuickJS's default 256 KiB: headroom.
        assert_eq!(next_gc_threshold(0, 384 << 10), (256 << 10) + GC_SLACK);
        // 100 MB collected down to 40: QuickJS's 60 stands (above 40 + 8).
        assert_eq!(next_gc_threshold(100 * MB, 60 * MB), 60 * MB);
        // 100 MB collected down to 90: futile, 270.
        assert_eq!(next_gc_threshold(100 * MB, 135 * MB), 270 * MB);
        // 10 MB down to 9: futile, 27 (above 9 + 8).
        assert_eq!(next_gc_threshold(10 * MB, 27 * MB / 2), 27 * MB);
        // 8 MB down to 2 freed much: the slack, 2 + 8 (above QuickJS's 3).
        assert_eq!(next_gc_threshold(8 * MB, 3 * MB), 2 * MB + GC_SLACK);
    }

    /// A small block made and freed again, in any size class, takes nothing from the backing
    /// allocator: each class keeps an arena (`ArenaPins`).
    #[test]
    fn small_blocks_come_and_go_without_new_arenas() {
        let engine = JsEngine::new().unwrap();
        let rt = unsafe { qjs::JS_GetRuntime(raw_ctx(&engine.ctx())) };
        let before = BACKING_ALLOCATIONS.with(std::cell::Cell::get);
        for size in 1..=(512 - ARENA_BLOCK_HEADER) {
            for _ in 0..3 {
                // SAFETY: a block of this runtime, freed at once.
                unsafe { qjs::js_free_rt(rt, qjs::js_malloc_rt(rt, size as qjs::size_t)) };
            }
        }
        assert_eq!(BACKING_ALLOCATIONS.with(std::cell::Cell::get), before);
    }

    /// The class ids the in-place paths rely on are QuickJS's (they are not in its API).
    #[test]
    fn class_ids_are_quickjs_s() {
        let engine = JsEngine::new().unwrap();
        let ctx = engine.ctx();
        let class = |src: &str| {
            let v: JsValue = ctx.eval(src).unwrap();
            unsafe { qjs::JS_GetClassID(v.as_raw()) }
        };
        assert_eq!(class("({})"), JS_CLASS_OBJECT);
        assert_eq!(class("globalThis"), JS_CLASS_OBJECT);
        assert_eq!(class("[]"), JS_CLASS_ARRAY);
        assert_ne!(class("new Proxy({}, {})"), JS_CLASS_OBJECT);
        assert_ne!(class("new Uint8Array(1)"), JS_CLASS_ARRAY);
        assert_eq!(class("Array"), JS_CLASS_C_FUNCTION);
        assert_eq!(class("(function () {})"), JS_CLASS_BYTECODE_FUNCTION);
        assert_eq!(class("(class {})"), JS_CLASS_BYTECODE_FUNCTION);
        for other in [
            "(function () {}).bind(null)",
            "new Proxy(function () {}, {})",
            "(function* () {})",
            "(async function () {})",
        ] {
            let c = class(other);
            assert!(
                c != JS_CLASS_C_FUNCTION && c != JS_CLASS_BYTECODE_FUNCTION,
                "{other}"
            );
        }
    }

    /// `InstanceOf::ordinary` answers as `instanceof` does, whenever it answers; and it answers
    /// for the usual constructors, not for those whose `instanceof` could run JS.
    #[test]
    fn ordinary_instance_of_agrees_with_instanceof() {
        let engine = JsEngine::new().unwrap();
        let ctx = engine.ctx();
        ctx.eval::<(), _>(
            r#"
            globalThis.Animal = class Animal {};
            globalThis.Dog = class Dog extends Animal {};
            globalThis.Plain = function Plain() {};
            globalThis.Custom = class Custom { static [Symbol.hasInstance](v) { return v === 7; } };
            globalThis.Heir = class Heir extends Custom {};
            globalThis.Bound = Plain.bind(null);
            globalThis.ProxyCtor = new Proxy(Plain, {});
            globalThis.Reparented = function Reparented() {};
            Object.setPrototypeOf(Reparented, null);
            globalThis.NoProto = function NoProto() {};
            NoProto.prototype = 5;
            globalThis.seen = [];
            globalThis.TrapChain = Object.create(new Proxy(Dog.prototype, {
                getPrototypeOf(t) { seen.push("trap"); return Reflect.getPrototypeOf(t); },
            }));
            "#,
        )
        .unwrap();
        let instance_of = InstanceOf::new(&ctx).unwrap();
        let values = [
            "new Dog()",
            "new Animal()",
            "new Plain()",
            "[]",
            "new Uint8Array(2)",
            "({})",
            "Object.create(null)",
            "7",
            "'s'",
            "null",
            "new Custom()",
            "TrapChain",
            "new (class extends Array {})()",
            "Plain",
            "Dog",
        ];
        let ctors = [
            ("Dog", true),
            ("Animal", true),
            ("Plain", true),
            ("Array", true),
            ("Object", true),
            ("Uint8Array", true),
            ("Function", true),
            ("Error", true),
            ("Custom", false),
            ("Heir", false),
            ("Bound", false),
            ("ProxyCtor", false),
            ("Reparented", false),
            ("NoProto", false),
            ("Math.max", false),
        ];
        for (c, answers) in ctors {
            let ctor: JsValue = ctx.eval(c).unwrap();
            for v in values {
                let value: JsValue = ctx.eval(format!("({v})")).unwrap();
                let fast = instance_of.ordinary(&value, &ctor);
                let real = instance_of_js(&ctx, v, c);
                match fast {
                    Some(b) => assert_eq!(Ok(b), real, "{v} instanceof {c}"),
                    // Through a proxy on the chain, the real `instanceof` runs its trap.
                    None => assert!(
                        !answers || v == "TrapChain",
                        "{v} instanceof {c}: no answer"
                    ),
                }
            }
        }
        // The proxy's trap is left to the real `instanceof`, which runs it.
        let seen = || ctx.eval::<i32, _>("seen.length").unwrap();
        let (trap_chain, dog): (JsValue, JsValue) =
            (ctx.eval("TrapChain").unwrap(), ctx.eval("Dog").unwrap());
        let before = seen();
        assert_eq!(instance_of.ordinary(&trap_chain, &dog), None);
        assert_eq!(seen(), before, "no trap ran");
        assert!(before > 0, "the real instanceof ran the trap");
    }

    /// `v instanceof c` evaluated by QuickJS: `Err` if it throws.
    fn instance_of_js(ctx: &JsCtx, v: &str, c: &str) -> Result<bool, ()> {
        ctx.eval::<bool, _>(format!("({v}) instanceof ({c})"))
            .map_err(|_| {
                let _ = ctx.catch();
            })
    }

    #[test]
    fn js_allocator_keeps_blocks_and_refuses_impossible_sizes() {
        use rquickjs::allocator::Allocator;
        let mut a = JsAllocator { budget: None };
        assert!(a.alloc(usize::MAX).is_null());
        assert!(a.alloc(usize::MAX - 7).is_null());
        assert!(a.calloc(usize::MAX, 2).is_null());
        assert!(a.calloc(2, JS_ALLOC_MAX).is_null());
        // Small and large blocks, zeroed, grown and shrunk across the line between the two
        // allocators, keep their contents.
        // SAFETY: every pointer is live where used and freed once, by `a`.
        unsafe {
            let p = a.calloc(4, 8);
            assert!(!p.is_null() && (p as usize).is_multiple_of(16));
            assert_eq!(std::slice::from_raw_parts(p, 32), &[0u8; 32][..]);
            assert_eq!(JsAllocator::usable_size(p), 32);
            std::ptr::write_bytes(p, 7, 32);
            assert!(a.realloc(p, usize::MAX).is_null());
            let big = a.realloc(p, JS_LARGE * 2);
            assert!(!big.is_null() && (big as usize).is_multiple_of(16));
            assert_eq!(std::slice::from_raw_parts(big, 32), &[7u8; 32][..]);
            assert_eq!(JsAllocator::usable_size(big), JS_LARGE * 2);
            *big.add(JS_LARGE * 2 - 1) = 9;
            let bigger = a.realloc(big, JS_LARGE * 3);
            assert_eq!(*bigger.add(JS_LARGE * 2 - 1), 9);
            let small = a.realloc(bigger, 16);
            assert_eq!(std::slice::from_raw_parts(small, 16), &[7u8; 16][..]);
            a.dealloc(small);
            let z = a.calloc(1, JS_LARGE);
            assert_eq!(*z.add(JS_LARGE - 1), 0);
            a.dealloc(z);
        }
        // A huge buffer from JS is a RangeError, not a crash.
        let engine = JsEngine::new().unwrap();
        let r: rquickjs::Result<JsValue> = engine.ctx().eval("new ArrayBuffer(2 ** 52)");
        assert!(r.is_err());
        let r: rquickjs::Result<f64> = engine
            .ctx()
            .eval("new Uint8Array(3 << 20).fill(5).reduce((a, b) => a + b, 0)");
        assert_eq!(r.ok(), Some(15.0 * (1 << 20) as f64));
    }

    /// Reallocation is counted by its difference, both ways and across the line between the
    /// two backing allocators, and a growth the budget refuses leaves the block as it was.
    #[test]
    fn reallocation_keeps_the_budget_s_count() {
        use rquickjs::allocator::Allocator;
        let budget = MemoryBudget::new(4 * JS_LARGE);
        budget.arm();
        let mut a = JsAllocator {
            budget: Some(budget.clone()),
        };
        // SAFETY: blocks of this allocator, each used within its size and freed once.
        unsafe {
            let p = a.alloc(100);
            assert_eq!(budget.js(), 100 + JS_HEADER);
            *p = 9;
            let p = a.realloc(p, 2 * JS_LARGE);
            assert_eq!((*p, budget.js()), (9, 2 * JS_LARGE + JS_HEADER));
            // Past the limit: refused, the block and the count unchanged.
            assert!(a.realloc(p, 5 * JS_LARGE).is_null());
            assert_eq!((*p, budget.js()), (9, 2 * JS_LARGE + JS_HEADER));
            let p = a.realloc(p, 50);
            assert_eq!((*p, budget.js()), (9, 50 + JS_HEADER));
            a.dealloc(p);
            assert_eq!(budget.js(), 0);
            assert!(a.alloc(4 * JS_LARGE).is_null());
            assert_eq!(budget.js(), 0);
        }
    }

    /// A budget counts every block of the JS heap while it lives, refuses what would pass the
    /// limit (QuickJS throws), and shares the limit with linear memory.
    #[test]
    fn a_memory_budget_counts_the_js_heap_and_refuses_past_it() {
        const MB: usize = 1 << 20;
        let budget = MemoryBudget::new(64 * MB);
        let engine = JsEngine::with_budget(Some(budget.clone())).unwrap();
        budget.arm();
        let ctx = engine.ctx();
        let base = budget.js();
        assert!(base > 0 && base < 8 * MB, "a new realm: {base}");
        ctx.eval::<(), _>("globalThis.b = new Uint8Array(16 << 20)")
            .unwrap();
        assert!(budget.js() >= base + 16 * MB);
        ctx.eval::<(), _>("globalThis.b = null").unwrap();
        assert!(budget.js() < base + MB, "freed: {} of {base}", budget.js());
        // Past the limit: an exception, and the heap as it was.
        let r: rquickjs::Result<JsValue> = ctx.eval("new Uint8Array(80 << 20)");
        assert!(r.is_err());
        let _ = ctx.catch();
        assert!(budget.js() < base + MB);
        // Linear memory takes from the same limit.
        assert!(budget.grow_wasm(40 * MB));
        let r: rquickjs::Result<JsValue> = ctx.eval("new Uint8Array(30 << 20)");
        assert!(r.is_err());
        let _ = ctx.catch();
        assert!(!budget.grow_wasm(64 * MB));
        assert!(budget.grow_wasm(48 * MB));
        // Without a budget, the heap stops at JS_HEAP_MAX (untouched pages: no memory used).
        let unlimited = JsEngine::new().unwrap();
        let ctx = unlimited.ctx();
        ctx.eval::<(), _>("globalThis.a = [1, 2].map(() => new ArrayBuffer(1.5 * 2 ** 30))")
            .unwrap();
        let r: rquickjs::Result<JsValue> = ctx.eval("new ArrayBuffer(1.5 * 2 ** 30)");
        assert!(r.is_err());
        let _ = ctx.catch();
    }

    #[test]
    fn own_data_property_reads_only_what_runs_no_js() {
        let engine = JsEngine::new().unwrap();
        let ctx = engine.ctx();
        let name = |s: &str| {
            PropName::new(
                rquickjs::String::from_str(ctx.clone(), s)
                    .unwrap()
                    .into_value(),
            )
            .unwrap()
        };
        let obj: JsValue = ctx
            .eval("Object.create({ inherited: 1 }, { own: { value: 2, enumerable: true }, acc: { get() { return 3; } } })")
            .unwrap();
        let own =
            own_data_property(&obj, name("own").atom()).and_then(|v| v.to_value(&ctx).as_number());
        assert_eq!(own, Some(2.0));
        assert!(own_data_property(&obj, name("inherited").atom()).is_none());
        assert!(own_data_property(&obj, name("acc").atom()).is_none());
        let typed: JsValue = ctx.eval("new Int16Array([5, -6])").unwrap();
        assert_eq!(
            own_data_element(&typed, 1).and_then(|v| v.to_value(&ctx).as_number()),
            Some(-6.0)
        );
        assert!(own_data_element(&typed, 2).is_none());
        assert!(own_data_property(&typed, name("length").atom()).is_none());
        let arr: JsValue = ctx.eval("[7, , 9]").unwrap();
        assert_eq!(
            own_data_element(&arr, 2).and_then(|v| v.to_value(&ctx).as_number()),
            Some(9.0)
        );
        assert!(own_data_element(&arr, 1).is_none());
        assert_eq!(array_length(&arr), Some(3));
        let proxy: JsValue = ctx.eval("new Proxy({ own: 1 }, {})").unwrap();
        assert!(own_data_property(&proxy, name("own").atom()).is_none());
    }
}
