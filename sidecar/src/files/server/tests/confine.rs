//! Nothing in a mount makes the agent touch a file outside it: each attack runs with `openat2`
//! and with the walk that replaces it on older kernels.

use super::*;

fn both(test: fn(&Fixture)) {
    test(&Fixture::new());
    test(&Fixture::with(Server::walking));
}

/// `outside` holds exactly `secret`, unchanged.
fn untouched(f: &Fixture) {
    let names: Vec<_> = std::fs::read_dir(f.dir.join("outside"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["secret"]);
    assert_eq!(f.content("outside/secret"), "secret");
    let meta = std::fs::metadata(f.dir.join("outside/secret")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    assert_ne!(meta.mtime(), 1);
}

/// Every operation through the directory link `/data/<link>` is refused.
fn refused_through(f: &Fixture, link: &str) {
    let at = |rel: &str| format!("/data/{link}/{rel}");
    let ops = [
        create(&at("x"), true),
        create(&at("secret"), false),
        open(&at("secret"), false),
        open(&at("secret"), true),
        stat(&at("secret")),
        read_dir(&format!("/data/{link}")),
        set_size(&at("secret"), 0),
        set_perm(&at("secret"), 0o777),
        set_mtime(&at("secret"), 1),
        unlink(&at("secret")),
        mkdir(&at("d")),
        symlink("x", &at("s")),
        rename(&at("secret"), "/data/stolen", false),
        rename("/data/hello.txt", &at("planted"), false),
        FileOp::ReadLink { path: at("secret") },
    ];
    for op in ops {
        let kind = f.fails(op.clone());
        assert!(
            matches!(kind, Kind::TooManyLinks | Kind::NotADirectory),
            "{op:?}: {kind:?}"
        );
    }
    assert!(f.handles.is_empty());
    assert!(!f.dir.join("vol/stolen").exists());
    assert_eq!(f.content("vol/hello.txt"), "hello, world\n");
    untouched(f);
}

#[test]
fn an_absolute_link_to_a_directory_outside_is_not_followed() {
    both(|f| {
        std::os::unix::fs::symlink(f.dir.join("outside"), f.dir.join("vol/evil")).unwrap();
        refused_through(f, "evil");
        assert_eq!(f.fails(rmdir("/data/evil")), Kind::NotADirectory);
        untouched(f);
    });
}

#[test]
fn a_relative_link_out_of_the_mount_is_not_followed() {
    both(|f| {
        std::os::unix::fs::symlink("../outside", f.dir.join("vol/rel")).unwrap();
        refused_through(f, "rel");
    });
}

#[test]
fn a_link_to_a_directory_inside_the_mount_is_not_followed_either() {
    both(|f| {
        std::fs::create_dir(f.dir.join("vol/sub")).unwrap();
        std::fs::write(f.dir.join("vol/sub/f"), "f").unwrap();
        std::os::unix::fs::symlink("sub", f.dir.join("vol/inner")).unwrap();
        let kind = f.fails(stat("/data/inner/f"));
        assert!(matches!(kind, Kind::TooManyLinks | Kind::NotADirectory));
        assert_eq!(f.attr(stat("/data/sub/f")).size, 1);
    });
}

#[test]
fn a_link_to_a_file_outside_is_never_opened_or_changed() {
    both(|f| {
        let secret = f.dir.join("outside/secret");
        std::os::unix::fs::symlink(&secret, f.dir.join("vol/steal")).unwrap();
        assert_eq!(f.fails(open("/data/steal", false)), Kind::TooManyLinks);
        assert_eq!(f.fails(open("/data/steal", true)), Kind::TooManyLinks);
        assert_eq!(f.fails(create("/data/steal", false)), Kind::TooManyLinks);
        assert_eq!(f.fails(create("/data/steal", true)), Kind::Exists);
        assert_eq!(f.fails(set_size("/data/steal", 0)), Kind::TooManyLinks);
        let kind = f.fails(read_dir("/data/steal"));
        assert!(matches!(kind, Kind::TooManyLinks | Kind::NotADirectory));
        // A link's mode is left alone; its times are its own.
        assert_eq!(
            f.attr(set_perm("/data/steal", 0o777)).kind,
            FileKind::Symlink
        );
        assert_eq!(f.attr(set_mtime("/data/steal", 1)).mtime.secs, 1);
        assert!(f.handles.is_empty());
        untouched(f);
        assert_eq!(f.op(unlink("/data/steal")), Ok(FileOk::Done));
        assert!(!f.dir.join("vol/steal").exists());
        untouched(f);
    });
}

#[test]
fn dot_dot_and_unnormalized_paths_are_invalid() {
    both(|f| {
        for path in [
            "/data/../outside/secret",
            "/data/..",
            "/data/./hello.txt",
            "/data//hello.txt",
            "/data/",
            "data/hello.txt",
            "",
            "/data/hello.txt\0",
        ] {
            assert_eq!(f.fails(stat(path)), Kind::Invalid, "{path:?}");
            assert_eq!(f.fails(create(path, true)), Kind::Invalid, "{path:?}");
        }
        let escape = rename("/data/hello.txt", "/data/../outside/x", false);
        assert_eq!(f.fails(escape), Kind::Invalid);
        assert_eq!(f.fails(mkdir("/data/../outside/d")), Kind::Invalid);
        untouched(f);
        // A link's target is only text: it may say anything, and is never followed.
        assert_eq!(
            f.attr(symlink("../../outside/secret", "/data/up")).kind,
            FileKind::Symlink
        );
        assert_eq!(f.fails(open("/data/up", true)), Kind::TooManyLinks);
        untouched(f);
    });
}
