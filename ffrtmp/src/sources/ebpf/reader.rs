//! The ring buffer's reader, drained by the placement engine's own thread: an exec event
//! goes from the kernel to its placement with one wakeup (the engine sleeps in poll(2) on
//! the ring's fd). A separate reader thread handing events over a queue was measured
//! first: the second wakeup added 0.6 ms at p90 (docs/benchmarks.md).
//!
//! Each record is decoded with the length-checked `decode_exec_event` (a bad one is
//! reported, never a panic), and for a process the kernel stopped the stop is claimed at
//! once (`Stopped::claim`: pidfd plus a start-time check), so from its first moment in
//! user space the stop has an owner whose drop resumes it.
//!
//! Dropping the reader (when the engine ends) detaches the hook first, then drains what is
//! left in the ring: a stopped process among those records is resumed by its dropped
//! notice.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use aya::maps::{MapData, RingBuf};
use aya::Ebpf;
use ffrtmp_common::user::decode_exec_event;
use ffrtmp_common::{
    ExecEvent, StopKey, EXEC_FLAG_ARGV0_FAILED, EXEC_FLAG_ARGV0_TRUNCATED, EXEC_FLAG_EXE_FAILED,
    EXEC_FLAG_EXE_TRUNCATED, EXEC_FLAG_STOPPED, EXEC_FLAG_TASK_FAILED,
};

use super::ledger::KernelLedger;
use crate::exec::{ExecNotice, Ring};
use crate::process::{Known, ProcFs, StopLedger, Stopped};

pub const SOURCE: &str = "ebpf";

/// The notice the engine gets for one kernel event (`stop`: the claimed stop, if any).
pub fn notice_of(ev: &ExecEvent, stop: Option<Stopped>) -> ExecNotice {
    let complete = |name: &[u8], failed: u32, cut: u32| {
        (ev.flags & (failed | cut) == 0 && !name.is_empty()).then(|| name.to_vec())
    };
    let task_known = ev.flags & EXEC_FLAG_TASK_FAILED == 0;
    ExecNotice {
        pid: ev.tgid,
        start_ns: (task_known && ev.start_ns != 0).then_some(ev.start_ns),
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
        exec_mono_ns: Some(ev.ktime_ns),
        read_mono_ns: Some(crate::process::monotonic_ns()),
        stop,
        gated: None,
        source: SOURCE,
    }
}

/// The ring, the attached programs, and what claiming a stop needs.
pub struct RingReader {
    ring: RingBuf<MapData>,
    /// Keeps the programs attached; dropped first.
    ebpf: Option<Ebpf>,
    ledger: Arc<KernelLedger>,
    proc: ProcFs,
    /// Processes placed while the exec gate held them (`GATED`): their strict stop is
    /// skipped. None with an object that has no such map.
    gated: Option<aya::maps::HashMap<MapData, u32, u64>>,
}

impl RingReader {
    pub(super) fn new(ring: RingBuf<MapData>, mut ebpf: Ebpf, ledger: Arc<KernelLedger>) -> Self {
        let gated = ebpf
            .take_map("GATED")
            .and_then(|m| aya::maps::HashMap::try_from(m).ok());
        RingReader {
            ring,
            ebpf: Some(ebpf),
            ledger,
            proc: ProcFs::system(),
            gated,
        }
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
}

impl Ring for RingReader {
    /// The fd that polls readable when records are waiting.
    fn fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }

    /// Every record waiting, in order: a notice, or why a record could not be decoded.
    /// Records are released as they are read, so the kernel gets the space back at once.
    fn drain(&mut self, out: &mut Vec<Result<ExecNotice, String>>) {
        loop {
            let decoded = match self.ring.next() {
                Some(item) => decode_exec_event(&item),
                None => return,
            };
            out.push(
                decoded
                    .map(|ev| self.notice(&ev))
                    .map_err(|e| format!("{e:?}")),
            );
        }
    }

    /// The kernel program then lets the exec event that follows go unstopped.
    fn placed_at_gate(&mut self, tgid: u32) {
        if let Some(m) = self.gated.as_mut() {
            let _ = m.insert(tgid, crate::process::monotonic_ns(), 0);
        }
    }
}

impl Drop for RingReader {
    fn drop(&mut self) {
        // Detach first, so no new process is stopped after the drain below.
        drop(self.ebpf.take());
        let mut left = Vec::new();
        self.drain(&mut left);
        // The notices' stops, if any, are resumed as they drop here.
        drop(left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ffrtmp_common::{COMM_LEN, EXEC_FLAG_FILENAME_FAILED, FILENAME_LEN};

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
        assert_eq!((n.pid, n.start_ns), (4242, Some(5_000_000_000)));
        assert_eq!(n.exec_mono_ns, Some(77));
        assert_eq!(n.known.argv0.as_deref(), Some(b"ffmpeg".as_slice()));
        assert_eq!(n.known.exe_name.as_deref(), Some(b"ffmpeg".as_slice()));
        assert_eq!((n.known.uid, n.known.pidns_level), (Some(33), Some(0)));
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
        assert_eq!(n.known.exe_name, None);
        assert_eq!(n.known.argv0, None);
        assert_eq!(n.start_ns, None);
        let mut ev = event(0);
        ev.pidns_level = u32::MAX;
        assert_eq!(notice_of(&ev, None).known.pidns_level, None);
    }
}
