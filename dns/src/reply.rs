//! Building the reply to one [`Request`] from an [`Answer`]: sans-IO, deterministic.

#[cfg(test)]
mod tests;

use hickory_proto::op::{Edns, Message, OpCode, ResponseCode};
use hickory_proto::rr::Record;

use crate::request::{RawHeader, Request, Transport};
use crate::Answer;

/// The UDP payload size this server advertises in its OPT record.
pub const ADVERTISED_PAYLOAD: u16 = 1232;

/// The largest UDP reply sent, whatever the client advertises: 1232 bytes fit any path's MTU
/// without fragmentation (DNS flag day 2020); a larger answer is TC and the client asks again
/// over TCP.
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// The size of a UDP reply without EDNS (RFC 1035 §4.2.1), and the least an EDNS client means.
pub const CLASSIC_UDP_PAYLOAD: u16 = 512;

/// The largest DNS message: what a TCP length prefix can say.
const MAX_MESSAGE: usize = u16::MAX as usize;

/// How large the reply to `request` may be over `transport`.
pub fn limit(request: &Request, transport: Transport) -> usize {
    match (transport, request.edns) {
        (Transport::Stream, _) => MAX_MESSAGE,
        (Transport::Udp, None) => usize::from(CLASSIC_UDP_PAYLOAD),
        (Transport::Udp, Some(edns)) => {
            usize::from(edns.max_payload.clamp(CLASSIC_UDP_PAYLOAD, MAX_UDP_PAYLOAD))
        }
    }
}

/// The reply to `request` carrying `answer`, for `transport`:
/// - the request's id, RD and CD, and its question as spelled; RA set (we resolve what is not
///   ours); AA from the answer; AD only for a client that set AD or DO;
/// - records owned by the asked name (in any case) carry the client's spelling of it;
/// - an OPT record (payload [`ADVERTISED_PAYLOAD`], DO echoed) exactly when the query had one;
///   a query with an EDNS version other than 0 gets BADVERS (RFC 6891 §6.1.3); a response code
///   that needs EDNS, for a query without it, becomes SERVFAIL;
/// - over UDP, a reply over [`limit`] first loses its additional section (no TC: RFC 2181 §9),
///   then its authority section and as many trailing answer records as needed, with TC. Over a
///   stream nothing is dropped and TC is never set (unless the answer itself was truncated at
///   its source).
pub fn build(request: &Request, answer: &Answer, transport: Transport) -> Vec<u8> {
    let badvers = Answer::empty(ResponseCode::BADVERS);
    let answer = if request.edns.is_some_and(|e| e.version != 0) {
        &badvers
    } else {
        answer
    };
    let mut message = Message::response(request.id, OpCode::Query);
    message.metadata.recursion_desired = request.recursion_desired;
    message.metadata.checking_disabled = request.checking_disabled;
    message.metadata.recursion_available = true;
    message.metadata.authoritative = answer.authoritative;
    message.metadata.authentic_data =
        answer.authentic_data && (request.authentic_data || request.dnssec_ok());
    message.metadata.truncation = answer.truncated;
    message.metadata.response_code = match request.edns {
        None if answer.code.high() > 0 => ResponseCode::ServFail,
        _ => answer.code,
    };
    message.add_query(request.query.clone());
    if let Some(client) = request.edns {
        let mut edns = Edns::new();
        edns.set_max_payload(ADVERTISED_PAYLOAD);
        edns.set_dnssec_ok(client.dnssec_ok);
        message.set_edns(edns);
    }
    let respell = |records: &[Record]| -> Vec<Record> {
        records
            .iter()
            .map(|record| {
                let mut record = record.clone();
                // `Name`'s equality ignores case: the same name, perhaps spelled otherwise.
                if record.name == *request.name() {
                    record.name = request.name().clone();
                }
                record
            })
            .collect()
    };
    let answers = respell(&answer.answers);
    let authorities = respell(&answer.authorities);
    let additionals = respell(&answer.additionals);
    fit(
        message,
        answers,
        authorities,
        additionals,
        limit(request, transport),
    )
    .unwrap_or_else(|| RawHeader::of(request).error(ResponseCode::ServFail))
}

/// The reply to `request` with code `code` and no records.
pub fn error(request: &Request, code: ResponseCode, transport: Transport) -> Vec<u8> {
    build(request, &Answer::empty(code), transport)
}

/// `packet`, a response to `request` itself (the client's own query, forwarded), passed on as
/// it is when it fits `transport`, else the TC reply with no records. For the rare response the
/// parser refuses, where [`build`] has no records to work with.
pub fn relay(request: &Request, packet: &[u8], transport: Transport) -> Vec<u8> {
    if packet.len() >= crate::HEADER_LEN && packet.len() <= limit(request, transport) {
        let mut packet = packet.to_vec();
        packet[..2].copy_from_slice(&request.id.to_be_bytes());
        return packet;
    }
    let mut truncated = Answer::empty(ResponseCode::NoError);
    truncated.truncated = true;
    build(request, &truncated, transport)
}

/// Encodes `message` with the sections, within `limit` bytes, dropping what does not fit as
/// [`build`] says. `None` if hickory cannot encode the records at all.
fn fit(
    mut message: Message,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
    limit: usize,
) -> Option<Vec<u8>> {
    message.answers = answers;
    message.authorities = authorities;
    message.additionals = additionals;
    let whole = message.to_vec().ok()?;
    if whole.len() <= limit {
        return Some(whole);
    }
    message.additionals.clear();
    let without_additionals = message.to_vec().ok()?;
    if without_additionals.len() <= limit {
        return Some(without_additionals);
    }
    // The largest count of leading answers that fits: sizes grow with the count, so a binary
    // search finds it in log2(n) encodings.
    message.authorities.clear();
    message.metadata.truncation = true;
    let answers = std::mem::take(&mut message.answers);
    let encode = |message: &mut Message, count: usize| {
        message.answers = answers[..count].to_vec();
        message.to_vec().ok()
    };
    let (mut fits, mut too_many) = (0, answers.len());
    while too_many - fits > 1 {
        let mid = (fits + too_many) / 2;
        match encode(&mut message, mid) {
            Some(bytes) if bytes.len() <= limit => fits = mid,
            _ => too_many = mid,
        }
    }
    encode(&mut message, fits)
}
