//! The guest's filesystem: a table of grants (host directory → guest path) and open files.
//!
//! Guest paths are resolved lexically against the instance's working directory (like Node's
//! `path.resolve`), then matched against the grants, longest guest path first. Inside a granted
//! directory every operation goes through `cap-std`, so `..`, absolute symlinks and symlinks that
//! lead out of the directory are refused (`EACCES`) instead of reaching the rest of the host.
//! Guest paths outside every grant don't exist (`ENOENT`), except the directories *above* a grant,
//! which appear as read-only directories listing the way down to the grants.
//!
//! [`Grant::host_filesystem`] is the exception: the host's whole filesystem, seen through the
//! same paths as the host process, with no confinement (what Node gives a program, and what
//! `go test` expects of `go_js_wasm_exec`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cap_fs_ext::{DirExt, OpenOptionsMaybeDirExt, SystemTimeSpec};

use crate::host::path::resolve;

/// At most this many files open at once per instance; more is `EMFILE`.
pub(crate) const MAX_OPEN_FILES: usize = 4096;

/// One directory of the host made visible to the guest.
///
/// ```
/// let config = gojs::Config::new()
///     .grant(gojs::Grant::read_only("/usr/share/zoneinfo", "/zoneinfo"))
///     .grant(gojs::Grant::read_write("/tmp/work", "/work"))
///     .cwd("/work");
/// ```
#[derive(Clone, Debug)]
pub struct Grant {
    pub(crate) host: PathBuf,
    pub(crate) guest: String,
    pub(crate) read_only: bool,
    pub(crate) ambient: bool,
}

impl Grant {
    /// Grant the host directory `host` at the absolute guest path `guest`, read-write.
    pub fn read_write(host: impl Into<PathBuf>, guest: impl AsRef<str>) -> Grant {
        Grant {
            host: host.into(),
            guest: resolve("/", &[guest.as_ref()]),
            read_only: false,
            ambient: false,
        }
    }

    /// Grant the host directory `host` at the absolute guest path `guest`, read-only.
    pub fn read_only(host: impl Into<PathBuf>, guest: impl AsRef<str>) -> Grant {
        Grant {
            read_only: true,
            ..Grant::read_write(host, guest)
        }
    }

    /// The host's whole filesystem at the same paths, unconfined, as Node gives it.
    pub fn host_filesystem() -> Grant {
        Grant {
            host: PathBuf::from("/"),
            guest: "/".into(),
            read_only: false,
            ambient: true,
        }
    }

    /// The guest path of a host path inside this grant, if it is inside.
    pub(crate) fn guest_path_of(&self, host: &Path) -> Option<String> {
        let rest = host.strip_prefix(&self.host).ok()?;
        let rest = rest.to_str()?;
        Some(resolve(&self.guest, &[rest]))
    }
}

enum Root {
    /// The host filesystem, unconfined (guest path = host path).
    Ambient,
    /// A granted directory; every path is resolved beneath it.
    Dir(cap_std::fs::Dir),
}

struct Mount {
    guest: String,
    read_only: bool,
    root: Root,
}

/// What a guest path refers to.
enum Place<'a> {
    /// Inside a mount: the path relative to its root (`.` for the root itself).
    Mounted { mount: &'a Mount, rel: PathBuf },
    /// A directory above one or more mounts (its entries lead to them).
    Virtual(String),
}

/// What `fs.open` was asked for (Node's numeric flags, decoded).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct OpenFlags {
    pub write: bool,
    pub read: bool,
    pub create: bool,
    pub truncate: bool,
    pub append: bool,
    pub exclusive: bool,
    pub directory: bool,
}

impl OpenFlags {
    /// Decode Linux `open(2)` flags as `fs.constants` reports them.
    pub fn from_bits(flags: i32) -> OpenFlags {
        let acc = flags & libc::O_ACCMODE;
        OpenFlags {
            read: acc == libc::O_RDONLY || acc == libc::O_RDWR,
            write: acc == libc::O_WRONLY || acc == libc::O_RDWR,
            create: flags & libc::O_CREAT != 0,
            truncate: flags & libc::O_TRUNC != 0,
            append: flags & libc::O_APPEND != 0,
            exclusive: flags & libc::O_EXCL != 0,
            directory: flags & libc::O_DIRECTORY != 0,
        }
    }

    /// Decode Node's string flags (`"r"`, `"w+"`, `"ax"`, …).
    pub fn from_str(s: &str) -> Option<OpenFlags> {
        let mut f = OpenFlags::default();
        let (base, rest) = s.split_at(s.len().min(1));
        match base {
            "r" => f.read = true,
            "w" => {
                f.write = true;
                f.create = true;
                f.truncate = true;
            }
            "a" => {
                f.write = true;
                f.create = true;
                f.append = true;
            }
            _ => return None,
        }
        for c in rest.chars() {
            match c {
                '+' => {
                    f.read = true;
                    f.write = true;
                }
                'x' => f.exclusive = true,
                's' => {}
                _ => return None,
            }
        }
        Some(f)
    }

    fn mutates(&self) -> bool {
        self.write || self.create || self.truncate || self.append
    }
}

/// `stat(2)` as Node's `Stats` reports it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    pub blksize: u64,
    pub blocks: u64,
    pub atime_ms: f64,
    pub mtime_ms: f64,
    pub ctime_ms: f64,
}

fn ms(sec: i64, nsec: i64) -> f64 {
    sec as f64 * 1e3 + nsec as f64 / 1e6
}

macro_rules! stat_from {
    ($m:expr) => {{
        let m = $m;
        Stat {
            dev: m.dev(),
            ino: m.ino(),
            mode: m.mode(),
            nlink: m.nlink(),
            uid: m.uid(),
            gid: m.gid(),
            rdev: m.rdev(),
            size: m.size(),
            blksize: m.blksize(),
            blocks: m.blocks(),
            atime_ms: ms(m.atime(), m.atime_nsec()),
            mtime_ms: ms(m.mtime(), m.mtime_nsec()),
            ctime_ms: ms(m.ctime(), m.ctime_nsec()),
        }
    }};
}

fn std_stat(m: &std::fs::Metadata) -> Stat {
    stat_from!(m)
}

fn cap_stat(m: &cap_std::fs::Metadata) -> Stat {
    use cap_std::fs::MetadataExt;
    stat_from!(m)
}

/// `fstat` of a host descriptor (the host's own stdio).
pub(crate) fn fstat_host(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<Stat> {
    let st = rustix::fs::fstat(fd)?;
    Ok(Stat {
        dev: st.st_dev,
        ino: st.st_ino,
        mode: st.st_mode,
        nlink: st.st_nlink,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev,
        size: st.st_size as u64,
        blksize: st.st_blksize as u64,
        blocks: st.st_blocks as u64,
        atime_ms: ms(st.st_atime, st.st_atime_nsec as i64),
        mtime_ms: ms(st.st_mtime, st.st_mtime_nsec as i64),
        ctime_ms: ms(st.st_ctime, st.st_ctime_nsec as i64),
    })
}

fn virtual_stat() -> Stat {
    Stat {
        mode: libc::S_IFDIR | 0o555,
        nlink: 2,
        blksize: 4096,
        ..Stat::default()
    }
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// An open file of the guest.
enum Open {
    File {
        file: File,
        read_only: bool,
    },
    /// A directory above the grants (only `fstat` and `close` work).
    Virtual,
}

/// The filesystem one instance sees.
pub(crate) struct Vfs {
    mounts: Vec<Mount>,
    files: BTreeMap<i32, Open>,
    /// The first path refused for want of a grant.
    refused: std::cell::OnceCell<Refusal>,
}

/// A guest path refused for want of a grant (see [`crate::Module::run_with_refusal`]): what
/// tells a user which grant a failing program lacked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The path (absolute, in the guest's namespace) is outside every granted directory.
    Ungranted(String),
    /// A change to the path was refused: it is under a read-only grant, or in a directory
    /// above the grants.
    ReadOnly(String),
}

impl std::fmt::Display for Refusal {
    /// The path (its first 200 characters, for a guest that made up a huge one) and why.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (p, why) = match self {
            Refusal::Ungranted(p) => (p, "is outside the directories granted to it"),
            Refusal::ReadOnly(p) => (p, "can't be changed: it is not granted read-write"),
        };
        let shown: String = p.chars().take(200).collect();
        let more = if shown.len() < p.len() { "…" } else { "" };
        write!(f, "{shown}{more} {why}")
    }
}

impl Vfs {
    /// Open every grant's directory. A grant whose directory can't be opened is an error naming it.
    pub fn new(grants: &[Grant]) -> io::Result<Vfs> {
        let mut mounts = Vec::with_capacity(grants.len());
        for g in grants {
            let root = if g.ambient {
                Root::Ambient
            } else {
                let dir = cap_std::fs::Dir::open_ambient_dir(&g.host, cap_std::ambient_authority())
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", g.host.display())))?;
                Root::Dir(dir)
            };
            mounts.push(Mount {
                guest: g.guest.clone(),
                read_only: g.read_only,
                root,
            });
        }
        // Longest guest path first, so nested grants win; later grants win ties.
        mounts.reverse();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.guest.len()));
        Ok(Vfs {
            mounts,
            files: BTreeMap::new(),
            refused: std::cell::OnceCell::new(),
        })
    }

    /// The first path refused for want of a grant, if any.
    pub fn refusal(&self) -> Option<&Refusal> {
        self.refused.get()
    }

    fn refuse(&self, refusal: impl FnOnce() -> Refusal, code: i32) -> io::Error {
        if self.refused.get().is_none() {
            let _ = self.refused.set(refusal());
        }
        errno(code)
    }

    /// Where a guest path (relative to `cwd`) leads.
    fn place(&self, cwd: &str, path: &str) -> io::Result<Place<'_>> {
        if path.is_empty() || path.contains('\0') {
            return Err(errno(libc::ENOENT));
        }
        let abs = resolve(cwd, &[path]);
        for m in &self.mounts {
            let rest = if m.guest == "/" {
                Some(abs.trim_start_matches('/'))
            } else {
                abs.strip_prefix(m.guest.as_str()).and_then(|r| {
                    if r.is_empty() {
                        Some(r)
                    } else {
                        r.strip_prefix('/')
                    }
                })
            };
            let Some(rest) = rest else { continue };
            let rel = match &m.root {
                // The host resolves the path itself, `..` after symlinks included, as for Node.
                Root::Ambient if path.starts_with('/') => PathBuf::from(path),
                Root::Ambient => Path::new(cwd).join(path),
                Root::Dir(_) if rest.is_empty() => PathBuf::from("."),
                // Keep a trailing slash: it asks for a directory.
                Root::Dir(_) if path.ends_with('/') => PathBuf::from(format!("{rest}/")),
                Root::Dir(_) => PathBuf::from(rest),
            };
            return Ok(Place::Mounted { mount: m, rel });
        }
        if self.children_of(&abs).is_some() {
            return Ok(Place::Virtual(abs));
        }
        Err(self.refuse(|| Refusal::Ungranted(abs), libc::ENOENT))
    }

    /// The entries of a directory above the grants, or `None` if `dir` isn't one.
    fn children_of(&self, dir: &str) -> Option<BTreeSet<String>> {
        let prefix = if dir == "/" {
            "/".to_string()
        } else {
            format!("{dir}/")
        };
        let mut found = dir == "/";
        let mut names = BTreeSet::new();
        for m in &self.mounts {
            if let Some(rest) = m.guest.strip_prefix(&prefix)
                && let Some(first) = rest.split('/').next()
                && !first.is_empty()
            {
                found = true;
                names.insert(first.to_string());
            }
        }
        found.then_some(names)
    }

    /// Where a guest path leads, refusing changes to read-only or virtual places.
    fn place_mut(&self, cwd: &str, path: &str) -> io::Result<(&Root, PathBuf)> {
        match self
            .place(cwd, path)
            .map_err(|e| self.denied_if_in_virtual(cwd, path, e))?
        {
            Place::Mounted { mount, .. } if mount.read_only => {
                Err(self.refuse(|| Refusal::ReadOnly(resolve(cwd, &[path])), libc::EACCES))
            }
            Place::Mounted { mount, rel } => Ok((&mount.root, rel)),
            Place::Virtual(abs) => Err(self.refuse(|| Refusal::ReadOnly(abs), libc::EACCES)),
        }
    }

    /// Creating a name in a directory above the grants is `EACCES` (the directory exists but
    /// can't be written), not `ENOENT`.
    fn denied_if_in_virtual(&self, cwd: &str, path: &str, e: io::Error) -> io::Error {
        let abs = resolve(cwd, &[path]);
        let parent = abs
            .rsplit_once('/')
            .map_or("/", |(p, _)| if p.is_empty() { "/" } else { p });
        if e.raw_os_error() == Some(libc::ENOENT) && self.children_of(parent).is_some() {
            errno(libc::EACCES)
        } else {
            e
        }
    }

    /// The working directory a host directory corresponds to, if it is inside a grant.
    pub fn guest_dir_of(grants: &[Grant], host: &Path) -> Option<String> {
        grants
            .iter()
            .rev()
            .filter_map(|g| g.guest_path_of(host))
            .max_by_key(|p| p.len())
    }

    pub fn open(&mut self, cwd: &str, path: &str, flags: OpenFlags, mode: u32) -> io::Result<i32> {
        if self.files.len() >= MAX_OPEN_FILES {
            return Err(errno(libc::EMFILE));
        }
        let place = self.place(cwd, path);
        let place = if flags.create {
            place.map_err(|e| self.denied_if_in_virtual(cwd, path, e))?
        } else {
            place?
        };
        let open = match place {
            Place::Virtual(abs) if flags.mutates() => {
                return Err(self.refuse(|| Refusal::ReadOnly(abs), libc::EACCES));
            }
            Place::Virtual(_) => Open::Virtual,
            Place::Mounted { mount, .. } if mount.read_only && flags.mutates() => {
                let abs = || Refusal::ReadOnly(resolve(cwd, &[path]));
                return Err(self.refuse(abs, libc::EACCES));
            }
            Place::Mounted { mount, rel } => {
                let custom = if flags.directory {
                    libc::O_DIRECTORY
                } else {
                    0
                };
                // std's and cap-std's `OpenOptions` are different types with the same methods.
                macro_rules! configure {
                    ($o:expr) => {
                        $o.read(flags.read || !flags.write)
                            .write(flags.write && !flags.append)
                            .append(flags.append)
                            .truncate(flags.truncate)
                            .create(flags.create && !flags.exclusive)
                            .create_new(flags.create && flags.exclusive)
                            .mode(mode)
                            .custom_flags(custom)
                    };
                }
                let file = match &mount.root {
                    Root::Ambient => configure!(std::fs::OpenOptions::new()).open(&rel)?,
                    Root::Dir(dir) => {
                        use cap_std::fs::OpenOptionsExt;
                        let mut o = cap_std::fs::OpenOptions::new();
                        configure!(o).maybe_dir(true);
                        dir.open_with(&rel, &o)?.into_std()
                    }
                };
                Open::File {
                    file,
                    read_only: mount.read_only,
                }
            }
        };
        let fd = (3..).find(|fd| !self.files.contains_key(fd)).unwrap_or(3);
        self.files.insert(fd, open);
        Ok(fd)
    }

    pub fn close(&mut self, fd: i32) -> io::Result<()> {
        self.files
            .remove(&fd)
            .map(drop)
            .ok_or_else(|| errno(libc::EBADF))
    }

    fn file(&self, fd: i32) -> io::Result<&File> {
        match self.files.get(&fd) {
            Some(Open::File { file, .. }) => Ok(file),
            Some(Open::Virtual) => Err(errno(libc::EISDIR)),
            None => Err(errno(libc::EBADF)),
        }
    }

    fn file_mut(&self, fd: i32) -> io::Result<&File> {
        match self.files.get(&fd) {
            Some(Open::File {
                read_only: true, ..
            })
            | Some(Open::Virtual) => Err(errno(libc::EACCES)),
            _ => self.file(fd),
        }
    }

    /// `read`/`pread` straight into `buf`.
    pub fn read(&self, fd: i32, buf: &mut [u8], position: Option<u64>) -> io::Result<usize> {
        let mut file = self.file(fd)?;
        retry(|| match position {
            Some(p) => file.read_at(buf, p),
            None => file.read(buf),
        })
    }

    /// `write`/`pwrite` straight from `buf`.
    pub fn write(&self, fd: i32, buf: &[u8], position: Option<u64>) -> io::Result<usize> {
        let mut file = self.file(fd)?;
        retry(|| match position {
            Some(p) => file.write_at(buf, p),
            None => file.write(buf),
        })
    }

    pub fn fstat(&self, fd: i32) -> io::Result<Stat> {
        match self.files.get(&fd) {
            Some(Open::Virtual) => Ok(virtual_stat()),
            _ => Ok(std_stat(&self.file(fd)?.metadata()?)),
        }
    }

    pub fn stat(&self, cwd: &str, path: &str, follow: bool) -> io::Result<Stat> {
        match self.place(cwd, path)? {
            Place::Virtual(_) => Ok(virtual_stat()),
            Place::Mounted { mount, rel } => match (&mount.root, follow) {
                (Root::Ambient, true) => Ok(std_stat(&std::fs::metadata(rel)?)),
                (Root::Ambient, false) => Ok(std_stat(&std::fs::symlink_metadata(rel)?)),
                (Root::Dir(d), true) => Ok(cap_stat(&d.metadata(rel)?)),
                (Root::Dir(d), false) => Ok(cap_stat(&d.symlink_metadata(rel)?)),
            },
        }
    }

    pub fn readdir(&self, cwd: &str, path: &str) -> io::Result<Vec<String>> {
        let name = |n: std::ffi::OsString| n.to_string_lossy().into_owned();
        match self.place(cwd, path)? {
            Place::Virtual(dir) => Ok(self
                .children_of(&dir)
                .unwrap_or_default()
                .into_iter()
                .collect()),
            Place::Mounted { mount, rel } => match &mount.root {
                Root::Ambient => std::fs::read_dir(rel)?
                    .map(|e| e.map(|e| name(e.file_name())))
                    .collect(),
                Root::Dir(d) => d
                    .read_dir(rel)?
                    .map(|e| e.map(|e| name(e.file_name())))
                    .collect(),
            },
        }
    }

    pub fn mkdir(&self, cwd: &str, path: &str, mode: u32) -> io::Result<()> {
        let (m, rel) = self
            .place_mut(cwd, path)
            .map_err(exists_if_virtual(self, cwd, path))?;
        match m {
            Root::Ambient => std::fs::DirBuilder::new().mode(mode).create(rel),
            Root::Dir(d) => {
                let mut b = cap_std::fs::DirBuilder::new();
                cap_std::fs::DirBuilderExt::mode(&mut b, mode);
                d.create_dir_with(rel, &b)
            }
        }
    }

    pub fn rmdir(&self, cwd: &str, path: &str) -> io::Result<()> {
        match self.place_mut(cwd, path)? {
            (Root::Ambient, rel) => std::fs::remove_dir(rel),
            (Root::Dir(d), rel) => d.remove_dir(rel),
        }
    }

    pub fn unlink(&self, cwd: &str, path: &str) -> io::Result<()> {
        match self.place_mut(cwd, path)? {
            (Root::Ambient, rel) => std::fs::remove_file(rel),
            (Root::Dir(d), rel) => d.remove_file_or_symlink(rel),
        }
    }

    /// Two guest paths in the same mount (a link or rename across grants is `EXDEV`).
    fn pair(&self, cwd: &str, from: &str, to: &str) -> io::Result<(&Root, PathBuf, PathBuf)> {
        let (m1, r1) = self.place_mut(cwd, from)?;
        let (m2, r2) = self.place_mut(cwd, to)?;
        if !std::ptr::eq(m1, m2) {
            return Err(errno(libc::EXDEV));
        }
        Ok((m1, r1, r2))
    }

    pub fn rename(&self, cwd: &str, from: &str, to: &str) -> io::Result<()> {
        match self.pair(cwd, from, to)? {
            (Root::Ambient, a, b) => std::fs::rename(a, b),
            (Root::Dir(d), a, b) => d.rename(a, d, b),
        }
    }

    pub fn link(&self, cwd: &str, existing: &str, new: &str) -> io::Result<()> {
        match self.pair(cwd, existing, new)? {
            (Root::Ambient, a, b) => std::fs::hard_link(a, b),
            (Root::Dir(d), a, b) => d.hard_link(a, d, b),
        }
    }

    /// `symlink(target, path)`: the target is stored as given. Inside a grant, targets that
    /// would lead out of it (absolute, or `..` past the grant) are refused when followed.
    pub fn symlink(&self, cwd: &str, target: &str, path: &str) -> io::Result<()> {
        match self.place_mut(cwd, path)? {
            (Root::Ambient, rel) => std::os::unix::fs::symlink(target, rel),
            (Root::Dir(d), rel) => d.symlink_contents(target, rel),
        }
    }

    pub fn readlink(&self, cwd: &str, path: &str) -> io::Result<String> {
        let target = match self.place(cwd, path)? {
            Place::Virtual(_) => return Err(errno(libc::EINVAL)),
            Place::Mounted { mount, rel } => match &mount.root {
                Root::Ambient => std::fs::read_link(rel)?,
                Root::Dir(d) => d.read_link_contents(rel)?,
            },
        };
        Ok(target.to_string_lossy().into_owned())
    }

    pub fn chmod(&self, cwd: &str, path: &str, mode: u32) -> io::Result<()> {
        match self.place_mut(cwd, path)? {
            (Root::Ambient, rel) => {
                std::fs::set_permissions(rel, std::fs::Permissions::from_mode(mode))
            }
            (Root::Dir(d), rel) => {
                use cap_std::fs::PermissionsExt;
                d.set_permissions(rel, cap_std::fs::Permissions::from_mode(mode))
            }
        }
    }

    pub fn fchmod(&self, fd: i32, mode: u32) -> io::Result<()> {
        self.file_mut(fd)?
            .set_permissions(std::fs::Permissions::from_mode(mode))
    }

    pub fn chown(&self, cwd: &str, path: &str, uid: u32, gid: u32, follow: bool) -> io::Result<()> {
        let (uid, gid) = (Some(uid), Some(gid));
        match self.place_mut(cwd, path)? {
            (Root::Ambient, rel) if follow => std::os::unix::fs::chown(rel, uid, gid),
            (Root::Ambient, rel) => std::os::unix::fs::lchown(rel, uid, gid),
            (Root::Dir(d), rel) => {
                // Resolve beneath the grant to an `O_PATH` handle, then change that inode.
                use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt};
                use cap_std::fs::OpenOptionsExt;
                let mut o = cap_std::fs::OpenOptions::new();
                o.read(true)
                    .custom_flags(libc::O_PATH)
                    .maybe_dir(true)
                    .follow(if follow {
                        FollowSymlinks::Yes
                    } else {
                        FollowSymlinks::No
                    });
                let f = d.open_with(rel, &o)?;
                rustix::fs::chownat(
                    &f,
                    "",
                    uid.map(rustix::fs::Uid::from_raw),
                    gid.map(rustix::fs::Gid::from_raw),
                    rustix::fs::AtFlags::EMPTY_PATH,
                )
                .map_err(io::Error::from)
            }
        }
    }

    pub fn fchown(&self, fd: i32, uid: u32, gid: u32) -> io::Result<()> {
        std::os::unix::fs::fchown(self.file_mut(fd)?, Some(uid), Some(gid))
    }

    pub fn truncate(&self, cwd: &str, path: &str, len: i64) -> io::Result<()> {
        let len = u64::try_from(len).map_err(|_| errno(libc::EINVAL))?;
        let file = match self.place_mut(cwd, path)? {
            (Root::Ambient, rel) => std::fs::OpenOptions::new().write(true).open(rel)?,
            (Root::Dir(d), rel) => d
                .open_with(rel, cap_std::fs::OpenOptions::new().write(true))?
                .into_std(),
        };
        file.set_len(len)
    }

    pub fn ftruncate(&self, fd: i32, len: i64) -> io::Result<()> {
        let len = u64::try_from(len).map_err(|_| errno(libc::EINVAL))?;
        self.file_mut(fd)?.set_len(len)
    }

    pub fn fsync(&self, fd: i32) -> io::Result<()> {
        match self.files.get(&fd) {
            Some(Open::Virtual) => Ok(()),
            _ => self.file(fd)?.sync_all(),
        }
    }

    /// `utimes(path, atime, mtime)` with times in (possibly fractional) seconds since the epoch.
    pub fn utimes(&self, cwd: &str, path: &str, atime: f64, mtime: f64) -> io::Result<()> {
        let (a, m) = (system_time(atime)?, system_time(mtime)?);
        match self.place_mut(cwd, path)? {
            (Root::Ambient, rel) => set_times_path(&rel, a, m),
            (Root::Dir(d), rel) => d.set_times(
                rel,
                Some(SystemTimeSpec::Absolute(
                    cap_std::time::SystemTime::from_std(a),
                )),
                Some(SystemTimeSpec::Absolute(
                    cap_std::time::SystemTime::from_std(m),
                )),
            ),
        }
    }

    /// Close every open file.
    pub fn clear(&mut self) {
        self.files.clear();
    }
}

/// `mkdir` of an existing directory above the grants is `EEXIST`, not `EACCES`.
fn exists_if_virtual<'a>(
    vfs: &'a Vfs,
    cwd: &'a str,
    path: &'a str,
) -> impl FnOnce(io::Error) -> io::Error + 'a {
    move |e| match vfs.place(cwd, path) {
        Ok(Place::Virtual(_)) => errno(libc::EEXIST),
        _ => e,
    }
}

fn set_times_path(path: &Path, a: SystemTime, m: SystemTime) -> io::Result<()> {
    let ts = |t: SystemTime| {
        let (sec, nsec) = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64),
            Err(e) => {
                let d = e.duration();
                let (s, n) = (-(d.as_secs() as i64), d.subsec_nanos() as i64);
                if n == 0 {
                    (s, 0)
                } else {
                    (s - 1, 1_000_000_000 - n)
                }
            }
        };
        rustix::fs::Timespec {
            tv_sec: sec,
            tv_nsec: nsec as _,
        }
    };
    let times = rustix::fs::Timestamps {
        last_access: ts(a),
        last_modification: ts(m),
    };
    rustix::fs::utimensat(rustix::fs::CWD, path, &times, rustix::fs::AtFlags::empty())
        .map_err(io::Error::from)
}

/// Seconds since the epoch (fractional, possibly negative) as a `SystemTime`.
fn system_time(secs: f64) -> io::Result<SystemTime> {
    if !secs.is_finite() || secs.abs() > 1e15 {
        return Err(errno(libc::EINVAL));
    }
    let d = Duration::from_secs_f64(secs.abs());
    Ok(if secs >= 0.0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    })
}

fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

#[cfg(test)]
mod refusal_tests {
    use super::Refusal;

    #[test]
    fn a_huge_refused_path_is_shown_cut_short() {
        let long = format!("/{}", "x".repeat(10_000));
        let shown = Refusal::Ungranted(long).to_string();
        assert!(shown.starts_with("/xxx") && shown.len() < 300, "{shown}");
        assert!(
            shown.ends_with("… is outside the directories granted to it"),
            "{shown}"
        );
        assert_eq!(
            Refusal::ReadOnly("/ro/f".into()).to_string(),
            "/ro/f can't be changed: it is not granted read-write"
        );
    }
}
