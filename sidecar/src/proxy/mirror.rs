//! Mirrors: a copy of each request a mirror's filter matches goes to its laptop, best effort, and
//! the laptop's answer is discarded. The request itself goes where the routing table sends it
//! (the app, or an intercept), whose answer the caller gets.
//!
//! Nothing here may hold up or fail the caller's request:
//! - the caller's body is not buffered before it is forwarded: [`tee`] wraps it so that each
//!   frame is passed on at once and kept for the copy on the way, up to [`MAX_COPY_BODY`] bytes;
//!   past that the body still flows whole and the copy is dropped;
//! - when the body has ended, each matching mirror's queue is offered the copy without waiting
//!   (`try_send`): a full queue ([`QUEUE_LEN`] copies) drops it;
//! - each mirror has one task ([`Mirror::spawn`]) that sends its queued copies to the laptop, at
//!   most [`IN_FLIGHT`] at once, each given [`COPY_TIMEOUT`] to be answered.
//!
//! Every copy is counted once, as sent (the laptop answered) or dropped (for any other reason:
//! queue full, body over the limit, an upgrade or `CONNECT`, which cannot be copied, the body
//! not read to its end, the laptop unreachable or silent), in the [`Tally`] (per mirror, for its
//! holder's `tether status`) and the metrics (per port).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use http::request::Parts;
use http::{HeaderMap, Method, Request, Uri, Version};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Body, Frame, SizeHint};
use tether_metrics::agent::{AgentMetrics, Route as MetricsRoute};
use tether_proto::ErrorChain;
use tether_route::router::InterceptId;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::debug;

use super::target::InterceptTarget;
use super::upstream::{is_upgrade, BoxError, RequestBody};
use super::SharedTarget;
use crate::tally::Tally;

/// The largest request body a mirror gets a copy of (1 MiB).
pub const MAX_COPY_BODY: usize = 1 << 20;
/// How many copies wait in one mirror's queue before new ones are dropped.
pub const QUEUE_LEN: usize = 64;
/// How many copies one mirror sends to its laptop at once.
pub const IN_FLIGHT: usize = 8;
/// How long the laptop has to answer a copy before it counts as dropped.
pub const COPY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where one port's copies are counted.
#[derive(Debug, Clone, Default)]
pub struct Counter {
    /// The app port, which labels the metrics.
    pub port: u16,
    /// Per mirror, for its holder.
    pub tally: Tally,
    /// Per port; `None`: metrics off.
    pub metrics: Option<Arc<AgentMetrics>>,
}

impl Counter {
    fn sent(&self, id: InterceptId, took: Duration) {
        self.tally.mirrored(self.port, id.0, true);
        if let Some(metrics) = &self.metrics {
            metrics.routed(self.port, MetricsRoute::mirrored, took.as_secs_f64());
        }
    }

    fn dropped(&self, id: InterceptId) {
        self.tally.mirrored(self.port, id.0, false);
        if let Some(metrics) = &self.metrics {
            metrics.mirror_dropped(self.port);
        }
    }
}

/// One request as copied: its head and its whole body.
#[derive(Debug)]
struct Copy {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

impl Copy {
    /// The copy as a request to send (each send makes a new one: a request is consumed).
    fn request(&self) -> Request<RequestBody> {
        let body = match &self.trailers {
            None => Full::new(self.body.clone())
                .map_err(|never| match never {})
                .boxed_unsync(),
            Some(trailers) => {
                let frames = [
                    Ok(Frame::data(self.body.clone())),
                    Ok(Frame::trailers(trailers.clone())),
                ];
                StreamBody::new(futures::stream::iter(frames)).boxed_unsync()
            }
        };
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// One mirror on one port: its queue and the task that empties it. The task ends when this is
/// dropped (when the mirror ends and the last request it was copying is done with it).
#[derive(Debug)]
pub struct Mirror {
    id: InterceptId,
    copies_tx: mpsc::Sender<Arc<Copy>>,
    counter: Counter,
    sender: AbortHandle,
}

impl Mirror {
    /// Starts the task that sends the mirror's copies to `target`. Must be called within a Tokio
    /// runtime.
    pub fn spawn(id: InterceptId, target: SharedTarget, counter: Counter) -> Mirror {
        let (copies_tx, copies_rx) = mpsc::channel(QUEUE_LEN);
        let sender = tokio::spawn(copy_sender(id, copies_rx, target, counter.clone()));
        Mirror {
            id,
            copies_tx,
            counter,
            sender: sender.abort_handle(),
        }
    }

    /// Queues a copy, or drops it if the queue is full. Never waits.
    fn offer(&self, copy: Arc<Copy>) {
        if self.copies_tx.try_send(copy).is_err() {
            debug!(mirror = %self.id, "Copy dropped: the mirror's queue is full");
            self.counter.dropped(self.id);
        }
    }

    /// Counts a copy that could not be made.
    fn drop_copy(&self) {
        self.counter.dropped(self.id);
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.sender.abort();
    }
}

/// A mirror's task: sends the queued copies, [`IN_FLIGHT`] at most at once, until the queue
/// closes.
async fn copy_sender(
    id: InterceptId,
    mut copies_rx: mpsc::Receiver<Arc<Copy>>,
    target: SharedTarget,
    counter: Counter,
) {
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            copy = copies_rx.recv(), if in_flight.len() < IN_FLIGHT => match copy {
                Some(copy) => in_flight.push(send_copy(id, &*target, copy, &counter)),
                None => break,
            },
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
        }
    }
    while in_flight.next().await.is_some() {}
}

/// Sends one copy and discards the answer; counts it.
async fn send_copy(
    id: InterceptId,
    target: &dyn InterceptTarget,
    copy: Arc<Copy>,
    counter: &Counter,
) {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + COPY_TIMEOUT;
    let response = match tokio::time::timeout_at(deadline, target.send(copy.request())).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => {
            debug!(mirror = %id, error = %ErrorChain(&*error), "Copy dropped: the laptop did not answer");
            counter.dropped(id);
            return;
        }
        Err(_) => {
            debug!(mirror = %id, "Copy dropped: the laptop did not answer in time");
            counter.dropped(id);
            return;
        }
    };
    counter.sent(id, started.elapsed());
    // Read to the end, so that the connection can carry the next copy.
    let _ = tokio::time::timeout_at(deadline, response.into_body().collect()).await;
}

/// The caller's request body, passed on unchanged; if `mirrors` match the request, each is
/// offered a copy once the body has ended (see the module docs). Never waits for a mirror.
pub(super) fn tee<B>(head: &Parts, body: B, mirrors: Vec<Arc<Mirror>>) -> RequestBody
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    if mirrors.is_empty() {
        return body.map_err(Into::into).boxed_unsync();
    }
    let pending = Pending {
        method: head.method.clone(),
        uri: head.uri.clone(),
        version: head.version,
        headers: head.headers.clone(),
        data: Vec::new(),
        size: 0,
        trailers: None,
        mirrors,
    };
    let upgrade = head.method == Method::CONNECT
        || (head.version != Version::HTTP_2 && is_upgrade(&head.headers));
    if upgrade {
        pending.abandon("an upgrade or CONNECT cannot be copied");
    } else if body.size_hint().lower() > MAX_COPY_BODY as u64 {
        pending.abandon("the body is over the copy limit");
    } else if body.is_end_stream() {
        pending.finish();
    } else {
        return Tee {
            inner: body,
            pending: Some(pending),
        }
        .boxed_unsync();
    }
    body.map_err(Into::into).boxed_unsync()
}

/// A copy being read along with the caller's body.
struct Pending {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    data: Vec<Bytes>,
    size: usize,
    trailers: Option<HeaderMap>,
    mirrors: Vec<Arc<Mirror>>,
}

impl Pending {
    /// The body has ended: every mirror is offered the copy.
    fn finish(self) {
        let body = match self.data.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut joined = BytesMut::with_capacity(self.size);
                for chunk in many {
                    joined.extend_from_slice(chunk);
                }
                joined.freeze()
            }
        };
        let copy = Arc::new(Copy {
            method: self.method,
            uri: self.uri,
            version: self.version,
            headers: self.headers,
            body,
            trailers: self.trailers,
        });
        for mirror in &self.mirrors {
            mirror.offer(copy.clone());
        }
    }

    /// No copy: each mirror counts one dropped.
    fn abandon(self, why: &'static str) {
        debug!(why, "Copy dropped");
        for mirror in &self.mirrors {
            mirror.drop_copy();
        }
    }
}

/// The caller's body, passed through frame by frame, kept for a [`Pending`] copy on the way.
struct Tee<B> {
    inner: B,
    /// `None` once the copy was offered or abandoned.
    pending: Option<Pending>,
}

impl<B> Body for Tee<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let over = this.pending.as_mut().is_some_and(|p| {
                        p.size += data.len();
                        p.data.push(data.clone());
                        p.size > MAX_COPY_BODY
                    });
                    if over {
                        if let Some(p) = this.pending.take() {
                            p.abandon("the body is over the copy limit");
                        }
                    }
                } else if let (Some(trailers), Some(p)) = (frame.trailers_ref(), &mut this.pending)
                {
                    p.trailers = Some(trailers.clone());
                }
                // A body of known length may never be polled past its last frame.
                if this.inner.is_end_stream() {
                    if let Some(p) = this.pending.take() {
                        p.finish();
                    }
                }
            }
            Some(Err(_)) => {
                if let Some(p) = this.pending.take() {
                    p.abandon("the caller's body failed");
                }
            }
            None => {
                if let Some(p) = this.pending.take() {
                    p.finish();
                }
            }
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Tee<B> {
    fn drop(&mut self) {
        if let Some(p) = self.pending.take() {
            p.abandon("the body was not read to its end");
        }
    }
}

#[cfg(test)]
mod tests;
