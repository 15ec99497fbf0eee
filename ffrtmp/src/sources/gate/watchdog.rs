//! The gate's watchdog. The kernel has no deadline for a held exec: a gate thread that
//! stops turning (a path lookup on a dead network filesystem, a bug) would hold every
//! target exec that comes meanwhile. The gate thread says by when it will turn again; a
//! thread of its own (`ffrtmp-gatewatch`) looks four times a second, and once that time
//! is a second past it lets go of the group: it puts `/dev/null` in place of the group's
//! descriptor (`dup2`, so the number stays valid for the gate thread), the group's file is
//! released, and the kernel lets every waiting exec go on. Those run unplaced for a moment
//! and are placed by their exec events. The gate thread, back, opens a new group and
//! marks the binaries again.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tracing::error;

use super::GateStats;
use crate::process::monotonic_ns;

/// How long past its promised turn the gate thread may be before the group is let go.
pub const STALL: Duration = Duration::from_secs(1);
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// What the gate thread and its watchdog share (atomics: no lock).
#[derive(Debug)]
pub struct Lifeline {
    /// CLOCK_MONOTONIC ns by which the gate thread turns again (its wait, plus `STALL`).
    due_by_ns: AtomicU64,
    /// The group's descriptor now.
    group_fd: AtomicI32,
    /// The watchdog let go of the group: the gate thread opens a new one.
    released: AtomicBool,
    stop: AtomicBool,
}

impl Lifeline {
    pub fn new(group_fd: RawFd) -> Arc<Lifeline> {
        Arc::new(Lifeline {
            due_by_ns: AtomicU64::new(monotonic_ns() + STALL.as_nanos() as u64),
            group_fd: AtomicI32::new(group_fd),
            released: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        })
    }

    /// The gate thread will turn again within `wait` (and `STALL`).
    pub fn turn_within(&self, wait: Duration) {
        let by = monotonic_ns() + (wait + STALL).as_nanos() as u64;
        self.due_by_ns.store(by, Relaxed);
    }

    /// Whether the watchdog let go of the group since the last call.
    pub fn take_released(&self) -> bool {
        self.released.swap(false, Relaxed)
    }

    /// A new group could not be opened: try again at the next turn.
    pub fn release_again(&self) {
        self.released.store(true, Relaxed);
    }

    /// A new group is in place.
    pub fn reopened(&self, group_fd: RawFd) {
        self.group_fd.store(group_fd, Relaxed);
    }

    /// The gate thread ends: never late again, and the watchdog ends at its next look.
    pub fn stop(&self) {
        self.due_by_ns.store(u64::MAX, Relaxed);
        self.stop.store(true, Relaxed);
    }

    /// Let go of the group if the gate thread is late; `true` if it did now.
    fn look(&self, stats: &GateStats) -> bool {
        let late = monotonic_ns().saturating_sub(self.due_by_ns.load(Relaxed));
        if late == 0 || self.released.load(Relaxed) {
            return false;
        }
        let fd = self.group_fd.load(Relaxed);
        let Ok(null) = std::fs::File::open("/dev/null") else {
            return false;
        };
        // SAFETY: replaces our own descriptor `fd` with /dev/null; the number stays open,
        // so the gate thread's later calls on it fail harmlessly, and nobody else gets it.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return false;
        }
        self.released.store(true, Relaxed);
        stats.releases.fetch_add(1, Relaxed);
        error!(
            "The exec gate thread has not turned for {:.1}s past its time; let go of every held exec (they run and are placed by their exec events); the gate holds execs again when the thread is back",
            Duration::from_nanos(late).as_secs_f64() + STALL.as_secs_f64()
        );
        true
    }
}

/// Start the watchdog thread; it ends when `stop` is called.
pub fn spawn(
    line: Arc<Lifeline>,
    stats: Arc<GateStats>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ffrtmp-gatewatch".into())
        .spawn(move || loop {
            std::thread::sleep(LOOK_EVERY);
            if line.stop.load(Relaxed) {
                return;
            }
            line.look(&stats);
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_gate_thread_loses_its_group_once() {
        let stats = GateStats::default();
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        let line = Lifeline::new(f.as_raw_fd());
        assert!(!line.look(&stats), "on time");
        line.due_by_ns.store(monotonic_ns() - 1, Relaxed);
        assert!(line.look(&stats));
        assert!(!line.look(&stats), "once");
        // The descriptor is /dev/null now.
        let now = std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap();
        assert_eq!(now, std::path::Path::new("/dev/null"));
        assert!(line.take_released());
        assert!(!line.take_released());
        assert_eq!(stats.releases.load(Relaxed), 1);
    }
}
