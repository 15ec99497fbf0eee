//! A pidfd pins one process: it keeps referring to that process even if its PID is reused,
//! becomes readable when it exits, and signals only it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

#[derive(Debug)]
pub struct PidFd(OwnedFd);

impl PidFd {
    /// `pidfd_open(pid, 0)`. ESRCH when the process is gone.
    pub fn open(pid: u32) -> io::Result<PidFd> {
        // SAFETY: plain syscall; on success it returns a new fd that we own.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor owned by nobody else.
        Ok(PidFd(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
    }

    /// Send `sig` to the pinned process (0 = only check that it exists).
    pub fn signal(&self, sig: i32) -> io::Result<()> {
        // SAFETY: pidfd_send_signal with a valid fd and a null siginfo.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether the pinned process has not exited yet (a zombie counts as exited).
    pub fn is_alive(&self) -> bool {
        // A pidfd polls readable once the process has exited (zombie or reaped).
        let mut pfd = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let r = unsafe { libc::poll(&mut pfd, 1, 0) };
        r == 0
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
