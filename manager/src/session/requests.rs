//! A client's requests on its control stream, answered off the stream's loop so that a slow
//! answer (an RBAC question, a credential) never holds up the session's keep-alive or another
//! answer.
//!
//! What each kind may cost is bounded per session:
//! * DNS queries: [`MAX_DNS_IN_FLIGHT`] resolving at once; a query beyond it is dropped (the
//!   client's resolver retries);
//! * intercept requests (create, remove, list): answered one at a time and in order, by one task
//!   per session; [`MAX_INTERCEPT_REQUESTS_WAITING`] may wait for it, one more is refused with a
//!   reason;
//! * agent credentials: [`MAX_CREDENTIALS_IN_FLIGHT`] at once, one more is refused with a reason.
//!
//! Answers go back to the stream's loop over a bounded channel, which takes them only while the
//! client reads: a client that asks without reading holds up its own answers (and, with them,
//! the permits of its further questions), no one else's.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use tether_proto::session::Session;
use tether_proto::{
    AgentCredentialReply, AgentCredentialRequest, CreateIntercept, DnsAnswer, DnsQuery, ErrorCode,
    InterceptReply, InterceptState, Message,
};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, info, Instrument};

use super::{
    announce_started, intercept_ended, issue_agent_credential, Shared, MAX_CREDENTIALS_IN_FLIGHT,
    MAX_DNS_IN_FLIGHT,
};
use crate::audit::{Action, Record};
use crate::authz::{self, Access, Subject};
use crate::registry::Holder;

/// Intercept requests of one session waiting for their answer; one more is refused. The
/// daemon asks one at a time, and re-creates at most
/// [`MAX_INTERCEPTS_PER_SESSION`](crate::registry::MAX_INTERCEPTS_PER_SESSION) after a
/// reconnect.
pub const MAX_INTERCEPT_REQUESTS_WAITING: usize = 32;

/// Answers queued for the control stream before the tasks that answer wait.
const ANSWER_QUEUE: usize = 256;

/// Who the session is: what its requests are decided for.
#[derive(Debug, Clone)]
pub(super) struct Asker {
    pub(super) subject: Subject,
    /// The namespace its `Hello` named (DNS names are resolved relative to it).
    pub(super) namespace: String,
    pub(super) session_id: String,
    pub(super) owner: String,
    /// The peer's address, as the manager sees it.
    pub(super) source: IpAddr,
    /// The client's own description of its machine (a hint).
    pub(super) client: String,
}

impl Asker {
    /// An audit record of `action` by this session, received at `received`.
    pub(super) fn record(&self, action: Action, received: SystemTime) -> Record {
        Record::new(action, &self.subject, received)
            .peer(self.source, &self.client)
            .note("session", &self.session_id)
    }
}

/// Answers one session's requests; see the [module](self) documentation.
#[derive(Debug)]
pub(super) struct Requests {
    shared: Arc<Shared>,
    asker: Arc<Asker>,
    answers: mpsc::Sender<Message>,
    dns_in_flight: Arc<Semaphore>,
    credentials_in_flight: Arc<Semaphore>,
    intercepts: mpsc::Sender<Message>,
    worker: JoinHandle<()>,
}

impl Requests {
    /// Starts answering for `asker`; the answers come out of the receiver, for the session.
    pub(super) fn start(shared: Arc<Shared>, asker: Arc<Asker>) -> (Self, mpsc::Receiver<Message>) {
        let (answers, answers_rx) = mpsc::channel(ANSWER_QUEUE);
        let (intercepts, intercepts_rx) = mpsc::channel(MAX_INTERCEPT_REQUESTS_WAITING);
        let worker = tokio::spawn(intercept_worker(
            shared.clone(),
            asker.clone(),
            intercepts_rx,
            answers.clone(),
        ));
        let requests = Self {
            shared,
            asker,
            answers,
            dns_in_flight: Arc::new(Semaphore::new(MAX_DNS_IN_FLIGHT)),
            credentials_in_flight: Arc::new(Semaphore::new(MAX_CREDENTIALS_IN_FLIGHT)),
            intercepts,
            worker,
        };
        (requests, answers_rx)
    }

    /// Acts on one message from the client. A refusal that needs no thought goes straight into
    /// `session`; everything else is answered through the receiver.
    pub(super) fn on_message(&self, msg: Message, session: &mut Session) {
        match msg {
            Message::DnsQuery(q) => self.resolve(q),
            Message::CreateIntercept(_)
            | Message::RemoveIntercept(_)
            | Message::ListIntercepts(_) => {
                if let Err(mpsc::error::TrySendError::Full(msg)) = self.intercepts.try_send(msg) {
                    let req = intercept_req(&msg);
                    let result = Err(tether_proto::Error {
                        code: ErrorCode::Other,
                        message: format!(
                            "{MAX_INTERCEPT_REQUESTS_WAITING} intercept requests of this session \
                             are still waiting for an answer; ask again"
                        ),
                    });
                    let _ = session.send(InterceptReply { req, result });
                }
            }
            Message::AgentCredentialRequest(r) => {
                if let Some(reply) = self.issue(r) {
                    let _ = session.send(reply);
                }
            }
            other => debug!(kind = other.kind(), "Ignored a control message"),
        }
    }

    /// Resolves a query in a task of its own, if fewer than [`MAX_DNS_IN_FLIGHT`] are.
    fn resolve(&self, q: DnsQuery) {
        let Ok(permit) = self.dns_in_flight.clone().try_acquire_owned() else {
            debug!(
                id = q.id,
                "DNS query dropped: {MAX_DNS_IN_FLIGHT} in flight"
            );
            return;
        };
        let (shared, asker, answers) = (
            self.shared.clone(),
            self.asker.clone(),
            self.answers.clone(),
        );
        tokio::spawn(
            async move {
                let started = std::time::Instant::now();
                let resolved = shared
                    .state
                    .resolver
                    .resolve_counted(&q.packet, &asker.namespace);
                if let Some((packet, kind)) = resolved.await {
                    let seconds = started.elapsed().as_secs_f64();
                    shared.state.metrics.dns(kind, seconds);
                    let answer = DnsAnswer { id: q.id, packet };
                    let _ = answers.send(answer.into()).await;
                }
                drop(permit);
            }
            .instrument(tracing::debug_span!("dns", id = q.id)),
        );
    }

    /// Issues an agent credential in a task of its own, if fewer than
    /// [`MAX_CREDENTIALS_IN_FLIGHT`] are; else the refusal to send at once.
    fn issue(&self, r: AgentCredentialRequest) -> Option<AgentCredentialReply> {
        // Each request costs API calls: a few at a time per session.
        let Ok(permit) = self.credentials_in_flight.clone().try_acquire_owned() else {
            let result = Err(tether_proto::Error {
                code: ErrorCode::Other,
                message: format!(
                    "{MAX_CREDENTIALS_IN_FLIGHT} agent credential requests of this \
                     session are still being answered; ask again"
                ),
            });
            return Some(AgentCredentialReply { req: r.req, result });
        };
        let (shared, asker, answers) = (
            self.shared.clone(),
            self.asker.clone(),
            self.answers.clone(),
        );
        tokio::spawn(async move {
            let req = r.req;
            let result = issue_agent_credential(&shared, &asker, r)
                .await
                .map_err(|message| tether_proto::Error {
                    code: ErrorCode::NotPermitted,
                    message,
                });
            drop(permit);
            let reply = AgentCredentialReply { req, result };
            let _ = answers.send(reply.into()).await;
        });
        None
    }

    /// Stops answering intercept requests: once this returns, nothing more is registered for
    /// the session (so that ending its intercepts ends them all).
    pub(super) async fn stop(self) {
        self.worker.abort();
        let _ = self.worker.await;
    }
}

/// The id of an intercept request.
fn intercept_req(msg: &Message) -> u32 {
    match msg {
        Message::CreateIntercept(c) => c.req,
        Message::RemoveIntercept(r) => r.req,
        Message::ListIntercepts(l) => l.req,
        _ => 0,
    }
}

/// Answers a session's intercept requests, one at a time and in order.
async fn intercept_worker(
    shared: Arc<Shared>,
    asker: Arc<Asker>,
    mut requests: mpsc::Receiver<Message>,
    answers: mpsc::Sender<Message>,
) {
    while let Some(msg) = requests.recv().await {
        let (req, result) = match msg {
            Message::CreateIntercept(c) => (c.req, create(&shared, &asker, &c).await),
            Message::RemoveIntercept(r) => {
                let received = SystemTime::now();
                let result = shared.registry().remove(&asker.session_id, &r.name);
                if let Ok(i) = &result {
                    info!(name = %i.name, id = i.id, "Intercept ended");
                    shared.state.audit.record(
                        asker
                            .record(Action::InterceptEnded, received)
                            .intercept(i)
                            .note("reason", "left"),
                    );
                    intercept_ended(&shared, &asker, i, "left").await;
                }
                let result = result.map(|i| InterceptState {
                    intercepts: vec![i],
                    agents: Vec::new(),
                });
                (r.req, result)
            }
            Message::ListIntercepts(l) => {
                let access = Access::list_intercepts(&l.namespace);
                let result = authz::check(&shared.reviewer, &asker.subject, &access)
                    .await
                    .map(|()| shared.registry().list(&l.namespace));
                (l.req, result)
            }
            _ => continue,
        };
        let result = result.map_err(|message| tether_proto::Error {
            code: ErrorCode::NotPermitted,
            message,
        });
        let reply = InterceptReply { req, result };
        if answers.send(reply.into()).await.is_err() {
            break;
        }
    }
}

/// Registers an intercept once RBAC agrees (nothing is registered, nor any agent told, before).
async fn create(
    shared: &Shared,
    asker: &Asker,
    c: &CreateIntercept,
) -> Result<InterceptState, String> {
    let holder = Holder {
        session_id: &asker.session_id,
        owner: &asker.owner,
    };
    let received = SystemTime::now();
    let access = Access::create_intercept(&c.namespace);
    let result = match authz::check(&shared.reviewer, &asker.subject, &access).await {
        Ok(()) => shared.registry().create(holder, c),
        Err(refusal) => Err(refusal),
    };
    match &result {
        Ok(i) => {
            info!(name = %i.name, id = i.id, workload = %i.workload, port = i.port, filter = ?i.filter, mode = %i.mode, "Intercept started");
            shared.state.audit.record(
                asker
                    .record(Action::InterceptCreated, received)
                    .intercept(i),
            );
            // Before the answer: once `tether intercept` returns, the workload shows it.
            announce_started(shared, i).await;
        }
        Err(error) => {
            info!(name = %c.name, %error, "Intercept refused");
            shared.state.audit.record(
                asker
                    .record(Action::InterceptRefused, received)
                    .object(Some(&c.namespace), &c.name)
                    .note("workload", &c.workload)
                    .note("port", c.port)
                    .note("service-port", &c.service_port)
                    .note("filter", crate::audit::filter_text(&c.filter))
                    .note("mode", c.mode)
                    .refused(error.clone()),
            );
        }
    }
    result.map(|i| InterceptState {
        intercepts: vec![i],
        agents: Vec::new(),
    })
}
