//! Loading a Go js/wasm module: recognise what was built for `GOOS=js`, explain what wasn't,
//! and compile it once (through the artifact cache) for any number of instances.

use std::path::Path;
use std::sync::Arc;

use wasmparser::{Parser, Payload};

use crate::Error;
use crate::engine::Engine;

/// Which generation of the Go js/wasm ABI a module uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoAbi {
    /// Go 1.19–1.20: imports from module `go`.
    Go,
    /// Go 1.21+: imports from module `gojs`.
    GoJs,
}

impl GoAbi {
    /// The import module name.
    pub fn module_name(self) -> &'static str {
        match self {
            GoAbi::Go => "go",
            GoAbi::GoJs => "gojs",
        }
    }
}

/// A compiled Go js/wasm module, ready to be instantiated many times, from any thread.
///
/// Cloning is cheap (the compiled code is shared); each [`Module::run`] or [`Module::spawn`]
/// makes a fresh instance with its own memory, realm and event loop.
///
/// ```no_run
/// # fn main() -> Result<(), gojs::Error> {
/// let engine = gojs::Engine::new()?;
/// let module = gojs::Module::from_file(&engine, "tool.wasm")?;
/// let runs: Vec<_> = (0..4)
///     .map(|i| {
///         let module = module.clone();
///         std::thread::spawn(move || module.run(gojs::Config::new().args(["tool", &i.to_string()])))
///     })
///     .collect();
/// for r in runs {
///     assert_eq!(r.join().unwrap()?, 0);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Module {
    pub(crate) inner: Arc<ModuleInner>,
}

pub(crate) struct ModuleInner {
    /// The whole module's code, or a split module's primary.
    pub module: wasmtime::Module,
    /// A split module's secondary (see `crate::split`).
    pub secondary: Option<Arc<crate::split::Secondary>>,
    /// Winch's code, whose instances move to Cranelift's once it is cached (`crate::tier`).
    pub upgrade: Option<crate::tier::Upgrade>,
    pub abi: GoAbi,
}

const REQUIRED_EXPORTS: &[&str] = &["run", "resume", "getsp", "mem"];

impl Module {
    /// Read, check and compile a module from a file.
    ///
    /// # Errors
    /// [`Error::Read`] if the file can't be read, [`Error::InvalidModule`] if it is not (intact)
    /// WebAssembly, [`Error::NotGoJs`] if it wasn't built with `GOOS=js GOARCH=wasm`.
    pub fn from_file(engine: &Engine, path: impl AsRef<Path>) -> Result<Module, Error> {
        let module = engine.load_file(path.as_ref())?;
        Module::from_compiled(module)
    }

    /// Check and compile a module from its bytes.
    ///
    /// # Errors
    /// As [`Module::from_file`], minus the read.
    pub fn new(engine: &Engine, wasm: &[u8]) -> Result<Module, Error> {
        let abi = classify(wasm)?;
        let compiled = engine.compile(wasm)?;
        Ok(Module {
            inner: Arc::new(ModuleInner {
                module: compiled.module,
                secondary: compiled.secondary,
                upgrade: compiled.upgrade,
                abi,
            }),
        })
    }

    fn from_compiled(compiled: crate::engine::Compiled) -> Result<Module, Error> {
        let abi = classify_compiled(&compiled.module)?;
        Ok(Module {
            inner: Arc::new(ModuleInner {
                module: compiled.module,
                secondary: compiled.secondary,
                upgrade: compiled.upgrade,
                abi,
            }),
        })
    }

    /// The ABI generation the module was built for.
    pub fn abi(&self) -> GoAbi {
        self.inner.abi
    }
}

/// Decide from the import and export sections whether `wasm` is a Go js/wasm module.
pub(crate) fn classify(wasm: &[u8]) -> Result<GoAbi, Error> {
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        return Err(Error::InvalidModule(
            "not a WebAssembly module (missing the \\0asm magic number)".into(),
        ));
    }
    let mut import_modules = Vec::new();
    let mut exports = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| {
            Error::InvalidModule(format!("truncated or corrupt WebAssembly module: {e}"))
        })?;
        match payload {
            Payload::Version {
                encoding: wasmparser::Encoding::Component,
                ..
            } => {
                return Err(Error::NotGoJs(
                    "it is a WebAssembly component, not a core module".into(),
                ));
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.map_err(|e| {
                        Error::InvalidModule(format!("corrupt import section: {e}"))
                    })?;
                    import_modules.push(import.module.to_string());
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(|e| {
                        Error::InvalidModule(format!("corrupt export section: {e}"))
                    })?;
                    exports.push(export.name.to_string());
                }
            }
            _ => {}
        }
    }
    decide(import_modules.iter().map(String::as_str), |name| {
        exports.iter().any(|x| x == name)
    })
}

/// The same decision for a module that is already compiled (loaded from the cache or an
/// artifact).
pub(crate) fn classify_compiled(module: &wasmtime::Module) -> Result<GoAbi, Error> {
    decide(module.imports().map(|i| i.module()), |name| {
        module.get_export(name).is_some()
    })
}

/// Go js/wasm or not, from the modules it imports from and the exports it has.
fn decide<'a>(
    import_modules: impl Iterator<Item = &'a str>,
    exports: impl Fn(&str) -> bool,
) -> Result<GoAbi, Error> {
    let mut abi = None;
    let mut wasi = None;
    for m in import_modules {
        match m {
            "gojs" => abi = Some(GoAbi::GoJs),
            "go" => abi = abi.or(Some(GoAbi::Go)),
            m if m.starts_with("wasi") => wasi = Some(m),
            _ => {}
        }
    }
    if let Some(m) = wasi {
        return Err(Error::NotGoJs(format!(
            "it imports `{m}`, so it was built for WASI (GOOS=wasip1); rebuild with GOOS=js GOARCH=wasm or use a WASI runtime"
        )));
    }
    let Some(abi) = abi else {
        return Err(Error::NotGoJs(
            "it imports nothing from `gojs` or `go`; build it with GOOS=js GOARCH=wasm".into(),
        ));
    };
    if let Some(missing) = REQUIRED_EXPORTS.iter().find(|e| !exports(e)) {
        return Err(Error::NotGoJs(format!("it does not export `{missing}`")));
    }
    Ok(abi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_wasm_and_truncated() {
        assert!(matches!(
            classify(b"hello world"),
            Err(Error::InvalidModule(_))
        ));
        assert!(matches!(
            classify(b"\0asm\x01\0\0\0\x02\x10"),
            Err(Error::InvalidModule(_))
        ));
    }

    #[test]
    fn explains_wasi_and_plain_modules() {
        // (module (import "wasi_snapshot_preview1" "fd_write" (func)))
        let wasi = b"\0asm\x01\0\0\0\x01\x04\x01\x60\0\0\x02\x23\x01\x16wasi_snapshot_preview1\x08fd_write\0\0";
        let e = classify(wasi).unwrap_err().to_string();
        assert!(e.contains("GOOS=wasip1"), "{e}");
        let e = classify(b"\0asm\x01\0\0\0").unwrap_err().to_string();
        assert!(e.contains("GOOS=js"), "{e}");
    }
}
