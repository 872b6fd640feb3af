//! `intercept --mount` through the real manager and agent: the holder of an intercept reads
//! and writes the pod's volumes on a file stream; nobody else can open one.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use tether_daemon::files::{FileClient, OpenFilesError};
use tether_harness::servers;
use tether_harness::Agent;
use tether_proto::files::{FileErrorKind, FileOk, FileOp};
use tether_proto::ErrorCode;
use tether_sidecar::files::{Mount, Mounts, Tables, Volumes};

use crate::intercept::{orders_pod, personal, APP_IP};
use crate::support::{Result, World};

/// A directory standing for the pod's volume, removed at the end.
struct Volume(std::path::PathBuf);

impl Volume {
    fn new(name: &str) -> Volume {
        let path =
            std::env::temp_dir().join(format!("tether-harness-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Volume(path)
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Opens `path` on `files` and reads its first 4 KiB: (its size at the open, the bytes).
async fn read_whole(files: &FileClient, path: &str) -> (u64, Vec<u8>) {
    let opened = files
        .call(FileOp::Open {
            path: path.into(),
            write: false,
            truncate: false,
        })
        .await
        .expect("open");
    let FileOk::Opened { handle, attr } = opened else {
        panic!("{opened:?}")
    };
    let read = files
        .call(FileOp::Read {
            handle,
            offset: 0,
            len: 4096,
        })
        .await
        .expect("read");
    let FileOk::Data(data) = read else {
        panic!("{read:?}")
    };
    (attr.size, data)
}

#[tokio::test]
async fn only_the_intercepts_holder_reads_and_writes_the_pods_volumes() -> Result {
    let world = World::start().await?;
    let config = Volume::new("config");
    let data = Volume::new("data");
    std::fs::write(config.0.join("app.yaml"), b"port: 8080\n").unwrap();
    let mounts = Mounts::new(vec![
        Mount::new("/etc/orders", &config.0, true).unwrap(),
        Mount::new("/data", &data.0, false).unwrap(),
    ])
    .unwrap();
    // The pod's second container mounts another volume at the same path.
    let cache_config = Volume::new("cache-config");
    std::fs::write(cache_config.0.join("app.yaml"), b"port: 6379\n").unwrap();
    let cache_mounts = Mounts::new(vec![
        Mount::new("/etc/orders", &cache_config.0, true).unwrap()
    ])
    .unwrap();
    let mut tables = Tables::default();
    tables.insert(Some("app"), mounts);
    tables.insert(Some("cache"), cache_mounts);
    let app = servers::http(IpAddr::V4(APP_IP), "app").await?;
    let laptop = servers::http(IpAddr::V4(Ipv4Addr::LOCALHOST), "laptop").await?;
    let credential = world.manager.agent_credential("shop")?;
    let agent = Agent::start_with_files(
        world.manager.addr(),
        &credential,
        orders_pod(&world),
        app.addr(),
        Arc::new(Volumes::new(tables)),
    )
    .await?;
    let info = world
        .alice
        .intercept(personal(app.addr().port()), laptop.addr())
        .await?;
    agent.routing(&[info.id]).await?;

    // Alice, who holds the intercept, sees the pod's mounts and reads a file.
    let session = world.alice.session()?;
    let (files, served) = FileClient::open(session.connection(), info.id, "app")
        .await
        .expect("the holder opens the pod's files");
    assert_eq!(served.pod, "orders-1");
    assert_eq!(served.mounts, ["/data", "/etc/orders"]);
    let (size, text) = read_whole(&files, "/etc/orders/app.yaml").await;
    assert_eq!(size, 11);
    assert_eq!(text, b"port: 8080\n");

    // A write where the app's mount allows it lands in the pod; where not, nothing changes.
    let created = files
        .call(FileOp::Create {
            path: "/data/from-laptop".into(),
            perm: 0o644,
            exclusive: true,
        })
        .await
        .expect("create");
    let FileOk::Opened { handle, .. } = created else {
        panic!("{created:?}")
    };
    files
        .call(FileOp::Write {
            handle,
            offset: 0,
            data: b"hello pod".to_vec(),
        })
        .await
        .expect("write");
    files.call(FileOp::Close { handle }).await.expect("close");
    assert_eq!(
        std::fs::read(data.0.join("from-laptop")).unwrap(),
        b"hello pod"
    );
    let refused = files
        .call(FileOp::Unlink {
            path: "/etc/orders/app.yaml".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.kind, FileErrorKind::ReadOnly);
    assert!(config.0.join("app.yaml").exists());

    // The other container's volumes, on a stream of their own: the same path, its own file.
    let (cache_files, served) = FileClient::open(session.connection(), info.id, "cache")
        .await
        .expect("the holder opens the other container's files");
    assert_eq!(served.mounts, ["/etc/orders"]);
    let (_, text) = read_whole(&cache_files, "/etc/orders/app.yaml").await;
    assert_eq!(text, b"port: 6379\n");

    // The attack: Bob is connected too and knows Alice's intercept id. The manager refuses him
    // before any agent sees the stream.
    world.api.allow_everything("bob");
    let bob_credential = world.manager.session_credential("bob", &["devs"])?;
    let bob = tether_harness::Workstation::connect(&world.manager, &bob_credential, "shop").await?;
    let bob_session = bob.session()?;
    match FileClient::open(bob_session.connection(), info.id, "app").await {
        Err(OpenFilesError::Refused(e)) => {
            assert_eq!(e.code, ErrorCode::NotPermitted);
            assert_eq!(
                e.message,
                format!("intercept {} is not one of this session's", info.id)
            );
        }
        other => panic!("bob opened alice's files: {other:?}"),
    }
    Ok(())
}
