//! The blocking core of the file server: one [`FileOp`] in, one answer out.
//!
//! Every path is resolved beneath the root fd of its mount, opened once at startup: the
//! directory holding the final name is opened with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)` (or one `O_NOFOLLOW` step at a time on kernels without it), and the
//! name itself is acted on with the `*at` calls, never following a symbolic link. So nothing in
//! the pod's volumes (a link to `/`, to `..`, a directory swapped for a link) can make the agent
//! touch a file outside them. The laptop's kernel resolves links itself, from `Stat` (an
//! `lstat`) and `ReadLink`.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{self, FchmodatFlags, Mode, UtimensatFlags};
use nix::unistd::{self, UnlinkatFlags};
use tether_proto::files::{
    self, DirEntry, FileAttr, FileError, FileErrorKind, FileKind, FileOk, FileOp, FsStats,
    Timestamp,
};
use tracing::{debug, warn};

use super::handles::{self, Handles};
use super::mounts::{self, Location, Mounts};
use super::sys::{self, attr, DirFd, OpError, Resolver};

/// What a [`Server`] needs of a path before it acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// Changes or removes what is there.
    Existing,
    /// Makes a new name.
    New,
}

/// Where a change acts: a mount's root, or a name in a directory of a mount.
#[derive(Debug)]
enum Place<'s, 'p> {
    Root(usize),
    Entry { dir: DirFd<'s>, name: &'p str },
}

/// A path as read: in a mount, or one of the read-only directories above them.
#[derive(Debug)]
enum Found<'s, 'p> {
    Mounted(Place<'s, 'p>),
    Virtual(Vec<&'p str>),
}

/// The file server: the mounts whose source could be opened, each with its root fd.
#[derive(Debug)]
pub struct Server {
    mounts: Mounts,
    /// Each mount's root directory (`O_PATH`); for a mount of one file, the directory it is in.
    roots: Vec<OwnedFd>,
    /// For a mount of one file (a `subPath` of a ConfigMap's key, say), its name in its root.
    files: Vec<Option<String>>,
    resolver: Resolver,
}

impl Server {
    /// Opens each mount's source directory; one that cannot be opened (missing, not a
    /// directory) is left out with a warning.
    pub fn new(mut mounts: Mounts) -> Self {
        let mut roots = Vec::new();
        let mut files = Vec::new();
        mounts.retain(|mount| match open_source(mount.source()) {
            Ok((root, file)) => {
                roots.push(root);
                files.push(file);
                true
            }
            Err(errno) => {
                warn!(path = mount.path(), source = %mount.source().display(), error = %errno.desc(), "Not serving a volume: its source cannot be opened");
                false
            }
        });
        Self {
            mounts,
            roots,
            files,
            resolver: Resolver::default(),
        }
    }

    /// A server with nothing to serve.
    pub fn empty() -> Self {
        Self::new(Mounts::default())
    }

    /// Like [`Server::new`], resolving without `openat2`.
    #[cfg(test)]
    pub(super) fn walking(mounts: Mounts) -> Self {
        Self {
            resolver: Resolver::walking(),
            ..Self::new(mounts)
        }
    }

    /// The mounts served (those whose source could be opened).
    pub fn mounts(&self) -> &Mounts {
        &self.mounts
    }

    /// Carries out one operation for a stream whose open files are `handles`.
    pub fn handle(&self, handles: &Handles, op: FileOp) -> Result<FileOk, FileError> {
        let path = match &op {
            FileOp::Stat { path }
            | FileOp::ReadDir { path }
            | FileOp::ReadLink { path }
            | FileOp::Open { path, .. }
            | FileOp::Create { path, .. }
            | FileOp::SetAttr { path, .. }
            | FileOp::Mkdir { path, .. }
            | FileOp::Unlink { path }
            | FileOp::Rmdir { path }
            | FileOp::Symlink { path, .. }
            | FileOp::StatFs { path }
            | FileOp::ReadDirPage { path, .. } => Some(path.clone()),
            FileOp::Rename { from, to, .. } => Some(format!("{from} -> {to}")),
            FileOp::Read { .. }
            | FileOp::Write { .. }
            | FileOp::Fsync { .. }
            | FileOp::Close { .. }
            | FileOp::Fstat { .. } => None,
        };
        self.dispatch(handles, op).map_err(|OpError(mut error)| {
            if let Some(path) = path {
                error.message = format!("{path}: {}", error.message);
            }
            error
        })
    }

    fn dispatch(&self, handles: &Handles, op: FileOp) -> Result<FileOk, OpError> {
        match op {
            FileOp::Stat { path } => self.stat(&path).map(FileOk::Attr),
            FileOp::ReadDir { path } => self.read_dir(&path).map(FileOk::Entries),
            FileOp::ReadLink { path } => self.read_link(&path).map(FileOk::Target),
            FileOp::Open {
                path,
                write,
                truncate,
            } => self.open(handles, &path, write, truncate),
            FileOp::Create {
                path,
                perm,
                exclusive,
            } => self.create(handles, &path, perm, exclusive),
            FileOp::Read {
                handle,
                offset,
                len,
            } => handles::read(handles, handle, offset, len).map(FileOk::Data),
            FileOp::Write {
                handle,
                offset,
                data,
            } => handles::write(handles, handle, offset, &data).map(FileOk::Written),
            FileOp::Fsync { handle } => handles::fsync(handles, handle).map(|()| FileOk::Done),
            FileOp::Close { handle } => handles.remove(handle).map(|()| FileOk::Done),
            FileOp::SetAttr {
                path,
                size,
                perm,
                atime,
                mtime,
            } => self
                .set_attr(&path, size, perm, atime, mtime)
                .map(FileOk::Attr),
            FileOp::Mkdir { path, perm } => self.mkdir(&path, perm).map(FileOk::Attr),
            FileOp::Unlink { path } => self.remove(&path, false).map(|()| FileOk::Done),
            FileOp::Rmdir { path } => self.remove(&path, true).map(|()| FileOk::Done),
            FileOp::Rename {
                from,
                to,
                noreplace,
            } => self.rename(&from, &to, noreplace).map(|()| FileOk::Done),
            FileOp::Symlink { target, path } => self.symlink(&target, &path).map(FileOk::Attr),
            FileOp::StatFs { path } => self.stat_fs(&path).map(FileOk::Stats),
            FileOp::Fstat { handle } => handles::fstat(handles, handle).map(FileOk::Attr),
            FileOp::ReadDirPage { path, after } => {
                let entries = self.read_dir(&path)?;
                let (entries, more) = files::page(&entries, after.as_deref());
                Ok(FileOk::Page {
                    entries: entries.to_vec(),
                    more,
                })
            }
        }
    }

    fn locate<'p>(&self, path: &'p str) -> Result<Location<'p>, OpError> {
        self.mounts
            .locate(path)
            .map_err(|reason| OpError::new(FileErrorKind::Invalid, reason.to_string()))
    }

    /// Opens the directory of `rel`'s last name, beneath mount `index`'s root.
    fn place<'a>(&'a self, index: usize, rel: &[&'a str]) -> Result<Place<'a, 'a>, OpError> {
        if let Some(file) = &self.files[index] {
            // A mount of one file: nothing lies below it.
            return match rel {
                [] => Ok(Place::Entry {
                    dir: DirFd::Root(self.roots[index].as_fd()),
                    name: file,
                }),
                _ => Err(Errno::ENOTDIR.into()),
            };
        }
        match rel.split_last() {
            None => Ok(Place::Root(index)),
            Some((name, parent)) => {
                let dir = self.resolver.open_dir(self.roots[index].as_fd(), parent)?;
                Ok(Place::Entry { dir, name })
            }
        }
    }

    /// Where `path` is, to be read.
    fn find<'a>(&'a self, path: &'a str) -> Result<Found<'a, 'a>, OpError> {
        match self.locate(path)? {
            Location::Mounted { index, rel } => self.place(index, &rel).map(Found::Mounted),
            Location::Virtual { components } => Ok(Found::Virtual(components)),
            Location::Outside { .. } => Err(not_found()),
        }
    }

    /// Where `path` is, to be changed: refused on a read-only mount (before anything is
    /// opened) and above the mounts.
    fn find_changeable<'a>(
        &'a self,
        path: &'a str,
        change: Change,
    ) -> Result<Place<'a, 'a>, OpError> {
        match self.locate(path)? {
            Location::Mounted { index, rel } => {
                if self.mounts.get(index).is_some_and(|m| m.read_only()) {
                    return Err(read_only());
                }
                self.place(index, &rel)
            }
            Location::Virtual { .. } => Err(read_only()),
            Location::Outside {
                parent_virtual: true,
            } if change == Change::New => Err(read_only()),
            Location::Outside { .. } => Err(not_found()),
        }
    }

    fn root_attr(&self, index: usize) -> Result<FileAttr, OpError> {
        match &self.files[index] {
            Some(file) => lstat(&DirFd::Root(self.roots[index].as_fd()), file),
            None => Ok(attr(&stat::fstat(&self.roots[index])?)),
        }
    }

    /// Opens mount `index`'s root to read (its fd is `O_PATH`).
    fn open_root(&self, index: usize) -> Result<OwnedFd, OpError> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        Ok(nix::fcntl::openat(
            &self.roots[index],
            ".",
            flags,
            Mode::empty(),
        )?)
    }

    fn stat(&self, path: &str) -> Result<FileAttr, OpError> {
        match self.find(path)? {
            Found::Virtual(_) => Ok(VIRTUAL_DIR),
            Found::Mounted(Place::Root(index)) => self.root_attr(index),
            Found::Mounted(Place::Entry { dir, name }) => lstat(&dir, name),
        }
    }

    fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>, OpError> {
        let fd = match self.find(path)? {
            Found::Virtual(components) => {
                let children = self.mounts.children(&components);
                let entries = children.into_iter().map(|(name, root)| DirEntry {
                    name: name.to_owned(),
                    attr: root
                        .and_then(|index| self.root_attr(index).ok())
                        .unwrap_or(VIRTUAL_DIR),
                });
                return Ok(entries.collect());
            }
            Found::Mounted(Place::Root(index)) => self.open_root(index)?,
            Found::Mounted(Place::Entry { dir, name }) => {
                let flags =
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                nix::fcntl::openat(&dir, name, flags, Mode::empty())?
            }
        };
        let mut entries = list(fd)?;
        // A mount nested in this directory shows its own root, as in the container.
        let components = mounts::split(path).unwrap_or_default();
        for (name, index) in self.mounts.children(&components) {
            let Some(attr) = index.and_then(|index| self.root_attr(index).ok()) else {
                continue;
            };
            match entries.binary_search_by(|e| e.name.as_str().cmp(name)) {
                Ok(at) => entries[at].attr = attr,
                Err(at) => entries.insert(
                    at,
                    DirEntry {
                        name: name.to_owned(),
                        attr,
                    },
                ),
            }
        }
        Ok(entries)
    }

    fn read_link(&self, path: &str) -> Result<String, OpError> {
        match self.find(path)? {
            Found::Virtual(_) | Found::Mounted(Place::Root(_)) => {
                Err(OpError::new(FileErrorKind::Invalid, "not a symbolic link"))
            }
            Found::Mounted(Place::Entry { dir, name }) => nix::fcntl::readlinkat(&dir, name)?
                .into_string()
                .map_err(|_| {
                    OpError::new(FileErrorKind::Invalid, "the link's target is not UTF-8")
                }),
        }
    }

    fn open(
        &self,
        handles: &Handles,
        path: &str,
        write: bool,
        truncate: bool,
    ) -> Result<FileOk, OpError> {
        let place = if write {
            self.find_changeable(path, Change::Existing)?
        } else {
            match self.find(path)? {
                Found::Virtual(_) => return Err(is_a_directory()),
                Found::Mounted(place) => place,
            }
        };
        let Place::Entry { dir, name } = place else {
            return Err(is_a_directory());
        };
        check_regular(lstat(&dir, name)?)?;
        // Read-only opens never truncate (Linux would, for O_RDONLY | O_TRUNC).
        let mut flags = if write {
            OFlag::O_RDWR
        } else {
            OFlag::O_RDONLY
        };
        if write && truncate {
            flags |= OFlag::O_TRUNC;
        }
        let file = match open_regular(&dir, name, flags, Mode::empty()) {
            // A file the agent may write but not read is opened write-only.
            Err(OpError(e)) if write && e.kind == FileErrorKind::PermissionDenied => open_regular(
                &dir,
                name,
                (flags - OFlag::O_RDWR) | OFlag::O_WRONLY,
                Mode::empty(),
            )?,
            opened => opened?,
        };
        let attr = attr(&stat::fstat(&file)?);
        let handle = handles.insert(file, write)?;
        Ok(FileOk::Opened { handle, attr })
    }

    fn create(
        &self,
        handles: &Handles,
        path: &str,
        perm: u32,
        exclusive: bool,
    ) -> Result<FileOk, OpError> {
        let Place::Entry { dir, name } = self.find_changeable(path, Change::New)? else {
            return Err(Errno::EEXIST.into());
        };
        let mut flags = OFlag::O_RDWR | OFlag::O_CREAT;
        if exclusive {
            flags |= OFlag::O_EXCL;
        } else {
            match lstat(&dir, name) {
                Ok(existing) => check_regular(existing)?,
                Err(OpError(e)) if e.kind == FileErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
        let file = open_regular(&dir, name, flags, mode(perm))?;
        let attr = attr(&stat::fstat(&file)?);
        let handle = handles.insert(file, true)?;
        Ok(FileOk::Opened { handle, attr })
    }

    fn set_attr(
        &self,
        path: &str,
        size: Option<u64>,
        perm: Option<u32>,
        atime: Option<Timestamp>,
        mtime: Option<Timestamp>,
    ) -> Result<FileAttr, OpError> {
        if size.is_none() && perm.is_none() && atime.is_none() && mtime.is_none() {
            return self.stat(path);
        }
        let (atime, mtime) = (sys::time_spec(atime)?, sys::time_spec(mtime)?);
        let times = atime != nix::sys::time::TimeSpec::UTIME_OMIT
            || mtime != nix::sys::time::TimeSpec::UTIME_OMIT;
        match self.find_changeable(path, Change::Existing)? {
            Place::Root(index) => {
                if size.is_some() {
                    return Err(is_a_directory());
                }
                let dir = self.open_root(index)?;
                if let Some(perm) = perm {
                    stat::fchmod(&dir, mode(perm))?;
                }
                if times {
                    stat::futimens(&dir, &atime, &mtime)?;
                }
                self.root_attr(index)
            }
            Place::Entry { dir, name } => {
                let current = lstat(&dir, name)?;
                if let Some(size) = size {
                    check_regular(current)?;
                    let size = i64::try_from(size)
                        .map_err(|_| OpError::new(FileErrorKind::TooBig, "size out of range"))?;
                    let file = open_regular(&dir, name, OFlag::O_WRONLY, Mode::empty())?;
                    unistd::ftruncate(&file, size)?;
                }
                // A link's own mode means nothing on Linux; the laptop's chmod of a link is a
                // chmod of its target, which it resolves and sends itself.
                if let Some(perm) = perm.filter(|_| current.kind != FileKind::Symlink) {
                    stat::fchmodat(&dir, name, mode(perm), FchmodatFlags::NoFollowSymlink)?;
                }
                if times {
                    stat::utimensat(&dir, name, &atime, &mtime, UtimensatFlags::NoFollowSymlink)?;
                }
                lstat(&dir, name)
            }
        }
    }

    fn mkdir(&self, path: &str, perm: u32) -> Result<FileAttr, OpError> {
        let Place::Entry { dir, name } = self.find_changeable(path, Change::New)? else {
            return Err(Errno::EEXIST.into());
        };
        stat::mkdirat(&dir, name, mode(perm))?;
        lstat(&dir, name)
    }

    fn remove(&self, path: &str, directory: bool) -> Result<(), OpError> {
        let Place::Entry { dir, name } = self.find_changeable(path, Change::Existing)? else {
            return Err(mount_root());
        };
        let flags = if directory {
            UnlinkatFlags::RemoveDir
        } else {
            UnlinkatFlags::NoRemoveDir
        };
        Ok(unistd::unlinkat(&dir, name, flags)?)
    }

    fn rename(&self, from: &str, to: &str, noreplace: bool) -> Result<(), OpError> {
        if let (Location::Mounted { index: a, .. }, Location::Mounted { index: b, .. }) =
            (self.locate(from)?, self.locate(to)?)
        {
            if a != b {
                return Err(OpError::new(
                    FileErrorKind::CrossesMounts,
                    "a rename across two mounts",
                ));
            }
        }
        let Place::Entry {
            dir: from_dir,
            name: from_name,
        } = self.find_changeable(from, Change::Existing)?
        else {
            return Err(mount_root());
        };
        let Place::Entry {
            dir: to_dir,
            name: to_name,
        } = self.find_changeable(to, Change::New)?
        else {
            return Err(mount_root());
        };
        let flags = if noreplace {
            RenameFlags::RENAME_NOREPLACE
        } else {
            RenameFlags::empty()
        };
        Ok(nix::fcntl::renameat2(
            &from_dir, from_name, &to_dir, to_name, flags,
        )?)
    }

    fn symlink(&self, target: &str, path: &str) -> Result<FileAttr, OpError> {
        if target.is_empty() || target.contains('\0') {
            return Err(OpError::new(FileErrorKind::Invalid, "an empty link target"));
        }
        let Place::Entry { dir, name } = self.find_changeable(path, Change::New)? else {
            return Err(Errno::EEXIST.into());
        };
        unistd::symlinkat(target, &dir, name)?;
        lstat(&dir, name)
    }

    fn stat_fs(&self, path: &str) -> Result<FsStats, OpError> {
        match self.locate(path)? {
            Location::Mounted { index, .. } => Ok(sys::fs_stats(&nix::sys::statvfs::fstatvfs(
                &self.roots[index],
            )?)),
            Location::Virtual { .. } => Ok(VIRTUAL_FS),
            Location::Outside { .. } => Err(not_found()),
        }
    }
}

/// What a directory above the mounts looks like: read-only, owned by root, dated the epoch
/// (the same on every agent, every time).
pub const VIRTUAL_DIR: FileAttr = FileAttr::directory(0o555);

/// The totals of the directories above the mounts: empty, with nothing free.
const VIRTUAL_FS: FsStats = FsStats {
    blocks: 0,
    bfree: 0,
    bavail: 0,
    files: 0,
    ffree: 0,
    bsize: 4096,
    namelen: 255,
};

fn not_found() -> OpError {
    Errno::ENOENT.into()
}

fn read_only() -> OpError {
    OpError::new(FileErrorKind::ReadOnly, "read-only")
}

fn is_a_directory() -> OpError {
    Errno::EISDIR.into()
}

fn mount_root() -> OpError {
    OpError::new(
        FileErrorKind::NotPermitted,
        "a mount's root cannot be moved or removed",
    )
}

fn mode(perm: u32) -> Mode {
    Mode::from_bits_truncate(perm & 0o7777)
}

/// A mount's source opened as its root: the directory (`O_PATH`), or for a mount of one file
/// the directory it is in and its name.
fn open_source(source: &std::path::Path) -> Result<(OwnedFd, Option<String>), Errno> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    match nix::fcntl::open(source, flags, Mode::empty()) {
        Err(Errno::ENOTDIR) => {}
        opened => return opened.map(|fd| (fd, None)),
    }
    let name = source
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or(Errno::EINVAL)?;
    let parent = source.parent().ok_or(Errno::EINVAL)?;
    let dir = nix::fcntl::open(parent, flags, Mode::empty())?;
    // Only what the kubelet mounts there: a file (or a device), never a link to follow.
    let st = stat::fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    if stat::SFlag::from_bits_truncate(st.st_mode) & stat::SFlag::S_IFMT == stat::SFlag::S_IFLNK {
        return Err(Errno::ELOOP);
    }
    Ok((dir, Some(name.to_owned())))
}

fn lstat(dir: &DirFd<'_>, name: &str) -> Result<FileAttr, OpError> {
    Ok(attr(&stat::fstatat(
        dir,
        name,
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )?))
}

/// Refuses what is not a regular file, before it is opened: opening a FIFO may block, and a
/// device may do anything.
fn check_regular(attr: FileAttr) -> Result<(), OpError> {
    match attr.kind {
        FileKind::File => Ok(()),
        FileKind::Directory => Err(is_a_directory()),
        FileKind::Symlink => Err(Errno::ELOOP.into()),
        FileKind::Other => Err(OpError::new(FileErrorKind::Invalid, "not a regular file")),
    }
}

/// Opens the regular file `name` in `dir`, never following a link, and checks it still is one
/// (`O_NONBLOCK`: something swapped in meanwhile must not block the open).
fn open_regular(dir: &DirFd<'_>, name: &str, flags: OFlag, mode: Mode) -> Result<File, OpError> {
    let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    let file = File::from(nix::fcntl::openat(dir, name, flags, mode)?);
    if !file.metadata()?.is_file() {
        return Err(OpError::new(FileErrorKind::Invalid, "not a regular file"));
    }
    Ok(file)
}

/// The entries of an opened directory, each with its `lstat` attributes, sorted by name. A
/// name that is not UTF-8 cannot be asked for, so it is left out.
fn list(fd: OwnedFd) -> Result<Vec<DirEntry>, OpError> {
    let mut dir = nix::dir::Dir::from_fd(fd)?;
    let mut names = Vec::new();
    for entry in dir.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        match std::str::from_utf8(name) {
            Ok(name) => names.push(name.to_owned()),
            Err(_) => {
                debug!(name = %String::from_utf8_lossy(name), "Left out a name that is not UTF-8")
            }
        }
    }
    names.sort();
    let mut entries = Vec::with_capacity(names.len());
    for name in names {
        match stat::fstatat(&dir, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => entries.push(DirEntry {
                name,
                attr: attr(&st),
            }),
            // Removed since it was listed.
            Err(Errno::ENOENT) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests;
