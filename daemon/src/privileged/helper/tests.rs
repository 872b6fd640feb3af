use super::*;
use crate::privileged::runtime_dir::StateDir;

/// A helper's configuration over a scratch resolv.conf holding `resolv`.
fn fixture(name: &str, resolv: &str) -> (PathBuf, HelperConfig) {
    let dir = std::env::temp_dir().join(format!("tether-helper-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("resolv.conf"), resolv).unwrap();
    let config = HelperConfig {
        tun: TunConfig {
            name: "tether0".into(),
            address: "198.18.0.1/30".parse().unwrap(),
            mtu: 1500,
        },
        dns: "198.18.0.2".parse().unwrap(),
        routes: RoutePolicy::default(),
        resolv_conf: dir.join("resolv.conf"),
        runtime_dir: dir.join("run"),
        kubeconfig: None,
    };
    (dir, config)
}

fn dns_request(search: &[&str]) -> String {
    let search = search.iter().map(|s| s.to_string()).collect();
    serde_json::to_string(&Request::Dns { search }).unwrap()
}

#[tokio::test]
async fn dns_is_set_once_per_session() {
    let original = "nameserver 10.0.0.53\nsearch corp.example\n";
    let (dir, config) = fixture("once", original);
    let live = &config.resolv_conf;
    let resolv = ResolvConfFile::new(live, StateDir::open(&config.runtime_dir).unwrap());
    let mut state = State::new(&config, &resolv);
    let request = dns_request(&[
        "default.svc.cluster.local",
        "svc.cluster.local",
        "cluster.local",
    ]);
    assert_eq!(state.handle(&request).await.0, Reply::Ok);
    let installed = std::fs::read_to_string(live).unwrap();
    assert!(installed.contains("nameserver 198.18.0.2"), "{installed}");
    // A second request would back up tether's own file; it is refused and changes nothing.
    let (reply, _) = state.handle(&request).await;
    assert!(
        matches!(&reply, Reply::Error { message } if message.contains("once per session")),
        "{reply:?}"
    );
    assert_eq!(std::fs::read_to_string(live).unwrap(), installed);
    // What quit does: the machine's own file comes back, not tether's.
    assert!(state.dns_installed);
    resolv.restore().unwrap();
    assert_eq!(std::fs::read_to_string(live).unwrap(), original);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn tld_like_search_domains_are_refused() {
    let (dir, config) = fixture("tld", "nameserver 10.0.0.53\n");
    let live = &config.resolv_conf;
    let resolv = ResolvConfFile::new(live, StateDir::open(&config.runtime_dir).unwrap());
    let mut state = State::new(&config, &resolv);
    let (reply, _) = state
        .handle(&dns_request(&["default.svc.com", "svc.com", "com"]))
        .await;
    assert!(
        matches!(&reply, Reply::Error { message } if message.contains("single label")),
        "{reply:?}"
    );
    assert_eq!(
        std::fs::read_to_string(live).unwrap(),
        "nameserver 10.0.0.53\n"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn routes_wait_for_the_device_and_go_through_the_policy() {
    let (dir, config) = fixture("routes", "nameserver 10.0.0.53\n");
    let resolv = ResolvConfFile::new(
        &config.resolv_conf,
        StateDir::open(&config.runtime_dir).unwrap(),
    );
    let mut state = State::new(&config, &resolv);
    let routes = |add: &[&str]| {
        serde_json::to_string(&Request::Routes {
            add: add.iter().map(|a| a.parse().unwrap()).collect(),
        })
        .unwrap()
    };
    let (reply, _) = state.handle(&routes(&["10.96.0.0/16"])).await;
    assert!(
        matches!(&reply, Reply::Error { message } if message.contains("no TUN")),
        "{reply:?}"
    );
    // Checked before anything runs: no `ip` command for a refused batch.
    state.tun_created = true;
    let (reply, _) = state.handle(&routes(&["10.96.0.0/16", "0.0.0.0/1"])).await;
    assert!(
        matches!(&reply, Reply::Error { message } if message.contains("broader than /8")),
        "{reply:?}"
    );
    assert!(state.routed.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn namespaces_are_validated_and_change_nothing_without_resolved() {
    let original = "nameserver 10.0.0.53\n";
    let (dir, config) = fixture("namespaces", original);
    let live = &config.resolv_conf;
    let resolv = ResolvConfFile::new(live, StateDir::open(&config.runtime_dir).unwrap());
    let mut state = State::new(&config, &resolv);
    let namespaces = |names: &[&str]| {
        serde_json::to_string(&Request::Namespaces {
            names: names.iter().map(|n| n.to_string()).collect(),
        })
        .unwrap()
    };
    // With a rewritten resolv.conf every name reaches the daemon already: nothing to do.
    let (reply, _) = state.handle(&namespaces(&["default", "ext"])).await;
    assert_eq!(reply, Reply::Ok);
    // The attack: a "namespace" that would smuggle an option or a dotted domain in.
    for bad in ["--set-dns=1.1.1.1", "corp.example", "~com", ""] {
        let (reply, _) = state.handle(&namespaces(&["default", bad])).await;
        assert!(
            matches!(&reply, Reply::Error { message } if message.contains("not a valid DNS domain")),
            "{bad:?}: {reply:?}"
        );
    }
    assert!(state.resolved.is_none());
    assert_eq!(std::fs::read_to_string(live).unwrap(), original);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The attack: a compromised daemon of root's (it runs as `nobody`) asks for a FUSE mount on an
/// empty directory the system trusts (an `/etc/sudoers.d`), on root's own non-empty one, on a
/// path through a link, or to unmount something not its own. Each is refused, nothing is
/// mounted, and the replies say why.
#[tokio::test]
async fn mount_requests_that_could_change_what_root_trusts_are_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the helper's checks for root's daemon need root");
        return;
    }
    let (dir, config) = fixture("mounts", "nameserver 10.0.0.53\n");
    let resolv = ResolvConfFile::new(
        &config.resolv_conf,
        StateDir::open(&config.runtime_dir).unwrap(),
    );
    let mut state = State::new(&config, &resolv);
    state.mounts = Some((
        Mounts::new(Owner { uid: 0, gid: 0 }),
        StateDir::open(&config.runtime_dir).unwrap(),
    ));
    // An empty root-owned directory outside the scratch places, like /etc/sudoers.d.
    let trusted = PathBuf::from(format!(
        "/var/lib/tether-test-sudoers-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&trusted).unwrap();
    let link = dir.join("link");
    std::os::unix::fs::symlink(&trusted, &link).unwrap();
    let mount = |dir: &Path| {
        serde_json::to_string(&Request::Mount {
            dir: Some(dir.to_owned()),
        })
        .unwrap()
    };
    for (asked, why) in [
        (
            trusted.as_path(),
            "for root, mount directories must be under /tmp",
        ),
        (
            Path::new("/etc"),
            "for root, mount directories must be under /tmp",
        ),
        // The fixture's directory, in /tmp, holds the scratch resolv.conf.
        (dir.as_path(), "is not empty"),
        (link.as_path(), "is a symbolic link or not a directory"),
        (Path::new("etc/x"), "not an absolute path"),
    ] {
        let (reply, fd) = state.handle(&mount(asked)).await;
        assert!(
            matches!(&reply, Reply::Error { message } if message.contains(why)),
            "{asked:?}: {reply:?}"
        );
        assert!(fd.is_none());
        assert!(!fuse_mount::is_mounted_fuse(asked), "{asked:?} mounted");
    }
    let unmount = serde_json::to_string(&Request::Unmount {
        dir: PathBuf::from("/proc"),
    })
    .unwrap();
    let (reply, _) = state.handle(&unmount).await;
    assert!(
        matches!(&reply, Reply::Error { message } if message.contains("not one of this session's mounts")),
        "{reply:?}"
    );
    std::fs::remove_dir(&trusted).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
