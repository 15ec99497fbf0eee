//! The kernel's own part of a held exec, for `bench-exec inline`: a fanotify listener that
//! marks the target with `FAN_OPEN_EXEC_PERM` and answers `FAN_ALLOW` at once, placing
//! nothing. What the exec gate adds beyond this is the daemon's; this much any listener
//! pays (the kernel queues the event, opens the binary for the listener, wakes it, and
//! waits for its answer).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::thread::JoinHandle;

use anyhow::{bail, Context, Result};

/// A listener thread holding one mark; dropping it stops the thread and closes the group
/// (which allows whatever is still pending).
pub(super) struct BareGate {
    /// Held open while the thread answers; closed after it is joined.
    _group: OwnedFd,
    stop: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

impl BareGate {
    /// Mark `target` and answer each of its execs at once, on a thread at nice `nice`.
    pub(super) fn start(target: &Path, nice: i32) -> Result<BareGate> {
        let path = CString::new(target.as_os_str().as_bytes())?;
        // SAFETY: a plain syscall; a descriptor it returns is ours alone.
        let group = unsafe {
            libc::fanotify_init(
                libc::FAN_CLASS_CONTENT | libc::FAN_CLOEXEC,
                (libc::O_RDONLY | libc::O_CLOEXEC) as libc::c_uint,
            )
        };
        if group < 0 {
            bail!("fanotify_init: {}", std::io::Error::last_os_error());
        }
        // SAFETY: just opened, owned from here on (closed on every path).
        let group = unsafe { OwnedFd::from_raw_fd(group) };
        // SAFETY: `path` is a valid C string; `group` is ours.
        let r = unsafe {
            libc::fanotify_mark(
                group.as_raw_fd(),
                libc::FAN_MARK_ADD,
                libc::FAN_OPEN_EXEC_PERM,
                libc::AT_FDCWD,
                path.as_ptr(),
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            bail!("fanotify_mark {}: {e}", target.display());
        }
        // SAFETY: a plain syscall; a descriptor it returns is ours alone.
        let stop = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if stop < 0 {
            bail!("eventfd: {}", std::io::Error::last_os_error());
        }
        // SAFETY: just opened, owned from here on.
        let stop = unsafe { OwnedFd::from_raw_fd(stop) };
        let (g, st) = (group.as_raw_fd(), stop.as_raw_fd());
        let thread = std::thread::Builder::new()
            .name("bare-gate".into())
            .spawn(move || answer_all(g, st, nice))
            .context("spawn the listener thread")?;
        Ok(BareGate {
            _group: group,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for BareGate {
    fn drop(&mut self) {
        let one: u64 = 1;
        // SAFETY: an 8-byte write to our eventfd; the thread is joined before the fields
        // (and so the descriptors it uses) are dropped.
        unsafe { libc::write(self.stop.as_raw_fd(), (&one as *const u64).cast(), 8) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Read the group's events and allow each at once, until `stop` is readable.
fn answer_all(group: libc::c_int, stop: libc::c_int, nice: i32) {
    // SAFETY: sets this thread's own nice value.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice);
    }
    let meta = std::mem::size_of::<libc::fanotify_event_metadata>();
    let mut buf = vec![0u8; 4096];
    loop {
        let mut fds = [
            libc::pollfd {
                fd: group,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        // SAFETY: reads into our buffer, at most its length.
        let n = unsafe { libc::read(group, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            continue;
        }
        let mut at = 0usize;
        while at + meta <= n as usize {
            // SAFETY: the kernel wrote whole records; read one unaligned.
            let m: libc::fanotify_event_metadata =
                unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
            if m.fd >= 0 {
                let r = libc::fanotify_response {
                    fd: m.fd,
                    response: libc::FAN_ALLOW,
                };
                // SAFETY: the response record the kernel expects, then the event's fd,
                // which is ours to close.
                unsafe {
                    libc::write(
                        group,
                        (&r as *const libc::fanotify_response).cast(),
                        std::mem::size_of::<libc::fanotify_response>(),
                    );
                    libc::close(m.fd);
                }
            }
            if (m.event_len as usize) < meta {
                break;
            }
            at += m.event_len as usize;
        }
    }
}
