//! What ffrtmp reads about a process, from a `/proc` root given as a parameter, and how it
//! pins one (pidfd + start time) so a reused PID is never mistaken for it.

pub mod exits;
pub mod gated;
pub mod pidfd;
mod pin;
pub mod stat;
pub mod stopped;

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use exits::ExitSet;
pub use gated::Gated;
pub use pidfd::PidFd;
pub use pin::Pinned;
pub use stat::{parse_stat, Stat};
pub use stopped::{MemoryLedger, Resumed, StopLedger, Stopped};

/// CLOCK_MONOTONIC in ns (the clock of `bpf_ktime_get_ns`).
pub fn monotonic_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A process's identity: PID plus start time (clock ticks after boot). A PID alone is
/// reused; the pair is not (within one boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessId {
    pub pid: u32,
    pub start_time: u64,
}

impl std::fmt::Display for ProcessId {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}", self.pid)
    }
}

/// One line of `/proc/PID/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLine {
    pub hierarchy: u32,
    /// Controllers of a v1 hierarchy (`cpu`, `memory`, `name=systemd`); empty for v2.
    pub controllers: Vec<String>,
    pub path: String,
}

/// Parse `/proc/PID/cgroup` (with procfs's parser; a file it cannot read is empty).
pub fn parse_cgroup_file(text: &str) -> Vec<CgroupLine> {
    use procfs::FromBufRead;
    procfs::ProcessCGroups::from_buf_read(text.as_bytes())
        .map(|c| {
            c.0.into_iter()
                .map(|g| CgroupLine {
                    hierarchy: g.hierarchy,
                    controllers: g.controllers,
                    path: g.pathname,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// argv[0] from `/proc/PID/cmdline` (its arguments are NUL-separated): none if empty.
pub fn parse_argv0(cmdline: &[u8]) -> Option<Vec<u8>> {
    let first = cmdline.split(|&b| b == 0).next().unwrap_or(&[]);
    (!first.is_empty()).then(|| first.to_vec())
}

/// What `ProcFs::status` reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    pub uid: Option<u32>,
    pub pidns_level: Option<u32>,
}

/// The real uid and the PID namespace depth from `/proc/PID/status` (procfs's parser; a
/// file it cannot read says nothing).
pub fn parse_status(text: &str) -> Status {
    use procfs::FromBufRead;
    match procfs::process::Status::from_buf_read(text.as_bytes()) {
        Ok(st) => Status {
            uid: Some(st.ruid),
            pidns_level: st
                .nspid
                .map(|v| v.len() as u32)
                .and_then(|n| n.checked_sub(1)),
        },
        Err(_) => Status::default(),
    }
}

/// The facts the matcher and filters look at.
#[derive(Debug, Clone)]
pub struct ProcessFacts {
    pub id: ProcessId,
    pub stat: Stat,
    pub argv0: Option<Vec<u8>>,
    pub exe: Option<PathBuf>,
    pub cwd: Option<PathBuf>,
    pub uid: Option<u32>,
    pub parent: Option<ParentFacts>,
    pub age: Duration,
    pub cgroups: Vec<CgroupLine>,
    /// Depth of the process's PID namespace (0: the host's), if known.
    pub pidns_level: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct ParentFacts {
    pub pid: u32,
    pub comm: Vec<u8>,
    pub argv0: Option<Vec<u8>>,
    pub exe: Option<PathBuf>,
}

/// Which facts `ProcFs::facts` reads: only what the matcher will look at, so the exec path
/// does not pay for filters nobody configured. The cgroup membership is always read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// argv[0] and exe (the comm alone cannot decide the name).
    pub names: bool,
    pub cwd: bool,
    pub uid: bool,
    pub parent: bool,
    /// The PID namespace depth (a target's: containers are left alone).
    pub pidns: bool,
}

impl Needs {
    pub const ALL: Needs = Needs {
        names: true,
        cwd: true,
        uid: true,
        parent: true,
        pidns: true,
    };
}

/// Facts a source already knows (the kernel's exec event carries them): `facts` does not
/// read them again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    /// Basenames of argv[0] and of the exe, complete (a truncated one is not known).
    pub argv0: Option<Vec<u8>>,
    pub exe_name: Option<Vec<u8>>,
    /// Real uid.
    pub uid: Option<u32>,
    pub pidns_level: Option<u32>,
}

/// A `/proc` mount (normally `/proc`; a fixture tree in tests).
#[derive(Debug, Clone)]
pub struct ProcFs {
    root: PathBuf,
    ticks_per_second: u64,
}

/// EMFILE or ENFILE: the process's or the system's open-files limit is reached.
pub fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Whether an error means the process is gone (exited or reaped) rather than a failure.
pub fn is_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ESRCH))
        || e.kind() == io::ErrorKind::NotFound
}

impl ProcFs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let t = rustix::param::clock_ticks_per_second();
        ProcFs {
            root: root.into(),
            ticks_per_second: if t > 0 { t } else { 100 },
        }
    }

    pub fn system() -> Self {
        Self::new("/proc")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, pid: u32, file: &str) -> PathBuf {
        let mut p = self.root.clone();
        p.push(itoa(pid));
        p.push(file);
        p
    }

    /// All numeric entries of the root with their inode numbers (from the directory listing
    /// itself: no extra syscall). A `/proc/PID` inode lives as long as the process's cached
    /// dentry; a new process under a reused PID gets a new one.
    pub fn pids_with_ino(&self) -> io::Result<Vec<(u32, u64)>> {
        use std::os::unix::fs::DirEntryExt;
        let mut out = Vec::with_capacity(512);
        for entry in std::fs::read_dir(&self.root)? {
            let Ok(entry) = entry else { continue };
            if let Some(pid) = parse_pid(entry.file_name().as_bytes()) {
                out.push((pid, entry.ino()));
            }
        }
        Ok(out)
    }

    /// All numeric entries of the root.
    pub fn pids(&self) -> io::Result<Vec<u32>> {
        let mut out = Vec::with_capacity(512);
        for entry in std::fs::read_dir(&self.root)? {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name();
            if let Some(pid) = parse_pid(name.as_bytes()) {
                out.push(pid);
            }
        }
        Ok(out)
    }

    /// Whether `id` is still a live process: `Ok(false)` once it exited (a zombie counts),
    /// or its PID is another process's now; `Err` when /proc cannot say (EMFILE, ENOMEM):
    /// that is not an exit.
    pub fn is_alive(&self, id: ProcessId) -> io::Result<bool> {
        match self.stat(id.pid) {
            Ok(s) => Ok(s.start_time == id.start_time && !s.is_zombie()),
            Err(e) if is_gone(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Read and parse `/proc/PID/stat` (one open, one read).
    pub fn stat(&self, pid: u32) -> io::Result<Stat> {
        let mut buf = [0u8; 1024];
        let mut f = std::fs::File::open(self.path(pid, "stat"))?;
        let mut n = 0;
        loop {
            let r = f.read(&mut buf[n..])?;
            if r == 0 {
                break;
            }
            n += r;
            if n == buf.len() {
                break;
            }
        }
        parse_stat(&buf[..n]).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unparseable /proc/{pid}/stat"),
            )
        })
    }

    /// argv[0] (None for an empty cmdline: kernel threads, zombies).
    pub fn argv0(&self, pid: u32) -> io::Result<Option<Vec<u8>>> {
        let mut buf = [0u8; 4096];
        let mut f = std::fs::File::open(self.path(pid, "cmdline"))?;
        let n = f.read(&mut buf)?;
        Ok(parse_argv0(&buf[..n]))
    }

    pub fn exe(&self, pid: u32) -> io::Result<PathBuf> {
        let p = std::fs::read_link(self.path(pid, "exe"))?;
        // A replaced binary reads as "/usr/bin/ffmpeg (deleted)".
        let b = p.as_os_str().as_bytes();
        Ok(match b.strip_suffix(b" (deleted)") {
            Some(s) => PathBuf::from(OsStr::from_bytes(s)),
            None => p,
        })
    }

    /// The (dev, ino) of the process's binary (its exe link followed), from what the
    /// kernel has cached: no round trip to a network filesystem's server.
    pub fn exe_inode(&self, pid: u32) -> io::Result<(u64, u64)> {
        use rustix::fs::{statx, AtFlags, StatxFlags, CWD};
        let st = statx(
            CWD,
            self.path(pid, "exe"),
            AtFlags::STATX_DONT_SYNC,
            StatxFlags::INO,
        )?;
        let dev = libc::makedev(st.stx_dev_major, st.stx_dev_minor);
        Ok((dev, st.stx_ino))
    }

    pub fn cwd(&self, pid: u32) -> io::Result<PathBuf> {
        std::fs::read_link(self.path(pid, "cwd"))
    }

    /// Real uid and PID namespace depth, from `/proc/PID/status` (`Uid:`, `NSpid:`; the
    /// depth is relative to the namespace of this `/proc`).
    pub fn status(&self, pid: u32) -> io::Result<Status> {
        let text = std::fs::read_to_string(self.path(pid, "status"))?;
        Ok(parse_status(&text))
    }

    /// Real uid, from `/proc/PID/status`.
    pub fn uid(&self, pid: u32) -> io::Result<u32> {
        self.status(pid)?
            .uid
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Uid line in status"))
    }

    pub fn cgroups(&self, pid: u32) -> io::Result<Vec<CgroupLine>> {
        Ok(parse_cgroup_file(&std::fs::read_to_string(
            self.path(pid, "cgroup"),
        )?))
    }

    /// Time since boot (CLOCK_BOOTTIME, the clock of stat's start time).
    pub fn uptime(&self) -> Duration {
        let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    /// A `task->start_boottime` in ns (the kernel's exec event) in the clock ticks of
    /// `/proc/PID/stat`'s start time.
    pub fn ticks_from_ns(&self, ns: u64) -> u64 {
        ns / (1_000_000_000 / self.ticks_per_second.max(1))
    }

    /// Start time (ticks) as a duration after boot.
    pub fn start_after_boot(&self, start_time: u64) -> Duration {
        Duration::from_nanos(start_time.saturating_mul(1_000_000_000) / self.ticks_per_second)
    }

    /// How long the process has run.
    pub fn age(&self, start_time: u64) -> Duration {
        self.uptime()
            .saturating_sub(self.start_after_boot(start_time))
    }

    /// Read the facts the matcher needs (`needs`; the rest stay `None`/empty), taking those
    /// in `known` as given. Fields a process hides from us (EACCES) are `None`; `Err` only
    /// when the process is gone.
    pub fn facts(&self, stat: Stat, needs: Needs, known: &Known) -> io::Result<ProcessFacts> {
        let pid = stat.pid;
        fn soft<T>(r: io::Result<T>) -> io::Result<Option<T>> {
            match r {
                Ok(v) => Ok(Some(v)),
                Err(e) if is_gone(&e) => Err(e),
                Err(_) => Ok(None),
            }
        }
        let names_known = known.argv0.is_some() && known.exe_name.is_some();
        let (argv0, exe) = if needs.names && !names_known {
            (soft(self.argv0(pid))?.flatten(), soft(self.exe(pid))?)
        } else {
            (
                known.argv0.clone(),
                known
                    .exe_name
                    .as_ref()
                    .map(|n| PathBuf::from(OsStr::from_bytes(n))),
            )
        };
        let cwd = if needs.cwd {
            soft(self.cwd(pid))?
        } else {
            None
        };
        let (mut uid, mut pidns_level) = (known.uid, known.pidns_level);
        if (needs.uid && uid.is_none()) || (needs.pidns && pidns_level.is_none()) {
            if let Some(st) = soft(self.status(pid))? {
                uid = uid.or(st.uid);
                pidns_level = pidns_level.or(st.pidns_level);
            }
        }
        let cgroups = soft(self.cgroups(pid))?.unwrap_or_default();
        let parent = if needs.parent && stat.ppid > 0 {
            self.stat(stat.ppid).ok().map(|ps| ParentFacts {
                pid: ps.pid,
                argv0: self.argv0(ps.pid).ok().flatten(),
                exe: self.exe(ps.pid).ok(),
                comm: ps.comm,
            })
        } else {
            None
        };
        Ok(ProcessFacts {
            id: ProcessId {
                pid,
                start_time: stat.start_time,
            },
            age: self.age(stat.start_time),
            stat,
            argv0,
            exe,
            cwd,
            uid,
            parent,
            cgroups,
            pidns_level,
        })
    }

    /// Direct children of a process: the union of its threads' `task/TID/children` files,
    /// or, where the kernel lacks CONFIG_PROC_CHILDREN, a pass over every stat.
    pub fn children(&self, pid: u32) -> Vec<u32> {
        let mut out = Vec::new();
        let tasks = match std::fs::read_dir(self.path(pid, "task")) {
            Ok(t) => t,
            Err(_) => return out,
        };
        let mut have_files = false;
        for t in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(t.path().join("children")) {
                have_files = true;
                out.extend(
                    text.split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
        if !have_files {
            for p in self.pids().unwrap_or_default() {
                if self.stat(p).is_ok_and(|s| s.ppid == pid) {
                    out.push(p);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The chain of ancestors of `pid` (its parent, grandparent, … up to PID 1), by identity.
    pub fn ancestors(&self, pid: u32) -> Vec<ProcessId> {
        let mut out = Vec::new();
        let mut cur = pid;
        while let Ok(s) = self.stat(cur) {
            out.push(ProcessId {
                pid: s.pid,
                start_time: s.start_time,
            });
            if s.ppid == 0 || out.len() > 4096 {
                break;
            }
            cur = s.ppid;
        }
        out
    }
}

fn parse_pid(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 10 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn itoa(v: u32) -> String {
    v.to_string()
}

/// The last path component of a byte string (`/usr/bin/ffmpeg` → `ffmpeg`).
pub fn basename(b: &[u8]) -> &[u8] {
    match b.iter().rposition(|&c| c == b'/') {
        Some(i) => &b[i + 1..],
        None => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_file_v1_and_v2() {
        let v = parse_cgroup_file(
            "4:memory:/process_api/abc\n1:cpu:/\n9:name=systemd:/\n0::/user.slice/x.scope\n",
        );
        assert_eq!(v.len(), 4);
        assert_eq!(v[0].controllers, vec!["memory"]);
        assert_eq!(v[0].path, "/process_api/abc");
        assert_eq!(v[3].hierarchy, 0);
        assert!(v[3].controllers.is_empty());
        assert_eq!(v[3].path, "/user.slice/x.scope");
    }

    #[test]
    fn status_lines() {
        // A real status file with the lines the daemon reads changed.
        let mine = std::fs::read_to_string("/proc/self/status").unwrap();
        let with = |uid: &str, nspid: &str| -> String {
            mine.lines()
                .map(|l| {
                    if l.starts_with("Uid:") {
                        format!("Uid:\t{uid}\t{uid}\t{uid}\t{uid}")
                    } else if l.starts_with("NSpid:") {
                        format!("NSpid:\t{nspid}")
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(
            parse_status(&with("1000", "4242\t7\t1")),
            Status {
                uid: Some(1000),
                pidns_level: Some(2)
            }
        );
        assert_eq!(parse_status(&with("0", "12")).pidns_level, Some(0));
        assert_eq!(parse_status(""), Status::default());
        assert_eq!(
            parse_status("NSpid:\t12\n"),
            Status::default(),
            "not a status file"
        );
        assert_eq!(parse_argv0(b"ffmpeg\0-i\0x\0"), Some(b"ffmpeg".to_vec()));
        assert_eq!(parse_argv0(b"\0x"), None);
    }

    #[test]
    fn basenames() {
        assert_eq!(basename(b"/usr/bin/ffmpeg"), b"ffmpeg");
        assert_eq!(basename(b"ffmpeg"), b"ffmpeg");
        assert_eq!(basename(b"./x/"), b"");
    }

    #[test]
    fn own_process_facts() {
        let fs = ProcFs::system();
        let me = std::process::id();
        let st = fs.stat(me).unwrap();
        let f = fs.facts(st, Needs::ALL, &Known::default()).unwrap();
        assert_eq!(
            f.pidns_level,
            Some(0),
            "tests run in the host PID namespace"
        );
        assert_eq!(f.id.pid, me);
        assert!(f.exe.is_some());
        assert!(f.age < Duration::from_secs(3600 * 24 * 365));
        let pinned = fs.pin(me).unwrap();
        assert_eq!(pinned.id.start_time, f.id.start_time);
        assert!(fs.ancestors(me).len() >= 2);
    }
}
