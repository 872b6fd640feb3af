//! The table of what the agent serves: each volume of the app container, by the path the app
//! (and so the laptop) sees it at, and where the agent finds it in its own file system.
//!
//! Plain code, no I/O: the table is parsed and checked once ([`Tables::parse`]), one
//! [`Mounts`] per app container (a pod's containers may mount different volumes at one path), and
//! [`Mounts::locate`] tells which mount a requested path is in, or whether it is one of the
//! directories above the mounts that the agent shows as read-only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The environment variable holding the table, a JSON array of
/// `{"container": "app", "path": "/etc/config", "source": "/tether/volumes/app/etc/config",
/// "readOnly": true}`.
pub const MOUNTS_ENV: &str = "TETHER_MOUNTS";

/// One entry of [`MOUNTS_ENV`], as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MountSpec {
    /// The app container that mounts it; absent in tables written before the agent told
    /// containers apart.
    #[serde(default)]
    container: Option<String>,
    path: String,
    source: String,
    #[serde(default)]
    read_only: bool,
}

/// Why a path is not one the agent accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadPath {
    /// It does not start with `/`.
    #[error("not an absolute path")]
    NotAbsolute,
    /// It has an empty, `.` or `..` component (or a trailing `/`).
    #[error("not a normalized path (an empty, `.` or `..` component)")]
    NotNormalized,
    /// It contains a NUL byte.
    #[error("contains a NUL byte")]
    Nul,
}

/// Why the mount table was refused.
#[derive(Debug, thiserror::Error)]
pub enum MountsError {
    /// The text is not a JSON array of mounts.
    #[error("not a JSON array of {{\"path\", \"source\", \"readOnly\"}} objects")]
    Json(#[source] serde_json::Error),
    /// A mount's container path or source is not absolute and normalized.
    #[error("the {field} `{path}` of a mount")]
    Path {
        /// `path` or `source`.
        field: &'static str,
        /// The path as written.
        path: String,
        #[source]
        reason: BadPath,
    },
    /// Two mounts of one container have the same container path.
    #[error("`{0}` is mounted twice")]
    Duplicate(String),
}

/// Every app container's mounts: [`MOUNTS_ENV`] parsed and checked, grouped by container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tables {
    by_container: BTreeMap<String, Mounts>,
    /// The rows that name no container (a table written before containers were told apart):
    /// served whichever container is asked for.
    unnamed: Mounts,
}

impl Tables {
    /// Parses and checks [`MOUNTS_ENV`]'s JSON: no two mounts of one container share a path.
    pub fn parse(json: &str) -> Result<Self, MountsError> {
        let specs: Vec<MountSpec> = serde_json::from_str(json).map_err(MountsError::Json)?;
        let mut by_container: BTreeMap<String, Vec<Mount>> = BTreeMap::new();
        let mut unnamed = Vec::new();
        for spec in specs {
            let mount = Mount::new(&spec.path, spec.source, spec.read_only)?;
            match spec.container {
                Some(container) => by_container.entry(container).or_default().push(mount),
                None => unnamed.push(mount),
            }
        }
        Ok(Self {
            by_container: by_container
                .into_iter()
                .map(|(container, list)| Ok((container, Mounts::new(list)?)))
                .collect::<Result<_, MountsError>>()?,
            unnamed: Mounts::new(unnamed)?,
        })
    }

    /// One container's table (`None`: the rows that name no container).
    pub fn insert(&mut self, container: Option<&str>, mounts: Mounts) {
        match container {
            Some(container) => {
                self.by_container.insert(container.to_owned(), mounts);
            }
            None => self.unnamed = mounts,
        }
    }

    /// Each container's table, by name, and then the rows that name no container (`None`).
    pub fn into_parts(self) -> (BTreeMap<String, Mounts>, Mounts) {
        (self.by_container, self.unnamed)
    }
}

/// One volume served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    path: String,
    components: Vec<String>,
    source: PathBuf,
    read_only: bool,
}

impl Mount {
    /// Checks a mount: both paths absolute and normalized.
    pub fn new(
        path: &str,
        source: impl Into<PathBuf>,
        read_only: bool,
    ) -> Result<Self, MountsError> {
        fn bad<'a>(field: &'static str, path: &'a str) -> impl FnOnce(BadPath) -> MountsError + 'a {
            move |reason| MountsError::Path {
                field,
                path: path.to_owned(),
                reason,
            }
        }
        let components = split(path)
            .map_err(bad("path", path))?
            .into_iter()
            .map(str::to_owned)
            .collect();
        let source = source.into();
        let text = source.to_string_lossy();
        split(&text).map_err(bad("source", &text))?;
        Ok(Self {
            path: path.to_owned(),
            components,
            source,
            read_only,
        })
    }

    /// The container path, as the app and the laptop see it.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Where the agent finds the volume.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Whether the app mounts it read-only (every change is refused).
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Whether the mount's path starts with `components` (and is longer, when `strictly`).
    fn is_below(&self, components: &[&str], strictly: bool) -> bool {
        let longer = if strictly {
            self.components.len() > components.len()
        } else {
            self.components.len() >= components.len()
        };
        longer && self.components.iter().zip(components).all(|(a, b)| a == b)
    }

    /// Whether `components` lies in this mount (or is its root).
    fn contains(&self, components: &[&str]) -> bool {
        components.len() >= self.components.len()
            && self.components.iter().zip(components).all(|(a, b)| a == b)
    }
}

/// The mounts served, sorted by container path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mounts {
    list: Vec<Mount>,
}

/// Where a requested path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location<'p> {
    /// In the mount at `index` of [`Mounts::iter`]; `rel` are the components below its root
    /// (none: the root itself).
    Mounted { index: usize, rel: Vec<&'p str> },
    /// Not in a mount but above one (`/`, `/etc` when `/etc/config` is mounted): a read-only
    /// directory whose entries are the next components of the mounts below it.
    Virtual { components: Vec<&'p str> },
    /// Nowhere served; `parent_virtual` when its directory is [`Location::Virtual`] (creating
    /// it there is refused as read-only rather than not found).
    Outside { parent_virtual: bool },
}

impl Mounts {
    /// The rows of [`MOUNTS_ENV`]'s JSON that name no container, parsed and checked.
    #[cfg(test)]
    pub fn parse(json: &str) -> Result<Self, MountsError> {
        Ok(Tables::parse(json)?.into_parts().1)
    }

    /// A table of checked mounts; no two may share a container path.
    pub fn new(mut list: Vec<Mount>) -> Result<Self, MountsError> {
        list.sort_by(|a, b| a.path.cmp(&b.path));
        if let Some(pair) = list.windows(2).find(|w| w[0].path == w[1].path) {
            return Err(MountsError::Duplicate(pair[0].path.clone()));
        }
        Ok(Self { list })
    }

    /// The mounts, sorted by container path.
    pub fn iter(&self) -> impl Iterator<Item = &Mount> {
        self.list.iter()
    }

    /// The mount at `index` of [`Mounts::iter`].
    pub fn get(&self, index: usize) -> Option<&Mount> {
        self.list.get(index)
    }

    /// How many mounts there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether nothing is served.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The container paths, sorted: [`FilesInfo::mounts`](tether_proto::files::FilesInfo).
    pub fn container_paths(&self) -> Vec<String> {
        self.list.iter().map(|m| m.path.clone()).collect()
    }

    /// Where `path` (absolute, normalized) is: in the mount whose path is its longest
    /// component-wise prefix, above a mount, or nowhere.
    pub fn locate<'p>(&self, path: &'p str) -> Result<Location<'p>, BadPath> {
        let components = split(path)?;
        let deepest = self
            .list
            .iter()
            .enumerate()
            .filter(|(_, m)| m.contains(&components))
            .max_by_key(|(_, m)| m.components.len());
        if let Some((index, mount)) = deepest {
            let rel = components[mount.components.len()..].to_vec();
            return Ok(Location::Mounted { index, rel });
        }
        if self.list.iter().any(|m| m.is_below(&components, true)) {
            return Ok(Location::Virtual { components });
        }
        let parent_virtual = match components.split_last() {
            Some((_, parent)) => self.list.iter().any(|m| m.is_below(parent, true)),
            None => false,
        };
        Ok(Location::Outside { parent_virtual })
    }

    /// The entries the mounts make in the directory `components`: the next component of each
    /// mount below it, with the mount's index when that is the mount's root.
    pub fn children(&self, components: &[&str]) -> BTreeMap<&str, Option<usize>> {
        let mut children = BTreeMap::new();
        for (index, mount) in self.list.iter().enumerate() {
            if !mount.is_below(components, true) {
                continue;
            }
            let name = mount.components[components.len()].as_str();
            if mount.components.len() == components.len() + 1 {
                children.insert(name, Some(index));
            } else {
                children.entry(name).or_insert(None);
            }
        }
        children
    }

    /// Only the mounts `keep` says yes to (in order).
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Mount) -> bool) {
        self.list.retain(|m| keep(m));
    }
}

/// The components of an absolute, normalized path (`/` has none).
pub fn split(path: &str) -> Result<Vec<&str>, BadPath> {
    if path.contains('\0') {
        return Err(BadPath::Nul);
    }
    let rest = path.strip_prefix('/').ok_or(BadPath::NotAbsolute)?;
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let components: Vec<&str> = rest.split('/').collect();
    if components.iter().any(|c| matches!(*c, "" | "." | "..")) {
        return Err(BadPath::NotNormalized);
    }
    Ok(components)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Mounts {
        Mounts::parse(
            r#"[
                {"path": "/var/run/secrets/kubernetes.io/serviceaccount", "source": "/tether/volumes/1", "readOnly": true},
                {"path": "/etc/config", "source": "/tether/volumes/0", "readOnly": true},
                {"path": "/data", "source": "/tether/volumes/2"},
                {"path": "/data/cache", "source": "/tether/volumes/3"}
            ]"#,
        )
        .unwrap()
    }

    #[test]
    fn the_table_parses_sorted_and_refuses_bad_paths_and_duplicates() {
        let mounts = table();
        assert_eq!(
            mounts.container_paths(),
            [
                "/data",
                "/data/cache",
                "/etc/config",
                "/var/run/secrets/kubernetes.io/serviceaccount"
            ]
        );
        assert!(mounts.get(2).unwrap().read_only());
        assert!(
            !mounts.get(0).unwrap().read_only(),
            "readOnly defaults to false"
        );
        assert_eq!(
            mounts.get(0).unwrap().source(),
            Path::new("/tether/volumes/2")
        );
        assert!(Mounts::parse("[]").unwrap().is_empty());

        let refused = |json: &str| Mounts::parse(json).unwrap_err().to_string();
        assert_eq!(
            refused(r#"[{"path": "etc/config", "source": "/v"}]"#),
            "the path `etc/config` of a mount"
        );
        assert_eq!(
            refused(r#"[{"path": "/etc/../config", "source": "/v"}]"#),
            "the path `/etc/../config` of a mount"
        );
        assert_eq!(
            refused(r#"[{"path": "/etc/config/", "source": "/v"}]"#),
            "the path `/etc/config/` of a mount"
        );
        assert_eq!(
            refused(r#"[{"path": "/etc", "source": "/v/./x"}]"#),
            "the source `/v/./x` of a mount"
        );
        assert_eq!(
            refused(r#"[{"path": "/a", "source": "/v"}, {"path": "/a", "source": "/w"}]"#),
            "`/a` is mounted twice"
        );
        assert!(matches!(
            Mounts::parse(r#"[{"path": "/a", "source": "/v", "readonly": true}]"#),
            Err(MountsError::Json(_))
        ));
        assert!(matches!(
            Mounts::parse(r#"{"path": "/a"}"#),
            Err(MountsError::Json(_))
        ));
    }

    #[test]
    fn each_container_has_its_own_table_and_may_share_paths_with_others() {
        let tables = Tables::parse(
            r#"[
                {"container": "app", "path": "/etc/config", "source": "/tether/volumes/app/etc/config"},
                {"container": "cache", "path": "/etc/config", "source": "/tether/volumes/cache/etc/config", "readOnly": true},
                {"container": "app", "path": "/data", "source": "/tether/volumes/app/data"}
            ]"#,
        )
        .unwrap();
        let (by_container, unnamed) = tables.into_parts();
        assert!(unnamed.is_empty());
        assert_eq!(
            by_container["app"].container_paths(),
            ["/data", "/etc/config"]
        );
        let cache = &by_container["cache"];
        assert_eq!(cache.container_paths(), ["/etc/config"]);
        assert!(cache.get(0).unwrap().read_only());
        assert_eq!(
            cache.get(0).unwrap().source(),
            Path::new("/tether/volumes/cache/etc/config")
        );
        let twice = Tables::parse(
            r#"[{"container": "app", "path": "/a", "source": "/v"},
                {"container": "app", "path": "/a", "source": "/w"}]"#,
        );
        assert_eq!(twice.unwrap_err().to_string(), "`/a` is mounted twice");
    }

    #[test]
    fn paths_are_located_in_the_deepest_mount_or_above_one() {
        let mounts = table();
        let at = |path| mounts.locate(path).unwrap();
        assert_eq!(
            at("/data/cache/x/y"),
            Location::Mounted {
                index: 1,
                rel: vec!["x", "y"]
            }
        );
        assert_eq!(
            at("/data/cachet"),
            Location::Mounted {
                index: 0,
                rel: vec!["cachet"]
            },
            "prefixes are compared by component"
        );
        assert_eq!(
            at("/etc/config"),
            Location::Mounted {
                index: 2,
                rel: vec![]
            }
        );
        assert_eq!(at("/"), Location::Virtual { components: vec![] });
        assert_eq!(
            at("/var/run/secrets"),
            Location::Virtual {
                components: vec!["var", "run", "secrets"]
            }
        );
        assert_eq!(
            at("/etc/passwd"),
            Location::Outside {
                parent_virtual: true
            }
        );
        assert_eq!(
            at("/usr/bin"),
            Location::Outside {
                parent_virtual: false
            }
        );
        for bad in [
            "",
            "etc",
            "/etc/",
            "/etc//config",
            "/etc/./config",
            "/etc/..",
            "/a\0b",
        ] {
            assert!(mounts.locate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_directory_above_mounts_lists_their_next_components() {
        let mounts = table();
        let names = |c: &[&str]| {
            mounts
                .children(c)
                .into_iter()
                .map(|(n, i)| (n.to_owned(), i))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(&[]),
            [
                ("data".to_owned(), Some(0)),
                ("etc".to_owned(), None),
                ("var".to_owned(), None)
            ]
        );
        assert_eq!(names(&["data"]), [("cache".to_owned(), Some(1))]);
        assert_eq!(names(&["var", "run"]), [("secrets".to_owned(), None)]);
        assert!(names(&["usr"]).is_empty());
    }
}
