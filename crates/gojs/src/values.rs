//! The values table: the JS values Go holds, by id, with reference counts.
//!
//! Implements `wasm_exec.js`'s `_values`, `_goRefCounts`, `_ids` and `_idPool`: storing a value
//! that already has an id reuses it (objects, functions and symbols by identity, strings and
//! bigints by content) and bumps its count; `finalizeRef` decrements, and at zero the id goes back
//! to a pool for reuse, so the table stays as large as what Go currently holds.

use rquickjs::qjs;

use crate::abi::{Ref, TypeFlag};
use crate::realm::JsValue;

/// Ids 0–6 are preset and never freed: NaN, 0, null, true, false, globalThis, the Go object.
pub(crate) const PRESET_IDS: u32 = 7;
pub(crate) const ID_NAN: u32 = 0;
pub(crate) const ID_ZERO: u32 = 1;
pub(crate) const ID_NULL: u32 = 2;
pub(crate) const ID_TRUE: u32 = 3;
pub(crate) const ID_FALSE: u32 = 4;
pub(crate) const ID_GLOBAL: u32 = 5;
pub(crate) const ID_GO: u32 = 6;

/// What an id stands for.
enum Held {
    /// A JS value. How it is found when stored again follows from its tag: objects, functions
    /// and symbols by heap pointer (identity), strings by content (their WTF-8 bytes, read
    /// again from the value when released), bigints by decimal text (likewise).
    Value(JsValue),
    /// The UTF-8 bytes of a prepared string (`valuePrepareString`), which Go copies out
    /// (`valueLoadString`) and releases at once; never stored again.
    Prepared(Box<[u8]>),
}

/// One id's entry: 32 bytes. Go holds every object it was given until its finalizers run,
/// which a loop that makes objects never lets happen, so the table grows by one slot per
/// object made; at 80 bytes (the value's lookup key and prepared bytes inline) the slots and
/// their copies on growth were a third of an `Object.New()` loop's page faults.
struct Slot {
    held: Held,
    /// Go's references to this id; [`PINNED`] for preset ids (never freed).
    refs: u32,
    /// The type flag Go sees in its refs (an object can't change whether it is callable).
    flag: TypeFlag,
}

/// The count of an id that is never released: the presets, and (saturated) an id Go took
/// more references to than a count can hold.
const PINNED: u32 = u32::MAX;

const _: () = assert!(std::mem::size_of::<Option<Slot>>() == 32);

/// The ids Go holds and the values behind them.
pub(crate) struct ValueTable {
    slots: Vec<Option<Slot>>,
    /// Ids by identity (objects, functions, symbols: by address, see [`AddressHash`]) and by
    /// content (foldhash: randomly seeded per table, so a guest can't choose strings that
    /// collide).
    by_ptr: std::collections::HashMap<usize, u32, AddressHash>,
    by_str: foldhash::HashMap<Box<[u8]>, u32>,
    by_bigint: foldhash::HashMap<Box<str>, u32>,
    pool: Vec<u32>,
}

/// Hashes an address so that values allocated near each other land in nearby buckets: the low
/// bits (hashbrown's bucket index) are the address over 16, while the top 7 (the tag hashbrown
/// compares first) are mixed from the whole address. Go holds the objects it was given until
/// its finalizers run, so the map grows to hundreds of thousands of entries in a bridge loop,
/// and with a scrambling hash each new object's insert was a cache miss on a random bucket
/// (perf: 6% of a `New()` loop); QuickJS allocates objects next to each other in its arenas, so
/// they now share cache lines. `Object.New()` 1.14 → 1.05 µs, the `js.FuncOf` round trip
/// 3.4–4.1 → 3.2–3.4 µs (2026-12-01). Addresses aren't the guest's to choose.
#[derive(Clone, Copy, Default)]
struct AddressHash;

impl std::hash::BuildHasher for AddressHash {
    type Hasher = AddressHasher;
    fn build_hasher(&self) -> AddressHasher {
        AddressHasher(0)
    }
}

struct AddressHasher(u64);

impl std::hash::Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        let p = self.0;
        (p >> 4 & (u64::MAX >> 7)) | (p.wrapping_mul(0x9e37_79b9_7f4a_7c15) & !(u64::MAX >> 7))
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_usize(&mut self, p: usize) {
        self.0 = p as u64;
    }
}

impl ValueTable {
    /// A table holding the seven preset values.
    pub fn new(preset: [JsValue; PRESET_IDS as usize]) -> Self {
        let mut t = ValueTable {
            slots: Vec::new(),
            by_ptr: std::collections::HashMap::default(),
            by_str: foldhash::HashMap::default(),
            by_bigint: foldhash::HashMap::default(),
            pool: Vec::new(),
        };
        for (id, value) in preset.into_iter().enumerate() {
            let id = id as u32;
            let flag = match id {
                ID_GLOBAL | ID_GO => {
                    t.by_ptr.insert(ptr_of(&value), id);
                    TypeFlag::Object
                }
                _ => TypeFlag::None,
            };
            t.slots.push(Some(Slot {
                held: Held::Value(value),
                refs: PINNED,
                flag,
            }));
        }
        t
    }

    /// The value behind an id, or `None` for an id Go doesn't hold (`wasm_exec.js` then yields
    /// `undefined`).
    pub fn get(&self, id: u32) -> Option<&JsValue> {
        match &self.slots.get(id as usize)?.as_ref()?.held {
            Held::Value(v) => Some(v),
            Held::Prepared(_) => None,
        }
    }

    /// Store a value for Go as `storeValue` does and return its encoded reference.
    pub fn store(&mut self, value: &JsValue) -> Ref {
        match primitive(value.as_raw()) {
            Some(r) => r,
            None => self.store_heap(value),
        }
    }

    /// [`ValueTable::store`] for a raw value of `ctx`: a number, boolean, `null` or `undefined`
    /// makes no [`JsValue`] at all.
    pub fn store_raw(&mut self, ctx: &crate::realm::JsCtx, value: &crate::realm::Raw) -> Ref {
        match primitive(value.as_raw()) {
            Some(r) => r,
            None => self.store_heap(&value.to_value(ctx)),
        }
    }

    /// Store a string, object, function, symbol or bigint.
    fn store_heap(&mut self, value: &JsValue) -> Ref {
        let tag = unsafe { qjs::JS_VALUE_GET_NORM_TAG(value.as_raw()) };
        match tag {
            qjs::JS_TAG_STRING | qjs::JS_TAG_STRING_ROPE => {
                let id = crate::realm::with_wtf8(value, |bytes| match self.by_str.get(bytes) {
                    Some(&id) => id,
                    None => {
                        let id = self.add(Held::Value(value.clone()), TypeFlag::String);
                        self.by_str.insert(bytes.into(), id);
                        id
                    }
                });
                self.hold(id)
            }
            qjs::JS_TAG_SYMBOL | qjs::JS_TAG_OBJECT => self.store_ptr(value),
            qjs::JS_TAG_BIG_INT | qjs::JS_TAG_SHORT_BIG_INT => {
                let text: Box<str> = crate::realm::to_string_lossy(value).into();
                let id = match self.by_bigint.get(&text) {
                    Some(&id) => id,
                    None => {
                        let id = self.add(Held::Value(value.clone()), TypeFlag::None);
                        self.by_bigint.insert(text, id);
                        id
                    }
                };
                self.hold(id)
            }
            // Internal tags never reach Go; treat as undefined rather than trusting them.
            _ => Ref::UNDEFINED,
        }
    }

    /// Store an object, function or symbol, by identity (one hash lookup, new or not; its type
    /// flag is worked out once, when it gets its id).
    fn store_ptr(&mut self, value: &JsValue) -> Ref {
        let p = ptr_of(value);
        let id = match self.by_ptr.get(&p) {
            Some(&id) => id,
            None => {
                let flag = if value.is_symbol() {
                    TypeFlag::Symbol
                } else if value.is_function() {
                    TypeFlag::Function
                } else {
                    TypeFlag::Object
                };
                let id = self.add(Held::Value(value.clone()), flag);
                self.by_ptr.insert(p, id);
                id
            }
        };
        self.hold(id)
    }

    /// Store the UTF-8 bytes of a string for `valueLoadString` under a new id (what
    /// `wasm_exec.js` holds as a `Uint8Array`; Go never uses that value otherwise).
    /// (Go's `valueLoadString` reads them; any other use of the id sees `undefined`.)
    pub fn store_prepared(&mut self, utf8: Box<[u8]>) -> Ref {
        let id = self.add(Held::Prepared(utf8), TypeFlag::Object);
        self.hold(id)
    }

    /// The bytes [`ValueTable::store_prepared`] holds under `id`, if it is such an id.
    pub fn prepared(&self, id: u32) -> Option<&[u8]> {
        match &self.slots.get(id as usize)?.as_ref()?.held {
            Held::Prepared(bytes) => Some(bytes),
            Held::Value(_) => None,
        }
    }

    /// A new id for `held`, with no references yet.
    fn add(&mut self, held: Held, flag: TypeFlag) -> u32 {
        let slot = Some(Slot {
            held,
            refs: 0,
            flag,
        });
        match self.pool.pop() {
            Some(id) => {
                if let Some(free) = self.slots.get_mut(id as usize) {
                    *free = slot;
                }
                id
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        }
    }

    /// One more reference from Go to `id`.
    fn hold(&mut self, id: u32) -> Ref {
        match self.slots.get_mut(id as usize).and_then(Option::as_mut) {
            Some(slot) => {
                // Saturating at PINNED: an id referenced that often is never released.
                slot.refs = slot.refs.saturating_add(1);
                Ref::boxed(slot.flag, id)
            }
            None => Ref::UNDEFINED,
        }
    }

    /// Drop one of Go's references (`finalizeRef`); at zero the id is released for reuse.
    /// Unknown or preset ids are ignored.
    pub fn finalize(&mut self, id: u32) -> Option<JsValue> {
        let slot_ref = self.slots.get_mut(id as usize)?;
        let slot = slot_ref.as_mut()?;
        if slot.refs == PINNED {
            return None;
        }
        slot.refs -= 1;
        if slot.refs > 0 {
            return None;
        }
        let slot = slot_ref.take()?;
        self.pool.push(id);
        let Held::Value(value) = slot.held else {
            return None;
        };
        self.forget(&value, id);
        // The caller drops the value outside any borrow of the table: freeing a JS object can
        // run finalizers.
        Some(value)
    }

    /// Remove the lookup entry that finds `id` by `value` (its pointer, bytes or text).
    fn forget(&mut self, value: &JsValue, id: u32) {
        let tag = unsafe { qjs::JS_VALUE_GET_NORM_TAG(value.as_raw()) };
        match tag {
            qjs::JS_TAG_STRING | qjs::JS_TAG_STRING_ROPE => {
                let removed =
                    crate::realm::with_wtf8(value, |bytes| match self.by_str.get(bytes) {
                        Some(&found) if found == id => self.by_str.remove(bytes),
                        _ => None,
                    });
                if removed.is_none() {
                    // The bytes couldn't be read again (out of memory): find the entry by id,
                    // so a stale one never hands out an id that is reused.
                    self.by_str.retain(|_, &mut found| found != id);
                }
            }
            qjs::JS_TAG_SYMBOL | qjs::JS_TAG_OBJECT => {
                self.by_ptr.remove(&ptr_of(value));
            }
            qjs::JS_TAG_BIG_INT | qjs::JS_TAG_SHORT_BIG_INT => {
                let text = crate::realm::to_string_lossy(value);
                match self.by_bigint.get(text.as_str()) {
                    Some(&found) if found == id => {
                        self.by_bigint.remove(text.as_str());
                    }
                    // As for strings: the text came out differently (out of memory).
                    _ => self.by_bigint.retain(|_, &mut found| found != id),
                }
            }
            _ => {}
        }
    }

    /// How many ids are in use (presets included): what Go currently holds.
    pub fn live(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// The table's capacity in ids: never more than the peak of [`ValueTable::live`].
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Release every value (before the JS runtime is torn down).
    pub fn clear(&mut self) {
        self.slots.clear();
        self.by_ptr.clear();
        self.by_str.clear();
        self.by_bigint.clear();
        self.pool.clear();
    }
}

/// The ref of a value Go holds without an id (a number, `undefined`), or of a preset id (`NaN`, 0,
/// `null`, booleans); `None` for a value that needs an id of its own.
fn primitive(raw: qjs::JSValue) -> Option<Ref> {
    let preset = |id| Some(Ref::boxed(TypeFlag::None, id));
    let number = |n: f64| {
        Ref::number(n)
            .map(Some)
            .unwrap_or_else(|| preset(if n.is_nan() { ID_NAN } else { ID_ZERO }))
    };
    // SAFETY: reading the tag and the payload the tag says is there.
    unsafe {
        match qjs::JS_VALUE_GET_NORM_TAG(raw) {
            qjs::JS_TAG_UNDEFINED | qjs::JS_TAG_UNINITIALIZED => Some(Ref::UNDEFINED),
            qjs::JS_TAG_INT => number(f64::from(qjs::JS_VALUE_GET_INT(raw))),
            qjs::JS_TAG_FLOAT64 => number(qjs::JS_VALUE_GET_FLOAT64(raw)),
            qjs::JS_TAG_NULL => preset(ID_NULL),
            qjs::JS_TAG_BOOL => preset(if qjs::JS_VALUE_GET_BOOL(raw) {
                ID_TRUE
            } else {
                ID_FALSE
            }),
            _ => None,
        }
    }
}

/// The heap pointer of an object, function or symbol: its identity.
fn ptr_of(v: &JsValue) -> usize {
    unsafe { qjs::JS_VALUE_GET_PTR(v.as_raw()) as usize }
}

#[cfg(test)]
mod address_hash_tests {
    use std::hash::BuildHasher;

    /// Neighbouring addresses get neighbouring bucket indices; the tag bits still vary.
    #[test]
    fn nearby_addresses_land_in_nearby_buckets() {
        let h = |p: usize| super::AddressHash.hash_one(p);
        let low = |x: u64| x & (u64::MAX >> 7);
        let base = 0x7f12_3456_7000_usize;
        for k in 0..64 {
            assert_eq!(low(h(base + 16 * k)), low(h(base)) + k as u64);
        }
        let tags: std::collections::HashSet<u64> =
            (0..64).map(|k| h(base + 16 * k) >> 57).collect();
        assert!(tags.len() > 16, "tags barely vary: {tags:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::Decoded;
    use crate::realm::JsEngine;

    fn id(r: Ref) -> u32 {
        match r.decode() {
            Decoded::Id(id) => id,
            other => panic!("not an id: {other:?}"),
        }
    }

    /// A table whose presets are all `globalThis` (what they are doesn't matter here).
    fn table(ctx: &crate::realm::JsCtx) -> ValueTable {
        ValueTable::new(std::array::from_fn(|_| ctx.globals().into_value()))
    }

    /// Every kind of value is found again while held, and forgotten (its id reused for a
    /// different value) once Go's last reference goes.
    #[test]
    fn values_are_found_while_held_and_forgotten_after() {
        let engine = JsEngine::new().unwrap();
        let ctx = engine.ctx();
        let mut t = table(&ctx);
        for src in [
            "({})",
            "'text'",
            "123456789012345678901234567890n",
            "Symbol('s')",
        ] {
            let v: JsValue = ctx.eval(src).unwrap();
            let first = t.store(&v);
            assert_eq!(t.store(&v), first, "{src} stored twice, one id");
            let i = id(first);
            assert!(t.get(i).is_some());
            assert!(t.finalize(i).is_none(), "{src}: one reference left");
            let released = t
                .finalize(i)
                .expect("the last reference releases the value");
            drop(released);
            assert!(t.get(i).is_none());
            // The lookup entry went with it: the same value gets a new id (the freed one,
            // from the pool), and a different value that reuses an id isn't found by it.
            let again = t.store(&v);
            assert_eq!(id(again), i);
            assert!(t.finalize(i).is_some());
            let other: JsValue = ctx.eval("({other: 1})").unwrap();
            assert_eq!(id(t.store(&other)), i);
            let fresh = t.store(&v);
            assert_ne!(
                id(fresh),
                i,
                "{src} found under an id that now holds another value"
            );
            t.finalize(id(fresh));
            t.finalize(i);
        }
        t.clear();
    }

    /// A prepared string's bytes are readable under its id until Go releases it; the id holds
    /// no JS value.
    #[test]
    fn prepared_strings_hold_bytes_only() {
        let engine = JsEngine::new().unwrap();
        let ctx = engine.ctx();
        let mut t = table(&ctx);
        let i = id(t.store_prepared(b"h\xc3\xa9llo".to_vec().into_boxed_slice()));
        assert_eq!(t.prepared(i), Some(&b"h\xc3\xa9llo"[..]));
        assert!(t.get(i).is_none());
        assert!(t.finalize(i).is_none(), "no JS value to hand back");
        assert_eq!(t.prepared(i), None);
        assert_eq!(t.live(), PRESET_IDS as usize);
        // Presets are never released.
        assert!(t.finalize(ID_GLOBAL).is_none());
        assert!(t.get(ID_GLOBAL).is_some());
    }
}
