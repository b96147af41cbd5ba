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

/// How a value is recognised when stored again.
#[derive(Debug)]
enum Key {
    /// Objects, functions and symbols: by heap pointer (identity).
    Ptr(usize),
    /// Strings by content (their WTF-8 bytes, read again from the value when released).
    Str,
    /// Bigints by decimal text.
    BigInt(Box<str>),
    /// Preset ids, and prepared strings (never stored again).
    None,
}

struct Slot {
    value: JsValue,
    /// The type flag Go sees in its refs (an object can't change whether it is callable).
    flag: TypeFlag,
    /// Go's references to this id; `u64::MAX` for preset ids (never freed).
    refs: u64,
    key: Key,
    /// The UTF-8 bytes of a prepared string (`valuePrepareString`), which Go copies out
    /// (`valueLoadString`) and releases at once.
    utf8: Option<Box<[u8]>>,
}

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
            let key = match id {
                ID_GLOBAL | ID_GO => Key::Ptr(ptr_of(&value)),
                _ => Key::None,
            };
            if let Key::Ptr(p) = key {
                t.by_ptr.insert(p, id);
            }
            let flag = match key {
                Key::Ptr(_) => TypeFlag::Object,
                _ => TypeFlag::None,
            };
            t.slots.push(Some(Slot {
                value,
                flag,
                refs: u64::MAX,
                key,
                utf8: None,
            }));
        }
        t
    }

    /// The value behind an id, or `None` for an id Go doesn't hold (`wasm_exec.js` then yields
    /// `undefined`).
    pub fn get(&self, id: u32) -> Option<&JsValue> {
        self.slots.get(id as usize)?.as_ref().map(|s| &s.value)
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
                        let id = self.add(value, Key::Str, TypeFlag::String);
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
                        let id = self.add(value, Key::BigInt(text.clone()), TypeFlag::None);
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
                let id = self.add(value, Key::Ptr(p), flag);
                self.by_ptr.insert(p, id);
                id
            }
        };
        self.hold(id)
    }

    /// Store the UTF-8 bytes of a string for `valueLoadString` under a new id (what
    /// `wasm_exec.js` holds as a `Uint8Array`; Go never uses that value otherwise).
    pub fn store_prepared(&mut self, value: &JsValue, utf8: Box<[u8]>) -> Ref {
        let id = self.add(value, Key::None, TypeFlag::Object);
        if let Some(slot) = self.slots[id as usize].as_mut() {
            slot.utf8 = Some(utf8);
        }
        self.hold(id)
    }

    /// The bytes [`ValueTable::store_prepared`] holds under `id`, if it is such an id.
    pub fn prepared(&self, id: u32) -> Option<&[u8]> {
        self.slots.get(id as usize)?.as_ref()?.utf8.as_deref()
    }

    /// A new id for `value`, with no references yet.
    fn add(&mut self, value: &JsValue, key: Key, flag: TypeFlag) -> u32 {
        let slot = Some(Slot {
            value: value.clone(),
            flag,
            refs: 0,
            key,
            utf8: None,
        });
        match self.pool.pop() {
            Some(id) => {
                self.slots[id as usize] = slot;
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
        match self.slots[id as usize].as_mut() {
            Some(slot) => {
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
        if slot.refs == u64::MAX {
            return None;
        }
        slot.refs -= 1;
        if slot.refs > 0 {
            return None;
        }
        let slot = slot_ref.take()?;
        match &slot.key {
            Key::Ptr(p) => {
                self.by_ptr.remove(p);
            }
            Key::Str => {
                let removed =
                    crate::realm::with_wtf8(&slot.value, |bytes| match self.by_str.get(bytes) {
                        Some(&found) if found == id => self.by_str.remove(bytes),
                        _ => None,
                    });
                if removed.is_none() {
                    // The bytes couldn't be read again (out of memory): find the entry by id,
                    // so a stale one never hands out an id that is reused.
                    self.by_str.retain(|_, &mut found| found != id);
                }
            }
            Key::BigInt(b) => {
                self.by_bigint.remove(b);
            }
            Key::None => {}
        }
        self.pool.push(id);
        // The caller drops the value outside any borrow of the table: freeing a JS object can
        // run finalizers.
        Some(slot.value)
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
