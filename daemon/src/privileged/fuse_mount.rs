//! FUSE mounts for `tether intercept --mount`, made by the helper on the daemon's request.
//!
//! Mounting a file system needs root; serving it does not. So the helper opens `/dev/fuse`,
//! mounts it (`fuse.tether`, `nosuid,nodev`, only the laptop user's processes may enter) and
//! passes the descriptor to the daemon, which serves it as that user, the way `fusermount` does
//! for unprivileged FUSE programs. The helper never reads or writes through the mount.
//!
//! What a daemon may ask, and what it may not:
//! - No directory: the helper makes a fresh one (`/tmp/tether-mount-XXXXXX`, the laptop user's,
//!   0700) and removes it after unmounting.
//! - A directory: it must be an existing, empty directory that belongs to the laptop user, named
//!   by an absolute path whose last component is not a symbolic link. It is checked through a
//!   descriptor and mounted through that same descriptor (`/proc/self/fd/N`), so what was checked
//!   is what gets mounted on. When the laptop user is root (whose daemon runs as `nobody`), an
//!   empty root-owned directory could be one the system trusts (`/etc/sudoers.d`), so it must
//!   also lie under `/tmp`, `/var/tmp`, `/mnt` or `/media`.
//! - At most [`MAX_MOUNTS`] at once, never one mount on another.
//!
//! Every mount is recorded in root's state directory before it is made. The helper unmounts them
//! all when the daemon exits, however it exits (a `kill -9` of the daemon leaves the kernel's
//! FUSE connection dead, and the helper unmounts it at once); if the helper itself was killed, the
//! next `connect` or `quit` finds the record and unmounts what is left. Unmounting is lazy
//! (`MNT_DETACH`), so a shell sitting in the directory does not keep a dead mount alive, and only
//! ever applies to a `fuse.tether` mount at the recorded place.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{fstat, Mode, SFlag};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::runtime_dir::{RuntimeDirError, StateDir};

/// The record of this helper's mounts, in root's state directory.
pub const RECORD: &str = "mounts.json";
/// Mounts one session may hold at once.
pub const MAX_MOUNTS: usize = 16;
/// The file system type the kernel shows (`fuse.` + subtype).
const FS_TYPE: &str = "fuse.tether";
/// The source the kernel shows.
const SOURCE: &str = "tether";
/// How far ahead the kernel reads a file sequentially read through a mount (KiB). FUSE starts
/// with the block layer's default, 128 KiB: one or two reads in flight, each a round trip to the
/// pod; at 4 MiB the kernel keeps many 1 MiB reads going at once.
pub const READAHEAD_KB: u32 = 4096;
/// Where root's own mount directories may be.
const ROOT_PLACES: [&str; 4] = ["/tmp", "/var/tmp", "/mnt", "/media"];

/// Why a mount was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("{0} is not an absolute path without `..`")]
    NotAbsolute(PathBuf),
    #[error("{0} does not exist; create it first, or leave --mount without a directory")]
    Missing(PathBuf),
    #[error("{0} is a symbolic link or not a directory")]
    NotADirectory(PathBuf),
    #[error("{path} belongs to uid {uid}, not to uid {want} (the user tether runs for)")]
    NotOwner { path: PathBuf, uid: u32, want: u32 },
    #[error("{0} is not empty; tether mounts only on an empty directory, so nothing is hidden")]
    NotEmpty(PathBuf),
    #[error(
        "{0}: for root, mount directories must be under /tmp, /var/tmp, /mnt or /media (the \
         daemon asks for the mount, and elsewhere an empty root-owned directory may be one the \
         system trusts)"
    )]
    NotAPlaceForRoot(PathBuf),
    #[error("{0} is mounted on already")]
    AlreadyMounted(PathBuf),
    #[error("{0} is not one of this session's mounts")]
    NotOurs(PathBuf),
    #[error("at most {MAX_MOUNTS} mounts at once")]
    TooMany,
    #[error("the kernel has no FUSE (/dev/fuse)")]
    NoFuse(#[source] Errno),
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error(transparent)]
    State(#[from] RuntimeDirError),
    #[error("the record of mounts is unreadable")]
    Record(#[from] serde_json::Error),
}

fn io(action: &'static str, path: &Path, source: Errno) -> MountError {
    MountError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Who the mounts are for: the laptop user (the one who ran `sudo`, or root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// One mount, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    /// The mount point.
    pub dir: PathBuf,
    /// The helper made the directory, and removes it after unmounting.
    pub created: bool,
}

/// The record in root's state directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    /// The helper that made these mounts.
    helper: u32,
    mounts: Vec<Recorded>,
}

/// The helper's mounts.
#[derive(Debug)]
pub struct Mounts {
    owner: Owner,
    active: Vec<Recorded>,
}

/// A mount made: where, and the `/dev/fuse` descriptor that serves it.
#[derive(Debug)]
pub struct Made {
    pub dir: PathBuf,
    pub fuse: OwnedFd,
}

impl Mounts {
    pub fn new(owner: Owner) -> Mounts {
        Mounts {
            owner,
            active: Vec::new(),
        }
    }

    /// Who the mounts are for.
    pub fn owner(&self) -> Owner {
        self.owner
    }

    /// Mounts a fresh FUSE file system at `dir` (or a new temporary directory), after the checks
    /// of the module docs.
    pub fn mount(&mut self, state: &StateDir, dir: Option<&Path>) -> Result<Made, MountError> {
        if self.active.len() >= MAX_MOUNTS {
            return Err(MountError::TooMany);
        }
        let (dir, dir_fd, created) = match dir {
            Some(dir) => {
                // Before anything opens it: a FUSE mount nobody serves would hang the helper.
                if inside_fuse_mount(dir) {
                    return Err(MountError::AlreadyMounted(dir.to_owned()));
                }
                let fd = self.check_dir(dir)?;
                (dir.to_owned(), fd, false)
            }
            None => {
                let (dir, fd) = self.make_dir()?;
                (dir, fd, true)
            }
        };
        if self.active.iter().any(|m| m.dir == dir) || is_mounted_fuse(&dir) {
            return Err(MountError::AlreadyMounted(dir));
        }
        let fuse = match open("/dev/fuse", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) => {
                if created {
                    let _ = std::fs::remove_dir(&dir);
                }
                return Err(MountError::NoFuse(e));
            }
        };
        // Recorded first: a helper killed right after mounting still leaves a trace.
        self.active.push(Recorded {
            dir: dir.clone(),
            created,
        });
        self.save(state)?;
        let target = format!("/proc/self/fd/{}", dir_fd.as_raw_fd());
        let options = format!(
            "fd={},rootmode=40000,user_id={},group_id={},default_permissions",
            fuse.as_raw_fd(),
            self.owner.uid,
            self.owner.gid
        );
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        let mounted = mount(
            Some(SOURCE),
            target.as_str(),
            Some(FS_TYPE),
            flags,
            Some(options.as_str()),
        )
        // Kernels without subtypes take plain `fuse`.
        .or_else(|_| {
            mount(
                Some(SOURCE),
                target.as_str(),
                Some("fuse"),
                flags,
                Some(options.as_str()),
            )
        });
        if let Err(e) = mounted {
            self.active.retain(|m| m.dir != dir);
            self.save(state)?;
            if created {
                let _ = std::fs::remove_dir(&dir);
            }
            return Err(io("mounting FUSE on", &dir, e));
        }
        info!(dir = %dir.display(), "FUSE file system mounted for the daemon");
        Ok(Made { dir, fuse })
    }

    /// Lets the kernel read ahead [`READAHEAD_KB`] on one of this session's mounts. Only after
    /// the daemon answered the kernel's `INIT` (which caps it to what the daemon said it takes).
    pub fn read_ahead(&self, dir: &Path) -> Result<(), MountError> {
        if !self.active.iter().any(|m| m.dir == dir) {
            return Err(MountError::NotOurs(dir.to_owned()));
        }
        let info = mountinfo();
        let dev = tether_mounts(&info)
            .find(|(point, _)| Path::new(point) == dir)
            .map(|(_, dev)| dev)
            .ok_or_else(|| MountError::NotOurs(dir.to_owned()))?;
        // `MAJOR:MINOR`, digits only: the name of the mount's backing device info in sysfs.
        if !dev
            .split(':')
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(MountError::NotOurs(dir.to_owned()));
        }
        let path = PathBuf::from(format!("/sys/class/bdi/{dev}/read_ahead_kb"));
        std::fs::write(&path, READAHEAD_KB.to_string()).map_err(|e| {
            io(
                "writing",
                &path,
                Errno::from_raw(e.raw_os_error().unwrap_or(0)),
            )
        })
    }

    /// Unmounts one of this session's mounts.
    pub fn unmount(&mut self, state: &StateDir, dir: &Path) -> Result<(), MountError> {
        let index = self
            .active
            .iter()
            .position(|m| m.dir == dir)
            .ok_or_else(|| MountError::NotOurs(dir.to_owned()))?;
        let recorded = self.active.remove(index);
        let result = unmount_recorded(&recorded);
        self.save(state)?;
        result
    }

    /// Unmounts everything (the daemon has exited).
    pub fn unmount_all(&mut self, state: &StateDir) {
        for recorded in std::mem::take(&mut self.active) {
            if let Err(error) = unmount_recorded(&recorded) {
                warn!(error = %tether_proto::error_chain(&error), "Could not unmount");
            }
        }
        if let Err(error) = state.remove(RECORD) {
            warn!(error = %tether_proto::error_chain(&error), "Could not remove the record of mounts");
        }
    }

    fn save(&self, state: &StateDir) -> Result<(), MountError> {
        if self.active.is_empty() {
            state.remove(RECORD)?;
            return Ok(());
        }
        let record = Record {
            helper: std::process::id(),
            mounts: self.active.clone(),
        };
        state.write(RECORD, &serde_json::to_vec(&record)?)?;
        Ok(())
    }

    /// Opens `dir` for mounting on, after checking it.
    fn check_dir(&self, dir: &Path) -> Result<OwnedFd, MountError> {
        if !dir.is_absolute()
            || dir
                .components()
                .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
            || dir.parent().is_none()
        {
            return Err(MountError::NotAbsolute(dir.to_owned()));
        }
        let fd = match open(
            dir,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Err(MountError::Missing(dir.to_owned())),
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                return Err(MountError::NotADirectory(dir.to_owned()))
            }
            Err(e) => return Err(io("opening", dir, e)),
        };
        let st = fstat(&fd).map_err(|e| io("inspecting", dir, e))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
            return Err(MountError::NotADirectory(dir.to_owned()));
        }
        if st.st_uid != self.owner.uid {
            return Err(MountError::NotOwner {
                path: dir.to_owned(),
                uid: st.st_uid,
                want: self.owner.uid,
            });
        }
        // Where the descriptor really is (a parent may be a link).
        let real =
            std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|e| {
                io(
                    "resolving",
                    dir,
                    Errno::from_raw(e.raw_os_error().unwrap_or(0)),
                )
            })?;
        if self.owner.uid == 0 && !under_root_place(&real) {
            return Err(MountError::NotAPlaceForRoot(dir.to_owned()));
        }
        if !is_empty(&fd, dir)? {
            return Err(MountError::NotEmpty(dir.to_owned()));
        }
        Ok(fd)
    }

    /// A new directory in `/tmp` for the laptop user.
    fn make_dir(&self) -> Result<(PathBuf, OwnedFd), MountError> {
        let dir = nix::unistd::mkdtemp("/tmp/tether-mount-XXXXXX")
            .map_err(|e| io("creating", Path::new("/tmp/tether-mount-XXXXXX"), e))?;
        let fd = open(
            &dir,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io("opening", &dir, e))?;
        nix::unistd::fchown(
            &fd,
            Some(nix::unistd::Uid::from_raw(self.owner.uid)),
            Some(nix::unistd::Gid::from_raw(self.owner.gid)),
        )
        .map_err(|e| io("handing over", &dir, e))?;
        Ok((dir, fd))
    }
}

fn is_empty(fd: &OwnedFd, path: &Path) -> Result<bool, MountError> {
    let dup = fd.try_clone().map_err(|e| {
        io(
            "reading",
            path,
            Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        )
    })?;
    let mut dir = nix::dir::Dir::from_fd(dup).map_err(|e| io("reading", path, e))?;
    let mut names = 0;
    for entry in dir.iter() {
        let entry = entry.map_err(|e| io("reading", path, e))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names += 1;
        }
    }
    Ok(names == 0)
}

fn under_root_place(real: &Path) -> bool {
    ROOT_PLACES
        .iter()
        .any(|place| real.starts_with(place) && real != Path::new(place))
}

/// Unmounts `recorded` if a tether FUSE mount is still there, and removes a directory the helper
/// made (only if empty: `rmdir`).
fn unmount_recorded(recorded: &Recorded) -> Result<(), MountError> {
    if is_mounted_fuse(&recorded.dir) {
        match umount2(
            &recorded.dir,
            MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW,
        ) {
            Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => {}
            Err(e) => return Err(io("unmounting", &recorded.dir, e)),
        }
        info!(dir = %recorded.dir.display(), "FUSE file system unmounted");
    }
    if recorded.created {
        let _ = std::fs::remove_dir(&recorded.dir);
    }
    Ok(())
}

/// Unmounts what a helper that no longer runs left behind. Returns how many it unmounted.
pub fn repair_stale(state: &StateDir) -> Result<usize, MountError> {
    let Some(bytes) = state.read(RECORD)? else {
        return Ok(0);
    };
    let record: Record = serde_json::from_slice(&bytes)?;
    if record.helper == std::process::id() || crate::process::running(record.helper) {
        return Ok(0);
    }
    let mut count = 0;
    for recorded in &record.mounts {
        if is_mounted_fuse(&recorded.dir) {
            count += 1;
        }
        if let Err(error) = unmount_recorded(recorded) {
            warn!(error = %tether_proto::error_chain(&error), "Could not unmount a stale mount");
        }
    }
    state.remove(RECORD)?;
    Ok(count)
}

fn mountinfo() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()
}

/// Whether a tether FUSE file system is mounted at `dir` (in this mount namespace).
pub fn is_mounted_fuse(dir: &Path) -> bool {
    tether_mounts(&mountinfo()).any(|(point, _)| Path::new(&point) == dir)
}

/// Whether `dir` is a tether FUSE mount or lies inside one (by its path as given).
fn inside_fuse_mount(dir: &Path) -> bool {
    tether_mounts(&mountinfo()).any(|(point, _)| dir.starts_with(&point))
}

/// The mount points of tether's FUSE mounts in `mountinfo` (the text of
/// `/proc/self/mountinfo`), each with its device (`MAJOR:MINOR`).
fn tether_mounts(mountinfo: &str) -> impl Iterator<Item = (String, String)> + '_ {
    mountinfo.lines().filter_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let mut fields = before.split(' ');
        let dev = fields.nth(2)?.to_owned();
        let point = fields.nth(1).map(unescape)?;
        let mut after = after.split(' ');
        let (fstype, source) = (after.next(), after.next());
        (matches!(fstype, Some("fuse.tether" | "fuse")) && source == Some(SOURCE))
            .then_some((point, dev))
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                let n = d.iter().fold(0u32, |n, b| n * 8 + u32::from(b - b'0'));
                out.push(u8::try_from(n).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests;
