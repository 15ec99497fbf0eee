//! The ring-buffer reader: the task that turns `ExecEvent` records into `SourceEvent`s.
//!
//! It waits on the ring's fd with tokio's `AsyncFd` (epoll, no polling), decodes each
//! record with the length-checked `decode_exec_event` (a bad record is counted and logged,
//! never a panic), and sends it on at once. After each drained batch and every 250 ms it
//! reads the kernel's failure counters; when they moved it reports `SourceEvent::Lost` so
//! the daemon reconciles. When the task ends (shutdown aborts it) the hook is detached
//! first, then the records read but not taken by the daemon yet and those still in the
//! ring are drained, and every process the kernel stopped for strict placement among them
//! is continued: nothing is left stopped.

use std::collections::VecDeque;
use std::time::Duration;

use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::Ebpf;
use ffrtmp_common::user::{decode_exec_event, DecodeError};
use ffrtmp_common::{counter, ExecEvent, EXEC_FLAG_FILENAME_FAILED, EXEC_FLAG_STOPPED};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;
use tracing::{debug, error, trace, warn};

use crate::sources::{ExecNotice, SourceEvent};

pub const SOURCE: &str = "ebpf";
const COUNTER_PERIOD: Duration = Duration::from_millis(250);

/// The notice the daemon gets for one kernel event.
pub fn notice_of(ev: &ExecEvent) -> ExecNotice {
    ExecNotice {
        pid: ev.tgid,
        comm: Some(ev.comm_bytes().to_vec()),
        filename: (ev.flags & EXEC_FLAG_FILENAME_FAILED == 0).then(|| ev.filename_bytes().to_vec()),
        exec_mono_ns: Some(ev.ktime_ns),
        stopped: ev.flags & EXEC_FLAG_STOPPED != 0,
        source: SOURCE,
    }
}

/// Lost-event accounting from the kernel's cumulative counters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LossTracker {
    /// Events received whose filename read failed: the kernel counted them in READ_FAILED
    /// but they arrived, so they are not lost.
    pub filename_failed_received: u64,
    pub reported: u64,
}

impl LossTracker {
    /// How many events were lost since the last call, given the kernel's totals.
    pub fn newly_lost(&mut self, ringbuf_full: u64, read_failed: u64) -> u64 {
        let lost = ringbuf_full + read_failed.saturating_sub(self.filename_failed_received);
        let new = lost.saturating_sub(self.reported);
        self.reported = self.reported.max(lost);
        new
    }
}

/// Everything the running reader owns. Dropping it detaches the hook and continues the
/// stopped processes whose events were never read.
pub(super) struct Running {
    pub ring: AsyncFd<RingBuf<MapData>>,
    pub counters: PerCpuArray<MapData, u64>,
    /// Keeps the programs attached; dropped first on shutdown.
    pub ebpf: Option<Ebpf>,
    pub loss: LossTracker,
    pub decode_errors: u64,
    /// Read from the ring, not yet accepted by the daemon (continued on drop if stopped).
    pending: VecDeque<ExecEvent>,
}

impl Running {
    pub fn register(
        ring: RingBuf<MapData>,
        counters: PerCpuArray<MapData, u64>,
        ebpf: Ebpf,
    ) -> std::io::Result<Running> {
        // SAFETY: the RingBuf owns the map fd and keeps it open as long as the AsyncFd does.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Running {
            ring,
            counters,
            ebpf: Some(ebpf),
            loss: LossTracker::default(),
            decode_errors: 0,
            pending: VecDeque::new(),
        })
    }

    fn counter(&self, index: u32) -> u64 {
        self.counters
            .get(&index, 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }

    /// Report events the kernel could not deliver since the last check.
    async fn check_counters(&mut self, tx: &mpsc::Sender<SourceEvent>) -> bool {
        let full = self.counter(counter::RINGBUF_FULL);
        let read = self.counter(counter::READ_FAILED);
        let lost = self.loss.newly_lost(full, read);
        if lost == 0 {
            return true;
        }
        warn!(
            lost,
            ringbuf_full_total = full,
            read_failed_total = read,
            "eBPF: {lost} exec event(s) lost (ring buffer full {full} in total, kernel read failures {read}); asking for a reconciliation scan"
        );
        tx.send(SourceEvent::Lost {
            source: SOURCE,
            count: lost,
        })
        .await
        .is_ok()
    }

    fn account(&mut self, decoded: &Result<ExecEvent, DecodeError>) {
        match decoded {
            Ok(ev) if ev.flags & EXEC_FLAG_FILENAME_FAILED != 0 => {
                self.loss.filename_failed_received += 1
            }
            Ok(_) => {}
            Err(e) => {
                self.decode_errors += 1;
                error!(
                    decode_errors = self.decode_errors,
                    "eBPF: undecodable ring-buffer record ({e:?}); the kernel object and the agent disagree on ExecEvent — rebuild both (cargo xtask build-ebpf, then cargo build)"
                );
            }
        }
    }

    /// Read until the daemon stops listening.
    pub async fn run(mut self, tx: mpsc::Sender<SourceEvent>) {
        let mut tick = tokio::time::interval(COUNTER_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ready = self.ring.readable_mut() => {
                    let mut guard = match ready {
                        Ok(g) => g,
                        Err(e) => {
                            let _ = tx.send(SourceEvent::Failed { source: SOURCE, error: format!("waiting on the ring buffer failed: {e}") }).await;
                            return;
                        }
                    };
                    // Take the whole batch first: records are released as they are read,
                    // which frees ring space for the kernel as early as possible.
                    let mut batch = Vec::new();
                    while let Some(item) = guard.get_inner_mut().next() {
                        batch.push(decode_exec_event(&item));
                    }
                    guard.clear_ready();
                    drop(guard);
                    let received = crate::placer::monotonic_ns();
                    let mut delays = Vec::new();
                    for decoded in batch {
                        self.account(&decoded);
                        if let Ok(ev) = &decoded {
                            delays.push((ev.tgid, received.saturating_sub(ev.ktime_ns) / 1000));
                        }
                        if let Ok(ev) = decoded {
                            self.pending.push_back(ev);
                        }
                    }
                    // An event leaves `pending` only once the daemon's channel took it, so
                    // an abort while waiting for room still continues it (see Drop).
                    while let Some(ev) = self.pending.front() {
                        if tx.send(SourceEvent::Exec(notice_of(ev))).await.is_err() {
                            return; // the daemon is gone; Drop continues what is pending
                        }
                        self.pending.pop_front();
                    }
                    // Let the daemon place what was just sent before the counter syscalls
                    // and the trace lines (exec → receipt, for the benchmarks).
                    tokio::task::yield_now().await;
                    for (pid, us) in delays {
                        trace!(pid, "eBPF: exec of PID {pid} was received {us} µs after it happened");
                    }
                    if !self.check_counters(&tx).await {
                        return;
                    }
                }
                _ = tick.tick() => {
                    if !self.check_counters(&tx).await {
                        return;
                    }
                }
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Detach first, so no new process is stopped after the drain below.
        drop(self.ebpf.take());
        let mut continued = 0;
        for ev in self.pending.drain(..) {
            if continue_if_stopped(&ev) {
                continued += 1;
            }
        }
        while let Some(item) = self.ring.get_mut().next() {
            if let Ok(ev) = decode_exec_event(&item) {
                if continue_if_stopped(&ev) {
                    continued += 1;
                }
            }
        }
        if continued > 0 {
            debug!("eBPF: continued {continued} stopped process(es) whose events were not handled");
        }
    }
}

/// SIGCONT a process the kernel stopped, when its event will not reach the daemon.
fn continue_if_stopped(ev: &ExecEvent) -> bool {
    if ev.flags & EXEC_FLAG_STOPPED == 0 {
        return false;
    }
    // SAFETY: plain kill(2). The process is stopped, so its PID cannot have been reused
    // unless it was killed meanwhile; SIGCONT to a stranger would be harmless anyway.
    unsafe { libc::kill(ev.tgid as libc::pid_t, libc::SIGCONT) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ffrtmp_common::{COMM_LEN, FILENAME_LEN};

    fn event(flags: u32) -> ExecEvent {
        let mut ev = ExecEvent {
            ktime_ns: 77,
            cgroup_id: 1,
            tgid: 4242,
            pid: 4242,
            uid: 0,
            gid: 0,
            flags,
            filename_len: 15,
            comm: [0; COMM_LEN],
            filename: [0; FILENAME_LEN],
        };
        ev.comm[..6].copy_from_slice(b"ffmpeg");
        ev.filename[..15].copy_from_slice(b"/usr/bin/ffmpeg");
        ev
    }

    #[test]
    fn a_notice_carries_pid_clock_and_the_stop() {
        let n = notice_of(&event(EXEC_FLAG_STOPPED));
        assert_eq!(n.pid, 4242);
        assert_eq!(n.exec_mono_ns, Some(77));
        assert!(n.stopped);
        assert_eq!(n.comm.as_deref(), Some(b"ffmpeg".as_slice()));
        assert_eq!(n.filename.as_deref(), Some(b"/usr/bin/ffmpeg".as_slice()));
        assert_eq!(n.source, "ebpf");
        let n = notice_of(&event(EXEC_FLAG_FILENAME_FAILED));
        assert!(!n.stopped);
        assert_eq!(n.filename, None);
    }

    #[test]
    fn losses_are_reported_once_and_filename_failures_that_arrived_are_not_losses() {
        let mut t = LossTracker::default();
        assert_eq!(t.newly_lost(0, 0), 0);
        assert_eq!(t.newly_lost(3, 0), 3);
        assert_eq!(
            t.newly_lost(3, 0),
            0,
            "the same total is not reported twice"
        );
        // Two filename failures counted by the kernel; one event already arrived, the
        // other is still in flight and reads as lost (a spare reconciliation, not a miss).
        t.filename_failed_received = 1;
        assert_eq!(t.newly_lost(3, 2), 1);
        // It arrives: nothing new is lost, and the over-count is absorbed, not reported
        // again later.
        t.filename_failed_received = 2;
        assert_eq!(t.newly_lost(3, 2), 0);
        assert_eq!(t.newly_lost(10, 2), 6);
    }
}
