//! The workstation's DNS decisions, sans-IO: which names go to the cluster, and a short-lived
//! cache of answers (the cluster's and the original resolver's alike, for at most their TTL).
//!
//! Names under the cluster domain go to the manager. So do single-label names (`hello`), which the
//! manager answers in the connected namespace. Everything else goes unchanged to the resolver the
//! machine had before `connect`, so non-cluster lookups behave exactly as they did.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use hickory_proto::op::{Message, ResponseCode};

/// Where a query goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The traffic manager, through the tunnel.
    Cluster,
    /// The original upstream resolver.
    Upstream,
}

/// The question of a query: what the cache and the classifier look at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Question {
    /// Lower-case, without the trailing dot.
    pub name: String,
    pub qtype: u16,
}

/// Reads the id and the (single) question of a query. `None` for anything that is not a
/// well-formed query with exactly one question.
pub fn parse_query(packet: &[u8]) -> Option<(u16, Question)> {
    let msg = Message::from_vec(packet).ok()?;
    if msg.queries.len() != 1 || msg.metadata.message_type != hickory_proto::op::MessageType::Query
    {
        return None;
    }
    let q = &msg.queries[0];
    let name = q
        .name()
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    Some((
        msg.metadata.id,
        Question {
            name,
            qtype: u16::from(q.query_type()),
        },
    ))
}

/// Decides where names go.
#[derive(Debug, Clone)]
pub struct Classifier {
    suffix: String,
}

impl Classifier {
    pub fn new(cluster_domain: &str) -> Self {
        Classifier {
            suffix: format!(".{}", cluster_domain.trim_matches('.').to_ascii_lowercase()),
        }
    }

    pub fn classify(&self, name: &str) -> Destination {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() {
            return Destination::Upstream;
        }
        if name.ends_with(&self.suffix) || name == self.suffix[1..] || !name.contains('.') {
            Destination::Cluster
        } else {
            Destination::Upstream
        }
    }
}

/// How long cluster answers are kept at most.
pub const MAX_TTL: Duration = Duration::from_secs(5);
/// How long a negative answer (NXDOMAIN, no records) is kept.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(2);

/// A small cache of cluster answers, keyed by question. Time is passed in.
#[derive(Debug, Default)]
pub struct Cache {
    entries: HashMap<Question, (Instant, Vec<u8>)>,
}

impl Cache {
    /// A cached answer for `question`, rewritten to carry the query's `id`.
    pub fn get(&mut self, now: Instant, id: u16, question: &Question) -> Option<Vec<u8>> {
        let (expires, answer) = self.entries.get(question)?;
        if now >= *expires {
            self.entries.remove(question);
            return None;
        }
        let mut answer = answer.clone();
        answer[..2].copy_from_slice(&id.to_be_bytes());
        Some(answer)
    }

    /// Remembers `answer` for as long as its smallest TTL allows, capped at [`MAX_TTL`].
    /// Failures other than NXDOMAIN are not cached, nor truncated answers (the client asks again
    /// over TCP).
    pub fn insert(&mut self, now: Instant, question: Question, answer: &[u8]) {
        let Ok(msg) = Message::from_vec(answer) else {
            return;
        };
        if msg.metadata.truncation {
            return;
        }
        let ttl = match msg.metadata.response_code {
            ResponseCode::NoError if !msg.answers.is_empty() => {
                let min = msg.answers.iter().map(|r| r.ttl).min().unwrap_or(0);
                Duration::from_secs(min.into()).min(MAX_TTL)
            }
            ResponseCode::NoError | ResponseCode::NXDomain => NEGATIVE_TTL,
            _ => return,
        };
        if ttl.is_zero() {
            return;
        }
        if self.entries.len() > 4096 {
            self.entries.retain(|_, (exp, _)| *exp > now);
        }
        self.entries.insert(question, (now + ttl, answer.to_vec()));
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::{
        op::{MessageType, Query},
        rr::{rdata::A, Name, RData, Record, RecordType},
    };

    use super::*;

    fn query(id: u16, name: &str) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = id;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        m.to_vec().unwrap()
    }

    fn answer(id: u16, name: &str, ttl: u32) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = id;
        m.metadata.message_type = MessageType::Response;
        let n = Name::from_ascii(name).unwrap();
        m.add_query(Query::query(n.clone(), RecordType::A));
        m.add_answer(Record::from_rdata(
            n,
            ttl,
            RData::A(A(Ipv4Addr::new(10, 96, 0, 10))),
        ));
        m.to_vec().unwrap()
    }

    #[test]
    fn classifies_names() {
        let c = Classifier::new("cluster.local");
        assert_eq!(
            c.classify("hello.default.svc.cluster.local."),
            Destination::Cluster
        );
        assert_eq!(
            c.classify("Hello.Default.SVC.Cluster.Local"),
            Destination::Cluster
        );
        assert_eq!(c.classify("hello"), Destination::Cluster);
        assert_eq!(c.classify("cluster.local"), Destination::Cluster);
        assert_eq!(c.classify("hello.default"), Destination::Upstream);
        assert_eq!(c.classify("outside.tether.test"), Destination::Upstream);
        assert_eq!(c.classify("notcluster.local"), Destination::Upstream);
        assert_eq!(c.classify(""), Destination::Upstream);
    }

    #[test]
    fn parses_queries_and_rejects_garbage() {
        let (id, q) = parse_query(&query(7, "Hello.default.svc.cluster.local.")).unwrap();
        assert_eq!(id, 7);
        assert_eq!(q.name, "hello.default.svc.cluster.local");
        assert_eq!(q.qtype, 1);
        assert!(parse_query(&[]).is_none());
        assert!(parse_query(&[0xff; 11]).is_none());
        assert!(
            parse_query(&answer(1, "x.", 5)).is_none(),
            "responses are not queries"
        );
    }

    #[test]
    fn caches_with_ttl_and_rewrites_id() {
        let mut cache = Cache::default();
        let t0 = Instant::now();
        let (_, q) = parse_query(&query(1, "a.default.svc.cluster.local.")).unwrap();
        cache.insert(
            t0,
            q.clone(),
            &answer(1, "a.default.svc.cluster.local.", 30),
        );
        let hit = cache.get(t0 + Duration::from_secs(1), 0xbeef, &q).unwrap();
        assert_eq!(&hit[..2], &[0xbe, 0xef]);
        assert_eq!(Message::from_vec(&hit).unwrap().answers.len(), 1);
        assert!(
            cache.get(t0 + MAX_TTL, 2, &q).is_none(),
            "capped at MAX_TTL"
        );
        cache.insert(t0, q.clone(), &answer(1, "a.default.svc.cluster.local.", 0));
        assert!(cache.get(t0, 3, &q).is_none(), "TTL 0 is not cached");
    }

    #[test]
    fn truncated_answers_are_not_cached() {
        let mut cache = Cache::default();
        let t0 = Instant::now();
        let (_, q) = parse_query(&query(1, "big.outside.test.")).unwrap();
        let mut truncated = Message::from_vec(&answer(1, "big.outside.test.", 30)).unwrap();
        truncated.metadata.truncation = true;
        cache.insert(t0, q.clone(), &truncated.to_vec().unwrap());
        assert!(
            cache.get(t0, 2, &q).is_none(),
            "the client must retry over TCP"
        );
    }
}
