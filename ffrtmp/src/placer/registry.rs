//! One notion of "ours": the cgroup roots ffrtmp's jobs live under, kept in the runtime
//! directory (`/run/ffrtmp`, or `$FFRTMP_RUNTIME_DIR`).
//!
//! - `cgroup-root`: the daemon's resolved root, written at start. `ffrtmp run` and `ffrtmp
//!   attach` put their jobs there by default, so the daemon sees them as already placed.
//! - `tool-roots`: every root `run`/`attach` put a job under, one per line. The daemon
//!   never moves a process that lies under one of them, whatever `--cgroup-root` said.
//! - `daemon`: the running daemon's PID, start time and state file, written at start, so
//!   `ffrtmp status` finds the state wherever `--state-path` put it.
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
const DAEMON_FILE: &str = "daemon";

/// The runtime directory.
pub fn runtime_dir() -> PathBuf {
    std::env::var_os(RUNTIME_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RUNTIME_DIR))
}

/// The daemon publishes the root its jobs go under.
pub fn publish_root(dir: &Path, root: &str) -> std::io::Result<()> {
    crate::durable::write_atomic(&dir.join(ROOT_FILE), format!("{root}\n").as_bytes())
}

/// The root the daemon published, if it did.
pub fn published_root(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(ROOT_FILE)).ok()?;
    let root = text.trim();
    (root.starts_with('/') && root.len() > 1).then(|| root.to_string())
}

/// The daemon publishes who it is and where its state file is: `<pid> <start time>
/// <state path>` on one line.
pub fn publish_daemon(dir: &Path, pid: u32, start_time: u64, state: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let mut line = format!("{pid} {start_time} ").into_bytes();
    line.extend_from_slice(state.as_os_str().as_bytes());
    line.push(b'\n');
    crate::durable::write_atomic(&dir.join(DAEMON_FILE), &line)
}

/// The state file of the daemon that published itself in `dir`, if that daemon still runs
/// (the same PID with the same start time: a reused PID is another process).
pub fn running_daemon_state(dir: &Path, proc: &crate::process::ProcFs) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let text = std::fs::read(dir.join(DAEMON_FILE)).ok()?;
    let line = text.strip_suffix(b"\n").unwrap_or(&text);
    let mut f = line.splitn(3, |b| *b == b' ');
    let pid: u32 = std::str::from_utf8(f.next()?).ok()?.parse().ok()?;
    let start: u64 = std::str::from_utf8(f.next()?).ok()?.parse().ok()?;
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(f.next()?));
    let id = crate::process::ProcessId {
        pid,
        start_time: start,
    };
    (proc.is_alive(id).ok()? && path.is_absolute()).then_some(path)
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
    fn the_running_daemon_is_found_and_a_dead_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let proc = crate::process::ProcFs::system();
        let me = std::process::id();
        let start = proc.stat(me).unwrap().start_time;
        assert_eq!(running_daemon_state(dir.path(), &proc), None);
        let state = Path::new("/work dir/.state/watch-state.json");
        publish_daemon(dir.path(), me, start, state).unwrap();
        assert_eq!(
            running_daemon_state(dir.path(), &proc).as_deref(),
            Some(state)
        );
        // The same PID with another start time: a reused PID, not the daemon.
        publish_daemon(dir.path(), me, start + 1, state).unwrap();
        assert_eq!(running_daemon_state(dir.path(), &proc), None);
        std::fs::write(dir.path().join(DAEMON_FILE), "garbage\n").unwrap();
        assert_eq!(running_daemon_state(dir.path(), &proc), None);
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
