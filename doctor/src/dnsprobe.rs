//! One DNS question and its answer as bytes, for asking tether's DNS server directly.

use std::net::Ipv4Addr;

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RData, RecordType},
};

/// The query for `name`'s A records, with `id`.
pub fn query(id: u16, name: &str) -> Result<Vec<u8>, String> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    let name = Name::from_ascii(name).map_err(|e| format!("{name}: {e}"))?;
    message.add_query(Query::query(name, RecordType::A));
    message.to_vec().map_err(|e| e.to_string())
}

/// The addresses in the answer to query `id`, or what went wrong.
pub fn answer(id: u16, bytes: &[u8]) -> Result<Vec<Ipv4Addr>, String> {
    let message = Message::from_vec(bytes).map_err(|e| format!("undecodable answer: {e}"))?;
    if message.metadata.id != id {
        return Err("an answer to another question".into());
    }
    if message.metadata.response_code != ResponseCode::NoError {
        return Err(format!("answered {}", message.metadata.response_code));
    }
    let ips: Vec<Ipv4Addr> = message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    if ips.is_empty() {
        return Err("an answer without addresses".into());
    }
    Ok(ips)
}

#[cfg(test)]
mod tests {
    use hickory_proto::rr::{rdata::A, Record};

    use super::*;

    #[test]
    fn asks_and_reads_an_answer() {
        let q = query(7, "kubernetes.default.svc.cluster.local.").unwrap();
        let mut m = Message::from_vec(&q).unwrap();
        assert_eq!(m.queries.len(), 1);
        m.metadata.message_type = MessageType::Response;
        let name = m.queries[0].name().clone();
        m.add_answer(Record::from_rdata(
            name,
            5,
            RData::A(A(Ipv4Addr::new(10, 96, 0, 1))),
        ));
        let bytes = m.to_vec().unwrap();
        assert_eq!(answer(7, &bytes), Ok(vec![Ipv4Addr::new(10, 96, 0, 1)]));
        assert_eq!(
            answer(8, &bytes),
            Err("an answer to another question".into())
        );
        m.metadata.response_code = ResponseCode::NXDomain;
        m.answers.clear();
        let nx = m.to_vec().unwrap();
        assert!(answer(7, &nx).unwrap_err().starts_with("answered"));
        assert!(answer(7, b"\x00").is_err());
    }
}
