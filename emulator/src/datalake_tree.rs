//! The in-memory hierarchical namespace behind both Data Lake fakes: files
//! and directories with POSIX-style owner, group and mode, plus *generated*
//! directories whose children are computed on the fly, so a test can list a
//! million-entry folder without the fake holding a million nodes.
//!
//! Paths are component lists; the map is ordered by them, which is a
//! depth-first pre-order walk with children sorted by name (the order both
//! listings use). This module knows nothing about HTTP.

use std::{
    collections::BTreeMap,
    ops::Bound,
    time::{SystemTime, UNIX_EPOCH},
};

/// A path split into components; the root is empty.
pub(crate) type Key = Vec<String>;

/// A fixed time (2023-02-22T02:41:28Z) for generated entries, so listings
/// are reproducible.
const GENERATED_TIME_MS: u64 = 1_677_033_688_000;

/// What a node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    File {
        content: Vec<u8>,
    },
    Directory,
    /// A directory of `count` files named `file-00000000` .. computed on demand.
    Generated {
        count: u64,
    },
}

/// A stored node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub(crate) kind: Kind,
    pub(crate) created_ms: u64,
    pub(crate) modified_ms: u64,
    pub(crate) accessed_ms: u64,
    pub(crate) owner: String,
    pub(crate) group: String,
    /// Permission bits, e.g. 0o770.
    pub(crate) mode: u16,
}

/// A node as listings show it (stored or generated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) key: Key,
    pub(crate) is_directory: bool,
    pub(crate) length: u64,
    pub(crate) created_ms: u64,
    pub(crate) modified_ms: u64,
    pub(crate) accessed_ms: u64,
    pub(crate) owner: String,
    pub(crate) group: String,
    pub(crate) mode: u16,
}

impl Entry {
    /// The last component ("" for the root).
    pub(crate) fn name(&self) -> &str {
        self.key.last().map(String::as_str).unwrap_or("")
    }

    /// Components joined with `/`, no leading slash.
    pub(crate) fn path(&self) -> String {
        self.key.join("/")
    }
}

/// Why a tree change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("{0} exists and is a file")]
    NotADirectory(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0} is a generated directory; it cannot hold other entries")]
    InsideGenerated(String),
    #[error("{0} is not a valid path")]
    InvalidPath(String),
}

/// The namespace.
#[derive(Debug, Clone)]
pub(crate) struct Tree {
    nodes: BTreeMap<Key, Node>,
    owner: String,
    group: String,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// Splits `/a/b/` into `["a", "b"]`; `.`/`..` and empty names are refused.
pub(crate) fn split(path: &str) -> Result<Key, TreeError> {
    let key: Key = path
        .split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    if key.iter().any(|c| c == "." || c == "..") {
        return Err(TreeError::InvalidPath(path.to_string()));
    }
    Ok(key)
}

fn generated_name(index: u64) -> String {
    format!("file-{index:08}")
}

impl Tree {
    /// An empty tree whose root belongs to `owner`/`group`.
    pub(crate) fn new(owner: &str, group: &str) -> Self {
        let now = now_ms();
        let mut nodes = BTreeMap::new();
        nodes.insert(
            Key::new(),
            Node {
                kind: Kind::Directory,
                created_ms: now,
                modified_ms: now,
                accessed_ms: now,
                owner: owner.to_string(),
                group: group.to_string(),
                mode: 0o770,
            },
        );
        Self {
            nodes,
            owner: owner.to_string(),
            group: group.to_string(),
        }
    }

    fn new_node(&self, kind: Kind, mode: u16) -> Node {
        let now = now_ms();
        Node {
            kind,
            created_ms: now,
            modified_ms: now,
            accessed_ms: now,
            owner: self.owner.clone(),
            group: self.group.clone(),
            mode,
        }
    }

    /// Creates `key` and any missing parents as directories.
    pub(crate) fn mkdirs(&mut self, key: &[String]) -> Result<(), TreeError> {
        for depth in 1..=key.len() {
            let prefix = &key[..depth];
            match self.nodes.get(prefix).map(|n| &n.kind) {
                Some(Kind::Directory) => {}
                Some(Kind::File { .. }) => return Err(TreeError::NotADirectory(prefix.join("/"))),
                Some(Kind::Generated { .. }) => {
                    return Err(TreeError::InsideGenerated(prefix.join("/")))
                }
                None => {
                    let node = self.new_node(Kind::Directory, 0o770);
                    self.nodes.insert(prefix.to_vec(), node);
                }
            }
        }
        Ok(())
    }

    /// Writes a file, creating its parents. Refuses to replace a directory,
    /// or an existing file unless `overwrite`.
    pub(crate) fn create_file(
        &mut self,
        key: &[String],
        content: Vec<u8>,
        overwrite: bool,
        mode: Option<u16>,
    ) -> Result<(), TreeError> {
        let Some((_, parent)) = key.split_last() else {
            return Err(TreeError::InvalidPath("/".into()));
        };
        match self.nodes.get(key).map(|n| &n.kind) {
            Some(Kind::File { .. }) if !overwrite => {
                return Err(TreeError::AlreadyExists(key.join("/")))
            }
            Some(Kind::Directory | Kind::Generated { .. }) => {
                return Err(TreeError::AlreadyExists(key.join("/")))
            }
            _ => {}
        }
        self.mkdirs(parent)?;
        let node = self.new_node(Kind::File { content }, mode.unwrap_or(0o770));
        self.nodes.insert(key.to_vec(), node);
        Ok(())
    }

    /// Adds a directory of `count` generated files (`file-00000000`, ...).
    pub(crate) fn add_generated(&mut self, key: &[String], count: u64) -> Result<(), TreeError> {
        if let Some((_, parent)) = key.split_last() {
            self.mkdirs(parent)?;
        } else {
            return Err(TreeError::InvalidPath("/".into()));
        }
        if self.nodes.contains_key(key) {
            return Err(TreeError::AlreadyExists(key.join("/")));
        }
        let mut node = self.new_node(Kind::Generated { count }, 0o750);
        node.created_ms = GENERATED_TIME_MS;
        node.modified_ms = GENERATED_TIME_MS;
        self.nodes.insert(key.to_vec(), node);
        Ok(())
    }

    /// The node at `key`, including generated files.
    pub(crate) fn get(&self, key: &[String]) -> Option<Entry> {
        if let Some(node) = self.nodes.get(key) {
            return Some(entry(key.to_vec(), node));
        }
        let (name, parent) = key.split_last()?;
        let node = self.nodes.get(parent)?;
        let Kind::Generated { count } = node.kind else {
            return None;
        };
        let index = generated_index(name)?;
        (index < count).then(|| generated_entry(parent, node, index))
    }

    /// The stored content of a file.
    pub(crate) fn content(&self, key: &[String]) -> Option<&[u8]> {
        match &self.nodes.get(key)?.kind {
            Kind::File { content } => Some(content),
            _ => None,
        }
    }

    /// Up to `limit` entries under directory `dir`, in pre-order, strictly
    /// after `after` (a full key) when given; direct children only unless
    /// `recursive`. Returns the entries and whether more follow.
    pub(crate) fn list(
        &self,
        dir: &[String],
        recursive: bool,
        after: Option<&[String]>,
        limit: usize,
    ) -> (Vec<Entry>, bool) {
        let mut out = Vec::new();
        // One more than asked, to learn whether more follow.
        let want = limit.saturating_add(1);
        let push = |out: &mut Vec<Entry>, e: Entry| {
            out.push(e);
            out.len() >= want
        };

        // Resume inside a generated directory (the listed one, or one met
        // during a recursive walk) before walking the stored nodes.
        if let Some(after) = after {
            match self.nodes.get(after) {
                // The previous page ended on a generated directory met in a
                // recursive walk: its children come next.
                Some(node) => {
                    if let Kind::Generated { count } = node.kind {
                        if recursive && after.len() > dir.len() {
                            for index in 0..count {
                                if push(&mut out, generated_entry(after, node, index)) {
                                    return finish(out, limit);
                                }
                            }
                        }
                    }
                }
                // The previous page ended inside a generated directory.
                None => {
                    if let Some((last, parent)) = after.split_last() {
                        let depth_ok = parent.len() == dir.len() || recursive;
                        if let Some(node) = self.nodes.get(parent) {
                            if let Kind::Generated { count } = node.kind {
                                if parent.starts_with(dir) && depth_ok {
                                    let start = first_generated_after(last, count);
                                    for index in start..count {
                                        if push(&mut out, generated_entry(parent, node, index)) {
                                            return finish(out, limit);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        } else if let Some(node) = self.nodes.get(dir) {
            if let Kind::Generated { count } = node.kind {
                for index in 0..count {
                    if push(&mut out, generated_entry(dir, node, index)) {
                        return finish(out, limit);
                    }
                }
            }
        }

        let start: Bound<&[String]> = match after {
            Some(after) if after.starts_with(dir) && after.len() > dir.len() => {
                Bound::Excluded(after)
            }
            _ => Bound::Excluded(dir),
        };
        for (key, node) in self.nodes.range::<[String], _>((start, Bound::Unbounded)) {
            if !key.starts_with(dir) {
                break;
            }
            let depth = key.len() - dir.len();
            if !recursive && depth != 1 {
                continue;
            }
            if push(&mut out, entry(key.clone(), node)) {
                return finish(out, limit);
            }
            if let (true, Kind::Generated { count }) = (recursive, &node.kind) {
                for index in 0..*count {
                    if push(&mut out, generated_entry(key, node, index)) {
                        return finish(out, limit);
                    }
                }
            }
        }
        finish(out, limit)
    }
}

fn finish(mut out: Vec<Entry>, limit: usize) -> (Vec<Entry>, bool) {
    let more = out.len() > limit;
    out.truncate(limit);
    (out, more)
}

fn entry(key: Key, node: &Node) -> Entry {
    let (is_directory, length) = match &node.kind {
        Kind::File { content } => (false, content.len() as u64),
        Kind::Directory | Kind::Generated { .. } => (true, 0),
    };
    Entry {
        key,
        is_directory,
        length,
        created_ms: node.created_ms,
        modified_ms: node.modified_ms,
        accessed_ms: node.accessed_ms,
        owner: node.owner.clone(),
        group: node.group.clone(),
        mode: node.mode,
    }
}

fn generated_entry(parent: &[String], node: &Node, index: u64) -> Entry {
    let mut key = parent.to_vec();
    key.push(generated_name(index));
    Entry {
        key,
        is_directory: false,
        length: 1024 + index % 4096,
        created_ms: GENERATED_TIME_MS,
        modified_ms: GENERATED_TIME_MS + index * 1000,
        accessed_ms: GENERATED_TIME_MS,
        owner: node.owner.clone(),
        group: node.group.clone(),
        mode: 0o640,
    }
}

fn generated_index(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("file-")?;
    (digits.len() == 8 && digits.chars().all(|c| c.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The first generated index whose name sorts after `name`.
fn first_generated_after(name: &str, count: u64) -> u64 {
    let (mut lo, mut hi) = (0, count);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if generated_name(mid).as_str() <= name {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// `rwxr-x---` for 0o750.
pub(crate) fn rwx(mode: u16) -> String {
    let mut s = String::with_capacity(9);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 0o7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(path: &str) -> Key {
        split(path).unwrap()
    }

    fn names(entries: &[Entry]) -> Vec<String> {
        entries.iter().map(Entry::path).collect()
    }

    fn sample() -> Tree {
        let mut tree = Tree::new("owner", "group");
        tree.create_file(&k("a/x.csv"), b"12345".to_vec(), false, None)
            .unwrap();
        tree.mkdirs(&k("a/sub/deeper")).unwrap();
        tree.create_file(&k("b.txt"), vec![], false, None).unwrap();
        tree.add_generated(&k("a/gen"), 5).unwrap();
        tree
    }

    #[test]
    fn direct_children_are_sorted_and_paged() {
        let tree = sample();
        let (all, more) = tree.list(&k("a"), false, None, 10);
        assert!(!more);
        assert_eq!(names(&all), ["a/gen", "a/sub", "a/x.csv"]);
        assert_eq!(all[2].length, 5);
        let (first, more) = tree.list(&k("a"), false, None, 2);
        assert!(more);
        let (rest, more) = tree.list(&k("a"), false, Some(&first[1].key), 2);
        assert!(!more);
        assert_eq!(names(&rest), ["a/x.csv"]);
    }

    #[test]
    fn recursive_walk_expands_generated_directories_and_resumes_inside_them() {
        let tree = sample();
        let (all, _) = tree.list(&k("a"), true, None, 100);
        assert_eq!(
            names(&all),
            [
                "a/gen",
                "a/gen/file-00000000",
                "a/gen/file-00000001",
                "a/gen/file-00000002",
                "a/gen/file-00000003",
                "a/gen/file-00000004",
                "a/sub",
                "a/sub/deeper",
                "a/x.csv"
            ]
        );
        // Every page size walks the same sequence, wherever pages break.
        for size in 1..=10 {
            let mut paged = Vec::new();
            let mut after: Option<Key> = None;
            loop {
                let (page, more) = tree.list(&k("a"), true, after.as_deref(), size);
                paged.extend(page.iter().map(Entry::path));
                if !more {
                    break;
                }
                after = page.last().map(|e| e.key.clone());
            }
            assert_eq!(paged, names(&all), "page size {size}");
        }
    }

    #[test]
    fn generated_directories_page_by_name() {
        let mut tree = Tree::new("o", "g");
        tree.add_generated(&k("big"), 1_000_000).unwrap();
        let (page, more) = tree.list(&k("big"), false, Some(&k("big/file-00499999")), 2);
        assert!(more);
        assert_eq!(names(&page), ["big/file-00500000", "big/file-00500001"]);
        let (tail, more) = tree.list(&k("big"), false, Some(&k("big/file-00999999")), 2);
        assert!(tail.is_empty() && !more);
        assert!(tree.get(&k("big/file-00000007")).is_some());
        assert!(tree.get(&k("big/file-01000000")).is_none());
        assert_eq!(
            tree.mkdirs(&k("big/inside")),
            Err(TreeError::InsideGenerated("big".into()))
        );
    }

    #[test]
    fn files_block_directories_and_overwrite_is_explicit() {
        let mut tree = sample();
        assert!(matches!(
            tree.mkdirs(&k("b.txt/x")),
            Err(TreeError::NotADirectory(_))
        ));
        assert!(matches!(
            tree.create_file(&k("a/x.csv"), vec![], false, None),
            Err(TreeError::AlreadyExists(_))
        ));
        tree.create_file(&k("a/x.csv"), vec![1], true, None)
            .unwrap();
        assert_eq!(tree.content(&k("a/x.csv")), Some(&[1u8][..]));
        assert!(split("/a/../b").is_err());
    }

    #[test]
    fn modes_render_as_rwx() {
        assert_eq!(rwx(0o750), "rwxr-x---");
        assert_eq!(rwx(0o640), "rw-r-----");
    }
}
