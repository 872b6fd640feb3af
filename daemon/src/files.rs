//! The laptop's end of the file protocol behind `tether intercept --mount` (see
//! [`tether_proto::files`]): a [`FileClient`] opens a file stream to one of the intercept's pods
//! through the manager and sends operations on it, many at once, each answered by id.
//!
//! The client is the part of mounting that does not need root or a kernel: the FUSE file system
//! that turns the laptop's `read(2)`s into these operations ([`tether_mount`]) sits on top of
//! it, as a [`FileService`](tether_mount::FileService).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tether_proto::files::{FileError, FileErrorKind, FileOk, FileOp, FileReply, FileRequest};
use tether_proto::{FilesInfo, Message, OpenError, OpenFiles};
use tether_tunnel::{framed, quinn};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

/// How long the agent may take to answer [`OpenFiles`].
const OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Requests queued for the writer beyond those in flight.
const QUEUE: usize = 64;

/// Why a file stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenFilesError {
    #[error("the tunnel connection failed")]
    Connection(#[from] quinn::ConnectionError),
    #[error("the file stream failed")]
    Stream(#[from] framed::FrameIoError),
    #[error("the intercept's files are not available: {}", .0.message)]
    Refused(OpenError),
    #[error("no answer from the traffic agent")]
    NoAnswer,
}

type Pending = Arc<Mutex<HashMap<u32, oneshot::Sender<Result<FileOk, FileError>>>>>;

/// A file stream to one pod of an intercept. Cheap to clone; the stream closes (and with it
/// every handle opened on it, at the agent) when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct FileClient {
    requests: mpsc::Sender<(FileOp, oneshot::Sender<Result<FileOk, FileError>>)>,
}

impl FileClient {
    /// Opens a file stream for the volumes of app container `container` of `intercept` (one of
    /// this session's) on `conn`, the session's connection to the manager.
    pub async fn open(
        conn: &quinn::Connection,
        intercept: u64,
        container: &str,
    ) -> Result<(FileClient, FilesInfo), OpenFilesError> {
        let (mut send, mut recv) = conn.open_bi().await?;
        let open = OpenFiles {
            intercept,
            container: container.to_owned(),
        };
        framed::write_message(&mut send, &Message::OpenFiles(open)).await?;
        let answer = tokio::time::timeout(OPEN_TIMEOUT, framed::read_message(&mut recv))
            .await
            .map_err(|_| OpenFilesError::NoAnswer)??;
        let info = match answer {
            Some(Message::OpenFilesResult(r)) => r.result.map_err(OpenFilesError::Refused)?,
            _ => return Err(OpenFilesError::NoAnswer),
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let pending = Pending::default();
        tokio::spawn(write_requests(send, rx, pending.clone()));
        tokio::spawn(read_replies(recv, pending));
        Ok((FileClient { requests: tx }, info))
    }

    /// Sends `op` and waits for its answer. A stream that ended answers
    /// [`FileErrorKind::Io`] ("the file stream is closed").
    pub async fn call(&self, op: FileOp) -> Result<FileOk, FileError> {
        let (tx, rx) = oneshot::channel();
        if self.requests.send((op, tx)).await.is_err() {
            return Err(closed());
        }
        rx.await.unwrap_or_else(|_| Err(closed()))
    }
}

/// The FUSE file system's calls go to the pod on this stream.
impl tether_mount::FileService for FileClient {
    fn call(&self, op: FileOp) -> tether_mount::CallFuture {
        let client = self.clone();
        Box::pin(async move { FileClient::call(&client, op).await })
    }
}

fn closed() -> FileError {
    FileError {
        kind: FileErrorKind::Io,
        message: "the file stream is closed".to_owned(),
    }
}

fn lock(
    pending: &Pending,
) -> std::sync::MutexGuard<'_, HashMap<u32, oneshot::Sender<Result<FileOk, FileError>>>> {
    pending.lock().unwrap_or_else(|p| p.into_inner())
}

/// Numbers each request, remembers who waits for it, and writes it.
async fn write_requests(
    mut send: quinn::SendStream,
    mut rx: mpsc::Receiver<(FileOp, oneshot::Sender<Result<FileOk, FileError>>)>,
    pending: Pending,
) {
    let mut next: u32 = 0;
    while let Some((op, reply)) = rx.recv().await {
        // Ids of requests still in flight are skipped (a wrap-around after 4 billion).
        let id = loop {
            next = next.wrapping_add(1);
            if !lock(&pending).contains_key(&next) {
                break next;
            }
        };
        lock(&pending).insert(id, reply);
        let request = Message::FileRequest(FileRequest { id, op });
        if let Err(error) = framed::write_message(&mut send, &request).await {
            debug!(%error, "The file stream failed");
            break;
        }
    }
    let _ = send.finish();
}

/// Hands each reply to whoever waits for its id; at the end, everyone still waiting learns the
/// stream is closed (their senders drop).
async fn read_replies(mut recv: quinn::RecvStream, pending: Pending) {
    loop {
        match framed::read_message(&mut recv).await {
            Ok(Some(Message::FileReply(FileReply { id, result }))) => {
                if let Some(waiter) = lock(&pending).remove(&id) {
                    let _ = waiter.send(result);
                }
            }
            Ok(Some(other)) => debug!(kind = other.kind(), "Ignored a message on a file stream"),
            Ok(None) => break,
            Err(error) if !error.is_fatal() => debug!(%error, "Skipped a bad file reply"),
            Err(error) => {
                debug!(%error, "The file stream failed");
                break;
            }
        }
    }
    lock(&pending).clear();
}
