//! A pidfd pins one process: it keeps referring to that process even if its PID is reused,
//! becomes readable when it exits, and signals only it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use rustix::event::{poll, PollFd, PollFlags};
use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

#[derive(Debug)]
pub struct PidFd(OwnedFd);

impl PidFd {
    /// `pidfd_open(pid, 0)`. ESRCH when the process is gone.
    pub fn open(pid: u32) -> io::Result<PidFd> {
        let pid =
            Pid::from_raw(pid as i32).ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
        Ok(PidFd(pidfd_open(pid, PidfdFlags::empty())?))
    }

    /// Send `sig` to the pinned process.
    pub fn signal(&self, sig: Signal) -> io::Result<()> {
        Ok(pidfd_send_signal(&self.0, sig)?)
    }

    /// Whether the pinned process has not exited yet (a zombie counts as exited).
    pub fn is_alive(&self) -> bool {
        // A pidfd polls readable once the process has exited (zombie or reaped).
        let mut p = [PollFd::new(&self.0, PollFlags::IN)];
        poll(
            &mut p,
            Some(&rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            }),
        ) == Ok(0)
    }

    /// Wait until the pinned process exits (the pidfd polls readable). No polling loop:
    /// the fd sits in the runtime's epoll set.
    pub async fn exited(self) {
        // SAFETY: the OwnedFd is valid and owned by the AsyncFd until it is dropped here.
        if let Ok(afd) = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(self.0, tokio::io::Interest::READABLE)
        } {
            let _ = afd.readable().await;
        }
    }

    pub fn try_clone(&self) -> io::Result<PidFd> {
        Ok(PidFd(self.0.try_clone()?))
    }

    pub fn into_owned(self) -> OwnedFd {
        self.0
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for PidFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}
