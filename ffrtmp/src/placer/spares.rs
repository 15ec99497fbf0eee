//! Spare job cgroups: created, with a command's limits written and read back and their
//! `cgroup.procs` files opened, before any process needs them, so a placement is only a
//! write of the PID per hierarchy and a verify (no path lookups on the placement path).
//! After the move the spare is renamed to the job's name (`auto-<command>-<pid>`); the open
//! files follow the rename. cgroup v1 supports renaming a cgroup; cgroup v2 does not
//! (EPERM), so there the cgroup is created on the placement path.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;

use super::error::PlaceError;
use crate::config::Limits;

/// A ready cgroup with limits applied.
#[derive(Debug)]
pub struct Spare {
    pub cgroup: String,
    /// Limits written and read back, as `file=value`.
    pub applied: Vec<String>,
    /// Limits that could not be applied (reported when the spare is used).
    pub failed: Vec<(String, PlaceError)>,
    /// Its `cgroup.procs` files, open for writing, in move order.
    pub procs: Vec<(PathBuf, File)>,
}

impl Spare {
    /// Open the `cgroup.procs` files a move into the spare writes.
    pub fn open_procs(paths: Vec<PathBuf>) -> std::io::Result<Vec<(PathBuf, File)>> {
        paths
            .into_iter()
            .map(|p| {
                let f = std::fs::OpenOptions::new().write(true).open(&p)?;
                Ok((p, f))
            })
            .collect()
    }

    /// Move a whole process into the spare: its PID written to each open file.
    pub fn move_process(&self, pid: u32) -> Result<(), PlaceError> {
        let text = pid.to_string();
        for (path, f) in &self.procs {
            let mut f: &File = f;
            f.write_all(text.as_bytes())
                .map_err(|e| PlaceError::io(super::Step::Move, &path.display().to_string(), &e))?;
        }
        Ok(())
    }
}

/// Spares by the limits they carry.
#[derive(Debug, Default)]
pub struct Spares {
    ready: HashMap<Limits, Vec<Spare>>,
    seq: u64,
}

/// Spares kept per distinct set of limits.
pub const SPARES_PER_LIMITS: usize = 2;
/// Name prefix of spare cgroups under the root.
pub const SPARE_PREFIX: &str = "spare-";

impl Spares {
    pub fn take(&mut self, limits: &Limits) -> Option<Spare> {
        self.ready.get_mut(limits)?.pop()
    }

    pub fn missing(&self, limits: &Limits) -> usize {
        SPARES_PER_LIMITS.saturating_sub(self.ready.get(limits).map_or(0, Vec::len))
    }

    pub fn next_name(&mut self) -> String {
        self.seq += 1;
        format!("{SPARE_PREFIX}{}-{}", std::process::id(), self.seq)
    }

    pub fn put(&mut self, limits: Limits, spare: Spare) {
        self.ready.entry(limits).or_default().push(spare);
    }

    /// All spares, removing them from the pool.
    pub fn drain(&mut self) -> Vec<Spare> {
        self.ready.drain().flat_map(|(_, v)| v).collect()
    }

    /// Whether `cgroup` is a spare in the pool.
    pub fn holds(&self, cgroup: &str) -> bool {
        self.ready.values().flatten().any(|s| s.cgroup == cgroup)
    }

    pub fn len(&self) -> usize {
        self.ready.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
