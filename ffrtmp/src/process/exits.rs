//! One epoll set holding the pidfd of every governed process: a process's exit makes its
//! pidfd readable. The record loop awaits the set's own descriptor (one registration with
//! the runtime), so a governed process costs a descriptor and a table entry, not a task
//! of its own (measured: docs/benchmarks.md, `bench-exec rss`).
//!
//! Descriptors are bounded (`RLIMIT_NOFILE`), governed processes are not. The kernel gives
//! out the lowest free descriptor number, so a pidfd numbered at or past `keep_below`
//! means fewer than `limit - keep_below` descriptors are left: that process is watched by
//! polling instead (its `/proc/PID/stat` start time, once a second) and its pidfd is
//! closed, so placements keep their descriptors and every exit is still seen. Said once,
//! with the numbers and the fix.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use rustix::event::epoll;
use tokio::io::unix::AsyncFd;

use super::{PidFd, ProcFs, ProcessId};

/// How many exits one `exited` call reports at most (more wait for the next call).
const BATCH: usize = 64;
/// How often processes watched without a pidfd are looked at.
const POLL_EVERY: Duration = Duration::from_secs(1);

pub struct ExitSet {
    epoll: AsyncFd<OwnedFd>,
    watched: HashMap<u32, (ProcessId, PidFd)>,
    /// Watched without a pidfd (its number at or past `keep_below`, none could be had, or
    /// epoll refused it).
    polled: HashMap<u32, ProcessId>,
    keep_below: u64,
    poll: tokio::time::Interval,
    proc: ProcFs,
    /// The fallback was announced.
    said: bool,
}

/// The descriptor numbers the set may keep pidfds at under an open-files limit: all but
/// the top quarter of the table (16 to 256 descriptors), which stays for what placing
/// needs for a moment (a pin, /proc and cgroup files, new spares, the state write).
pub fn keep_below_for(limit: u64) -> u64 {
    limit.saturating_sub((limit / 4).clamp(16, 256))
}

/// `keep_below_for` this process's open-files limit (read now).
pub fn keep_below() -> u64 {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    keep_below_for(limit.unwrap_or(u64::MAX))
}

impl ExitSet {
    /// Needs a tokio runtime with I/O and time enabled (the set registers with it).
    /// `keep_below`: pidfds numbered below it are kept (`keep_below_for` the open-files
    /// limit).
    pub fn new(proc: ProcFs, keep_below: u64) -> io::Result<ExitSet> {
        let owned = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        // SAFETY: the AsyncFd owns the OwnedFd, which stays open and is the same descriptor
        // until the AsyncFd drops it.
        let epoll =
            unsafe { AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) }?;
        let mut poll = tokio::time::interval(POLL_EVERY);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(ExitSet {
            epoll,
            watched: HashMap::new(),
            polled: HashMap::new(),
            keep_below,
            poll,
            proc,
            said: false,
        })
    }

    /// Watch `id`, through its pidfd while there is room (`None`: no pidfd could be had).
    /// A process already gone is reported by the next `exited`. Watching a PID again
    /// replaces the older process of that PID.
    pub fn watch(&mut self, id: ProcessId, pidfd: Option<PidFd>) -> io::Result<()> {
        self.unwatch(id.pid);
        match pidfd {
            Some(fd) if (fd.as_fd().as_raw_fd() as u64) < self.keep_below => {
                let added = epoll::add(
                    self.epoll.get_ref(),
                    &fd,
                    epoll::EventData::new_u64(u64::from(id.pid)),
                    epoll::EventFlags::IN,
                );
                if let Err(e) = added {
                    // Watched by polling instead; the caller says why.
                    self.polled.insert(id.pid, id);
                    return Err(e.into());
                }
                self.watched.insert(id.pid, (id, fd));
            }
            // Closed here (dropped): the descriptor goes back to placements.
            _ => {
                self.polled.insert(id.pid, id);
                self.announce();
            }
        }
        Ok(())
    }

    fn announce(&mut self) {
        if std::mem::replace(&mut self.said, true) {
            return;
        }
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        tracing::warn!(
            "The open files limit ({}) is nearly reached ({} pidfd(s) of governed processes held, {} descriptor(s) kept free for placing): governed processes from now on are watched without a pidfd, and their exits are seen within {}s instead of at once. Raise the limit: LimitNOFILE= in the unit (the shipped unit sets 65536), or ulimit -n",
            limit.map_or("unlimited".into(), |n| n.to_string()),
            self.watched.len(),
            limit.map_or(0, |l| l.saturating_sub(self.keep_below)),
            POLL_EVERY.as_secs()
        );
    }

    /// Stop watching `pid` (its pidfd is closed). Nothing if it is not watched.
    pub fn unwatch(&mut self, pid: u32) {
        if let Some((_, fd)) = self.watched.remove(&pid) {
            self.forget(&fd);
        }
        self.polled.remove(&pid);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.watched.len() + self.polled.len()
    }

    /// Explicitly out of the set before the pidfd closes: a duplicate of it elsewhere
    /// would otherwise keep the registration (and its PID as data) alive.
    fn forget(&self, fd: &PidFd) {
        let _ = epoll::delete(self.epoll.get_ref(), fd);
    }

    /// Wait until some watched process has exited, and return those that have (each
    /// once: it is no longer watched). Cancel-safe: an exit not yet taken stays in the
    /// set.
    pub async fn exited(&mut self) -> Vec<ProcessId> {
        loop {
            let ids = tokio::select! {
                r = self.epoll.readable() => match r {
                    Ok(mut guard) => {
                        let ready = ready_pids(guard.get_inner());
                        if ready.len() < BATCH {
                            guard.clear_ready();
                        }
                        drop(guard);
                        ready
                            .into_iter()
                            .filter_map(|pid| {
                                let (id, fd) = self.watched.remove(&pid)?;
                                self.forget(&fd);
                                Some(id)
                            })
                            .collect()
                    }
                    Err(e) => {
                        // The runtime is shutting down: no exit will be reported again, and
                        // the reconciliation scans notice the ended processes instead.
                        tracing::error!(
                            "the exit set stopped waiting: {e}; exits are found by scans from now on"
                        );
                        return std::future::pending().await;
                    }
                },
                _ = self.poll.tick(), if !self.polled.is_empty() => self.polled_gone(),
            };
            if !ids.is_empty() {
                return ids;
            }
        }
    }

    /// Polled processes that are gone (exited, a zombie, or their PID another's now).
    fn polled_gone(&mut self) -> Vec<ProcessId> {
        let gone: Vec<ProcessId> = self
            .polled
            .values()
            .filter(|id| matches!(self.proc.is_alive(**id), Ok(false)))
            .copied()
            .collect();
        for id in &gone {
            self.polled.remove(&id.pid);
        }
        gone
    }
}

/// The data (PIDs) of the ready entries, without waiting.
fn ready_pids(set: &OwnedFd) -> Vec<u32> {
    let mut evs: Vec<epoll::Event> = Vec::with_capacity(BATCH);
    let _ = epoll::wait(
        set,
        rustix::buffer::spare_capacity(&mut evs),
        Some(&rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        }),
    );
    evs.iter().map(|e| e.data.u64() as u32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn id_of(child: &std::process::Child) -> ProcessId {
        ProcessId {
            pid: child.id(),
            start_time: ProcFs::system()
                .stat(child.id())
                .map_or(0, |s| s.start_time),
        }
    }

    #[tokio::test]
    async fn reports_each_exit_once_and_forgets_unwatched() {
        let mut set = ExitSet::new(ProcFs::system(), u64::MAX).unwrap();
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
            set.watch(id_of(c), Some(PidFd::open(c.id()).unwrap()))
                .unwrap();
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
        let mut set = ExitSet::new(ProcFs::system(), u64::MAX).unwrap();
        let mut c = std::process::Command::new("/bin/true").spawn().unwrap();
        let fd = PidFd::open(c.id()).unwrap();
        // Exited (a zombie until reaped): the pidfd is readable already.
        std::thread::sleep(Duration::from_millis(100));
        set.watch(id_of(&c), Some(fd)).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), set.exited())
            .await
            .expect("reported");
        assert_eq!(got, vec![id_of(&c)]);
        let _ = c.wait();
    }

    /// Past its descriptor numbers the set watches without pidfds, and still reports
    /// each exit.
    #[tokio::test]
    async fn beyond_its_descriptors_exits_are_still_seen_without_pidfds() {
        let mut kids: Vec<std::process::Child> = (0..3)
            .map(|_| {
                std::process::Command::new("/bin/sleep")
                    .arg("30")
                    .spawn()
                    .unwrap()
            })
            .collect();
        let fds: Vec<PidFd> = kids.iter().map(|c| PidFd::open(c.id()).unwrap()).collect();
        let lowest = fds.iter().map(|f| f.as_fd().as_raw_fd()).min().unwrap();
        let mut set = ExitSet::new(ProcFs::system(), lowest as u64 + 1).unwrap();
        for (c, fd) in kids.iter().zip(fds) {
            set.watch(id_of(c), Some(fd)).unwrap();
        }
        assert_eq!(set.watched.len(), 1, "one pidfd kept");
        assert_eq!(set.polled.len(), 2, "two watched by polling");
        let mut seen = Vec::new();
        for c in &mut kids {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        while seen.len() < 3 {
            let got = tokio::time::timeout(Duration::from_secs(5), set.exited())
                .await
                .expect("every exit is reported, polled ones within a second");
            seen.extend(got);
        }
        seen.sort_by_key(|id| id.pid);
        let mut want: Vec<ProcessId> = kids.iter().map(id_of).collect();
        want.sort_by_key(|id| id.pid);
        assert_eq!(
            seen.iter().map(|i| i.pid).collect::<Vec<_>>(),
            want.iter().map(|i| i.pid).collect::<Vec<_>>()
        );
        assert_eq!(set.len(), 0);
    }

    #[test]
    fn the_top_of_the_table_stays_free_for_placing() {
        assert_eq!(keep_below_for(64), 48);
        assert_eq!(keep_below_for(1024), 768);
        assert_eq!(keep_below_for(65536), 65280);
        assert_eq!(keep_below_for(0), 0);
    }
}
