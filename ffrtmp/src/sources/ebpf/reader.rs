//! The ring-buffer reader: a thread of its own (`ffrtmp-ring`) that turns `ExecEvent`
//! records into `ExecNotice`s and hands each straight to the placement engine.
//!
//! It sleeps in poll(2) on the ring's fd (no polling loop), decodes each record with the
//! length-checked `decode_exec_event` (a bad record is reported, never a panic), and for a
//! process the kernel stopped it claims the stop at once (`Stopped::claim`: pidfd plus a
//! start-time check), so from the first moment in user space the stop has an owner whose
//! drop resumes it. Every 250 ms it reads the kernel's counters into `/metrics` and reports
//! losses (`SourceEvent::Lost`, the daemon reconciles) and strict targets the kernel could
//! not stop. When the engine's queue is full the reader waits on it and the ring holds the
//! rest: back-pressure ends in the kernel's `RINGBUF_FULL` count, which is a loss and so a
//! reconciliation, never a silent miss.
//!
//! Stopping it (`SourceThread::stop`) detaches the hook first, then drains what is left
//! in the ring: a stopped process among those records is resumed by its dropped token.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::Ebpf;
use ffrtmp_common::user::decode_exec_event;
use ffrtmp_common::{
    counter, ExecEvent, StopKey, EXEC_FLAG_ARGV0_FAILED, EXEC_FLAG_ARGV0_TRUNCATED,
    EXEC_FLAG_EXE_FAILED, EXEC_FLAG_EXE_TRUNCATED, EXEC_FLAG_FILENAME_FAILED, EXEC_FLAG_STOPPED,
    EXEC_FLAG_TASK_FAILED,
};

use super::ledger::KernelLedger;
use crate::process::{Known, ProcFs, StopLedger, Stopped};
use crate::sources::{ExecNotice, SourceEvent, SourceSinks, SourceThread};

pub const SOURCE: &str = "ebpf";
const COUNTER_PERIOD: Duration = Duration::from_millis(250);

/// The notice the engine gets for one kernel event (`stop`: the claimed stop, if any).
pub fn notice_of(ev: &ExecEvent, stop: Option<Stopped>) -> ExecNotice {
    let complete = |name: &[u8], failed: u32, cut: u32| {
        (ev.flags & (failed | cut) == 0 && !name.is_empty()).then(|| name.to_vec())
    };
    let task_known = ev.flags & EXEC_FLAG_TASK_FAILED == 0;
    ExecNotice {
        pid: ev.tgid,
        start_ns: (task_known && ev.start_ns != 0).then_some(ev.start_ns),
        ppid: (task_known && ev.ppid != 0).then_some(ev.ppid),
        comm: Some(ev.comm_bytes().to_vec()),
        known: Known {
            argv0: complete(
                ev.argv0_name_bytes(),
                EXEC_FLAG_ARGV0_FAILED,
                EXEC_FLAG_ARGV0_TRUNCATED,
            ),
            exe_name: complete(
                ev.exe_name_bytes(),
                EXEC_FLAG_EXE_FAILED,
                EXEC_FLAG_EXE_TRUNCATED,
            ),
            uid: Some(ev.uid),
            pidns_level: (ev.pidns_level != u32::MAX).then_some(ev.pidns_level),
        },
        filename: (ev.flags & EXEC_FLAG_FILENAME_FAILED == 0).then(|| ev.filename_bytes().to_vec()),
        exec_mono_ns: Some(ev.ktime_ns),
        stop,
        source: SOURCE,
    }
}

/// Lost-event accounting from the kernel's cumulative counters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LossTracker {
    pub reported: u64,
    pub stop_failures: u64,
}

impl LossTracker {
    /// How many events were lost since the last call, given the kernel's totals.
    pub fn newly_lost(&mut self, ringbuf_full: u64, read_failed: u64) -> u64 {
        let lost = ringbuf_full + read_failed;
        let new = lost.saturating_sub(self.reported);
        self.reported = self.reported.max(lost);
        new
    }

    /// How many more strict targets the kernel could not stop.
    pub fn newly_unstopped(&mut self, signal_failed: u64) -> u64 {
        let new = signal_failed.saturating_sub(self.stop_failures);
        self.stop_failures = self.stop_failures.max(signal_failed);
        new
    }
}

/// Everything the reader thread owns. Dropping it detaches the hook and resumes the
/// stopped processes whose records were never read.
pub(super) struct Reader {
    pub ring: RingBuf<MapData>,
    pub counters: PerCpuArray<MapData, u64>,
    /// Keeps the programs attached; dropped first.
    pub ebpf: Option<Ebpf>,
    pub ledger: Arc<KernelLedger>,
    pub proc: ProcFs,
    pub loss: LossTracker,
}

impl Reader {
    /// Start the thread.
    pub fn spawn(self, sinks: SourceSinks) -> std::io::Result<SourceThread> {
        // SAFETY: plain syscall; a non-negative result is a new fd we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fresh fd owned by nobody else.
        let stop = unsafe { OwnedFd::from_raw_fd(fd) };
        let wake = stop.try_clone()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let flag = stopping.clone();
        let handle = std::thread::Builder::new()
            .name("ffrtmp-ring".into())
            .spawn(move || self.run(&sinks, &stop, &flag))?;
        Ok(SourceThread::new(
            SOURCE,
            Box::new(move || {
                stopping.store(true, Ordering::Relaxed);
                let one: u64 = 1;
                // SAFETY: an 8-byte write to our eventfd.
                unsafe { libc::write(wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
            }),
            handle,
        ))
    }

    fn counter(&self, index: u32) -> u64 {
        self.counters
            .get(&index, 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }

    /// Publish the kernel's counters and report what they say was lost or not stopped.
    fn check_counters(&mut self, sinks: &SourceSinks) -> bool {
        let k = &sinks.counters;
        let values = [
            self.counter(counter::EXECS),
            self.counter(counter::FORWARDED),
            self.counter(counter::RINGBUF_FULL),
            self.counter(counter::READ_FAILED),
            self.counter(counter::SIGNAL_FAILED),
        ];
        k.store_kernel(values);
        let [_, _, full, read, signal] = values;
        let lost = self.loss.newly_lost(full, read);
        if lost > 0
            && sinks
                .events
                .blocking_send(SourceEvent::Lost {
                    source: SOURCE,
                    count: lost,
                })
                .is_err()
        {
            return false;
        }
        let unstopped = self.loss.newly_unstopped(signal);
        if unstopped > 0
            && sinks
                .events
                .blocking_send(SourceEvent::StopsFailed {
                    source: SOURCE,
                    count: unstopped,
                })
                .is_err()
        {
            return false;
        }
        true
    }

    /// The notice for a record, with the stop claimed.
    fn notice(&self, ev: &ExecEvent) -> ExecNotice {
        let stop = (ev.flags & EXEC_FLAG_STOPPED != 0).then(|| {
            Stopped::claim(
                self.ledger.clone() as Arc<dyn StopLedger>,
                StopKey {
                    tgid: ev.tgid,
                    _pad: 0,
                    start_ns: ev.start_ns,
                },
                &self.proc,
            )
        });
        notice_of(ev, stop)
    }

    /// Hand a notice to the engine, waiting while its queue is full, unless told to stop
    /// (the notice, and so its stop, is then dropped: resumed). `false`: stop reading.
    fn hand_over(sinks: &SourceSinks, n: ExecNotice, stopping: &AtomicBool) -> bool {
        let mut n = n;
        loop {
            match sinks.exec.send_timeout(n, Duration::from_millis(100)) {
                Ok(()) => return true,
                Err(crossbeam_channel::SendTimeoutError::Timeout(back)) => {
                    if stopping.load(Ordering::Relaxed) {
                        return false;
                    }
                    n = back;
                }
                Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => return false,
            }
        }
    }

    fn run(mut self, sinks: &SourceSinks, stop: &OwnedFd, stopping: &AtomicBool) {
        let mut next_check = Instant::now();
        loop {
            let wait = next_check.saturating_duration_since(Instant::now());
            let mut fds = [
                libc::pollfd {
                    fd: self.ring.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: stop.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfds.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, wait.as_millis() as i32) };
            if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                let _ = sinks.events.blocking_send(SourceEvent::Failed {
                    source: SOURCE,
                    error: format!(
                        "waiting on the ring buffer failed: {}",
                        std::io::Error::last_os_error()
                    ),
                });
                return;
            }
            if fds[1].revents != 0 {
                return;
            }
            // Records are released as they are read, which frees ring space for the kernel
            // as early as possible; each notice goes to the engine before the next is read.
            loop {
                let decoded = match self.ring.next() {
                    Some(item) => decode_exec_event(&item),
                    None => break,
                };
                match decoded {
                    Ok(ev) => {
                        let n = self.notice(&ev);
                        if !Self::hand_over(sinks, n, stopping) {
                            return; // stopping, or the engine is gone; the dropped notice resumed its stop
                        }
                    }
                    Err(e) => {
                        let error = format!("{e:?}");
                        if sinks
                            .events
                            .blocking_send(SourceEvent::Undecodable {
                                source: SOURCE,
                                error,
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
            if Instant::now() >= next_check {
                if !self.check_counters(sinks) {
                    return;
                }
                next_check = Instant::now() + COUNTER_PERIOD;
            }
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        // Detach first, so no new process is stopped after the drain below.
        drop(self.ebpf.take());
        loop {
            let decoded = match self.ring.next() {
                Some(item) => decode_exec_event(&item),
                None => break,
            };
            if let Ok(ev) = decoded {
                // The notice's stop, if any, is resumed as it drops here.
                drop(self.notice(&ev));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ffrtmp_common::{COMM_LEN, FILENAME_LEN};

    fn event(flags: u32) -> ExecEvent {
        let mut ev = ExecEvent {
            ktime_ns: 77,
            start_ns: 5_000_000_000,
            cgroup_id: 1,
            tgid: 4242,
            pid: 4242,
            ppid: 1,
            uid: 33,
            gid: 33,
            flags,
            filename_len: 15,
            pidns_level: 0,
            comm: [0; COMM_LEN],
            exe_name: [0; COMM_LEN],
            argv0_name: [0; COMM_LEN],
            filename: [0; FILENAME_LEN],
        };
        ev.comm[..6].copy_from_slice(b"ffmpeg");
        ev.exe_name[..6].copy_from_slice(b"ffmpeg");
        ev.argv0_name[..6].copy_from_slice(b"ffmpeg");
        ev.filename[..15].copy_from_slice(b"/usr/bin/ffmpeg");
        ev
    }

    #[test]
    fn a_notice_carries_identity_names_and_clock() {
        let n = notice_of(&event(0), None);
        assert_eq!(
            (n.pid, n.start_ns, n.ppid),
            (4242, Some(5_000_000_000), Some(1))
        );
        assert_eq!(n.exec_mono_ns, Some(77));
        assert_eq!(n.comm.as_deref(), Some(b"ffmpeg".as_slice()));
        assert_eq!(n.known.argv0.as_deref(), Some(b"ffmpeg".as_slice()));
        assert_eq!(n.known.exe_name.as_deref(), Some(b"ffmpeg".as_slice()));
        assert_eq!((n.known.uid, n.known.pidns_level), (Some(33), Some(0)));
        assert_eq!(n.filename.as_deref(), Some(b"/usr/bin/ffmpeg".as_slice()));
        assert_eq!(n.source, "ebpf");
        assert!(n.stop.is_none());
    }

    #[test]
    fn names_the_kernel_could_not_read_whole_are_left_to_proc() {
        let n = notice_of(
            &event(
                EXEC_FLAG_FILENAME_FAILED
                    | EXEC_FLAG_EXE_TRUNCATED
                    | EXEC_FLAG_ARGV0_FAILED
                    | EXEC_FLAG_TASK_FAILED,
            ),
            None,
        );
        assert_eq!(n.filename, None);
        assert_eq!(n.known.exe_name, None);
        assert_eq!(n.known.argv0, None);
        assert_eq!((n.start_ns, n.ppid), (None, None));
        let mut ev = event(0);
        ev.pidns_level = u32::MAX;
        assert_eq!(notice_of(&ev, None).known.pidns_level, None);
    }

    #[test]
    fn losses_and_failed_stops_are_reported_once() {
        let mut t = LossTracker::default();
        assert_eq!(t.newly_lost(0, 0), 0);
        assert_eq!(t.newly_lost(3, 0), 3);
        assert_eq!(
            t.newly_lost(3, 0),
            0,
            "the same total is not reported twice"
        );
        assert_eq!(t.newly_lost(3, 2), 2);
        assert_eq!(t.newly_unstopped(0), 0);
        assert_eq!(t.newly_unstopped(2), 2);
        assert_eq!(t.newly_unstopped(2), 0);
    }
}
