//! Arbitrary bytes through every decoder of tether-proto: none may panic, a fatal error must
//! stick, and whatever decodes must survive a re-encode.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tether_proto::{
    decode, decode_datagram, encode, encode_datagram, encode_relay, Decoded, FrameDecoder,
    RelayDecoder,
};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the size of the pieces the stream arrives in.
    let Some((&piece, stream)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece).max(1);
    frames(stream, piece);
    relay(stream, piece);
    datagram(stream);
});

fn frames(stream: &[u8], piece: usize) {
    let mut decoder = FrameDecoder::new();
    'feed: for chunk in stream.chunks(piece) {
        decoder.push(chunk);
        while let Some(item) = decoder.poll() {
            match item {
                Ok(Decoded::Message(msg)) => {
                    let mut buf = BytesMut::new();
                    encode(&msg, &mut buf).expect("a decoded message re-encodes");
                    let again = decode(&mut buf).expect("a whole frame").expect("decodes");
                    assert_eq!(again, Decoded::Message(msg));
                    assert!(buf.is_empty());
                }
                Ok(Decoded::Unknown { .. }) => {}
                Err(err) if err.is_fatal() => {
                    assert_eq!(decoder.poll(), Some(Err(err)), "fatal errors stick");
                    break 'feed;
                }
                Err(_) => {}
            }
        }
    }
    let _ = decoder.finish();
}

fn relay(stream: &[u8], piece: usize) {
    let mut decoder = RelayDecoder::new();
    'feed: for chunk in stream.chunks(piece) {
        decoder.push(chunk);
        while let Some(item) = decoder.poll() {
            match item {
                Ok(packet) => {
                    let mut buf = BytesMut::new();
                    encode_relay(&packet, &mut buf).expect("a decoded packet re-encodes");
                    assert_eq!(buf[2..], packet[..]);
                }
                Err(_) => break 'feed,
            }
        }
    }
    let _ = decoder.finish();
}

fn datagram(bytes: &[u8]) {
    if let Ok((flow, payload)) = decode_datagram(bytes) {
        let mut buf = BytesMut::new();
        encode_datagram(flow, payload, &mut buf).expect("a decoded flow id re-encodes");
        assert_eq!(decode_datagram(&buf), Ok((flow, payload)));
    }
}
