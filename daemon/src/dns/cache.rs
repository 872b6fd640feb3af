//! A small cache of answers (the cluster's and the original resolver's alike), keyed by
//! question. It keeps [`Answer`]s, never messages: the reply to each query is built afresh.
//! Time is passed in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use tether_dns::{Answer, Request};

/// How long a positive answer is kept at most.
pub const MAX_TTL: Duration = Duration::from_secs(5);
/// How long a negative answer (NXDOMAIN, no records) is kept at most.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(2);
/// Entries past which expired ones are swept on insert.
const SWEEP_AT: usize = 4096;

/// What an answer is cached under: the question, and whether DNSSEC records were asked for
/// (an answer with RRSIGs is not the answer to a query without DO).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// The asked name, lower case, without the trailing dot.
    pub name: String,
    /// The asked type.
    pub qtype: u16,
    /// The asked class.
    pub qclass: u16,
    /// DO in the query.
    pub dnssec_ok: bool,
}

impl Key {
    /// The key of `request`'s question.
    pub fn of(request: &Request) -> Key {
        Key {
            name: request.key_name(),
            qtype: u16::from(request.qtype()),
            qclass: u16::from(request.query.query_class()),
            dnssec_ok: request.dnssec_ok(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    stored: Instant,
    expires: Instant,
    answer: Answer,
}

/// Answers by [`Key`], each for at most its TTL, capped at [`MAX_TTL`] ([`NEGATIVE_TTL`] for
/// negative ones).
#[derive(Debug, Default)]
pub struct Cache {
    entries: HashMap<Key, Entry>,
}

impl Cache {
    /// The answer cached for `key`, its TTLs lowered by the time it spent here.
    pub fn get(&mut self, now: Instant, key: &Key) -> Option<Answer> {
        let entry = self.entries.get(key)?;
        if now >= entry.expires {
            self.entries.remove(key);
            return None;
        }
        let mut answer = entry.answer.clone();
        let age = now.saturating_duration_since(entry.stored).as_secs();
        answer.age(u32::try_from(age).unwrap_or(u32::MAX));
        Some(answer)
    }

    /// Remembers `answer` for as long as its TTL allows (see [`Answer::ttl`]: failures and
    /// truncated answers are not kept).
    pub fn insert(&mut self, now: Instant, key: Key, answer: &Answer) {
        let Some(ttl) = answer.ttl() else {
            return;
        };
        let cap = match answer.code {
            ResponseCode::NoError if !answer.answers.is_empty() => MAX_TTL,
            _ => NEGATIVE_TTL,
        };
        let ttl = Duration::from_secs(ttl.into()).min(cap);
        if ttl.is_zero() {
            return;
        }
        if self.entries.len() > SWEEP_AT {
            self.entries.retain(|_, entry| entry.expires > now);
        }
        let entry = Entry {
            stored: now,
            expires: now + ttl,
            answer: answer.clone(),
        };
        self.entries.insert(key, entry);
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    use super::*;

    fn request(name: &str, dnssec_ok: bool) -> Request {
        let mut message = Message::new(1, MessageType::Query, OpCode::Query);
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        if dnssec_ok {
            let mut edns = Edns::new();
            edns.set_dnssec_ok(true);
            message.set_edns(edns);
        }
        Request::parse(&message.to_vec().unwrap()).unwrap()
    }

    fn positive(ttl: u32) -> Answer {
        let mut answer = Answer::empty(ResponseCode::NoError);
        let name = Name::from_ascii("a.default.svc.cluster.local.").unwrap();
        let a = RData::A(A(Ipv4Addr::new(10, 96, 0, 10)));
        answer.answers = vec![Record::from_rdata(name, ttl, a)];
        answer
    }

    fn nxdomain(soa_ttl: u32) -> Answer {
        let mut answer = Answer::empty(ResponseCode::NXDomain);
        let zone = Name::from_ascii("cluster.local.").unwrap();
        let soa = SOA::new(zone.clone(), zone.clone(), 1, 1, 1, 1, soa_ttl);
        answer.authorities = vec![Record::from_rdata(zone, soa_ttl, RData::SOA(soa))];
        answer
    }

    #[test]
    fn keys_ignore_case_and_tell_dnssec_apart() {
        let plain = Key::of(&request("A.Default.svc.cluster.local.", false));
        assert_eq!(
            plain,
            Key::of(&request("a.default.svc.cluster.local", false))
        );
        assert_eq!(plain.name, "a.default.svc.cluster.local");
        assert_ne!(
            plain,
            Key::of(&request("a.default.svc.cluster.local.", true))
        );
    }

    #[test]
    fn answers_age_and_expire_capped_at_max_ttl() {
        let mut cache = Cache::default();
        let t0 = Instant::now();
        let key = Key::of(&request("a.default.svc.cluster.local.", false));
        cache.insert(t0, key.clone(), &positive(30));
        let hit = cache.get(t0 + Duration::from_secs(2), &key).unwrap();
        assert_eq!(hit.answers[0].ttl, 28, "TTLs count down in the cache");
        assert!(cache.get(t0 + MAX_TTL, &key).is_none(), "capped at MAX_TTL");
        cache.insert(t0, key.clone(), &positive(0));
        assert!(cache.get(t0, &key).is_none(), "TTL 0 is not cached");
    }

    #[test]
    fn negative_answers_are_kept_briefly_failures_and_truncated_ones_not_at_all() {
        let mut cache = Cache::default();
        let t0 = Instant::now();
        let key = Key::of(&request("nope.default.svc.cluster.local.", false));
        cache.insert(t0, key.clone(), &nxdomain(5));
        assert!(cache.get(t0 + Duration::from_secs(1), &key).is_some());
        assert!(cache.get(t0 + NEGATIVE_TTL, &key).is_none());

        cache.insert(t0, key.clone(), &Answer::empty(ResponseCode::ServFail));
        assert!(cache.get(t0, &key).is_none());
        let mut truncated = positive(30);
        truncated.truncated = true;
        cache.insert(t0, key.clone(), &truncated);
        assert!(
            cache.get(t0, &key).is_none(),
            "the client must retry over TCP"
        );
    }
}
