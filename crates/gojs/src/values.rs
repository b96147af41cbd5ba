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
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
enum Key {
    /// Objects, functions and symbols: by heap pointer (identity).
    Ptr(usize),
    /// Strings by content (WTF-8 bytes), bigints by decimal text.
    Str(Box<[u8]>),
    BigInt(Box<str>),
    Preset(u32),
}

struct Slot {
    value: JsValue,
    /// Go's references to this id; `u64::MAX` for preset ids (never freed).
    refs: u64,
    key: Key,
}

/// The ids Go holds and the values behind them.
pub(crate) struct ValueTable {
    slots: Vec<Option<Slot>>,
    /// foldhash: fast for pointer keys, and randomly seeded per table, so a guest can't
    /// choose strings that collide.
    ids: foldhash::HashMap<Key, u32>,
    pool: Vec<u32>,
}

impl ValueTable {
    /// A table holding the seven preset values.
    pub fn new(preset: [JsValue; PRESET_IDS as usize]) -> Self {
        let mut t = ValueTable {
            slots: Vec::new(),
            ids: foldhash::HashMap::default(),
            pool: Vec::new(),
        };
        for (id, value) in preset.into_iter().enumerate() {
            let id = id as u32;
            let key = match id {
                ID_GLOBAL | ID_GO => Key::Ptr(ptr_of(&value)),
                _ => Key::Preset(id),
            };
            t.ids.insert(key.clone(), id);
            t.slots.push(Some(Slot {
                value,
                refs: u64::MAX,
                key,
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
        let raw = value.as_raw();
        let tag = unsafe { qjs::JS_VALUE_GET_NORM_TAG(raw) };
        let (key, flag) = match tag {
            qjs::JS_TAG_UNDEFINED | qjs::JS_TAG_UNINITIALIZED => return Ref::UNDEFINED,
            qjs::JS_TAG_INT | qjs::JS_TAG_FLOAT64 => {
                let n = value.as_number().unwrap_or(f64::NAN);
                if let Some(r) = Ref::number(n) {
                    return r;
                }
                (
                    Key::Preset(if n.is_nan() { ID_NAN } else { ID_ZERO }),
                    TypeFlag::None,
                )
            }
            qjs::JS_TAG_NULL => (Key::Preset(ID_NULL), TypeFlag::None),
            qjs::JS_TAG_BOOL => {
                let b = value.as_bool().unwrap_or(false);
                (
                    Key::Preset(if b { ID_TRUE } else { ID_FALSE }),
                    TypeFlag::None,
                )
            }
            qjs::JS_TAG_STRING | qjs::JS_TAG_STRING_ROPE => {
                (Key::Str(crate::realm::wtf8(value).into()), TypeFlag::String)
            }
            qjs::JS_TAG_SYMBOL => (Key::Ptr(ptr_of(value)), TypeFlag::Symbol),
            qjs::JS_TAG_OBJECT => {
                let flag = if value.is_function() {
                    TypeFlag::Function
                } else {
                    TypeFlag::Object
                };
                (Key::Ptr(ptr_of(value)), flag)
            }
            qjs::JS_TAG_BIG_INT | qjs::JS_TAG_SHORT_BIG_INT => {
                let text = crate::realm::to_string_lossy(value);
                (Key::BigInt(text.into()), TypeFlag::None)
            }
            // Internal tags never reach Go; treat as undefined rather than trusting them.
            _ => return Ref::UNDEFINED,
        };
        // One hash lookup whether the value is new or already held.
        let id = match self.ids.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => *e.get(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let id = match self.pool.pop() {
                    Some(id) => id,
                    None => {
                        self.slots.push(None);
                        (self.slots.len() - 1) as u32
                    }
                };
                self.slots[id as usize] = Some(Slot {
                    value: value.clone(),
                    refs: 0,
                    key: e.key().clone(),
                });
                e.insert(id);
                id
            }
        };
        if let Some(slot) = self.slots[id as usize].as_mut() {
            slot.refs = slot.refs.saturating_add(1);
        }
        Ref::boxed(flag, id)
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
        self.ids.remove(&slot.key);
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
        self.ids.clear();
        self.pool.clear();
    }
}

/// The heap pointer of an object, function or symbol: its identity.
fn ptr_of(v: &JsValue) -> usize {
    unsafe { qjs::JS_VALUE_GET_PTR(v.as_raw()) as usize }
}
