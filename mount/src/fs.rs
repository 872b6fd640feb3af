//! The [`fuser::Filesystem`]: each kernel request turned into file operations.
//!
//! Methods run on fuser's one reading thread and must not wait for the network there: each that
//! needs the agent resolves its inode to a path (a lock held for microseconds), spawns a task on
//! the tokio runtime that makes the call, and returns; the task replies when the answer comes.
//! Only `readdir`, which reads the listing fetched at `opendir`, and `forget` answer in place.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileHandle, FileType, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use tether_proto::files::{DirEntry, FileAttr, FileOk, FileOp, Timestamp, MAX_IO};
use tokio::runtime::Handle;
use tracing::{debug, warn};

use crate::convert::{self, TTL};
use crate::inodes::{Inodes, Version, ROOT};
use crate::listing::{Listing, Listings, Slot};
use crate::{FileService, MountOptions};

/// Background requests (readahead, mostly) the kernel may have in flight at once; its default
/// of 12 would cap a sequential read at 12 reads on the link.
const MAX_BACKGROUND: u16 = 64;

/// Answers a request with the error of `$result`, or goes on with its value.
macro_rules! or_reply {
    ($result:expr, $reply:ident) => {
        match $result {
            Ok(value) => value,
            Err(errno) => return $reply.error(errno),
        }
    };
}

/// The file system served: the pod's files, through a [`FileService`].
pub(crate) struct TetherFs {
    inner: Arc<Inner>,
}

struct Inner {
    service: Arc<dyn FileService>,
    runtime: Handle,
    options: MountOptions,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    inodes: Inodes,
    listings: Listings,
    /// The handles open on each inode, by the kernel's handle: the file they stand for is
    /// still asked about by them once its path names it no more.
    open: HashMap<u64, u64>,
}

impl State {
    /// A handle open on `ino`, if any.
    fn open_on(&self, ino: u64) -> Option<u64> {
        self.open
            .iter()
            .find(|(_, on)| **on == ino)
            .map(|(fh, _)| *fh)
    }
}

impl TetherFs {
    pub(crate) fn new(
        service: Arc<dyn FileService>,
        runtime: Handle,
        options: MountOptions,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                service,
                runtime,
                options,
                state: Mutex::default(),
            }),
        }
    }

    /// Runs `task` on the runtime. Should the runtime be gone, the task is dropped and with it
    /// its reply, which fuser then answers with `EIO`.
    fn spawn<F, T>(&self, task: F)
    where
        F: FnOnce(Arc<Inner>) -> T,
        T: Future<Output = ()> + Send + 'static,
    {
        self.inner.runtime.spawn(task(self.inner.clone()));
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere leaves the table consistent (every change is one call).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The path of `ino`: `ENOENT` for one unlinked (or forgotten) since.
    fn path(&self, ino: INodeNo) -> Result<String, Errno> {
        self.state()
            .inodes
            .path(ino.0)
            .map(str::to_owned)
            .ok_or(Errno::ENOENT)
    }

    /// The path of `name` in directory `parent`.
    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<String, Errno> {
        convert::child(&self.path(parent)?, name)
    }

    /// Makes one call, within the time limit.
    async fn call(&self, op: FileOp) -> Result<FileOk, Errno> {
        let name = op_name(&op);
        match tokio::time::timeout(self.options.call_timeout, self.service.call(op)).await {
            Ok(Ok(ok)) => Ok(ok),
            Ok(Err(error)) => {
                debug!(op = name, kind = ?error.kind, message = %error.message, "A file operation failed");
                Err(convert::errno(error.kind))
            }
            Err(_) => {
                warn!(op = name, timeout = ?self.options.call_timeout, "A file operation got no answer in time");
                Err(Errno::EIO)
            }
        }
    }

    async fn call_attr(&self, op: FileOp) -> Result<FileAttr, Errno> {
        match self.call(op).await? {
            FileOk::Attr(attr) => Ok(attr),
            other => Err(unexpected(&other)),
        }
    }

    async fn call_done(&self, op: FileOp) -> Result<(), Errno> {
        match self.call(op).await? {
            FileOk::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    fn attr(&self, ino: u64, attr: &FileAttr) -> fuser::FileAttr {
        convert::attr(ino, attr, self.options.uid, self.options.gid)
    }

    /// Tells the kernel of `path`, counting the lookup this is.
    fn reply_entry(&self, path: &str, attr: &FileAttr, reply: ReplyEntry) {
        let ino = self.state().inodes.lookup(path);
        reply.entry(&TTL, &self.attr(ino, attr), Generation(0));
    }

    /// Up to `len` bytes at `offset`, in calls of at most [`MAX_IO`]; fewer at the end.
    async fn read(&self, handle: u64, offset: u64, len: u32) -> Result<Vec<u8>, Errno> {
        let mut data = Vec::new();
        let mut done: u32 = 0;
        while done < len {
            let want = (len - done).min(MAX_IO);
            let op = FileOp::Read {
                handle,
                offset: offset + u64::from(done),
                len: want,
            };
            let mut chunk = match self.call(op).await? {
                FileOk::Data(chunk) => chunk,
                other => return Err(unexpected(&other)),
            };
            // `want` is a u32, so is what is kept of the chunk.
            chunk.truncate(want as usize);
            let got = chunk.len() as u32;
            if data.is_empty() {
                data = chunk;
            } else {
                data.extend_from_slice(&chunk);
            }
            done += got;
            if got < want {
                break;
            }
        }
        Ok(data)
    }

    /// Writes `data` at `offset` in calls of at most [`MAX_IO`]; the bytes written.
    async fn write(&self, handle: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let mut written: u32 = 0;
        for chunk in data.chunks(MAX_IO as usize) {
            let op = FileOp::Write {
                handle,
                offset: offset + u64::from(written),
                data: chunk.to_vec(),
            };
            let n = match self.call(op).await? {
                FileOk::Written(n) => n,
                other => return Err(unexpected(&other)),
            };
            written += n;
            // At most MAX_IO bytes, so the length fits.
            if n < chunk.len() as u32 {
                break;
            }
        }
        Ok(written)
    }
}

/// An answer of the wrong kind: the agent is broken, the kernel gets `EIO`.
fn unexpected(ok: &FileOk) -> Errno {
    warn!(answer = ?std::mem::discriminant(ok), "A file operation got an answer of the wrong kind");
    Errno::EIO
}

fn op_name(op: &FileOp) -> &'static str {
    match op {
        FileOp::Stat { .. } => "stat",
        FileOp::ReadDir { .. } => "readdir",
        FileOp::ReadLink { .. } => "readlink",
        FileOp::Open { .. } => "open",
        FileOp::Create { .. } => "create",
        FileOp::Read { .. } => "read",
        FileOp::Write { .. } => "write",
        FileOp::Fsync { .. } => "fsync",
        FileOp::Close { .. } => "close",
        FileOp::SetAttr { .. } => "setattr",
        FileOp::Mkdir { .. } => "mkdir",
        FileOp::Unlink { .. } => "unlink",
        FileOp::Rmdir { .. } => "rmdir",
        FileOp::Rename { .. } => "rename",
        FileOp::Symlink { .. } => "symlink",
        FileOp::StatFs { .. } => "statfs",
        FileOp::Fstat { .. } => "fstat",
        FileOp::ReadDirPage { .. } => "readdir",
    }
}

fn version(attr: &FileAttr) -> Version {
    Version {
        mtime: attr.mtime,
        size: attr.size,
    }
}

fn time(time: TimeOrNow) -> Timestamp {
    // The laptop's clock: the protocol has no "the agent's now".
    convert::timestamp(match time {
        TimeOrNow::SpecificTime(time) => time,
        TimeOrNow::Now => SystemTime::now(),
    })
}

/// The `d_ino` shown for a listed name the kernel holds no inode for: stable for the path and
/// never one of the table's numbers (which count up from 1).
fn listed_ino(path: &str) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    path.hash(&mut hasher);
    hasher.finish() | 1 << 63
}

/// Attributes for `.` and `..` in a `readdirplus` answer, which the kernel does not use.
const DOT_ATTR: FileAttr = FileAttr::directory(0o755);

impl fuser::Filesystem for TetherFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Writes as large as one `Write` carries, and reads (of which readahead sends several
        // at once) as large as the kernel allows, up to one `Read`.
        if let Err(nearest) = config.set_max_write(MAX_IO) {
            let _ = config.set_max_write(nearest);
        }
        if let Err(nearest) = config.set_max_readahead(MAX_IO) {
            let _ = config.set_max_readahead(nearest);
        }
        let _ = config.set_max_background(MAX_BACKGROUND);
        let wanted = InitFlags::FUSE_ASYNC_READ
            | InitFlags::FUSE_BIG_WRITES
            | InitFlags::FUSE_MAX_PAGES
            // `open(O_TRUNC)` is one `Open`, not a `SetAttr` and an `Open`.
            | InitFlags::FUSE_ATOMIC_O_TRUNC
            // Cached pages are dropped when a file's mtime or size is seen to change.
            | InitFlags::FUSE_AUTO_INVAL_DATA
            // A listing carries every entry's attributes: `ls -l` needs no lookups.
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS;
        let _ = config.add_capabilities(wanted & config.capabilities());
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        // A name the protocol cannot carry does not exist in the pod.
        let path = or_reply!(
            self.inner
                .child(parent, name)
                .map_err(|e| if e == Errno::EINVAL { Errno::ENOENT } else { e }),
            reply
        );
        self.spawn(|inner| async move {
            match inner.call_attr(FileOp::Stat { path: path.clone() }).await {
                Ok(attr) => inner.reply_entry(&path, &attr, reply),
                // A negative entry: the kernel remembers the name is missing for the TTL.
                Err(errno) if errno == Errno::ENOENT => {
                    reply.entry(&TTL, &inner.attr(0, &DOT_ATTR), Generation(0));
                }
                Err(errno) => reply.error(errno),
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.inner.state().inodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        // By its path first: what the name is now. A file whose name is gone (removed here, or
        // renamed in the pod) while it is open is asked about by its handle (`open`, `unlink`,
        // `fstat`), as a local file system answers it. The kernel names the handle only on
        // reads, not on `fstat`: any handle open on the inode will do.
        let (path, open) = {
            let state = self.inner.state();
            let path = state.inodes.path(ino.0).map(str::to_owned);
            (path, fh.map(|fh| fh.0).or_else(|| state.open_on(ino.0)))
        };
        self.spawn(|inner| async move {
            let by_path = match path {
                Some(path) => inner.call_attr(FileOp::Stat { path }).await,
                None => Err(Errno::ENOENT),
            };
            let attr = match (by_path, open) {
                (Ok(attr), _) => attr,
                (Err(errno), Some(handle)) if errno == Errno::ENOENT => {
                    or_reply!(inner.call_attr(FileOp::Fstat { handle }).await, reply)
                }
                (Err(errno), _) => return reply.error(errno),
            };
            reply.attr(&TTL, &inner.attr(ino.0, &attr));
        });
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // Every file is shown as the laptop user's: "changing" it to them is a no-op, to anyone
        // else not possible.
        let options = &self.inner.options;
        if uid.is_some_and(|uid| uid != options.uid) || gid.is_some_and(|gid| gid != options.gid) {
            return reply.error(Errno::EPERM);
        }
        let path = or_reply!(self.inner.path(ino), reply);
        let op = FileOp::SetAttr {
            path,
            size,
            perm: mode.map(|mode| mode & 0o7777),
            atime: atime.map(time),
            mtime: mtime.map(time),
        };
        self.spawn(|inner| async move {
            let attr = or_reply!(inner.call_attr(op).await, reply);
            reply.attr(&TTL, &inner.attr(ino.0, &attr));
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let path = or_reply!(self.inner.path(ino), reply);
        self.spawn(|inner| async move {
            match or_reply!(inner.call(FileOp::ReadLink { path }).await, reply) {
                FileOk::Target(target) => reply.data(target.as_bytes()),
                other => reply.error(unexpected(&other)),
            }
        });
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let path = or_reply!(self.inner.child(parent, name), reply);
        let perm = mode & !umask & 0o7777;
        self.spawn(|inner| async move {
            let op = FileOp::Mkdir {
                path: path.clone(),
                perm,
            };
            let attr = or_reply!(inner.call_attr(op).await, reply);
            inner.reply_entry(&path, &attr, reply);
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let path = or_reply!(self.inner.child(parent, name), reply);
        self.spawn(|inner| async move {
            let op = FileOp::Unlink { path: path.clone() };
            or_reply!(inner.call_done(op).await, reply);
            inner.state().inodes.unlink(&path);
            reply.ok();
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let path = or_reply!(self.inner.child(parent, name), reply);
        self.spawn(|inner| async move {
            let op = FileOp::Rmdir { path: path.clone() };
            or_reply!(inner.call_done(op).await, reply);
            inner.state().inodes.unlink(&path);
            reply.ok();
        });
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let path = or_reply!(self.inner.child(parent, link_name), reply);
        let target = or_reply!(target.to_str().ok_or(Errno::EINVAL), reply).to_owned();
        self.spawn(|inner| async move {
            let op = FileOp::Symlink {
                target,
                path: path.clone(),
            };
            let attr = or_reply!(inner.call_attr(op).await, reply);
            inner.reply_entry(&path, &attr, reply);
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        // Only "do not replace" has a protocol equivalent.
        if !(flags - RenameFlags::RENAME_NOREPLACE).is_empty() {
            return reply.error(Errno::EINVAL);
        }
        let from = or_reply!(self.inner.child(parent, name), reply);
        let to = or_reply!(self.inner.child(newparent, newname), reply);
        self.spawn(|inner| async move {
            let op = FileOp::Rename {
                from: from.clone(),
                to: to.clone(),
                noreplace: flags.contains(RenameFlags::RENAME_NOREPLACE),
            };
            or_reply!(inner.call_done(op).await, reply);
            inner.state().inodes.rename(&from, &to);
            reply.ok();
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let path = or_reply!(self.inner.path(ino), reply);
        let op = FileOp::Open {
            path,
            write: flags.acc_mode() != OpenAccMode::O_RDONLY,
            truncate: flags.0 & libc::O_TRUNC != 0,
        };
        self.spawn(|inner| async move {
            let (handle, attr) = match or_reply!(inner.call(op).await, reply) {
                FileOk::Opened { handle, attr } => (handle, attr),
                other => return reply.error(unexpected(&other)),
            };
            // Pages cached since the last open are still the file's if it has not changed: a
            // re-read is then served by the laptop's page cache.
            let unchanged = {
                let mut state = inner.state();
                state.open.insert(handle, ino.0);
                state.inodes.opened(ino.0, version(&attr))
            };
            let flags = if unchanged {
                FopenFlags::FOPEN_KEEP_CACHE
            } else {
                FopenFlags::empty()
            };
            reply.opened(FileHandle(handle), flags);
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.spawn(|inner| async move {
            let data = or_reply!(inner.read(fh.0, offset, size).await, reply);
            reply.data(&data);
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let data = data.to_vec();
        self.spawn(|inner| async move {
            let written = or_reply!(inner.write(fh.0, offset, &data).await, reply);
            reply.written(written);
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Writes are sent as they are made; nothing is held back to flush.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.inner.state().open.remove(&fh.0);
        self.spawn(|inner| async move {
            or_reply!(inner.call_done(FileOp::Close { handle: fh.0 }).await, reply);
            reply.ok();
        });
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn(|inner| async move {
            or_reply!(inner.call_done(FileOp::Fsync { handle: fh.0 }).await, reply);
            reply.ok();
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let path = or_reply!(self.inner.path(ino), reply);
        self.spawn(|inner| async move {
            // In pages: one answer holds only so many entries.
            let mut entries: Vec<DirEntry> = Vec::new();
            loop {
                let after = entries.last().map(|e| e.name.clone());
                let op = FileOp::ReadDirPage {
                    path: path.clone(),
                    after,
                };
                match or_reply!(inner.call(op).await, reply) {
                    FileOk::Page {
                        entries: page,
                        more,
                    } => {
                        let done = !more || page.is_empty();
                        entries.extend(page);
                        if done {
                            break;
                        }
                    }
                    other => return reply.error(unexpected(&other)),
                }
            }
            let fh = inner.state().listings.insert(Listing::new(entries));
            reply.opened(FileHandle(fh), FopenFlags::empty());
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let state = self.inner.state();
        let Some(listing) = state.listings.get(fh.0) else {
            drop(state);
            return reply.error(Errno::EBADF);
        };
        let dir = state.inodes.path(ino.0);
        for (next, slot) in listing.starting_at(offset) {
            let (entry_ino, kind) = match slot {
                Slot::Dot => (ino.0, FileType::Directory),
                Slot::DotDot => {
                    let parent = dir.map(convert::parent).and_then(|p| state.inodes.ino(p));
                    (parent.unwrap_or(ROOT), FileType::Directory)
                }
                Slot::Entry(entry) => {
                    let path = dir.and_then(|dir| convert::child(dir, entry.name.as_ref()).ok());
                    let known = path.as_deref().and_then(|p| state.inodes.ino(p));
                    let listed = known.unwrap_or_else(|| listed_ino(path.as_deref().unwrap_or("")));
                    (listed, convert::file_type(entry.attr.kind))
                }
            };
            if reply.add(INodeNo(entry_ino), next, kind, slot.name()) {
                break;
            }
        }
        drop(state);
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let mut state = self.inner.state();
        let State {
            inodes, listings, ..
        } = &mut *state;
        let Some(listing) = listings.get(fh.0) else {
            drop(state);
            return reply.error(Errno::EBADF);
        };
        let Some(dir) = inodes.path(ino.0).map(str::to_owned) else {
            drop(state);
            return reply.error(Errno::ENOENT);
        };
        for (next, slot) in listing.starting_at(offset) {
            match slot {
                // The kernel neither counts nor uses these.
                Slot::Dot | Slot::DotDot => {
                    let attr = self.inner.attr(ino.0, &DOT_ATTR);
                    if reply.add(ino, next, slot.name(), &TTL, &attr, Generation(0)) {
                        break;
                    }
                }
                Slot::Entry(entry) => {
                    let Ok(path) = convert::child(&dir, entry.name.as_ref()) else {
                        continue;
                    };
                    // Each entry given is a lookup the kernel counts; one that did not fit
                    // is not.
                    let child = inodes.lookup(&path);
                    let attr = self.inner.attr(child, &entry.attr);
                    let full = reply.add(
                        INodeNo(child),
                        next,
                        &entry.name,
                        &TTL,
                        &attr,
                        Generation(0),
                    );
                    if full {
                        inodes.forget(child, 1);
                        break;
                    }
                }
            }
        }
        drop(state);
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.inner.state().listings.remove(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Directory changes are made by the agent as they are asked for.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let path = self.inner.path(ino).unwrap_or_else(|_| "/".to_owned());
        self.spawn(|inner| async move {
            match or_reply!(inner.call(FileOp::StatFs { path }).await, reply) {
                FileOk::Stats(s) => reply.statfs(
                    s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
                ),
                other => reply.error(unexpected(&other)),
            }
        });
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // The mount's `default_permissions` has the kernel check permissions; this is only
        // called without it, and then everything is allowed as the agent allows it.
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let path = or_reply!(self.inner.child(parent, name), reply);
        let exclusive = flags & libc::O_EXCL != 0;
        let truncate = flags & libc::O_TRUNC != 0;
        let perm = mode & !umask & 0o7777;
        self.spawn(|inner| async move {
            let op = FileOp::Create {
                path: path.clone(),
                perm,
                exclusive,
            };
            let (handle, mut attr) = match or_reply!(inner.call(op).await, reply) {
                FileOk::Opened { handle, attr } => (handle, attr),
                other => return reply.error(unexpected(&other)),
            };
            // The file may have come to exist in the pod since the kernel looked it up.
            if truncate && !exclusive && attr.size > 0 {
                let op = FileOp::SetAttr {
                    path: path.clone(),
                    size: Some(0),
                    perm: None,
                    atime: None,
                    mtime: None,
                };
                match inner.call_attr(op).await {
                    Ok(truncated) => attr = truncated,
                    Err(errno) => {
                        let _ = inner.call(FileOp::Close { handle }).await;
                        return reply.error(errno);
                    }
                }
            }
            let ino = {
                let mut state = inner.state();
                let ino = state.inodes.lookup(&path);
                state.inodes.opened(ino, version(&attr));
                state.open.insert(handle, ino);
                ino
            };
            let attr = inner.attr(ino, &attr);
            reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(handle),
                FopenFlags::empty(),
            );
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_numbers_are_stable_and_never_the_tables() {
        assert_eq!(listed_ino("/a/b"), listed_ino("/a/b"));
        assert_ne!(listed_ino("/a/b"), listed_ino("/a/c"));
        assert!(listed_ino("/a/b") >= 1 << 63);
    }

    #[test]
    fn every_op_has_a_name() {
        let op = FileOp::Read {
            handle: 1,
            offset: 0,
            len: 1,
        };
        assert_eq!(op_name(&op), "read");
        assert_eq!(op_name(&FileOp::StatFs { path: "/".into() }), "statfs");
    }
}
