use std::net::{Ipv6Addr, SocketAddr};

use bytes::BytesMut;

use super::*;
use crate::files::*;
use crate::message::*;
use crate::stats::{MirrorCounts, RouteCounts};

fn frame_bytes(msg: impl Into<Message>) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode(&msg.into(), &mut buf).unwrap();
    buf.to_vec()
}

fn decode_all(bytes: &[u8]) -> Vec<Result<Decoded, DecodeError>> {
    let mut dec = FrameDecoder::new();
    dec.push(bytes);
    std::iter::from_fn(|| dec.poll()).take(100).collect()
}

fn every_message() -> Vec<Message> {
    let net = |s: &str| s.parse().unwrap();
    vec![
        Hello {
            version: crate::PROTOCOL_VERSION,
            client: "alice@laptop".into(),
            namespace: "default".into(),
            role: Role::Client,
        }
        .into(),
        Welcome {
            version: crate::PROTOCOL_VERSION,
            session_id: "s-1f2e".into(),
            cluster_domain: "cluster.local".into(),
            subnets: Subnets {
                service: vec![net("10.96.0.0/12")],
                pod: vec![net("10.244.0.0/16"), net("fd00:10:244::/56")],
            },
        }
        .into(),
        Subnets::default().into(),
        DnsQuery {
            id: 0xdead_beef,
            packet: vec![0x12, 0x34, 1, 0, 0, 1],
        }
        .into(),
        DnsAnswer {
            id: 7,
            packet: vec![],
        }
        .into(),
        Ping { seq: u64::MAX }.into(),
        Pong { seq: 0 }.into(),
        Open {
            flow: 1 << 40,
            protocol: Protocol::Tcp,
            dst: SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 8080),
        }
        .into(),
        OpenResult {
            flow: 3,
            result: Ok(()),
        }
        .into(),
        OpenResult {
            flow: 4,
            result: Err(OpenError {
                code: ErrorCode::ConnectionRefused,
                message: "connection refused".into(),
            }),
        }
        .into(),
        UdpPacket {
            flow: 9,
            payload: vec![0xab; 2000],
        }
        .into(),
        Error {
            code: ErrorCode::NotPermitted,
            message: "version 2 is not supported".into(),
        }
        .into(),
        Bye.into(),
        CreateIntercept {
            req: 1,
            name: "orders".into(),
            namespace: "shop".into(),
            workload: "Deployment/orders".into(),
            port: 8080,
            service_port: "http".into(),
            filter: InterceptFilter {
                headers: vec!["x-session=dev-1".into()],
                path_prefix: Some("/api".into()),
            },
            mode: InterceptMode::Mirror,
        }
        .into(),
        RemoveIntercept {
            req: 2,
            name: "orders".into(),
        }
        .into(),
        ListIntercepts {
            req: 3,
            namespace: "shop".into(),
        }
        .into(),
        InterceptReply {
            req: 3,
            result: Ok(InterceptState {
                intercepts: vec![intercept_info()],
                agents: vec![AgentInfo {
                    namespace: "shop".into(),
                    workload: "Deployment/orders".into(),
                    pod: "orders-1".into(),
                    ports: vec![8080, 9090],
                }],
            }),
        }
        .into(),
        InterceptReply {
            req: 4,
            result: Err(Error {
                code: ErrorCode::Other,
                message: "taken".into(),
            }),
        }
        .into(),
        AgentHello {
            workload: "StatefulSet/db".into(),
            pod: "db-0".into(),
            ports: vec![5432],
            token: "eyJhbGciOi".into(),
        }
        .into(),
        AgentIntercepts {
            intercepts: vec![intercept_info()],
        }
        .into(),
        Dial { intercept: 7 }.into(),
        DialResult {
            result: Err(OpenError {
                code: ErrorCode::ConnectionRefused,
                message: "nothing listens on localhost:8080".into(),
            }),
        }
        .into(),
        AgentCredentialRequest {
            req: 5,
            namespace: "shop".into(),
            nonce: "5f0c".into(),
        }
        .into(),
        AgentCredentialReply {
            req: 5,
            result: Ok(AgentCredential {
                ca_pem: "ca".into(),
                cert_pem: "cert".into(),
                key_pem: "key".into(),
            }),
        }
        .into(),
        Namespaces {
            names: vec!["default".into(), "ext".into()],
        }
        .into(),
        ManagerInfo {
            version: "0.1.0".into(),
        }
        .into(),
        RouteStats {
            routes: vec![RouteStat {
                port: 8080,
                intercept: Some(7),
                counts: RouteCounts {
                    requests: 3,
                    latency: vec![1, 0, 2],
                },
                mirrored: MirrorCounts::default(),
            }],
        }
        .into(),
        InterceptStats {
            intercepts: vec![InterceptStat {
                id: 7,
                name: "orders".into(),
                laptop: RouteCounts::default(),
                app: RouteCounts {
                    requests: 1,
                    latency: vec![1],
                },
                mirrored: MirrorCounts {
                    sent: 5,
                    dropped: 2,
                },
                agents: vec![AgentLink {
                    pod: "orders-1".into(),
                    reporting: true,
                }],
            }],
        }
        .into(),
        OpenFiles {
            intercept: 7,
            container: "app".into(),
        }
        .into(),
        OpenFilesResult {
            result: Ok(FilesInfo {
                pod: "orders-1".into(),
                mounts: vec!["/etc/config".into()],
            }),
        }
        .into(),
        FileRequest {
            id: 1,
            op: FileOp::Rename {
                from: "/data/a".into(),
                to: "/data/b".into(),
                noreplace: true,
            },
        }
        .into(),
        FileReply {
            id: 1,
            result: Err(FileError {
                kind: FileErrorKind::CrossesMounts,
                message: "x".into(),
            }),
        }
        .into(),
    ]
}

fn intercept_info() -> InterceptInfo {
    InterceptInfo {
        id: 7,
        name: "orders".into(),
        namespace: "shop".into(),
        workload: "Deployment/orders".into(),
        port: 8080,
        service_port: "http".into(),
        owner: "ann@laptop".into(),
        session_id: "00ff".into(),
        filter: InterceptFilter::default(),
        mode: InterceptMode::Take,
    }
}

#[test]
fn exact_encodings() {
    assert_eq!(frame_bytes(Ping { seq: 1 }), [0, 0, 0, 3, 0, 6, 1]);
    assert_eq!(
        frame_bytes(Pong { seq: 300 }),
        [0, 0, 0, 4, 0, 7, 0xac, 0x02]
    );
    assert_eq!(frame_bytes(Bye), [0, 0, 0, 2, 0, 12]);
    let hello = Hello {
        version: 1,
        client: "a@b".into(),
        namespace: "ns".into(),
        role: Role::Agent,
    };
    let hello_bytes = [0, 0, 0, 11, 0, 1, 1, 3, b'a', b'@', b'b', 2, b'n', b's', 1];
    assert_eq!(frame_bytes(hello), hello_bytes);
    let open = Open {
        flow: 7,
        protocol: Protocol::Udp,
        dst: "10.0.0.1:53".parse().unwrap(),
    };
    // flow, Udp, SocketAddr::V4, 4 octets, port.
    assert_eq!(
        frame_bytes(open),
        [0, 0, 0, 10, 0, 8, 7, 1, 0, 10, 0, 0, 1, 53]
    );
    let refused = OpenResult {
        flow: 7,
        result: Err(OpenError {
            code: ErrorCode::TimedOut,
            message: "x".into(),
        }),
    };
    // flow, Err, TimedOut, "x".
    assert_eq!(frame_bytes(refused), [0, 0, 0, 7, 0, 9, 7, 1, 3, 1, b'x']);
    let subnets = Subnets {
        service: vec!["10.96.0.0/12".parse().unwrap()],
        pod: vec![],
    };
    // one net: V4, 4 octets, prefix; no pod nets.
    assert_eq!(
        frame_bytes(subnets),
        [0, 0, 0, 10, 0, 3, 1, 0, 10, 96, 0, 0, 12, 0]
    );
    let namespaces = Namespaces {
        names: vec!["ns".into()],
    };
    // one name of 2 bytes.
    assert_eq!(
        frame_bytes(namespaces),
        [0, 0, 0, 6, 0, 23, 1, 2, b'n', b's']
    );
}

#[test]
fn decodes_exact_bytes() {
    let bytes = [0, 0, 0, 3, 0, 6, 1, 0, 0, 0, 2, 0, 12];
    let items = decode_all(&bytes);
    assert_eq!(
        items,
        [
            Ok(Decoded::Message(Ping { seq: 1 }.into())),
            Ok(Decoded::Message(Bye.into())),
        ]
    );
}

#[test]
fn every_message_round_trips() {
    let messages = every_message();
    let mut kinds: Vec<u16> = messages.iter().map(Message::kind).collect();
    kinds.dedup();
    assert_eq!(kinds, Message::KINDS, "a kind lacks a round-trip case");
    for msg in messages {
        let bytes = frame_bytes(msg.clone());
        assert_eq!(decode_all(&bytes), [Ok(Decoded::Message(msg))]);
    }
}

#[test]
fn split_input_fed_one_byte_at_a_time() {
    let messages = every_message();
    let mut wire = BytesMut::new();
    for msg in &messages {
        encode(msg, &mut wire).unwrap();
    }
    let mut dec = FrameDecoder::new();
    let mut out = Vec::new();
    for b in &wire[..] {
        dec.push(&[*b]);
        while let Some(item) = dec.poll() {
            out.push(item.unwrap());
        }
    }
    let expected: Vec<_> = messages.into_iter().map(Decoded::Message).collect();
    assert_eq!(out, expected);
    assert_eq!(dec.buffered(), 0);
    assert_eq!(dec.finish(), Ok(()));
}

#[test]
fn unknown_kind_is_skipped() {
    let mut bytes = frame_bytes(Ping { seq: 1 });
    bytes.extend([0, 0, 0, 5, 0x03, 0xe7, 1, 2, 3]); // kind 999, 3 payload bytes
    bytes.extend([0, 0, 0, 2, 0xff, 0xff]); // kind 65535, empty
    bytes.extend(frame_bytes(Pong { seq: 1 }));
    assert_eq!(
        decode_all(&bytes),
        [
            Ok(Decoded::Message(Ping { seq: 1 }.into())),
            Ok(Decoded::Unknown { kind: 999, len: 3 }),
            Ok(Decoded::Unknown {
                kind: 0xffff,
                len: 0
            }),
            Ok(Decoded::Message(Pong { seq: 1 }.into())),
        ]
    );
}

#[test]
fn malformed_payload_spoils_only_its_frame() {
    let mut bytes = vec![0, 0, 0, 2, 0, 6]; // Ping without its seq
    bytes.extend([0, 0, 0, 4, 0, 6, 1, 0]); // Ping with a trailing byte
    bytes.extend([0, 0, 0, 6, 0, 1, 1, 0, 0, 2]); // Hello with role 2
    bytes.extend([0, 0, 0, 7, 0, 1, 1, 1, 0xff, 0, 0]); // Hello with invalid UTF-8
    bytes.extend(frame_bytes(Pong { seq: 2 }));
    let items = decode_all(&bytes);
    assert_eq!(items.len(), 5);
    for (item, kind) in items[..4].iter().zip([6, 6, 1, 1]) {
        match item {
            Err(err @ DecodeError::Malformed { kind: k, .. }) if *k == kind => {
                assert!(!err.is_fatal())
            }
            other => panic!("expected a malformed kind {kind}, got {other:?}"),
        }
    }
    assert!(matches!(
        items[1],
        Err(DecodeError::Malformed {
            source: PayloadError::Trailing(1),
            ..
        })
    ));
    assert_eq!(items[4], Ok(Decoded::Message(Pong { seq: 2 }.into())));
}

#[test]
fn unknown_error_code_decodes_as_other() {
    let bytes = [0, 0, 0, 5, 0, 11, 99, 1, b'?'];
    let expected = Error {
        code: ErrorCode::Other,
        message: "?".into(),
    };
    assert_eq!(decode_all(&bytes), [Ok(Decoded::Message(expected.into()))]);
}

#[test]
fn short_length_is_fatal_and_sticky() {
    for len in [0u8, 1] {
        let mut dec = FrameDecoder::new();
        dec.push(&[0, 0, 0, len]);
        let err = DecodeError::TooShort { len: len.into() };
        assert_eq!(dec.poll(), Some(Err(err.clone())));
        assert!(err.is_fatal());
        dec.push(&frame_bytes(Bye));
        assert_eq!(dec.poll(), Some(Err(err.clone())));
        assert_eq!(dec.buffered(), 0);
        assert_eq!(dec.finish(), Err(err));
    }
}

#[test]
fn oversized_length_is_fatal_from_the_header_alone() {
    let mut src = BytesMut::from(&[0x00, 0x10, 0x00, 0x01][..]); // MAX_FRAME_LEN + 1
    let err = DecodeError::TooLong {
        len: MAX_FRAME_LEN as u32 + 1,
    };
    assert_eq!(decode(&mut src), Some(Err(err)));
    assert_eq!(src.len(), 4, "a fatal error consumes nothing");
    let mut src = BytesMut::from(&[0xff; 4][..]);
    assert_eq!(
        decode(&mut src),
        Some(Err(DecodeError::TooLong { len: u32::MAX }))
    );
}

#[test]
fn frame_of_max_length_is_accepted() {
    let mut bytes = vec![0x00, 0x10, 0x00, 0x00, 0x12, 0x34];
    bytes.resize(LEN_LEN + MAX_FRAME_LEN, 0);
    let items = decode_all(&bytes);
    let expected = Decoded::Unknown {
        kind: 0x1234,
        len: MAX_FRAME_LEN - KIND_LEN,
    };
    assert_eq!(items, [Ok(expected)]);
}

#[test]
fn encode_refuses_oversized_frames() {
    // kind (2) + flow (1) + payload length varint (3) + payload = MAX_FRAME_LEN.
    let fits = UdpPacket {
        flow: 0,
        payload: vec![0; MAX_FRAME_LEN - 6],
    };
    let mut buf = BytesMut::from(&b"keep"[..]);
    encode(&fits.into(), &mut buf).unwrap();
    assert_eq!(buf.len(), 4 + LEN_LEN + MAX_FRAME_LEN);

    let too_big = UdpPacket {
        flow: 0,
        payload: vec![0; MAX_FRAME_LEN - 5],
    };
    let mut buf = BytesMut::from(&b"keep"[..]);
    let err = encode(&too_big.into(), &mut buf).unwrap_err();
    assert!(matches!(err, EncodeError::TooLong { kind: 10, len } if len == MAX_FRAME_LEN + 1));
    assert_eq!(
        &buf[..],
        b"keep",
        "a refused frame leaves the buffer as it was"
    );
}

#[test]
fn truncated_stream_is_reported() {
    let bytes = frame_bytes(Ping { seq: 5 });
    let mut dec = FrameDecoder::new();
    dec.push(&bytes[..5]);
    assert_eq!(dec.poll(), None);
    assert_eq!(dec.finish(), Err(DecodeError::Truncated { buffered: 5 }));
}

/// Deterministic pseudo-random numbers (xorshift64), so a failure replays exactly.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> usize {
        (self.next() % n) as usize
    }

    /// Up to `max - 1` random bytes.
    fn bytes(&mut self, max: u64) -> Vec<u8> {
        let len = self.below(max);
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_garbage_never_panics() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..2000 {
        let garbage = rng.bytes(64);
        let mut dec = FrameDecoder::new();
        for chunk in garbage.chunks(rng.below(8) + 1) {
            dec.push(chunk);
            while let Some(item) = dec.poll() {
                if matches!(item, Err(ref e) if e.is_fatal()) {
                    break;
                }
            }
        }
        let _ = dec.finish();
        let _ = crate::decode_datagram(&garbage);
        let mut relay = crate::RelayDecoder::new();
        relay.push(&garbage);
        while let Some(Ok(_)) = relay.poll() {}
    }
}

#[test]
fn random_payloads_keep_the_stream_in_sync() {
    // Well-formed headers around random payloads of every kind: each frame yields exactly one
    // item, whatever its payload, and the stream is never lost.
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let mut wire = Vec::new();
    let frames = 5000;
    for _ in 0..frames {
        let payload = rng.bytes(40);
        wire.extend((payload.len() as u32 + 2).to_be_bytes());
        wire.extend((rng.below(15) as u16).to_be_bytes());
        wire.extend(payload);
    }
    let mut dec = FrameDecoder::new();
    dec.push(&wire);
    let mut items = 0;
    while let Some(item) = dec.poll() {
        assert!(!matches!(item, Err(ref e) if e.is_fatal()), "{item:?}");
        items += 1;
    }
    assert_eq!(items, frames);
    assert_eq!(dec.finish(), Ok(()));
}

#[test]
fn needed_never_counts_past_the_first_frame() {
    let ping = frame_bytes(Ping { seq: 300 }); // 8 bytes
    let mut stream = ping.clone();
    stream.extend(b"raw bytes after the frame");
    // Reading what `needed` asks for, in steps of at most 3 bytes, stops at the frame's end.
    let mut src = BytesMut::new();
    let mut at = 0;
    while needed(&src) > 0 {
        let step = needed(&src).min(3);
        src.extend_from_slice(&stream[at..at + step]);
        at += step;
    }
    assert_eq!(at, ping.len());
    assert_eq!(
        decode(&mut src),
        Some(Ok(Decoded::Message(Ping { seq: 300 }.into())))
    );
    assert_eq!(needed(&[]), HEADER_LEN);
    assert_eq!(needed(&[0, 0, 0, 2, 0]), 1);
    // A bad length needs nothing more: `decode` reports it now.
    assert_eq!(needed(&[0, 0, 0, 1]), 0);
    assert_eq!(needed(&[0xff, 0xff, 0xff, 0xff]), 0);

    let mut dec = FrameDecoder::new();
    dec.push(&ping[..5]);
    assert_eq!(dec.needed(), 3);
    dec.push(&ping[5..]);
    assert_eq!(dec.needed(), 0);
    assert!(matches!(dec.poll(), Some(Ok(_))));
    assert_eq!(dec.needed(), HEADER_LEN);
    dec.push(&[0, 0, 0, 1]);
    assert_eq!(dec.needed(), 0, "a fatal error is ready to poll");
    assert!(matches!(dec.poll(), Some(Err(_))));
    assert_eq!(dec.needed(), 0, "and stays so");
}
