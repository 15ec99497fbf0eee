//! The engine's input, in one place both sides depend on: what a source reports
//! (`ExecNotice`), what the record loop asks (`Work`), the bounded queues that carry them
//! and the eventfd that wakes the placement thread (`queue`), the `Ring` a kernel source
//! hands the engine to read itself, and the exec counts the engine keeps (`ExecCounts`).
//!
//! Sources and the engine both use this module and not each other: a source is anything
//! that fills a `Sender<ExecNotice>` or offers a `Ring`.

mod counts;
pub mod queue;

use std::os::fd::BorrowedFd;
use std::sync::Arc;

pub use counts::ExecCounts;
pub use queue::{Receiver, Sender, Waker};

use crate::config::Settings;
use crate::process::{Gated, Known, ProcessId, Stat, Stopped};

/// Capacity of the hot queue (sources other than a ring).
pub const HOT_QUEUE: usize = 1024;
/// Capacity of the work queue (a scan sends every candidate at once).
pub const WORK_QUEUE: usize = 16_384;

/// A process exec'd, as a source saw it.
#[derive(Debug)]
pub struct ExecNotice {
    pub pid: u32,
    /// When the process started (CLOCK_BOOTTIME ns, the kernel's `start_boottime`): with
    /// `pid`, its identity. `None` when the source does not know it.
    pub start_ns: Option<u64>,
    /// Other facts the source knows (names, uid, namespace), so they are not read again.
    pub known: Known,
    /// CLOCK_MONOTONIC ns of the exec (for exec → placed latency), if known.
    pub exec_mono_ns: Option<u64>,
    /// CLOCK_MONOTONIC ns when the source read it (the kernel's ring buffer → the reader).
    pub read_mono_ns: Option<u64>,
    /// The kernel stopped the process for strict placement: this value resumes it when
    /// dropped, so whoever ends up holding the notice cannot forget to.
    pub stop: Option<Stopped>,
    /// The kernel holds the exec at the gate until this value is answered (dropped, or
    /// `placed` after the move): its first instruction runs where it is by then.
    pub gated: Option<Gated>,
    pub source: &'static str,
}

impl ExecNotice {
    /// A notice that only names a PID (tests, replays).
    pub fn pid(pid: u32, source: &'static str) -> ExecNotice {
        ExecNotice {
            pid,
            start_ns: None,
            known: Known::default(),
            exec_mono_ns: None,
            read_mono_ns: None,
            stop: None,
            gated: None,
            source,
        }
    }
}

/// Work for the engine that is not a fresh exec.
#[derive(Debug)]
pub enum Work {
    /// A target the scan found that nobody reported (or whose exec was not reported).
    Candidate(Stat),
    /// A governed process exited (its pidfd became readable).
    Exited(ProcessId),
    /// A job cgroup `auto-<command>-<pid>` whose process is alive but not in the table
    /// (the state file was lost): govern it again without moving it.
    Adopt {
        pid: u32,
        cgroup: String,
        job_id: crate::job::JobId,
        command: String,
    },
    /// A process a daemon that died had stopped: place it, then resume it.
    Orphan(Stopped),
    /// Spare cgroups the chore runner made, for the engine's pool.
    Spares(Vec<(crate::config::Limits, crate::placer::Spare)>),
    /// New settings (already validated).
    Reload(Arc<Settings>),
    /// Stop: the engine thread returns.
    Shutdown,
}

impl Work {
    /// What it is, for a log line (not its contents: a reload carries all the settings).
    pub fn kind(&self) -> &'static str {
        match self {
            Work::Candidate(_) => "a scan candidate",
            Work::Exited(_) => "an exit",
            Work::Adopt { .. } => "a job cgroup to take back",
            Work::Orphan(_) => "a stop a dead daemon left",
            Work::Spares(_) => "spare cgroups",
            Work::Reload(_) => "a reload",
            Work::Shutdown => "the shutdown",
        }
    }
}

/// A kernel ring buffer the engine thread reads itself, so an exec reaches its placement
/// with one wakeup. Dropping it detaches what feeds it.
pub trait Ring: Send {
    /// The descriptor poll(2) waits on.
    fn fd(&self) -> BorrowedFd<'_>;
    /// Everything readable now, decoded (an undecodable record as its error).
    fn drain(&mut self, out: &mut Vec<Result<ExecNotice, String>>);
    /// Process `tgid` was placed while the exec gate held it: a strict target's exec
    /// event that follows is not to stop it.
    fn placed_at_gate(&mut self, _tgid: u32) {}
}

/// The engine's queues, made before the sources start (they need the hot queue).
pub struct Inbox {
    pub hot: Receiver<ExecNotice>,
    pub work: Receiver<Work>,
    pub waker: Waker,
}

/// The writers of a new inbox: the hot queue (for sources) and the work queue.
pub fn inbox() -> std::io::Result<(Sender<ExecNotice>, Sender<Work>, Inbox)> {
    let waker = Waker::new()?;
    let (hot_tx, hot) = queue::bounded(HOT_QUEUE, &waker);
    let (work_tx, work) = queue::bounded(WORK_QUEUE, &waker);
    Ok((hot_tx, work_tx, Inbox { hot, work, waker }))
}
