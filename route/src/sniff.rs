//! Tells, from a connection's first bytes, whether the client speaks HTTP/1.x, HTTP/2 with prior
//! knowledge, or something else (sans-IO).
//!
//! - **HTTP/2**: the client connection preface `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`.
//! - **HTTP/1.x**: a request line's start: a method (1 to [`MAX_METHOD`] upper-case letters,
//!   `-` or `_`), one space, then the start of a request target (`/`, `*`, or a letter for the
//!   absolute and authority forms).
//! - **A tether probe**: [`tether_proto::probe::PROBE`], which the agent answers itself.
//! - Anything else (TLS, a database protocol, …) is [`Protocol::Other`].
//!
//! The decision needs at most [`DECISIVE_LEN`] bytes. A client that sends nothing (a protocol
//! where the server speaks first) is for the caller to time out on.

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The longest method accepted as HTTP/1.x.
pub const MAX_METHOD: usize = 20;

/// With this many bytes (or more), [`sniff`] never answers [`Sniff::NeedMore`]: the preface is
/// the longest thing it waits for (a method, its space and one more byte take at most 22).
pub const DECISIVE_LEN: usize = H2_PREFACE.len();

/// What a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.0 or HTTP/1.1.
    Http1,
    /// HTTP/2 with prior knowledge (cleartext).
    Http2,
    /// Not HTTP: pass the bytes through.
    Other,
    /// The daemon asking which agent this is (see [`tether_proto::probe`]).
    Probe,
}

/// The answer for the bytes seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    /// The protocol is known.
    Known(Protocol),
    /// Too few bytes to tell; read more (or give up at end of stream or a timeout).
    NeedMore,
}

/// Classifies a connection by its first bytes.
pub fn sniff(first: &[u8]) -> Sniff {
    match tether_proto::probe::is_probe(first) {
        Some(true) => return Sniff::Known(Protocol::Probe),
        None => return Sniff::NeedMore,
        Some(false) => {}
    }
    let preface_len = first.len().min(H2_PREFACE.len());
    if first[..preface_len] == H2_PREFACE[..preface_len] {
        return if preface_len == H2_PREFACE.len() {
            Sniff::Known(Protocol::Http2)
        } else {
            // `PRI` is also an HTTP/1 method, so a partial preface could still be either.
            Sniff::NeedMore
        };
    }
    let method_len = first
        .iter()
        .take(MAX_METHOD + 1)
        .position(|&b| !(b.is_ascii_uppercase() || b == b'-' || b == b'_'));
    match method_len {
        None if first.len() <= MAX_METHOD => Sniff::NeedMore,
        Some(len) if (1..=MAX_METHOD).contains(&len) && first[len] == b' ' => {
            match first.get(len + 1) {
                None => Sniff::NeedMore,
                Some(b'/' | b'*') => Sniff::Known(Protocol::Http1),
                Some(b) if b.is_ascii_alphabetic() => Sniff::Known(Protocol::Http1),
                Some(_) => Sniff::Known(Protocol::Other),
            }
        }
        _ => Sniff::Known(Protocol::Other),
    }
}

#[cfg(test)]
mod tests {
    use super::{sniff, Protocol, Sniff, DECISIVE_LEN, H2_PREFACE};

    fn known(bytes: &[u8]) -> Protocol {
        match sniff(bytes) {
            Sniff::Known(p) => p,
            Sniff::NeedMore => panic!("{bytes:?} undecided"),
        }
    }

    #[test]
    fn http1_request_lines() {
        for line in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"POST /api HTTP/1.0\r\n",
            b"OPTIONS * HTTP/1.1\r\n",
            b"CONNECT db:5432 HTTP/1.1\r\n",
            b"GET http://svc/x HTTP/1.1\r\n",
            b"M-SEARCH * HTTP/1.1\r\n",
            b"PROPFIND /dav HTTP/1.1\r\n",
            b"PRI /not-a-preface HTTP/1.1\r\n",
            b"GET /",
        ] {
            assert_eq!(known(line), Protocol::Http1, "{line:?}");
        }
    }

    #[test]
    fn probes() {
        assert_eq!(known(tether_proto::probe::PROBE), Protocol::Probe);
        assert_eq!(sniff(b"\0tether-pro"), Sniff::NeedMore);
        assert_eq!(known(b"\0tether-probe/9\n"), Protocol::Other);
    }

    #[test]
    fn h2_preface() {
        assert_eq!(known(H2_PREFACE), Protocol::Http2);
        let mut with_settings = H2_PREFACE.to_vec();
        with_settings.extend_from_slice(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00");
        assert_eq!(known(&with_settings), Protocol::Http2);
    }

    #[test]
    fn other_protocols() {
        for bytes in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..], // TLS ClientHello
            b"\x00\x00\x00\x08\x04\xd2\x16\x2f",                  // PostgreSQL SSLRequest
            b"*1\r\n$4\r\nPING\r\n",                              // Redis
            b"get / HTTP/1.1\r\n",                                // methods are upper case
            b"GET  / HTTP/1.1\r\n",
            b"GET\t/ HTTP/1.1\r\n",
            b"SSH-2.0-OpenSSH_9.6\r\n",
            b"PRX\x00",
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZ / HTTP/1.1",
        ] {
            assert_eq!(known(bytes), Protocol::Other, "{bytes:?}");
        }
    }

    #[test]
    fn short_prefixes_wait_for_more() {
        for bytes in [
            &b""[..],
            b"G",
            b"GET",
            b"GET ",
            b"PRI",
            b"PRI * HTTP/2.0\r\n\r\nSM",
        ] {
            assert_eq!(sniff(bytes), Sniff::NeedMore, "{bytes:?}");
        }
    }

    #[test]
    fn decides_by_the_decisive_length() {
        // Every prefix of these inputs either decides or is shorter than DECISIVE_LEN.
        let inputs: [&[u8]; 4] = [
            H2_PREFACE,
            b"ABCDEFGHIJKLMNOPQRST /x HTTP/1.1",
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
            b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
        ];
        for input in inputs {
            for len in DECISIVE_LEN..=input.len() {
                assert_ne!(sniff(&input[..len]), Sniff::NeedMore, "{:?}", &input[..len]);
            }
        }
    }
}
