//! The gate's watchdog. The kernel has no deadline for a held exec: a gate thread that
//! stops turning (a bug, a call that hangs) would hold every target exec that comes
//! meanwhile. The gate thread says by when it will turn again; a thread of its own
//! (`ffrtmp-gatewatch`) looks four times a second and, once that time has passed, lets go
//! of the group: it puts `/dev/null` in place of the group's descriptor (`dup3`, so the
//! number stays valid for the gate thread), the group's file is released, and the kernel
//! lets every waiting exec go on. Those run unplaced for a moment and are placed by their
//! exec events. The gate thread, back, opens a new group and marks the binaries again.
//!
//! A group the watchdog let go of keeps its descriptor number for the life of the daemon
//! (`Group::keep_number`): the number the watchdog may still write over is never given to
//! another file. A whole-process stop (SIGSTOP, a freeze) stops the watchdog too: when its
//! own sleep overran by a second, it gives the gate thread a new second instead of
//! releasing.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, warn};

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
    /// Opened at start: a release needs no descriptor when descriptors are short.
    null: OwnedFd,
}

impl Lifeline {
    pub fn new(group_fd: RawFd) -> std::io::Result<Arc<Lifeline>> {
        let null = std::fs::File::open("/dev/null")?.into();
        Ok(Arc::new(Lifeline {
            due_by_ns: AtomicU64::new(monotonic_ns() + STALL.as_nanos() as u64),
            group_fd: AtomicI32::new(group_fd),
            released: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            null,
        }))
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

    /// A new group is in place (before its binaries are marked).
    pub fn reopened(&self, group_fd: RawFd) {
        self.group_fd.store(group_fd, Relaxed);
    }

    /// The gate thread ends: never late again, and the watchdog ends at its next look.
    pub fn stop(&self) {
        self.due_by_ns.store(u64::MAX, Relaxed);
        self.stop.store(true, Relaxed);
    }

    /// The watchdog itself did not run for `overrun` past its period (the whole process
    /// was stopped): the gate thread gets a new `STALL` to turn.
    fn woke_late(&self, overrun: Duration) -> bool {
        if overrun < STALL {
            return false;
        }
        let by = monotonic_ns() + STALL.as_nanos() as u64;
        self.due_by_ns.fetch_max(by, Relaxed);
        true
    }

    /// Let go of the group if the gate thread is late; `true` if it did now.
    fn look(&self, stats: &GateStats) -> bool {
        let late = monotonic_ns().saturating_sub(self.due_by_ns.load(Relaxed));
        if late == 0 || self.released.load(Relaxed) {
            return false;
        }
        let fd = self.group_fd.load(Relaxed);
        // SAFETY: puts /dev/null in place of the group's descriptor `fd`, a number that
        // stays ours (a released group never closes it): the gate thread's later calls
        // on it fail harmlessly, and no other file is hit.
        if unsafe { libc::dup3(self.null.as_raw_fd(), fd, libc::O_CLOEXEC) } < 0 {
            warn!(
                "The exec gate thread is stuck and its group cannot be let go of ({}); target execs wait until it is back",
                std::io::Error::last_os_error()
            );
            self.released.store(true, Relaxed); // said once; the gate thread clears it
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

/// Stops the lifeline when the gate thread ends, however it ends.
pub struct OnExit(pub Arc<Lifeline>);

impl Drop for OnExit {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// Start the watchdog thread; it ends when the lifeline is stopped.
pub fn spawn(
    line: Arc<Lifeline>,
    stats: Arc<GateStats>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ffrtmp-gatewatch".into())
        .spawn(move || loop {
            let t = Instant::now();
            std::thread::sleep(LOOK_EVERY);
            if line.stop.load(Relaxed) {
                return;
            }
            if !line.woke_late(t.elapsed().saturating_sub(LOOK_EVERY)) {
                line.look(&stats);
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_gate_thread_loses_its_group_once() {
        let stats = GateStats::default();
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        let line = Lifeline::new(f.as_raw_fd()).unwrap();
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

    #[test]
    fn a_stopped_process_is_not_taken_for_a_stuck_gate_thread() {
        let stats = GateStats::default();
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        let line = Lifeline::new(f.as_raw_fd()).unwrap();
        line.due_by_ns.store(monotonic_ns() - 1, Relaxed);
        assert!(!line.woke_late(Duration::from_millis(10)));
        assert!(line.woke_late(Duration::from_secs(3)));
        assert!(!line.look(&stats), "the gate thread got a new second");
    }
}
