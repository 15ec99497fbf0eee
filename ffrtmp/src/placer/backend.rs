//! The cgroup backend interface, implemented for the unified hierarchy (`v2`) and for
//! legacy/hybrid hosts (`v1`). Which one this host has is `detect`'s to say; the file
//! helpers both use are in `cgroupfs`.

use std::io;
use std::path::PathBuf;

use super::error::PlaceError;
use super::limits::{reads_as, Controller, LimitWrite, Plan};
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
    /// CFS bandwidth: periods, and those in which the cgroup was throttled (live only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throttling: Option<Throttling>,
}

/// `cpu.stat`'s bandwidth counters of a cgroup (its children's included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Throttling {
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_usec: u64,
}

impl Throttling {
    /// From `cpu.stat` (`nr_periods`, `nr_throttled`, and `throttled_usec` on v2 or
    /// `throttled_time` in ns on v1).
    pub fn from_cpu_stat(text: &str) -> Option<Throttling> {
        let get = |key: &str| {
            text.lines().find_map(|l| {
                l.strip_prefix(key)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        };
        Some(Throttling {
            periods: get("nr_periods")?,
            throttled_periods: get("nr_throttled")?,
            throttled_usec: get("throttled_usec").or(get("throttled_time").map(|ns| ns / 1000))?,
        })
    }
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
    /// The files `limits` are written to on this hierarchy, in order (`plan`: the
    /// configured ones, or all of them with the unset ones at the kernel's default).
    fn plan(&self, limits: &Limits, plan: Plan) -> Vec<LimitWrite>;
    /// Write limit files, reading each back. One result per file, labelled `file=value`.
    fn write_limits(
        &self,
        cgroup: &str,
        writes: Vec<LimitWrite>,
    ) -> Vec<(String, Result<(), PlaceError>)>;
    /// The text of one limit file now.
    fn read_limit(&self, cgroup: &str, w: &LimitWrite) -> io::Result<String>;
    /// Write the configured limits into a new cgroup, reading each back.
    fn apply_limits(&self, cgroup: &str, limits: &Limits) -> Vec<(String, Result<(), PlaceError>)> {
        self.write_limits(cgroup, self.plan(limits, Plan::Configured))
    }
    /// Bring a running cgroup's limit files to `limits`, the unset ones back to the
    /// kernel's default: each file is read, and those that differ are written and read
    /// back. One result per file that differed, labelled `file=value (was …)`; an empty
    /// list when every file already showed its value.
    fn enforce_limits(
        &self,
        cgroup: &str,
        limits: &Limits,
    ) -> Vec<(String, Result<(), PlaceError>)> {
        let mut was = Vec::new();
        let configured: Vec<&str> = (self.plan(limits, Plan::Configured).iter())
            .map(|w| w.file)
            .collect();
        let differ: Vec<LimitWrite> = self
            .plan(limits, Plan::All)
            .into_iter()
            .filter(|w| match self.read_limit(cgroup, w) {
                Ok(got) if reads_as(&got, &w.value) => false,
                Ok(got) => {
                    was.push(got);
                    true
                }
                // No such file (its controller is not enabled here): nothing to put back to
                // the default. A configured limit is written, and fails as a placement's does.
                Err(e) if e.kind() == io::ErrorKind::NotFound && !configured.contains(&w.file) => {
                    false
                }
                Err(e) => {
                    was.push(format!("unreadable: {e}"));
                    true
                }
            })
            .collect();
        self.write_limits(cgroup, differ)
            .into_iter()
            .zip(was)
            .map(|((label, r), was)| (format!("{label} (was {was})"), r))
            .collect()
    }
    /// Move a whole process (all its threads) into the cgroup.
    fn move_process(&self, cgroup: &str, pid: u32) -> Result<(), PlaceError>;
    /// Move a whole process back to where `/proc/PID/cgroup` once placed it (`lines`, read
    /// before its move); the place, for messages.
    fn move_home(&self, lines: &[CgroupLine], pid: u32) -> Result<String, PlaceError> {
        let Some(home) = lines.iter().find(|l| l.hierarchy == 0) else {
            let why = format!("where PID {pid} was in the cgroup v2 hierarchy is not known");
            return Err(PlaceError::permanent(crate::placer::Step::Move, why));
        };
        self.move_process(&home.path, pid)
            .map(|()| home.path.clone())
    }
    /// Whether `/proc/PID/cgroup` lines place the process in `cgroup` (in every hierarchy
    /// used). By default the unified hierarchy's line (`0::`) alone.
    fn is_member(&self, cgroup: &str, lines: &[CgroupLine]) -> bool {
        lines.iter().any(|l| l.hierarchy == 0 && l.path == cgroup)
    }
    /// Where the process is instead, for messages. By default its unified hierarchy path.
    fn location(&self, lines: &[CgroupLine]) -> String {
        lines
            .iter()
            .find(|l| l.hierarchy == 0)
            .map_or_else(|| "unknown".into(), |l| l.path.clone())
    }
    /// Remove an empty cgroup (EBUSY while it has processes).
    fn remove(&self, cgroup: &str) -> io::Result<()>;
    /// PIDs in the cgroup.
    fn procs(&self, cgroup: &str) -> io::Result<Vec<u32>>;
    /// Names of the child cgroups of `cgroup`.
    fn children(&self, cgroup: &str) -> io::Result<Vec<String>>;
    fn usage(&self, cgroup: &str) -> Usage;
    /// The numbers an ended job is remembered by (CPU time, OOM kills): its memory and
    /// pids are 0 once its processes are gone, so they are not read.
    fn final_usage(&self, cgroup: &str) -> Usage {
        let u = self.usage(cgroup);
        Usage {
            cpu_usec: u.cpu_usec,
            oom_kills: u.oom_kills,
            ..Usage::default()
        }
    }
    /// Read the limits back from the cgroup's files.
    fn read_limits(&self, cgroup: &str) -> Limits;
    /// The `cgroup.procs` files a process writes to enter the cgroup itself (`ffrtmp run`).
    fn procs_files(&self, cgroup: &str) -> Vec<PathBuf>;
    /// Rename a cgroup within its parent (v1 only). By default cgroup v2's refusal.
    fn rename(&self, cgroup: &str, _new_name: &str) -> Result<String, PlaceError> {
        Err(PlaceError::permanent(
            super::Step::CreateCgroup,
            format!("{cgroup}: cgroup v2 does not rename cgroups"),
        ))
    }
    /// Whether `rename` can work on this hierarchy; by default not (cgroup v2).
    fn supports_rename(&self) -> bool {
        false
    }
    /// What a move into a job cgroup costs on this mount, for the start-up log (cgroup v2:
    /// whether it waits for an RCU grace period).
    fn move_cost(&self) -> Option<String> {
        None
    }
}
