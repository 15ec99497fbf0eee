//! The /proc scan: the fallback source and the reconciliation pass.
//!
//! A process already decided on costs nothing but its directory entry: the listing gives
//! each `/proc/PID` inode number, which stays the same for the life of the process and
//! changes when the PID is reused. Such a process's `stat` is read again only every few
//! scans (`REVALIDATE`), which is how an exec of an already-seen process (its comm changes,
//! the inode does not) is noticed in scan-only mode; with eBPF the exec event comes at once.
//! Every other process gets one `stat` read (pid, start time, comm), and argv[0] and exe are
//! read once per process lifetime, only when the comm cannot tell.
//!
//! A target (a candidate) is not remembered: every pass reports the targets it finds that
//! the caller does not govern, and the engine, which alone remembers what it decided to
//! skip, answers those from its memory.

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use crate::config::Target;
use crate::matcher::{comm_could_match, match_name};
use crate::process::{ProcFs, ProcessId, Stat};

/// The result of one pass over /proc.
#[derive(Debug, Default)]
pub struct ScanOutcome {
    /// Processes listed.
    pub processes: usize,
    /// Processes whose name matches a target and that are not known yet.
    pub candidates: Vec<Stat>,
    pub duration: Duration,
}

#[derive(Debug)]
struct Seen {
    start_time: u64,
    comm: Vec<u8>,
    generation: u64,
    /// Inode of `/proc/PID` when last read.
    ino: u64,
    /// Scan number at which `stat` is read again.
    recheck: u64,
}

/// An already-seen process's `stat` is read again after 4 to 11 scans (spread by PID so
/// the rereads do not bunch up).
const REVALIDATE: u64 = 8;

/// Scans a /proc root, remembering which processes it read already (to read each again
/// only now and then); what was decided about them is the engine's.
pub struct Scanner {
    proc: ProcFs,
    seen: HashMap<u32, Seen>,
    generation: u64,
    /// The next scan re-reads every process's stat (no inode shortcut).
    full: bool,
}

impl Scanner {
    pub fn new(proc: ProcFs) -> Self {
        Scanner {
            proc,
            seen: HashMap::new(),
            generation: 0,
            full: false,
        }
    }

    fn remember(&mut self, stat: &Stat, ino: u64) {
        let recheck = self.generation + REVALIDATE / 2 + u64::from(stat.pid) % REVALIDATE;
        self.seen.insert(
            stat.pid,
            Seen {
                start_time: stat.start_time,
                comm: stat.comm.clone(),
                generation: self.generation,
                ino,
                recheck,
            },
        );
    }

    /// Make the next scan read every process's stat, so an exec that was not reported (the
    /// event source lost events) is found at once rather than within a few scans.
    pub fn force_full(&mut self) {
        self.full = true;
    }

    /// Forget every decision (after a reload changed the targets or filters).
    pub fn forget_all(&mut self) {
        self.seen.clear();
    }

    /// One pass. `known` says which processes the caller already handles (governed,
    /// waiting for min_runtime, retrying). Fails only if /proc cannot be listed.
    pub fn scan(
        &mut self,
        targets: &[Target],
        known: &dyn Fn(ProcessId) -> bool,
    ) -> io::Result<ScanOutcome> {
        let started = Instant::now();
        self.generation += 1;
        let gen = self.generation;
        let pids = self.proc.pids_with_ino()?;
        let full = std::mem::take(&mut self.full);
        let mut out = ScanOutcome {
            processes: pids.len(),
            ..Default::default()
        };
        for (pid, ino) in pids {
            if let Some(s) = self.seen.get_mut(&pid) {
                if !full && s.ino == ino && gen < s.recheck {
                    s.generation = gen;
                    continue;
                }
            }
            // A process that vanished between the listing and this read is simply gone.
            let Ok(stat) = self.proc.stat(pid) else {
                continue;
            };
            if let Some(s) = self.seen.get(&pid) {
                if s.start_time == stat.start_time && s.comm == stat.comm {
                    self.remember(&stat, ino);
                    continue;
                }
            }
            let id = ProcessId {
                pid,
                start_time: stat.start_time,
            };
            if known(id) {
                continue;
            }
            if stat.is_kernel_thread() || stat.is_zombie() {
                self.remember(&stat, ino);
                continue;
            }
            if comm_could_match(targets, &stat.comm) {
                out.candidates.push(stat);
                continue;
            }
            // The comm says no, but argv[0] or the exe may say yes (a renamed argv[0], a
            // symlink with another name). Read them once for this process.
            let argv0 = self.proc.argv0(pid).ok().flatten();
            let exe = self.proc.exe(pid).ok();
            if match_name(targets, &stat.comm, argv0.as_deref(), exe.as_deref()).is_some() {
                out.candidates.push(stat);
            } else {
                self.remember(&stat, ino);
            }
        }
        self.seen.retain(|_, s| s.generation == gen);
        out.duration = started.elapsed();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Child, Command};

    fn target(name: &str) -> Target {
        Target {
            name: name.into(),
            ..Target::default()
        }
    }

    /// Start `sleep` under another file name (its comm becomes that name).
    fn spawn_named(dir: &std::path::Path, name: &std::ffi::OsStr) -> Child {
        let path = dir.join(name);
        std::fs::copy("/bin/sleep", &path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        crate::testutil::spawn(Command::new(&path).arg("30"))
    }

    #[test]
    fn finds_processes_with_hostile_names_and_only_once() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let tag = format!("{}", std::process::id() % 100000);
        let names: Vec<Vec<u8>> = vec![
            format!("a b) (c{tag}").into_bytes(),
            format!("nl\nx{tag}").into_bytes(),
            [b"\xff\xfe".as_slice(), tag.as_bytes()].concat(),
        ];
        let mut kids = Vec::new();
        let mut targets = Vec::new();
        for n in &names {
            let os = std::ffi::OsStr::from_bytes(n);
            kids.push(spawn_named(dir.path(), os));
            targets.push(target(&String::from_utf8_lossy(n)));
        }
        // Non-UTF-8 names cannot be written in a UTF-8 config, but the scan must not trip
        // over them: keep the first two as targets.
        targets.truncate(2);
        std::thread::sleep(Duration::from_millis(100));
        let mut s = Scanner::new(ProcFs::system());
        let out = s.scan(&targets, &|_| false).unwrap();
        let found: Vec<u32> = out.candidates.iter().map(|c| c.pid).collect();
        assert!(found.contains(&kids[0].id()), "{found:?}");
        assert!(found.contains(&kids[1].id()), "{found:?}");
        assert!(!found.contains(&kids[2].id()));
        assert!(out.processes > 3);
        // Targets are reported by every pass (the engine remembers its decisions), and
        // the others are not read again.
        let again = s.scan(&targets, &|_| false).unwrap();
        let found_again: Vec<u32> = again.candidates.iter().map(|c| c.pid).collect();
        assert_eq!(found_again, found, "every pass reports the same targets");
        // Known processes are skipped.
        let mut fresh = Scanner::new(ProcFs::system());
        let ids: Vec<u32> = kids.iter().map(|k| k.id()).collect();
        let out = fresh.scan(&targets, &|id| ids.contains(&id.pid)).unwrap();
        assert!(out.candidates.iter().all(|c| !ids.contains(&c.pid)));
        for mut k in kids {
            k.kill().unwrap();
            k.wait().unwrap();
        }
    }

    #[test]
    fn matches_argv0_when_comm_differs() {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("renamed{}", std::process::id() % 100000);
        let mut child = spawn_named(dir.path(), std::ffi::OsStr::new("plainsleep"));
        std::thread::sleep(Duration::from_millis(50));
        // argv[0] can be set independently of the file name.
        let mut other = {
            use std::os::unix::process::CommandExt;
            crate::testutil::spawn(
                Command::new(dir.path().join("plainsleep"))
                    .arg0(&name)
                    .arg("30"),
            )
        };
        std::thread::sleep(Duration::from_millis(100));
        let mut s = Scanner::new(ProcFs::system());
        let out = s.scan(&[target(&name)], &|_| false).unwrap();
        let found: Vec<u32> = out.candidates.iter().map(|c| c.pid).collect();
        assert_eq!(found, vec![other.id()]);
        child.kill().unwrap();
        other.kill().unwrap();
        child.wait().unwrap();
        other.wait().unwrap();
    }

    /// A shell (not a target) that the scanner has already seen, then made to exec a
    /// target: same PID, same /proc inode, new comm. Returns once the exec is done.
    struct SeenThenExec {
        _dir: tempfile::TempDir,
        child: Child,
        targets: Vec<Target>,
        scanner: Scanner,
    }

    fn seen_then_exec(prefix: &str) -> SeenThenExec {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let tag = std::process::id() % 100_000;
        let name = format!("ffrt{prefix}{tag}");
        let copy = |from: &str, to: &str| {
            let p = dir.path().join(to);
            std::fs::copy(from, &p).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        };
        let sh = copy("/bin/sh", &format!("pre{prefix}{tag}"));
        let bin = copy("/bin/sleep", &name);
        let go = dir.path().join("go");
        let script = format!(
            "while [ ! -e {} ]; do sleep 0.01; done; exec {} 30",
            go.display(),
            bin.display()
        );
        let child = crate::testutil::spawn(Command::new(&sh).args(["-c", &script]));
        std::thread::sleep(Duration::from_millis(100));
        let targets = vec![target(&name)];
        let mut scanner = Scanner::new(ProcFs::system());
        assert!(scanner
            .scan(&targets, &|_| false)
            .unwrap()
            .candidates
            .is_empty());
        std::fs::write(&go, "").unwrap();
        let proc = ProcFs::system();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !proc
            .stat(child.id())
            .is_ok_and(|st| st.comm == std::ffi::OsStr::new(&name).as_bytes())
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the shell did not exec the target"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        SeenThenExec {
            _dir: dir,
            child,
            targets,
            scanner,
        }
    }

    impl Drop for SeenThenExec {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Its stat is re-read every few scans even though its /proc inode did not change.
    #[test]
    fn an_exec_of_an_already_seen_process_is_noticed() {
        let mut t = seen_then_exec("x");
        let pid = t.child.id();
        let found_after = (1..=2 * REVALIDATE).find(|_| {
            let out = t.scanner.scan(&t.targets, &|_| false).unwrap();
            out.candidates.iter().any(|c| c.pid == pid)
        });
        let n = found_after.expect("the exec'd target was never found");
        assert!(
            n < REVALIDATE / 2 + REVALIDATE,
            "found only after {n} scans"
        );
    }

    /// After lost events, one forced scan finds it at once.
    #[test]
    fn a_forced_scan_finds_an_exec_at_once() {
        let mut t = seen_then_exec("f");
        let pid = t.child.id();
        // Without forcing, the very next scan skips it (same inode, recheck not due).
        assert!(t
            .scanner
            .scan(&t.targets, &|_| false)
            .unwrap()
            .candidates
            .is_empty());
        t.scanner.force_full();
        let out = t.scanner.scan(&t.targets, &|_| false).unwrap();
        assert!(
            out.candidates.iter().any(|c| c.pid == pid),
            "a forced scan must read the exec'd process's stat"
        );
    }
}
