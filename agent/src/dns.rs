//! The cluster DNS resolver.
//!
//! [`answer`] is the sans-IO core: a query packet and a [`ClusterView`] in, an [`Outcome`] out.
//! It answers, authoritatively, the names the cluster's own DNS would answer (domain `D`,
//! `cluster.local` by default):
//!
//! | name | answer |
//! |---|---|
//! | `svc.ns.svc.D` | A/AAAA: the ClusterIPs; for a headless Service the ready endpoints; CNAME for an ExternalName Service |
//! | `host.svc.ns.svc.D` | A/AAAA of the headless Service's endpoint with that hostname (or dashed IP) |
//! | `_port._proto.svc.ns.svc.D` | SRV per named port (target and port), addresses in the additional section |
//! | `a-b-c-d.ns.pod.D` | A/AAAA: that IP, if a pod in `ns` has it |
//! | `svc.ns`, `svc.ns.svc`, … (`ns` an existing namespace) | as if `D` followed |
//! | `svc` (a Service in the client's namespace) | as `svc.<connected namespace>.svc.D` |
//!
//! Answers carry the asked name verbatim and a [`TTL`] of 5 s. Another name under `D` is
//! NXDOMAIN; a name that exists without records of the asked type is NOERROR with no answer
//! (both with the zone's SOA in the authority section). Anything else is [`Outcome::Forward`]:
//! [`Resolver`] sends the raw query to the pod's own upstream resolver and returns its answer
//! verbatim, or SERVFAIL.
//!
//! Malformed input never panics: a packet with a readable header gets FORMERR, anything shorter
//! (or a response rather than a query) is [`Outcome::Ignore`]d.

mod forward;
mod lookup;
#[cfg(test)]
mod tests;

use hickory_proto::op::{Edns, Message, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Record};

pub use forward::{Forwarder, Resolver, FORWARD_TIMEOUT};
use lookup::Lookup;

use crate::view::ClusterView;

/// TTL of every record the manager answers, and of negative answers (the SOA minimum).
pub const TTL: u32 = 5;

/// The largest UDP payload the manager advertises when the client uses EDNS.
const EDNS_PAYLOAD: u16 = 1232;

/// Length of a DNS header.
const HEADER_LEN: usize = 12;

/// What to do with a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Send this response.
    Answer(Vec<u8>),
    /// Not a cluster name: send the query, unchanged, to the upstream resolver.
    Forward,
    /// Not a query, or too short to answer: drop it.
    Ignore,
}

/// Answers `query` from `view` for a client whose session works in `connected_namespace`.
pub fn answer(query: &[u8], view: &ClusterView, connected_namespace: &str) -> Outcome {
    let Some(header) = RawHeader::read(query) else {
        return Outcome::Ignore;
    };
    if header.is_response {
        return Outcome::Ignore;
    }
    let request = match Message::from_vec(query) {
        Ok(request) => request,
        Err(_) => return Outcome::Answer(header.error(ResponseCode::FormErr)),
    };
    if request.metadata.op_code != OpCode::Query {
        return Outcome::Answer(respond(
            &request,
            ResponseCode::NotImp,
            Vec::new(),
            Vec::new(),
            None,
        ));
    }
    let [question] = request.queries.as_slice() else {
        return Outcome::Answer(header.error(ResponseCode::FormErr));
    };
    if question.query_class() != DNSClass::IN {
        return Outcome::Forward;
    }
    let soa = || {
        Some(lookup::soa_record(
            lookup::domain_name(&view.cluster_domain),
            &view.cluster_domain,
        ))
    };
    match lookup::lookup(
        question.name(),
        question.query_type(),
        view,
        connected_namespace,
    ) {
        Lookup::NotCluster => Outcome::Forward,
        Lookup::NxDomain => Outcome::Answer(respond(
            &request,
            ResponseCode::NXDomain,
            Vec::new(),
            Vec::new(),
            soa(),
        )),
        Lookup::Found {
            answers,
            additionals,
        } => {
            let authority = if answers.is_empty() { soa() } else { None };
            Outcome::Answer(respond(
                &request,
                ResponseCode::NoError,
                answers,
                additionals,
                authority,
            ))
        }
    }
}

/// SERVFAIL for `query` (echoing its question when it has one), or `None` for a packet that is
/// not a query at all.
pub(crate) fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let header = RawHeader::read(query).filter(|h| !h.is_response)?;
    Some(match Message::from_vec(query) {
        Ok(request) => respond(
            &request,
            ResponseCode::ServFail,
            Vec::new(),
            Vec::new(),
            None,
        ),
        Err(_) => header.error(ResponseCode::ServFail),
    })
}

/// Builds the response to `request`, truncated (TC) if it exceeds what the client
/// can take over UDP.
fn respond(
    request: &Message,
    code: ResponseCode,
    answers: Vec<Record>,
    additionals: Vec<Record>,
    authority: Option<Record>,
) -> Vec<u8> {
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata = Metadata::response_from_request(&request.metadata);
    response.metadata.authoritative =
        matches!(code, ResponseCode::NoError | ResponseCode::NXDomain);
    // Names outside the cluster are resolved for the client (forwarded).
    response.metadata.recursion_available = true;
    response.metadata.response_code = code;
    response.add_queries(request.queries.iter().cloned());
    response.add_answers(answers);
    response.add_additionals(additionals);
    response.add_authorities(authority);
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        response.set_edns(edns);
    }
    let limit = request
        .edns
        .as_ref()
        .map_or(512, |e| usize::from(e.max_payload().max(512)));
    let header = RawHeader::from_message(request);
    match response.to_vec() {
        Ok(bytes) if bytes.len() <= limit => bytes,
        Ok(_) => response
            .truncate()
            .to_vec()
            .unwrap_or_else(|_| header.error(ResponseCode::ServFail)),
        Err(_) => header.error(ResponseCode::ServFail),
    }
}

/// The header fields a response needs, read straight from the bytes so that even a packet
/// hickory cannot parse gets a FORMERR with the right id.
#[derive(Debug, Clone, Copy)]
struct RawHeader {
    id: u16,
    is_response: bool,
    /// Opcode and RD bit of the flags' first byte, to echo.
    echoed_flags: u8,
}

impl RawHeader {
    fn read(packet: &[u8]) -> Option<RawHeader> {
        let header = packet.get(..HEADER_LEN)?;
        Some(RawHeader {
            id: u16::from_be_bytes([header[0], header[1]]),
            is_response: header[2] & 0x80 != 0,
            echoed_flags: header[2] & 0x79,
        })
    }

    fn from_message(message: &Message) -> RawHeader {
        let opcode = u8::from(message.metadata.op_code) & 0x0f;
        RawHeader {
            id: message.metadata.id,
            is_response: false,
            echoed_flags: (opcode << 3) | u8::from(message.metadata.recursion_desired),
        }
    }

    /// A bare response: this header, QR set, `code`, no records.
    fn error(self, code: ResponseCode) -> Vec<u8> {
        let mut packet = vec![0; HEADER_LEN];
        packet[..2].copy_from_slice(&self.id.to_be_bytes());
        packet[2] = 0x80 | self.echoed_flags;
        // Only the low 4 bits fit the header; every code used here is below 16.
        packet[3] = 0x80 | (u16::from(code) as u8 & 0x0f);
        packet
    }
}
