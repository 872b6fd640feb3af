//! [`Answer`]: what a response says, without what belongs to one exchange.

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType};

/// The part of a response that can be cached and replayed to any query for the same question:
/// the response code, the AA and AD flags and the records. No id, no question, no OPT record
/// (RFC 6891 §6.1.1: OPT is never cached or forwarded), no TSIG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The response code.
    pub code: ResponseCode,
    /// AA: the source is authoritative for the name.
    pub authoritative: bool,
    /// AD: the source validated the records (passed on only to clients that understand it).
    pub authentic_data: bool,
    /// The source itself cut the answer short (an upstream's TC reply whose TCP retry failed):
    /// replies built from it are always TC, and it is never cached.
    pub truncated: bool,
    /// The answer section.
    pub answers: Vec<Record>,
    /// The authority section (the SOA of a negative answer).
    pub authorities: Vec<Record>,
    /// The additional section, without OPT.
    pub additionals: Vec<Record>,
}

/// Why a packet cannot become an [`Answer`].
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// Not a DNS message hickory can read.
    #[error("undecodable DNS response")]
    Decode(#[source] hickory_proto::ProtoError),
    /// A query where a response was expected.
    #[error("not a response")]
    NotAResponse,
}

impl Answer {
    /// An answer with code `code` and no records, not authoritative.
    pub fn empty(code: ResponseCode) -> Answer {
        Answer {
            code,
            authoritative: false,
            authentic_data: false,
            truncated: false,
            answers: Vec::new(),
            authorities: Vec::new(),
            additionals: Vec::new(),
        }
    }

    /// An authoritative answer from our own data.
    pub fn authoritative(
        code: ResponseCode,
        answers: Vec<Record>,
        authorities: Vec<Record>,
        additionals: Vec<Record>,
    ) -> Answer {
        Answer {
            authoritative: true,
            answers,
            authorities,
            additionals,
            ..Answer::empty(code)
        }
    }

    /// The answer a response packet carries.
    pub fn from_response(packet: &[u8]) -> Result<Answer, AnswerError> {
        let message = Message::from_vec(packet).map_err(|e| AnswerError::Decode(e.into()))?;
        if message.metadata.message_type != MessageType::Response {
            return Err(AnswerError::NotAResponse);
        }
        Ok(Answer::from_message(message))
    }

    /// The answer `message` carries (hickory has already moved its OPT record out of the
    /// additional section; TSIG/SIG(0) belong to the exchange and are dropped here).
    pub fn from_message(message: Message) -> Answer {
        let exchange_only = |r: &Record| !matches!(r.record_type(), RecordType::SIG);
        Answer {
            code: message.metadata.response_code,
            authoritative: message.metadata.authoritative,
            authentic_data: message.metadata.authentic_data,
            truncated: message.metadata.truncation,
            answers: message.answers,
            authorities: message.authorities,
            additionals: message
                .additionals
                .into_iter()
                .filter(exchange_only)
                .collect(),
        }
    }

    /// How long the answer may be kept, in seconds: the smallest TTL of its answer records,
    /// or for a negative answer (NXDOMAIN, or NOERROR without answers) the SOA's negative TTL
    /// (RFC 2308 §5: min of the SOA record's TTL and its MINIMUM), `None` without an SOA. Other
    /// codes (SERVFAIL, REFUSED, …) and truncated answers are not to be kept: `None`.
    pub fn ttl(&self) -> Option<u32> {
        if self.truncated {
            return None;
        }
        match self.code {
            ResponseCode::NoError if !self.answers.is_empty() => {
                self.answers.iter().map(|r| r.ttl).min()
            }
            ResponseCode::NoError | ResponseCode::NXDomain => {
                self.authorities.iter().find_map(|r| match &r.data {
                    RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                    _ => None,
                })
            }
            _ => None,
        }
    }

    /// Lowers every record's TTL by `seconds` (the time the answer spent in a cache), down to 0.
    pub fn age(&mut self, seconds: u32) {
        for record in self
            .answers
            .iter_mut()
            .chain(&mut self.authorities)
            .chain(&mut self.additionals)
        {
            record.ttl = record.ttl.saturating_sub(seconds);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::op::{Edns, OpCode};
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::Name;

    use super::*;

    fn a(ttl: u32) -> Record {
        let name = Name::from_ascii("a.example.").unwrap();
        Record::from_rdata(name, ttl, RData::A(A(Ipv4Addr::new(192, 0, 2, 1))))
    }

    fn soa(ttl: u32, minimum: u32) -> Record {
        let name = Name::from_ascii("example.").unwrap();
        let soa = SOA::new(name.clone(), name.clone(), 1, 2, 3, 4, minimum);
        Record::from_rdata(name, ttl, RData::SOA(soa))
    }

    #[test]
    fn keeps_records_and_drops_the_opt_record() {
        let mut message = Message::new(1, MessageType::Response, OpCode::Query);
        message.metadata.authoritative = true;
        message.add_answer(a(30));
        message.set_edns(Edns::new());
        let answer = Answer::from_response(&message.to_vec().unwrap()).unwrap();
        assert!(answer.authoritative);
        assert_eq!(answer.answers, [a(30)]);
        assert!(answer.additionals.is_empty(), "no OPT among the records");
        assert!(matches!(
            Answer::from_response(&[0; 12]),
            Err(AnswerError::NotAResponse)
        ));
        assert!(Answer::from_response(&[0x80; 5]).is_err());
    }

    #[test]
    fn ttl_of_positive_negative_and_failed_answers() {
        let mut positive = Answer::empty(ResponseCode::NoError);
        positive.answers = vec![a(30), a(10)];
        assert_eq!(positive.ttl(), Some(10));
        positive.age(4);
        assert_eq!(positive.ttl(), Some(6));
        positive.age(100);
        assert_eq!(positive.ttl(), Some(0));

        let mut negative = Answer::empty(ResponseCode::NXDomain);
        assert_eq!(negative.ttl(), None, "no SOA: not cacheable");
        negative.authorities = vec![soa(60, 5)];
        assert_eq!(negative.ttl(), Some(5));

        let mut servfail = Answer::empty(ResponseCode::ServFail);
        servfail.answers = vec![a(30)];
        assert_eq!(servfail.ttl(), None);
        positive.truncated = true;
        assert_eq!(positive.ttl(), None);
    }
}
