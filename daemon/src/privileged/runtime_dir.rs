//! The runtime directory, split so that root never follows a path another user can change.
//!
//! ```text
//! <runtime>/      root, 0755   /run/tether, or $TETHER_RUNTIME_DIR (one per test workstation)
//! ├── state/      root, 0700   root's files: resolv.conf.orig, resolv.conf.owner, helper.log
//! └── user/       daemon, 0700 the daemon's files: daemon.sock, daemon.log (written by the daemon)
//! ```
//!
//! Root opens its directories one component at a time, each relative to its parent's descriptor
//! with `O_DIRECTORY | O_NOFOLLOW`, and its files relative to the state directory's descriptor with
//! `O_NOFOLLOW`, so a symbolic link anywhere is refused rather than followed. Every directory on
//! the way must belong to root (or the process's own user, for tests) and be writable by no one
//! else unless it is sticky (`/tmp`): then nobody else can rename or replace what lies below.
//! The state directory must be root's with mode 0700, or the helper refuses to start. Root never
//! opens anything in `user/`; it only removes the socket there, with `unlinkat`, which does not
//! follow links either.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag, AT_FDCWD};
use nix::sys::stat::{fchmod, fstat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{fchown, unlinkat, Gid, Uid, UnlinkatFlags};

/// Root's directory inside the runtime directory.
pub const STATE_DIR: &str = "state";
/// The daemon's directory inside the runtime directory.
pub const USER_DIR: &str = "user";
/// The control socket, in [`USER_DIR`].
pub const SOCKET: &str = "daemon.sock";
/// The daemon's log, in [`USER_DIR`], written by the daemon itself.
pub const DAEMON_LOG: &str = "daemon.log";
/// The privileged helper's log, in [`STATE_DIR`].
pub const HELPER_LOG: &str = "helper.log";

/// Why a directory or file of the runtime directory was refused.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeDirError {
    /// The runtime directory must be an absolute path without `..`.
    #[error("{0} is not an absolute path without `..`")]
    NotAbsolute(PathBuf),
    /// A symbolic link, or something other than a directory, where a directory must be.
    #[error("{0} is a symbolic link or not a directory; tether only uses real directories here")]
    NotADirectory(PathBuf),
    /// A directory that another user could change (owner, or writable by group or others).
    #[error(
        "{path} belongs to uid {uid} with mode {mode:o}: another user could change it. Use a \
         runtime directory whose parents only root can write"
    )]
    Untrusted { path: PathBuf, uid: u32, mode: u32 },
    /// Root's state directory is not root's alone.
    #[error(
        "{path} must belong to uid {want} with mode 700 but belongs to uid {uid} with mode \
         {mode:o}; remove it (`sudo rm -rf {path}`) and connect again"
    )]
    NotPrivate {
        path: PathBuf,
        want: u32,
        uid: u32,
        mode: u32,
    },
    /// A file of the state directory is a symbolic link or not a regular file.
    #[error("{0} is not a regular file; refusing to use it")]
    NotAFile(PathBuf),
    /// A system call failed.
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(action: &'static str, path: &Path, errno: Errno) -> RuntimeDirError {
    RuntimeDirError::Io {
        action,
        path: path.to_owned(),
        source: errno.into(),
    }
}

/// The daemon's directory: `<runtime>/user`.
pub fn user_dir(runtime: &Path) -> PathBuf {
    runtime.join(USER_DIR)
}

/// The control socket: `<runtime>/user/daemon.sock`.
pub fn socket_path(runtime: &Path) -> PathBuf {
    user_dir(runtime).join(SOCKET)
}

/// The daemon's log: `<runtime>/user/daemon.log`.
pub fn daemon_log_path(runtime: &Path) -> PathBuf {
    user_dir(runtime).join(DAEMON_LOG)
}

/// The helper's log: `<runtime>/state/helper.log` (root's only).
pub fn helper_log_path(runtime: &Path) -> PathBuf {
    runtime.join(STATE_DIR).join(HELPER_LOG)
}

/// Mode bits that let someone other than the owner create, rename or delete entries.
const WRITABLE_BY_OTHERS: u32 = 0o022;
const STICKY: u32 = 0o1000;

fn mode_of(st: &FileStat) -> u32 {
    st.st_mode & 0o7777
}

fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// Who may own the directories root relies on: root, or this process's user (so that the same
/// code runs in tests without root).
fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == Uid::effective().as_raw()
}

/// Whether only a trusted owner can change which entries `st` (a directory) holds.
fn entries_are_safe(st: &FileStat) -> bool {
    trusted_owner(st.st_uid) && (mode_of(st) & WRITABLE_BY_OTHERS == 0 || mode_of(st) & STICKY != 0)
}

/// Opens (creating if missing, with `mode`) the directory `name` inside `parent`, never following
/// a symbolic link.
fn open_dir_at(
    parent: impl AsFd + Copy,
    name: &OsStr,
    mode: Mode,
    path: &Path,
) -> Result<(OwnedFd, FileStat), RuntimeDirError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = match openat(parent, name, flags, Mode::empty()) {
        Err(Errno::ENOENT) => {
            match mkdirat(parent, name, mode) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(io("creating", path, e)),
            }
            openat(parent, name, flags, Mode::empty())
        }
        other => other,
    };
    let fd = match fd {
        Ok(fd) => fd,
        Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
            return Err(RuntimeDirError::NotADirectory(path.to_owned()))
        }
        Err(e) => return Err(io("opening", path, e)),
    };
    let st = fstat(&fd).map_err(|e| io("inspecting", path, e))?;
    if !is_dir(&st) {
        return Err(RuntimeDirError::NotADirectory(path.to_owned()));
    }
    Ok((fd, st))
}

/// The runtime directory, open; see the [module](self) for the layout.
#[derive(Debug)]
pub struct RuntimeDir {
    path: PathBuf,
    fd: OwnedFd,
}

impl RuntimeDir {
    /// Opens the runtime directory, creating what is missing. Every parent must be a real
    /// directory only root can change (or sticky); the directory itself is made root's, mode
    /// 0755, if it is not (an older tether handed it to the daemon's user), which is safe because
    /// its parent lets no one else replace it.
    pub fn open(path: &Path) -> Result<RuntimeDir, RuntimeDirError> {
        let not_absolute = || RuntimeDirError::NotAbsolute(path.to_owned());
        if !path.is_absolute() {
            return Err(not_absolute());
        }
        let mut names = Vec::new();
        for c in path.components() {
            match c {
                Component::RootDir => {}
                Component::Normal(name) => names.push(name),
                _ => return Err(not_absolute()),
            }
        }
        let Some((last, parents)) = names.split_last() else {
            return Err(not_absolute());
        };
        let (mut fd, mut st) = open_dir_at(AT_FDCWD, OsStr::new("/"), Mode::empty(), path)?;
        let mut here = PathBuf::from("/");
        for name in parents {
            if !entries_are_safe(&st) {
                return Err(untrusted(&here, &st));
            }
            here.push(name);
            (fd, st) = open_dir_at(&fd, name, Mode::from_bits_truncate(0o755), &here)?;
        }
        if !entries_are_safe(&st) {
            return Err(untrusted(&here, &st));
        }
        let parent_is_shared = mode_of(&st) & WRITABLE_BY_OTHERS != 0;
        let (fd, st) = open_dir_at(&fd, last, Mode::from_bits_truncate(0o755), path)?;
        let me = (Uid::effective(), Gid::effective());
        let wrong_owner = st.st_uid != me.0.as_raw();
        if wrong_owner || mode_of(&st) & (WRITABLE_BY_OTHERS | STICKY) != 0 {
            if parent_is_shared && wrong_owner {
                // In /tmp and the like its owner created it: it is theirs, not ours to take.
                return Err(untrusted(path, &st));
            }
            if wrong_owner {
                tracing::warn!(path = %path.display(), uid = st.st_uid, "Taking the runtime directory back from its owner");
            }
            fchown(&fd, Some(me.0), Some(me.1)).map_err(|e| io("taking", path, e))?;
            fchmod(&fd, Mode::from_bits_truncate(0o755)).map_err(|e| io("securing", path, e))?;
        }
        Ok(RuntimeDir {
            path: path.to_owned(),
            fd,
        })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Root's state directory (created 0700 if missing); refused unless it is root's alone.
    pub fn state(&self) -> Result<StateDir, RuntimeDirError> {
        let path = self.path.join(STATE_DIR);
        let (fd, st) = open_dir_at(
            &self.fd,
            OsStr::new(STATE_DIR),
            Mode::from_bits_truncate(0o700),
            &path,
        )?;
        let want = Uid::effective().as_raw();
        if st.st_uid != want || mode_of(&st) & 0o077 != 0 {
            return Err(RuntimeDirError::NotPrivate {
                path,
                want,
                uid: st.st_uid,
                mode: mode_of(&st),
            });
        }
        Ok(StateDir { path, fd })
    }

    /// Gives the daemon's user (`uid`, `gid`) its directory, mode 0700, creating it if missing.
    /// What it holds is the daemon's business: root never opens it.
    pub fn prepare_user_dir(&self, uid: u32, gid: u32) -> Result<PathBuf, RuntimeDirError> {
        let path = self.path.join(USER_DIR);
        let (fd, _) = open_dir_at(
            &self.fd,
            OsStr::new(USER_DIR),
            Mode::from_bits_truncate(0o700),
            &path,
        )?;
        fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
            .map_err(|e| io("handing over", &path, e))?;
        fchmod(&fd, Mode::from_bits_truncate(0o700)).map_err(|e| io("securing", &path, e))?;
        // A log another user left here would not be the daemon's to append to.
        if let Ok(st) =
            nix::sys::stat::fstatat(&fd, DAEMON_LOG, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        {
            if st.st_uid != uid {
                let _ = unlinkat(&fd, DAEMON_LOG, UnlinkatFlags::NoRemoveDir);
            }
        }
        Ok(path)
    }

    /// Removes the control socket a daemon left (the name only: `unlinkat` follows no link).
    pub fn remove_socket(&self) {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        if let Ok(user) = openat(&self.fd, USER_DIR, flags, Mode::empty()) {
            let _ = unlinkat(&user, SOCKET, UnlinkatFlags::NoRemoveDir);
        }
    }
}

fn untrusted(path: &Path, st: &FileStat) -> RuntimeDirError {
    RuntimeDirError::Untrusted {
        path: path.to_owned(),
        uid: st.st_uid,
        mode: mode_of(st),
    }
}

/// Root's state directory, open: files in it are opened relative to its descriptor, never
/// following a link, and created 0600.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    fd: OwnedFd,
}

impl StateDir {
    /// Opens `<runtime>/state`, checking the whole way (see [`RuntimeDir::open`]).
    pub fn open(runtime: &Path) -> Result<StateDir, RuntimeDirError> {
        RuntimeDir::open(runtime)?.state()
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_file(&self, name: &str, flags: OFlag) -> Result<File, RuntimeDirError> {
        let path = self.path.join(name);
        let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match openat(&self.fd, name, flags, Mode::from_bits_truncate(0o600)) {
            Ok(fd) => fd,
            Err(Errno::ELOOP) => return Err(RuntimeDirError::NotAFile(path)),
            Err(e) => return Err(io("opening", &path, e)),
        };
        let st = fstat(&fd).map_err(|e| io("inspecting", &path, e))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(RuntimeDirError::NotAFile(path));
        }
        if mode_of(&st) & 0o077 != 0 {
            fchmod(&fd, Mode::from_bits_truncate(0o600)).map_err(|e| io("securing", &path, e))?;
        }
        Ok(File::from(fd))
    }

    /// The contents of `name`, or `None` if there is no such file.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>, RuntimeDirError> {
        let mut file = match self.open_file(name, OFlag::O_RDONLY) {
            Ok(f) => f,
            Err(RuntimeDirError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|source| RuntimeDirError::Io {
                action: "reading",
                path: self.path.join(name),
                source,
            })?;
        Ok(Some(bytes))
    }

    /// Replaces `name`'s contents with `bytes` (created 0600) and syncs it.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<(), RuntimeDirError> {
        let mut file = self.open_file(name, OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC)?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|source| RuntimeDirError::Io {
                action: "writing",
                path: self.path.join(name),
                source,
            })
    }

    /// Removes `name`; a missing file is not an error.
    pub fn remove(&self, name: &str) -> Result<(), RuntimeDirError> {
        match unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(io("removing", &self.path.join(name), e)),
        }
    }

    /// Opens the log `name` for appending (created 0600).
    pub fn open_log(&self, name: &str) -> Result<File, RuntimeDirError> {
        self.open_file(name, OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_APPEND)
    }
}

/// Sends this process's standard error (its log, and any panic) to [`open_daemon_log`]'s file.
pub fn redirect_stderr_to_daemon_log(runtime: &Path) -> std::io::Result<()> {
    let log = open_daemon_log(runtime)?;
    nix::unistd::dup2_stderr(&log)?;
    Ok(())
}

/// Opens the daemon's own log, `<runtime>/user/daemon.log`, as the daemon's user: created 0600,
/// appended to, never through a symbolic link. Anything else in its place (a link, a fifo) is
/// removed first: the directory is the user's own, and removing a name never follows it.
pub fn open_daemon_log(runtime: &Path) -> std::io::Result<File> {
    let path = daemon_log_path(runtime);
    if std::fs::symlink_metadata(&path).is_ok_and(|m| !m.file_type().is_file()) {
        std::fs::remove_file(&path)?;
    }
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(&path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(
            "the daemon log is not a regular file",
        ));
    }
    // A log an older tether created world-readable.
    fchmod(&file, Mode::from_bits_truncate(0o600))?;
    Ok(file)
}

#[cfg(test)]
mod tests;
