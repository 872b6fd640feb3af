use smoltcp::phy::ChecksumCapabilities;

use super::*;
use crate::netstack::packet::tests::{SYN, UDP};
use smoltcp::wire::{
    IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};

const CLIENT: &str = "10.124.0.1:40000";
const SERVER: &str = "10.123.4.5:7";
/// Sequence number of the SYN in the `SYN` fixture.
const CLIENT_ISN: i32 = 1000;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address parses")
}

fn key() -> FlowKey {
    (addr(CLIENT), addr(SERVER))
}

fn core() -> Core {
    let config = CoreConfig {
        mtu: 1500,
        tcp_rx_buffer: 4096,
        tcp_tx_buffer: 4096,
        max_pending: 2,
    };
    Core::new(config, 7, Instant::ZERO)
}

fn at(ms: i64) -> Instant {
    Instant::from_millis(ms)
}

/// A decoded TCP segment the core sent.
#[derive(Debug)]
struct Out {
    src: SocketAddr,
    dst: SocketAddr,
    control: TcpControl,
    seq: TcpSeqNumber,
    ack: Option<TcpSeqNumber>,
    payload: Vec<u8>,
}

fn sent(core: &mut Core) -> Vec<Out> {
    let mut packets = Vec::new();
    core.take_tx(&mut packets);
    packets
        .iter()
        .map(|p| {
            let ip = Ipv4Packet::new_checked(&p[..]).expect("IPv4 out");
            assert!(ip.verify_checksum());
            assert_eq!(ip.next_header(), IpProtocol::Tcp);
            let (s, d) = (ip.src_addr().into(), ip.dst_addr().into());
            let tcp = TcpPacket::new_checked(ip.payload()).expect("TCP out");
            let repr = TcpRepr::parse(&tcp, &s, &d, &ChecksumCapabilities::default())
                .expect("valid TCP, checksum included");
            Out {
                src: SocketAddr::new(ip.src_addr().into(), repr.src_port),
                dst: SocketAddr::new(ip.dst_addr().into(), repr.dst_port),
                control: repr.control,
                seq: repr.seq_number,
                ack: repr.ack_number,
                payload: repr.payload.to_vec(),
            }
        })
        .collect()
}

/// A segment from the client to the server.
fn segment(seq: TcpSeqNumber, ack: TcpSeqNumber, control: TcpControl, payload: &[u8]) -> Vec<u8> {
    let (src, dst) = key();
    let repr = TcpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
        control,
        seq_number: seq,
        ack_number: Some(ack),
        window_len: 64240,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload,
    };
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
        unreachable!("IPv4 fixtures")
    };
    let ip = Ipv4Repr {
        src_addr: s,
        dst_addr: d,
        next_header: IpProtocol::Tcp,
        payload_len: repr.buffer_len(),
        hop_limit: 64,
    };
    let mut buf = vec![0; ip.buffer_len() + repr.buffer_len()];
    let caps = ChecksumCapabilities::default();
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]), &caps);
    repr.emit(
        &mut TcpPacket::new_unchecked(&mut buf[ip.buffer_len()..]),
        &src.ip().into(),
        &dst.ip().into(),
        &caps,
    );
    buf
}

use std::net::IpAddr;

/// Accepts the fixture SYN and completes the handshake; returns the socket and the server's
/// next sequence number.
fn established(core: &mut Core) -> (SocketHandle, TcpSeqNumber) {
    assert_eq!(core.ingest(at(0), SYN), Ingress::TcpRequest(key()));
    let handle = core.accept(at(1), key()).expect("accepted");
    core.poll(at(1));
    let out = sent(core);
    assert_eq!(out.len(), 1, "{out:?}");
    let synack = &out[0];
    assert_eq!((synack.src, synack.dst), (addr(SERVER), addr(CLIENT)));
    assert_eq!(synack.control, TcpControl::Syn);
    let client_next = TcpSeqNumber(CLIENT_ISN + 1);
    assert_eq!(synack.ack, Some(client_next));
    let server_next = synack.seq + 1;
    let ack = segment(client_next, server_next, TcpControl::None, b"");
    assert_eq!(core.ingest(at(2), &ack), Ingress::None);
    assert_eq!(core.socket(handle).state(), State::Established);
    (handle, server_next)
}

#[test]
fn syn_is_held_until_accepted() {
    let mut core = core();
    assert_eq!(core.ingest(at(0), SYN), Ingress::TcpRequest(key()));
    core.poll(at(0));
    assert!(
        sent(&mut core).is_empty(),
        "nothing answers before the owner decides"
    );
    // The client's retransmission is absorbed, not reported twice.
    assert_eq!(core.ingest(at(1000), SYN), Ingress::None);
    assert_eq!(core.counters.tcp_requests, 1);
}

#[test]
fn handshake_and_data_both_ways() {
    let mut core = core();
    let (handle, server_seq) = established(&mut core);
    let client_seq = TcpSeqNumber(CLIENT_ISN + 1);

    let data = segment(client_seq, server_seq, TcpControl::Psh, b"ping");
    core.ingest(at(3), &data);
    let mut buf = [0; 16];
    let n = core.socket(handle).recv_slice(&mut buf).expect("readable");
    assert_eq!(&buf[..n], b"ping");

    core.socket(handle).send_slice(b"pong").expect("writable");
    core.poll(at(4));
    let out = sent(&mut core);
    let reply = out
        .iter()
        .find(|o| !o.payload.is_empty())
        .expect("data sent");
    assert_eq!(reply.payload, b"pong");
    assert_eq!(reply.seq, server_seq);
    assert_eq!(reply.ack, Some(client_seq + 4));
}

#[test]
fn refused_request_gets_rst() {
    let mut core = core();
    core.ingest(at(0), SYN);
    core.refuse(at(1), key());
    let out = sent(&mut core);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].control, TcpControl::Rst);
    assert_eq!(out[0].ack, Some(TcpSeqNumber(CLIENT_ISN + 1)));
    assert_eq!(core.counters.tcp_refused, 1);
    // Answered: a second refuse or accept does nothing.
    core.refuse(at(2), key());
    assert!(core.accept(at(2), key()).is_none());
    assert!(sent(&mut core).is_empty());
}

#[test]
fn backlog_overflow_drops_the_syn_unanswered() {
    let mut core = core();
    let other = |port: u16| {
        let mut p = SYN.to_vec();
        // Change the client port (bytes 20-21) and fix the TCP checksum by the same delta.
        let old = u16::from_be_bytes([p[20], p[21]]);
        p[20..22].copy_from_slice(&port.to_be_bytes());
        let sum = u16::from_be_bytes([p[36], p[37]]);
        let fixed = ones_add(ones_add(sum, old), !port);
        p[36..38].copy_from_slice(&fixed.to_be_bytes());
        p
    };
    assert!(matches!(
        core.ingest(at(0), &other(1)),
        Ingress::TcpRequest(_)
    ));
    assert!(matches!(
        core.ingest(at(0), &other(2)),
        Ingress::TcpRequest(_)
    ));
    assert_eq!(core.ingest(at(0), &other(3)), Ingress::None);
    assert_eq!(core.counters.tcp_backlog_dropped, 1);
    assert_eq!(core.counters.tcp_refused, 0);
    // No RST: the client's retransmitted SYN is the retry.
    assert!(sent(&mut core).is_empty());
}

fn ones_add(a: u16, b: u16) -> u16 {
    let sum = u32::from(a) + u32::from(b);
    ((sum & 0xffff) + (sum >> 16)) as u16
}

#[test]
fn segment_for_unknown_flow_gets_rst() {
    let mut core = core();
    let stray = segment(TcpSeqNumber(5), TcpSeqNumber(9), TcpControl::None, b"x");
    assert_eq!(core.ingest(at(0), &stray), Ingress::None);
    let out = sent(&mut core);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].control, TcpControl::Rst);
}

#[test]
fn udp_malformed_and_other() {
    let mut core = core();
    assert_eq!(
        core.ingest(at(0), UDP),
        Ingress::Udp {
            src: addr("10.124.0.1:5000"),
            dst: addr("10.123.4.5:53"),
            payload: b"hello"
        }
    );
    assert_eq!(core.ingest(at(0), &[0x45, 0, 0]), Ingress::None);
    assert_eq!(core.ingest(at(0), &[0xff; 100]), Ingress::None);
    let mut bad = SYN.to_vec();
    bad[40] ^= 0xff;
    assert_eq!(core.ingest(at(0), &bad), Ingress::None);
    assert_eq!(core.counters.malformed, 3);
    assert_eq!(core.counters.udp_received, 1);
    assert!(sent(&mut core).is_empty());
}

#[test]
fn released_socket_closes_and_is_reaped() {
    let mut core = core();
    let (handle, server_seq) = established(&mut core);
    let client_seq = TcpSeqNumber(CLIENT_ISN + 1);
    core.release(at(3), handle, key());
    core.poll(at(3));
    let out = sent(&mut core);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].control, TcpControl::Fin);
    // Client acknowledges our FIN and sends its own.
    let fin = segment(client_seq, server_seq + 1, TcpControl::Fin, b"");
    core.ingest(at(4), &fin);
    core.poll(at(4));
    core.poll(at(5));
    assert_eq!(core.socket_count(), 0);
    assert!(core.flows.is_empty());
}

#[test]
fn orphan_is_reset_after_timeout() {
    let mut core = core();
    let (handle, _) = established(&mut core);
    core.release(at(3), handle, key());
    core.poll(at(3));
    sent(&mut core);
    let deadline = 3 + ORPHAN_TIMEOUT.total_millis() as i64;
    assert!(core.poll_delay(at(3)).is_some());
    core.poll(at(deadline));
    let out = sent(&mut core);
    assert!(out.iter().any(|o| o.control == TcpControl::Rst), "{out:?}");
    core.poll(at(deadline + 1));
    assert_eq!(core.socket_count(), 0);
}
