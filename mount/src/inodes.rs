//! The inode table: which container path each inode number the kernel holds stands for.
//!
//! The protocol names files by path, the kernel by inode number, so each path the kernel has
//! looked up gets a number, kept while the kernel counts lookups of it (each entry reply adds
//! one; `forget` takes them away). A rename re-keys the path and everything below it; an
//! unlink leaves the inode (an open file may still use it) but no longer at any path.
//!
//! Plain code, no I/O.

use std::collections::{BTreeMap, HashMap};

use tether_proto::files::Timestamp;

/// The root's inode number (FUSE's `FUSE_ROOT_ID`), the container's `/`.
pub(crate) const ROOT: u64 = 1;

/// What a file's cached pages were read from: if it is unchanged at the next open, the kernel
/// may keep them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Version {
    pub(crate) mtime: Timestamp,
    pub(crate) size: u64,
}

#[derive(Debug)]
struct Node {
    path: String,
    /// Lookups the kernel holds; the root's never drops.
    lookups: u64,
    /// Whether `path` still names this node (false after an unlink or a rename over it).
    linked: bool,
    /// As of the last open.
    version: Option<Version>,
}

/// Inode numbers ↔ container paths.
#[derive(Debug)]
pub(crate) struct Inodes {
    nodes: HashMap<u64, Node>,
    /// Linked nodes only, ordered so that a directory's descendants follow it.
    paths: BTreeMap<String, u64>,
    next: u64,
}

impl Default for Inodes {
    fn default() -> Self {
        Self::new()
    }
}

impl Inodes {
    /// A table holding only the root, `/`.
    pub(crate) fn new() -> Self {
        let root = Node {
            path: "/".to_owned(),
            lookups: 1,
            linked: true,
            version: None,
        };
        Self {
            nodes: HashMap::from([(ROOT, root)]),
            paths: BTreeMap::from([("/".to_owned(), ROOT)]),
            next: ROOT + 1,
        }
    }

    /// The path `ino` stands for; `None` for a number the kernel forgot, or a file that was
    /// unlinked or renamed over.
    pub(crate) fn path(&self, ino: u64) -> Option<&str> {
        self.nodes
            .get(&ino)
            .filter(|node| node.linked)
            .map(|node| node.path.as_str())
    }

    /// The inode of `path`, if the kernel holds one.
    pub(crate) fn ino(&self, path: &str) -> Option<u64> {
        self.paths.get(path).copied()
    }

    /// Counts one lookup of `path` (the kernel is told of it in an entry reply), giving it a
    /// number first if it has none.
    pub(crate) fn lookup(&mut self, path: &str) -> u64 {
        if let Some(ino) = self.paths.get(path).copied() {
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.lookups += 1;
                return ino;
            }
        }
        let ino = self.next;
        self.next += 1;
        self.nodes.insert(
            ino,
            Node {
                path: path.to_owned(),
                lookups: 1,
                linked: true,
                version: None,
            },
        );
        self.paths.insert(path.to_owned(), ino);
        ino
    }

    /// Takes `n` lookups away; at none left the number is gone for good (numbers are never
    /// reused, so the generation can stay 0). The root is never forgotten.
    pub(crate) fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT {
            return;
        }
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        node.lookups = node.lookups.saturating_sub(n);
        if node.lookups > 0 {
            return;
        }
        if let Some(node) = self.nodes.remove(&ino) {
            if node.linked && self.paths.get(&node.path) == Some(&ino) {
                self.paths.remove(&node.path);
            }
        }
    }

    /// `path` was removed: its inode (if any) stays until forgotten but no longer names it.
    pub(crate) fn unlink(&mut self, path: &str) {
        if let Some(ino) = self.paths.remove(path) {
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.linked = false;
            }
        }
    }

    /// `from` was renamed to `to`: whatever was at `to` (and below it) is unlinked, and `from`
    /// and everything below it now lie under `to`.
    pub(crate) fn rename(&mut self, from: &str, to: &str) {
        if from == to || from == "/" {
            return;
        }
        for path in self.subtree(to) {
            self.unlink(&path);
        }
        for old in self.subtree(from) {
            let Some(ino) = self.paths.remove(&old) else {
                continue;
            };
            let new = format!("{to}{}", &old[from.len()..]);
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.path.clone_from(&new);
            }
            self.paths.insert(new, ino);
        }
    }

    /// Records the version of `ino` seen at an open; whether it is the one seen at the open
    /// before (so pages cached since are still good).
    pub(crate) fn opened(&mut self, ino: u64, version: Version) -> bool {
        match self.nodes.get_mut(&ino) {
            Some(node) => node.version.replace(version) == Some(version),
            None => false,
        }
    }

    /// How many numbers are held, the root included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The linked paths at or below `path`.
    fn subtree(&self, path: &str) -> Vec<String> {
        let below = format!("{path}/");
        self.paths
            .range(path.to_owned()..)
            .map(|(p, _)| p)
            // Everything starting with `path` sorts together, right after it.
            .take_while(|p| p.starts_with(path))
            .filter(|p| p.as_str() == path || p.starts_with(&below))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(secs: i64, size: u64) -> Version {
        Version {
            mtime: Timestamp { secs, nanos: 0 },
            size,
        }
    }

    #[test]
    fn the_root_is_one_and_never_forgotten() {
        let mut inodes = Inodes::new();
        assert_eq!(inodes.path(ROOT), Some("/"));
        assert_eq!(inodes.ino("/"), Some(ROOT));
        inodes.forget(ROOT, 100);
        assert_eq!(inodes.path(ROOT), Some("/"));
    }

    #[test]
    fn a_path_keeps_its_number_while_looked_up() {
        let mut inodes = Inodes::new();
        let a = inodes.lookup("/etc");
        assert_ne!(a, ROOT);
        assert_eq!(inodes.lookup("/etc"), a);
        assert_eq!(inodes.path(a), Some("/etc"));
        inodes.forget(a, 1);
        assert_eq!(inodes.path(a), Some("/etc"), "one lookup is left");
        inodes.forget(a, 1);
        assert_eq!(inodes.path(a), None);
        assert_eq!(inodes.ino("/etc"), None);
        assert_eq!(inodes.len(), 1);
        let b = inodes.lookup("/etc");
        assert_ne!(b, a, "numbers are not reused");
    }

    #[test]
    fn forgetting_more_than_held_or_an_unknown_number_is_harmless() {
        let mut inodes = Inodes::new();
        let a = inodes.lookup("/a");
        inodes.forget(a, 5);
        inodes.forget(a, 1);
        inodes.forget(999, 1);
        assert_eq!(inodes.len(), 1);
    }

    #[test]
    fn an_unlinked_file_keeps_its_number_at_no_path() {
        let mut inodes = Inodes::new();
        let old = inodes.lookup("/data/f");
        inodes.unlink("/data/f");
        assert_eq!(inodes.path(old), None);
        assert_eq!(inodes.ino("/data/f"), None);
        let new = inodes.lookup("/data/f");
        assert_ne!(new, old, "a new file at the path is a new inode");
        // Forgetting the old one leaves the new one's path alone.
        inodes.forget(old, 1);
        assert_eq!(inodes.ino("/data/f"), Some(new));
        assert_eq!(inodes.path(new), Some("/data/f"));
    }

    #[test]
    fn a_rename_moves_a_directory_and_everything_below_it() {
        let mut inodes = Inodes::new();
        let dir = inodes.lookup("/data/dir");
        let file = inodes.lookup("/data/dir/sub/f");
        let sibling = inodes.lookup("/data/dir2");
        let sibling_child = inodes.lookup("/data/dir-x/f");
        inodes.rename("/data/dir", "/data/moved");
        assert_eq!(inodes.path(dir), Some("/data/moved"));
        assert_eq!(inodes.path(file), Some("/data/moved/sub/f"));
        assert_eq!(inodes.ino("/data/moved/sub/f"), Some(file));
        assert_eq!(inodes.ino("/data/dir/sub/f"), None);
        assert_eq!(
            inodes.path(sibling),
            Some("/data/dir2"),
            "a name sharing the prefix"
        );
        assert_eq!(inodes.path(sibling_child), Some("/data/dir-x/f"));
    }

    #[test]
    fn a_rename_over_a_file_unlinks_it() {
        let mut inodes = Inodes::new();
        let from = inodes.lookup("/a");
        let to = inodes.lookup("/b");
        inodes.rename("/a", "/b");
        assert_eq!(inodes.path(from), Some("/b"));
        assert_eq!(inodes.ino("/b"), Some(from));
        assert_eq!(inodes.path(to), None);
        inodes.forget(to, 1);
        assert_eq!(inodes.ino("/b"), Some(from));
    }

    #[test]
    fn a_rename_into_the_root_and_out_of_it() {
        let mut inodes = Inodes::new();
        let f = inodes.lookup("/f");
        inodes.rename("/f", "/d/f");
        assert_eq!(inodes.path(f), Some("/d/f"));
        inodes.rename("/d/f", "/g");
        assert_eq!(inodes.path(f), Some("/g"));
        inodes.rename("/", "/x");
        assert_eq!(inodes.path(ROOT), Some("/"));
    }

    #[test]
    fn pages_are_kept_only_for_an_unchanged_file() {
        let mut inodes = Inodes::new();
        let f = inodes.lookup("/f");
        assert!(!inodes.opened(f, version(1, 10)), "first open");
        assert!(inodes.opened(f, version(1, 10)));
        assert!(!inodes.opened(f, version(2, 10)), "modified");
        assert!(!inodes.opened(f, version(2, 11)), "grown");
        assert!(inodes.opened(f, version(2, 11)));
        assert!(!inodes.opened(999, version(2, 11)));
    }
}
