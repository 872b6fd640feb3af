//! An in-memory [`FileService`]: a tree of files answering the file protocol as the agent does
//! (`/` read-only, reads and writes of at most `MAX_IO`), so that the FUSE layer can be tested
//! without a pod. It also counts reads and has a path whose `Stat` never answers.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use tether_mount::{CallFuture, FileService};
use tether_proto::files::{
    DirEntry, FileAttr, FileError, FileErrorKind, FileKind, FileOk, FileOp, FsStats, Timestamp,
    MAX_IO,
};

/// A `Stat` of this path never answers (a stalled link).
pub const HANG: &str = "/slow/hang";

#[derive(Debug, Clone)]
enum Content {
    File(Vec<u8>),
    Dir,
    Link(String),
}

#[derive(Debug, Clone)]
struct Node {
    content: Content,
    perm: u32,
    mtime: Timestamp,
}

#[derive(Debug, Default)]
struct Tree {
    nodes: BTreeMap<String, Node>,
    handles: HashMap<u64, String>,
    next_handle: u64,
    clock: i64,
}

/// The fake agent.
#[derive(Debug, Default)]
pub struct Memory {
    tree: Mutex<Tree>,
    reads: AtomicUsize,
}

type Answer = Result<FileOk, FileError>;

fn fail(kind: FileErrorKind) -> FileError {
    FileError {
        kind,
        message: format!("{kind:?}"),
    }
}

fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(at) => &path[..at],
    }
}

impl Memory {
    /// A tree with `/` and the given directories and files.
    pub fn new(dirs: &[&str], files: &[(&str, &[u8])]) -> Self {
        let memory = Memory::default();
        {
            let mut tree = memory.lock();
            tree.put("/", Content::Dir, 0o555);
            for dir in dirs {
                tree.put(dir, Content::Dir, 0o755);
            }
            for (path, data) in files {
                tree.put(path, Content::File(data.to_vec()), 0o644);
            }
        }
        memory
    }

    /// How many `Read`s were answered.
    pub fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    /// Changes a file behind the mount's back, as the app in the pod would.
    pub fn replace(&self, path: &str, data: &[u8]) {
        self.lock().put(path, Content::File(data.to_vec()), 0o644);
    }

    fn lock(&self) -> MutexGuard<'_, Tree> {
        self.tree.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn answer(&self, op: FileOp) -> Answer {
        let mut tree = self.lock();
        match op {
            FileOp::Stat { path } => tree.attr(&path).map(FileOk::Attr),
            FileOp::ReadDir { path } => tree.read_dir(&path).map(FileOk::Entries),
            FileOp::ReadDirPage { path, after } => {
                let entries = tree.read_dir(&path)?;
                let (page, more) = tether_proto::files::page(&entries, after.as_deref());
                Ok(FileOk::Page {
                    entries: page.to_vec(),
                    more,
                })
            }
            // By the file's path: this tree has no files apart from their names.
            FileOp::Fstat { handle } => {
                let path = tree.handle(handle)?;
                tree.attr(&path).map(FileOk::Attr)
            }
            FileOp::ReadLink { path } => match tree.node(&path)?.content {
                Content::Link(ref target) => Ok(FileOk::Target(target.clone())),
                _ => Err(fail(FileErrorKind::Invalid)),
            },
            FileOp::Open {
                path,
                write,
                truncate,
            } => {
                if write {
                    tree.changeable(&path)?;
                }
                match tree.node(&path)?.content {
                    Content::File(_) => {}
                    Content::Dir => return Err(fail(FileErrorKind::IsADirectory)),
                    Content::Link(_) => return Err(fail(FileErrorKind::TooManyLinks)),
                }
                if write && truncate {
                    tree.edit(&path, |data| data.clear())?;
                }
                tree.open(path)
            }
            FileOp::Create {
                path,
                perm,
                exclusive,
            } => {
                tree.changeable(&path)?;
                match tree.nodes.get(&path).map(|n| &n.content) {
                    Some(_) if exclusive => return Err(fail(FileErrorKind::Exists)),
                    Some(Content::File(_)) => {}
                    Some(_) => return Err(fail(FileErrorKind::IsADirectory)),
                    None => tree.put(&path, Content::File(Vec::new()), perm),
                }
                tree.open(path)
            }
            FileOp::Read {
                handle,
                offset,
                len,
            } => {
                if len > MAX_IO {
                    return Err(fail(FileErrorKind::Invalid));
                }
                let path = tree.handle(handle)?;
                let Content::File(data) = &tree.node(&path)?.content else {
                    return Err(fail(FileErrorKind::IsADirectory));
                };
                let start = data.len().min(offset as usize);
                let end = data.len().min(start + len as usize);
                self.reads.fetch_add(1, Ordering::SeqCst);
                Ok(FileOk::Data(data[start..end].to_vec()))
            }
            FileOp::Write {
                handle,
                offset,
                data,
            } => {
                if data.len() > MAX_IO as usize {
                    return Err(fail(FileErrorKind::Invalid));
                }
                let path = tree.handle(handle)?;
                tree.edit(&path, |file| {
                    let end = offset as usize + data.len();
                    if file.len() < end {
                        file.resize(end, 0);
                    }
                    file[offset as usize..end].copy_from_slice(&data);
                })?;
                Ok(FileOk::Written(data.len() as u32))
            }
            FileOp::Fsync { handle } => tree.handle(handle).map(|_| FileOk::Done),
            FileOp::Close { handle } => match tree.handles.remove(&handle) {
                Some(_) => Ok(FileOk::Done),
                None => Err(fail(FileErrorKind::BadHandle)),
            },
            FileOp::SetAttr {
                path,
                size,
                perm,
                atime: _,
                mtime,
            } => {
                if size.is_some() || perm.is_some() || mtime.is_some() {
                    tree.changeable(&path)?;
                }
                if let Some(size) = size {
                    tree.edit(&path, |data| data.resize(size as usize, 0))?;
                }
                let node = tree.node_mut(&path)?;
                if let Some(perm) = perm {
                    node.perm = perm;
                }
                if let Some(mtime) = mtime {
                    node.mtime = mtime;
                }
                tree.attr(&path).map(FileOk::Attr)
            }
            FileOp::Mkdir { path, perm } => {
                tree.new_name(&path)?;
                tree.put(&path, Content::Dir, perm);
                tree.attr(&path).map(FileOk::Attr)
            }
            FileOp::Symlink { target, path } => {
                tree.new_name(&path)?;
                tree.put(&path, Content::Link(target), 0o777);
                tree.attr(&path).map(FileOk::Attr)
            }
            FileOp::Unlink { path } => {
                tree.changeable(&path)?;
                if let Content::Dir = tree.node(&path)?.content {
                    return Err(fail(FileErrorKind::IsADirectory));
                }
                tree.nodes.remove(&path);
                Ok(FileOk::Done)
            }
            FileOp::Rmdir { path } => {
                tree.changeable(&path)?;
                let Content::Dir = tree.node(&path)?.content else {
                    return Err(fail(FileErrorKind::NotADirectory));
                };
                if !tree.read_dir(&path)?.is_empty() {
                    return Err(fail(FileErrorKind::NotEmpty));
                }
                tree.nodes.remove(&path);
                Ok(FileOk::Done)
            }
            FileOp::Rename {
                from,
                to,
                noreplace,
            } => {
                tree.changeable(&from)?;
                tree.changeable(&to)?;
                tree.node(&from)?;
                if tree.nodes.contains_key(&to) {
                    if noreplace {
                        return Err(fail(FileErrorKind::Exists));
                    }
                    tree.nodes.remove(&to);
                }
                let below = format!("{from}/");
                let moved: Vec<String> = tree
                    .nodes
                    .keys()
                    .filter(|p| **p == from || p.starts_with(&below))
                    .cloned()
                    .collect();
                for old in moved {
                    if let Some(node) = tree.nodes.remove(&old) {
                        tree.nodes
                            .insert(format!("{to}{}", &old[from.len()..]), node);
                    }
                }
                Ok(FileOk::Done)
            }
            FileOp::StatFs { .. } => Ok(FileOk::Stats(FsStats {
                blocks: 1000,
                bfree: 500,
                bavail: 400,
                files: 100,
                ffree: 50,
                bsize: 4096,
                namelen: 255,
            })),
        }
    }
}

impl Tree {
    fn tick(&mut self) -> Timestamp {
        self.clock += 1;
        Timestamp {
            secs: 1_700_000_000 + self.clock,
            nanos: 0,
        }
    }

    fn put(&mut self, path: &str, content: Content, perm: u32) {
        let mtime = self.tick();
        self.nodes.insert(
            path.to_owned(),
            Node {
                content,
                perm,
                mtime,
            },
        );
    }

    fn node(&self, path: &str) -> Result<&Node, FileError> {
        self.nodes
            .get(path)
            .ok_or_else(|| fail(FileErrorKind::NotFound))
    }

    fn node_mut(&mut self, path: &str) -> Result<&mut Node, FileError> {
        self.nodes
            .get_mut(path)
            .ok_or_else(|| fail(FileErrorKind::NotFound))
    }

    fn edit(&mut self, path: &str, change: impl FnOnce(&mut Vec<u8>)) -> Result<(), FileError> {
        let mtime = self.tick();
        let node = self.node_mut(path)?;
        let Content::File(data) = &mut node.content else {
            return Err(fail(FileErrorKind::IsADirectory));
        };
        change(data);
        node.mtime = mtime;
        Ok(())
    }

    /// Like the agent: `/` is one of the read-only directories above the mounts.
    fn changeable(&self, path: &str) -> Result<(), FileError> {
        if path == "/" || parent(path) == "/" {
            return Err(fail(FileErrorKind::ReadOnly));
        }
        match self.node(parent(path))?.content {
            Content::Dir => Ok(()),
            _ => Err(fail(FileErrorKind::NotADirectory)),
        }
    }

    fn new_name(&self, path: &str) -> Result<(), FileError> {
        self.changeable(path)?;
        if self.nodes.contains_key(path) {
            return Err(fail(FileErrorKind::Exists));
        }
        Ok(())
    }

    fn open(&mut self, path: String) -> Answer {
        let attr = self.attr(&path)?;
        self.next_handle += 1;
        let handle = self.next_handle;
        self.handles.insert(handle, path);
        Ok(FileOk::Opened { handle, attr })
    }

    fn handle(&self, handle: u64) -> Result<String, FileError> {
        self.handles
            .get(&handle)
            .cloned()
            .ok_or_else(|| fail(FileErrorKind::BadHandle))
    }

    fn attr(&self, path: &str) -> Result<FileAttr, FileError> {
        let node = self.node(path)?;
        let (kind, size) = match &node.content {
            Content::File(data) => (FileKind::File, data.len() as u64),
            Content::Dir => (FileKind::Directory, 0),
            Content::Link(target) => (FileKind::Symlink, target.len() as u64),
        };
        Ok(FileAttr {
            kind,
            size,
            perm: node.perm,
            nlink: 1,
            uid: 1000,
            gid: 1000,
            atime: node.mtime,
            mtime: node.mtime,
            ctime: node.mtime,
            blocks: size.div_ceil(512),
        })
    }

    fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>, FileError> {
        let Content::Dir = self.node(path)?.content else {
            return Err(fail(FileErrorKind::NotADirectory));
        };
        self.nodes
            .keys()
            .filter(|p| p.as_str() != "/" && parent(p) == path)
            .map(|p| {
                Ok(DirEntry {
                    name: p[p.rfind('/').map_or(0, |at| at + 1)..].to_owned(),
                    attr: self.attr(p)?,
                })
            })
            .collect()
    }
}

impl FileService for Memory {
    fn call(&self, op: FileOp) -> CallFuture {
        if matches!(&op, FileOp::Stat { path } if path == HANG) {
            return Box::pin(std::future::pending());
        }
        let answer = self.answer(op);
        Box::pin(async move { answer })
    }
}
