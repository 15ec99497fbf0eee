//! A process the kernel stopped for strict placement, as a value. Whoever holds a
//! `Stopped` owns the duty to resume it, and dropping it resumes it: there is no call site
//! that has to remember. The kernel program records every stop in a ledger (`STOPPED`,
//! pinned in bpffs so it outlives a daemon that dies); resuming sends SIGCONT through a
//! pidfd — so a process whose PID was reused is never signalled — and removes the entry.
//!
//! Three parties resume: the holder (placed, refused, failed, shut down, or the thread
//! holding it unwound), the deadline sweep (`strict_timeout` after the stop, whatever the
//! holder is doing), and the next daemon (entries of a ledger whose daemon died).

use std::fmt;
use std::sync::Arc;

use ffrtmp_common::StopKey;

use super::{PidFd, Pinned, ProcFs, ProcessId, Stat};

/// A record of stops: the kernel's `STOPPED` map, or an in-memory one in tests.
pub trait StopLedger: Send + Sync {
    /// Remove the entry; `true` if it was there.
    fn take(&self, key: &StopKey) -> bool;
    /// Every entry, with `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of its stop.
    fn entries(&self) -> Vec<(StopKey, u64)>;
    /// For messages: where the ledger lives.
    fn describe(&self) -> String;
    /// The daemon that kept this ledger is gone and the ledger is empty: remove it.
    fn retire(&self) {}
}

/// How a resume went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resumed {
    /// SIGCONT sent; the ledger entry was ours to remove.
    Now,
    /// SIGCONT sent, but someone (the deadline sweep) had already resumed it.
    AlreadyResumed,
    /// The stopped process is gone (exited, or its PID now belongs to another process).
    Gone,
}

pub struct Stopped {
    key: StopKey,
    /// The process pinned at the claim, if it is still the one that was stopped; boxed, as
    /// every exec notice carries an `Option<Stopped>`.
    pinned: Option<Box<Pinned>>,
    /// Where its start time is read again when the pin has no pidfd to signal it through
    /// (only then).
    proc: Option<Box<ProcFs>>,
    ledger: Arc<dyn StopLedger>,
    done: bool,
}

impl fmt::Debug for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "Stopped(pid {}, start {} ns)",
            self.key.tgid, self.key.start_ns
        )
    }
}

impl Stopped {
    /// Take over the stop `key` recorded in `ledger`: pin the process and check it is the
    /// one stopped (its start time), so a reused PID is never resumed or placed for it.
    ///
    /// Out of descriptors (EMFILE, ENFILE) it is claimed by its start time alone, and
    /// resumed by PID once that start time is read again: never left stopped for want of
    /// a pidfd.
    pub fn claim(ledger: Arc<dyn StopLedger>, key: StopKey, proc: &ProcFs) -> Stopped {
        let pinned = proc
            .pin(key.tgid)
            .ok()
            .filter(|p| p.id.start_time == proc.ticks_from_ns(key.start_ns));
        let proc = pinned
            .as_ref()
            .filter(|p| p.pidfd.is_none())
            .map(|_| Box::new(proc.clone()));
        Stopped {
            key,
            pinned: pinned.map(Box::new),
            proc,
            ledger,
            done: false,
        }
    }

    /// Without a pidfd: whether the PID is still the stopped process (its start time);
    /// an error when /proc cannot say (EMFILE: the entry must then stay).
    fn same_process(&self) -> std::io::Result<bool> {
        match &self.proc {
            Some(proc) => proc.is_alive(self.id(proc)),
            None => Ok(false),
        }
    }

    fn pidfd(&self) -> Option<&PidFd> {
        self.pinned.as_ref()?.pidfd.as_ref()
    }

    /// The process pinned as `ProcFs::pin` would, from what the claim already opened and
    /// read (a duplicate of its pidfd; no second pidfd_open and stat read on the strict
    /// path). `None` if it is gone, or not the process that was stopped.
    pub fn pin(&self) -> Option<Pinned> {
        let p = self.pinned.as_ref()?;
        let pidfd = match &p.pidfd {
            Some(fd) => Some(fd.try_clone().ok()?),
            None => None,
        };
        Some(Pinned {
            id: p.id,
            stat: Stat::clone(&p.stat),
            pidfd,
        })
    }

    pub fn pid(&self) -> u32 {
        self.key.tgid
    }

    pub fn key(&self) -> StopKey {
        self.key
    }

    /// The identity `/proc` shows for the stopped process.
    pub fn id(&self, proc: &ProcFs) -> ProcessId {
        ProcessId {
            pid: self.key.tgid,
            start_time: proc.ticks_from_ns(self.key.start_ns),
        }
    }

    /// Whether the stopped process is still there to be placed.
    pub fn is_present(&self) -> bool {
        match self.pidfd() {
            Some(fd) => fd.is_alive(),
            None => self.same_process().unwrap_or(true),
        }
    }

    /// Resume it now.
    pub fn resume(mut self) -> Resumed {
        self.resume_once()
    }

    fn resume_once(&mut self) -> Resumed {
        self.done = true;
        // SIGCONT first, then the ledger: a daemon that dies in between leaves an entry
        // for a running process (resumed again, harmlessly), never a stopped process
        // without an entry.
        let signalled = match self.pidfd() {
            Some(p) => p.signal(rustix::process::Signal::CONT),
            None => match self.same_process() {
                Ok(true) => rustix::process::Pid::from_raw(self.key.tgid as i32)
                    .map_or(Err(rustix::io::Errno::SRCH), |pid| {
                        rustix::process::kill_process(pid, rustix::process::Signal::CONT)
                    })
                    .map_err(Into::into),
                Ok(false) => Err(std::io::Error::from_raw_os_error(libc::ESRCH)),
                Err(e) => Err(e),
            },
        };
        let sent = match signalled {
            Ok(()) => true,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => false,
            Err(e) => {
                // Still there and still stopped: its ledger entry stays, so the sweeper
                // (or the next daemon) tries again.
                tracing::error!(
                    pid = self.key.tgid,
                    "Cannot resume PID {} stopped for strict placement: {e}; its stop stays in the ledger, to be resumed again",
                    self.key.tgid
                );
                return Resumed::Gone;
            }
        };
        let ours = self.ledger.take(&self.key);
        match (sent, ours) {
            (true, true) => Resumed::Now,
            (true, false) => Resumed::AlreadyResumed,
            (false, _) => Resumed::Gone,
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if !self.done {
            self.resume_once();
        }
    }
}

/// An in-memory ledger, for tests and for sources that stop processes themselves.
#[derive(Default)]
pub struct MemoryLedger {
    entries: std::sync::Mutex<std::collections::BTreeMap<StopKey, u64>>,
}

impl MemoryLedger {
    pub fn record(&self, key: StopKey, ktime_ns: u64) {
        self.entries
            .lock()
            .expect("ledger lock")
            .insert(key, ktime_ns);
    }
    pub fn len(&self) -> usize {
        self.entries.lock().expect("ledger lock").len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl StopLedger for MemoryLedger {
    fn take(&self, key: &StopKey) -> bool {
        self.entries
            .lock()
            .expect("ledger lock")
            .remove(key)
            .is_some()
    }
    fn entries(&self) -> Vec<(StopKey, u64)> {
        self.entries
            .lock()
            .expect("ledger lock")
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect()
    }
    fn describe(&self) -> String {
        "in-memory ledger".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::Duration;

    fn state(pid: u32) -> u8 {
        ProcFs::system().stat(pid).map(|s| s.state).unwrap_or(b'?')
    }

    fn wait_state(pid: u32, want: u8) -> bool {
        (0..200).any(|_| {
            if state(pid) == want {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
            false
        })
    }

    /// A child stopped the way the kernel program stops one, and a ledger holding its
    /// entry.
    fn stopped_child() -> (Arc<MemoryLedger>, std::process::Child, StopKey) {
        let ledger = Arc::new(MemoryLedger::default());
        let child = crate::testutil::spawn(Command::new("sleep").arg("30"));
        let pid = child.id();
        let proc = ProcFs::system();
        let ticks = proc.stat(pid).unwrap().start_time;
        // A start time in ns that maps back to the same ticks.
        let start_ns = ticks * (1_000_000_000 / 100) + 1234;
        assert_eq!(proc.ticks_from_ns(start_ns), ticks);
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        assert!(wait_state(pid, b'T'));
        let key = StopKey {
            tgid: pid,
            _pad: 0,
            start_ns,
        };
        ledger.record(key, 1);
        (ledger, child, key)
    }

    #[test]
    fn dropping_it_resumes_the_process_and_clears_the_ledger() {
        let (ledger, mut child, key) = stopped_child();
        let s = Stopped::claim(ledger.clone(), key, &ProcFs::system());
        assert!(s.is_present());
        drop(s);
        assert!(
            wait_state(child.id(), b'S'),
            "state {}",
            state(child.id()) as char
        );
        assert!(ledger.is_empty());
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn its_pin_is_the_one_procfs_gives_without_reading_proc_again() {
        let (ledger, mut child, key) = stopped_child();
        let proc = ProcFs::system();
        let s = Stopped::claim(ledger.clone(), key, &proc);
        let from_claim = s.pin().expect("a stopped child that is still there");
        let fresh = proc.pin(child.id()).unwrap();
        assert_eq!(from_claim.id, fresh.id);
        assert_eq!(from_claim.stat.comm, fresh.stat.comm);
        assert!(from_claim.pidfd.as_ref().unwrap().is_alive());
        drop(s);
        // Its own pidfd: still usable once the stop (and the claim's pidfd) is gone.
        assert!(from_claim.pidfd.as_ref().unwrap().is_alive());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!from_claim.pidfd.as_ref().unwrap().is_alive());
        let gone = Stopped::claim(ledger.clone(), key, &proc);
        assert!(gone.pin().is_none(), "an exited process is not pinned");
    }

    #[test]
    fn a_second_resumer_finds_it_done() {
        let (ledger, mut child, key) = stopped_child();
        let proc = ProcFs::system();
        let holder = Stopped::claim(ledger.clone(), key, &proc);
        let sweep = Stopped::claim(ledger.clone(), key, &proc);
        assert_eq!(sweep.resume(), Resumed::Now);
        assert_eq!(holder.resume(), Resumed::AlreadyResumed);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_reused_pid_is_never_signalled() {
        let (ledger, mut child, mut key) = stopped_child();
        // The ledger says another process (another start time) was stopped under this PID.
        ledger.take(&key);
        key.start_ns += 10_000_000_000;
        ledger.record(key, 1);
        let s = Stopped::claim(ledger.clone(), key, &ProcFs::system());
        assert!(!s.is_present());
        assert!(s.pin().is_none(), "not pinned for the stopped process");
        assert_eq!(s.resume(), Resumed::Gone);
        assert_eq!(
            state(child.id()),
            b'T',
            "our stopped child was not continued"
        );
        assert!(ledger.is_empty(), "the stale entry is cleared");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
