//! The engine's table: which processes are governed, which wait for a timer (min_runtime,
//! a retry's backoff), which were given up on until when, and which were skipped moments
//! ago. Owned by the engine thread alone; every report of a process is checked against
//! it, so a process is placed once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::placer::JobSpec;
use crate::process::{Pinned, ProcessId};

/// Work scheduled for later.
pub enum Timed {
    /// Looked at again later, for the reason named (its `Origin`): `min_runtime`, or
    /// `repin` when it could not be pinned for want of a descriptor. Only the identity is
    /// kept (no pidfd): a long min_runtime must not hold a file descriptor per young
    /// process; it is pinned again when due.
    Defer(&'static str),
    /// A process a scan found moments after it started: its exec event may still be on
    /// its way, and places it if it comes first. Not pending (an exec event is not turned
    /// away); when due, it is looked at unless the table knows it by then.
    Fresh,
    /// A placement that failed with a transient error.
    Retry(Box<Retry>),
    /// A process placed at the exec gate, to be looked at once its exec had time to go
    /// through: one whose exec failed is put back where it came from.
    Confirm(Box<Confirm>),
}

/// What undoes a held exec's placement if its exec failed.
pub struct Confirm {
    /// The marked binary's (dev, ino): the process's exe once its exec went through.
    pub inode: (u64, u64),
    /// Its comm before the exec: still that, the exec failed.
    pub old_comm: Vec<u8>,
    pub exe: String,
    /// Its `/proc/PID/cgroup` before the move.
    pub home: Vec<crate::process::CgroupLine>,
    pub job_id: crate::job::JobId,
    pub command: String,
}

pub struct Retry {
    pub pinned: Pinned,
    pub spec: JobSpec,
    pub attempt: u32,
    pub exec_mono_ns: Option<u64>,
    pub source: &'static str,
}

pub struct Table {
    /// Governed processes by PID.
    governed: HashMap<u32, ProcessId>,
    /// Processes with a timer: nobody else places them meanwhile.
    pending: HashSet<ProcessId>,
    timers: BTreeMap<(Instant, ProcessId), Timed>,
    /// Placements that failed for good, and when the scan may try them again.
    failed: HashMap<ProcessId, Instant>,
    /// Processes skipped, with their comm and when they were last reported: a report of
    /// one of them as it was is the same report again (see `skipped`). The one memory of
    /// skips in the daemon: the scan reports every target it finds, every time.
    skipped: HashMap<ProcessId, (Vec<u8>, Instant)>,
    /// How long a skip is remembered without a report renewing it.
    skip_memory: Duration,
}

/// At most this many skips are remembered. When full, the expired go; if more than half
/// are still fresh (a storm of skipped targets), all go: the sweep then runs at most once
/// per half of this many skips, and a forgotten process is logged once more.
const SKIP_MEMORY_MAX: usize = 16_384;

impl Table {
    /// `skip_memory`: how long a skip lasts without a report of the same process.
    pub fn new(skip_memory: Duration) -> Table {
        Table {
            governed: HashMap::new(),
            pending: HashSet::new(),
            timers: BTreeMap::new(),
            failed: HashMap::new(),
            skipped: HashMap::new(),
            skip_memory,
        }
    }

    /// Governed, pending, or given up on (and not due again yet).
    pub fn knows(&mut self, id: ProcessId) -> bool {
        if let Some(until) = self.failed.get(&id) {
            if *until > Instant::now() {
                return true;
            }
            self.failed.remove(&id);
        }
        self.governed.get(&id.pid) == Some(&id) || self.pending.contains(&id)
    }

    pub fn governed(&mut self, id: ProcessId) {
        self.pending.remove(&id);
        self.failed.remove(&id);
        self.governed.insert(id.pid, id);
    }

    /// Whether `id` is governed (placed, its exit not seen yet).
    pub fn governs(&self, id: ProcessId) -> bool {
        self.governed.get(&id.pid) == Some(&id)
    }

    /// Look at a process placed at the gate again at `at` (see `Timed::Confirm`).
    pub fn confirm(&mut self, id: ProcessId, at: Instant, c: Confirm) {
        self.timers.insert((at, id), Timed::Confirm(Box::new(c)));
    }

    pub fn exited(&mut self, id: ProcessId) {
        if self.governed.get(&id.pid) == Some(&id) {
            self.governed.remove(&id.pid);
        }
        self.failed.remove(&id);
    }

    /// Schedule a min_runtime look; `false` if one is already scheduled.
    pub fn defer(&mut self, id: ProcessId, at: Instant, why: &'static str) -> bool {
        if !self.pending.insert(id) {
            return false;
        }
        self.timers.insert((at, id), Timed::Defer(why));
        true
    }

    /// Schedule a retry. The process stays pending until the retry has run.
    pub fn retry(&mut self, id: ProcessId, at: Instant, t: Timed) {
        self.pending.insert(id);
        self.timers.insert((at, id), t);
    }

    /// Look at a scan's fresh candidate later (see `Timed::Fresh`).
    pub fn fresh(&mut self, id: ProcessId, at: Instant) {
        self.timers.entry((at, id)).or_insert(Timed::Fresh);
    }

    pub fn failed(&mut self, id: ProcessId, until: Instant) {
        self.pending.remove(&id);
        self.failed.insert(id, until);
    }

    /// Skipped now, as it is (`comm`).
    pub fn skipped(&mut self, id: ProcessId, comm: &[u8], now: Instant) {
        if self.skipped.len() >= SKIP_MEMORY_MAX && !self.skipped.contains_key(&id) {
            let memory = self.skip_memory;
            self.skipped.retain(|_, (_, at)| *at + memory > now);
            if self.skipped.len() > SKIP_MEMORY_MAX / 2 {
                self.skipped.clear();
            }
        }
        self.skipped.insert(id, (comm.to_vec(), now));
    }

    /// Skipped with this comm, and reported since within `skip_memory`: a scan's report
    /// of it changes nothing, and renews the memory. With another comm it exec'd since,
    /// and is looked at again.
    pub fn skipped_as(&mut self, id: ProcessId, comm: &[u8], now: Instant) -> bool {
        let memory = self.skip_memory;
        match self.skipped.get_mut(&id) {
            Some((c, at)) if c == comm && *at + memory > now => {
                *at = now;
                true
            }
            _ => false,
        }
    }

    /// Targets or filters changed: every skip is decided again (and, with new scan
    /// intervals, remembered for `skip_memory`).
    pub fn forget_skips(&mut self, skip_memory: Duration) {
        self.skipped.clear();
        self.skip_memory = skip_memory;
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.keys().next().map(|(t, _)| *t)
    }

    /// Timers due by `now`, each no longer pending.
    pub fn due(&mut self, now: Instant) -> Vec<(ProcessId, Timed)> {
        let mut out = Vec::new();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (_, id) = *entry.key();
            let t = entry.remove();
            match t {
                // Never pending itself. If the process is pending, its exec event deferred
                // it or a retry holds it, and that timer (later, or in this batch) looks at
                // it: the fresh look would be a second one.
                Timed::Fresh if self.pending.contains(&id) => continue,
                // A governed process: never pending.
                Timed::Fresh | Timed::Confirm(_) => {}
                _ => {
                    self.pending.remove(&id);
                }
            }
            out.push((id, t));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SKIP_MEMORY: Duration = Duration::from_secs(5);

    fn id(pid: u32, start: u64) -> ProcessId {
        ProcessId {
            pid,
            start_time: start,
        }
    }

    #[test]
    fn a_process_is_known_while_governed_pending_or_failed() {
        let mut t = Table::new(SKIP_MEMORY);
        let a = id(10, 1);
        assert!(!t.knows(a));
        assert!(t.defer(a, Instant::now() + Duration::from_secs(60), "min_runtime"));
        assert!(
            !t.defer(a, Instant::now(), "min_runtime"),
            "one timer per process"
        );
        assert!(t.knows(a));
        t.governed(a);
        assert!(t.knows(a));
        assert!(!t.knows(id(10, 2)), "a reused PID is another process");
        t.exited(id(10, 2));
        assert!(
            t.knows(a),
            "the exit of another process with this PID changes nothing"
        );
        t.exited(a);
        assert!(!t.knows(a));
        t.failed(a, Instant::now() + Duration::from_secs(60));
        assert!(t.knows(a));
        t.failed(a, Instant::now() - Duration::from_secs(1));
        assert!(!t.knows(a), "due again");
    }

    #[test]
    fn a_fresh_candidate_waits_without_turning_its_exec_event_away() {
        let mut t = Table::new(SKIP_MEMORY);
        let now = Instant::now();
        let a = id(7, 1);
        t.fresh(a, now + Duration::from_millis(10));
        assert!(!t.knows(a), "the exec event must still place it");
        // Its exec event came and min_runtime deferred it: the fresh timer, due first,
        // leaves the deferral pending.
        assert!(t.defer(a, now + Duration::from_secs(60), "min_runtime"));
        let due = t.due(now + Duration::from_millis(20));
        assert!(due.is_empty(), "the deferral, not the fresh look, decides");
        assert!(t.knows(a), "still pending for its min_runtime");
        // Both due in one batch (the engine was busy): only the deferral comes out.
        let b = id(8, 1);
        t.fresh(b, now + Duration::from_millis(10));
        assert!(t.defer(b, now + Duration::from_millis(11), "min_runtime"));
        let due = t.due(now + Duration::from_millis(20));
        assert!(matches!(due.as_slice(), [(i, Timed::Defer(_))] if *i == b));
        // A fresh look with nothing else scheduled comes out when due.
        let c = id(9, 1);
        t.fresh(c, now + Duration::from_millis(10));
        t.fresh(c, now + Duration::from_millis(10));
        let due = t.due(now + Duration::from_millis(20));
        assert!(matches!(due.as_slice(), [(i, Timed::Fresh)] if *i == c));
        assert!(!t.knows(c));
    }

    #[test]
    fn due_timers_come_in_order_and_stop_being_pending() {
        let mut t = Table::new(SKIP_MEMORY);
        let now = Instant::now();
        t.defer(id(2, 1), now + Duration::from_millis(20), "min_runtime");
        t.defer(id(1, 1), now + Duration::from_millis(10), "min_runtime");
        t.defer(id(3, 1), now + Duration::from_secs(60), "min_runtime");
        assert_eq!(t.next_deadline(), Some(now + Duration::from_millis(10)));
        let due: Vec<u32> = t
            .due(now + Duration::from_millis(30))
            .into_iter()
            .map(|(i, _)| i.pid)
            .collect();
        assert_eq!(due, [1, 2]);
        assert!(!t.knows(id(1, 1)));
        assert!(t.knows(id(3, 1)));
    }

    #[test]
    fn a_skip_answers_a_scan_for_a_while_and_only_for_the_same_comm() {
        let mut t = Table::new(SKIP_MEMORY);
        let now = Instant::now();
        let a = id(10, 1);
        t.skipped(a, b"ffmpeg", now);
        assert!(t.skipped_as(a, b"ffmpeg", now + Duration::from_secs(1)));
        // Each report renews it: reported every 4 s, it is remembered past 5 s.
        assert!(t.skipped_as(a, b"ffmpeg", now + Duration::from_secs(4)));
        assert!(t.skipped_as(a, b"ffmpeg", now + Duration::from_secs(8)));
        t.skipped(a, b"ffmpeg", now);
        assert!(
            !t.skipped_as(a, b"x264", now),
            "it exec'd since: look again"
        );
        assert!(!t.skipped_as(id(10, 2), b"ffmpeg", now), "a reused PID");
        assert!(!t.skipped_as(a, b"ffmpeg", now + SKIP_MEMORY));
        assert!(!t.knows(a), "a skip never turns an exec event away");
        // Skipped again later: remembered from then.
        t.skipped(a, b"x264", now + Duration::from_secs(4));
        t.skipped(id(11, 1), b"ffmpeg", now + Duration::from_secs(6));
        assert!(t.skipped_as(a, b"x264", now + Duration::from_secs(6)));
        // Bounded: when full the expired go (a, 11), then, in a storm, all but the newest.
        let later = now + Duration::from_secs(20);
        for pid in 0..SKIP_MEMORY_MAX as u32 + 10 {
            t.skipped(id(1000 + pid, 1), b"ffmpeg", later);
            assert!(t.skipped.len() <= SKIP_MEMORY_MAX);
        }
        assert!(!t.skipped_as(a, b"x264", later), "expired");
        assert!(!t.skipped_as(id(1000, 1), b"ffmpeg", later));
        let newest = id(1000 + SKIP_MEMORY_MAX as u32 + 9, 1);
        assert!(t.skipped_as(newest, b"ffmpeg", later));
        t.forget_skips(SKIP_MEMORY);
        assert!(!t.skipped_as(newest, b"ffmpeg", later));
    }
}
