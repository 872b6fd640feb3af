//! The file protocol behind `tether intercept --mount`: the laptop reads and writes the
//! intercepted container's volumes through the pod's traffic agent.
//!
//! The client opens a stream to the manager whose first frame is [`OpenFiles`] (the intercept's
//! id); the manager checks that the intercept is the session's own and passes the stream on to one
//! of the workload's agents, which answers [`OpenFilesResult`] with the container paths it serves
//! (the app container's volume mounts). From then on the client sends [`FileRequest`]s, each with
//! its own `id`, without waiting; the agent answers each with a [`FileReply`] of the same `id`,
//! in any order. Closing the stream closes every handle the client opened on it.
//!
//! Paths are absolute container paths (`/etc/config/app.yaml`); the agent serves only what lies
//! under one of its mounts (and their parent directories, which it shows as read-only
//! directories). Symbolic links are never followed by the agent: the client's kernel resolves
//! them, as it does on any file system.

use serde::{Deserialize, Serialize};

/// The most bytes one [`FileOp::Read`] returns and one [`FileOp::Write`] carries (well inside
/// [`MAX_FRAME_LEN`](crate::MAX_FRAME_LEN)).
pub const MAX_IO: u32 = 512 * 1024;

/// First frame of a file stream: client → manager → agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenFiles {
    /// The client's intercept whose pod's files are wanted.
    pub intercept: u64,
    /// The app container whose volume mounts are wanted (a pod's containers may mount different
    /// volumes at the same path). An agent installed before containers were told apart serves
    /// the one table it has, whichever is named.
    pub container: String,
}

/// What an agent serves, in an [`OpenFilesResult`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesInfo {
    /// The pod the files are in.
    pub pod: String,
    /// The container paths of the mounts served, sorted.
    pub mounts: Vec<String>,
}

/// The answer to [`OpenFiles`]: agent → manager → client (or from the manager, when it refuses).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenFilesResult {
    /// What is served, or why not.
    pub result: Result<FilesInfo, crate::OpenError>,
}

/// Seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

impl FileAttr {
    /// A directory with permission bits `perm`, owned by root, at the epoch: what a file system
    /// shows for a directory that stands for nothing on disk.
    pub const fn directory(perm: u32) -> FileAttr {
        let epoch = Timestamp { secs: 0, nanos: 0 };
        FileAttr {
            kind: FileKind::Directory,
            size: 0,
            perm,
            nlink: 2,
            uid: 0,
            gid: 0,
            atime: epoch,
            mtime: epoch,
            ctime: epoch,
            blocks: 0,
        }
    }
}

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    File,
    Directory,
    Symlink,
    /// A device, FIFO or socket: listed, never opened.
    Other,
}

/// A file's attributes, as `lstat` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileAttr {
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits (`0o7777`).
    pub perm: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    /// 512-byte blocks allocated.
    pub blocks: u64,
}

/// One entry of a [`FileOp::ReadDir`] answer (`.` and `..` are left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub name: String,
    pub attr: FileAttr,
}

/// File-system totals, for `df`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsStats {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
}

/// One operation. Paths are absolute container paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileOp {
    /// `lstat`. → [`FileOk::Attr`]
    Stat { path: String },
    /// Every entry with its attributes. → [`FileOk::Entries`]
    ReadDir { path: String },
    /// → [`FileOk::Target`]
    ReadLink { path: String },
    /// Opens an existing file. → [`FileOk::Opened`]
    Open {
        path: String,
        write: bool,
        truncate: bool,
    },
    /// Creates a file and opens it for writing. → [`FileOk::Opened`]
    Create {
        path: String,
        perm: u32,
        exclusive: bool,
    },
    /// At most [`MAX_IO`] bytes; fewer only at the end of the file. → [`FileOk::Data`]
    Read { handle: u64, offset: u64, len: u32 },
    /// At most [`MAX_IO`] bytes. → [`FileOk::Written`]
    Write {
        handle: u64,
        offset: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// → [`FileOk::Done`]
    Fsync { handle: u64 },
    /// → [`FileOk::Done`]
    Close { handle: u64 },
    /// Changes what is given (size: truncate; perm: chmod; times: utimens). → [`FileOk::Attr`]
    SetAttr {
        path: String,
        size: Option<u64>,
        perm: Option<u32>,
        atime: Option<Timestamp>,
        mtime: Option<Timestamp>,
    },
    /// → [`FileOk::Attr`]
    Mkdir { path: String, perm: u32 },
    /// → [`FileOk::Done`]
    Unlink { path: String },
    /// → [`FileOk::Done`]
    Rmdir { path: String },
    /// `noreplace`: fail with [`FileErrorKind::Exists`] rather than replace `to`. → [`FileOk::Done`]
    Rename {
        from: String,
        to: String,
        noreplace: bool,
    },
    /// Creates `path` as a link to `target`. → [`FileOk::Attr`]
    Symlink { target: String, path: String },
    /// → [`FileOk::Stats`]
    StatFs { path: String },
    /// `fstat` of an open file: it answers also once its path names it no more (removed or
    /// renamed in the pod). → [`FileOk::Attr`]
    Fstat { handle: u64 },
    /// The entries of a directory, sorted by name, from the first whose name sorts after
    /// `after` (from the first of all when `None`), as many as fit in one reply: a directory of
    /// any size is listed in pages, where [`FileOp::ReadDir`] fails with
    /// [`FileErrorKind::TooBig`] once its answer outgrows a frame. → [`FileOk::Page`]
    ReadDirPage { path: String, after: Option<String> },
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileOk {
    Attr(FileAttr),
    Entries(Vec<DirEntry>),
    Target(String),
    Opened {
        handle: u64,
        attr: FileAttr,
    },
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
    Written(u32),
    Done,
    Stats(FsStats),
    /// Part of a listing; `more`: the directory has entries after the last of these.
    Page {
        entries: Vec<DirEntry>,
        more: bool,
    },
}

/// Why an operation failed: the errno classes a file system client needs, so that the laptop
/// (whatever its OS numbers them) reports the pod's failure faithfully. Append-only; an unknown
/// number decodes as [`FileErrorKind::Io`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "u16", into = "u16")]
pub enum FileErrorKind {
    /// `EIO`, and anything not listed.
    Io = 0,
    /// `ENOENT`
    NotFound = 1,
    /// `EACCES`
    PermissionDenied = 2,
    /// `EPERM`
    NotPermitted = 3,
    /// `EEXIST`
    Exists = 4,
    /// `ENOTDIR`
    NotADirectory = 5,
    /// `EISDIR`
    IsADirectory = 6,
    /// `ENOTEMPTY`
    NotEmpty = 7,
    /// `EROFS`
    ReadOnly = 8,
    /// `ENOSPC`
    NoSpace = 9,
    /// `EINVAL`
    Invalid = 10,
    /// `ENAMETOOLONG`
    NameTooLong = 11,
    /// `EXDEV`: a rename across two mounts.
    CrossesMounts = 12,
    /// `EBADF`: a handle this stream did not open (or closed).
    BadHandle = 13,
    /// `ELOOP`
    TooManyLinks = 14,
    /// `EFBIG`
    TooBig = 15,
    /// `EDQUOT`
    Quota = 16,
}

impl From<u16> for FileErrorKind {
    fn from(n: u16) -> Self {
        use FileErrorKind::*;
        const ALL: [FileErrorKind; 17] = [
            Io,
            NotFound,
            PermissionDenied,
            NotPermitted,
            Exists,
            NotADirectory,
            IsADirectory,
            NotEmpty,
            ReadOnly,
            NoSpace,
            Invalid,
            NameTooLong,
            CrossesMounts,
            BadHandle,
            TooManyLinks,
            TooBig,
            Quota,
        ];
        ALL.get(usize::from(n)).copied().unwrap_or(Io)
    }
}

impl From<FileErrorKind> for u16 {
    fn from(kind: FileErrorKind) -> Self {
        kind as u16
    }
}

/// A failed operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileError {
    pub kind: FileErrorKind,
    /// The agent's words, for its log and the daemon's.
    pub message: String,
}

/// The most bytes the entries of one [`FileOk::Page`] take on the wire (well inside
/// [`MAX_FRAME_LEN`](crate::MAX_FRAME_LEN)), counted with [`ENTRY_OVERHEAD`] per entry.
pub const PAGE_BYTES: usize = 512 * 1024;

/// What one [`DirEntry`] takes on the wire besides its name's bytes, at most: the name's
/// length and the attributes, every integer at its longest.
pub const ENTRY_OVERHEAD: usize = 96;

/// The page of `entries` (sorted by name) that answers [`FileOp::ReadDirPage`] with `after`:
/// the entries whose names sort after it, as many as [`PAGE_BYTES`] holds (always at least
/// one), and whether more follow them.
pub fn page<'e>(entries: &'e [DirEntry], after: Option<&str>) -> (&'e [DirEntry], bool) {
    let start = match after {
        None => 0,
        Some(after) => entries.partition_point(|e| e.name.as_str() <= after),
    };
    let rest = &entries[start..];
    let mut bytes = 0;
    let mut len = 0;
    for entry in rest {
        bytes += entry.name.len() + ENTRY_OVERHEAD;
        if bytes > PAGE_BYTES && len > 0 {
            break;
        }
        len += 1;
    }
    (&rest[..len], len < rest.len())
}

/// Client → agent: one operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRequest {
    /// Chosen by the client, unique among its requests in flight on the stream.
    pub id: u32,
    pub op: FileOp,
}

/// Agent → client: the answer to the [`FileRequest`] with the same `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileReply {
    pub id: u32,
    pub result: Result<FileOk, FileError>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{encode, Decoded, FrameDecoder, Message};

    #[test]
    fn an_unknown_error_number_is_an_io_error() {
        assert_eq!(FileErrorKind::from(16), FileErrorKind::Quota);
        assert_eq!(FileErrorKind::from(999), FileErrorKind::Io);
        for n in 0..17u16 {
            assert_eq!(u16::from(FileErrorKind::from(n)), n);
        }
    }

    fn entry(name: String) -> DirEntry {
        let max = Timestamp {
            secs: i64::MIN,
            nanos: u32::MAX,
        };
        DirEntry {
            name,
            attr: FileAttr {
                kind: FileKind::Other,
                size: u64::MAX,
                perm: u32::MAX,
                nlink: u32::MAX,
                uid: u32::MAX,
                gid: u32::MAX,
                atime: max,
                mtime: max,
                ctime: max,
                blocks: u64::MAX,
            },
        }
    }

    #[test]
    fn a_directory_of_any_size_is_listed_in_pages_that_each_fit_in_a_frame() {
        // Names as long as Linux allows, attributes at their longest encodings.
        let entries: Vec<DirEntry> = (0..10_000)
            .map(|i| entry(format!("{i:05}{}", "x".repeat(250))))
            .collect();
        let one = postcard::to_allocvec(&entries[0]).unwrap().len();
        assert!(one <= entries[0].name.len() + ENTRY_OVERHEAD, "{one} bytes");
        let mut listed = Vec::new();
        let mut after: Option<String> = None;
        let mut pages = 0;
        loop {
            let (got, more) = page(&entries, after.as_deref());
            let reply = FileReply {
                id: u32::MAX,
                result: Ok(FileOk::Page {
                    entries: got.to_vec(),
                    more,
                }),
            };
            let mut wire = bytes::BytesMut::new();
            encode(&Message::from(reply), &mut wire).expect("a page fits in a frame");
            listed.extend(got.iter().map(|e| e.name.clone()));
            after = got.last().map(|e| e.name.clone());
            pages += 1;
            if !more {
                break;
            }
        }
        assert!(pages > 1, "{pages}");
        let names: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
        assert_eq!(listed, names);
        // After the last, nothing; after a name that is not listed, the names after it.
        assert_eq!(page(&entries, Some("99999")), (&[][..], false));
        let (got, _) = page(&entries, Some("00005"));
        assert_eq!(got[0].name, names[5]);
        assert_eq!(page(&[], None), (&[][..], false));
    }

    #[test]
    fn the_largest_write_fits_in_a_frame() {
        let request = FileRequest {
            id: u32::MAX,
            op: FileOp::Write {
                handle: u64::MAX,
                offset: u64::MAX,
                data: vec![0xa5; MAX_IO as usize],
            },
        };
        let mut wire = bytes::BytesMut::new();
        encode(&Message::from(request.clone()), &mut wire).expect("fits");
        let mut decoder = FrameDecoder::new();
        decoder.push(&wire);
        match decoder.poll() {
            Some(Ok(Decoded::Message(Message::FileRequest(got)))) => assert_eq!(got, request),
            other => panic!("decoded {other:?}"),
        }
    }

    /// Byte payloads are one length and the bytes, as before `serde_bytes` (one serde call per
    /// byte): peers of either kind read each other.
    #[test]
    fn byte_payloads_are_the_same_on_the_wire_as_a_sequence_of_bytes() {
        /// `FileOk` as it was: `Data` the fifth variant, its bytes a plain sequence.
        #[derive(Serialize, Deserialize)]
        #[allow(dead_code)]
        enum Before {
            Attr,
            Entries,
            Target,
            Opened,
            Data(Vec<u8>),
        }
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let now = postcard::to_allocvec(&FileOk::Data(data.clone())).unwrap();
        let before = postcard::to_allocvec(&Before::Data(data.clone())).unwrap();
        assert_eq!(now, before);
        assert_eq!(
            postcard::from_bytes::<FileOk>(&before).unwrap(),
            FileOk::Data(data)
        );
    }
}
