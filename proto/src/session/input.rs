//! What arrives on the control stream: the handshake, keep-alive, answers and the rest.

use std::time::Instant;

use super::{CloseReason, Event, Reply, Session, SessionError, State};
use crate::frame::{DecodeError, Decoded};
use crate::message::{Message, Pong};
use crate::PROTOCOL_VERSION;

impl Session {
    /// Bytes received on the control stream, in any pieces.
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) {
        if self.is_closed() || bytes.is_empty() {
            return;
        }
        self.last_input = now;
        self.decoder.push(bytes);
        // Frames are taken as they complete, so what stays buffered is less than one frame.
        while !self.is_closed() {
            let Some(item) = self.decoder.poll() else {
                break;
            };
            match item {
                Ok(Decoded::Message(msg)) => self.on_message(now, msg),
                Ok(Decoded::Unknown { .. }) => {} // from a newer peer
                Err(error) if error.is_fatal() => self.fail(SessionError::Decode(error)),
                Err(error) => self.on_malformed(error),
            }
        }
    }

    /// The peer ended the stream (its FIN).
    pub fn handle_end(&mut self) {
        if self.is_closed() {
            return;
        }
        match self.decoder.finish() {
            Err(error) => self.fail(SessionError::Decode(error)),
            Ok(()) if self.state == State::Established => self.close_with(CloseReason::Finished),
            Ok(()) => self.fail(SessionError::Ended),
        }
    }

    fn on_message(&mut self, now: Instant, msg: Message) {
        let kind = msg.kind();
        match (self.state, msg) {
            // Either way, at any time.
            (_, Message::Bye(_)) => self.close_with(CloseReason::Bye),
            (State::AwaitingWelcome, Message::Error(error)) => {
                self.fail(SessionError::Refused(error))
            }
            (_, Message::Error(error)) => self.fail(SessionError::PeerError(error)),

            // The handshake.
            (State::AwaitingHello, Message::Hello(hello)) => {
                self.handshake_deadline = None;
                if hello.version != PROTOCOL_VERSION {
                    return self.fail(SessionError::Version {
                        peer: hello.version,
                    });
                }
                self.state = State::AwaitingAccept;
                self.events.push_back(Event::Hello(hello));
            }
            (State::AwaitingHello, _) => self.fail(SessionError::Unexpected {
                expected: "Hello",
                kind,
            }),
            (State::AwaitingWelcome, Message::Welcome(welcome)) => {
                if welcome.version != PROTOCOL_VERSION {
                    return self.fail(SessionError::Version {
                        peer: welcome.version,
                    });
                }
                self.establish(now);
                self.events.push_back(Event::Established(welcome));
            }
            (State::AwaitingWelcome, _) => self.fail(SessionError::Unexpected {
                expected: "Welcome",
                kind,
            }),
            // Once is enough.
            (_, Message::Hello(_) | Message::Welcome(_)) => {}

            // Keep-alive. A server answers only once its Welcome is out.
            (State::Established, Message::Ping(ping)) => {
                if self.queued_pongs < self.config.max_queued_pongs {
                    self.queued_pongs += 1;
                    let _ = self.queue(&Pong { seq: ping.seq }.into());
                }
            }
            (_, Message::Ping(_) | Message::Pong(_)) => {}

            // Answers to our requests.
            (_, Message::DnsAnswer(m)) => self.on_reply(m.into()),
            (_, Message::InterceptReply(m)) => self.on_reply(m.into()),
            (_, Message::AgentCredentialReply(m)) => self.on_reply(m.into()),

            (_, msg) => self.events.push_back(Event::Message(msg)),
        }
    }

    fn on_reply(&mut self, reply: Reply) {
        let (id, kind) = (reply.id(), reply.kind());
        if self.pending.answer(id, kind) {
            self.events.push_back(Event::Reply { id, reply });
        } else {
            self.events.push_back(Event::Unmatched { kind, id });
        }
    }

    fn on_malformed(&mut self, error: DecodeError) {
        let DecodeError::Malformed { kind, .. } = error else {
            unreachable!("only Malformed is not fatal")
        };
        // During the handshake nothing can be skipped: the frame is the handshake's (and the
        // peer would wait for an answer for ever) or has no business coming first.
        let expected = match self.state {
            State::AwaitingHello => "Hello",
            State::AwaitingWelcome => "Welcome",
            _ => return self.events.push_back(Event::Skipped { kind, error }),
        };
        self.fail(SessionError::BadHandshake {
            expected,
            source: error,
        })
    }
}
