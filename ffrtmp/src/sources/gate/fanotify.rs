//! The fanotify group the gate holds execs with: `FAN_CLASS_CONTENT` (permission events),
//! an unbounded queue (a bounded one that overflows lets execs go unasked), and inode marks
//! for `FAN_OPEN_EXEC_PERM`. libc has every type and constant; rustix and our nix have no
//! fanotify, and the four calls need no more than this.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// An event as read: `fd` is the marked file opened for us (-1 for an overflow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub fd: RawFd,
    pub pid: u32,
    pub overflow: bool,
}

const METADATA_LEN: usize = std::mem::size_of::<libc::fanotify_event_metadata>();

pub struct Group {
    fd: std::mem::ManuallyDrop<OwnedFd>,
    /// The watchdog let go of this group: its number is never closed (watchdog.rs).
    keep_number: std::sync::atomic::AtomicBool,
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.keep_number.load(std::sync::atomic::Ordering::Relaxed) {
            // SAFETY: dropped once, here.
            unsafe { std::mem::ManuallyDrop::drop(&mut self.fd) };
        }
    }
}

impl Group {
    /// A permission group; needs CAP_SYS_ADMIN.
    pub fn open() -> io::Result<Group> {
        let flags = libc::FAN_CLOEXEC
            | libc::FAN_NONBLOCK
            | libc::FAN_CLASS_CONTENT
            | libc::FAN_UNLIMITED_QUEUE
            | libc::FAN_UNLIMITED_MARKS;
        let event_flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_LARGEFILE) as u32;
        // SAFETY: plain syscall; the returned descriptor is owned here.
        let fd = unsafe { libc::fanotify_init(flags, event_flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by fanotify_init.
        Ok(Group {
            fd: std::mem::ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(fd) }),
            keep_number: Default::default(),
        })
    }

    /// The watchdog let go of this group: its descriptor (now /dev/null) is kept open
    /// for the daemon's life, so its number never names another file.
    pub fn keep_number(&self) {
        (self.keep_number).store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Hold every exec of the inode `path` names (symlinks followed).
    pub fn mark(&self, path: &Path) -> io::Result<()> {
        self.mark_op(libc::FAN_MARK_ADD, path)
    }

    /// Stop holding the inode's execs (it may be gone already: not an error).
    pub fn unmark(&self, path: &Path) {
        let _ = self.mark_op(libc::FAN_MARK_REMOVE, path);
    }

    /// The path is opened first (read-only: fanotify takes no `O_PATH` descriptor), then
    /// marked by its descriptor: the group is never held across a lookup, which may hang
    /// (a dead network filesystem), so the watchdog's release of the group is not held up
    /// by one.
    fn mark_op(&self, op: libc::c_uint, path: &Path) -> io::Result<()> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))?;
        // SAFETY: a NUL-terminated path; the descriptor is owned below.
        let target = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK,
            )
        };
        if target < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just opened, ours.
        let target = unsafe { OwnedFd::from_raw_fd(target) };
        // SAFETY: valid descriptors; a NULL path marks the object `target` refers to.
        let r = unsafe {
            libc::fanotify_mark(
                self.fd(),
                op,
                libc::FAN_OPEN_EXEC_PERM,
                target.as_raw_fd(),
                std::ptr::null(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Read what is queued into `out` (nothing when the queue is empty).
    pub fn read(&self, buf: &mut Buffer, out: &mut Vec<Event>) -> io::Result<()> {
        let bytes = buf.0.as_mut_ptr().cast::<u8>();
        let cap = std::mem::size_of_val(&buf.0);
        // SAFETY: reads into our own aligned buffer of `cap` bytes.
        let n = unsafe { libc::read(self.fd(), bytes.cast(), cap) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(()),
                _ => Err(e),
            };
        }
        // SAFETY: the kernel wrote n bytes into the buffer.
        let data = unsafe { std::slice::from_raw_parts(bytes, n as usize) };
        parse(data, out);
        Ok(())
    }

    /// Let the exec of event `fd` go on. The descriptor is closed by the caller after.
    pub fn allow(&self, fd: RawFd) -> io::Result<()> {
        let r = libc::fanotify_response {
            fd,
            response: libc::FAN_ALLOW,
        };
        let len = std::mem::size_of::<libc::fanotify_response>();
        // SAFETY: writes a response struct the kernel reads.
        let n = unsafe {
            libc::write(
                self.fd(),
                (&r as *const libc::fanotify_response).cast(),
                len,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// An 8-byte aligned read buffer, larger than any one event.
pub struct Buffer([u64; 512]);

impl Default for Buffer {
    fn default() -> Self {
        Buffer([0; 512])
    }
}

/// The events in `data`, as read(2) returned them.
pub fn parse(mut data: &[u8], out: &mut Vec<Event>) {
    while data.len() >= METADATA_LEN {
        let u32_at =
            |i: usize| u32::from_ne_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
        let event_len = u32_at(0) as usize;
        let vers = data[4];
        let mask = u64::from_ne_bytes(data[8..16].try_into().unwrap_or_default());
        let fd = u32_at(16) as i32;
        let pid = u32_at(20) as i32;
        if event_len < METADATA_LEN
            || event_len > data.len()
            || vers != libc::FANOTIFY_METADATA_VERSION
        {
            return;
        }
        out.push(Event {
            fd,
            pid: pid.max(0) as u32,
            overflow: mask & libc::FAN_Q_OVERFLOW != 0,
        });
        data = &data[event_len..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(fd: i32, pid: i32, mask: u64) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(METADATA_LEN as u32).to_ne_bytes());
        v.push(libc::FANOTIFY_METADATA_VERSION);
        v.push(0);
        v.extend_from_slice(&(METADATA_LEN as u16).to_ne_bytes());
        v.extend_from_slice(&mask.to_ne_bytes());
        v.extend_from_slice(&fd.to_ne_bytes());
        v.extend_from_slice(&pid.to_ne_bytes());
        v
    }

    #[test]
    fn events_are_read_one_after_another_and_a_short_tail_is_left() {
        let mut data = raw(5, 100, libc::FAN_OPEN_EXEC_PERM);
        data.extend(raw(-1, 0, libc::FAN_Q_OVERFLOW));
        data.extend_from_slice(&[1, 2, 3]);
        let mut out = Vec::new();
        parse(&data, &mut out);
        assert_eq!(
            out,
            vec![
                Event {
                    fd: 5,
                    pid: 100,
                    overflow: false
                },
                Event {
                    fd: -1,
                    pid: 0,
                    overflow: true
                }
            ]
        );
    }

    #[test]
    fn another_version_or_a_bad_length_stops_the_parse() {
        let mut data = raw(5, 100, libc::FAN_OPEN_EXEC_PERM);
        data[4] = 2;
        let mut out = Vec::new();
        parse(&data, &mut out);
        assert!(out.is_empty());
        let mut data = raw(5, 100, libc::FAN_OPEN_EXEC_PERM);
        data[0] = 8;
        parse(&data, &mut out);
        assert!(out.is_empty());
    }
}
