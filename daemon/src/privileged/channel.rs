//! The channel between the daemon (unprivileged) and its privileged helper: a unix socket pair,
//! one JSON request per line from the daemon, one JSON reply per line from the helper. The
//! reply to [`Request::Tun`] carries the TUN device's file descriptor (`SCM_RIGHTS`).
//!
//! The daemon can ask for exactly six things, and names none of the parameters that matter:
//! the TUN device's name, address and MTU, the DNS server address and the route policy
//! (`--never-proxy`, `--allow-conflicting-subnets`) are the helper's own, from the command line
//! root ran. So a compromised daemon can at worst route more cluster-looking ranges into its
//! own device, and only where no existing route is in the way, and send the names under
//! namespace-like labels (single RFC 1123 labels) to its own DNS server, which under a rewritten
//! resolv.conf sees every name anyway. It may also ask for FUSE mounts for `intercept --mount`
//! (the reply to [`Request::Mount`] carries the `/dev/fuse` descriptor), only on empty
//! directories of the laptop user's (see [`fuse_mount`](super::fuse_mount)), and have them
//! unmounted.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use std::path::PathBuf;

use ipnet::Ipv4Net;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};
use tokio::io::Interest;
use tokio::net::UnixStream;
use tokio::sync::Mutex;

/// The first line the helper sends: what the daemon needs and may not read itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Start {
    /// The kubeconfig's text, for a daemon of root's (it runs as `nobody`, which cannot read
    /// root's file). `None`: the daemon runs as the user who ran `sudo` and reads the user's own.
    pub kubeconfig: Option<String>,
    /// The helper's pid, for `status`.
    pub helper_pid: u32,
}

/// What the daemon asks the helper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum Request {
    /// Create the TUN device (as the helper's command line says) and pass it over.
    Tun,
    /// Route these ranges into the TUN device.
    Routes { add: Vec<Ipv4Net> },
    /// Point the system resolver at the daemon's DNS server, with these search domains first.
    Dns { search: Vec<String> },
    /// The cluster's namespaces now, so names under them (`svc.ns`) reach the daemon's DNS
    /// server. Only systemd-resolved needs telling (routing domains); with a rewritten
    /// resolv.conf every name reaches it already.
    Namespaces { names: Vec<String> },
    /// Mount a FUSE file system at `dir` (a new temporary directory when `None`) and pass its
    /// `/dev/fuse` descriptor over.
    Mount { dir: Option<PathBuf> },
    /// Unmount one of the session's FUSE mounts.
    Unmount { dir: PathBuf },
    /// Let the kernel read ahead on one of the session's FUSE mounts as the helper sets it (after
    /// the daemon's FUSE handshake, which would otherwise cap it).
    ReadAhead { dir: PathBuf },
}

/// The helper's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum Reply {
    Ok,
    Error {
        message: String,
    },
    /// A FUSE mount made: where, and who may use it (its files are shown as theirs).
    Mounted {
        dir: PathBuf,
        uid: u32,
        gid: u32,
    },
}

/// Why a request to the helper failed.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("the privileged helper is gone")]
    Closed,
    #[error("talking to the privileged helper")]
    Io(#[from] std::io::Error),
    #[error("the privileged helper sent a malformed reply")]
    Malformed(#[from] serde_json::Error),
    #[error("the privileged helper sent no TUN device or FUSE descriptor")]
    NoFd,
    #[error("{0}")]
    Refused(String),
}

/// Reads one line from `stream`, with any file descriptor received while reading it. The kernel
/// may deliver a descriptor with bytes of an earlier line, so this is only meaningful because the
/// protocol has one message in flight at a time.
pub(crate) async fn read_line(
    stream: &UnixStream,
    pending: &mut Vec<u8>,
) -> Result<(String, Option<OwnedFd>), ChannelError> {
    let mut fd = None;
    loop {
        if let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            return Ok((text, fd));
        }
        let mut buf = [0u8; 4096];
        let (n, received) = stream
            .async_io(Interest::READABLE, || {
                recv_with_fd(stream.as_raw_fd(), &mut buf)
            })
            .await?;
        if received.is_some() {
            fd = received;
        }
        if n == 0 {
            return Err(ChannelError::Closed);
        }
        pending.extend_from_slice(&buf[..n]);
    }
}

#[allow(unsafe_code)] // Adopting a received descriptor has no safe form in nix.
fn recv_with_fd(socket: RawFd, buf: &mut [u8]) -> std::io::Result<(usize, Option<OwnedFd>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        socket,
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    let mut fd = None;
    for cmsg in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for raw in fds {
                // SAFETY: the kernel just installed `raw` in this process for this message;
                // nothing else refers to it, so it is owned here (and closed if unused).
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                if fd.is_none() {
                    fd = Some(owned);
                }
            }
        }
    }
    Ok((msg.bytes, fd))
}

/// Writes one line, with `fd` alongside if given.
pub(crate) async fn write_line(
    stream: &UnixStream,
    line: &str,
    fd: Option<RawFd>,
) -> Result<(), ChannelError> {
    let mut data = line.as_bytes().to_vec();
    data.push(b'\n');
    let mut sent = 0;
    while sent < data.len() {
        let chunk = &data[sent..];
        // The descriptor goes with the first byte only.
        let fds: Vec<RawFd> = if sent == 0 {
            fd.into_iter().collect()
        } else {
            Vec::new()
        };
        let n = stream
            .async_io(Interest::WRITABLE, || {
                let iov = [IoSlice::new(chunk)];
                let cmsgs: Vec<ControlMessage<'_>> = if fds.is_empty() {
                    Vec::new()
                } else {
                    vec![ControlMessage::ScmRights(&fds)]
                };
                sendmsg::<()>(
                    stream.as_raw_fd(),
                    &iov,
                    &cmsgs,
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(std::io::Error::from)
            })
            .await?;
        sent += n;
    }
    Ok(())
}

/// A FUSE mount the helper made for the daemon.
#[derive(Debug)]
pub struct FuseMount {
    pub dir: PathBuf,
    pub uid: u32,
    pub gid: u32,
    /// The `/dev/fuse` descriptor the mount is served on.
    pub fuse: OwnedFd,
}

/// The daemon's handle on its helper. Requests are answered in order, one at a time.
#[derive(Debug)]
pub struct Helper {
    inner: Mutex<(UnixStream, Vec<u8>)>,
}

impl Helper {
    /// Wraps the daemon's end of the socket pair (its stdin) and reads the [`Start`] line.
    pub async fn connect(stream: UnixStream) -> Result<(Helper, Start), ChannelError> {
        let mut pending = Vec::new();
        let (line, _) = read_line(&stream, &mut pending).await?;
        let start: Start = serde_json::from_str(&line)?;
        Ok((
            Helper {
                inner: Mutex::new((stream, pending)),
            },
            start,
        ))
    }

    async fn ask(&self, request: &Request) -> Result<Option<OwnedFd>, ChannelError> {
        self.ask_reply(request).await.map(|(_, fd)| fd)
    }

    async fn ask_reply(&self, request: &Request) -> Result<(Reply, Option<OwnedFd>), ChannelError> {
        let mut inner = self.inner.lock().await;
        let (stream, pending) = &mut *inner;
        write_line(stream, &serde_json::to_string(request)?, None).await?;
        let (line, fd) = read_line(stream, pending).await?;
        match serde_json::from_str::<Reply>(&line)? {
            Reply::Error { message } => Err(ChannelError::Refused(message)),
            reply => Ok((reply, fd)),
        }
    }

    /// A FUSE mount at `dir` (or a new temporary directory): where it is, the laptop user's
    /// uid and gid, and the `/dev/fuse` descriptor to serve it on.
    pub async fn mount(&self, dir: Option<PathBuf>) -> Result<FuseMount, ChannelError> {
        match self.ask_reply(&Request::Mount { dir }).await? {
            (Reply::Mounted { dir, uid, gid }, Some(fuse)) => Ok(FuseMount {
                dir,
                uid,
                gid,
                fuse,
            }),
            (_, _) => Err(ChannelError::NoFd),
        }
    }

    /// Raises the kernel's read-ahead on one of this session's FUSE mounts.
    pub async fn read_ahead(&self, dir: PathBuf) -> Result<(), ChannelError> {
        self.ask(&Request::ReadAhead { dir }).await.map(drop)
    }

    /// Unmounts one of this session's FUSE mounts.
    pub async fn unmount(&self, dir: PathBuf) -> Result<(), ChannelError> {
        self.ask(&Request::Unmount { dir }).await.map(drop)
    }

    /// The TUN device, created by the helper.
    pub async fn tun(&self) -> Result<OwnedFd, ChannelError> {
        self.ask(&Request::Tun).await?.ok_or(ChannelError::NoFd)
    }

    /// Routes `add` into the TUN device.
    pub async fn add_routes(&self, add: Vec<Ipv4Net>) -> Result<(), ChannelError> {
        self.ask(&Request::Routes { add }).await.map(drop)
    }

    /// Points the system resolver at the daemon's DNS server.
    pub async fn set_dns(&self, search: Vec<String>) -> Result<(), ChannelError> {
        self.ask(&Request::Dns { search }).await.map(drop)
    }

    /// Sends the cluster's namespaces (see [`Request::Namespaces`]).
    pub async fn route_namespaces(&self, names: Vec<String>) -> Result<(), ChannelError> {
        self.ask(&Request::Namespaces { names }).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_is_stable_json() {
        let routes = Request::Routes {
            add: vec!["10.96.0.0/16".parse().unwrap()],
        };
        assert_eq!(
            serde_json::to_string(&routes).unwrap(),
            r#"{"request":"routes","add":["10.96.0.0/16"]}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::Tun).unwrap(),
            r#"{"request":"tun"}"#
        );
        assert!(serde_json::from_str::<Request>(r#"{"request":"exec","cmd":"sh"}"#).is_err());
    }

    #[tokio::test]
    async fn lines_and_a_descriptor_cross_the_pair() {
        let (a, b) = UnixStream::pair().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        // One message at a time, as the protocol goes (a reply is read before the next request
        // is sent, so a descriptor can only belong to the line being read).
        write_line(&a, "first", None).await.unwrap();
        let mut pending = Vec::new();
        let (line, fd) = read_line(&b, &mut pending).await.unwrap();
        assert_eq!((line.as_str(), fd.is_some()), ("first", false));
        write_line(&a, "second", Some(file.as_raw_fd()))
            .await
            .unwrap();
        let (line, fd) = read_line(&b, &mut pending).await.unwrap();
        assert_eq!((line.as_str(), fd.is_some()), ("second", true));
        drop(a);
        // A closed peer is an error, not an empty line.
        assert!(matches!(
            read_line(&b, &mut pending).await,
            Err(ChannelError::Closed)
        ));
    }
}
