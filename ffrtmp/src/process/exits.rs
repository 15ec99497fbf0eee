//! One epoll set holding the pidfd of every governed process: a process's exit makes its
//! pidfd readable. The record loop awaits the set's own descriptor (one registration with
//! the runtime), so a governed process costs a descriptor and a table entry, not a task
//! of its own (measured: docs/benchmarks.md, `bench-exec rss`).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;

use super::{PidFd, ProcessId};

/// How many exits one `exited` call reports at most (more wait for the next call).
const BATCH: usize = 64;

pub struct ExitSet {
    epoll: AsyncFd<OwnedFd>,
    watched: HashMap<u32, (ProcessId, PidFd)>,
}

impl ExitSet {
    /// Needs a tokio runtime with I/O enabled (the set registers with it).
    pub fn new() -> io::Result<ExitSet> {
        // SAFETY: plain syscall; on success it returns a new descriptor that we own.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor owned by nobody else.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the AsyncFd owns the OwnedFd, which stays open and is the same
        // descriptor as_raw_fd returns until the AsyncFd drops it.
        let epoll =
            unsafe { AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) }?;
        Ok(ExitSet {
            epoll,
            watched: HashMap::new(),
        })
    }

    /// Watch `id` through `pidfd`. A process already gone is reported by the next
    /// `exited`. Watching a PID again replaces the older process of that PID.
    pub fn watch(&mut self, id: ProcessId, pidfd: PidFd) -> io::Result<()> {
        self.unwatch(id.pid);
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: u64::from(id.pid),
        };
        // SAFETY: both descriptors are valid; `ev` lives through the call.
        if unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                pidfd.as_raw_fd(),
                &mut ev,
            )
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
        self.watched.insert(id.pid, (id, pidfd));
        Ok(())
    }

    /// Stop watching `pid` (its pidfd is closed). Nothing if it is not watched.
    pub fn unwatch(&mut self, pid: u32) {
        if let Some((_, fd)) = self.watched.remove(&pid) {
            self.forget(&fd);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.watched.len()
    }

    /// Explicitly out of the set before the pidfd closes: a duplicate of it elsewhere
    /// would otherwise keep the registration (and its PID as data) alive.
    fn forget(&self, fd: &PidFd) {
        // SAFETY: both descriptors are valid; DEL ignores the event argument.
        unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd.as_raw_fd(),
                std::ptr::null_mut(),
            );
        }
    }

    /// Wait until some watched process has exited, and return those that have (each
    /// once: it is no longer watched). Cancel-safe: an exit not yet taken stays in the
    /// set.
    pub async fn exited(&mut self) -> Vec<ProcessId> {
        loop {
            let mut guard = match self.epoll.readable().await {
                Ok(g) => g,
                Err(e) => {
                    // The runtime is shutting down: no exit will be reported again, and
                    // the reconciliation scans notice the ended processes instead.
                    tracing::error!(
                        "the exit set stopped waiting: {e}; exits are found by scans from now on"
                    );
                    return std::future::pending().await;
                }
            };
            let ready = ready_pids(guard.get_inner().as_raw_fd());
            if ready.len() < BATCH {
                guard.clear_ready();
            }
            drop(guard);
            let ids: Vec<ProcessId> = ready
                .into_iter()
                .filter_map(|pid| {
                    let (id, fd) = self.watched.remove(&pid)?;
                    self.forget(&fd);
                    Some(id)
                })
                .collect();
            if !ids.is_empty() {
                return ids;
            }
        }
    }
}

/// The data (PIDs) of the ready entries, without waiting.
fn ready_pids(epoll: RawFd) -> Vec<u32> {
    let mut evs = [libc::epoll_event { events: 0, u64: 0 }; BATCH];
    // SAFETY: `evs` has room for BATCH events; timeout 0 never blocks.
    let n = unsafe { libc::epoll_wait(epoll, evs.as_mut_ptr(), BATCH as i32, 0) };
    evs[..n.max(0) as usize]
        .iter()
        .map(|e| e.u64 as u32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn id_of(child: &std::process::Child) -> ProcessId {
        ProcessId {
            pid: child.id(),
            start_time: 0,
        }
    }

    #[tokio::test]
    async fn reports_each_exit_once_and_forgets_unwatched() {
        let mut set = ExitSet::new().unwrap();
        let mut quick = std::process::Command::new("/bin/sleep")
            .arg("0.1")
            .spawn()
            .unwrap();
        let mut slow = std::process::Command::new("/bin/sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut dropped = std::process::Command::new("/bin/true").spawn().unwrap();
        for c in [&quick, &slow, &dropped] {
            set.watch(id_of(c), PidFd::open(c.id()).unwrap()).unwrap();
        }
        set.unwatch(dropped.id());
        assert_eq!(set.len(), 2);
        let got = tokio::time::timeout(Duration::from_secs(5), set.exited())
            .await
            .expect("the short sleep exits");
        assert_eq!(got, vec![id_of(&quick)]);
        assert_eq!(set.len(), 1);
        // The unwatched exit is never reported, the live one is not yet.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), set.exited())
                .await
                .is_err()
        );
        slow.kill().unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), set.exited())
            .await
            .expect("the killed sleep exits");
        assert_eq!(got, vec![id_of(&slow)]);
        assert_eq!(set.len(), 0);
        for c in [&mut quick, &mut slow, &mut dropped] {
            let _ = c.wait();
        }
    }

    #[tokio::test]
    async fn a_process_gone_before_it_is_watched_is_reported() {
        let mut set = ExitSet::new().unwrap();
        let mut c = std::process::Command::new("/bin/true").spawn().unwrap();
        let fd = PidFd::open(c.id()).unwrap();
        // Exited (a zombie until reaped): the pidfd is readable already.
        std::thread::sleep(Duration::from_millis(100));
        set.watch(id_of(&c), fd).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), set.exited())
            .await
            .expect("reported");
        assert_eq!(got, vec![id_of(&c)]);
        let _ = c.wait();
    }
}
