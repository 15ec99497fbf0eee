//! The cgroup backend interface, implemented for the unified hierarchy (`v2`) and for
//! legacy/hybrid hosts (`v1`), and the detection of which one this host has.

use std::io;
use std::path::{Path, PathBuf};

use super::error::PlaceError;
use super::limits::Controller;
use crate::config::Limits;
use crate::process::CgroupLine;

/// Which cgroup hierarchy the host uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    V1,
    V2,
}

impl std::fmt::Display for CgroupMode {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            CgroupMode::V1 => "v1 (legacy/hybrid)",
            CgroupMode::V2 => "v2 (unified)",
        })
    }
}

/// What `prepare_root` found.
#[derive(Debug, Clone, Default)]
pub struct RootReport {
    /// Controllers job cgroups under the root will have.
    pub available: Vec<Controller>,
    /// Controllers they will not have, each with the reason and the fix.
    pub missing: Vec<(Controller, String)>,
    /// Directories created on the way to the root (outermost first).
    pub created: Vec<PathBuf>,
}

/// Live numbers of one job cgroup, read from its own files.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub cpu_usec: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub oom_kills: Option<u64>,
    pub pids: Option<u64>,
}

/// One cgroup hierarchy implementation. Cgroup paths are hierarchy paths as they appear in
/// `/proc/PID/cgroup` (`/ffrtmp/auto-ffmpeg-42`).
pub trait CgroupBackend: Send + Sync {
    fn mode(&self) -> CgroupMode;
    /// Where the hierarchies are mounted, for the startup log.
    fn describe(&self) -> String;
    /// Create the root (and what leads to it) and make the controllers available below it.
    fn prepare_root(&self, root: &str) -> RootReport;
    /// Create a job cgroup (an existing one is reused).
    fn create(&self, cgroup: &str) -> Result<(), PlaceError>;
    /// Write the limits, reading each back. One result per limit written.
    fn apply_limits(&self, cgroup: &str, limits: &Limits) -> Vec<(String, Result<(), PlaceError>)>;
    /// Move a whole process (all its threads) into the cgroup.
    fn move_process(&self, cgroup: &str, pid: u32) -> Result<(), PlaceError>;
    /// Whether `/proc/PID/cgroup` lines place the process in `cgroup` (in every hierarchy used).
    fn is_member(&self, cgroup: &str, lines: &[CgroupLine]) -> bool;
    /// Where the process is instead, for messages.
    fn location(&self, lines: &[CgroupLine]) -> String;
    /// Remove an empty cgroup (EBUSY while it has processes).
    fn remove(&self, cgroup: &str) -> io::Result<()>;
    /// PIDs in the cgroup.
    fn procs(&self, cgroup: &str) -> io::Result<Vec<u32>>;
    /// Names of the child cgroups of `cgroup`.
    fn children(&self, cgroup: &str) -> io::Result<Vec<String>>;
    fn usage(&self, cgroup: &str) -> Usage;
    /// Read the limits back from the cgroup's files.
    fn read_limits(&self, cgroup: &str) -> Limits;
    /// The `cgroup.procs` files a process writes to enter the cgroup itself (`ffrtmp run`).
    fn procs_files(&self, cgroup: &str) -> Vec<PathBuf>;
    /// Rename a cgroup within its parent (v1 only: cgroup v2 refuses renames).
    fn rename(&self, cgroup: &str, new_name: &str) -> Result<String, PlaceError>;
    /// Whether `rename` can work on this hierarchy.
    fn supports_rename(&self) -> bool;
    /// What a move into a job cgroup costs on this mount, for the start-up log (cgroup v2:
    /// whether it waits for an RCU grace period).
    fn move_cost(&self) -> Option<String> {
        None
    }
}

/// Detect the host's hierarchy from `/sys/fs/cgroup`.
pub fn detect() -> Result<Box<dyn CgroupBackend>, String> {
    if cgroups_rs::hierarchies::is_cgroup2_unified_mode() {
        Ok(Box::new(super::v2::V2Backend::new(PathBuf::from(
            "/sys/fs/cgroup",
        ))))
    } else {
        super::v1::V1Backend::from_mountinfo().map(|b| Box::new(b) as Box<dyn CgroupBackend>)
    }
}

/// Join a hierarchy path (`/a/b`) onto a mount point.
pub fn dir_of(mount: &Path, cgroup: &str) -> PathBuf {
    mount.join(cgroup.trim_start_matches('/'))
}

pub(crate) fn read_trimmed(path: &Path) -> io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}

pub(crate) fn read_u64(path: &Path) -> Option<u64> {
    read_trimmed(path).ok()?.parse().ok()
}

/// `key value` lines (cpu.stat, memory.events, memory.oom_control).
pub(crate) fn read_keyed(path: &Path, key: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

pub(crate) fn read_procs(dir: &Path) -> io::Result<Vec<u32>> {
    Ok(std::fs::read_to_string(dir.join("cgroup.procs"))?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

pub(crate) fn list_dirs(dir: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// mkdir that accepts an existing directory.
pub(crate) fn mkdir(dir: &Path) -> io::Result<bool> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// rmdir that accepts a missing directory.
pub(crate) fn rmdir(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
