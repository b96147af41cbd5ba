//! A Go module cut in two for a fast first run (RATIONALE.md, "Why split a module…"): the
//! *primary* holds the functions a small program runs and compiles before the program starts;
//! the *secondary* is the whole module again, compiled in the background. A call of a function
//! the primary lacks compiles and instantiates a *part* for it (that function and what it is
//! likely to run next) while the secondary is compiling, and instantiates the secondary once
//! it is ready.
//!
//! - The primary keeps the imports, the hot functions (renumbered; only their `call`
//!   instructions change) and a stub for each cold function that hot code calls directly; the
//!   stub calls the function's table slot (`call_indirect`). Its element segments fill only the
//!   hot functions' slots; the embedder fills the cold ones with host functions that
//!   instantiate the secondary and call on. It exports its memory, table and globals.
//! - A part imports those too, holds its functions and stubs for the others they call
//!   directly, and its element segments point its functions' slots at them.
//! - The secondary imports those, and its element segment (the original one) points every
//!   slot at its own functions. Once it is instantiated, every call through the table, and so
//!   every goroutine Go resumes, runs the secondary's code; only frames already running in the
//!   primary finish there.
//!
//! Only modules shaped like the Go linker's output are split (one table filled in order by one
//! element segment, no start function, no passive data, numeric types only); anything else is
//! compiled whole.

use std::borrow::Cow;
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};

use wasmtime::{Caller, Func, FuncType, Linker, Ref, Store, Val};

use crate::instance::HostState;

use wasm_encoder as enc;
use wasmparser::{
    ElementItems, ElementKind, ExternalKind, KnownCustom, Name, Operator, Parser, Payload,
    TableInit, TypeRef, ValType,
};

/// The import module under which the secondary finds the primary's memory, table and globals.
pub(crate) const SHARED_MODULE: &str = "gojs:split";
/// The primary's extra export of its table.
pub(crate) const TABLE_EXPORT: &str = "gojs:split:table";
const MEMORY_EXPORT: &str = "gojs:split:memory";

/// A module cut in two.
pub(crate) struct Split {
    /// The primary's module (empty in a split resumed from a [`Plan`], whose code is cached,
    /// and in one with nothing cold, whose primary is its `source`: [`Split::first_part`]).
    pub primary: Vec<u8>,
    /// The functions the primary lacks, in index order.
    pub cold: Vec<Cold>,
    /// How many functions the module defines.
    pub functions: usize,
    /// The module's function types, by type index.
    pub types: Vec<Signature>,
    /// The module as it came (with names), for the parts compiled on demand.
    pub source: Arc<Vec<u8>>,
    /// The table slot of the first defined function.
    pub offset: u32,
    /// The program's own functions (package `main`), for Cranelift to compile first.
    pub own: Vec<bool>,
    /// Cranelift's code for them and for what they call, once [`Split::start_hot`] has started
    /// its compiles.
    pub hot: Vec<Arc<Hot>>,
    /// Set while the secondary compiles: the library functions' part waits for it.
    pub rest_busy: Arc<std::sync::atomic::AtomicBool>,
    /// Where the first run spends its time, for the parts after those two ([`Profile`]).
    pub profile: Option<Arc<Profile>>,
}

impl Split {
    /// The first part's module: the primary, or the module itself in a split with nothing
    /// cold ([`Pick::Whole`]).
    pub fn first_part(&self) -> &[u8] {
        if self.cold.is_empty() {
            &self.source
        } else {
            &self.primary
        }
    }

    /// Start compiling with Cranelift, for `winch`'s store ([`Hot`]), the program's own
    /// functions, and then the library functions they call (not the runtime's) with theirs,
    /// the runtime's hot paths ([`HOT_RUNTIME`]) and those samples find the time in:
    /// on a thread of its own, from picking the functions on. A split of a program without
    /// own code gets none; one with nothing cold (a test binary's) the last two.
    pub fn start_hot(&mut self, winch: &wasmtime::Engine) {
        if std::env::var_os("GOJS_HOT").is_some_and(|v| v == "off")
            || (!self.own.iter().any(|&o| o) && !self.cold.is_empty())
        {
            return;
        }
        let busy = self.rest_busy.clone();
        let profile = crate::sampler::Samples::claim().map(|samples| {
            Arc::new(Profile {
                samples: Mutex::new(Some(Arc::new(samples))),
                winch_code: Mutex::default(),
            })
        });
        if let Some(hot) = Hot::start(
            winch,
            self.source.clone(),
            self.own.clone(),
            self.offset,
            busy,
            profile.clone(),
        ) {
            self.hot = hot;
            self.profile = profile;
        }
    }
}

/// The functions outside package `main` and the runtime that `own` calls directly, and what
/// they call in turn (breadth first, within [`LIBRARY_BUDGET`]): where a program's work is
/// when it isn't in its own code (hashing, sorting, parsing, formatting).
fn library_callees(shape: &Shape<'_>, own: &[bool]) -> Option<Vec<bool>> {
    let catalog = Catalog::new(shape);
    let imported = shape.imported_funcs as usize;
    // The runtime's (and the packages as tied to it: reflection, printing), which calls it
    // most: its calls from Cranelift's code into the runtime's would each go through the table.
    let runtime = |name: &str| {
        [
            "runtime.",
            "internal_runtime_",
            "internal_abi.",
            "internal_bytealg.",
            "internal_reflectlite.",
            "internal_sync.",
            "internal_godebug",
            "internal_race.",
            "internal_cpu.",
            "internal_fmtsort.",
            "sync_atomic.",
            "reflect.",
            "fmt.",
        ]
        .iter()
        .any(|p| name.starts_with(p))
    };
    // Marked: left out (the program's own, compiled already, and the runtime's).
    let mut chosen: Vec<bool> = catalog
        .name_of
        .iter()
        .zip(own)
        .map(|(n, &o)| o || runtime(n))
        .collect();
    let mut seeds = Vec::new();
    for i in (0..own.len()).filter(|&i| own[i]) {
        for (_, _, callee) in calls(shape.bodies[i])? {
            if let Some(c) = (callee as usize).checked_sub(imported)
                && c < chosen.len()
                && !chosen[c]
                && !catalog.unlikely[c]
            {
                seeds.push(c);
            }
        }
    }
    let before = chosen.clone();
    let mut budget_left = LIBRARY_BUDGET;
    // Seeds one at a time, each within a budget of its own, so that one large callee (`fmt`'s
    // printing) doesn't take what the others need.
    for seed in seeds {
        let spent = catalog
            .expand(shape, vec![seed], &mut chosen, budget_left.min(SEED_BUDGET))
            .unwrap_or(0);
        budget_left = budget_left.saturating_sub(spent);
        if budget_left == 0 {
            break;
        }
    }
    let mut new: Vec<bool> = chosen.iter().zip(&before).map(|(&c, &b)| c && !b).collect();
    // Left to Winch: glue that mostly calls the runtime (each such call would go through the
    // table from Cranelift's code, where Winch's calls it directly), keeping the loops.
    let picked: Vec<usize> = (0..new.len()).filter(|&i| new[i]).collect();
    for i in picked {
        let body = shape.bodies[i];
        let out = calls(body).map_or(usize::MAX, |sites| {
            sites
                .iter()
                .filter(|&&(_, _, callee)| {
                    (callee as usize)
                        .checked_sub(imported)
                        .is_some_and(|c| before.get(c) == Some(&true) && !own[c])
                })
                .count()
        });
        if out.saturating_mul(BYTES_PER_RUNTIME_CALL) > body.len() {
            new[i] = false;
        }
    }
    Some(new)
}

/// How much library code (bytes of function bodies) Cranelift compiles for a first run after
/// the program's own: ~0.2 s on one core.
const LIBRARY_BUDGET: usize = 192 << 10;
/// The most of it one function the program calls takes, with what that calls.
const SEED_BUDGET: usize = 32 << 10;
/// A library function goes to Cranelift only with at least this much code per call it makes
/// into the runtime.
const BYTES_PER_RUNTIME_CALL: usize = 96;

#[cfg(test)]
impl Split {
    /// The secondary's module: the whole module again, importing the primary's memory, table
    /// and globals ([`Secondary::start_later`] makes it on its compile thread).
    pub fn secondary(&self) -> Option<Vec<u8>> {
        parse(&self.source).map(|shape| secondary_module(&shape))
    }
}

/// A function the primary lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cold {
    /// Its slot in the table.
    pub slot: u32,
    /// Its type, an index into [`Split::types`].
    pub ty: u32,
}

/// A function type with numeric parameters and results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Signature {
    pub params: Vec<ValType>,
    pub results: Vec<ValType>,
}

/// What the parse found out about the module.
#[derive(Default)]
struct Shape<'a> {
    types: Vec<Signature>,
    imported_funcs: u32,
    /// Type index of every defined function.
    func_types: Vec<u32>,
    table: Option<wasmparser::TableType>,
    memory: Option<wasmparser::MemoryType>,
    globals: Vec<wasmparser::GlobalType>,
    exports: Vec<(&'a str, ExternalKind, u32)>,
    /// The table offset of the element segment that lists every defined function in order.
    elem_offset: Option<u32>,
    bodies: Vec<&'a [u8]>,
    names: Vec<(u32, &'a str)>,
    /// Sections copied as they are, with the place of the ones rebuilt.
    sections: Vec<Section<'a>>,
    imports: Vec<(&'a str, &'a str, u32)>,
}

enum Section<'a> {
    Raw(u8, &'a [u8]),
    Custom(&'a str, &'a [u8]),
    Export,
    /// The element and code sections, with their ids (9 and 10).
    Element(u8, &'a [u8]),
    Code(u8, &'a [u8]),
}

/// How [`split`] picks the primary's functions.
#[derive(Clone, Copy)]
pub(crate) enum Pick<'h> {
    /// The exported functions, the names `hot(name, uses)` accepts (see [`Uses`]), the program's own
    /// (package `main`), every package's initializers, and what [`Catalog::expand`] adds to
    /// them within a budget. `None` for a test binary, or if what the program's own code calls
    /// directly exceeds the budget.
    Predicted(&'h dyn Fn(&str, Uses) -> bool),
    /// Only the exported functions (to test the secondary's path).
    ExportsOnly,
    /// Every function: nothing is left for a secondary, and the table's slots are there for
    /// Cranelift's parts of what samples find hot (a test binary's first run).
    Whole,
}

/// What a program uses, for [`Pick::Predicted`] to choose from its lists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Uses {
    /// Its own code starts goroutines, uses channels, timers, a `WaitGroup` or a context.
    pub goroutines: bool,
    /// It links `encoding/json` or `regexp`.
    pub libraries: bool,
}

/// Cut `wasm` as `pick` says. `None` if the module is not shaped for it, if `pick` predicts
/// the program would soon need the secondary, or if nothing would be left for it.
pub(crate) fn split(wasm: &[u8], pick: Pick<'_>) -> Option<Split> {
    // Picking goes by name: a module linked with `-s` (`go run`, `go test`) gets a name section
    // made from Go's own table, which the secondary and the parts made later carry too.
    let named = crate::pclntab::with_names(wasm);
    let wasm = named.as_ref();
    let shape = parse(wasm)?;
    let defined = shape.func_types.len();
    let imported = shape.imported_funcs as usize;
    let mut is_hot = vec![false; defined];
    let mut own_code = vec![false; defined];
    for &(_, kind, index) in &shape.exports {
        if matches!(kind, ExternalKind::Func | ExternalKind::FuncExact)
            && let Some(i) = (index as usize).checked_sub(imported)
        {
            *is_hot.get_mut(i)? = true;
        }
    }
    if let Pick::Predicted(hot) = pick {
        let catalog = Catalog::new(&shape);
        // A test binary runs its tests through the table, a few functions each, for as long
        // as they take: its first run is best compiled whole ([`Pick::Whole`]).
        if catalog.by_name.contains_key("testing.MainStart") {
            return None;
        }
        let own: Vec<bool> = catalog
            .name_of
            .iter()
            .map(|n| n.starts_with("main."))
            .collect();
        own_code.clone_from(&own);
        let goroutines = own_callees(&shape, &catalog, &own)?
            .iter()
            .any(|n| is_concurrency(n));
        let links = |package: &str| {
            catalog
                .by_name
                .range(package..)
                .next()
                .is_some_and(|(n, _)| n.starts_with(package))
        };
        let uses = Uses {
            goroutines,
            libraries: links("encoding_json.") || links("regexp."),
        };
        for (i, name) in catalog.name_of.iter().enumerate() {
            is_hot[i] |= hot(name, uses);
        }
        // Every package's initializers run before `main.main` (through the table).
        let mut seeds: Vec<usize> = (0..defined)
            .filter(|&i| is_init(catalog.name_of[i]))
            .collect();
        for i in (0..defined).filter(|&i| own[i]) {
            for (_, _, callee) in calls(shape.bodies[i])? {
                if let Some(c) = (callee as usize).checked_sub(imported)
                    && c < defined
                    && !own[c]
                    && !catalog.unlikely[c]
                {
                    seeds.push(c);
                }
            }
            is_hot[i] = true;
        }
        let spent = catalog.expand(&shape, seeds, &mut is_hot, PRIMARY_BUDGET)?;
        tracing::debug!("split: {spent} bytes of code added to the hot list's");
    }
    if matches!(pick, Pick::Whole) {
        is_hot.iter_mut().for_each(|h| *h = true);
    }
    let offset = shape.elem_offset?;
    // Every slot fits in a u32 (a valid module's table holds them all).
    offset.checked_add(u32::try_from(defined).ok()?)?;
    let slot = |def: usize| offset + def as u32;
    let cold: Vec<Cold> = (0..defined)
        .filter(|&i| !is_hot[i])
        .map(|i| Cold {
            slot: slot(i),
            ty: shape.func_types[i],
        })
        .collect();
    if cold.is_empty() && !matches!(pick, Pick::Whole) {
        return None;
    }
    let primary = primary(&shape, &is_hot, offset)?;
    // A first part of every function is the module again, numbered the same: the parts are
    // made from it (one copy of a 16 MB test binary fewer, ~8 ms of page faults).
    let (primary, source) = if cold.is_empty() {
        (Vec::new(), Arc::new(primary))
    } else {
        (primary, Arc::new(wasm.to_vec()))
    };
    Some(Split {
        primary,
        cold,
        functions: defined,
        types: shape.types,
        source,
        offset,
        own: own_code,
        hot: Vec::new(),
        rest_busy: Arc::default(),
        profile: None,
    })
}

/// What a later run needs of a split whose primary's code is cached, to skip making it again
/// ([`Plan::resume`]): which slots the primary leaves cold, and where its code is. Written
/// beside that code ([`Plan::encode`]), checksummed.
pub(crate) struct Plan {
    /// The file name of the primary's cache entry.
    pub primary: String,
    pub cold: Vec<Cold>,
    pub functions: usize,
    pub offset: u32,
}

const PLAN_MAGIC: &[u8; 8] = b"GOJSPLN1";

impl Plan {
    /// The plan of `split`, whose primary's code is cached in the entry named `primary`.
    pub fn of(split: &Split, primary: String) -> Plan {
        Plan {
            primary,
            cold: split.cold.clone(),
            functions: split.functions,
            offset: split.offset,
        }
    }

    /// The plan as bytes: a magic number, the fields (little-endian), a BLAKE3 checksum.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = PLAN_MAGIC.to_vec();
        out.extend_from_slice(&(self.primary.len() as u32).to_le_bytes());
        out.extend_from_slice(self.primary.as_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&(self.functions as u64).to_le_bytes());
        out.extend_from_slice(&(self.cold.len() as u32).to_le_bytes());
        for c in &self.cold {
            out.extend_from_slice(&c.slot.to_le_bytes());
            out.extend_from_slice(&c.ty.to_le_bytes());
        }
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }

    /// The plan in `bytes`, or `None` if they aren't one [`Plan::encode`] wrote, whole.
    pub fn decode(bytes: &[u8]) -> Option<Plan> {
        let (body, sum) = bytes.split_at_checked(bytes.len().checked_sub(blake3::OUT_LEN)?)?;
        if blake3::hash(body).as_bytes() != sum {
            return None;
        }
        let mut at = body.strip_prefix(PLAN_MAGIC)?;
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, rest) = at.split_at_checked(n)?;
            at = rest;
            Some(head)
        };
        let u32_at = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap_or_default());
        let name_len = u32_at(take(4)?) as usize;
        let primary = std::str::from_utf8(take(name_len)?).ok()?.to_owned();
        let offset = u32_at(take(4)?);
        let functions = usize::try_from(u64::from_le_bytes(take(8)?.try_into().ok()?)).ok()?;
        let count = u32_at(take(4)?) as usize;
        let pairs = take(count.checked_mul(8)?)?;
        let cold = pairs
            .chunks_exact(8)
            .map(|p| Cold {
                slot: u32_at(&p[..4]),
                ty: u32_at(&p[4..]),
            })
            .collect();
        at.is_empty().then_some(Plan {
            primary,
            cold,
            functions,
            offset,
        })
    }

    /// The split this plan made of `wasm` again, without the primary's bytes (its code is
    /// cached): `None` unless the module has the functions, table offset and types the plan
    /// says, its cold slots in order.
    pub fn resume(self, wasm: &[u8]) -> Option<Split> {
        let named = crate::pclntab::with_names(wasm);
        let shape = parse(named.as_ref())?;
        let fits = shape.func_types.len() == self.functions
            && shape.elem_offset == Some(self.offset)
            && self.cold.windows(2).all(|w| w[0].slot < w[1].slot)
            && self.cold.iter().all(|c| {
                c.slot
                    .checked_sub(self.offset)
                    .and_then(|i| shape.func_types.get(i as usize))
                    == Some(&c.ty)
            });
        let mut own = vec![false; shape.func_types.len()];
        let imported = shape.imported_funcs as usize;
        // A split with nothing cold is a test binary's ([`Pick::Whole`]): no own code first.
        let names = if self.cold.is_empty() {
            &[][..]
        } else {
            &shape.names[..]
        };
        for &(index, name) in names {
            if let Some(o) = (index as usize)
                .checked_sub(imported)
                .and_then(|i| own.get_mut(i))
            {
                *o = name.starts_with("main.");
            }
        }
        let types = shape.types;
        fits.then(|| Split {
            primary: Vec::new(),
            cold: self.cold,
            functions: self.functions,
            types,
            source: Arc::new(named.to_vec()),
            offset: self.offset,
            own,
            hot: Vec::new(),
            rest_busy: Arc::default(),
            profile: None,
        })
    }
}

/// How long after a split first run's first call of a cold function the secondary starts
/// compiling, and after how many parts it starts at once (RATIONALE.md, "Why compile the rest
/// of a split module only a second in?").
const REST_AFTER: std::time::Duration = std::time::Duration::from_secs(1);
const REST_AFTER_PARTS: usize = 16;

/// How much code (bytes of function bodies) [`Catalog::expand`] adds to a primary beyond the
/// hot list, and to a part compiled when the program calls a cold function.
const PRIMARY_BUDGET: usize = 128 << 10;
const PART_BUDGET: usize = 64 << 10;

/// The module's functions by name, for guessing which functions run together.
struct Catalog<'a> {
    /// Defined function index by name, sorted for prefix searches.
    by_name: std::collections::BTreeMap<&'a str, usize>,
    name_of: Vec<&'a str>,
    /// Functions a program only runs when something goes wrong (a failed check, a fatal
    /// error) or when tracing: never worth compiling ahead.
    unlikely: Vec<bool>,
}

impl<'a> Catalog<'a> {
    fn new(shape: &Shape<'a>) -> Catalog<'a> {
        let defined = shape.func_types.len();
        let imported = shape.imported_funcs as usize;
        let mut by_name = std::collections::BTreeMap::new();
        let mut name_of = vec![""; defined];
        for &(index, name) in &shape.names {
            if let Some(i) = (index as usize).checked_sub(imported)
                && i < defined
            {
                by_name.insert(name, i);
                name_of[i] = name;
            }
        }
        let unlikely = name_of
            .iter()
            .map(|n| is_panic_path(n) || is_unlikely(n))
            .collect();
        Catalog {
            by_name,
            name_of,
            unlikely,
        }
    }

    /// Mark `seeds` in `chosen`, then, breadth first while `budget` lasts, what they are likely
    /// to run next: the functions they call directly, their closures (`F.func1`,
    /// `F.deferwrap1`, …), and the other methods of a method's receiver type (Go calls most
    /// methods through interfaces, out of sight of the calls). `None` if the seeds alone
    /// exceed the budget. Returns the bytes of code added.
    fn expand(
        &self,
        shape: &Shape<'_>,
        seeds: Vec<usize>,
        chosen: &mut [bool],
        budget: usize,
    ) -> Option<usize> {
        let imported = shape.imported_funcs as usize;
        let mut spent = 0usize;
        let mut frontier: Vec<usize> = seeds;
        let mut first = true;
        while !frontier.is_empty() {
            let mut next = Vec::new();
            for c in frontier {
                if *chosen.get(c)? {
                    continue;
                }
                let size = shape.bodies[c].len();
                if spent + size > budget {
                    if first {
                        return None;
                    }
                    continue;
                }
                spent += size;
                chosen[c] = true;
                let mut consider = |d: usize| {
                    if !chosen[d] && !self.unlikely[d] {
                        next.push(d);
                    }
                };
                for (_, _, callee) in calls(shape.bodies[c])? {
                    if let Some(d) = (callee as usize).checked_sub(imported)
                        && d < chosen.len()
                    {
                        consider(d);
                    }
                }
                let name = self.name_of[c];
                if name.is_empty() {
                    continue;
                }
                let closures = format!("{name}.");
                let receiver = name.find("__").and_then(|at| {
                    let end = name[at + 2..].find("_.")?;
                    Some(&name[..at + 2 + end + 2])
                });
                for prefix in std::iter::once(closures.as_str()).chain(receiver) {
                    for (n, &d) in self.by_name.range(prefix..) {
                        if !n.starts_with(prefix) {
                            break;
                        }
                        consider(d);
                    }
                }
            }
            frontier = next;
            first = false;
        }
        Some(spent)
    }
}

fn parse(wasm: &[u8]) -> Option<Shape<'_>> {
    let mut s = Shape::default();
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.ok()? {
            Payload::Version { encoding, .. } => {
                if encoding != wasmparser::Encoding::Module {
                    return None;
                }
            }
            Payload::TypeSection(r) => {
                s.sections.push(Section::Raw(1, wasm.get(r.range())?));
                for ty in r.into_iter_err_on_gc_types() {
                    let ty = ty.ok()?;
                    let numeric = |v: &[ValType]| {
                        v.iter()
                            .all(|t| {
                                matches!(
                                    t,
                                    ValType::I32 | ValType::I64 | ValType::F32 | ValType::F64
                                )
                            })
                            .then(|| v.to_vec())
                    };
                    s.types.push(Signature {
                        params: numeric(ty.params())?,
                        results: numeric(ty.results())?,
                    });
                }
            }
            Payload::ImportSection(r) => {
                s.sections.push(Section::Raw(2, wasm.get(r.range())?));
                for import in r.into_imports() {
                    let import = import.ok()?;
                    let TypeRef::Func(ty) = import.ty else {
                        return None;
                    };
                    s.imports.push((import.module, import.name, ty));
                    s.imported_funcs += 1;
                }
            }
            Payload::FunctionSection(r) => {
                s.sections.push(Section::Raw(3, wasm.get(r.range())?));
                for ty in r {
                    s.func_types.push(ty.ok()?);
                }
            }
            Payload::TableSection(r) => {
                s.sections.push(Section::Raw(4, wasm.get(r.range())?));
                for table in r {
                    let table = table.ok()?;
                    if s.table.is_some()
                        || !matches!(table.init, TableInit::RefNull)
                        || table.ty.element_type != wasmparser::RefType::FUNCREF
                        || table.ty.table64
                        || table.ty.shared
                    {
                        return None;
                    }
                    s.table = Some(table.ty);
                }
            }
            Payload::MemorySection(r) => {
                s.sections.push(Section::Raw(5, wasm.get(r.range())?));
                for memory in r {
                    let memory = memory.ok()?;
                    if s.memory.is_some() || memory.shared || memory.memory64 {
                        return None;
                    }
                    s.memory = Some(memory);
                }
            }
            Payload::GlobalSection(r) => {
                s.sections.push(Section::Raw(6, wasm.get(r.range())?));
                for global in r {
                    let ty = global.ok()?.ty;
                    if ty.shared {
                        return None;
                    }
                    s.globals.push(ty);
                }
            }
            Payload::ExportSection(r) => {
                s.sections.push(Section::Export);
                for export in r {
                    let e = export.ok()?;
                    s.exports.push((e.name, e.kind, e.index));
                }
            }
            Payload::ElementSection(r) => {
                s.sections.push(Section::Element(9, wasm.get(r.range())?));
                for elem in r {
                    let elem = elem.ok()?;
                    if s.elem_offset.is_some() {
                        return None;
                    }
                    s.elem_offset =
                        Some(whole_table_segment(&elem, s.imported_funcs, &s.func_types)?);
                }
            }
            Payload::CodeSectionStart { range, .. } => {
                s.sections.push(Section::Code(10, wasm.get(range)?));
            }
            Payload::CodeSectionEntry(body) => s.bodies.push(body.as_bytes()),
            Payload::DataSection(r) => s.sections.push(Section::Raw(11, wasm.get(r.range())?)),
            Payload::CustomSection(c) => {
                if let KnownCustom::Name(names) = c.as_known() {
                    for name in names {
                        if let Name::Function(map) = name.ok()? {
                            for naming in map {
                                let naming = naming.ok()?;
                                s.names.push((naming.index, naming.name));
                            }
                        }
                    }
                }
                s.sections.push(Section::Custom(c.name(), c.data()));
            }
            Payload::End(_) => {}
            // A start function, passive data, tags, components…: not Go's shape.
            _ => return None,
        }
    }
    let numeric_globals = s.globals.iter().all(|g| {
        matches!(
            g.content_type,
            ValType::I32 | ValType::I64 | ValType::F32 | ValType::F64
        )
    });
    (numeric_globals
        && s.imported_funcs > 0
        && s.table.is_some()
        && s.memory.is_some()
        && s.bodies.len() == s.func_types.len()
        && s.func_types.iter().all(|&t| (t as usize) < s.types.len()))
    .then_some(s)
}

/// Whether `name` is one of the runtime functions the compiler calls only when a check fails
/// (a nil dereference, an index or slice out of range, a bad conversion): a program's own code
/// calls them everywhere, but a program that runs them is panicking, and then waiting for the
/// secondary costs nothing that matters.
fn is_panic_path(name: &str) -> bool {
    name == "runtime.sigpanic"
        || name.starts_with("runtime.panic")
        || name.starts_with("runtime.goPanic")
}

/// The names of the defined functions the `own` functions call directly; `None` if a body
/// doesn't parse.
fn own_callees<'a>(shape: &Shape<'_>, catalog: &Catalog<'a>, own: &[bool]) -> Option<Vec<&'a str>> {
    let imported = shape.imported_funcs as usize;
    let mut names = Vec::new();
    for i in (0..own.len()).filter(|&i| own[i]) {
        for (_, _, callee) in calls(shape.bodies[i])? {
            if let Some(c) = (callee as usize).checked_sub(imported)
                && let Some(&name) = catalog.name_of.get(c)
            {
                names.push(name);
            }
        }
    }
    Some(names)
}

/// Whether a call of `name` makes a program run the scheduler's goroutine, channel or timer
/// code.
fn is_concurrency(name: &str) -> bool {
    [
        "runtime.newproc",
        "runtime.makechan",
        "runtime.chansend",
        "runtime.chanrecv",
        "runtime.closechan",
        "runtime.selectgo",
        "runtime.selectnb",
        "time.Sleep",
        "time.After",
        "time.NewTimer",
        "time.NewTicker",
        "time.Tick",
        "sync.__WaitGroup_.",
        "context.With",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// Whether `name` is a package initializer (`pkg.init`, `pkg.init.0`, …).
fn is_init(name: &str) -> bool {
    name.ends_with(".init")
        || name
            .rsplit_once(".init.")
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `name` is a runtime function a program runs only when it fails, or when tracing.
fn is_unlikely(name: &str) -> bool {
    name.starts_with("runtime.trace")
        || name.starts_with("runtime.throw")
        || name.starts_with("runtime.fatal")
        || name.starts_with("runtime.gopanic")
        || name.starts_with("runtime.print")
        || name.starts_with("runtime.dump")
}

/// The table offset of `elem` if it is the Go linker's one segment: active in table 0 at a
/// constant offset, listing every defined function in index order.
fn whole_table_segment(
    elem: &wasmparser::Element<'_>,
    imported: u32,
    func_types: &[u32],
) -> Option<u32> {
    let ElementKind::Active {
        table_index,
        offset_expr,
    } = &elem.kind
    else {
        return None;
    };
    if table_index.unwrap_or(0) != 0 {
        return None;
    }
    let mut ops = offset_expr.get_operators_reader();
    let Ok(Operator::I32Const { value }) = ops.read() else {
        return None;
    };
    let offset = u32::try_from(value).ok()?;
    let ElementItems::Functions(funcs) = &elem.items else {
        return None;
    };
    let mut n = 0u32;
    for f in funcs.clone() {
        if f.ok()? != imported.checked_add(n)? {
            return None;
        }
        n += 1;
    }
    (n as usize == func_types.len()).then_some(offset)
}

/// A body that calls the function in table slot `slot` with this function's arguments.
fn stub(sig: &Signature, ty: u32, slot: u32) -> enc::Function {
    let mut f = enc::Function::new([]);
    let mut ins = f.instructions();
    for i in 0..sig.params.len() as u32 {
        ins.local_get(i);
    }
    ins.i32_const(slot as i32).call_indirect(0, ty).end();
    f
}

/// The primary's caller of the cold slots of type `ty`: calls the slot given after `sig`'s
/// parameters. The embedder's function in a cold slot calls the code it loaded through it
/// ([`install`]): wasmtime compiles the host's entry into a function only for exports
/// (`Config::host_entries_for_exports_only`, our patch), not for every function in the table.
fn caller(sig: &Signature, ty: u32) -> enc::Function {
    let mut f = enc::Function::new([]);
    let mut ins = f.instructions();
    let n = sig.params.len() as u32;
    for i in 0..=n {
        ins.local_get(i);
    }
    ins.call_indirect(0, ty).end();
    f
}

/// The export of the primary's caller of the cold slots of type `ty` ([`caller`]).
fn caller_export(ty: u32) -> String {
    format!("gojs:split:call:{ty}")
}

fn enc_val_type(t: &ValType) -> enc::ValType {
    match t {
        ValType::I32 => enc::ValType::I32,
        ValType::I64 => enc::ValType::I64,
        ValType::F32 => enc::ValType::F32,
        _ => enc::ValType::F64,
    }
}

/// Active segments writing functions into the table: `funcs` yields (position in the original
/// segment, function index), one segment per run of consecutive positions.
fn runs(offset: u32, funcs: impl Iterator<Item = (usize, u32)>) -> enc::ElementSection {
    let mut section = enc::ElementSection::new();
    let mut run: Vec<u32> = Vec::new();
    let mut start = 0usize;
    let flush = |section: &mut enc::ElementSection, run: &mut Vec<u32>, start: usize| {
        if !run.is_empty() {
            section.active(
                None,
                &enc::ConstExpr::i32_const((offset + start as u32) as i32),
                enc::Elements::Functions(Cow::Owned(std::mem::take(run))),
            );
        }
    };
    let mut last = None;
    for (i, f) in funcs {
        if last.is_none_or(|l: usize| l + 1 != i) {
            flush(&mut section, &mut run, start);
            start = i;
        }
        run.push(f);
        last = Some(i);
    }
    flush(&mut section, &mut run, start);
    section
}

/// The direct calls in a function body: (start, end) of each `call` instruction in `body`, and
/// its callee. `None` if the body can't be read or refers to functions in another way.
fn calls(body: &[u8]) -> Option<Vec<(usize, usize, u32)>> {
    match scan_calls(body) {
        Scan::Calls(found) => Some(found),
        Scan::Refused => None,
        Scan::Unknown => calls_by_wasmparser(body),
    }
}

/// What [`scan_calls`] found.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    Calls(Vec<(usize, usize, u32)>),
    /// `ref.func` or `return_call`: [`calls`] refuses the body.
    Refused,
    /// Something it doesn't decode (or can't read): wasmparser reads the body instead.
    Unknown,
}

/// [`calls`] for the instructions Go's compiler emits (the MVP's, sign extension, saturating
/// conversions and bulk memory), decoded directly: the split reads every hot body, and
/// wasmparser took ~6 ns a byte (3 ms of hello world's first run on two cores).
fn scan_calls(body: &[u8]) -> Scan {
    use crate::rewrite::read_uleb as uleb;
    /// Skip a LEB128 number of at most `max` bytes.
    fn skip(b: &[u8], at: &mut usize, max: usize) -> Option<()> {
        for _ in 0..max {
            let byte = *b.get(*at)?;
            *at += 1;
            if byte & 0x80 == 0 {
                return Some(());
            }
        }
        None
    }
    let numeric = |t: u8| matches!(t, 0x7b..=0x7f);
    let scan = || -> Option<Scan> {
        let mut at = 0;
        let groups = uleb(body, &mut at)?;
        for _ in 0..groups {
            skip(body, &mut at, 5)?;
            if !numeric(*body.get(at)?) {
                return None;
            }
            at += 1;
        }
        let mut found = Vec::new();
        // Blocks open; the function's own `end` closes the last and is the last byte.
        let mut open = 0usize;
        while at < body.len() {
            let start = at;
            let op = body[at];
            at += 1;
            match op {
                0x00 | 0x01 | 0x05 | 0x0f | 0x1a | 0x1b | 0x45..=0xc4 => {}
                0x0b if open == 0 => {
                    return (at == body.len()).then_some(Scan::Calls(found));
                }
                0x0b => open -= 1,
                0x02..=0x04 => {
                    open += 1;
                    let t = *body.get(at)?;
                    if t == 0x40 || numeric(t) {
                        at += 1;
                    } else {
                        return None;
                    }
                }
                0x0c | 0x0d | 0x20..=0x24 | 0x3f | 0x40 => skip(body, &mut at, 5)?,
                0x0e => {
                    let n = uleb(body, &mut at)?;
                    for _ in 0..=n {
                        skip(body, &mut at, 5)?;
                    }
                }
                0x10 => {
                    let f = u32::try_from(uleb(body, &mut at)?).ok()?;
                    found.push((start, at, f));
                }
                0x11 => {
                    skip(body, &mut at, 5)?;
                    skip(body, &mut at, 5)?;
                }
                0x12 | 0xd2 => return Some(Scan::Refused),
                0x28..=0x3e => {
                    let align = uleb(body, &mut at)?;
                    if align & 0x40 != 0 {
                        return None;
                    }
                    skip(body, &mut at, 10)?;
                }
                0x41 => skip(body, &mut at, 5)?,
                0x42 => skip(body, &mut at, 10)?,
                0x43 => at += 4,
                0x44 => at += 8,
                0xfc => match uleb(body, &mut at)? {
                    0..=7 => {}
                    9 | 11 | 13 | 15..=17 => skip(body, &mut at, 5)?,
                    8 | 10 | 12 | 14 => {
                        skip(body, &mut at, 5)?;
                        skip(body, &mut at, 5)?;
                    }
                    _ => return None,
                },
                _ => return None,
            }
        }
        // Cut short: no `end` of the function.
        None
    };
    scan().unwrap_or(Scan::Unknown)
}

/// For tests: how many of `wasm`'s function bodies [`scan_calls`] decodes, how many it leaves
/// to wasmparser, and how many it reads differently from wasmparser (`None` if the module
/// doesn't parse).
pub(crate) fn scan_report(wasm: &[u8]) -> Option<(usize, usize, usize)> {
    let shape = parse(wasm)?;
    let (mut decoded, mut unknown, mut differ) = (0, 0, 0);
    for body in &shape.bodies {
        let by_wasmparser = calls_by_wasmparser(body);
        match scan_calls(body) {
            Scan::Unknown => unknown += 1,
            Scan::Refused => {
                decoded += 1;
                differ += usize::from(by_wasmparser.is_some());
            }
            Scan::Calls(found) => {
                decoded += 1;
                differ += usize::from(by_wasmparser != Some(found));
            }
        }
    }
    Some((decoded, unknown, differ))
}

fn calls_by_wasmparser(body: &[u8]) -> Option<Vec<(usize, usize, u32)>> {
    let body = wasmparser::FunctionBody::new(wasmparser::BinaryReader::new(body, 0));
    let mut ops = body.get_operators_reader().ok()?;
    let mut found = Vec::new();
    while !ops.eof() {
        let start = ops.original_position();
        match ops.read().ok()? {
            Operator::Call { function_index } => {
                found.push((start, ops.original_position(), function_index));
            }
            Operator::RefFunc { .. } | Operator::ReturnCall { .. } => return None,
            _ => {}
        }
    }
    Some(found)
}

/// `body` with each call in `calls` going to `map[callee]` instead.
fn renumber(body: &[u8], calls: &[(usize, usize, u32)], map: &[u32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + calls.len());
    let mut at = 0;
    for &(start, end, callee) in calls {
        out.extend_from_slice(&body[at..start]);
        out.push(0x10);
        crate::rewrite::write_u32(&mut out, map[callee as usize]);
        at = end;
    }
    out.extend_from_slice(&body[at..]);
    out
}

/// The primary: the imports, the hot functions, and stubs for the cold functions that hot code
/// calls directly, renumbered in that order (cold functions reached only through the table or
/// from other cold functions need no stub: their slots are filled by the embedder).
fn primary(s: &Shape<'_>, is_hot: &[bool], offset: u32) -> Option<Vec<u8>> {
    build(s, is_hot, offset, false)
}

/// A part compiled when the program calls a cold function: like the primary, the functions
/// `chosen` and stubs for the others they call directly, but importing the primary's memory,
/// table and globals, and exporting nothing (its element segments put its functions in the
/// table).
fn part(s: &Shape<'_>, chosen: &[bool], offset: u32) -> Option<Vec<u8>> {
    build(s, chosen, offset, true)
}

/// The primary (`shared` false) or a part (`shared` true).
fn build(s: &Shape<'_>, is_hot: &[bool], offset: u32, shared: bool) -> Option<Vec<u8>> {
    use rayon::prelude::*;
    let imported = s.imported_funcs;
    let defined = is_hot.len();
    // A primary of every function (a test binary's, [`Pick::Whole`]) numbers them as the
    // module does: its bodies and names go as they are (8 MB of code: 25 → 5 ms).
    let same = !shared && is_hot.iter().all(|&h| h);
    // Every hot body is read for its calls, on the current rayon pool (hello world's primary:
    // ~0.5 MB of code).
    let sites: Vec<Vec<(usize, usize, u32)>> = s
        .bodies
        .par_iter()
        .zip(is_hot.par_iter())
        .map(|(body, &hot)| {
            if hot && !same {
                calls(body)
            } else {
                Some(Vec::new())
            }
        })
        .collect::<Option<_>>()?;
    let mut needed = is_hot.to_vec();
    for c in &sites {
        for &(_, _, callee) in c {
            if let Some(d) = (callee as usize).checked_sub(imported as usize) {
                *needed.get_mut(d)? = true;
            }
        }
    }
    // Old function index → new, for imports and the functions kept.
    let mut map: Vec<u32> = (0..imported).collect();
    let mut next = imported;
    for &keep in &needed {
        map.push(next);
        next += u32::from(keep);
    }
    let kept = || (0..defined).filter(|&i| needed[i]);
    // The primary's callers of the cold slots, one per type ([`caller_export`]), after the
    // functions kept: the types of the cold functions, and each caller's own type (the
    // cold type's parameters and the slot) after the module's types.
    let callers: Vec<u32> = if shared {
        Vec::new()
    } else {
        let cold: std::collections::BTreeSet<u32> = (0..defined)
            .filter(|&i| !is_hot[i])
            .map(|i| s.func_types[i])
            .collect();
        cold.into_iter().collect()
    };
    let first_caller = next;
    let first_caller_type = s.types.len() as u32;
    // The module again: written into room for all of it, made present at once (growing a
    // test binary's 16 MB by doubling copied and faulted in twice that). Other primaries and
    // parts are a fraction of the module, grown as they go.
    let room: usize = if same {
        s.sections
            .iter()
            .map(|x| match *x {
                Section::Raw(_, d)
                | Section::Custom(_, d)
                | Section::Element(_, d)
                | Section::Code(_, d) => d.len(),
                Section::Export => 0,
            })
            .sum::<usize>()
            + (64 << 10)
    } else {
        0
    };
    let mut m = Sink::with_capacity(room);
    for section in &s.sections {
        match *section {
            Section::Raw(1, _) if !callers.is_empty() => {
                let mut types = enc::TypeSection::new();
                for sig in &s.types {
                    types.ty().function(
                        sig.params.iter().map(enc_val_type),
                        sig.results.iter().map(enc_val_type),
                    );
                }
                for &ty in &callers {
                    let sig = s.types.get(ty as usize)?;
                    let mut params: Vec<enc::ValType> =
                        sig.params.iter().map(enc_val_type).collect();
                    params.push(enc::ValType::I32);
                    types
                        .ty()
                        .function(params, sig.results.iter().map(enc_val_type));
                }
                // Re-encoded from the parse, which saw them all (numeric function types
                // only, else the module wasn't split).
                m.section(&types);
            }
            Section::Raw(3, _) => {
                let mut funcs = enc::FunctionSection::new();
                for i in kept() {
                    funcs.function(s.func_types[i]);
                }
                for k in 0..callers.len() as u32 {
                    funcs.function(first_caller_type + k);
                }
                m.section(&funcs);
            }
            Section::Raw(2, _) if shared => {
                m.section(&secondary_imports(s));
            }
            // Table, memory, globals and data are the primary's.
            Section::Raw(4 | 5 | 6 | 11, _) if shared => {}
            Section::Raw(id, data) => {
                m.section(&enc::RawSection { id, data });
            }
            Section::Custom("name", data) if same => {
                m.section(&enc::CustomSection {
                    name: Cow::Borrowed("name"),
                    data: Cow::Borrowed(data),
                });
            }
            Section::Custom("name", _) => {
                let mut names = enc::NameMap::new();
                for &(index, name) in &s.names {
                    let keep = (index as usize)
                        .checked_sub(imported as usize)
                        .is_none_or(|d| needed.get(d) == Some(&true));
                    if keep && let Some(&new) = map.get(index as usize) {
                        names.append(new, name);
                    }
                }
                let mut section = enc::NameSection::new();
                section.functions(&names);
                m.section(&section);
            }
            Section::Custom(name, data) => {
                m.section(&enc::CustomSection {
                    name: Cow::Borrowed(name),
                    data: Cow::Borrowed(data),
                });
            }
            Section::Export if shared => {}
            Section::Export => {
                let mut e = enc::ExportSection::new();
                for &(name, kind, index) in &s.exports {
                    let index = match kind {
                        ExternalKind::Func | ExternalKind::FuncExact => *map.get(index as usize)?,
                        _ => index,
                    };
                    e.export(name, export_kind(kind), index);
                }
                e.export(MEMORY_EXPORT, enc::ExportKind::Memory, 0);
                e.export(TABLE_EXPORT, enc::ExportKind::Table, 0);
                for i in 0..s.globals.len() as u32 {
                    e.export(&global_export(i), enc::ExportKind::Global, i);
                }
                for (k, &ty) in callers.iter().enumerate() {
                    e.export(
                        &caller_export(ty),
                        enc::ExportKind::Func,
                        first_caller + k as u32,
                    );
                }
                m.section(&e);
            }
            Section::Element(..) => {
                let hot = (0..defined)
                    .filter(|&i| is_hot[i])
                    .map(|i| (i, map[imported as usize + i]));
                m.section(&runs(offset, hot));
            }
            Section::Code(id, data) if same => {
                m.section(&enc::RawSection { id, data });
            }
            Section::Code(..) => {
                // Renumbered on the current rayon pool; stubs for the cold ones.
                let kept: Vec<usize> = kept().collect();
                let renumbered: Vec<Option<Vec<u8>>> = kept
                    .par_iter()
                    .map(|&i| is_hot[i].then(|| renumber(s.bodies[i], &sites[i], &map)))
                    .collect();
                let mut code = enc::CodeSection::new();
                for (&i, body) in kept.iter().zip(&renumbered) {
                    match body {
                        Some(body) => {
                            code.raw(body);
                        }
                        None => {
                            let ty = s.func_types[i];
                            code.function(&stub(&s.types[ty as usize], ty, offset + i as u32));
                        }
                    }
                }
                for &ty in &callers {
                    code.function(&caller(&s.types[ty as usize], ty));
                }
                m.section(&code);
            }
        }
    }
    Some(m.finish())
}

/// A module written section by section into a buffer sized up front.
struct Sink(Vec<u8>);

impl Sink {
    fn with_capacity(n: usize) -> Sink {
        let mut bytes = Vec::with_capacity(n);
        if n >= crate::fill::POPULATE_MIN {
            crate::fill::populate_spare(&mut bytes);
        }
        bytes.extend_from_slice(&enc::Module::HEADER);
        Sink(bytes)
    }

    fn section(&mut self, section: &impl enc::Section) {
        self.0.push(section.id());
        enc::Encode::encode(section, &mut self.0);
    }

    fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// A part of `source` (a module [`split`] accepted, its defined functions' slots from
/// `offset`) for the defined function `f` and what [`Catalog::expand`] adds to it, leaving out
/// and then marking the functions `chosen` marks.
fn part_for(source: &[u8], offset: u32, f: usize, chosen: &mut [bool]) -> Option<Vec<u8>> {
    let shape = parse(source)?;
    if chosen.len() != shape.bodies.len() {
        return None;
    }
    let catalog = Catalog::new(&shape);
    let before = chosen.to_vec();
    let mut budget = PART_BUDGET.max(shape.bodies.get(f)?.len());
    let mut seeds = vec![f];
    // One of the collector's: all of them, in one part rather than one part each.
    if collector().contains(catalog.name_of[f]) {
        for i in collector()
            .iter()
            .filter_map(|n| catalog.by_name.get(n).copied())
        {
            if i != f && !chosen.get(i).copied().unwrap_or(true) {
                seeds.push(i);
                budget += shape.bodies[i].len();
            }
        }
    }
    catalog.expand(&shape, seeds, chosen, budget)?;
    let new: Vec<bool> = chosen.iter().zip(&before).map(|(&c, &b)| c && !b).collect();
    tracing::debug!(
        "split: a part for {} ({} functions)",
        catalog.name_of[f],
        new.iter().filter(|&&n| n).count()
    );
    tracing::trace!(
        "split: the part for {}: {}",
        catalog.name_of[f],
        chosen_names(&catalog, &new).join(", ")
    );
    part(&shape, &new, offset)
}

/// What most first runs call soon after hello world's work: the collector's first cycle, the
/// allocator's slow paths, sweeping (`hot_collector.txt`; RATIONALE.md, "Why does one part
/// hold the collector?").
fn collector() -> &'static std::collections::HashSet<&'static str> {
    static NAMES: OnceLock<std::collections::HashSet<&'static str>> = OnceLock::new();
    NAMES.get_or_init(|| list_lines(include_str!("hot_collector.txt")).collect())
}

/// The secondary: the whole module again, with the primary's memory, table and globals
/// imported; its element segment points every slot at its own functions.
fn secondary_module(s: &Shape<'_>) -> Vec<u8> {
    let mut m = enc::Module::new();
    for section in &s.sections {
        match *section {
            Section::Raw(2, _) => {
                m.section(&secondary_imports(s));
            }
            Section::Raw(id @ (1 | 3), data)
            | Section::Element(id @ 9, data)
            | Section::Code(id @ 10, data) => {
                m.section(&enc::RawSection { id, data });
            }
            Section::Custom("name", data) => {
                m.section(&enc::CustomSection {
                    name: Cow::Borrowed("name"),
                    data: Cow::Borrowed(data),
                });
            }
            // Table, memory and globals are the primary's, the data is in memory already.
            _ => {}
        }
    }
    m.finish()
}

/// The original imports, then the primary's memory, table and globals.
fn secondary_imports(s: &Shape<'_>) -> enc::ImportSection {
    let mut imports = enc::ImportSection::new();
    for &(module, name, ty) in &s.imports {
        imports.import(module, name, enc::EntityType::Function(ty));
    }
    if let Some(mem) = s.memory {
        imports.import(
            SHARED_MODULE,
            MEMORY_EXPORT,
            enc::MemoryType {
                minimum: mem.initial,
                maximum: mem.maximum,
                memory64: false,
                shared: false,
                page_size_log2: mem.page_size_log2,
            },
        );
    }
    if let Some(table) = s.table {
        imports.import(
            SHARED_MODULE,
            TABLE_EXPORT,
            enc::TableType {
                element_type: enc::RefType::FUNCREF,
                table64: false,
                minimum: table.initial,
                maximum: table.maximum,
                shared: false,
            },
        );
    }
    for (i, g) in s.globals.iter().enumerate() {
        let val_type = enc_val_type(&g.content_type);
        imports.import(
            SHARED_MODULE,
            &global_export(i as u32),
            enc::GlobalType {
                val_type,
                mutable: g.mutable,
                shared: false,
            },
        );
    }
    imports
}

fn global_export(i: u32) -> String {
    format!("gojs:split:global:{i}")
}

fn export_kind(kind: ExternalKind) -> enc::ExportKind {
    match kind {
        ExternalKind::Func | ExternalKind::FuncExact => enc::ExportKind::Func,
        ExternalKind::Table => enc::ExportKind::Table,
        ExternalKind::Memory => enc::ExportKind::Memory,
        ExternalKind::Global => enc::ExportKind::Global,
        ExternalKind::Tag => enc::ExportKind::Tag,
    }
}

/// The secondary of a split module: the primary's cold functions, and the secondary's code,
/// compiled on a background thread from the moment the primary is ready. Shared by every
/// instance of the module.
pub(crate) struct Secondary {
    cold: Vec<Cold>,
    types: Vec<Signature>,
    /// The module as it came, while parts may be needed (until the secondary is compiled).
    source: Mutex<Option<Arc<Vec<u8>>>>,
    offset: u32,
    functions: usize,
    code: Mutex<Option<Result<wasmtime::Module, String>>>,
    ready: Condvar,
    /// The engine to compile with, and whether the compile is under way: [`REST_AFTER`] after
    /// the first call of a cold function, sooner if the program keeps calling more
    /// ([`Secondary::start_later`], [`Secondary::hurry`]).
    engine: wasmtime::Engine,
    started: std::sync::Once,
    /// Parts made so far, by every instance.
    parts: std::sync::atomic::AtomicUsize,
    /// Set when the compile must start now, not [`REST_AFTER`] in.
    hurry: Arc<std::sync::atomic::AtomicBool>,
    /// Cranelift's code for the program's own functions and the libraries' they call
    /// ([`Hot`]), in the order they are compiled and put in place.
    hot: Vec<Arc<Hot>>,
    /// Set while the secondary compiles ([`Split::rest_busy`]).
    busy: Arc<std::sync::atomic::AtomicBool>,
    profile: Option<Arc<Profile>>,
}

impl Secondary {
    /// `split`'s secondary, to be compiled with `engine` (the primary's) a while after a
    /// program first calls a function the primary lacks ([`Secondary::start_later`]): a
    /// program that never does (hello world), or ends before, leaves the cores to the
    /// background filler compiling the whole module for the runs after.
    pub fn new(
        engine: &wasmtime::Engine,
        split: Split,
        primary: &wasmtime::Module,
    ) -> Arc<Secondary> {
        if let Some(profile) = &split.profile {
            profile.note(primary);
        }
        Arc::new(Secondary {
            cold: split.cold,
            types: split.types,
            source: Mutex::new(Some(split.source)),
            offset: split.offset,
            functions: split.functions,
            code: Mutex::new(None),
            ready: Condvar::new(),
            engine: engine.clone(),
            started: std::sync::Once::new(),
            parts: std::sync::atomic::AtomicUsize::new(0),
            hurry: Arc::default(),
            hot: split.hot,
            busy: split.rest_busy,
            profile: split.profile,
        })
    }

    /// The buffer a first run's instance samples its thread into ([`Profile`]), if Cranelift
    /// compiles what it finds.
    pub fn samples(&self) -> Option<Arc<crate::sampler::Samples>> {
        self.profile.as_ref().and_then(|p| p.samples())
    }

    /// Cranelift's code compiled for this split ([`Hot`]) from its `from`th part on, as far as
    /// it is ready, in order, and the index of the part after; with `wait`, the first part's
    /// compile is waited for if it is small. Each instance places every part once.
    pub fn hot_from(&self, from: usize, wait: bool) -> (Vec<wasmtime::Module>, usize) {
        let mut ready = Vec::new();
        let mut next = from;
        for hot in self.hot.iter().skip(from) {
            match hot.peek(wait && next == 0) {
                Taken::Code(m) => ready.push(m),
                Taken::Gone => {}
                // The parts are compiled in order.
                Taken::Compiling => break,
            }
            next += 1;
        }
        (ready, next)
    }

    /// Whether a part of Cranelift's code became ready since [`place_hot_during_call`] last
    /// looked (one atomic load: imports ask).
    pub fn has_hot_news(&self) -> bool {
        self.hot
            .first()
            .is_some_and(|h| h.news.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Instantiate with `linker` into `store` Cranelift's parts that are ready from the
    /// `from`th on ([`Secondary::hot_from`]; `wait` as there): their element segments point
    /// their functions' slots at them. Returns the index of the part after and how many were
    /// placed; `place` ends the log line saying so.
    pub fn place_hot(
        &self,
        mut store: impl wasmtime::AsContextMut<Data = HostState>,
        linker: &Linker<HostState>,
        from: usize,
        wait: bool,
        place: &str,
    ) -> (usize, usize) {
        // Lowered before looking: a part ready meanwhile raises it again.
        if let Some(h) = self.hot.first() {
            h.news.store(false, std::sync::atomic::Ordering::Relaxed);
        }
        let (ready, next) = self.hot_from(from, wait);
        let mut placed = 0;
        for module in ready {
            let started = std::time::Instant::now();
            match linker.instantiate(&mut store, &module) {
                Ok(_) => {
                    tracing::debug!(
                        "split: Cranelift's code for hot functions in place{place} ({:.1?})",
                        started.elapsed()
                    );
                    placed += 1;
                }
                Err(e) => tracing::debug!("split: cannot instantiate Cranelift's code: {e:#}"),
            }
        }
        (next, placed)
    }

    /// Whether Cranelift's code from the `from`th part on is ready to be placed.
    pub fn hot_ready_from(&self, from: usize) -> bool {
        self.hot.iter().skip(from).any(|h| h.is_ready())
    }

    /// Whether Cranelift's code is compiled for this split.
    pub fn has_hot(&self) -> bool {
        !self.hot.is_empty()
    }

    /// At each call of a cold function (each gets a part until the secondary is ready): have
    /// the secondary compiled on a background thread [`REST_AFTER`] after the first such
    /// call, or at once from the [`REST_AFTER_PARTS`]th.
    fn start_later(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.parts.fetch_add(1, Ordering::Relaxed) + 1 >= REST_AFTER_PARTS {
            self.hurry.store(true, Ordering::Relaxed);
        }
        self.started.call_once(|| self.start());
    }

    /// Have the secondary compiled now (a part failed: the program waits for it).
    fn hurry(self: &Arc<Self>) {
        self.hurry.store(true, std::sync::atomic::Ordering::Relaxed);
        self.started.call_once(|| self.start());
    }

    fn start(self: &Arc<Self>) {
        let (engine, done) = (self.engine.clone(), self.clone());
        let secondary = self;
        let source = secondary.source();
        let hurry = self.hurry.clone();
        let busy = self.busy.clone();
        let compile = move || {
            // Not at once: the cores go to Cranelift's parts first (RATIONALE.md, "Why
            // compile the rest of a split module only a second in?").
            let asked = std::time::Instant::now();
            while !hurry.load(std::sync::atomic::Ordering::Relaxed) && asked.elapsed() < REST_AFTER
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            // Nobody left to run it (the module and its instances are gone): not worth a core.
            if Arc::strong_count(&done) == 1 {
                return;
            }
            tracing::debug!("split: compiling the whole module in the background");
            busy.store(true, std::sync::atomic::Ordering::SeqCst);
            // In a pool of our own: wasmtime compiles in parallel on the current rayon pool, and
            // if that were the global one, an embedder whose instances run on its threads and
            // wait here for this compile could take every thread it needs.
            let code = compile_pool()
                .map_err(|e| format!("cannot start compile threads: {e}"))
                .and_then(|pool| {
                    let wasm = source
                        .as_deref()
                        .and_then(|wasm| parse(wasm.as_slice()))
                        .map(|shape| secondary_module(&shape))
                        .ok_or("the split module no longer parses")?;
                    pool.install(|| {
                        crate::engine::compile_go(&engine, &wasm, crate::engine::Code::WinchPart)
                    })
                    .map_err(|e| format!("invalid WebAssembly module: {e:#}"))
                });
            tracing::debug!("split: the whole module is ready");
            if let (Ok(code), Some(profile)) = (&code, &done.profile) {
                profile.note(code);
            }
            done.busy.store(false, std::sync::atomic::Ordering::SeqCst);
            if code.is_ok() {
                // Every call from now on instantiates the secondary: no more parts.
                *done.source.lock().unwrap_or_else(PoisonError::into_inner) = None;
            }
            *done.code.lock().unwrap_or_else(PoisonError::into_inner) = Some(code);
            done.ready.notify_all();
        };
        if let Err(e) = std::thread::Builder::new()
            .name("gojs-compile-rest".into())
            .spawn(compile)
        {
            secondary
                .busy
                .store(false, std::sync::atomic::Ordering::SeqCst);
            *secondary
                .code
                .lock()
                .unwrap_or_else(PoisonError::into_inner) =
                Some(Err(format!("cannot start a compile thread: {e}")));
        }
    }

    fn source(&self) -> Option<Arc<Vec<u8>>> {
        self.source
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether the background compile is done (or failed).
    fn is_ready(&self) -> bool {
        self.code
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Code for the cold function in `slot` and what it is likely to run next (see
    /// [`Catalog::expand`]), leaving out what `loaded` marks, which it then marks too. `None`
    /// if the part can't be made or doesn't compile (the caller waits for the secondary).
    fn part(
        &self,
        engine: &wasmtime::Engine,
        slot: u32,
        loaded: &mut [bool],
    ) -> Option<wasmtime::Module> {
        let f = usize::try_from(slot.checked_sub(self.offset)?).ok()?;
        let mut chosen = loaded.to_vec();
        let wasm = part_for(&self.source()?, self.offset, f, &mut chosen)?;
        let module = crate::engine::compile_go(engine, &wasm, crate::engine::Code::WinchPart)
            .inspect_err(|e| tracing::debug!("a part of a split module failed to compile: {e:#}"))
            .ok()?;
        if let Some(profile) = &self.profile {
            profile.note(&module);
        }
        loaded.copy_from_slice(&chosen);
        Some(module)
    }

    /// The compiled secondary, once the background compile is done.
    fn wait(self: &Arc<Self>) -> Result<wasmtime::Module, String> {
        self.hurry();
        let mut code = self.code.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(done) = &*code {
                return done.clone();
            }
            code = self
                .ready
                .wait(code)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// One part of Cranelift's code for a split first run ([`Hot::start`]: the program's own
/// functions, then the library functions they call), compiled with Winch's calling convention
/// so that it runs beside Winch's code in the same store; each instance places it
/// (`Guest::install_hot`) before Go starts if it is the first and small, else at a stop or
/// while Go is paused. RATIONALE.md, "Why compile the program's own functions with Cranelift
/// in its first run?".
pub(crate) struct Hot {
    code: Mutex<HotCode>,
    ready: Condvar,
    /// Shared by a split's parts: raised when one is ready ([`Secondary::has_hot_news`]).
    news: Arc<std::sync::atomic::AtomicBool>,
}

enum HotCode {
    /// Being picked or compiled; `waitable` while it is small enough to wait for before Go
    /// starts ([`HOT_WAIT_MAX`]).
    Compiling {
        waitable: bool,
    },
    Ready(wasmtime::Module),
    Gone,
}

/// Where a split first run spends its time: the samples of its first instance's thread
/// ([`crate::sampler`]), and Winch's code for the module (the primary, parts, the secondary),
/// to tell which function each sampled address is in. After the program's own functions and
/// the libraries' they call, [`Hot`] compiles, round by round, those the samples find it in.
pub(crate) struct Profile {
    /// Until the rounds are over.
    samples: Mutex<Option<Arc<crate::sampler::Samples>>>,
    winch_code: Mutex<Vec<wasmtime::Module>>,
}

impl Profile {
    fn samples(&self) -> Option<Arc<crate::sampler::Samples>> {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn forget_samples(&self) {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// Winch's `code` for some of the module's functions (named as in the module).
    fn note(&self, code: &wasmtime::Module) {
        self.winch_code
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(code.clone());
    }

    /// The defined functions Winch's code was running in `records` (samples: an address, then
    /// return addresses), each counted once a sample, by index; and how many samples were in
    /// Winch's code at the sampled address itself.
    fn count(
        &self,
        records: &[Vec<u64>],
        by_name: &std::collections::HashMap<&str, usize>,
        defined: usize,
    ) -> (Vec<u32>, usize) {
        // Address ranges of Winch's functions, sorted: (start, end, defined index).
        let mut ranges: Vec<(usize, usize, usize)> = Vec::new();
        for code in self
            .winch_code
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let text = code.text().as_ptr() as usize;
            for f in code.functions() {
                if let Some(&i) = f.name.as_deref().and_then(|n| by_name.get(n)) {
                    ranges.push((text + f.offset, text + f.offset + f.len, i));
                }
            }
        }
        ranges.sort_unstable();
        let mut counts = vec![0u32; defined];
        let mut seen = Vec::new();
        let mut in_winch = 0;
        for record in records {
            seen.clear();
            for (k, &address) in record.iter().enumerate() {
                // A return address is just past its call, which may end the function.
                let at = (address as usize).saturating_sub(usize::from(k > 0));
                let after = ranges.partition_point(|r| r.0 <= at);
                if let Some(&(_, end, i)) = after.checked_sub(1).map(|j| &ranges[j])
                    && at < end
                    && !seen.contains(&i)
                {
                    in_winch += usize::from(k == 0);
                    seen.push(i);
                    counts[i] += 1;
                }
            }
        }
        (counts, in_winch)
    }
}

/// Samples a round of [`Profile`] needs (one a tick of the program's CPU time, 4 ms at the
/// usual 250 Hz): ~50 ms of it (RATIONALE.md, "Why compile where a first run spends its
/// time?").
const ROUND_SAMPLES: usize = 12;
/// The share of a round's samples a function must be on the stack in (in Winch's code) to
/// be compiled.
const ROUND_SHARE: usize = 4;
/// Code (bytes of function bodies) Cranelift compiles in one round.
const ROUND_BUDGET: usize = 160 << 10;
/// Rounds, at most: a run that lasts gets the whole module's Cranelift code a few seconds in.
const ROUNDS: usize = 12;
/// A round is skipped when fewer than one in this many of its samples were in Winch's code.
const ROUND_SKIP: usize = 5;
/// A round's functions take with them the functions they call directly up to this size
/// (bytes of body): RATIONALE.md, "Why compile where a first run spends its time?".
const ROUND_CALLEE_MAX: usize = 300;

/// Own code up to this many bytes is waited for before Go starts (Cranelift: ~1 ms a KB).
const HOT_WAIT_MAX: usize = 48 << 10;

/// A part of more code than this isn't compiled: it would come late (~0.5 s), and the whole
/// module's Cranelift code not much later.
const HOT_MAX: usize = 512 << 10;

/// The parts compiled before the sampled rounds: the program's own functions, the scheduler's
/// (for programs of goroutines), the library functions the program calls and the runtime's
/// ([`HOT_RUNTIME`]).
const FIRST_PARTS: usize = 4;

/// A program whose own code calls this makes `js.FuncOf` callbacks, each run on a goroutine
/// of its own that the event loop switches to: the scheduler's part is for it too.
const CALLBACKS: &str = "syscall_js.FuncOf";

/// Whether a program whose own code calls the functions named `callees` spends its time
/// switching goroutines: it uses goroutines, channels, timers… or makes callbacks.
fn switches_goroutines(callees: &[&str]) -> bool {
    callees
        .iter()
        .any(|n| is_concurrency(n) || n.starts_with(CALLBACKS))
}

/// The runtime functions programs of goroutines spend their time in (switching goroutines,
/// channels, `select`, starting and ending goroutines, mutexes and `WaitGroup`s): what the
/// sampled rounds found in such programs, under the names of Go 1.21 to 1.26.
const HOT_SCHEDULER: &str = include_str!("hot_scheduler.txt");

/// The functions of [`HOT_SCHEDULER`] not `done` already, for a program whose own code calls
/// the functions named `callees`.
fn scheduler(catalog: &Catalog<'_>, done: &[bool], callees: &[&str]) -> Vec<bool> {
    let mut chosen = vec![false; done.len()];
    let mut wanted = true;
    for line in list_lines(HOT_SCHEDULER) {
        if let Some(prefix) = line.strip_prefix("when ") {
            wanted = callees.iter().any(|n| n.starts_with(prefix));
        } else if wanted
            && let Some(&i) = catalog.by_name.get(line)
            && let Some(c) = chosen.get_mut(i)
        {
            *c = !done[i];
        }
    }
    chosen
}

/// The runtime functions most CPU-bound programs spend much of their time in: allocation, the
/// collector, maps, slices and strings (RATIONALE.md, "Why does a first run compile the
/// runtime's allocator and collector early?").
const HOT_RUNTIME: &str = include_str!("hot_runtime.txt");

/// The lines of one of our lists of functions (`hot_*.txt`), without blank lines and `#`
/// comments.
fn list_lines(list: &str) -> impl Iterator<Item = &str> {
    list.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// The functions named in `list` (one a line, [`list_lines`]) that the module has and that
/// aren't `done`.
fn named(catalog: &Catalog<'_>, done: &[bool], list: &str) -> Vec<bool> {
    let mut chosen = vec![false; done.len()];
    for line in list_lines(list) {
        if let Some(&i) = catalog.by_name.get(line)
            && let Some(c) = chosen.get_mut(i)
        {
            *c = !done[i];
        }
    }
    chosen
}

/// Bytes of code of the `chosen` functions of `shape`.
fn code_size(shape: &Shape<'_>, chosen: &[bool]) -> usize {
    (0..chosen.len())
        .filter(|&i| chosen[i])
        .map(|i| shape.bodies[i].len())
        .sum()
}

/// The names of the `chosen` functions.
fn chosen_names<'a>(catalog: &Catalog<'a>, chosen: &[bool]) -> Vec<&'a str> {
    (0..chosen.len())
        .filter(|&i| chosen[i])
        .map(|i| catalog.name_of[i])
        .collect()
}

/// Log a part picked from one of our lists (`what`: whose part) and count its functions as
/// `done`.
fn listed_part(
    what: &str,
    shape: &Shape<'_>,
    catalog: &Catalog<'_>,
    chosen: &[bool],
    done: &mut [bool],
) {
    tracing::debug!(
        "split: {what} part: {} functions, {} bytes of code",
        chosen.iter().filter(|&&c| c).count(),
        code_size(shape, chosen)
    );
    tracing::trace!(
        "split: {what} part: {}",
        chosen_names(catalog, chosen).join(", ")
    );
    for (d, &c) in done.iter_mut().zip(chosen) {
        *d |= c;
    }
}

/// How long a first run lasts before Cranelift compiles the library functions it calls.
const LIBRARIES_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

/// Marks what is still being compiled as gone when the compile thread ends (a panic, too).
struct GoneOnDrop<'a>(&'a [Arc<Hot>]);

impl Drop for GoneOnDrop<'_> {
    fn drop(&mut self) {
        for hot in self.0 {
            hot.set(HotCode::Gone);
        }
    }
}

/// What [`Hot::peek`] found.
enum Taken {
    Code(wasmtime::Module),
    Compiling,
    Gone,
}

impl Hot {
    /// Start compiling, on a thread of its own, a part of `source` (a split module whose
    /// defined functions' slots start at `offset`) for its `own` functions, then, if they use
    /// goroutines or callbacks, one for the scheduler's ([`HOT_SCHEDULER`]; once Go runs, at
    /// the thread's priority, inlined), then one for the library functions they call
    /// ([`library_callees`]) and one for the runtime's hot paths ([`HOT_RUNTIME`]), for
    /// `winch` (the primary's engine); then, with a `profile`, a part a round for the
    /// functions its samples find the program running in Winch's code.
    fn start(
        winch: &wasmtime::Engine,
        source: Arc<Vec<u8>>,
        own: Vec<bool>,
        offset: u32,
        rest_busy: Arc<std::sync::atomic::AtomicBool>,
        profile: Option<Arc<Profile>>,
    ) -> Option<Vec<Arc<Hot>>> {
        let parts = FIRST_PARTS + if profile.is_some() { ROUNDS } else { 0 };
        let news = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hot: Vec<Arc<Hot>> = (0..parts)
            .map(|_| {
                Arc::new(Hot {
                    code: Mutex::new(HotCode::Compiling { waitable: true }),
                    ready: Condvar::new(),
                    news: news.clone(),
                })
            })
            .collect();
        let (slots, winch) = (hot.clone(), winch.clone());
        let begun = std::time::Instant::now();
        let compile = move || {
            // Whatever happens here, nobody waits for it for ever.
            let _gone = GoneOnDrop(&slots);
            // A test binary's (no own code): nothing before the runtime's part, which comes
            // once its tests have run a while, so a short run pays for none of it (not even
            // the parse, on the core its whole-module compile wants).
            if !own.iter().any(|&o| o)
                && let Some(samples) = profile.as_ref().and_then(|p| p.samples())
            {
                // Nor the parts of own code an instance would wait for before Go starts.
                for me in slots.iter().take(FIRST_PARTS - 1) {
                    me.set(HotCode::Gone);
                }
                while !samples.has_started() && begun.elapsed().as_secs() < 10 {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                std::thread::sleep(LIBRARIES_AFTER);
            }
            let Some(shape) = parse(&source).filter(|s| s.bodies.len() == own.len()) else {
                return;
            };
            let catalog = Catalog::new(&shape);
            // What Cranelift has compiled (or is compiling).
            let mut done = own.clone();
            for (n, me) in slots.iter().take(FIRST_PARTS).enumerate() {
                let chosen = if n == 0 {
                    // Not the package's initializers: they run once, before `main.main`.
                    own.iter()
                        .zip(&catalog.name_of)
                        .map(|(&o, name)| o && !is_init(name))
                        .collect()
                } else if n == 1 {
                    // A program of goroutines spends its time switching them from its start,
                    // in code its own part calls through the table: as soon as Go runs.
                    let callees = own_callees(&shape, &catalog, &own).unwrap_or_default();
                    if !switches_goroutines(&callees) {
                        me.set(HotCode::Gone);
                        continue;
                    }
                    // Not while the primary compiles: a short program's start would wait.
                    if let Some(samples) = profile.as_ref().and_then(|p| p.samples()) {
                        while !samples.has_started() && begun.elapsed().as_secs() < 10 {
                            std::thread::sleep(std::time::Duration::from_millis(2));
                        }
                    }
                    let chosen = scheduler(&catalog, &done, &callees);
                    listed_part("the scheduler's", &shape, &catalog, &chosen, &mut done);
                    chosen
                } else if n == 3 {
                    // After the libraries' part (so, like it, only in a run that lasts), the
                    // runtime's hot paths: where most programs' time goes next.
                    let chosen = named(&catalog, &done, HOT_RUNTIME);
                    listed_part("the runtime's", &shape, &catalog, &chosen, &mut done);
                    chosen
                } else {
                    // The libraries' only for a run that lasts, and below the program and
                    // the compile of the rest: a short run needs neither core taken from it.
                    std::thread::sleep(LIBRARIES_AFTER.saturating_sub(begun.elapsed()));
                    // Nor while the rest of the module compiles: the program may be waiting
                    // for it (or compiling parts, one by one, until it is there).
                    while rest_busy.load(std::sync::atomic::Ordering::SeqCst) {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    lower_priority();
                    let Some(chosen) = library_callees(&shape, &own) else {
                        me.set(HotCode::Gone);
                        continue;
                    };
                    for (d, &c) in done.iter_mut().zip(&chosen) {
                        *d |= c;
                    }
                    chosen
                };
                me.set(
                    compile_hot(&shape, &chosen, offset, &winch, me, n != 1, n == 1)
                        .map_or(HotCode::Gone, HotCode::Ready),
                );
            }
            if let Some(profile) = profile {
                sampled_rounds(
                    &shape,
                    &catalog,
                    &profile,
                    &slots[FIRST_PARTS..],
                    &mut done,
                    offset,
                    &winch,
                );
            }
        };
        std::thread::Builder::new()
            .name("gojs-compile-hot".into())
            .spawn(compile)
            .ok()?;
        Some(hot)
    }

    /// Publish `code` (a [`HotCode::Gone`] only over code still compiling, not over code ready).
    fn set(&self, code: HotCode) {
        let mut now = self.code.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(code, HotCode::Gone) && !matches!(*now, HotCode::Compiling { .. }) {
            return;
        }
        if matches!(code, HotCode::Ready(_)) {
            self.news.store(true, std::sync::atomic::Ordering::Release);
        }
        *now = code;
        self.ready.notify_all();
    }

    fn is_ready(&self) -> bool {
        matches!(
            *self.code.lock().unwrap_or_else(PoisonError::into_inner),
            HotCode::Ready(_)
        )
    }

    fn peek(&self, wait: bool) -> Taken {
        let mut code = self.code.lock().unwrap_or_else(PoisonError::into_inner);
        while wait && matches!(*code, HotCode::Compiling { waitable: true }) {
            code = self
                .ready
                .wait(code)
                .unwrap_or_else(PoisonError::into_inner);
        }
        match &*code {
            HotCode::Ready(m) => Taken::Code(m.clone()),
            HotCode::Compiling { .. } => Taken::Compiling,
            HotCode::Gone => Taken::Gone,
        }
    }
}

/// This thread at nice 10: below the program (Linux's nice values are per thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: a plain system call on this thread, no memory passed.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
    }
}

/// Cranelift's code, with Winch's calling convention and loaded into `winch`, for a part of
/// `shape` holding the `chosen` functions (`me` is the part's place, told when it is too big
/// to wait for; `inline`: small callees inlined within the part). `None` if there is nothing
/// to compile, too much, or it fails.
fn compile_hot(
    shape: &Shape<'_>,
    chosen: &[bool],
    offset: u32,
    winch: &wasmtime::Engine,
    me: &Hot,
    below: bool,
    inline: bool,
) -> Option<wasmtime::Module> {
    let size = code_size(shape, chosen);
    if size == 0 || size > HOT_MAX {
        return None;
    }
    if size > HOT_WAIT_MAX {
        me.set(HotCode::Compiling { waitable: false });
        // Not waited for: below the program, like the rest.
        if below {
            lower_priority();
        }
    }
    let wasm = part(shape, chosen, offset)?;
    let started = std::time::Instant::now();
    let code = crate::engine::cranelift_for_winch(inline)
        .and_then(|cranelift| {
            crate::engine::compile_go(cranelift, &wasm, crate::engine::Code::Cranelift).ok()
        })
        .and_then(|m| m.serialize().ok())
        // SAFETY: bytes this process just serialized from a module it compiled.
        .and_then(|bytes| unsafe { wasmtime::Module::deserialize(winch, bytes) }.ok());
    tracing::debug!(
        "split: Cranelift's code for {size} bytes of hot functions ({:.1?}{})",
        started.elapsed(),
        if code.is_some() { "" } else { ", failed" }
    );
    code
}

/// The parts after the first two: each time the program has taken [`ROUND_SAMPLES`] more
/// samples (ticks of its CPU time), the functions at least [`ROUND_SHARE`] percent of those
/// samples found on the stack in Winch's code (the hot function and its callers up to where
/// the table leads to it) go to Cranelift, most sampled first, within [`ROUND_BUDGET`] (a
/// round is skipped when under one in [`ROUND_SKIP`] of its samples are in Winch's code);
/// until the parts run out, the buffer is full, or the instance stops sampling (it moved to
/// the whole module's Cranelift code, or is gone).
fn sampled_rounds(
    shape: &Shape<'_>,
    catalog: &Catalog<'_>,
    profile: &Profile,
    slots: &[Arc<Hot>],
    done: &mut [bool],
    offset: u32,
    winch: &wasmtime::Engine,
) {
    let by_name: std::collections::HashMap<&str, usize> = catalog
        .name_of
        .iter()
        .enumerate()
        .filter(|(_, n)| !n.is_empty())
        .map(|(i, &n)| (n, i))
        .collect();
    // Never worth a place: what runs once, and the exports and loop Go enters through.
    for (d, name) in done.iter_mut().zip(&catalog.name_of) {
        *d |= is_init(name) || name.starts_with("wasm_") || name.starts_with("_rt0_");
    }
    let Some(samples) = profile.samples() else {
        return;
    };
    let waited = std::time::Instant::now();
    let mut cursor = 0;
    let mut window: Vec<Vec<u64>> = Vec::new();
    let mut new = 0;
    let mut next = 0;
    while next < slots.len() {
        std::thread::sleep(std::time::Duration::from_millis(10));
        let (records, at) = samples.read(cursor);
        cursor = at;
        new += records.len();
        window.extend(records);
        // The latest samples only: the program's work now, not its start.
        if window.len() > ROUND_SAMPLES {
            window.drain(..window.len() - ROUND_SAMPLES);
        }
        if new < ROUND_SAMPLES {
            let stopped = samples.has_started() && (!samples.is_live() || samples.is_full(cursor));
            // No instance samples (or none started within 10 s): nothing to go by.
            if stopped || (!samples.has_started() && waited.elapsed().as_secs() >= 10) {
                break;
            }
            continue;
        }
        new = 0;
        let (counts, in_winch) = profile.count(&window, &by_name, done.len());
        // Mostly in Cranelift's code already: what is left of Winch's is spread too thin to
        // be worth a round (and a run of those would use the rounds up on crumbs).
        if in_winch * ROUND_SKIP < window.len() {
            window.clear();
            continue;
        }
        let least = (window.len() * ROUND_SHARE).div_ceil(100).max(1);
        let mut hot: Vec<usize> = (0..counts.len())
            .filter(|&i| counts[i] as usize >= least && !done[i] && !catalog.unlikely[i])
            .collect();
        hot.sort_by_key(|&i| std::cmp::Reverse(counts[i]));
        let mut chosen = vec![false; done.len()];
        let mut budget = ROUND_BUDGET;
        hot.retain(|&i| {
            let fits = budget.checked_sub(shape.bodies[i].len());
            budget = fits.unwrap_or(budget);
            fits.is_some()
        });
        if hot.is_empty() {
            continue;
        }
        for &i in &hot {
            chosen[i] = true;
        }
        // And the small functions they call directly, even ones compiled already: called in
        // the part, not through a stub and the table.
        let imported = shape.imported_funcs as usize;
        let mut small = 0;
        for &i in &hot {
            for (_, _, callee) in calls(shape.bodies[i]).unwrap_or_default() {
                if let Some(c) = (callee as usize).checked_sub(imported)
                    && c < chosen.len()
                    && !chosen[c]
                    && shape.bodies[c].len() <= ROUND_CALLEE_MAX
                    && !catalog.unlikely[c]
                {
                    chosen[c] = true;
                    small += 1;
                }
            }
        }
        tracing::debug!(
            "split: round {}: {} functions sampled hot and {small} small ones they call \
             ({in_winch} of {} samples in Winch's code), {}",
            next + 1,
            hot.len(),
            window.len(),
            hot.iter()
                .take(4)
                .map(|&i| catalog.name_of[i])
                .collect::<Vec<_>>()
                .join(", ")
        );
        tracing::trace!(
            "split: round {}: {}",
            next + 1,
            hot.iter()
                .map(|&i| format!("{} ({})", catalog.name_of[i], counts[i]))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for (d, &c) in done.iter_mut().zip(&chosen) {
            *d |= c;
        }
        let me = &slots[next];
        me.set(
            compile_hot(shape, &chosen, offset, winch, me, true, false)
                .map_or(HotCode::Gone, HotCode::Ready),
        );
        next += 1;
        // What ran meanwhile is in the code placed just now, or not: sampled afresh.
        window.clear();
    }
    samples.disarm();
    // The buffer goes back for another module's first run once this instance's timer is gone.
    profile.forget_samples();
}

/// The threads that compile secondaries (one per core), made on first use.
fn compile_pool() -> Result<&'static rayon::ThreadPool, String> {
    static POOL: OnceLock<Result<rayon::ThreadPool, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("gojs-compile-{i}"))
            // Below the program and the parts it waits for: the secondary is only needed
            // once the program has run for a while. (Linux's nice values are per thread.)
            .start_handler(|_| lower_priority())
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// One instance's side of a split module.
pub(crate) enum Loading {
    /// Not instantiated yet: the linker that instantiated the primary, with its exports added,
    /// and which defined functions this instance has code for (the primary's and parts').
    Pending(Arc<Secondary>, Box<Linker<HostState>>, Vec<bool>),
    Loaded,
    Failed(String),
}

/// Fill the cold slots of `primary`'s table with host functions that instantiate the secondary
/// (waiting for its code if need be) and call on; after that the slots hold the real code.
pub(crate) fn install(
    store: &mut Store<HostState>,
    mut linker: Linker<HostState>,
    primary: wasmtime::Instance,
    secondary: &Arc<Secondary>,
) -> wasmtime::Result<Loading> {
    let table = primary
        .get_table(&mut *store, TABLE_EXPORT)
        .ok_or_else(|| wasmtime::Error::msg("the split module lost its table export"))?;
    linker.instance(&mut *store, SHARED_MODULE, primary)?;
    let engine = store.engine().clone();
    // Per type of cold function: its type, and the primary's caller of slots of that type
    // ([`caller`]), through which the embedder's functions call the code they load (it has no
    // entry for the host: `Config::host_entries_for_exports_only`).
    let mut per_type: Vec<Option<(FuncType, Func)>> = vec![None; secondary.types.len()];
    for cold in &secondary.cold {
        let (ty, via) = match &mut per_type[cold.ty as usize] {
            Some(known) => known.clone(),
            entry => {
                let sig = &secondary.types[cold.ty as usize];
                let ty = FuncType::new(
                    &engine,
                    sig.params.iter().map(val_type),
                    sig.results.iter().map(val_type),
                );
                let via = primary
                    .get_func(&mut *store, &caller_export(cold.ty))
                    .ok_or_else(|| wasmtime::Error::msg("the split module lost a caller"))?;
                entry.insert((ty, via)).clone()
            }
        };
        let slot = u64::from(cold.slot);
        let f = Func::new(&mut *store, ty, move |mut caller, params, results| {
            load(&mut caller, slot)?;
            let mut args = Vec::with_capacity(params.len() + 1);
            args.extend_from_slice(params);
            args.push(Val::I32(slot as i32));
            via.call(&mut caller, &args, results)
        });
        table.set(&mut *store, slot, Ref::Func(Some(f)))?;
    }
    let mut loaded = vec![true; secondary.functions];
    for cold in &secondary.cold {
        if let Some(i) = cold.slot.checked_sub(secondary.offset) {
            loaded[i as usize] = false;
        }
    }
    if secondary.has_hot() {
        store.data_mut().hot_linker = Some((secondary.clone(), Box::new(linker.clone()), 0));
    }
    Ok(Loading::Pending(
        secondary.clone(),
        Box::new(linker),
        loaded,
    ))
}

/// Make the cold function in `slot` callable: while the secondary is compiling, by compiling
/// and instantiating a part for it; after that, by instantiating the secondary unless this
/// instance already has.
fn load(caller: &mut Caller<'_, HostState>, slot: u64) -> wasmtime::Result<()> {
    let state = std::mem::replace(&mut caller.data_mut().split, Loading::Loaded);
    let outcome = match state {
        Loading::Loaded => return Ok(()),
        Loading::Failed(e) => Err(e),
        Loading::Pending(secondary, linker, mut loaded) => {
            secondary.start_later();
            if !secondary.is_ready() {
                let engine = caller.engine().clone();
                let slot = u32::try_from(slot).ok();
                if let Some(code) = slot.and_then(|s| secondary.part(&engine, s, &mut loaded)) {
                    match linker.instantiate(&mut *caller, &code) {
                        Ok(_) => {
                            caller.data_mut().split = Loading::Pending(secondary, linker, loaded);
                            return Ok(());
                        }
                        Err(e) => tracing::debug!("cannot instantiate a part: {e:#}"),
                    }
                }
            }
            load_secondary(caller, &secondary, &linker)
        }
    };
    outcome.map_err(|e| {
        caller.data_mut().split = Loading::Failed(e.clone());
        wasmtime::Error::msg(e)
    })
}

fn load_secondary(
    caller: &mut Caller<'_, HostState>,
    secondary: &Arc<Secondary>,
    linker: &Linker<HostState>,
) -> Result<(), String> {
    secondary.wait().and_then(|code| {
        linker
            .instantiate(&mut *caller, &code)
            .map(drop)
            .map_err(|e| format!("cannot instantiate the rest of the module: {e:#}"))
    })?;
    tracing::debug!("split: the rest of the module in place");
    // The secondary's element segment pointed every slot at its functions, those of Cranelift's
    // parts too: point theirs back (and place what else is ready).
    if let Some((first, hot_linker, _)) = caller.data_mut().hot_linker.take() {
        let (next, parts) = first.place_hot(&mut *caller, &hot_linker, 0, false, " again");
        if parts > 0 {
            tracing::debug!("split: {parts} parts of Cranelift's code placed again after the rest");
        }
        caller.data_mut().hot_linker = Some((first, hot_linker, next));
    }
    Ok(())
}

/// From an import's call (Go's frames on the stack): instantiate the parts of Cranelift's code
/// that became ready. Their element segments point the table's slots at them, so Go's next
/// calls through the table run there (the frames running keep their code, as when the
/// secondary comes in a call). Without this a program that never returns to the event loop
/// between callbacks (its `js.FuncOf` functions called from JS that Go called) would keep
/// Winch's code until it ends.
pub(crate) fn place_hot_during_call(caller: &mut Caller<'_, HostState>) {
    let Some((first, linker, from)) = caller.data_mut().hot_linker.take() else {
        return;
    };
    let (next, _) = first.place_hot(&mut *caller, &linker, from, false, ", in a call");
    caller.data_mut().hot_linker = Some((first, linker, next));
}

fn val_type(t: &ValType) -> wasmtime::ValType {
    match t {
        ValType::I32 => wasmtime::ValType::I32,
        ValType::I64 => wasmtime::ValType::I64,
        ValType::F32 => wasmtime::ValType::F32,
        _ => wasmtime::ValType::F64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module shaped like the Go linker's: two imports, globals, a table filled by one
    /// segment at offset 3, an exported `run`, and functions named `hot`, `cold_a`, `cold_b`
    /// (each calls the next directly).
    const NAMES: [&str; 4] = ["run", "hot", "cold_a", "cold_b"];

    fn go_shaped(start: bool, names: [&str; 4]) -> Vec<u8> {
        go_shaped_calling(start, &names, &[3, 4, 5])
    }

    /// [`go_shaped`] with the three calls going to `callees` (which may be out of range).
    /// Also with more functions: one per name, each but the last calling one of `callees`.
    fn go_shaped_calling(start: bool, names: &[&str], callees: &[u32]) -> Vec<u8> {
        let n = names.len() as u32;
        let mut m = enc::Module::new();
        let mut types = enc::TypeSection::new();
        types.ty().function([enc::ValType::I32], []);
        types
            .ty()
            .function([enc::ValType::I32], [enc::ValType::I32]);
        m.section(&types);
        let mut imports = enc::ImportSection::new();
        imports.import("gojs", "a", enc::EntityType::Function(0));
        imports.import("gojs", "b", enc::EntityType::Function(0));
        m.section(&imports);
        let mut funcs = enc::FunctionSection::new();
        for _ in 0..n {
            funcs.function(1);
        }
        m.section(&funcs);
        let mut tables = enc::TableSection::new();
        tables.table(enc::TableType {
            element_type: enc::RefType::FUNCREF,
            table64: false,
            minimum: 3 + u64::from(n),
            maximum: None,
            shared: false,
        });
        m.section(&tables);
        let mut mems = enc::MemorySection::new();
        mems.memory(enc::MemoryType {
            minimum: 1,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        m.section(&mems);
        let mut globals = enc::GlobalSection::new();
        let g = |val_type| enc::GlobalType {
            val_type,
            mutable: true,
            shared: false,
        };
        globals.global(g(enc::ValType::I32), &enc::ConstExpr::i32_const(0));
        globals.global(g(enc::ValType::I64), &enc::ConstExpr::i64_const(0));
        m.section(&globals);
        let mut exports = enc::ExportSection::new();
        exports.export("run", enc::ExportKind::Func, 2);
        exports.export("mem", enc::ExportKind::Memory, 0);
        m.section(&exports);
        if start {
            m.section(&enc::StartSection { function_index: 0 });
        }
        let mut elems = enc::ElementSection::new();
        elems.active(
            None,
            &enc::ConstExpr::i32_const(3),
            enc::Elements::Functions(Cow::Owned((2..2 + n).collect())),
        );
        m.section(&elems);
        // run(x) = hot(x) + 1, hot(x) = cold_a(x) + 10, cold_a(x) = cold_b(x) + 100,
        // cold_b(x) = x + global 0.
        let mut code = enc::CodeSection::new();
        for (&callee, add) in callees.iter().zip((0..).map(|i| 10i32.pow(i))) {
            let mut f = enc::Function::new([]);
            f.instructions()
                .local_get(0)
                .call(callee)
                .i32_const(add)
                .i32_add()
                .end();
            code.function(&f);
        }
        let mut f = enc::Function::new([]);
        f.instructions().local_get(0).global_get(0).i32_add().end();
        code.function(&f);
        m.section(&code);
        let mut map = enc::NameMap::new();
        for (i, n) in names.iter().enumerate() {
            map.append(2 + i as u32, n);
        }
        let mut section = enc::NameSection::new();
        section.functions(&map);
        m.section(&section);
        m.finish()
    }

    fn validate(wasm: &[u8]) {
        wasmparser::Validator::new()
            .validate_all(wasm)
            .unwrap_or_else(|e| panic!("invalid: {e}"));
    }

    #[test]
    fn calls_are_read_directly_as_wasmparser_reads_them() {
        let mut f = enc::Function::new([(2, enc::ValType::I64), (1, enc::ValType::F64)]);
        f.instructions()
            .block(enc::BlockType::Empty)
            .loop_(enc::BlockType::Result(enc::ValType::I32))
            .i32_const(-1_000_000)
            .br_table([0u32, 1, 0], 1)
            .end()
            .i64_const(i64::MIN)
            .i64_load(enc::MemArg {
                offset: 1 << 40,
                align: 3,
                memory_index: 0,
            })
            .f32_const(1.5.into())
            .f64_const(2.5.into())
            .call(300_000)
            .memory_fill(0)
            .memory_copy(0, 0)
            .i32_trunc_sat_f64_u()
            .call_indirect(0, 7)
            .global_set(3)
            .i64_extend32_s()
            .end()
            .call(1)
            .end();
        let mut body = Vec::new();
        enc::Encode::encode(&f, &mut body);
        // Without its size prefix.
        let body = &body[crate::rewrite::read_u32(&body).unwrap().1..];
        let Scan::Calls(found) = scan_calls(body) else {
            panic!("not decoded");
        };
        assert_eq!(found.iter().map(|c| c.2).collect::<Vec<_>>(), [300_000, 1]);
        assert_eq!(Some(found), calls_by_wasmparser(body));
        // Cut short anywhere: never decoded as calls.
        for i in 0..body.len() {
            assert_ne!(
                std::mem::discriminant(&scan_calls(&body[..i])),
                std::mem::discriminant(&Scan::Calls(Vec::new())),
                "cut at {i}"
            );
        }
        // What it doesn't decode goes to wasmparser; what `calls` refuses, it refuses.
        let other = [0u8, 0xfd, 0x0c, 0x0b]; // v128.const's prefix: SIMD
        assert_eq!(scan_calls(&other), Scan::Unknown);
        let ref_func = [0u8, 0xd2, 0x00, 0x1a, 0x0b];
        assert_eq!(scan_calls(&ref_func), Scan::Refused);
        assert_eq!(calls(&ref_func), None);
    }

    #[test]
    fn splits_go_shaped_modules_into_two_valid_halves() {
        let wasm = go_shaped(false, NAMES);
        validate(&wasm);
        let s = split(&wasm, Pick::Predicted(&|n, _| n == "hot")).expect("split");
        // `run` (exported) and `hot` stay; the slots are the segment's offset + position.
        assert_eq!(s.cold, [Cold { slot: 5, ty: 1 }, Cold { slot: 6, ty: 1 }]);
        assert_eq!(s.types.len(), 2);
        validate(&s.primary);
        let secondary = s.secondary().unwrap();
        validate(&secondary);
        let imports: Vec<(String, String)> = Parser::new(0)
            .parse_all(&secondary)
            .filter_map(|p| match p.unwrap() {
                Payload::ImportSection(r) => Some(
                    r.into_imports()
                        .map(|i| {
                            let i = i.unwrap();
                            (i.module.to_string(), i.name.to_string())
                        })
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .flatten()
            .collect();
        let names: Vec<&str> = imports.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "a",
                "b",
                MEMORY_EXPORT,
                TABLE_EXPORT,
                "gojs:split:global:0",
                "gojs:split:global:1"
            ]
        );
    }

    #[test]
    fn plans_resume_the_split_they_record_and_nothing_else() {
        let wasm = go_shaped(false, NAMES);
        let s = split(&wasm, Pick::Predicted(&|n, _| n == "hot")).expect("split");
        let bytes = Plan::of(&s, "x.primary-1.cwasm".into()).encode();
        let plan = Plan::decode(&bytes).expect("decodes");
        assert_eq!(plan.primary, "x.primary-1.cwasm");
        let resumed = plan.resume(&wasm).expect("fits its module");
        assert_eq!(resumed.cold, s.cold);
        assert_eq!(
            (resumed.functions, resumed.offset, resumed.types.len()),
            (s.functions, s.offset, s.types.len())
        );
        assert_eq!(resumed.source, s.source);
        assert!(resumed.primary.is_empty());
        // Damaged anywhere, or cut short: refused.
        for i in 0..bytes.len() {
            assert!(Plan::decode(&bytes[..i]).is_none(), "cut at {i}");
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(Plan::decode(&bad).is_none(), "byte {i} flipped");
        }
        // A plan that doesn't fit the module (another number of functions, a slot out of
        // range or of another type, slots out of order, none): not resumed.
        let other = go_shaped(true, NAMES);
        let plan = |cold: Vec<Cold>, functions| Plan {
            primary: String::new(),
            cold,
            functions,
            offset: s.offset,
        };
        assert!(
            plan(s.cold.clone(), s.functions + 1)
                .resume(&wasm)
                .is_none()
        );
        let mut wrong_type = s.cold.clone();
        wrong_type[0].ty = 0;
        assert!(plan(wrong_type, s.functions).resume(&wasm).is_none());
        let mut out_of_range = s.cold.clone();
        out_of_range[1].slot = 1000;
        assert!(plan(out_of_range, s.functions).resume(&wasm).is_none());
        let mut reversed = s.cold.clone();
        reversed.reverse();
        assert!(plan(reversed, s.functions).resume(&wasm).is_none());
        // Nothing cold: a test binary's split (`Pick::Whole`), resumed with no own code to
        // compile first.
        let with_main = go_shaped(false, ["run", "main.main", "cold_a", "cold_b"]);
        let m = split(&with_main, Pick::ExportsOnly).expect("split");
        let own = |p: Plan| p.resume(&with_main).expect("resumed").own;
        assert!(own(plan(m.cold.clone(), m.functions)).iter().any(|&o| o));
        let whole = own(plan(Vec::new(), m.functions));
        assert!(!whole.iter().any(|&o| o), "{whole:?}");
        // A module of a shape the split refuses (a start function) isn't resumed either.
        assert!(split(&other, Pick::Predicted(&|n, _| n == "hot")).is_none());
        assert!(plan(s.cold.clone(), s.functions).resume(&other).is_none());
    }

    #[test]
    fn split_halves_compute_what_the_whole_module_does() {
        use wasmtime::{Engine, Linker, Module, Store, Val};
        // As gojs configures its engines: only exports have an entry for the host.
        let engine =
            Engine::new(wasmtime::Config::new().host_entries_for_exports_only(true)).unwrap();
        let wasm = go_shaped(false, NAMES);
        let s = split(&wasm, Pick::Predicted(&|n, _| n == "hot")).unwrap();
        let linker = || {
            let mut l = Linker::new(&engine);
            l.func_wrap("gojs", "a", |_: i32| {}).unwrap();
            l.func_wrap("gojs", "b", |_: i32| {}).unwrap();
            l
        };
        let run = |store: &mut Store<()>, instance: wasmtime::Instance, x: i32| {
            let run = instance
                .get_typed_func::<i32, i32>(&mut *store, "run")
                .unwrap();
            run.call(&mut *store, x)
        };

        let mut store = Store::new(&engine, ());
        let whole = linker()
            .instantiate(&mut store, &Module::new(&engine, &wasm).unwrap())
            .unwrap();
        let g = whole.get_global(&mut store, "gojs:split:global:0");
        assert!(g.is_none(), "the whole module has no split exports");

        let mut store = Store::new(&engine, ());
        let mut l = linker();
        let primary = l
            .instantiate(&mut store, &Module::new(&engine, &s.primary).unwrap())
            .unwrap();
        let table = primary.get_table(&mut store, TABLE_EXPORT).unwrap();
        // Cold slots stay empty until the secondary is instantiated (the embedder fills them).
        for c in &s.cold {
            assert!(table.get(&mut store, c.slot.into()).unwrap().is_null());
        }
        assert!(
            run(&mut store, primary, 1).is_err(),
            "reached a cold function"
        );
        l.instance(&mut store, SHARED_MODULE, primary).unwrap();
        l.instantiate(
            &mut store,
            &Module::new(&engine, s.secondary().unwrap()).unwrap(),
        )
        .unwrap();
        // Globals are shared: the secondary's code reads what the primary's export holds.
        primary
            .get_global(&mut store, "gojs:split:global:0")
            .unwrap()
            .set(&mut store, Val::I32(42))
            .unwrap();
        assert_eq!(run(&mut store, primary, 1).unwrap(), 1 + 42 + 111);
        // Every slot now holds real code: cold_b's slot is the secondary's cold_b, which the
        // host calls through the primary's caller of its type (it has no entry of its own:
        // taken out of the table and called, it traps cleanly).
        let cold_b = table
            .get(&mut store, 6)
            .unwrap()
            .as_func()
            .flatten()
            .copied()
            .unwrap();
        let direct = cold_b
            .typed::<i32, i32>(&store)
            .unwrap()
            .call(&mut store, 5);
        let e = format!("{:#}", direct.unwrap_err());
        assert!(e.contains("not callable from the host"), "{e}");
        let ty = s.cold.iter().find(|c| c.slot == 6).unwrap().ty;
        let via = primary
            .get_typed_func::<(i32, i32), i32>(&mut store, &caller_export(ty))
            .unwrap();
        assert_eq!(via.call(&mut store, (5, 6)).unwrap(), 47);
    }

    #[test]
    fn leaves_other_shapes_whole() {
        let none = Pick::Predicted(&|_, _| false);
        let start = go_shaped(true, NAMES);
        assert!(split(&start, Pick::ExportsOnly).is_none(), "start function");
        let all = Pick::Predicted(&|_, _| true);
        assert!(
            split(&go_shaped(false, NAMES), all).is_none(),
            "nothing cold"
        );
        assert!(split(b"\0asm\x01\0\0\0", none).is_none(), "empty module");
        assert!(split(b"garbage", Pick::ExportsOnly).is_none());
        // Invalid: main.main calls function 99, which doesn't exist.
        let wild = go_shaped_calling(false, &["run", "main.main", "x", "y"], &[3, 99, 5]);
        assert!(split(&wild, none).is_none());
        // Forced, the primary is valid and the secondary is not: such a module fails at the
        // first call into the secondary (its compile error), not before it starts.
        let s = split(&wild, Pick::ExportsOnly).expect("split");
        validate(&s.primary);
        assert!(
            wasmparser::Validator::new()
                .validate_all(&s.secondary().unwrap())
                .is_err()
        );
    }

    /// Guest bytes are untrusted: no corruption of a Go-shaped module makes the splitter panic
    /// (it splits, or declines).
    #[test]
    fn damaged_modules_never_panic() {
        let wasm = go_shaped(false, ["run", "main.main", "fmt.x", "fmt.y"]);
        for at in 8..wasm.len() {
            for byte in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut bad = wasm.clone();
                bad[at] = byte;
                let _ = split(&bad, Pick::Predicted(&|n, _| n == "fmt.x"));
                let _ = split(&bad, Pick::ExportsOnly);
                for f in 0..4 {
                    let _ = part_for(&bad, 3, f, &mut [false; 4]);
                }
            }
            let _ = split(&wasm[..at], Pick::ExportsOnly);
        }
    }

    #[test]
    fn what_the_program_calls_joins_the_primary() {
        // main.main calls fmt.x, which calls fmt.y, which calls runtime.throw: the first two
        // join the primary, throw (a failure path) doesn't.
        let names = ["run", "main.main", "fmt.x", "fmt.y", "runtime.throw"];
        let wasm = go_shaped_calling(false, &names, &[3, 4, 5, 6]);
        let s = split(&wasm, Pick::Predicted(&|_, _| false)).expect("split");
        assert_eq!(s.cold, [Cold { slot: 7, ty: 1 }]);
        // Forced: everything but the export is cold, main.main included.
        let s = split(&wasm, Pick::ExportsOnly).expect("split");
        assert_eq!(s.cold.len(), 4);
    }

    #[test]
    fn expansion_follows_closures_methods_and_initializers() {
        // Everything calls bufio.(*Writer).Flush (or itself); Write and Flush.func1 are only
        // related by name, as are the initializers to nothing at all.
        let names = [
            "run",
            "main.main",
            "bufio.__Writer_.Flush",
            "bufio.__Writer_.Write",
            "bufio.__Writer_.Flush.func1",
            "os.init",
            "os.init.0",
            "os.initx",
        ];
        let wasm = go_shaped_calling(false, &names, &[3, 4, 4, 4, 4, 4, 4]);
        let s = split(&wasm, Pick::Predicted(&|_, _| false)).expect("split");
        assert_eq!(s.cold, [Cold { slot: 10, ty: 1 }], "only os.initx is cold");
    }

    #[test]
    fn expansion_stays_within_its_budget() {
        let names = ["run", "main.main", "fmt.x", "fmt.y"];
        let wasm = go_shaped(false, names);
        let shape = parse(&wasm).unwrap();
        let catalog = Catalog::new(&shape);
        let size = |i: usize| shape.bodies[i].len();
        let mut chosen = vec![false; 4];
        assert_eq!(catalog.expand(&shape, vec![2], &mut chosen, 0), None);
        let mut chosen = vec![false; 4];
        let spent = catalog
            .expand(&shape, vec![2], &mut chosen, size(2))
            .unwrap();
        assert_eq!((spent, chosen), (size(2), vec![false, false, true, false]));
        let mut chosen = vec![false; 4];
        let all = catalog
            .expand(&shape, vec![1], &mut chosen, usize::MAX)
            .unwrap();
        assert_eq!(all, size(1) + size(2) + size(3));
        assert_eq!(chosen, [false, true, true, true]);
    }

    #[test]
    fn test_binaries_stay_whole() {
        let names = ["run", "main.main", "testing.MainStart", "x", "y"];
        let wasm = go_shaped_calling(false, &names, &[3, 4, 4, 4]);
        assert!(split(&wasm, Pick::Predicted(&|_, _| false)).is_none());
        let names = ["run", "main.main", "other.MainStart", "x", "y"];
        let wasm = go_shaped_calling(false, &names, &[3, 4, 4, 4]);
        assert!(split(&wasm, Pick::Predicted(&|_, _| false)).is_some());
    }

    #[test]
    fn goroutine_functions_join_programs_that_start_goroutines() {
        let hot = |name: &str, uses: Uses| uses.goroutines && name == "runtime.goexit";
        // main.main starts a goroutine (calls runtime.newproc): goexit is hot.
        let names = ["run", "main.main", "runtime.newproc", "runtime.goexit", "y"];
        let wasm = go_shaped_calling(false, &names, &[3, 4, 4, 4]);
        let s = split(&wasm, Pick::Predicted(&hot)).expect("split");
        assert_eq!(s.cold, [Cold { slot: 7, ty: 1 }]);
        // It doesn't: goexit stays cold.
        let names = ["run", "main.main", "fmt.x", "runtime.goexit", "y"];
        let wasm = go_shaped_calling(false, &names, &[3, 4, 4, 4]);
        let s = split(&wasm, Pick::Predicted(&hot)).expect("split");
        assert_eq!(s.cold, [Cold { slot: 6, ty: 1 }, Cold { slot: 7, ty: 1 }]);
    }

    #[test]
    fn library_functions_join_programs_that_link_json_or_regexp() {
        let hot = |name: &str, uses: Uses| uses.libraries && name == "reflect.x";
        let names = [
            "run",
            "main.main",
            "encoding_json.Marshal",
            "reflect.x",
            "y",
        ];
        let wasm = go_shaped_calling(false, &names, &[3, 3, 3, 3]);
        let s = split(&wasm, Pick::Predicted(&hot)).expect("split");
        assert_eq!(s.cold, [Cold { slot: 5, ty: 1 }, Cold { slot: 7, ty: 1 }]);
        let names = ["run", "main.main", "fmt.Marshal", "reflect.x", "y"];
        let wasm = go_shaped_calling(false, &names, &[3, 3, 3, 3]);
        let s = split(&wasm, Pick::Predicted(&hot)).expect("split");
        assert_eq!(s.cold.len(), 3, "reflect.x stays cold");
    }

    /// Sampled addresses count for the function whose code holds them, in any module noted
    /// (matched by name), once a sample however often it recurs; a return address counts for
    /// the function its call is in even when the call ends it; addresses elsewhere don't.
    #[test]
    fn samples_count_for_the_functions_their_addresses_are_in() {
        let engine = wasmtime::Engine::default();
        let wasm = go_shaped(false, NAMES);
        let module = wasmtime::Module::new(&engine, &wasm).unwrap();
        let profile = Profile {
            samples: Mutex::new(None),
            winch_code: Mutex::default(),
        };
        profile.note(&module);
        let shape = parse(&wasm).unwrap();
        let catalog = Catalog::new(&shape);
        let by_name: std::collections::HashMap<&str, usize> = catalog
            .name_of
            .iter()
            .enumerate()
            .map(|(i, &n)| (n, i))
            .collect();
        let text = module.text().as_ptr() as u64;
        let at = |name: &str| {
            let f = module
                .functions()
                .find(|f| f.name.as_deref() == Some(name))
                .unwrap();
            (text + f.offset as u64, text + (f.offset + f.len) as u64)
        };
        let (hot, hot_end) = at("hot");
        let (cold_a, _) = at("cold_a");
        let (run, _) = at("run");
        let records = vec![
            // In `hot`, called from `run` (a return address just past a call at run's end
            // still counts for run), `hot` again further up, and an address in no module.
            vec![hot + 1, run + 8, hot_end, 8],
            // In `cold_a`; the return address is hot's first byte + 1: the call is in hot.
            vec![cold_a + 2, hot + 1],
            vec![1, 2, 3],
        ];
        let (counts, in_winch) = profile.count(&records, &by_name, shape.bodies.len());
        let index = |name: &str| catalog.name_of.iter().position(|&n| n == name).unwrap();
        assert_eq!(counts[index("hot")], 2, "{counts:?}");
        assert_eq!(counts[index("run")], 1, "{counts:?}");
        assert_eq!(counts[index("cold_a")], 1, "{counts:?}");
        assert_eq!(counts[index("cold_b")], 0, "{counts:?}");
        assert_eq!(in_winch, 2);
    }

    /// The scheduler's part takes the list's first names for any program of goroutines, and
    /// those after a `when PREFIX` line only for a program that calls a function so named;
    /// what Cranelift compiled already is left out.
    #[test]
    fn the_scheduler_s_part_follows_what_the_program_calls() {
        let names = [
            "runtime.gopark",
            "runtime.selectgo",
            "runtime.newproc1",
            "main.main",
        ];
        let wasm = go_shaped_calling(false, &names, &[3, 4, 5]);
        let shape = parse(&wasm).unwrap();
        let catalog = Catalog::new(&shape);
        let index = |name: &str| catalog.name_of.iter().position(|&n| n == name).unwrap();
        let chosen = |done: &[bool], callees: &[&str]| -> Vec<&str> {
            chosen_names(&catalog, &scheduler(&catalog, done, callees))
        };
        assert!(switches_goroutines(&["main.f", "runtime.newproc"]));
        assert!(switches_goroutines(&["syscall_js.FuncOf"]));
        assert!(!switches_goroutines(&[
            "syscall_js.Value.Get",
            "fmt.Println"
        ]));
        let none = vec![false; names.len()];
        assert_eq!(chosen(&none, &["runtime.chansend1"]), ["runtime.gopark"]);
        assert_eq!(
            chosen(&none, &["runtime.selectgo", "runtime.newproc"]),
            ["runtime.gopark", "runtime.selectgo", "runtime.newproc1"]
        );
        let mut done = none.clone();
        done[index("runtime.gopark")] = true;
        assert_eq!(
            chosen(&done, &["runtime.selectnbrecv"]),
            ["runtime.selectgo"]
        );
    }

    /// The runtime's part takes the listed functions the module has and Cranelift hasn't
    /// compiled yet, called by the program or not, and nothing else.
    #[test]
    fn the_runtime_s_part_takes_its_list_and_nothing_compiled() {
        let names = [
            "runtime.mallocgc",
            "runtime.gcDrain",
            "runtime.newproc1",
            "main.main",
        ];
        let wasm = go_shaped_calling(false, &names, &[3, 4, 5]);
        let shape = parse(&wasm).unwrap();
        let catalog = Catalog::new(&shape);
        let chosen = |done: &[bool]| -> Vec<&str> {
            chosen_names(&catalog, &named(&catalog, done, HOT_RUNTIME))
        };
        assert_eq!(chosen(&[false; 4]), ["runtime.mallocgc", "runtime.gcDrain"]);
        assert_eq!(chosen(&[true, false, false, false]), ["runtime.gcDrain"]);
        // The list's names are one a line, each once.
        let listed: Vec<&str> = list_lines(HOT_RUNTIME).collect();
        let unique: std::collections::HashSet<&str> = listed.iter().copied().collect();
        assert_eq!(unique.len(), listed.len());
        assert!(listed.iter().all(|n| !n.contains(' ')), "{listed:?}");
    }

    /// A part for one of the collector's functions holds the others too, called or not; a
    /// part for another function doesn't, and what is loaded already stays out.
    #[test]
    fn a_part_for_the_collector_holds_all_of_it() {
        // run calls gcStart, gcStart calls other, gcDrain calls run; other calls nothing.
        let names = ["run", "runtime.gcStart", "runtime.gcDrain", "other"];
        let wasm = go_shaped_calling(false, &names, &[3, 5, 2]);
        let shape = parse(&wasm).unwrap();
        let offset = shape.elem_offset.unwrap();
        let mut chosen = vec![true, false, false, false];
        part_for(&wasm, offset, 3, &mut chosen).unwrap();
        assert_eq!(chosen, [true, false, false, true]);
        part_for(&wasm, offset, 1, &mut chosen).unwrap();
        assert_eq!(chosen, [true; 4]);
        let mut chosen = vec![true, false, true, true];
        let part = part_for(&wasm, offset, 1, &mut chosen).unwrap();
        validate(&part);
        assert_eq!(chosen, [true; 4]);
    }

    #[test]
    fn parts_fill_cold_slots_with_working_code() {
        use wasmtime::{Engine, Linker, Module, Store};
        let engine = Engine::default();
        let wasm = go_shaped(false, NAMES);
        let s = split(&wasm, Pick::Predicted(&|n, _| n == "hot")).unwrap();
        let mut linker = Linker::new(&engine);
        linker.func_wrap("gojs", "a", |_: i32| {}).unwrap();
        linker.func_wrap("gojs", "b", |_: i32| {}).unwrap();
        let mut store = Store::new(&engine, ());
        let primary = linker
            .instantiate(&mut store, &Module::new(&engine, &s.primary).unwrap())
            .unwrap();
        linker.instance(&mut store, SHARED_MODULE, primary).unwrap();
        let table = primary.get_table(&mut store, TABLE_EXPORT).unwrap();
        let run = primary
            .get_typed_func::<i32, i32>(&mut store, "run")
            .unwrap();
        // The primary has run and hot; a part for cold_a with a budget too small for cold_b
        // would still bring cold_b along (a budget is never below the function asked for, and
        // here both are tiny), so ask with cold_b already marked loaded.
        let mut chosen = vec![true, true, false, true];
        let wasm_a = part_for(&s.source, s.offset, 2, &mut chosen).unwrap();
        assert_eq!(chosen, [true; 4]);
        validate(&wasm_a);
        linker
            .instantiate(&mut store, &Module::new(&engine, &wasm_a).unwrap())
            .unwrap();
        assert!(
            !table.get(&mut store, 5).unwrap().is_null(),
            "cold_a's slot"
        );
        assert!(table.get(&mut store, 6).unwrap().is_null(), "cold_b's slot");
        assert!(run.call(&mut store, 1).is_err(), "cold_b is still missing");
        let mut chosen = vec![true, true, true, false];
        let wasm_b = part_for(&s.source, s.offset, 3, &mut chosen).unwrap();
        linker
            .instantiate(&mut store, &Module::new(&engine, &wasm_b).unwrap())
            .unwrap();
        // Globals are shared: global 0 is still 0 here.
        assert_eq!(run.call(&mut store, 1).unwrap(), 1 + 111);
        // A part for cold_a from nothing loaded brings what cold_a calls.
        let mut chosen = vec![true, true, false, false];
        part_for(&s.source, s.offset, 2, &mut chosen).unwrap();
        assert_eq!(chosen, [true; 4]);
        // Out of range, or a mismatched set: no part.
        assert!(part_for(&s.source, s.offset, 9, &mut [false; 4]).is_none());
        assert!(part_for(&s.source, s.offset, 2, &mut [false; 3]).is_none());
    }

    #[test]
    fn calls_that_only_run_when_a_check_fails_dont_count() {
        // main.main calls the runtime's panic paths, which no listed program ran: still split,
        // with them cold.
        for callee in [
            "runtime.sigpanic",
            "runtime.panicIndex",
            "runtime.goPanicSliceB",
        ] {
            let wasm = go_shaped(false, ["run", "main.main", callee, "fmt.y"]);
            let s = split(&wasm, Pick::Predicted(&|_, _| false)).expect("split");
            assert_eq!(s.cold.len(), 2, "{callee}");
            assert!(
                s.cold.contains(&Cold { slot: 5, ty: 1 }),
                "{callee} is cold"
            );
        }
        // Anything else keeps the program whole.
        let wasm = go_shaped(false, ["run", "main.main", "runtime.mallocgc", "fmt.y"]);
        assert!(split(&wasm, Pick::Predicted(&|_, _| false)).is_none());
    }
}
