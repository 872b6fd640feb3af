//! The I/O around the [`Scheduler`]: the NFQUEUE socket, the signals that end a run, and the
//! timer of the next release. Read, feed, poll, verdict.
//!
//! Two NFQUEUE sockets, one per direction, each in the network namespace where its packets
//! arrive (see [`crate::iptables`] for why): the host's for [`Direction::Up`], the workstation
//! namespace's for [`Direction::Down`] (a socket stays in the namespace it was made in, so the
//! thread enters that namespace to make it and comes back).
//!
//! One thread, one loop: wait (`ppoll`) until a packet arrives, a signal comes, or the earliest
//! held packet is due; take in every packet waiting; accept every packet whose time has come.
//! On SIGINT or SIGTERM the rules go first (no new packets), then every held packet is accepted
//! at once, and the run's counts come back as a [`Report`].

use std::{
    collections::HashSet,
    fs::File,
    io::{Read, Seek, SeekFrom},
    os::fd::{AsFd, BorrowedFd, RawFd},
    time::{Duration, Instant},
};

use nix::{
    poll::{ppoll, PollFd, PollFlags},
    sched::{setns, CloneFlags},
    sys::{
        signal::{SigSet, Signal},
        signalfd::SignalFd,
        socket::{setsockopt, sockopt},
        time::TimeSpec,
    },
};
use serde_json::json;

use crate::{
    iptables::{Place, Rule, RulesError},
    profile::Profile,
    sched::{Direction, DirectionStats, Scheduler},
};

/// What a run needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The host side of the link (a veth), in this process's network namespace.
    pub iface: String,
    /// The network namespace on the far side of the link (`ip netns` name) and its interface.
    pub netns: String,
    pub peer_iface: String,
    /// The queue number on the host side; the namespace side uses the next one.
    pub queue_num: u16,
    pub profile: Profile,
    /// The most packets the emulator holds at once; more are dropped and counted.
    pub max_held: usize,
    /// The kernel's queue length per queue (`--queue-maxlen`); more are dropped by the kernel,
    /// and counted there.
    pub kernel_maxlen: u32,
    /// The seed of the random draws.
    pub seed: u64,
}

/// The counts of a run.
#[derive(Debug, Clone)]
pub struct Report {
    pub up: DirectionStats,
    pub down: DirectionStats,
    /// Dropped by the kernel because a queue was full (its `queue_dropped`).
    pub kernel_dropped: u64,
    /// Dropped by the kernel because our socket's buffer was full (its `queue_user_dropped`).
    pub kernel_user_dropped: u64,
    /// Verdicts the kernel refused.
    pub verdict_errors: u64,
}

impl Report {
    pub fn to_json(&self) -> serde_json::Value {
        let dir = |s: &DirectionStats| {
            json!({
                "packets": s.packets,
                "bytes": s.bytes,
                "lost": s.lost,
                "buffer_full": s.buffer_full,
                "overflow": s.overflow,
                "reordered": s.reordered,
                "max_queueing_us": s.max_queueing.as_micros() as u64,
            })
        };
        json!({
            "up": dir(&self.up),
            "down": dir(&self.down),
            "kernel_dropped": self.kernel_dropped,
            "kernel_user_dropped": self.kernel_user_dropped,
            "verdict_errors": self.verdict_errors,
        })
    }

    /// Packets dropped because the emulator could not hold them (its own limit, the kernel's
    /// queue, the socket's buffer): not part of the profile, so a run with any is suspect.
    pub fn overflow(&self) -> u64 {
        self.up.overflow + self.down.overflow + self.kernel_dropped + self.kernel_user_dropped
    }
}

/// An NFQUEUE socket with its file descriptor (which the `nfq` crate does not expose), and its
/// namespace's kernel counters.
struct Socket {
    queue: nfq::Queue,
    fd: RawFd,
    queue_num: u16,
    /// `/proc/net/netfilter/nfnetlink_queue`, opened in the socket's namespace (a /proc/net file
    /// keeps the namespace it was opened in).
    counters: Option<File>,
}

impl Socket {
    /// Opens a socket in the current namespace, bound to `queue_num`.
    fn open(queue_num: u16, kernel_maxlen: u32) -> Result<Socket, RunError> {
        let before = socket_fds()?;
        let queue = nfq::Queue::open().map_err(RunError::Open)?;
        let after = socket_fds()?;
        let mut new = after.difference(&before);
        let fd = match (new.next(), new.next()) {
            (Some(fd), None) => *fd,
            _ => return Err(RunError::SocketFd),
        };
        let mut sock = Socket {
            queue,
            fd,
            queue_num,
            counters: File::open("/proc/net/netfilter/nfnetlink_queue").ok(),
        };
        let bind = |s: &mut Socket| -> std::io::Result<()> {
            s.queue.bind(queue_num)?;
            // Headers are enough: the size comes from the original length.
            s.queue.set_copy_range(queue_num, 64)?;
            s.queue.set_queue_max_len(queue_num, kernel_maxlen)?;
            s.queue.set_fail_open(queue_num, false)
        };
        bind(&mut sock).map_err(|source| RunError::Bind {
            queue: queue_num,
            source,
        })?;
        sock.queue.set_nonblocking(true);
        // Room for a burst of queued packets between two reads (the kernel doubles it).
        if let Err(e) = setsockopt(&sock.fd(), sockopt::RcvBufForce, &(16 << 20)) {
            tracing::warn!(error = %e, "Could not enlarge the socket's receive buffer");
        }
        Ok(sock)
    }

    fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: `fd` is the netlink socket `queue` opened (the one socket that appeared across
        // `Queue::open`), and `queue` closes it only when dropped, which the borrow of `self`
        // prevents for the life of the returned value.
        #[allow(unsafe_code)]
        unsafe {
            BorrowedFd::borrow_raw(self.fd)
        }
    }

    /// The kernel's (queue full, socket buffer full) drop counts for this socket's queue.
    fn kernel_drops(&mut self) -> (u64, u64) {
        let mut text = String::new();
        if let Some(f) = &mut self.counters {
            if f.seek(SeekFrom::Start(0)).is_ok() {
                let _ = f.read_to_string(&mut text);
            }
        }
        parse_kernel_drops(&text, self.queue_num)
    }
}

/// Runs `f` with this thread in network namespace `netns`, then comes back.
fn in_netns<T>(netns: &str, f: impl FnOnce() -> T) -> Result<T, RunError> {
    let enter = |path: &str| -> Result<(), RunError> {
        let ns = File::open(path).map_err(|source| RunError::Netns {
            path: path.to_owned(),
            source: source.into(),
        })?;
        setns(ns, CloneFlags::CLONE_NEWNET).map_err(|source| RunError::Netns {
            path: path.to_owned(),
            source: source.into(),
        })
    };
    let home = File::open("/proc/thread-self/ns/net").map_err(|source| RunError::Netns {
        path: "/proc/thread-self/ns/net".into(),
        source: source.into(),
    })?;
    enter(&format!("/run/netns/{netns}"))?;
    let out = f();
    setns(home, CloneFlags::CLONE_NEWNET).map_err(|source| RunError::Netns {
        path: "/proc/thread-self/ns/net".into(),
        source: source.into(),
    })?;
    Ok(out)
}

/// The socket descriptors of this process.
fn socket_fds() -> Result<HashSet<RawFd>, RunError> {
    let dir = std::fs::read_dir("/proc/self/fd").map_err(RunError::Proc)?;
    let mut fds = HashSet::new();
    for entry in dir.flatten() {
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        if let (true, Some(fd)) = (
            is_socket,
            entry.file_name().to_str().and_then(|n| n.parse().ok()),
        ) {
            fds.insert(fd);
        }
    }
    Ok(fds)
}

/// Blocks SIGINT and SIGTERM for this thread and returns a descriptor that reads them; call it
/// before starting any thread, so that every thread inherits the mask.
pub fn block_signals() -> Result<SignalFd, RunError> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGTERM);
    mask.thread_block().map_err(RunError::Signals)?;
    SignalFd::new(&mask).map_err(RunError::Signals)
}

/// A held packet and the socket it came from (its verdict goes back there).
#[derive(Debug)]
struct Packet {
    dir: Direction,
    msg: nfq::Message,
}

/// Runs the emulator until SIGINT or SIGTERM arrives on `signals`; `ready` is called once the
/// rules are in place.
pub fn run(cfg: &Config, signals: &SignalFd, ready: impl FnOnce()) -> Result<Report, RunError> {
    cfg.profile.validate().map_err(RunError::Profile)?;
    let down_queue = cfg.queue_num.checked_add(1).ok_or(RunError::QueueNum)?;
    // Releases are due at 60 µs steps at 200 Mbit/s: the default 50 µs timer slack would blur
    // them.
    if let Err(e) = nix::sys::prctl::set_timerslack(1_000) {
        tracing::warn!(error = %e, "Could not lower the timer slack");
    }
    let mut socks = [
        Socket::open(cfg.queue_num, cfg.kernel_maxlen)?,
        in_netns(&cfg.netns, || Socket::open(down_queue, cfg.kernel_maxlen))??,
    ];
    let mut sched: Scheduler<Packet> = Scheduler::new(cfg.profile, cfg.max_held, cfg.seed);
    let host = Place {
        netns: None,
        iface: cfg.iface.clone(),
    };
    let peer = Place {
        netns: Some(cfg.netns.clone()),
        iface: cfg.peer_iface.clone(),
    };
    let rules = [
        Rule::install(&host, cfg.queue_num).map_err(RunError::Rules)?,
        Rule::install(&peer, down_queue).map_err(RunError::Rules)?,
    ];
    tracing::info!(iface = %cfg.iface, netns = %cfg.netns, profile = %cfg.profile, "Emulating");
    ready();
    let mut verdict_errors = 0u64;
    let mut warned_overflow = 0u64;
    let mut next_check = Instant::now();
    loop {
        let timeout = sched
            .next_release()
            .map_or(IDLE_WAKEUP, |at| {
                at.saturating_duration_since(Instant::now())
            })
            .min(IDLE_WAKEUP);
        let (readable, signal) = {
            let mut fds = [
                PollFd::new(socks[0].fd(), PollFlags::POLLIN),
                PollFd::new(socks[1].fd(), PollFlags::POLLIN),
                PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            ];
            match ppoll(&mut fds, Some(TimeSpec::from_duration(timeout)), None) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(RunError::Poll(e)),
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            ([ready(&fds[0]), ready(&fds[1])], ready(&fds[2]))
        };
        if signal {
            break;
        }
        for (i, dir) in [Direction::Up, Direction::Down].into_iter().enumerate() {
            if !readable[i] {
                continue;
            }
            // Bounded, so that a flood does not starve the releases.
            for _ in 0..1024 {
                let msg = match socks[i].queue.recv() {
                    Ok(msg) => msg,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(RunError::Recv(e)),
                };
                let size = msg.get_original_len();
                if let Err(dropped) = sched.push(Instant::now(), dir, size, Packet { dir, msg }) {
                    let mut msg = dropped.packet.msg;
                    msg.set_verdict(nfq::Verdict::Drop);
                    verdict_errors += u64::from(socks[i].queue.verdict(msg).is_err());
                }
            }
        }
        let now = Instant::now();
        while let Some(p) = sched.poll_release(now) {
            // A message's verdict is Accept unless set otherwise.
            verdict_errors += u64::from(socks[p.dir.index()].queue.verdict(p.msg).is_err());
        }
        if now >= next_check {
            next_check = now + Duration::from_secs(1);
            let report = report(&sched, &mut socks, verdict_errors);
            if report.overflow() > warned_overflow {
                warned_overflow = report.overflow();
                tracing::warn!(
                    emulator = report.up.overflow + report.down.overflow,
                    kernel = report.kernel_dropped + report.kernel_user_dropped,
                    "Packets dropped because a queue was full"
                );
            }
        }
    }
    // No new packets, then the held ones go at once.
    let removed: Vec<_> = rules.into_iter().map(Rule::remove).collect();
    let held: Vec<Packet> = sched.drain().collect();
    for p in held {
        verdict_errors += u64::from(socks[p.dir.index()].queue.verdict(p.msg).is_err());
    }
    let report = report(&sched, &mut socks, verdict_errors);
    for r in removed {
        r.map_err(RunError::Rules)?;
    }
    Ok(report)
}

/// How long the loop sleeps with nothing held (it wakes for packets and signals anyway).
const IDLE_WAKEUP: Duration = Duration::from_millis(200);

fn report<T>(sched: &Scheduler<T>, socks: &mut [Socket; 2], verdict_errors: u64) -> Report {
    let (mut kernel_dropped, mut kernel_user_dropped) = (0, 0);
    for s in socks {
        let (full, user) = s.kernel_drops();
        kernel_dropped += full;
        kernel_user_dropped += user;
    }
    Report {
        up: sched.stats(Direction::Up),
        down: sched.stats(Direction::Down),
        kernel_dropped,
        kernel_user_dropped,
        verdict_errors,
    }
}

/// The kernel's drop counts for queue `queue_num` in `/proc/net/netfilter/nfnetlink_queue`:
/// queue number, peer port id, queue total, copy mode, copy range, queue dropped, user dropped,
/// last id, 1.
fn parse_kernel_drops(text: &str, queue_num: u16) -> (u64, u64) {
    text.lines()
        .filter_map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect();
            (f.len() >= 7 && f[0] == u64::from(queue_num)).then(|| (f[5], f[6]))
        })
        .fold((0, 0), |(a, b), (x, y)| (a + x, b + y))
}

/// A run that could not start or went wrong.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The profile is not usable.
    #[error("bad profile")]
    Profile(#[source] crate::profile::ProfileError),
    /// The NFQUEUE socket could not be opened (is this root?).
    #[error("could not open an NFQUEUE socket (the emulator needs root)")]
    Open(#[source] std::io::Error),
    /// The socket that `Queue::open` made could not be told apart.
    #[error("could not find the NFQUEUE socket's descriptor")]
    SocketFd,
    /// /proc could not be read.
    #[error("could not list /proc/self/fd")]
    Proc(#[source] std::io::Error),
    /// A queue number is taken, or the kernel refused its settings.
    #[error("could not bind NFQUEUE queue {queue} (another emulator on it?)")]
    Bind {
        queue: u16,
        #[source]
        source: std::io::Error,
    },
    /// The queue number leaves no room for the namespace side's.
    #[error("the queue number must be below 65535 (the namespace side uses the next one)")]
    QueueNum,
    /// A network namespace could not be entered or left.
    #[error("could not enter network namespace {path}")]
    Netns {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Signals could not be set up.
    #[error("could not block SIGINT and SIGTERM")]
    Signals(#[source] nix::Error),
    /// The rules could not be added or removed.
    #[error("iptables rules")]
    Rules(#[source] RulesError),
    /// Waiting failed.
    #[error("ppoll failed")]
    Poll(#[source] nix::Error),
    /// Reading a packet failed.
    #[error("reading from the NFQUEUE socket failed")]
    Recv(#[source] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::parse_kernel_drops;

    #[test]
    fn reads_the_kernel_drop_counts_of_our_queues() {
        let text = "    0  12345     0 2 65531     0     0        0  1\n\
                    7100  23456     3 2    64    10     2     5000  1\n\
                    7101  23456     0 2    64     1     0     4000  1\n\
                    7102  99999     0 2    64   500   500      100  1\n";
        assert_eq!(parse_kernel_drops(text, 7100), (10, 2));
        assert_eq!(parse_kernel_drops(text, 7101), (1, 0));
        assert_eq!(parse_kernel_drops("", 7100), (0, 0));
    }
}
