//! An exec the kernel holds at the gate (fanotify `FAN_OPEN_EXEC_PERM`), as a value. The
//! process sleeps inside its execve until it is answered; whoever holds a `Gated` owns the
//! answer, and dropping it answers: there is no call site that has to remember, as with
//! `Stopped`. The gate never denies: every answer lets the exec go on, placed or not.
//!
//! Two parties answer, whichever comes first: the holder (the engine, right after the
//! verified move, or as soon as it decides not to place), and the gate thread, when
//! `gate_timeout` passes (a late answer). The event's descriptor is claimed by one of them
//! with an atomic swap, so it is answered and closed exactly once.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use super::monotonic_ns;

/// How a held exec was let go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// After its verified move into its job cgroup.
    Placed,
    /// Not to be placed (filtered, a container, dry run, a failed move, a full queue).
    Unplaced,
    /// `gate_timeout` passed first.
    Late,
}

/// Writes the answer for an event's descriptor and closes it (the fanotify group; a
/// recording fake in tests).
pub trait Responder: Send + Sync {
    /// Let the exec of event `fd` go on, and close `fd`. `held_ns`: read → answer.
    fn allow(&self, fd: i32, answer: Answer, held_ns: u64);
}

/// One held exec, shared by its holder and the gate thread's deadline list.
pub struct Held {
    /// The event's descriptor; -1 once answered.
    fd: AtomicI32,
    pub pid: u32,
    /// The target the marked binary is, its path, and its (dev, ino): an exec that
    /// went through leaves the process with that inode as its exe.
    pub target: String,
    pub exe: PathBuf,
    pub inode: (u64, u64),
    /// CLOCK_MONOTONIC ns when the gate read the event.
    pub read_mono_ns: u64,
    responder: Arc<dyn Responder>,
}

impl Held {
    pub fn new(
        fd: i32,
        pid: u32,
        target: String,
        (exe, inode): (PathBuf, (u64, u64)),
        read_mono_ns: u64,
        responder: Arc<dyn Responder>,
    ) -> Arc<Held> {
        Arc::new(Held {
            fd: AtomicI32::new(fd),
            pid,
            target,
            exe,
            inode,
            read_mono_ns,
            responder,
        })
    }

    /// Answer now, if nobody has: `true` if this call answered.
    pub fn answer(&self, answer: Answer) -> bool {
        let fd = self.fd.swap(-1, Ordering::AcqRel);
        if fd < 0 {
            return false;
        }
        let held = monotonic_ns().saturating_sub(self.read_mono_ns);
        self.responder.allow(fd, answer, held);
        true
    }

    pub fn is_answered(&self) -> bool {
        self.fd.load(Ordering::Acquire) < 0
    }
}

/// The holder's share of a held exec: dropping it answers `Unplaced`.
pub struct Gated {
    held: Arc<Held>,
    /// The process's comm before its exec (the engine reads it when it takes the exec):
    /// unchanged after the answer, the exec failed.
    pub old_comm: Vec<u8>,
}

impl Gated {
    pub fn new(held: Arc<Held>) -> Gated {
        Gated {
            held,
            old_comm: Vec::new(),
        }
    }

    pub fn held(&self) -> &Held {
        &self.held
    }

    /// Answer after the verified move. `false`: the deadline had answered already.
    pub fn placed(self) -> bool {
        self.held.answer(Answer::Placed)
    }
}

impl Drop for Gated {
    fn drop(&mut self) {
        self.held.answer(Answer::Unplaced);
    }
}

impl fmt::Debug for Gated {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "Gated(pid {}, {})",
            self.held.pid,
            self.held.exe.display()
        )
    }
}

/// Answers kept in memory, for tests and replays.
#[derive(Default)]
pub struct MemoryResponder {
    pub answers: std::sync::Mutex<Vec<(i32, Answer)>>,
}

impl Responder for MemoryResponder {
    fn allow(&self, fd: i32, answer: Answer, _held_ns: u64) {
        self.answers.lock().unwrap().push((fd, answer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(r: &Arc<MemoryResponder>) -> Arc<Held> {
        Held::new(
            7,
            42,
            "ffmpeg".into(),
            ("/usr/bin/ffmpeg".into(), (1, 2)),
            monotonic_ns(),
            r.clone(),
        )
    }

    #[test]
    fn dropping_answers_unplaced_once() {
        let r = Arc::new(MemoryResponder::default());
        let h = held(&r);
        drop(Gated::new(h.clone()));
        assert!(h.is_answered());
        assert!(!h.answer(Answer::Late));
        assert_eq!(*r.answers.lock().unwrap(), vec![(7, Answer::Unplaced)]);
    }

    #[test]
    fn a_late_answer_wins_over_the_holder() {
        let r = Arc::new(MemoryResponder::default());
        let h = held(&r);
        let g = Gated::new(h.clone());
        assert!(h.answer(Answer::Late));
        assert!(!g.placed());
        assert_eq!(*r.answers.lock().unwrap(), vec![(7, Answer::Late)]);
    }
}
