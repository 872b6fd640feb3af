//! The daemon's control stream: the handshake, then one task that owns the session.
//!
//! The task ([`run`]) holds the sans-IO [`Session`](tether_proto::session::Session) and both
//! halves of the stream (through [`Control`]). Callers reach it with [`Requests`]: a request
//! goes in with a oneshot for its answer, the session gives it its id, and the answer (or the
//! session's timeout, or the end of the session) comes back on the oneshot. The manager's
//! updates (subnets, namespaces, intercept counts) go to watch channels.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tether_proto::session::{CloseReason, Event, Reply, Request, SendError, SessionConfig};
use tether_proto::{InterceptStats, Message, Subnets, Welcome};
use tether_tunnel::control::{self, Control};
use tether_tunnel::framed::FrameIoError;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use super::{SessionError, DNS_TIMEOUT, INTERCEPT_TIMEOUT};

/// Requests (and the close) queued for the control task before callers wait.
const COMMAND_QUEUE: usize = 256;

/// How long a last `Bye` or `Error` may take to go out, and how long the manager's close of the
/// connection is waited for once it has ended the session.
pub(super) const LINGER: Duration = Duration::from_secs(1);

/// The daemon's session timers: the client's, with this module's published timeouts.
pub(super) fn config() -> SessionConfig {
    SessionConfig {
        dns_timeout: DNS_TIMEOUT,
        request_timeout: INTERCEPT_TIMEOUT,
        ..SessionConfig::client()
    }
}

type Answer = oneshot::Sender<Result<Reply, SessionError>>;

/// What callers ask of the control task.
#[derive(Debug)]
pub(super) enum Command {
    /// Send a request; its answer goes to `answer`.
    Request { request: Request, answer: Answer },
    /// Say `Bye` and end.
    Close,
}

/// A handle on the control task.
#[derive(Debug, Clone)]
pub(super) struct Requests {
    commands: mpsc::Sender<Command>,
}

impl Requests {
    /// A handle and the receiver [`run`] takes.
    pub(super) fn new() -> (Self, mpsc::Receiver<Command>) {
        let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
        (Self { commands }, rx)
    }

    /// Sends `request` and waits for its answer (the session's timeout bounds the wait).
    pub(super) async fn ask(&self, request: impl Into<Request>) -> Result<Reply, SessionError> {
        let (answer, rx) = oneshot::channel();
        let request = request.into();
        self.commands
            .send(Command::Request { request, answer })
            .await
            .map_err(|_| SessionError::NoAnswer)?;
        // A dropped sender: the session ended before the answer came.
        rx.await.unwrap_or(Err(SessionError::NoAnswer))
    }

    /// Asks the task to say `Bye`, without waiting.
    pub(super) fn close(&self) {
        let _ = self.commands.try_send(Command::Close);
    }
}

/// Where the manager's updates go.
#[derive(Debug)]
pub(super) struct Updates {
    pub(super) subnets: watch::Sender<Subnets>,
    pub(super) namespaces: watch::Sender<Arc<BTreeSet<String>>>,
    pub(super) manager_version: watch::Sender<Option<String>>,
    pub(super) intercept_stats: watch::Sender<Arc<InterceptStats>>,
}

/// Drives the handshake (the client's `Hello` is queued already) until the manager's `Welcome`.
pub(super) async fn handshake<R, W>(control: &mut Control<R, W>) -> Result<Welcome, SessionError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        match control.next_event().await? {
            Event::Established(welcome) => return Ok(welcome),
            Event::Closed(reason) => return Err(refused(reason)),
            // Nothing else comes before the Welcome.
            _ => {}
        }
    }
}

/// Why the handshake did not end in a `Welcome`.
fn refused(reason: CloseReason) -> SessionError {
    use tether_proto::session::SessionError as Failed;
    match reason {
        CloseReason::Error(Failed::Refused(error)) => SessionError::Refused(error.message),
        CloseReason::Error(Failed::Ended) | CloseReason::Bye | CloseReason::Finished => {
            SessionError::NoAnswer
        }
        CloseReason::Error(error) => SessionError::Handshake(error),
        CloseReason::Local => SessionError::NoAnswer,
    }
}

/// Serves the established session until it ends: requests from `commands`, answers and updates
/// from the manager. Requests still waiting when it ends fail at once. Returns whether the
/// manager ended it (the manager then closes the connection, with its reason).
pub(super) async fn run<R, W>(
    mut control: Control<R, W>,
    mut commands: mpsc::Receiver<Command>,
    updates: Updates,
) -> bool
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut waiting: HashMap<u32, Answer> = HashMap::new();
    let ended = loop {
        tokio::select! {
            event = control.next_event() => match event {
                Ok(Event::Closed(reason)) => break Ok(reason),
                Ok(event) => on_event(event, &mut waiting, &updates),
                Err(error) => break Err(error),
            },
            // While the manager does not read, requests wait in the queue (and then their
            // callers).
            command = commands.recv(), if control.is_writable() => match command {
                Some(Command::Request { request, answer }) => {
                    match control.session_mut().request(control::now(), request) {
                        Ok(id) => {
                            waiting.insert(id, answer);
                        }
                        Err(error) => {
                            let _ = answer.send(Err(not_sent(error)));
                        }
                    }
                }
                // Close, or every handle is gone.
                Some(Command::Close) | None => control.session_mut().close(),
            },
        }
    };
    // The answers' senders go with the map: their callers get NoAnswer now.
    drop(waiting);
    let by_manager = matches!(
        ended,
        Ok(CloseReason::Bye
            | CloseReason::Finished
            | CloseReason::Error(tether_proto::session::SessionError::PeerError(_)))
    );
    match ended {
        Ok(CloseReason::Error(error)) => {
            info!(error = %tether_proto::error_chain(&error), "The control session failed");
        }
        Ok(reason) => debug!(?reason, "The control session ended"),
        Err(error) => {
            debug!(error = %tether_proto::error_chain(&error), "The control stream failed")
        }
    }
    // A last Bye or Error (an idle manager is told why).
    control.finish_within(LINGER).await;
    by_manager
}

fn on_event(event: Event, waiting: &mut HashMap<u32, Answer>, updates: &Updates) {
    match event {
        Event::Reply { id, reply } => {
            if let Some(answer) = waiting.remove(&id) {
                let _ = answer.send(Ok(reply));
            }
        }
        Event::TimedOut { id } => {
            if let Some(answer) = waiting.remove(&id) {
                let _ = answer.send(Err(SessionError::TimedOut));
            }
        }
        Event::Message(Message::Subnets(subnets)) => {
            let _ = updates.subnets.send(subnets);
        }
        Event::Message(Message::Namespaces(n)) => {
            let _ = updates
                .namespaces
                .send(Arc::new(n.names.into_iter().collect()));
        }
        Event::Message(Message::ManagerInfo(info)) => {
            let _ = updates.manager_version.send(Some(info.version));
        }
        Event::Message(Message::InterceptStats(stats)) => {
            let _ = updates.intercept_stats.send(Arc::new(stats));
        }
        Event::Message(other) => debug!(kind = other.kind(), "Ignored a control message"),
        Event::Unmatched { kind, id } => debug!(kind, id, "Ignored a late or unasked answer"),
        Event::Skipped { kind, error } => warn!(kind, %error, "Skipped a malformed control frame"),
        Event::Hello(_) | Event::Established(_) | Event::Closed(_) => {}
    }
}

/// Why a request was not sent.
fn not_sent(error: SendError) -> SessionError {
    match error {
        SendError::Encode(error) => SessionError::Frame(FrameIoError::Encode(error)),
        _ => SessionError::NoAnswer,
    }
}

#[cfg(test)]
mod tests;
