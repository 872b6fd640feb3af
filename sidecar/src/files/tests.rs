use std::collections::HashMap;

use tether_proto::files::{FileOk, FileOp, FileRequest, OpenFiles};
use tether_proto::Ping;
use tokio::io::{DuplexStream, ReadHalf, WriteHalf};

use super::*;
use crate::files::testdir::TestDir;

/// A test directory with `vol` served at `/data`, holding `file-<i>` of `i` bytes for i < 20.
fn served() -> (TestDir, Arc<Server>) {
    let dir = TestDir::new();
    std::fs::create_dir(dir.join("vol")).unwrap();
    for i in 0..20 {
        std::fs::write(dir.join(&format!("vol/file-{i}")), vec![b'x'; i]).unwrap();
    }
    let mount = Mount::new("/data", dir.join("vol"), false).unwrap();
    let server = Server::new(Mounts::new(vec![mount]).unwrap());
    (dir, Arc::new(server))
}

/// The laptop's end of a file stream.
struct Client {
    read: ReadHalf<DuplexStream>,
    write: WriteHalf<DuplexStream>,
}

impl Client {
    /// A stream to `serve_stream`, running on its own task.
    fn connect(server: Arc<Server>) -> (Self, tokio::task::JoinHandle<()>) {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let (read, write) = tokio::io::split(ours);
        let served = tokio::spawn(async move {
            let (recv, send) = tokio::io::split(theirs);
            serve_stream(server, "orders-1", send, recv).await
        });
        (Self { read, write }, served)
    }

    async fn send(&mut self, message: Message) {
        framed::write_message(&mut self.write, &message)
            .await
            .unwrap();
    }

    async fn request(&mut self, id: u32, op: FileOp) {
        self.send(Message::FileRequest(FileRequest { id, op }))
            .await;
    }

    async fn next(&mut self) -> Option<Message> {
        framed::read_message(&mut self.read).await.unwrap()
    }

    async fn reply(&mut self) -> FileReply {
        match self.next().await {
            Some(Message::FileReply(reply)) => reply,
            other => panic!("{other:?}"),
        }
    }

    /// Opens the stream and returns the agent's answer.
    async fn open(&mut self) -> OpenFilesResult {
        self.send(Message::OpenFiles(OpenFiles { intercept: 7 }))
            .await;
        match self.next().await {
            Some(Message::OpenFilesResult(result)) => result,
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_stream_is_answered_with_the_pod_and_its_mounts() {
    let (_dir, server) = served();
    let (mut client, _served) = Client::connect(server);
    let info = client.open().await.result.unwrap();
    assert_eq!(
        info,
        FilesInfo {
            pod: "orders-1".into(),
            mounts: vec!["/data".into()]
        }
    );
}

#[tokio::test]
async fn an_agent_without_volumes_refuses_the_stream() {
    let (mut client, served) = Client::connect(Arc::new(Server::empty()));
    let error = client.open().await.result.unwrap_err();
    assert_eq!(error.code, ErrorCode::NotPermitted);
    assert!(error.message.contains("uninstall and intercept again"));
    assert_eq!(client.next().await, None, "the agent ends the stream");
    served.await.unwrap();
}

#[tokio::test]
async fn requests_sent_at_once_get_their_own_answers() {
    let (_dir, server) = served();
    let (mut client, _served) = Client::connect(server);
    client.open().await.result.unwrap();
    for i in 0..20u32 {
        let path = format!("/data/file-{i}");
        client.request(i, FileOp::Stat { path }).await;
        if i == 10 {
            // Other messages are skipped.
            client.send(Message::Ping(Ping { seq: 1 })).await;
        }
    }
    client
        .request(
            99,
            FileOp::Stat {
                path: "/data/absent".into(),
            },
        )
        .await;
    let mut sizes = HashMap::new();
    for _ in 0..21 {
        let reply = client.reply().await;
        sizes.insert(reply.id, reply.result);
    }
    for i in 0..20u32 {
        match &sizes[&i] {
            Ok(FileOk::Attr(attr)) => assert_eq!(attr.size, u64::from(i)),
            other => panic!("{i}: {other:?}"),
        }
    }
    assert_eq!(
        sizes[&99].as_ref().unwrap_err().kind,
        FileErrorKind::NotFound
    );
}

/// Whether this process has `path` open.
fn is_open(path: &std::path::Path) -> bool {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .any(|target| target == path)
}

#[tokio::test]
async fn handles_are_the_streams_own_and_close_with_it() {
    let (dir, server) = served();
    let (mut first, first_served) = Client::connect(server.clone());
    let (mut second, _second_served) = Client::connect(server);
    first.open().await.result.unwrap();
    second.open().await.result.unwrap();
    let open = FileOp::Open {
        path: "/data/file-5".into(),
        write: false,
        truncate: false,
    };
    first.request(1, open).await;
    let handle = match first.reply().await.result {
        Ok(FileOk::Opened { handle, .. }) => handle,
        other => panic!("{other:?}"),
    };
    let path = dir.join("vol/file-5");
    assert!(is_open(&path));

    let read = FileOp::Read {
        handle,
        offset: 0,
        len: 100,
    };
    second.request(1, read.clone()).await;
    let reply = second.reply().await;
    assert_eq!(reply.result.unwrap_err().kind, FileErrorKind::BadHandle);
    first.request(2, read).await;
    assert_eq!(
        first.reply().await.result,
        Ok(FileOk::Data(b"xxxxx".to_vec()))
    );

    // The laptop closes its side: the agent finishes its own, and the file is closed.
    first.write.shutdown().await.unwrap();
    assert_eq!(first.next().await, None);
    first_served.await.unwrap();
    assert!(!is_open(&path));
}
