//! Which binaries the gate holds: an inode mark per target binary, found on the daemon's
//! `PATH` at start, learned from every placed target's exe, and kept across package
//! upgrades. An upgrade renames a new file over the marked one; the new inode has no mark,
//! so the parent directory is watched (inotify) and every watched path whose inode changed
//! is marked again.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::inotify;

use super::fanotify::Group;

/// What a marked inode is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub target: String,
    pub path: PathBuf,
}

pub type Inode = (u64, u64);

/// A binary the gate holds, as the state file lists it for `ffrtmp status` (the path as
/// text: one that is not UTF-8 is shown lossily, never fails the state file's write).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeldBinary {
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub target: String,
}

pub struct Marks {
    by_inode: HashMap<Inode, Arc<Mark>>,
    /// Every marked path (resolved) and the inode it had when marked.
    by_path: BTreeMap<PathBuf, Inode>,
    /// Watched directories, by watch descriptor.
    dirs: HashMap<i32, PathBuf>,
    inotify: OwnedFd,
    /// Marks were added or removed since `take_changed`.
    changed: bool,
}

/// The executable files named after a target in the directories of `path_var`.
pub fn on_path(path_var: &str, targets: &[String]) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    for dir in path_var.split(':').filter(|d| d.starts_with('/')) {
        for t in targets {
            let p = Path::new(dir).join(t);
            let exec = std::fs::metadata(&p)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
            if exec {
                found.push((p, t.clone()));
            }
        }
    }
    found
}

impl Marks {
    pub fn new() -> io::Result<Marks> {
        let inotify =
            inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)?;
        Ok(Marks {
            by_inode: HashMap::new(),
            by_path: BTreeMap::new(),
            dirs: HashMap::new(),
            inotify,
            changed: false,
        })
    }

    /// The descriptor that becomes readable when a watched directory changes.
    pub fn watch_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.inotify.as_fd()
    }

    pub fn len(&self) -> usize {
        self.by_inode.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_inode.is_empty()
    }

    pub fn get(&self, inode: Inode) -> Option<&Arc<Mark>> {
        self.by_inode.get(&inode)
    }

    /// The marked binaries, for the state file (`ffrtmp status`), if they changed since
    /// the last call.
    pub fn take_changed(&mut self) -> Option<Vec<HeldBinary>> {
        if !std::mem::take(&mut self.changed) {
            return None;
        }
        let held = self.by_path.iter().filter_map(|(p, i)| {
            let m = self.by_inode.get(i)?;
            Some(HeldBinary {
                path: p.to_string_lossy().into_owned(),
                target: m.target.clone(),
            })
        });
        Some(held.collect())
    }

    /// The list could not be handed on: hand it on at the next `take_changed`.
    pub fn changed_again(&mut self) {
        self.changed = true;
    }

    /// Mark the binary at `path` as `target`: `Ok(true)` if it was not marked yet. The
    /// file itself, links resolved, must be named after the target: an interpreter (the
    /// exe of a script) or a multi-call binary a link names is never marked.
    pub fn add(&mut self, group: &Group, path: &Path, target: &str) -> io::Result<bool> {
        let real = std::fs::canonicalize(path)?;
        if real
            .file_name()
            .is_none_or(|n| n.as_encoded_bytes() != target.as_bytes())
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the file is {}, not named {target}", real.display()),
            ));
        }
        let meta = std::fs::metadata(&real)?;
        let inode = (meta.dev(), meta.ino());
        if self.by_path.get(&real) == Some(&inode) && self.by_inode.contains_key(&inode) {
            return Ok(false);
        }
        group.mark(&real)?;
        if let Some(dir) = real.parent() {
            self.watch(dir);
        }
        let mark = Arc::new(Mark {
            target: target.to_string(),
            path: real.clone(),
        });
        self.by_inode.insert(inode, mark);
        self.by_path.insert(real, inode);
        self.changed = true;
        Ok(true)
    }

    fn watch(&mut self, dir: &Path) {
        if self.dirs.values().any(|d| d == dir) {
            return;
        }
        let flags = inotify::WatchFlags::MOVED_TO
            | inotify::WatchFlags::CREATE
            | inotify::WatchFlags::CLOSE_WRITE
            | inotify::WatchFlags::ATTRIB
            | inotify::WatchFlags::ONLYDIR;
        match inotify::add_watch(&self.inotify, dir, flags) {
            Ok(wd) => {
                self.dirs.insert(wd, dir.to_path_buf());
            }
            Err(e) => tracing::warn!(
                "cannot watch {} for upgrades ({e}): a target binary replaced there is held again only after a restart",
                dir.display()
            ),
        }
    }

    /// A watched directory changed: drain its events, and mark again every path whose
    /// inode is another now. Returns the paths marked again.
    pub fn refresh(&mut self, group: &Group) -> Vec<(PathBuf, io::Result<()>)> {
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(&self.inotify, &mut buf);
        while reader.next().is_ok() {}
        let mut again = Vec::new();
        let stale: Vec<(PathBuf, Inode)> = self
            .by_path
            .iter()
            .filter_map(|(p, old)| {
                let now = std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
                (now.is_some() && now != Some(*old)).then(|| (p.clone(), *old))
            })
            .collect();
        for (path, old) in stale {
            // The path keeps its old inode until the new one is marked: tried again at
            // the next change if marking fails.
            let Some(mark) = self.by_inode.remove(&old) else {
                continue;
            };
            let r = self.add(group, &path, &mark.target).map(|_| ());
            if r.is_err() {
                self.by_inode.insert(old, mark);
            }
            again.push((path, r));
        }
        again
    }

    /// Mark every marked path again in a new group (the old one was let go), calling
    /// `beat` before each (the watchdog's heartbeat); how many were marked, of how many.
    pub fn mark_all(&self, group: &Group, beat: impl Fn()) -> (usize, usize) {
        let marked = (self.by_path.keys())
            .filter(|p| {
                beat();
                group.mark(p).is_ok()
            })
            .count();
        (marked, self.by_path.len())
    }

    /// Keep the marks of `targets` only (a reload removed the others).
    pub fn retain(&mut self, group: &Group, targets: &[String]) {
        let gone: Vec<Inode> = (self.by_inode.iter())
            .filter(|(_, m)| !targets.contains(&m.target))
            .map(|(i, _)| *i)
            .collect();
        for i in gone {
            if let Some(m) = self.by_inode.remove(&i) {
                group.unmark(&m.path);
                self.by_path.remove(&m.path);
                self.changed = true;
            }
        }
    }
}
