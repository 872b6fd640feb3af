//! The laptop's file system for `tether intercept --mount`: the intercepted container's volumes,
//! seen at a directory of the laptop, read and written through the pod's traffic agent.
//!
//! The mount itself (`mount(2)` of `/dev/fuse`) needs root and is made by the daemon's root
//! helper; this crate gets the already-mounted `/dev/fuse` descriptor and serves it with
//! [`fuser`] (no libfuse). Every kernel request becomes one or a few operations of the file
//! protocol ([`tether_proto::files`]), sent through a [`FileService`] — in the daemon, its
//! `FileClient` — so the crate knows nothing of tunnels or sessions and is tested against an
//! in-memory service.
//!
//! The FUSE root is the container's `/`: the agent shows `/` and the other directories above
//! its mounts as read-only directories, so the laptop sees `<mount point>/etc/config/app.yaml`
//! for the container's `/etc/config/app.yaml`.
//!
//! One fuser thread reads requests; each one that needs the network runs as a task on the tokio
//! runtime given to [`serve`], which replies when the agent answers. So requests are as
//! concurrent as the kernel makes them (its readahead sends several reads of a file at once),
//! and the agent's file stream carries them pipelined.
//!
//! # Layout
//! - `inodes`: the table of inode numbers and the container paths they stand for (plain code).
//! - `listing`: the directory listings kept per `opendir`, read by offset (plain code).
//! - `convert`: attributes, times, errors and paths between the protocol and FUSE.
//! - `fs`: the [`fuser::Filesystem`], the glue between the kernel's requests and the service.

use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tether_proto::files::{FileError, FileOk, FileOp};

mod convert;
mod fs;
mod inodes;
mod listing;

/// The future of one [`FileService::call`].
pub type CallFuture = Pin<Box<dyn Future<Output = Result<FileOk, FileError>> + Send>>;

/// Where the file operations go: the daemon's file stream to the intercepted pod's agent.
///
/// Calls must be safe to make many at once: each kernel request makes its own, without waiting
/// for the others. A call that can no longer be answered (the stream is gone) should fail with
/// [`FileErrorKind::Io`](tether_proto::files::FileErrorKind::Io); one that never completes is
/// cut off after [`MountOptions::call_timeout`].
pub trait FileService: Send + Sync + 'static {
    /// Carries out `op` at the agent.
    fn call(&self, op: FileOp) -> CallFuture;
}

/// How the file system presents the pod's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// The owner shown for every file: the laptop user. The pod's numeric ids mean nothing on
    /// the laptop, and with the kernel's `default_permissions` checks showing the user as owner
    /// makes the pod's owner permission bits the ones that apply to them.
    pub uid: u32,
    /// The group shown for every file (the laptop user's).
    pub gid: u32,
    /// How long one operation may take before the kernel request fails with `EIO`, so that a
    /// stalled link never leaves a process stuck in the file system.
    pub call_timeout: Duration,
}

impl MountOptions {
    /// The default time limit of one operation.
    pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

    /// Files shown as owned by `uid`:`gid`, with the default time limit.
    pub fn new(uid: u32, gid: u32) -> Self {
        Self {
            uid,
            gid,
            call_timeout: Self::DEFAULT_CALL_TIMEOUT,
        }
    }
}

/// Why the file system could not be served, or how serving it ended.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The FUSE handshake (the kernel's `INIT`) failed: the descriptor is not a mounted
    /// `/dev/fuse`, or the mount went away first.
    #[error("the FUSE handshake failed")]
    Handshake(#[source] std::io::Error),
    /// The thread serving the requests could not be started.
    #[error("could not start the file system's thread")]
    Thread(#[source] std::io::Error),
    /// Reading or answering the kernel's requests failed.
    #[error("serving the file system failed")]
    Session(#[source] std::io::Error),
    /// The thread serving the requests panicked.
    #[error("the file system's thread panicked")]
    Panicked,
}

/// A file system being served. It ends by itself when the file system is unmounted (the
/// kernel then fails reads of the descriptor with `ENODEV`).
///
/// Dropping it does not stop serving: only unmounting does (which is the root helper's job),
/// since a mount whose server stopped would fail every access with `ENOTCONN` until then.
#[derive(Debug)]
pub struct Served {
    thread: JoinHandle<std::io::Result<()>>,
}

impl Served {
    /// Waits until the file system is unmounted and its requests are answered.
    pub fn join(self) -> Result<(), ServeError> {
        match self.thread.join() {
            Ok(result) => result.map_err(ServeError::Session),
            Err(_) => Err(ServeError::Panicked),
        }
    }

    /// Whether serving has ended (the file system was unmounted, or serving failed).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }
}

/// Serves `fd`, an already-mounted `/dev/fuse` descriptor, with the files of `service`.
///
/// Blocks for the FUSE handshake (the kernel queues its `INIT` when the mount is made, so this
/// is immediate for a mounted descriptor), then answers requests on a background thread, each
/// one that needs the agent in a task on `runtime`.
///
/// The mount should be made with `default_permissions` (the kernel checks permission bits
/// against [`MountOptions::uid`]/[`gid`](MountOptions::gid); this file system does no checks of
/// its own) and with `user_id`/`allow_other` saying who may use it: requests are not filtered
/// by the serving process's user, which need not be the mount's.
pub fn serve(
    fd: OwnedFd,
    service: Arc<dyn FileService>,
    runtime: tokio::runtime::Handle,
    options: MountOptions,
) -> Result<Served, ServeError> {
    let fs = fs::TetherFs::new(service, runtime, options);
    let config = fuser::Config::default();
    let session = fuser::Session::from_fd(fs, fd, fuser::SessionACL::All, config)
        .map_err(ServeError::Handshake)?;
    let thread = std::thread::Builder::new()
        .name("tether-fuse".to_owned())
        .spawn(move || session.run())
        .map_err(ServeError::Thread)?;
    Ok(Served { thread })
}
