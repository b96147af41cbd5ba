//! Values crossing between Rust and the guest's JS realm.
//!
//! [`Value`] is a JS value copied out of (or into) the realm: `undefined`, `null`, booleans,
//! numbers, strings, byte arrays (`Uint8Array`), arrays and plain objects. Rust types convert to
//! and from it with [`IntoValue`] and [`FromValue`]; [`Json`] carries any serde type, [`Bytes`]
//! a byte buffer.

use std::collections::BTreeMap;
use std::fmt;

/// A JavaScript value copied across the Rust/JS boundary.
///
/// ```
/// use gojs::{FromValue, IntoValue, Value};
/// let v = vec![1, 2].into_value();
/// assert_eq!(v, Value::Array(vec![Value::Number(1.0), Value::Number(2.0)]));
/// assert_eq!(v.to_json(), "[1,2]");
/// assert_eq!(Vec::<u8>::from_value(v).unwrap(), vec![1, 2]);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Undefined,
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    /// A `Uint8Array` (any typed array or `ArrayBuffer` converts to this).
    Bytes(Vec<u8>),
    Array(Vec<Value>),
    /// A plain object's own enumerable properties, in property order.
    Object(Vec<(String, Value)>),
    /// A JS function kept in its instance's realm (e.g. a `js.FuncOf` callback Go passed to a
    /// host function), callable later with [`Handle::invoke`](crate::Handle::invoke).
    Function(JsFunction),
}

/// A JS function that stays in its instance's realm while Rust holds it (cheap to clone, `Send`).
///
/// Go hands one to the host by passing a `js.Func` (or any JS function) to a host function; call
/// it later with [`Handle::invoke`](crate::Handle::invoke), from any thread. Dropping the last
/// clone releases it. Using it after its instance ended is [`Error::Exited`](crate::Error).
///
/// ```no_run
/// # fn main() -> Result<(), gojs::Error> {
/// # let engine = gojs::Engine::new()?;
/// # let module = gojs::Module::from_file(&engine, "subscribe.wasm")?;
/// use std::sync::{Arc, Mutex};
/// let saved: Arc<Mutex<Option<gojs::JsFunction>>> = Arc::default();
/// let keep = saved.clone();
/// // Go: js.Global().Call("subscribe", js.FuncOf(onEvent))
/// let config = gojs::Config::new().func("subscribe", move |f: gojs::JsFunction| {
///     *keep.lock().unwrap() = Some(f);
/// });
/// let running = module.spawn(config)?;
/// running.handle().run_until_idle()?;
/// let f = saved.lock().unwrap().clone().expect("Go subscribed");
/// running.handle().invoke::<()>(&f, ("an event",))?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct JsFunction(pub(crate) std::sync::Arc<KeptRef>);

/// The id of a kept JS value; releases it when dropped.
pub(crate) struct KeptRef {
    pub instance: u64,
    pub id: u64,
    pub release: std::sync::mpsc::Sender<u64>,
}

impl Drop for KeptRef {
    fn drop(&mut self) {
        let _ = self.release.send(self.id);
    }
}

impl fmt::Debug for JsFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JsFunction({}#{})", self.0.instance, self.0.id)
    }
}

impl PartialEq for JsFunction {
    fn eq(&self, other: &Self) -> bool {
        self.0.instance == other.0.instance && self.0.id == other.0.id
    }
}

impl IntoValue for JsFunction {
    fn into_value(self) -> Value {
        Value::Function(self)
    }
}
impl FromValue for JsFunction {
    fn from_value(v: Value) -> Result<Self, ConversionError> {
        match v {
            Value::Function(f) => Ok(f),
            other => Err(ConversionError::new("function", &other)),
        }
    }
}

impl Value {
    /// The JS `typeof`-like name of this value, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Undefined => "undefined",
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Bytes(_) => "Uint8Array",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
            Value::Function(_) => "function",
        }
    }

    /// This value as JSON text (`undefined` and byte arrays as JSON can show them: `null` and an
    /// array of numbers).
    pub fn to_json(&self) -> String {
        serde_json::Value::from(self.clone()).to_string()
    }
}

/// A value of the wrong type for a Rust parameter or result.
///
/// ```
/// use gojs::{FromValue, Value};
/// let err = i32::from_value(Value::String("7".into())).unwrap_err();
/// assert_eq!(err.to_string(), "expected i32, got string");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected}, got {got}")]
pub struct ConversionError {
    pub expected: String,
    pub got: String,
}

impl ConversionError {
    fn new(expected: impl Into<String>, got: &Value) -> Self {
        ConversionError {
            expected: expected.into(),
            got: got.kind().to_string(),
        }
    }
}

/// Rust values that become JS values.
///
/// ```
/// use gojs::{IntoValue, Value};
/// assert_eq!(Some("go").into_value(), Value::String("go".into()));
/// assert_eq!(None::<u8>.into_value(), Value::Null);
/// ```
pub trait IntoValue {
    fn into_value(self) -> Value;
}

/// Rust values made from JS values; a wrong type is a [`ConversionError`].
///
/// ```
/// use gojs::{FromValue, Value};
/// assert_eq!(Option::<f64>::from_value(Value::Undefined).unwrap(), None);
/// assert_eq!(u8::from_value(Value::Number(7.0)).unwrap(), 7);
/// assert!(u8::from_value(Value::Number(7.5)).is_err());
/// ```
pub trait FromValue: Sized {
    fn from_value(v: Value) -> Result<Self, ConversionError>;
}

impl IntoValue for Value {
    fn into_value(self) -> Value {
        self
    }
}
impl FromValue for Value {
    fn from_value(v: Value) -> Result<Self, ConversionError> {
        Ok(v)
    }
}

impl IntoValue for () {
    fn into_value(self) -> Value {
        Value::Undefined
    }
}
impl FromValue for () {
    fn from_value(_: Value) -> Result<Self, ConversionError> {
        Ok(())
    }
}

impl IntoValue for bool {
    fn into_value(self) -> Value {
        Value::Bool(self)
    }
}
impl FromValue for bool {
    fn from_value(v: Value) -> Result<Self, ConversionError> {
        match v {
            Value::Bool(b) => Ok(b),
            other => Err(ConversionError::new("boolean", &other)),
        }
    }
}

macro_rules! numbers {
    ($($t:ty),*) => {$(
        impl IntoValue for $t {
            fn into_value(self) -> Value {
                Value::Number(self as f64)
            }
        }
        impl FromValue for $t {
            fn from_value(v: Value) -> Result<Self, ConversionError> {
                match v {
                    Value::Number(n) => {
                        let t = n as $t;
                        // Integer targets take only numbers they represent exactly.
                        if (t as f64 == n) || (n.is_nan() && (t as f64).is_nan()) {
                            Ok(t)
                        } else {
                            Err(ConversionError {
                                expected: stringify!($t).into(),
                                got: format!("number {n}"),
                            })
                        }
                    }
                    other => Err(ConversionError::new(stringify!($t), &other)),
                }
            }
        }
    )*};
}
numbers!(i8, i16, i32, i64, u8, u16, u32, u64, isize, usize);

impl IntoValue for f64 {
    fn into_value(self) -> Value {
        Value::Number(self)
    }
}
impl FromValue for f64 {
    fn from_value(v: Value) -> Result<Self, ConversionError> {
        match v {
            Value::Number(n) => Ok(n),
            other => Err(ConversionError::new("number", &other)),
        }
    }
}
impl IntoValue for f32 {
    fn into_value(self) -> Value {
        Value::Number(f64::from(self))
    }
}
impl FromValue for f32 {
    fn from_value(v: Value) -> Result<Self, ConversionError> {
        f64::from_value(v).map(|n| n as f32)
    }
}

impl IntoValue for String {
    fn into_value(self) -> Value {
        Value::String(self)
    }
}
impl IntoValue for &str {
    fn into_value(self) -> Value {
        Value::String(self.to_string())
    }
}
impl FromValue for String {
    fn from_value(v: Value) -> Result<Self, ConversionError> {
        match v {
            Value::String(s) => Ok(s),
            other => Err(ConversionError::new("string", &other)),
        }
    }
}

/// A byte buffer: a `Uint8Array` in JS.
///
/// ```
/// let config = gojs::Config::new()
///     .func("reverse", |b: gojs::Bytes| gojs::Bytes(b.0.into_iter().rev().collect()));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl IntoValue for Bytes {
    fn into_value(self) -> Value {
        Value::Bytes(self.0)
    }
}
impl FromValue for Bytes {
    fn from_value(v: Value) -> Result<Self, ConversionError> {
        match v {
            Value::Bytes(b) => Ok(Bytes(b)),
            other => Err(ConversionError::new("Uint8Array", &other)),
        }
    }
}

/// `None` is `null` (and `undefined` converts to `None`).
impl<T: IntoValue> IntoValue for Option<T> {
    fn into_value(self) -> Value {
        self.map_or(Value::Null, IntoValue::into_value)
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: Value) -> Result<Self, ConversionError> {
        match v {
            Value::Null | Value::Undefined => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

impl<T: IntoValue> IntoValue for Vec<T> {
    fn into_value(self) -> Value {
        Value::Array(self.into_iter().map(IntoValue::into_value).collect())
    }
}
impl<T: FromValue> FromValue for Vec<T> {
    fn from_value(v: Value) -> Result<Self, ConversionError> {
        match v {
            Value::Array(items) => items.into_iter().map(T::from_value).collect(),
            other => Err(ConversionError::new("array", &other)),
        }
    }
}

impl<T: IntoValue> IntoValue for BTreeMap<String, T> {
    fn into_value(self) -> Value {
        Value::Object(self.into_iter().map(|(k, v)| (k, v.into_value())).collect())
    }
}
impl<T: FromValue> FromValue for BTreeMap<String, T> {
    fn from_value(v: Value) -> Result<Self, ConversionError> {
        match v {
            Value::Object(props) => props
                .into_iter()
                .map(|(k, v)| T::from_value(v).map(|v| (k, v)))
                .collect(),
            other => Err(ConversionError::new("object", &other)),
        }
    }
}

impl From<Value> for serde_json::Value {
    fn from(v: Value) -> Self {
        use serde_json::Value as J;
        match v {
            Value::Undefined | Value::Null | Value::Function(_) => J::Null,
            Value::Bool(b) => J::Bool(b),
            // Integral numbers print as integers (`42`, not `42.0`), like `JSON.stringify`.
            Value::Number(n) if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 => {
                J::Number((n as i64).into())
            }
            Value::Number(n) => serde_json::Number::from_f64(n).map_or(J::Null, J::Number),
            Value::String(s) => J::String(s),
            Value::Bytes(b) => J::Array(b.into_iter().map(J::from).collect()),
            Value::Array(a) => J::Array(a.into_iter().map(J::from).collect()),
            Value::Object(o) => J::Object(o.into_iter().map(|(k, v)| (k, J::from(v))).collect()),
        }
    }
}

impl From<serde_json::Value> for Value {
    fn from(j: serde_json::Value) -> Self {
        use serde_json::Value as J;
        match j {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(b),
            J::Number(n) => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
            J::String(s) => Value::String(s),
            J::Array(a) => Value::Array(a.into_iter().map(Value::from).collect()),
            J::Object(o) => {
                Value::Object(o.into_iter().map(|(k, v)| (k, Value::from(v))).collect())
            }
        }
    }
}

impl IntoValue for serde_json::Value {
    fn into_value(self) -> Value {
        Value::from(self)
    }
}
impl FromValue for serde_json::Value {
    fn from_value(v: Value) -> Result<Self, ConversionError> {
        Ok(serde_json::Value::from(v))
    }
}

/// Any serde type, crossing as the JSON-like JS value it serializes to.
///
/// ```
/// use gojs::{FromValue, IntoValue, Json};
/// let v = Json(std::collections::BTreeMap::from([("a", 1)])).into_value();
/// assert_eq!(v.to_json(), r#"{"a":1}"#);
/// let back: Json<serde_json::Value> = FromValue::from_value(v).unwrap();
/// assert_eq!(back.0["a"], 1);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> IntoValue for Json<T> {
    fn into_value(self) -> Value {
        serde_json::to_value(self.0).map_or(Value::Undefined, Value::from)
    }
}
impl<T: serde::de::DeserializeOwned> FromValue for Json<T> {
    fn from_value(v: Value) -> Result<Self, ConversionError> {
        let got = v.kind().to_string();
        serde_json::from_value(serde_json::Value::from(v))
            .map(Json)
            .map_err(|e| ConversionError {
                expected: format!("a value matching {} ({e})", std::any::type_name::<T>()),
                got,
            })
    }
}

/// Arguments for a call into the guest: a tuple of [`IntoValue`]s (or a `Vec<Value>`).
///
/// ```
/// use gojs::{IntoArgs, Value};
/// assert_eq!(("a", 1).into_args(), vec![Value::String("a".into()), Value::Number(1.0)]);
/// ```
pub trait IntoArgs {
    fn into_args(self) -> Vec<Value>;
}

impl IntoArgs for Vec<Value> {
    fn into_args(self) -> Vec<Value> {
        self
    }
}

/// What a host function returns: a value, or an error that JS sees as a thrown `Error`.
///
/// ```
/// use gojs::{IntoResult, Value};
/// assert_eq!(42.into_result(), Ok(Value::Number(42.0)));
/// assert_eq!(Err::<u8, _>("no").into_result(), Err("no".to_string()));
/// ```
pub trait IntoResult {
    fn into_result(self) -> Result<Value, String>;
}

impl<T: IntoValue> IntoResult for T {
    fn into_result(self) -> Result<Value, String> {
        Ok(self.into_value())
    }
}

/// A host function may fail: its error's message becomes the thrown JS `Error`'s message.
impl<T: IntoValue, E: fmt::Display> IntoResult for Result<T, E> {
    fn into_result(self) -> Result<Value, String> {
        self.map(IntoValue::into_value).map_err(|e| e.to_string())
    }
}

/// A type-erased host function: JS arguments in, a value or an error message out.
pub(crate) type DynHostFn = Box<dyn Fn(Vec<Value>) -> Result<Value, String> + Send + Sync>;

/// Rust closures JS (and so Go) can call: `Fn(A, B, …) -> R` with every argument a
/// [`FromValue`] and `R` an [`IntoValue`] or a `Result` of one (the error is thrown to JS).
///
/// ```
/// let config = gojs::Config::new()
///     .func("now", || 1700000000.0)
///     .func("join", |xs: Vec<String>, sep: String| xs.join(&sep))
///     .func("parse", |s: String| s.parse::<i64>().map_err(|e| e.to_string()));
/// ```
pub trait HostFn<Args>: Send + Sync + 'static {
    #[doc(hidden)]
    fn into_dyn(self) -> DynHostFn;
}

fn arg<T: FromValue>(args: &mut std::vec::IntoIter<Value>, i: usize) -> Result<T, String> {
    T::from_value(args.next().unwrap_or(Value::Undefined))
        .map_err(|e| format!("argument {}: {e}", i + 1))
}

macro_rules! tuples {
    ($($name:ident $idx:tt),*) => {
        impl<$($name: IntoValue,)*> IntoArgs for ($($name,)*) {
            fn into_args(self) -> Vec<Value> {
                vec![$(self.$idx.into_value()),*]
            }
        }

        impl<Func, Ret, $($name,)*> HostFn<($($name,)*)> for Func
        where
            Func: Fn($($name),*) -> Ret + Send + Sync + 'static,
            Ret: IntoResult,
            $($name: FromValue,)*
        {
            fn into_dyn(self) -> DynHostFn {
                Box::new(move |args: Vec<Value>| {
                    #[allow(unused_mut, unused_variables)]
                    let mut it = args.into_iter();
                    $(let $name = arg::<$name>(&mut it, $idx)?;)*
                    (self)($($name),*).into_result()
                })
            }
        }
    };
}

#[allow(non_snake_case)]
mod arities {
    use super::*;
    tuples!();
    tuples!(A 0);
    tuples!(A 0, B 1);
    tuples!(A 0, B 1, C 2);
    tuples!(A 0, B 1, C 2, D 3);
    tuples!(A 0, B 1, C 2, D 3, E 4);
    tuples!(A 0, B 1, C 2, D 3, E 4, F 5);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_convert_exactly() {
        assert_eq!(i32::from_value(Value::Number(42.0)), Ok(42));
        assert!(i32::from_value(Value::Number(1.5)).is_err());
        assert!(u8::from_value(Value::Number(300.0)).is_err());
        assert!(u32::from_value(Value::Number(-1.0)).is_err());
        assert_eq!(f64::from_value(Value::Number(0.5)), Ok(0.5));
        assert_eq!(
            String::from_value(Value::Number(1.0))
                .unwrap_err()
                .to_string(),
            "expected string, got number"
        );
    }

    #[test]
    fn host_fns_check_their_arguments() {
        let f = (|a: f64, b: String| format!("{a}{b}")).into_dyn();
        assert_eq!(
            f(vec![Value::Number(1.0), Value::String("x".into())]),
            Ok(Value::String("1x".into()))
        );
        assert_eq!(
            f(vec![Value::String("1".into())]),
            Err("argument 1: expected number, got string".into())
        );
        let g =
            (|n: u32| -> Result<u32, String> { if n == 0 { Err("zero".into()) } else { Ok(n) } })
                .into_dyn();
        assert_eq!(g(vec![Value::Number(0.0)]), Err("zero".into()));
    }

    #[test]
    fn json_round_trips_serde_types() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct P {
            name: String,
            tags: Vec<String>,
        }
        let p = P {
            name: "go".into(),
            tags: vec!["a".into()],
        };
        let v = Json(p).into_value();
        let back: Json<P> = FromValue::from_value(v).unwrap();
        assert_eq!(back.0.name, "go");
        assert!(Json::<P>::from_value(Value::Number(1.0)).is_err());
    }
}
