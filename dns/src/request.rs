//! A query, parsed once at the boundary into what a reply depends on.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

use crate::HEADER_LEN;

/// How a reply travels, which decides whether it may be truncated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A datagram: the reply must fit what the client said it can receive.
    Udp,
    /// TCP or the tunnel's control stream: the whole answer, never TC.
    Stream,
}

/// What the client said about EDNS (RFC 6891) in its query's OPT record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientEdns {
    /// The largest UDP reply it can receive (values below 512 mean 512).
    pub max_payload: u16,
    /// The EDNS version it speaks; only 0 exists.
    pub version: u8,
    /// DO: it wants DNSSEC records.
    pub dnssec_ok: bool,
}

/// A standard query with exactly one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The id the reply must carry.
    pub id: u16,
    /// RD, echoed.
    pub recursion_desired: bool,
    /// CD, echoed.
    pub checking_disabled: bool,
    /// AD in the query: the client understands AD in the reply (RFC 6840 §5.7).
    pub authentic_data: bool,
    /// The question, as the client spelled it.
    pub query: Query,
    /// The client's OPT record, if it sent one.
    pub edns: Option<ClientEdns>,
}

/// Why a packet is not a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Not a query at all (shorter than a header, or a response): send nothing back.
    Drop,
    /// A query this server does not take; send this reply (FORMERR or NOTIMP, header only).
    Reply(Vec<u8>),
}

impl Request {
    /// Parses a query. A readable header with an unreadable rest gets FORMERR, as do zero or
    /// several questions; an opcode other than QUERY gets NOTIMP.
    pub fn parse(packet: &[u8]) -> Result<Request, Rejection> {
        let header = RawHeader::read(packet).ok_or(Rejection::Drop)?;
        if header.is_response {
            return Err(Rejection::Drop);
        }
        let message =
            Message::from_vec(packet).map_err(|_| header.reject(ResponseCode::FormErr))?;
        if message.metadata.op_code != OpCode::Query {
            return Err(header.reject(ResponseCode::NotImp));
        }
        let [query] = <[Query; 1]>::try_from(message.queries)
            .map_err(|_| header.reject(ResponseCode::FormErr))?;
        Ok(Request {
            id: message.metadata.id,
            recursion_desired: message.metadata.recursion_desired,
            checking_disabled: message.metadata.checking_disabled,
            authentic_data: message.metadata.authentic_data,
            query,
            edns: message.edns.as_ref().map(|edns| ClientEdns {
                max_payload: edns.max_payload(),
                version: edns.version(),
                dnssec_ok: edns.flags().dnssec_ok,
            }),
        })
    }

    /// The asked name, as spelled.
    pub fn name(&self) -> &Name {
        self.query.name()
    }

    /// The asked type.
    pub fn qtype(&self) -> RecordType {
        self.query.query_type()
    }

    /// The asked name in lower case, without the trailing dot: what routing and caches key on.
    pub fn key_name(&self) -> String {
        self.name()
            .to_ascii()
            .trim_end_matches('.')
            .to_ascii_lowercase()
    }

    /// Whether the client asked for DNSSEC records.
    pub fn dnssec_ok(&self) -> bool {
        self.edns.is_some_and(|e| e.dnssec_ok)
    }

    /// This question as a query of our own (id `id`) to a server that answers over a stream: it
    /// advertises the largest EDNS payload, so that no server (an older manager included)
    /// truncates what the reply builder may need in full.
    pub fn to_stream_query(&self, id: u16) -> Vec<u8> {
        let mut message = Message::new(id, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = self.recursion_desired;
        message.metadata.checking_disabled = self.checking_disabled;
        message.add_query(self.query.clone());
        let mut edns = Edns::new();
        edns.set_max_payload(u16::MAX);
        edns.set_dnssec_ok(self.dnssec_ok());
        message.set_edns(edns);
        // A message holding one parsed question and an OPT record always encodes.
        message
            .to_vec()
            .unwrap_or_else(|_| RawHeader::of(self).error(ResponseCode::ServFail))
    }
}

/// The header fields a reply needs, read straight from the bytes so that even a packet hickory
/// cannot parse gets a FORMERR with the right id.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawHeader {
    id: u16,
    is_response: bool,
    /// Opcode and RD bit of the flags' first byte, to echo.
    echoed_flags: u8,
}

impl RawHeader {
    pub(crate) fn read(packet: &[u8]) -> Option<RawHeader> {
        let header = packet.get(..HEADER_LEN)?;
        Some(RawHeader {
            id: u16::from_be_bytes([header[0], header[1]]),
            is_response: header[2] & 0x80 != 0,
            echoed_flags: header[2] & 0x79,
        })
    }

    pub(crate) fn of(request: &Request) -> RawHeader {
        RawHeader {
            id: request.id,
            is_response: false,
            echoed_flags: u8::from(request.recursion_desired),
        }
    }

    fn reject(self, code: ResponseCode) -> Rejection {
        Rejection::Reply(self.error(code))
    }

    /// A bare response: this header, QR and RA set, `code`, no records.
    pub(crate) fn error(self, code: ResponseCode) -> Vec<u8> {
        let mut packet = vec![0; HEADER_LEN];
        packet[..2].copy_from_slice(&self.id.to_be_bytes());
        packet[2] = 0x80 | self.echoed_flags;
        packet[3] = 0x80 | (code.low() & 0x0f);
        packet
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `example.com. A`, id 0xbeef, RD; `edns` appends an OPT record (payload 1232, DO).
    pub(crate) fn example_query(edns: bool) -> Vec<u8> {
        let mut packet = vec![
            0xbe, 0xef, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
            7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0, //
            0x00, 0x01, 0x00, 0x01,
        ];
        if edns {
            packet[11] = 1;
            packet.extend_from_slice(&[0, 0x00, 0x29, 0x04, 0xd0, 0, 0, 0x80, 0x00, 0, 0]);
        }
        packet
    }

    #[test]
    fn parses_a_plain_query() {
        let request = Request::parse(&example_query(false)).unwrap();
        assert_eq!(request.id, 0xbeef);
        assert!(request.recursion_desired);
        assert_eq!(request.key_name(), "example.com");
        assert_eq!(request.qtype(), RecordType::A);
        assert_eq!(request.edns, None);
    }

    #[test]
    fn parses_the_opt_record() {
        let request = Request::parse(&example_query(true)).unwrap();
        assert_eq!(
            request.edns,
            Some(ClientEdns {
                max_payload: 1232,
                version: 0,
                dnssec_ok: true
            })
        );
    }

    #[test]
    fn rejects_what_is_not_a_query() {
        assert_eq!(Request::parse(&[0xbe, 0xef, 1]), Err(Rejection::Drop));
        let mut response = example_query(false);
        response[2] |= 0x80;
        assert_eq!(Request::parse(&response), Err(Rejection::Drop));
        // The question is cut short: FORMERR, with the id and RD.
        let cut = &example_query(false)[..20];
        assert_eq!(
            Request::parse(cut),
            Err(Rejection::Reply(vec![
                0xbe, 0xef, 0x81, 0x81, 0, 0, 0, 0, 0, 0, 0, 0
            ]))
        );
        // No question: FORMERR. Opcode STATUS (2): NOTIMP.
        let none = [0xbe, 0xef, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(Request::parse(&none), Err(Rejection::Reply(r)) if r[3] == 0x81));
        let mut status = example_query(false);
        status[2] |= 2 << 3;
        assert!(matches!(Request::parse(&status), Err(Rejection::Reply(r)) if r[3] == 0x84));
    }

    #[test]
    fn a_stream_query_asks_for_everything() {
        let request = Request::parse(&example_query(false)).unwrap();
        let ours = Message::from_vec(&request.to_stream_query(7)).unwrap();
        assert_eq!(ours.metadata.id, 7);
        assert_eq!(ours.queries, std::slice::from_ref(&request.query));
        assert_eq!(ours.edns.map(|e| e.max_payload()), Some(u16::MAX));
    }
}
