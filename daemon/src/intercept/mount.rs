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
//! reconnect are opened again on the new stream, by their paths, when next used ([`handles`]).
//!
//! The agent serves the volumes of every container behind the workload's intercepted ports; the
//! laptop shows only those of the intercepted container (`--container`), and
//! [`Visible`] answers "no such file" for the rest.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use tether_mount::{CallFuture, FileService, MountOptions, Served};
use tether_proto::files::{DirEntry, FileError, FileErrorKind, FileOk, FileOp};
use tracing::{debug, info, warn};

use crate::control::FileCounts;
use crate::files::{FileClient, OpenFilesError};
use crate::privileged::channel::{ChannelError, Helper};
use crate::session::Session;

mod handles;

use handles::{Generation, Handles, Use};

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

/// The container paths one container mounts: which of the pod's served paths the laptop sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visible {
    mounts: Vec<String>,
}

impl Visible {
    /// The served `mounts` that are among `container`'s (all of them when `container` is
    /// `None`).
    pub fn new(served: &[String], container: Option<&[String]>) -> Visible {
        let mounts = served
            .iter()
            .filter(|m| container.is_none_or(|c| c.contains(m)))
            .cloned()
            .collect();
        Visible { mounts }
    }

    /// The container paths shown.
    pub fn mounts(&self) -> &[String] {
        &self.mounts
    }

    /// `path` is one of the mounts or below one.
    fn inside(&self, path: &str) -> bool {
        self.mounts.iter().any(|m| {
            path == m
                || path
                    .strip_prefix(m.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        })
    }

    /// `path` is a directory above one of the mounts.
    fn above(&self, path: &str) -> bool {
        path == "/"
            || self
                .mounts
                .iter()
                .any(|m| m.strip_prefix(path).is_some_and(|r| r.starts_with('/')))
    }

    /// Whether `op` may go to the agent: on a visible path, or a look at a directory above one.
    fn allows(&self, op: &FileOp) -> bool {
        match op {
            FileOp::Stat { path } | FileOp::ReadDir { path } | FileOp::ReadDirPage { path, .. } => {
                self.inside(path) || self.above(path)
            }
            FileOp::Rename { from, to, .. } => self.inside(from) && self.inside(to),
            FileOp::Symlink { path, .. } => self.inside(path),
            FileOp::ReadLink { path }
            | FileOp::Open { path, .. }
            | FileOp::Create { path, .. }
            | FileOp::SetAttr { path, .. }
            | FileOp::Mkdir { path, .. }
            | FileOp::Unlink { path }
            | FileOp::Rmdir { path } => self.inside(path),
            // Handles come from an allowed open; the file system's numbers are the pod's.
            _ => true,
        }
    }

    /// A listing of a directory above the mounts shows only what leads to one.
    fn filter(&self, op: &FileOp, ok: FileOk) -> FileOk {
        match (op, ok) {
            (FileOp::ReadDir { path }, FileOk::Entries(entries)) if !self.inside(path) => {
                let base = path.trim_end_matches('/');
                FileOk::Entries(
                    entries
                        .into_iter()
                        .filter(|e| {
                            let child = format!("{base}/{}", e.name);
                            self.inside(&child) || self.above(&child)
                        })
                        .collect(),
                )
            }
            (FileOp::ReadDirPage { path, .. }, FileOk::Page { entries, more }) => {
                match self.filter(
                    &FileOp::ReadDir { path: path.clone() },
                    FileOk::Entries(entries),
                ) {
                    FileOk::Entries(entries) => FileOk::Page { entries, more },
                    other => other,
                }
            }
            (_, ok) => ok,
        }
    }
}

/// The file stream the mount is served from; replaced when the intercept is re-created.
#[derive(Debug)]
pub struct Files {
    /// The stream, and its number (counted up from 1 as streams are opened).
    current: RwLock<Option<(FileClient, Generation)>>,
    /// Streams opened so far.
    opened: Mutex<Generation>,
    /// The open files, by the handle the kernel holds.
    handles: Arc<Mutex<Handles>>,
    visible: Visible,
    /// The app container whose volumes these are, as every stream asks the agent.
    container: String,
    /// What was asked of the pod, for `tether top`.
    counts: Arc<Mutex<FileCounts>>,
}

impl Files {
    fn new(client: FileClient, visible: Visible, container: &str) -> Files {
        Files {
            current: RwLock::new(Some((client, 1))),
            opened: Mutex::new(1),
            handles: Arc::default(),
            visible,
            container: container.to_owned(),
            counts: Arc::default(),
        }
    }

    /// What the mount asked of the pod so far.
    pub fn counts(&self) -> FileCounts {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn stream(&self) -> Option<(FileClient, Generation)> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Opens the stream again, for the intercept's new id on a new session. On failure the
    /// mount answers `EIO` until the next success. Files open on the old stream are opened
    /// again on this one as they are used.
    pub async fn reopen(&self, session: &Session, intercept: u64) {
        let client = match FileClient::open(session.connection(), intercept, &self.container).await
        {
            Ok((client, _)) => {
                let mut opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
                *opened += 1;
                Some((client, *opened))
            }
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
        if !self.visible.allows(&op) {
            return Box::pin(async {
                Err(FileError {
                    kind: FileErrorKind::NotFound,
                    message: "not one of the intercepted container's volumes".to_owned(),
                })
            });
        }
        let stream = self.stream();
        let handles = self.handles.clone();
        let visible = self.visible.clone();
        let counts = self.counts.clone();
        let written = match &op {
            FileOp::Write { data, .. } => data.len() as u64,
            _ => 0,
        };
        Box::pin(async move {
            let Some((client, generation)) = stream else {
                // A file closed meanwhile is closed: its handle went with the old stream.
                if let FileOp::Close { handle } = op {
                    lock(&handles).closed(handle, 0);
                    return Ok(FileOk::Done);
                }
                return Err(FileError {
                    kind: FileErrorKind::Io,
                    message: "the pod's files are not reachable (reconnecting)".to_owned(),
                });
            };
            let on = Stream {
                client: &client,
                generation,
                handles: &handles,
            };
            let started = std::time::Instant::now();
            let answer = on.call(op, &visible).await;
            let read = match &answer {
                Ok(FileOk::Data(data)) => data.len() as u64,
                _ => 0,
            };
            let written = if answer.is_ok() { written } else { 0 };
            counts.lock().unwrap_or_else(|p| p.into_inner()).record(
                started.elapsed(),
                read,
                written,
                answer.is_err(),
            );
            answer
        })
    }
}

/// One call's view of the current stream.
struct Stream<'a> {
    client: &'a FileClient,
    generation: Generation,
    handles: &'a Mutex<Handles>,
}

impl Stream<'_> {
    async fn call(&self, op: FileOp, visible: &Visible) -> Result<FileOk, FileError> {
        match op {
            FileOp::Open {
                ref path, write, ..
            } => {
                let path = path.clone();
                let answer = self.client.call(op).await?;
                Ok(self.opened(path, write, answer))
            }
            FileOp::Create { ref path, .. } => {
                let path = path.clone();
                let answer = self.client.call(op).await?;
                Ok(self.opened(path, true, answer))
            }
            FileOp::Read { handle, .. }
            | FileOp::Write { handle, .. }
            | FileOp::Fsync { handle }
            | FileOp::Fstat { handle } => {
                let remote = self.remote(handle).await?;
                self.client.call(with_handle(op, remote)).await
            }
            FileOp::Close { handle } => {
                let closed = lock(self.handles).closed(handle, self.generation);
                match closed {
                    Some(handle) => self.client.call(FileOp::Close { handle }).await,
                    None => Ok(FileOk::Done),
                }
            }
            FileOp::Rename {
                ref from, ref to, ..
            } => {
                let (from, to) = (from.clone(), to.clone());
                let answer = self.client.call(op).await?;
                lock(self.handles).renamed(&from, &to);
                Ok(answer)
            }
            FileOp::Unlink { ref path } => {
                let path = path.clone();
                let answer = self.client.call(op).await?;
                lock(self.handles).removed(&path);
                Ok(answer)
            }
            FileOp::ReadDir { .. } => {
                let listing = op.clone();
                let answer = self.client.call(op).await?;
                Ok(visible.filter(&listing, answer))
            }
            // Inside a mount, page by page; above the mounts the filter leaves out most names,
            // so the directory (a few names) is read whole and answered as one page, which
            // keeps the kernel's next `after` a name it was given.
            FileOp::ReadDirPage { ref path, .. } if visible.inside(path) => {
                self.client.call(op).await
            }
            FileOp::ReadDirPage { path, .. } => {
                let mut entries = Vec::new();
                loop {
                    let after = entries.last().map(|e: &DirEntry| e.name.clone());
                    let op = FileOp::ReadDirPage {
                        path: path.clone(),
                        after,
                    };
                    match self.client.call(op).await? {
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
                        other => return Ok(other),
                    }
                }
                let whole = FileOp::ReadDirPage { path, after: None };
                Ok(visible.filter(
                    &whole,
                    FileOk::Page {
                        entries,
                        more: false,
                    },
                ))
            }
            op => self.client.call(op).await,
        }
    }

    /// The kernel is given the table's handle for a file the agent opened.
    fn opened(&self, path: String, write: bool, answer: FileOk) -> FileOk {
        match answer {
            FileOk::Opened { handle, attr } => FileOk::Opened {
                handle: lock(self.handles).opened(path, write, self.generation, handle),
                attr,
            },
            other => other,
        }
    }

    /// The agent's handle on this stream for the kernel's handle `id`, opening the file again
    /// when `id` was opened on an older stream.
    async fn remote(&self, id: u64) -> Result<u64, FileError> {
        let reopen = match lock(self.handles).use_on(id, self.generation) {
            Use::Current(handle) => return Ok(handle),
            Use::Reopen { path, write } => FileOp::Open {
                path,
                write,
                truncate: false,
            },
            Use::Gone => {
                return Err(FileError {
                    kind: FileErrorKind::NotFound,
                    message: "the file was removed before the session reconnected".to_owned(),
                })
            }
            Use::Unknown => return Err(bad_handle()),
        };
        let handle = match self.client.call(reopen).await? {
            FileOk::Opened { handle, .. } => handle,
            _ => return Err(bad_handle()),
        };
        debug!(id, handle, "Opened a file again on the new file stream");
        let surplus = lock(self.handles).reopened(id, self.generation, handle);
        if let Some(surplus) = surplus {
            let _ = self.client.call(FileOp::Close { handle: surplus }).await;
        }
        match lock(self.handles).use_on(id, self.generation) {
            Use::Current(handle) => Ok(handle),
            _ => Err(bad_handle()),
        }
    }
}

/// `op` on the agent's handle `remote` instead of the kernel's.
fn with_handle(mut op: FileOp, remote: u64) -> FileOp {
    if let FileOp::Read { handle, .. }
    | FileOp::Write { handle, .. }
    | FileOp::Fsync { handle }
    | FileOp::Fstat { handle }
    | FileOp::Close { handle } = &mut op
    {
        *handle = remote;
    }
    op
}

fn bad_handle() -> FileError {
    FileError {
        kind: FileErrorKind::BadHandle,
        message: "not an open file".to_owned(),
    }
}

fn lock(handles: &Mutex<Handles>) -> MutexGuard<'_, Handles> {
    handles.lock().unwrap_or_else(|p| p.into_inner())
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

/// Mounts the files of `intercept` (one of `session`'s) at `dir`, or a new temporary directory:
/// the volumes of app container `container`, of which only `paths` are shown (all when `None`;
/// an agent installed before containers were told apart may serve another container's too).
pub async fn mount(
    helper: Option<&Helper>,
    session: &Session,
    (intercept, container): (u64, &str),
    dir: Option<PathBuf>,
    paths: Option<Vec<String>>,
) -> Result<Mounted, MountError> {
    let helper = helper.ok_or(MountError::NoHelper)?;
    let (client, info) = FileClient::open(session.connection(), intercept, container).await?;
    let visible = Visible::new(&info.mounts, paths.as_deref());
    let made = helper.mount(dir).await.map_err(MountError::Helper)?;
    let files = Arc::new(Files::new(client, visible.clone(), container));
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
        volumes: visible.mounts().to_vec(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> tether_proto::files::DirEntry {
        tether_proto::files::DirEntry {
            name: name.to_owned(),
            attr: tether_proto::files::FileAttr::directory(0o755),
        }
    }

    #[test]
    fn only_the_intercepted_containers_volumes_are_seen() {
        let served: Vec<String> = ["/cache", "/etc/app", "/etc/side", "/var/run/secrets/x"]
            .map(String::from)
            .to_vec();
        let side: Vec<String> = ["/etc/side", "/var/run/secrets/x", "/not/served"]
            .map(String::from)
            .to_vec();
        let v = Visible::new(&served, Some(&side));
        assert_eq!(v.mounts(), ["/etc/side", "/var/run/secrets/x"]);
        let stat = |p: &str| FileOp::Stat { path: p.into() };
        let open = |p: &str| FileOp::Open {
            path: p.into(),
            write: false,
            truncate: false,
        };
        for allowed in ["/", "/etc", "/etc/side", "/etc/side/a/b", "/var/run"] {
            assert!(v.allows(&stat(allowed)), "{allowed}");
        }
        for refused in ["/cache", "/etc/app", "/etc/app/x", "/etc/sidecar", "/etcx"] {
            assert!(!v.allows(&stat(refused)), "{refused}");
        }
        assert!(v.allows(&open("/etc/side/config")));
        assert!(!v.allows(&open("/etc")), "above a mount: look, never open");
        let rename = |from: &str, to: &str| FileOp::Rename {
            from: from.into(),
            to: to.into(),
            noreplace: false,
        };
        assert!(v.allows(&rename("/etc/side/a", "/etc/side/b")));
        assert!(!v.allows(&rename("/etc/side/a", "/etc/app/b")));
        // A listing above the mounts shows only the way to them; inside one, everything.
        let listed = v.filter(
            &FileOp::ReadDir {
                path: "/etc".into(),
            },
            FileOk::Entries(vec![entry("app"), entry("side")]),
        );
        assert_eq!(listed, FileOk::Entries(vec![entry("side")]));
        let root = v.filter(
            &FileOp::ReadDir { path: "/".into() },
            FileOk::Entries(vec![entry("cache"), entry("etc"), entry("var")]),
        );
        assert_eq!(root, FileOk::Entries(vec![entry("etc"), entry("var")]));
        let inside = v.filter(
            &FileOp::ReadDir {
                path: "/etc/side".into(),
            },
            FileOk::Entries(vec![entry("x")]),
        );
        assert_eq!(inside, FileOk::Entries(vec![entry("x")]));
        // No container named: everything served.
        assert_eq!(Visible::new(&served, None).mounts(), served.as_slice());
    }
}
