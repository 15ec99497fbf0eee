//! One notion of "ours": the cgroup roots ffrtmp's jobs live under, kept in the runtime
//! directory (`/run/ffrtmp`, or `$FFRTMP_RUNTIME_DIR`).
//!
//! - `cgroup-root`: the daemon's resolved root, written at start. `ffrtmp run` and `ffrtmp
//!   attach` put their jobs there by default, so the daemon sees them as already placed.
//! - `tool-roots`: every root `run`/`attach` put a job under, one per line. The daemon
//!   never moves a process that lies under one of them, whatever `--cgroup-root` said.
//!
//! Under systemd the directory is the unit's `RuntimeDirectory=` (kept across restarts).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub const RUNTIME_DIR_ENV: &str = "FFRTMP_RUNTIME_DIR";
pub const DEFAULT_RUNTIME_DIR: &str = "/run/ffrtmp";
const ROOT_FILE: &str = "cgroup-root";
const TOOL_ROOTS_FILE: &str = "tool-roots";

/// The runtime directory.
pub fn runtime_dir() -> PathBuf {
    std::env::var_os(RUNTIME_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RUNTIME_DIR))
}

/// The daemon publishes the root its jobs go under.
pub fn publish_root(dir: &Path, root: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    crate::record::state::write_atomic(&dir.join(ROOT_FILE), format!("{root}\n").as_bytes())
}

/// The root the daemon published, if it did.
pub fn published_root(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(ROOT_FILE)).ok()?;
    let root = text.trim();
    (root.starts_with('/') && root.len() > 1).then(|| root.to_string())
}

/// `run`/`attach` record the root they place a job under. One `write` of one line with
/// `O_APPEND`: concurrent tools never interleave.
pub fn register_tool_root(dir: &Path, root: &str) -> std::io::Result<()> {
    if read_roots(&dir.join(TOOL_ROOTS_FILE))
        .iter()
        .any(|r| r == root)
    {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dir.join(TOOL_ROOTS_FILE))?;
    f.write_all(format!("{root}\n").as_bytes())
}

fn read_roots(path: &Path) -> Vec<String> {
    let mut roots: Vec<String> = std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('/') && l.len() > 1)
        .map(|l| l.trim_end_matches('/').to_string())
        .collect();
    roots.sort();
    roots.dedup();
    roots
}

/// The tool roots, re-read when the file changes (one `stat` per look).
#[derive(Debug)]
pub struct ToolRoots {
    path: PathBuf,
    seen: Option<(SystemTime, u64)>,
    roots: Vec<String>,
}

impl ToolRoots {
    pub fn new(dir: &Path) -> Self {
        let mut t = ToolRoots {
            path: dir.join(TOOL_ROOTS_FILE),
            seen: None,
            roots: Vec::new(),
        };
        t.refresh();
        t
    }

    /// Re-read if the file changed; `true` when the list changed.
    pub fn refresh(&mut self) -> bool {
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        if stamp == self.seen {
            return false;
        }
        self.seen = stamp;
        let roots = read_roots(&self.path);
        let changed = roots != self.roots;
        self.roots = roots;
        changed
    }

    pub fn roots(&self) -> &[String] {
        &self.roots
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_root_and_tool_roots() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("run");
        assert_eq!(published_root(&d), None);
        publish_root(&d, "/system.slice/ffrtmp-governed.scope/governed").unwrap();
        assert_eq!(
            published_root(&d).as_deref(),
            Some("/system.slice/ffrtmp-governed.scope/governed")
        );
        let mut t = ToolRoots::new(&d);
        assert!(t.roots().is_empty());
        register_tool_root(&d, "/jobs/b").unwrap();
        register_tool_root(&d, "/jobs/a").unwrap();
        register_tool_root(&d, "/jobs/b").unwrap();
        assert!(t.refresh());
        assert_eq!(t.roots(), ["/jobs/a", "/jobs/b"]);
        assert!(!t.refresh(), "unchanged file, nothing re-read");
        let text = std::fs::read_to_string(d.join(TOOL_ROOTS_FILE)).unwrap();
        assert_eq!(
            text.lines().count(),
            2,
            "a root is registered once: {text:?}"
        );
    }

    #[test]
    fn junk_lines_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(TOOL_ROOTS_FILE),
            "/ok\n\nrelative\n/\n  /spaced/ \n",
        )
        .unwrap();
        std::fs::write(dir.path().join(ROOT_FILE), "not a path\n").unwrap();
        assert_eq!(ToolRoots::new(dir.path()).roots(), ["/ok", "/spaced"]);
        assert_eq!(published_root(dir.path()), None);
    }
}
