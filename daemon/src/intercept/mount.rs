//! `tether intercept … --mount[=DIR]`: the intercepted container's volumes on this machine.
//!
//! The daemon opens a file stream to one of the intercept's agents through the manager (which
//! lets only the intercept's holder do so), asks the privileged helper for a FUSE mount (it
//! mounts `/dev/fuse` on DIR, or on a new temporary directory, and passes the descriptor), and
//! serves the mount from that stream ([`tether_mount`]). The container's paths appear under DIR
//! as they are in the container: `$TETHER_ROOT/etc/config/app.yaml`.
//!
//! The mount ends with the intercept: [`Mounted::unmount`] asks the helper to unmount it, after
//! which the FUSE thread finishes by itself. If the daemon dies, the helper unmounts whatever is
//! left; if the helper dies too, the next `connect` or `quit` does (see
//! [`fuse_mount`](crate::privileged::fuse_mount)). After a reconnect the intercept gets a new id,
//! and the file stream is opened again for it ([`Files::reopen`]); files open across the
//! reconnect fail with `EIO` (their handles were the old stream's).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tether_mount::{CallFuture, FileService, MountOptions, Served};
use tether_proto::files::{FileError, FileErrorKind, FileOp};
use tracing::{info, warn};

use crate::files::{FileClient, OpenFilesError};
use crate::privileged::channel::{ChannelError, Helper};
use crate::session::Session;

/// How long an unmounted file system's thread may take to finish.
const FINISH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a mount could not be made. The intercept goes on without it.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot reach the pod's files")]
    Open(#[from] OpenFilesError),
    #[error("the privileged helper did not mount")]
    Helper(#[source] ChannelError),
    #[error("serving the mount")]
    Serve(#[from] tether_mount::ServeError),
    #[error("this daemon has no privileged helper to mount with")]
    NoHelper,
}

/// The file stream the mount is served from; replaced when the intercept is re-created.
#[derive(Debug)]
pub struct Files {
    current: RwLock<Option<FileClient>>,
}

impl Files {
    fn client(&self) -> Option<FileClient> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Opens the stream again, for the intercept's new id on a new session. On failure the
    /// mount answers `EIO` until the next success.
    pub async fn reopen(&self, session: &Session, intercept: u64) {
        let client = match FileClient::open(session.connection(), intercept).await {
            Ok((client, _)) => Some(client),
            Err(error) => {
                warn!(error = %tether_proto::error_chain(&error), "Could not reopen the mount's file stream");
                None
            }
        };
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = client;
    }
}

impl FileService for Files {
    fn call(&self, op: FileOp) -> CallFuture {
        let client = self.client();
        Box::pin(async move {
            match client {
                Some(client) => client.call(op).await,
                None => Err(FileError {
                    kind: FileErrorKind::Io,
                    message: "the pod's files are not reachable (reconnecting)".to_owned(),
                }),
            }
        })
    }
}

/// A mount being served.
#[derive(Debug)]
pub struct Mounted {
    pub dir: PathBuf,
    /// The pod whose files these are.
    pub pod: String,
    /// The container paths served.
    pub volumes: Vec<String>,
    pub files: Arc<Files>,
    served: Option<Served>,
}

/// Mounts the files of `intercept` (one of `session`'s) at `dir`, or a new temporary directory.
pub async fn mount(
    helper: Option<&Helper>,
    session: &Session,
    intercept: u64,
    dir: Option<PathBuf>,
) -> Result<Mounted, MountError> {
    let helper = helper.ok_or(MountError::NoHelper)?;
    let (client, info) = FileClient::open(session.connection(), intercept).await?;
    let made = helper.mount(dir).await.map_err(MountError::Helper)?;
    let files = Arc::new(Files {
        current: RwLock::new(Some(client)),
    });
    let service: Arc<dyn FileService> = files.clone();
    let options = MountOptions::new(made.uid, made.gid);
    let runtime = tokio::runtime::Handle::current();
    let fuse = made.fuse;
    // The handshake blocks (briefly): not on the runtime's threads.
    let served =
        tokio::task::spawn_blocking(move || tether_mount::serve(fuse, service, runtime, options))
            .await
            .map_err(|_| {
                MountError::Serve(tether_mount::ServeError::Thread(std::io::Error::other(
                    "the mount's start panicked",
                )))
            })?;
    let served = match served {
        Ok(served) => served,
        Err(error) => {
            let _ = helper.unmount(made.dir.clone()).await;
            return Err(error.into());
        }
    };
    // Sequential reads as fast as the tunnel goes, not one round trip per 128 KiB.
    if let Err(error) = helper.read_ahead(made.dir.clone()).await {
        warn!(error = %tether_proto::error_chain(&error), "Could not raise the mount's read-ahead");
    }
    info!(dir = %made.dir.display(), pod = %info.pod, volumes = ?info.mounts, "Mounted the pod's volumes");
    Ok(Mounted {
        dir: made.dir,
        pod: info.pod,
        volumes: info.mounts,
        files,
        served: Some(served),
    })
}

impl Mounted {
    /// Unmounts (by the helper) and waits for the file system's thread to finish.
    pub async fn unmount(mut self, helper: Option<&Helper>) {
        if let Some(helper) = helper {
            if let Err(error) = helper.unmount(self.dir.clone()).await {
                warn!(dir = %self.dir.display(), error = %tether_proto::error_chain(&error), "Could not unmount");
                return;
            }
        }
        if let Some(served) = self.served.take() {
            let finished = tokio::time::timeout(
                FINISH_TIMEOUT,
                tokio::task::spawn_blocking(move || served.join()),
            )
            .await;
            match finished {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(error))) => {
                    warn!(error = %tether_proto::error_chain(&error), "The mount's file system ended with an error")
                }
                _ => warn!("The mount's file system did not finish after unmounting"),
            }
        }
        info!(dir = %self.dir.display(), "Unmounted the pod's volumes");
    }
}
