//! The stack under test, in its own network namespace, with trivial handlers: TCP echo on port
//! 7, TCP "sink and count" on port 9 (answers with the byte count as a big-endian u64), "source"
//! on port 19 (reads a big-endian u64 count, sends that many bytes and closes), refusal on any
//! other port, UDP echo on any port.

use std::fs::File;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

use nix::sched::{setns, CloneFlags};
use tether_daemon::netstack::{NetStack, NetStackConfig, TcpListener, TcpStream as StackStream};
use tether_daemon::privileged::tun::{Tun, TunConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A network namespace, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn create() -> Netns {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("tnst-{}-{n}", std::process::id());
        run("ip", &["netns", "add", &name]);
        Netns { name }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Moves the calling thread into namespace `name` (threads it spawns afterwards follow).
fn enter_netns(name: &str) {
    let file = File::open(format!("/run/netns/{name}")).expect("namespace file");
    setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
}

fn run(cmd: &str, args: &[&str]) {
    let status = std::process::Command::new(cmd)
        .args(args)
        .status()
        .expect("command runs");
    assert!(status.success(), "{cmd} {args:?} failed");
}

/// Why these tests cannot run here, if they cannot.
fn unsupported() -> Option<&'static str> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("not root");
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("no /dev/net/tun");
    }
    None
}

/// The stack running in its own namespace, on its own thread and runtime.
pub struct Harness {
    pub stack: Arc<NetStack>,
    stop_tx: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
    ns: Netns,
}

impl Harness {
    /// Starts the stack with a TUN of the given MTU, or says why not (the test then skips).
    pub fn start(mtu: u16) -> Option<Harness> {
        if let Some(why) = unsupported() {
            eprintln!("skipping: {why}");
            return None;
        }
        let ns = Netns::create();
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let ns_name = ns.name.clone();
        let thread = thread::spawn(move || {
            enter_netns(&ns_name);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let tun = Tun::create(&TunConfig {
                    name: format!("tnst-{}", std::process::id()),
                    address: "10.124.0.1/32".parse().expect("valid"),
                    mtu,
                })
                .expect("create TUN");
                tun.add_route("10.123.0.0/16".parse().expect("valid"))
                    .await
                    .expect("add route");
                let (stack, listener, udp) =
                    NetStack::spawn(tun.into_device(), NetStackConfig::new(mtu));
                let stack = Arc::new(stack);
                tokio::spawn(serve_tcp(listener));
                tokio::spawn(async move {
                    let mut udp = udp;
                    while let Some(d) = udp.recv().await {
                        let _ = udp.send(d.dst, d.src, &d.payload).await;
                    }
                });
                ready_tx.send(stack).expect("test waits");
                let _ = stop_rx.await;
            });
        });
        let stack = ready_rx.recv().expect("stack starts");
        Some(Harness {
            stack,
            stop_tx: Some(stop_tx),
            thread: Some(thread),
            ns,
        })
    }

    /// Runs `f` on a thread inside the namespace.
    pub fn client<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let name = self.ns.name.clone();
        thread::spawn(move || {
            enter_netns(&name);
            f()
        })
        .join()
        .expect("client thread")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        drop(self.stop_tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve_tcp(mut listener: TcpListener) {
    while let Some(request) = listener.accept().await {
        match request.dst().port() {
            7 => {
                let stream = request.accept().expect("pending");
                tokio::spawn(echo(stream));
            }
            9 => {
                let stream = request.accept().expect("pending");
                tokio::spawn(sink(stream));
            }
            19 => {
                let stream = request.accept().expect("pending");
                tokio::spawn(source(stream));
            }
            _ => request.refuse(),
        }
    }
}

async fn echo(stream: StackStream) {
    let (mut rx, mut tx) = tokio::io::split(stream);
    let _ = tokio::io::copy(&mut rx, &mut tx).await;
    let _ = tx.shutdown().await;
}

async fn sink(mut stream: StackStream) {
    let mut buf = vec![0; 256 * 1024];
    let mut total: u64 = 0;
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(_) => return,
        }
    }
    let _ = stream.write_all(&total.to_be_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn source(mut stream: StackStream) {
    let Ok(mut left) = stream.read_u64().await else {
        return;
    };
    let buf = vec![0x5a; 256 * 1024];
    while left > 0 {
        let n = buf.len().min(left as usize);
        if stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
        left -= n as u64;
    }
    let _ = stream.shutdown().await;
}
