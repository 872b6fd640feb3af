use std::collections::HashMap;

use tether_proto::files::{FileOk, FileOp, FileRequest, OpenFiles};
use tether_proto::Ping;
use tokio::io::{DuplexStream, ReadHalf, WriteHalf};

use super::*;
use crate::files::testdir::TestDir;

/// A test directory with `vol` served at `/data` for container `app`, holding `file-<i>` of `i`
/// bytes for i < 20; and `cache-vol`, with `cache-only`, served at `/data` for container `cache`.
fn served() -> (TestDir, Arc<Volumes>) {
    let dir = TestDir::new();
    std::fs::create_dir(dir.join("vol")).unwrap();
    for i in 0..20 {
        std::fs::write(dir.join(&format!("vol/file-{i}")), vec![b'x'; i]).unwrap();
    }
    std::fs::create_dir(dir.join("cache-vol")).unwrap();
    std::fs::write(dir.join("cache-vol/cache-only"), b"c").unwrap();
    let table = format!(
        r#"[{{"container": "app", "path": "/data", "source": "{}"}},
            {{"container": "cache", "path": "/data", "source": "{}", "readOnly": true}}]"#,
        dir.join("vol").display(),
        dir.join("cache-vol").display()
    );
    let volumes = Volumes::new(Tables::parse(&table).unwrap());
    (dir, Arc::new(volumes))
}

/// The laptop's end of a file stream.
struct Client {
    read: ReadHalf<DuplexStream>,
    write: WriteHalf<DuplexStream>,
}

impl Client {
    /// A stream to `serve_stream`, running on its own task.
    fn connect(server: Arc<Volumes>) -> (Self, tokio::task::JoinHandle<()>) {
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

    /// Opens the stream for container `app` and returns the agent's answer.
    async fn open(&mut self) -> OpenFilesResult {
        self.open_for("app").await
    }

    /// Opens the stream for `container` and returns the agent's answer.
    async fn open_for(&mut self, container: &str) -> OpenFilesResult {
        let open = OpenFiles {
            intercept: 7,
            container: container.into(),
        };
        self.send(Message::OpenFiles(open)).await;
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
    let (mut client, served) = Client::connect(Arc::new(Volumes::default()));
    let error = client.open().await.result.unwrap_err();
    assert_eq!(error.code, ErrorCode::NotPermitted);
    assert!(error.message.contains("uninstall and intercept again"));
    assert_eq!(client.next().await, None, "the agent ends the stream");
    served.await.unwrap();
}

/// A pod's containers may mount different volumes at one path: a stream gets the container's it
/// names, and nothing for a container the agent serves nothing of.
#[tokio::test]
async fn each_container_is_served_its_own_volumes() {
    let (_dir, volumes) = served();
    let stat = |path: &str| FileOp::Stat { path: path.into() };
    let (mut app, _a) = Client::connect(volumes.clone());
    let (mut cache, _c) = Client::connect(volumes.clone());
    assert_eq!(app.open().await.result.unwrap().mounts, ["/data"]);
    assert_eq!(
        cache.open_for("cache").await.result.unwrap().mounts,
        ["/data"]
    );
    cache.request(1, stat("/data/cache-only")).await;
    assert!(cache.reply().await.result.is_ok());
    app.request(1, stat("/data/cache-only")).await;
    assert_eq!(
        app.reply().await.result.unwrap_err().kind,
        FileErrorKind::NotFound
    );
    cache.request(2, stat("/data/file-3")).await;
    assert_eq!(
        cache.reply().await.result.unwrap_err().kind,
        FileErrorKind::NotFound
    );
    // Read-only is the container's own mount's.
    cache
        .request(
            3,
            FileOp::Unlink {
                path: "/data/cache-only".into(),
            },
        )
        .await;
    assert_eq!(
        cache.reply().await.result.unwrap_err().kind,
        FileErrorKind::ReadOnly
    );

    let (mut other, served) = Client::connect(volumes);
    let error = other.open_for("init").await.result.unwrap_err();
    assert_eq!(error.code, ErrorCode::NotPermitted);
    assert_eq!(other.next().await, None, "the agent ends the stream");
    served.await.unwrap();
}

/// An agent installed by a tether that did not tell containers apart has a table without them:
/// it serves that table whichever container a stream names.
#[tokio::test]
async fn a_table_without_containers_is_served_to_any() {
    let (dir, _) = served();
    let table = format!(
        r#"[{{"path": "/data", "source": "{}"}}]"#,
        dir.join("vol").display()
    );
    let volumes = Arc::new(Volumes::new(Tables::parse(&table).unwrap()));
    for container in ["app", "cache"] {
        let (mut client, _served) = Client::connect(volumes.clone());
        let info = client.open_for(container).await.result.unwrap();
        assert_eq!(info.mounts, ["/data"], "{container}");
    }
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
