//! The system calls under the file server: resolving a directory beneath a mount's root without
//! following symbolic links, attributes as the protocol carries them, and errno classes.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::libc;
use nix::sys::stat::{FileStat, Mode};
use nix::sys::statvfs::Statvfs;
use tether_proto::files::{FileAttr, FileError, FileErrorKind, FileKind, FsStats, Timestamp};

/// A failed operation, convertible from the errors of the calls it makes.
#[derive(Debug)]
pub struct OpError(pub FileError);

impl OpError {
    /// A failure of the given kind, in the agent's words.
    pub fn new(kind: FileErrorKind, message: impl Into<String>) -> Self {
        Self(FileError {
            kind,
            message: message.into(),
        })
    }
}

impl From<Errno> for OpError {
    fn from(errno: Errno) -> Self {
        Self::new(kind_of(errno), errno.desc())
    }
}

impl From<std::io::Error> for OpError {
    fn from(error: std::io::Error) -> Self {
        match error.raw_os_error() {
            Some(code) => Errno::from_raw(code).into(),
            None => Self::new(FileErrorKind::Io, error.to_string()),
        }
    }
}

/// The protocol's class of an errno.
pub fn kind_of(errno: Errno) -> FileErrorKind {
    use FileErrorKind::*;
    match errno {
        Errno::ENOENT => NotFound,
        Errno::EACCES => PermissionDenied,
        Errno::EPERM => NotPermitted,
        Errno::EEXIST => Exists,
        Errno::ENOTDIR => NotADirectory,
        Errno::EISDIR => IsADirectory,
        Errno::ENOTEMPTY => NotEmpty,
        Errno::EROFS => ReadOnly,
        Errno::ENOSPC => NoSpace,
        Errno::EINVAL => Invalid,
        Errno::ENAMETOOLONG => NameTooLong,
        Errno::EXDEV => CrossesMounts,
        Errno::EBADF => BadHandle,
        Errno::ELOOP => TooManyLinks,
        Errno::EFBIG => TooBig,
        Errno::EDQUOT => Quota,
        _ => Io,
    }
}

/// A directory fd: a mount's root (borrowed) or a directory opened beneath it.
#[derive(Debug)]
pub enum DirFd<'a> {
    /// The mount's root itself.
    Root(BorrowedFd<'a>),
    /// A directory beneath it, opened `O_PATH`.
    Opened(OwnedFd),
}

impl AsFd for DirFd<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Root(fd) => *fd,
            Self::Opened(fd) => fd.as_fd(),
        }
    }
}

/// Whether `openat2` may be used; cleared the first time the kernel (before 5.6) or a seccomp
/// profile refuses it, and the component-by-component walk takes over.
#[derive(Debug)]
pub struct Resolver {
    openat2: AtomicBool,
}

impl Default for Resolver {
    fn default() -> Self {
        Self {
            openat2: AtomicBool::new(true),
        }
    }
}

impl Resolver {
    /// A resolver that never tries `openat2` (the fallback, tested on its own).
    #[cfg(test)]
    pub fn walking() -> Self {
        Self {
            openat2: AtomicBool::new(false),
        }
    }

    /// Opens the directory `components` beneath `root` (`O_PATH`), never following a symbolic
    /// link and never leaving `root`. The components are checked names (no `.`, `..`, `/`).
    ///
    /// A symbolic link among them fails with `ELOOP` (`openat2`) or `ENOTDIR` (the walk); an
    /// escape, which checked names cannot make, would fail with `EXDEV`, reported as
    /// [`FileErrorKind::NotPermitted`].
    pub fn open_dir<'r>(
        &self,
        root: BorrowedFd<'r>,
        components: &[&str],
    ) -> Result<DirFd<'r>, OpError> {
        if components.is_empty() {
            return Ok(DirFd::Root(root));
        }
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        if self.openat2.load(Ordering::Relaxed) {
            let how = OpenHow::new().flags(flags).resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            );
            match nix::fcntl::openat2(root, components.join("/").as_str(), how) {
                Ok(fd) => return Ok(DirFd::Opened(fd)),
                // No openat2 (Linux < 5.6), or a seccomp profile that does not know it.
                Err(Errno::ENOSYS | Errno::EPERM) => {
                    tracing::debug!("No openat2: resolving paths one component at a time");
                    self.openat2.store(false, Ordering::Relaxed);
                }
                Err(errno) => return Err(resolve_error(errno)),
            }
        }
        // O_NOFOLLOW with O_DIRECTORY refuses a symbolic link (ENOTDIR), and no component is
        // `..`: each step stays below the last.
        let mut dir: Option<OwnedFd> = None;
        for component in components {
            let at = dir.as_ref().map_or(root, |fd| fd.as_fd());
            let next = nix::fcntl::openat(at, *component, flags | OFlag::O_NOFOLLOW, Mode::empty())
                .map_err(resolve_error)?;
            dir = Some(next);
        }
        // The components are not empty, so the walk opened at least one.
        Ok(dir.map_or(DirFd::Root(root), DirFd::Opened))
    }
}

fn resolve_error(errno: Errno) -> OpError {
    match errno {
        Errno::EXDEV => OpError::new(FileErrorKind::NotPermitted, "the path leaves its mount"),
        errno => errno.into(),
    }
}

/// The attributes of a `stat` answer.
pub fn attr(st: &FileStat) -> FileAttr {
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => FileKind::File,
        libc::S_IFDIR => FileKind::Directory,
        libc::S_IFLNK => FileKind::Symlink,
        _ => FileKind::Other,
    };
    let time = |secs: i64, nanos: i64| Timestamp {
        secs,
        nanos: u32::try_from(nanos).unwrap_or(0),
    };
    FileAttr {
        kind,
        size: u64::try_from(st.st_size).unwrap_or(0),
        perm: st.st_mode & 0o7777,
        nlink: u32::try_from(st.st_nlink).unwrap_or(u32::MAX),
        uid: st.st_uid,
        gid: st.st_gid,
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        blocks: u64::try_from(st.st_blocks).unwrap_or(0),
    }
}

/// The totals of a `statvfs` answer; blocks are counted in `bsize` units.
pub fn fs_stats(st: &Statvfs) -> FsStats {
    let narrow = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    FsStats {
        blocks: st.blocks(),
        bfree: st.blocks_free(),
        bavail: st.blocks_available(),
        files: st.files(),
        ffree: st.files_free(),
        bsize: narrow(st.fragment_size()),
        namelen: narrow(st.name_max()),
    }
}

/// A protocol timestamp as `utimensat` takes it (`UTIME_OMIT` when not given).
pub fn time_spec(time: Option<Timestamp>) -> Result<nix::sys::time::TimeSpec, OpError> {
    use nix::sys::time::TimeSpec;
    match time {
        None => Ok(TimeSpec::UTIME_OMIT),
        Some(t) if t.nanos < 1_000_000_000 => Ok(TimeSpec::new(t.secs, i64::from(t.nanos))),
        Some(_) => Err(OpError::new(
            FileErrorKind::Invalid,
            "nanoseconds over a second",
        )),
    }
}
