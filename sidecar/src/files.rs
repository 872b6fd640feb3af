//! The agent's file server behind `tether intercept --mount`: the laptop reads and writes the
//! app container's volumes through streams the manager opens on the agent's link (the protocol
//! is `tether_proto::files`).
//!
//! # Layout
//! - [`mounts`]: the table of volumes served ([`MOUNTS_ENV`]), and where a path is in it; plain
//!   code.
//! - [`server`]: the blocking core, one operation at a time, confined beneath each mount's root.
//! - `handles`: the files a stream has open ([`Handles`]), read and written by handle.
//! - `sys`: the system calls under it: resolution without symbolic links, attributes, errnos.
//! - [`serve_stream`] and [`serve`] here: the async glue around a stream, several operations at
//!   once on the blocking pool.

mod handles;
pub mod mounts;
pub mod server;
mod sys;

use std::collections::BTreeMap;
use std::sync::Arc;

use tether_proto::files::{FileError, FileErrorKind, FileReply, FilesInfo, OpenFilesResult};
use tether_proto::{ErrorChain, ErrorCode, Message, OpenError};
use tether_tunnel::framed::{self, FrameIoError};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, info_span, trace, Instrument};

pub use handles::{Handles, MAX_HANDLES};
pub use mounts::{Mount, Mounts, MountsError, Tables, MOUNTS_ENV};
pub use server::Server;

/// How many operations of one stream run at once (and how many answers wait to be sent).
pub const CONCURRENCY: usize = 16;

/// The answer to a stream opened on an agent that serves nothing of the container asked for.
pub const NO_VOLUMES: &str = "the agent serves no volumes of this container (it has none, or \
     tether installed this agent before mounts existed: uninstall and intercept again)";

/// An agent's file servers, one per app container: a pod's containers may mount different
/// volumes at the same path, and a stream asks for one container's.
#[derive(Debug)]
pub struct Volumes {
    by_container: BTreeMap<String, Arc<Server>>,
    /// What a table written before containers were told apart serves, to every stream that
    /// names a container the table does not.
    unnamed: Arc<Server>,
}

impl Default for Volumes {
    fn default() -> Self {
        Self {
            by_container: BTreeMap::new(),
            unnamed: Arc::new(Server::empty()),
        }
    }
}

impl Volumes {
    /// Opens the sources of every container's mounts (see [`Server::new`]).
    pub fn new(tables: Tables) -> Self {
        let (by_container, unnamed) = tables.into_parts();
        Self {
            by_container: by_container
                .into_iter()
                .map(|(container, mounts)| (container, Arc::new(Server::new(mounts))))
                .collect(),
            unnamed: Arc::new(Server::new(unnamed)),
        }
    }

    /// The server of `container`'s volumes.
    pub fn server(&self, container: &str) -> Arc<Server> {
        self.by_container
            .get(container)
            .unwrap_or(&self.unnamed)
            .clone()
    }

    /// Each container with the container paths served for it (`None`: rows that name none);
    /// those serving nothing are left out.
    pub fn served(&self) -> Vec<(Option<&str>, Vec<String>)> {
        self.by_container
            .iter()
            .map(|(c, s)| (Some(c.as_str()), s))
            .chain([(None, &self.unnamed)])
            .filter(|(_, s)| !s.mounts().is_empty())
            .map(|(c, s)| (c, s.mounts().container_paths()))
            .collect()
    }
}

/// Serves one stream the manager opened: answers its first frame, [`OpenFiles`], with what
/// `volumes` serves of the container it names in pod `pod` (or a refusal when that is nothing),
/// then [`serve`]s it.
///
/// [`OpenFiles`]: tether_proto::files::OpenFiles
pub async fn serve_stream<W, R>(volumes: Arc<Volumes>, pod: &str, mut send: W, mut recv: R)
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let open = match framed::read_message(&mut recv).await {
        Ok(Some(Message::OpenFiles(open))) => open,
        Ok(Some(other)) => {
            debug!(
                kind = other.kind(),
                "Dropped a stream from the manager that is not a file stream"
            );
            return;
        }
        Ok(None) => return,
        Err(error) => {
            debug!(error = %ErrorChain(&error), "Dropped a stream from the manager");
            return;
        }
    };
    let server = volumes.server(&open.container);
    let result = if server.mounts().is_empty() {
        Err(OpenError {
            code: ErrorCode::NotPermitted,
            message: NO_VOLUMES.to_owned(),
        })
    } else {
        Ok(FilesInfo {
            pod: pod.to_owned(),
            mounts: server.mounts().container_paths(),
        })
    };
    let serving = result.is_ok();
    let answer = Message::OpenFilesResult(OpenFilesResult { result });
    if let Err(error) = framed::write_message(&mut send, &answer).await {
        debug!(error = %ErrorChain(&error), "Lost a file stream before answering it");
        return;
    }
    if !serving {
        debug!(
            intercept = open.intercept,
            "Refused a file stream: no volumes"
        );
        let _ = send.shutdown().await;
        return;
    }
    info!(
        intercept = open.intercept,
        container = open.container,
        "Serving the pod's volumes"
    );
    let span = info_span!(
        "file_stream",
        intercept = open.intercept,
        container = open.container
    );
    serve(server, send, recv).instrument(span).await;
    info!(
        intercept = open.intercept,
        "Stopped serving the pod's volumes"
    );
}

/// Answers the [`FileRequest`](tether_proto::files::FileRequest)s read from `recv` until it
/// ends, each on the blocking pool (at most [`CONCURRENCY`] at once), the answers written to
/// `send` as they come, in any order. Other messages are skipped. The files opened on the
/// stream are closed when it ends.
pub async fn serve<W, R>(server: Arc<Server>, send: W, mut recv: R)
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let handles = Arc::new(Handles::default());
    // Unbounded, but each answer holds one of the CONCURRENCY permits until it is written.
    let (reply_tx, reply_rx) = mpsc::unbounded_channel();
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let reading = async move {
        loop {
            let request = match framed::read_message(&mut recv).await {
                Ok(Some(Message::FileRequest(request))) => request,
                Ok(Some(other)) => {
                    debug!(kind = other.kind(), "Ignored a message on a file stream");
                    continue;
                }
                Ok(None) => break,
                Err(error) if !error.is_fatal() => {
                    debug!(error = %ErrorChain(&error), "Skipped a malformed frame on a file stream");
                    continue;
                }
                Err(error) => {
                    debug!(error = %ErrorChain(&error), "A file stream failed");
                    break;
                }
            };
            // Never closed: the semaphore lives as long as this loop.
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let (server, handles, reply_tx) = (server.clone(), handles.clone(), reply_tx.clone());
            tokio::task::spawn_blocking(move || {
                let id = request.id;
                let result = server.handle(&handles, request.op);
                if let Err(error) = &result {
                    trace!(id, kind = ?error.kind, message = %error.message, "File operation failed");
                }
                // The writer is gone only when the stream failed; nobody waits for the answer.
                let _ = reply_tx.send((FileReply { id, result }, permit));
            });
        }
        drop(reply_tx);
    };
    let writing = write_replies(send, reply_rx);
    tokio::pin!(writing);
    let result = tokio::select! {
        () = reading => writing.await,
        // The peer stopped reading: what it asks no longer matters.
        result = &mut writing => result,
    };
    if let Err(error) = result {
        debug!(error = %ErrorChain(&error), "Could not answer on a file stream");
    }
}

/// Writes the answers until every sender is gone, then finishes the stream.
async fn write_replies<W: AsyncWrite + Unpin>(
    mut send: W,
    mut reply_rx: mpsc::UnboundedReceiver<(FileReply, OwnedSemaphorePermit)>,
) -> Result<(), FrameIoError> {
    while let Some((reply, _permit)) = reply_rx.recv().await {
        let id = reply.id;
        match framed::write_message(&mut send, &Message::FileReply(reply)).await {
            // Nothing was written: the answer (a huge directory) does not fit in a frame.
            Err(FrameIoError::Encode(error)) => {
                let reply = FileReply {
                    id,
                    result: Err(FileError {
                        kind: FileErrorKind::TooBig,
                        message: error.to_string(),
                    }),
                };
                framed::write_message(&mut send, &Message::FileReply(reply)).await?;
            }
            result => result?,
        }
    }
    send.shutdown().await?;
    Ok(())
}

#[cfg(test)]
mod testdir;
#[cfg(test)]
mod tests;
