//! A cgroup root for each test, beneath the test process's own cgroup, removed afterwards.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use ffrtmp::placer::{detect, CgroupBackend, CgroupMode};
use ffrtmp::process::{parse_cgroup_file, ProcFs};

use super::unique;

/// The deepest cgroup path this process is in, across the hierarchies ffrtmp uses, so a
/// root beneath it is beneath our own cgroup in every hierarchy.
pub fn own_cgroup_path() -> String {
    let lines = parse_cgroup_file(&std::fs::read_to_string("/proc/self/cgroup").unwrap());
    let relevant = |l: &&ffrtmp::process::CgroupLine| {
        l.hierarchy == 0 && l.controllers.is_empty()
            || l.controllers
                .iter()
                .any(|c| matches!(c.as_str(), "cpu" | "cpuacct" | "memory" | "pids"))
    };
    let mode = detect().unwrap().mode();
    let paths: Vec<&str> = lines
        .iter()
        .filter(relevant)
        .filter(|l| match mode {
            CgroupMode::V2 => l.hierarchy == 0,
            CgroupMode::V1 => l.hierarchy != 0,
        })
        .map(|l| l.path.as_str())
        .collect();
    let deepest = paths.iter().max_by_key(|p| p.len()).copied().unwrap_or("/");
    for p in &paths {
        assert!(
            deepest.starts_with(p),
            "own cgroups {paths:?} are not nested; cannot pick a root beneath all of them"
        );
    }
    deepest.trim_end_matches('/').to_string()
}

/// A cgroup root for one test, beneath our own cgroup. Everything under it, and the
/// directories created to reach it, are removed on drop (after killing our processes).
pub struct TestRoot {
    pub path: String,
    pub backend: Box<dyn CgroupBackend>,
    children: Vec<Child>,
}

impl TestRoot {
    pub fn new() -> TestRoot {
        let backend = detect().unwrap();
        let path = format!("{}/ffrtmp-test-{}", own_cgroup_path(), unique());
        let report = backend.prepare_root(&path);
        assert!(
            report.missing.is_empty(),
            "controllers missing for tests: {:?}",
            report.missing
        );
        // Directories leading to the root (e.g. `process_api/<id>` in the cpu hierarchy)
        // may be shared by tests running side by side: remember every one this test process
        // made, and let whichever root is dropped last remove them.
        let created: Vec<PathBuf> = report
            .created
            .into_iter()
            .filter(|d| !d.ends_with(&path[1..]))
            .collect();
        SHARED_DIRS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(created.iter().cloned());
        TestRoot {
            path,
            backend,
            children: Vec::new(),
        }
    }

    pub fn mode(&self) -> CgroupMode {
        self.backend.mode()
    }

    pub fn job(&self, job_id: &str) -> String {
        format!("{}/{job_id}", self.path)
    }

    /// Keep a child to kill when the root is dropped.
    pub fn own(&mut self, c: Child) -> u32 {
        let pid = c.id();
        self.children.push(c);
        pid
    }

    /// Whether `pid` is in `cgroup` in every hierarchy ffrtmp uses.
    pub fn is_in(&self, pid: u32, cgroup: &str) -> bool {
        ProcFs::system()
            .cgroups(pid)
            .is_ok_and(|l| self.backend.is_member(cgroup, &l))
    }

    /// Wait (`within`) until `cgroup` holds a process, else fail; the processes in it.
    pub fn populated(&self, cgroup: &str, within: Duration) -> Vec<u32> {
        let mut procs = Vec::new();
        let found = super::wait_until(within, || {
            procs = self.backend.procs(cgroup).unwrap_or_default();
            !procs.is_empty()
        });
        assert!(found, "no process in {cgroup} after {within:?}");
        procs
    }

    /// Read a cgroup file; v1 files live in the hierarchy of `controller`.
    pub fn read(&self, cgroup: &str, controller: &str, file: &str) -> String {
        let dir = match self.mode() {
            CgroupMode::V2 => Path::new("/sys/fs/cgroup").join(cgroup.trim_start_matches('/')),
            CgroupMode::V1 => Path::new("/sys/fs/cgroup")
                .join(controller)
                .join(cgroup.trim_start_matches('/')),
        };
        std::fs::read_to_string(dir.join(file))
            .unwrap_or_else(|e| panic!("read {}/{file}: {e}", dir.display()))
            .trim()
            .to_string()
    }

    pub fn exists(&self, cgroup: &str) -> bool {
        let probe = match self.mode() {
            CgroupMode::V2 => Path::new("/sys/fs/cgroup").join(cgroup.trim_start_matches('/')),
            CgroupMode::V1 => {
                Path::new("/sys/fs/cgroup/memory").join(cgroup.trim_start_matches('/'))
            }
        };
        probe.exists()
    }
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Processes we started may have forked; give the kernel a moment, then remove
        // every job cgroup (killing what is still inside: only our own processes are).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut left = false;
            for name in self.backend.children(&self.path).unwrap_or_default() {
                let cg = format!("{}/{name}", self.path);
                // A pool's jobs first, then the pool.
                let mut all: Vec<String> = self.backend.children(&cg).unwrap_or_default();
                all.iter_mut().for_each(|n| *n = format!("{cg}/{n}"));
                all.push(cg);
                for cg in all {
                    for pid in self.backend.procs(&cg).unwrap_or_default() {
                        // SAFETY: signalling a process in a cgroup only this test created.
                        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    }
                    if self.backend.remove(&cg).is_err() {
                        left = true;
                    }
                }
            }
            if !left || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.backend.remove(&self.path);
        // Shared directories this test process created: deepest first; a directory another
        // test still uses is busy and stays until that test's root is dropped.
        let mut shared = SHARED_DIRS.lock().unwrap_or_else(|e| e.into_inner());
        shared.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        shared.retain(|d| std::fs::remove_dir(d).is_err() && d.exists());
    }
}

/// Directories on the way to test roots that this test process created.
static SHARED_DIRS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
