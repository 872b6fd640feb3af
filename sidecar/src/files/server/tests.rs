use std::os::unix::fs::{MetadataExt, PermissionsExt};

use tether_proto::files::{FileErrorKind as Kind, FsStats, MAX_IO};

use super::*;
use crate::files::mounts::Mount;
use crate::files::testdir::TestDir;

mod confine;

/// A test directory with the mounts' sources (`vol` at `/data`, `nested` at `/data/nested`,
/// `ro` read-only at `/etc/config`, `other` at `/var/other`, a missing one at `/opt/missing`)
/// and `outside/secret`, in no mount.
pub(super) struct Fixture {
    pub dir: TestDir,
    pub server: Server,
    pub handles: Handles,
}

impl Fixture {
    pub fn new() -> Self {
        Self::with(Server::new)
    }

    pub fn with(make: fn(Mounts) -> Server) -> Self {
        let dir = TestDir::new();
        for d in ["vol", "ro", "other", "nested", "outside"] {
            std::fs::create_dir(dir.join(d)).unwrap();
        }
        std::fs::write(dir.join("vol/hello.txt"), "hello, world\n").unwrap();
        std::fs::write(dir.join("ro/app.yaml"), "port: 8080\n").unwrap();
        std::fs::create_dir(dir.join("ro/sub")).unwrap();
        std::fs::write(dir.join("outside/secret"), "secret").unwrap();
        let mode = std::fs::Permissions::from_mode(0o644);
        std::fs::set_permissions(dir.join("outside/secret"), mode).unwrap();
        let mount = |path, source: &str, read_only| Mount::new(path, dir.join(source), read_only);
        let mounts = Mounts::new(vec![
            mount("/data", "vol", false).unwrap(),
            mount("/data/nested", "nested", false).unwrap(),
            mount("/etc/config", "ro", true).unwrap(),
            mount("/var/other", "other", false).unwrap(),
            mount("/opt/missing", "missing", false).unwrap(),
        ])
        .unwrap();
        Self {
            server: make(mounts),
            dir,
            handles: Handles::default(),
        }
    }

    pub fn op(&self, op: FileOp) -> Result<FileOk, FileError> {
        self.server.handle(&self.handles, op)
    }

    /// The kind of error `op` fails with.
    pub fn fails(&self, op: FileOp) -> Kind {
        match self.op(op.clone()) {
            Err(error) => error.kind,
            Ok(ok) => panic!("{op:?} succeeded: {ok:?}"),
        }
    }

    pub fn attr(&self, op: FileOp) -> FileAttr {
        match self.op(op.clone()) {
            Ok(FileOk::Attr(attr)) => attr,
            other => panic!("{op:?}: {other:?}"),
        }
    }

    pub fn opened(&self, op: FileOp) -> (u64, FileAttr) {
        match self.op(op.clone()) {
            Ok(FileOk::Opened { handle, attr }) => (handle, attr),
            other => panic!("{op:?}: {other:?}"),
        }
    }

    pub fn read(&self, handle: u64, offset: u64, len: u32) -> Vec<u8> {
        match self.op(FileOp::Read {
            handle,
            offset,
            len,
        }) {
            Ok(FileOk::Data(data)) => data,
            other => panic!("read: {other:?}"),
        }
    }

    pub fn names(&self, path: &str) -> Vec<(String, FileKind)> {
        match self.op(read_dir(path)) {
            Ok(FileOk::Entries(entries)) => {
                entries.into_iter().map(|e| (e.name, e.attr.kind)).collect()
            }
            other => panic!("readdir {path}: {other:?}"),
        }
    }

    /// `rel`'s content in the test directory.
    pub fn content(&self, rel: &str) -> String {
        std::fs::read_to_string(self.dir.join(rel)).unwrap()
    }
}

pub(super) fn stat(path: &str) -> FileOp {
    FileOp::Stat { path: path.into() }
}

pub(super) fn read_dir(path: &str) -> FileOp {
    FileOp::ReadDir { path: path.into() }
}

pub(super) fn open(path: &str, write: bool) -> FileOp {
    FileOp::Open {
        path: path.into(),
        write,
        truncate: false,
    }
}

pub(super) fn create(path: &str, exclusive: bool) -> FileOp {
    FileOp::Create {
        path: path.into(),
        perm: 0o644,
        exclusive,
    }
}

pub(super) fn write(handle: u64, offset: u64, data: &[u8]) -> FileOp {
    FileOp::Write {
        handle,
        offset,
        data: data.to_vec(),
    }
}

pub(super) fn set_size(path: &str, size: u64) -> FileOp {
    FileOp::SetAttr {
        path: path.into(),
        size: Some(size),
        perm: None,
        atime: None,
        mtime: None,
    }
}

pub(super) fn set_perm(path: &str, perm: u32) -> FileOp {
    FileOp::SetAttr {
        path: path.into(),
        size: None,
        perm: Some(perm),
        atime: None,
        mtime: None,
    }
}

pub(super) fn set_mtime(path: &str, secs: i64) -> FileOp {
    FileOp::SetAttr {
        path: path.into(),
        size: None,
        perm: None,
        atime: None,
        mtime: Some(Timestamp { secs, nanos: 5 }),
    }
}

pub(super) fn mkdir(path: &str) -> FileOp {
    FileOp::Mkdir {
        path: path.into(),
        perm: 0o755,
    }
}

pub(super) fn unlink(path: &str) -> FileOp {
    FileOp::Unlink { path: path.into() }
}

pub(super) fn rmdir(path: &str) -> FileOp {
    FileOp::Rmdir { path: path.into() }
}

pub(super) fn rename(from: &str, to: &str, noreplace: bool) -> FileOp {
    FileOp::Rename {
        from: from.into(),
        to: to.into(),
        noreplace,
    }
}

pub(super) fn symlink(target: &str, path: &str) -> FileOp {
    FileOp::Symlink {
        target: target.into(),
        path: path.into(),
    }
}

#[test]
fn a_missing_source_is_left_out() {
    let f = Fixture::new();
    assert_eq!(
        f.server.mounts().container_paths(),
        ["/data", "/data/nested", "/etc/config", "/var/other"]
    );
    assert_eq!(f.fails(stat("/opt/missing")), Kind::NotFound);
    assert_eq!(f.fails(stat("/opt")), Kind::NotFound);
}

#[test]
fn created_files_are_written_read_and_closed() {
    let f = Fixture::new();
    let (handle, attr) = f.opened(create("/data/notes.txt", true));
    assert_eq!((attr.kind, attr.size), (FileKind::File, 0));
    assert_eq!(
        f.op(write(handle, 0, b"hello tether")),
        Ok(FileOk::Written(12))
    );
    assert_eq!(f.read(handle, 6, 100), b"tether");
    assert_eq!(f.op(FileOp::Fsync { handle }), Ok(FileOk::Done));
    assert_eq!(f.op(FileOp::Close { handle }), Ok(FileOk::Done));
    assert_eq!(f.content("vol/notes.txt"), "hello tether");
    assert!(f.handles.is_empty());

    assert_eq!(f.fails(FileOp::Close { handle }), Kind::BadHandle);
    assert_eq!(f.fails(FileOp::Fsync { handle }), Kind::BadHandle);
    assert_eq!(f.fails(create("/data/notes.txt", true)), Kind::Exists);
    let (again, _) = f.opened(create("/data/notes.txt", false));
    assert!(again > handle, "handles are never reused");
    assert_eq!(f.read(again, 0, 5), b"hello", "create does not truncate");

    let (reading, attr) = f.opened(open("/data/notes.txt", false));
    assert_eq!(attr.size, 12);
    assert_eq!(f.fails(write(reading, 0, b"x")), Kind::BadHandle);
    assert_eq!(f.content("vol/notes.txt"), "hello tether");

    let (writing, _) = f.opened(FileOp::Open {
        path: "/data/notes.txt".into(),
        write: true,
        truncate: true,
    });
    assert_eq!(f.content("vol/notes.txt"), "");
    f.op(write(writing, 3, b"abc")).unwrap();
    assert_eq!(f.read(writing, 0, 10), b"\0\0\0abc");
    assert_eq!(f.handles.len(), 3);
}

#[test]
fn reads_and_writes_are_bounded_by_max_io() {
    let f = Fixture::new();
    let size = MAX_IO as usize + 10;
    std::fs::write(f.dir.join("vol/big"), vec![7u8; size]).unwrap();
    let (handle, attr) = f.opened(open("/data/big", true));
    assert_eq!(attr.size, size as u64);
    assert_eq!(f.read(handle, 0, u32::MAX).len(), MAX_IO as usize);
    assert_eq!(f.read(handle, u64::from(MAX_IO), MAX_IO), vec![7u8; 10]);
    assert!(f.read(handle, size as u64 + 1, 10).is_empty());
    let too_long = vec![1u8; MAX_IO as usize + 1];
    assert_eq!(f.fails(write(handle, 0, &too_long)), Kind::Invalid);
    assert_eq!(f.fails(write(99, 0, b"x")), Kind::BadHandle);
}

#[test]
fn only_regular_files_are_opened() {
    let f = Fixture::new();
    std::os::unix::fs::symlink("hello.txt", f.dir.join("vol/link")).unwrap();
    nix::unistd::mkfifo(&f.dir.join("vol/fifo"), Mode::from_bits_truncate(0o644)).unwrap();
    assert_eq!(f.fails(open("/data/link", false)), Kind::TooManyLinks);
    assert_eq!(f.fails(open("/data/fifo", false)), Kind::Invalid);
    assert_eq!(f.fails(create("/data/fifo", false)), Kind::Invalid);
    assert_eq!(f.fails(open("/data", false)), Kind::IsADirectory);
    assert_eq!(f.fails(open("/data/nested", false)), Kind::IsADirectory);
    assert_eq!(f.fails(open("/etc", false)), Kind::IsADirectory);
    assert_eq!(f.fails(open("/data/absent", false)), Kind::NotFound);
    std::fs::create_dir(f.dir.join("vol/dir")).unwrap();
    assert_eq!(f.fails(open("/data/dir", false)), Kind::IsADirectory);
    assert!(f.handles.is_empty());
}

#[test]
fn set_attr_truncates_chmods_and_sets_times() {
    let f = Fixture::new();
    let attr = f.attr(set_size("/data/hello.txt", 5));
    assert_eq!(attr.size, 5);
    assert_eq!(f.content("vol/hello.txt"), "hello");

    let attr = f.attr(set_perm("/data/hello.txt", 0o600));
    assert_eq!(attr.perm, 0o600);
    let meta = std::fs::metadata(f.dir.join("vol/hello.txt")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);

    let attr = f.attr(FileOp::SetAttr {
        path: "/data/hello.txt".into(),
        size: None,
        perm: None,
        atime: Some(Timestamp {
            secs: 1_000_000,
            nanos: 7,
        }),
        mtime: Some(Timestamp {
            secs: 2_000_000,
            nanos: 9,
        }),
    });
    assert_eq!(
        (attr.atime, attr.mtime),
        (
            Timestamp {
                secs: 1_000_000,
                nanos: 7
            },
            Timestamp {
                secs: 2_000_000,
                nanos: 9
            }
        )
    );
    let meta = std::fs::metadata(f.dir.join("vol/hello.txt")).unwrap();
    assert_eq!(meta.mtime(), 2_000_000);
    assert_eq!(
        f.attr(set_mtime("/data/hello.txt", 3)).atime.secs,
        1_000_000,
        "an absent time is left as it is"
    );

    // The mount's root itself, and a directory.
    assert_eq!(f.attr(set_mtime("/data", 42)).mtime.secs, 42);
    assert_eq!(f.fails(set_size("/data", 0)), Kind::IsADirectory);
    std::fs::create_dir(f.dir.join("vol/dir")).unwrap();
    assert_eq!(f.attr(set_perm("/data/dir", 0o700)).perm, 0o700);
    assert_eq!(f.fails(set_size("/data/dir", 0)), Kind::IsADirectory);
    let bad_nanos = FileOp::SetAttr {
        path: "/data/hello.txt".into(),
        size: None,
        perm: None,
        atime: None,
        mtime: Some(Timestamp {
            secs: 0,
            nanos: 1_000_000_000,
        }),
    };
    assert_eq!(f.fails(bad_nanos), Kind::Invalid);
}

#[test]
fn directories_are_made_and_removed() {
    let f = Fixture::new();
    let attr = f.attr(mkdir("/data/d"));
    assert_eq!(attr.kind, FileKind::Directory);
    assert!(f.dir.join("vol/d").is_dir());
    assert_eq!(f.fails(mkdir("/data/d")), Kind::Exists);
    assert_eq!(f.fails(mkdir("/data")), Kind::Exists);
    assert_eq!(f.fails(mkdir("/data/absent/d")), Kind::NotFound);
    let (handle, _) = f.opened(create("/data/d/f", true));
    f.op(FileOp::Close { handle }).unwrap();
    assert_eq!(f.fails(rmdir("/data/d")), Kind::NotEmpty);
    assert_eq!(f.fails(unlink("/data/d")), Kind::IsADirectory);
    assert_eq!(f.fails(rmdir("/data/d/f")), Kind::NotADirectory);
    assert_eq!(f.op(unlink("/data/d/f")), Ok(FileOk::Done));
    assert_eq!(f.op(rmdir("/data/d")), Ok(FileOk::Done));
    assert!(!f.dir.join("vol/d").exists());
    assert_eq!(f.fails(unlink("/data/d")), Kind::NotFound);
    assert_eq!(f.fails(rmdir("/data")), Kind::NotPermitted);
    assert_eq!(f.fails(rmdir("/data/nested")), Kind::NotPermitted);
    assert!(f.dir.join("vol").is_dir() && f.dir.join("nested").is_dir());
}

#[test]
fn renames_replace_unless_told_not_to_and_stay_in_their_mount() {
    let f = Fixture::new();
    std::fs::write(f.dir.join("vol/a"), "a").unwrap();
    std::fs::write(f.dir.join("vol/b"), "b").unwrap();
    assert_eq!(f.fails(rename("/data/a", "/data/b", true)), Kind::Exists);
    assert_eq!(f.content("vol/b"), "b");
    assert_eq!(f.op(rename("/data/a", "/data/b", false)), Ok(FileOk::Done));
    assert_eq!(f.content("vol/b"), "a");
    assert_eq!(f.op(rename("/data/b", "/data/c", true)), Ok(FileOk::Done));
    assert!(!f.dir.join("vol/b").exists());

    assert_eq!(
        f.fails(rename("/data/c", "/var/other/c", false)),
        Kind::CrossesMounts
    );
    assert_eq!(
        f.fails(rename("/data/c", "/data/nested/c", false)),
        Kind::CrossesMounts
    );
    assert_eq!(f.fails(rename("/data/c", "/var/c", false)), Kind::ReadOnly);
    assert_eq!(
        f.fails(rename("/data", "/data2", false)),
        Kind::NotPermitted
    );
    assert_eq!(
        f.fails(rename("/data/c", "/data", false)),
        Kind::NotPermitted
    );
    assert_eq!(f.content("vol/c"), "a");
    assert!(!f.dir.join("other/c").exists());
}

#[test]
fn links_are_made_and_read_verbatim_never_followed() {
    let f = Fixture::new();
    let attr = f.attr(symlink("..data/hello.txt", "/data/link"));
    assert_eq!(attr.kind, FileKind::Symlink);
    assert_eq!(
        f.op(FileOp::ReadLink {
            path: "/data/link".into()
        }),
        Ok(FileOk::Target("..data/hello.txt".into()))
    );
    assert_eq!(f.attr(stat("/data/link")).kind, FileKind::Symlink);
    assert_eq!(f.fails(symlink("x", "/data/link")), Kind::Exists);
    assert_eq!(f.fails(symlink("", "/data/empty")), Kind::Invalid);
    for not_a_link in ["/data/hello.txt", "/data", "/"] {
        let op = FileOp::ReadLink {
            path: not_a_link.into(),
        };
        assert_eq!(f.fails(op), Kind::Invalid, "{not_a_link}");
    }
    // A link's own times are set, its target's are not.
    let before = f.attr(stat("/data/hello.txt")).mtime;
    assert_eq!(f.attr(set_mtime("/data/link", 77)).mtime.secs, 77);
    assert_eq!(f.attr(stat("/data/hello.txt")).mtime, before);
    assert_eq!(
        f.attr(set_perm("/data/link", 0o600)).kind,
        FileKind::Symlink
    );
}

#[test]
fn directories_list_their_entries_with_attributes() {
    let f = Fixture::new();
    std::fs::create_dir(f.dir.join("vol/dir")).unwrap();
    std::os::unix::fs::symlink("dir", f.dir.join("vol/link")).unwrap();
    std::fs::write(f.dir.join("nested/inside"), "").unwrap();
    let entries = match f.op(read_dir("/data")) {
        Ok(FileOk::Entries(entries)) => entries,
        other => panic!("{other:?}"),
    };
    let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["dir", "hello.txt", "link", "nested"]);
    assert_eq!(entries[1].attr.size, 13);
    assert_eq!(entries[1].attr, f.attr(stat("/data/hello.txt")));
    assert_eq!(entries[2].attr.kind, FileKind::Symlink);
    assert_eq!(
        entries[3].attr,
        f.attr(stat("/data/nested")),
        "a nested mount shows its own root"
    );
    assert_eq!(f.names("/data/nested"), [("inside".into(), FileKind::File)]);
    assert_eq!(f.fails(read_dir("/data/hello.txt")), Kind::NotADirectory);
    assert_eq!(f.fails(read_dir("/data/absent")), Kind::NotFound);
}

#[test]
fn directories_above_the_mounts_are_read_only() {
    let f = Fixture::new();
    assert_eq!(f.attr(stat("/")), VIRTUAL_DIR);
    assert_eq!(f.attr(stat("/var")), VIRTUAL_DIR);
    let dir = FileKind::Directory;
    assert_eq!(
        f.names("/"),
        [
            ("data".into(), dir),
            ("etc".into(), dir),
            ("var".into(), dir)
        ]
    );
    let entries = match f.op(read_dir("/var")) {
        Ok(FileOk::Entries(entries)) => entries,
        other => panic!("{other:?}"),
    };
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].name, "other");
    assert_eq!(
        entries[0].attr,
        f.attr(stat("/var/other")),
        "the mount's root"
    );
    assert_ne!(entries[0].attr, VIRTUAL_DIR);

    for op in [
        create("/etc/passwd", true),
        mkdir("/etc/new"),
        mkdir("/etc"),
        symlink("x", "/new"),
        unlink("/etc"),
        rmdir("/var"),
        set_perm("/", 0o777),
        open("/etc", true),
        rename("/etc", "/etc2", false),
    ] {
        assert_eq!(f.fails(op.clone()), Kind::ReadOnly, "{op:?}");
    }
    assert_eq!(f.fails(stat("/etc/passwd")), Kind::NotFound);
    assert_eq!(f.fails(create("/usr/x", true)), Kind::NotFound);
    assert_eq!(f.fails(unlink("/etc/passwd")), Kind::NotFound);
    assert_eq!(f.fails(read_dir("/usr")), Kind::NotFound);
}

#[test]
fn statfs_reports_the_mounts_file_system() {
    let f = Fixture::new();
    let stats = match f.op(FileOp::StatFs {
        path: "/data/hello.txt".into(),
    }) {
        Ok(FileOk::Stats(stats)) => stats,
        other => panic!("{other:?}"),
    };
    assert!(stats.bsize > 0 && stats.namelen > 0, "{stats:?}");
    let virtual_fs = f.op(FileOp::StatFs { path: "/".into() });
    assert!(matches!(
        virtual_fs,
        Ok(FileOk::Stats(FsStats { blocks: 0, .. }))
    ));
    let outside = FileOp::StatFs {
        path: "/usr".into(),
    };
    assert_eq!(f.fails(outside), Kind::NotFound);
}

#[test]
fn a_read_only_mount_refuses_every_change() {
    let f = Fixture::new();
    let (handle, attr) = f.opened(open("/etc/config/app.yaml", false));
    assert_eq!(attr.size, 11);
    assert_eq!(f.read(handle, 0, 4), b"port");
    assert_eq!(f.fails(write(handle, 0, b"PORT")), Kind::BadHandle);
    for op in [
        open("/etc/config/app.yaml", true),
        create("/etc/config/new", true),
        create("/etc/config/app.yaml", false),
        set_size("/etc/config/app.yaml", 0),
        set_perm("/etc/config/app.yaml", 0o777),
        set_mtime("/etc/config/app.yaml", 1),
        set_mtime("/etc/config", 1),
        mkdir("/etc/config/d"),
        unlink("/etc/config/app.yaml"),
        rmdir("/etc/config/sub"),
        rmdir("/etc/config"),
        rename("/etc/config/app.yaml", "/etc/config/moved", false),
        symlink("app.yaml", "/etc/config/link"),
    ] {
        assert_eq!(f.fails(op.clone()), Kind::ReadOnly, "{op:?}");
    }
    assert_eq!(f.content("ro/app.yaml"), "port: 8080\n");
    let mut names: Vec<_> = std::fs::read_dir(f.dir.join("ro"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["app.yaml", "sub"]);
    let meta = std::fs::metadata(f.dir.join("ro/app.yaml")).unwrap();
    assert_ne!(meta.mtime(), 1);
}

#[test]
fn handles_belong_to_their_table() {
    let f = Fixture::new();
    let (handle, _) = f.opened(open("/data/hello.txt", false));
    let other = Handles::default();
    let read = FileOp::Read {
        handle,
        offset: 0,
        len: 5,
    };
    let error = f.server.handle(&other, read).unwrap_err();
    assert_eq!(error.kind, Kind::BadHandle);
    assert_eq!(f.read(handle, 0, 5), b"hello");
}

#[test]
fn errors_name_the_path() {
    let f = Fixture::new();
    let error = f.op(stat("/data/absent")).unwrap_err();
    assert_eq!(error.kind, Kind::NotFound);
    assert!(error.message.starts_with("/data/absent: "), "{error:?}");
}

#[test]
fn an_open_file_is_statted_by_its_handle_after_its_path_is_gone() {
    let f = Fixture::new();
    let (handle, _) = f.opened(create("/data/scratch", true));
    f.op(write(handle, 0, b"kept while open")).unwrap();
    assert_eq!(
        f.op(FileOp::Unlink {
            path: "/data/scratch".into()
        }),
        Ok(FileOk::Done)
    );
    assert_eq!(f.fails(stat("/data/scratch")), Kind::NotFound);
    let attr = f.attr(FileOp::Fstat { handle });
    assert_eq!((attr.kind, attr.size, attr.nlink), (FileKind::File, 15, 0));
    assert_eq!(f.read(handle, 5, 100), b"while open");

    // Renamed in the pod behind the laptop's back: the handle still names it.
    let (reading, _) = f.opened(open("/data/hello.txt", false));
    std::fs::rename(f.dir.join("vol/hello.txt"), f.dir.join("vol/moved.txt")).unwrap();
    assert_eq!(f.attr(FileOp::Fstat { handle: reading }).size, 13);
    f.op(FileOp::Close { handle: reading }).unwrap();
    assert_eq!(f.fails(FileOp::Fstat { handle: reading }), Kind::BadHandle);
}

#[test]
fn a_large_directory_is_listed_in_pages() {
    let f = Fixture::new();
    let long = "n".repeat(200);
    let count = 6_000;
    for i in 0..count {
        std::fs::write(f.dir.join(&format!("vol/{i:04}{long}")), "").unwrap();
    }
    let mut names: Vec<String> = Vec::new();
    let mut pages = 0;
    loop {
        let op = FileOp::ReadDirPage {
            path: "/data".into(),
            after: names.last().cloned(),
        };
        let Ok(FileOk::Page { entries, more }) = f.op(op) else {
            panic!("not a page")
        };
        pages += 1;
        names.extend(entries.into_iter().map(|e| e.name));
        if !more {
            break;
        }
    }
    assert!(pages > 1, "{pages} page(s)");
    // Every name once, in order; the nested mount's root among them, as in one listing.
    assert_eq!(names.len(), count + 2);
    assert!(names.windows(2).all(|w| w[0] < w[1]));
    assert!(names.contains(&"hello.txt".to_owned()) && names.contains(&"nested".to_owned()));
    // One answer of it all would not fit in a frame: the old operation says so.
    let whole = f.op(read_dir("/data"));
    let Ok(FileOk::Entries(entries)) = whole else {
        panic!("{whole:?}")
    };
    assert_eq!(entries.len(), count + 2);
    let reply = tether_proto::files::FileReply {
        id: 1,
        result: Ok(FileOk::Entries(entries)),
    };
    let mut wire = bytes::BytesMut::new();
    assert!(tether_proto::encode(&reply.into(), &mut wire).is_err());
    assert_eq!(
        f.fails(FileOp::ReadDirPage {
            path: "/data/hello.txt".into(),
            after: None
        }),
        Kind::NotADirectory
    );
}

#[test]
fn a_mount_of_one_file_is_served_as_that_file() {
    // A ConfigMap key mounted with `subPath`: the kubelet mounts one file, not a directory.
    let dir = TestDir::new();
    std::fs::create_dir(dir.join("single")).unwrap();
    std::fs::write(dir.join("single/app.yaml"), "port: 8080\n").unwrap();
    std::fs::write(dir.join("single/other"), "not mounted").unwrap();
    std::fs::create_dir(dir.join("conf")).unwrap();
    let mounts = Mounts::new(vec![
        Mount::new("/etc/app/app.yaml", dir.join("single/app.yaml"), false).unwrap(),
        Mount::new("/etc/app/conf.d", dir.join("conf"), false).unwrap(),
    ])
    .unwrap();
    let f = Fixture {
        server: Server::new(mounts),
        dir,
        handles: Handles::default(),
    };
    assert_eq!(f.server.mounts().iter().count(), 2, "both served");
    assert_eq!(
        f.names("/etc/app"),
        [
            ("app.yaml".into(), FileKind::File),
            ("conf.d".into(), FileKind::Directory)
        ]
    );
    let attr = f.attr(stat("/etc/app/app.yaml"));
    assert_eq!((attr.kind, attr.size), (FileKind::File, 11));
    let (handle, _) = f.opened(open("/etc/app/app.yaml", true));
    assert_eq!(f.read(handle, 0, 100), b"port: 8080\n");
    f.op(write(handle, 0, b"PORT")).unwrap();
    assert_eq!(f.content("single/app.yaml"), "PORT: 8080\n");
    // Nothing lies below a file, and its neighbours in the source are not served.
    assert_eq!(f.fails(stat("/etc/app/app.yaml/x")), Kind::NotADirectory);
    assert_eq!(f.fails(read_dir("/etc/app/app.yaml")), Kind::NotADirectory);
    assert_eq!(f.fails(stat("/etc/app/other")), Kind::NotFound);
    assert_eq!(f.fails(open("/etc/app/other", false)), Kind::NotFound);
}
