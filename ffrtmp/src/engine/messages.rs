//! What goes into the engine and what comes out of it.
//!
//! In (`crate::exec`): exec notices on the hot queue (`ExecNotice`), everything else on
//! the work queue (`Work`: scan candidates, exits, reloads, stops left by a dead daemon).
//! Out (here): one `Outcome` per decision, to the record loop, which logs, counts and persists.
//! The engine itself writes no log line and no file.

use std::time::Duration;

use crate::config::Limits;
use crate::job::JobId;
use crate::matcher::Skip;
use crate::placer::{JobSpec, PlaceError, Placement};
use crate::process::{PidFd, ProcessId, Stat};
use crate::record::state::ProcessRecord;

/// One placement that succeeded.
#[derive(Debug)]
pub struct Placed {
    pub id: ProcessId,
    /// A pin of the process for the record loop's exit watch (none at the open-files
    /// limit: the exit is then polled).
    pub pidfd: Option<PidFd>,
    pub spec: JobSpec,
    pub placement: Placement,
    /// Kernel exec timestamp to the verified move, when the exec was reported with one.
    pub latency_ns: Option<u64>,
    /// Kernel exec timestamp to the source reading the event, and to the engine taking it
    /// (the rest is the placement); for an exec held at the gate, which has no exec time,
    /// the gate's read of its event to the engine taking it (`receipt_ns` only).
    pub read_ns: Option<u64>,
    pub receipt_ns: Option<u64>,
    /// Children moved after the parent.
    pub children: usize,
    pub exe: Option<String>,
    pub source: &'static str,
}

/// A target governed in its service (`services: limit_unit`), not moved.
#[derive(Debug)]
pub struct InService {
    pub id: ProcessId,
    pub pidfd: Option<PidFd>,
    pub unit: crate::matcher::services::ServiceUnit,
    pub command: String,
    pub limits: Limits,
    pub exe: Option<String>,
    pub source: &'static str,
}

/// What the engine did with one notice, candidate or timer.
#[derive(Debug)]
pub enum Outcome {
    /// A target was found and will be placed (counted as discovered).
    Discovered {
        pid: u32,
        job_id: JobId,
        command: String,
    },
    Placed(Box<Placed>),
    /// A target left in the systemd service it runs in: its limits go onto the unit.
    InService(Box<InService>),
    /// Governed again without being moved: at start from the state file, or an untracked
    /// job cgroup the scan found.
    Readopted {
        id: ProcessId,
        pidfd: Option<PidFd>,
        record: ProcessRecord,
        untracked: bool,
    },
    /// A record of the state file that is not governed any more.
    Dropped {
        pid: u32,
        job_id: String,
        why: String,
    },
    /// Left alone. `stat` lets the scan skip it until it changes.
    Skipped {
        stat: Stat,
        reason: Skip,
    },
    /// A target waiting for `min_runtime`.
    Deferred {
        pid: u32,
        comm: String,
        target: String,
        remaining: Duration,
    },
    /// A transient failure; tried again after `delay`.
    Retrying {
        pid: u32,
        job_id: JobId,
        error: PlaceError,
        attempt: u32,
        max: u32,
        delay: Duration,
    },
    /// Given up (the scan may try it again later).
    Failed {
        pid: u32,
        job_id: JobId,
        command: String,
        error: PlaceError,
        attempts: u32,
    },
    /// Placed at the exec gate and looked at again: its exec went through (`home` None),
    /// or it failed after the answer (its comm and exe are the old image's) and the
    /// process was moved back to `home` (its job ends) or, when that failed, left in its
    /// job.
    ExecChecked {
        id: ProcessId,
        job_id: JobId,
        command: String,
        exe: String,
        home: Option<Result<String, String>>,
    },
    /// It exited before or while it was placed: nothing to do.
    Vanished {
        pid: u32,
        why: String,
    },
    /// Found, but it could not be pinned: tried again in `again_in` (out of descriptors),
    /// or left to the scan.
    NotPinned {
        pid: u32,
        error: String,
        again_in: Option<std::time::Duration>,
    },
    /// A kernel record that could not be decoded (its process is left to the scan).
    Undecodable {
        error: String,
    },
    /// Spare cgroups the engine will not use (its pool is full for their limits, or the
    /// limits changed): to be removed off the placement thread.
    SparesLeft(Vec<String>),
    /// Spares a failed placement used up, to be made again (a placed one's are refilled
    /// from its `Placed`).
    SparesUsed(Vec<(crate::config::Limits, usize)>),
    /// `--dry-run`: what a real run would have done.
    DryRun {
        pid: u32,
        job_id: JobId,
        command: String,
        cgroup: String,
        limits: Limits,
        /// Left in its systemd service (`cgroup`, the unit's), the unit limited.
        in_service: bool,
    },
}
