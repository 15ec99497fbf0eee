//! A process pinned: a pidfd and the stat read while it was held (or, out of descriptors,
//! its start time alone).

use std::io;

use super::{PidFd, ProcFs, ProcessId, Stat};

/// A process pinned by a pidfd, with the stat read while the pin was held. Without a
/// pidfd (none could be opened: the open-files limit is reached) the pin is its start
/// time, checked again in /proc where the pidfd would be asked.
#[derive(Debug)]
pub struct Pinned {
    pub id: ProcessId,
    pub stat: Stat,
    pub pidfd: Option<PidFd>,
}

impl Pinned {
    /// A pidfd and the stat read after it was opened: the stat is the pidfd's process if
    /// that process is still alive (and not a zombie) now.
    pub fn new(pidfd: PidFd, stat: Stat) -> io::Result<Pinned> {
        if !pidfd.is_alive() || stat.is_zombie() {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(Pinned {
            id: ProcessId {
                pid: stat.pid,
                start_time: stat.start_time,
            },
            stat,
            pidfd: Some(pidfd),
        })
    }

    /// Whether the pinned process has not exited (a zombie counts as exited).
    pub fn is_alive(&self, proc: &ProcFs) -> bool {
        match &self.pidfd {
            Some(fd) => fd.is_alive(),
            // A read that fails for another reason than the process being gone (EMFILE,
            // ENOMEM) says nothing about it: taken as alive.
            None => proc.is_alive(self.id).unwrap_or(true),
        }
    }
}

impl ProcFs {
    /// Pin `pid`: open a pidfd, read stat, and check the pidfd's process is still alive, so
    /// the stat (and the start time in it) belongs to the pinned process.
    ///
    /// Out of descriptors (EMFILE, ENFILE), the process is pinned by its start time alone,
    /// so placing goes on at any open-files limit.
    pub fn pin(&self, pid: u32) -> io::Result<Pinned> {
        let pidfd = match PidFd::open(pid) {
            Ok(fd) => fd,
            Err(e) if super::out_of_descriptors(&e) => {
                let stat = self.stat(pid)?;
                if stat.is_zombie() {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                let id = ProcessId {
                    pid: stat.pid,
                    start_time: stat.start_time,
                };
                return Ok(Pinned {
                    id,
                    stat,
                    pidfd: None,
                });
            }
            Err(e) => return Err(e),
        };
        let stat = self.stat(pid)?;
        Pinned::new(pidfd, stat)
    }
}
