//! The placer: puts one pinned process into its own job cgroup with its limits, in the
//! order create → write and read back limits → move → verify `/proc/PID/cgroup`.

pub mod backend;
pub mod error;
pub mod limits;
pub mod v1;
pub mod v2;

use std::time::{Duration, Instant};

pub use backend::{detect, CgroupBackend, CgroupMode, RootReport, Usage};
pub use error::{Class, PlaceError, Step};

use crate::config::Limits;
use crate::process::{is_gone, Pinned, ProcFs};

/// What to place a process as.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub job_id: String,
    pub command: String,
    pub limits: Limits,
}

/// The job id of a discovered process (the predecessor's naming).
pub fn auto_job_id(command: &str, pid: u32) -> String {
    format!("auto-{command}-{pid}")
}

/// A finished placement.
#[derive(Debug)]
pub struct Placement {
    pub job_id: String,
    pub cgroup: String,
    /// Limits written and read back, as `file=value`.
    pub applied: Vec<String>,
    /// Limits that could not be applied (logged and counted by the caller).
    pub failed: Vec<(String, PlaceError)>,
    /// CLOCK_MONOTONIC when the move was verified (same clock as bpf_ktime_get_ns).
    pub verified_mono_ns: u64,
    /// Time spent placing.
    pub took: Duration,
}

/// CLOCK_MONOTONIC in ns (the clock of `bpf_ktime_get_ns`).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub struct Placer {
    backend: Box<dyn CgroupBackend>,
    root: String,
    proc: ProcFs,
}

impl Placer {
    pub fn new(backend: Box<dyn CgroupBackend>, root: String, proc: ProcFs) -> Self {
        Placer {
            backend,
            root,
            proc,
        }
    }

    pub fn backend(&self) -> &dyn CgroupBackend {
        self.backend.as_ref()
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    pub fn proc(&self) -> &ProcFs {
        &self.proc
    }

    /// The cgroup path of a job.
    pub fn cgroup_of(&self, job_id: &str) -> String {
        format!("{}/{}", self.root, job_id)
    }

    pub fn prepare_root(&self) -> RootReport {
        self.backend.prepare_root(&self.root)
    }

    /// Place a pinned process. On error nothing is left behind: a cgroup created for the
    /// attempt is removed again.
    pub fn place(&self, p: &Pinned, spec: &JobSpec) -> Result<Placement, PlaceError> {
        let started = Instant::now();
        let pid = p.id.pid;
        let cgroup = self.cgroup_of(&spec.job_id);
        if !p.pidfd.is_alive() {
            return Err(PlaceError::vanished(Step::Pin, format!("PID {pid} exited")));
        }
        self.backend.create(&cgroup)?;
        let result = self.fill_and_move(p, spec, &cgroup);
        match result {
            Ok((applied, failed)) => Ok(Placement {
                job_id: spec.job_id.clone(),
                cgroup,
                applied,
                failed,
                verified_mono_ns: monotonic_ns(),
                took: started.elapsed(),
            }),
            Err(e) => {
                let _ = self.backend.remove(&cgroup);
                Err(e)
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn fill_and_move(
        &self,
        p: &Pinned,
        spec: &JobSpec,
        cgroup: &str,
    ) -> Result<(Vec<String>, Vec<(String, PlaceError)>), PlaceError> {
        let pid = p.id.pid;
        let mut applied = Vec::new();
        let mut failed = Vec::new();
        for (label, r) in self.backend.apply_limits(cgroup, &spec.limits) {
            match r {
                Ok(()) => applied.push(label),
                Err(e) if e.class == Class::Retryable => return Err(e),
                Err(e) => failed.push((label, e)),
            }
        }
        if let Err(e) = self.backend.move_process(cgroup, pid) {
            if e.class == Class::Vanished || !p.pidfd.is_alive() {
                return Err(PlaceError::vanished(
                    Step::Move,
                    format!("PID {pid} exited during the move"),
                ));
            }
            return Err(e);
        }
        self.verify(p, cgroup)?;
        Ok((applied, failed))
    }

    /// Check `/proc/PID/cgroup` shows the process in `cgroup`, and that the pinned process
    /// is still the one behind the PID.
    pub fn verify(&self, p: &Pinned, cgroup: &str) -> Result<(), PlaceError> {
        let pid = p.id.pid;
        let lines = match self.proc.cgroups(pid) {
            Ok(l) => l,
            Err(e) if is_gone(&e) => {
                return Err(PlaceError::vanished(
                    Step::Verify,
                    format!("PID {pid} exited"),
                ));
            }
            Err(e) => {
                return Err(PlaceError::io(
                    Step::Verify,
                    &format!("/proc/{pid}/cgroup"),
                    &e,
                ))
            }
        };
        if !p.pidfd.is_alive() {
            return Err(PlaceError::vanished(
                Step::Verify,
                format!("PID {pid} exited"),
            ));
        }
        if !self.backend.is_member(cgroup, &lines) {
            return Err(PlaceError {
                step: Step::Verify,
                class: Class::Retryable,
                errno: None,
                detail: format!(
                    "PID {pid} is in {} instead of {cgroup} right after the move (another writer moved it)",
                    self.backend.location(&lines)
                ),
                fix: None,
            });
        }
        Ok(())
    }

    /// Move descendants that already exist into the job cgroup (children forked before the
    /// parent was moved stay behind otherwise). Returns how many were moved.
    pub fn move_descendants(&self, pid: u32, cgroup: &str) -> usize {
        let mut moved = 0;
        let mut seen = 0usize;
        let mut stack = self.proc.children(pid);
        while let Some(c) = stack.pop() {
            seen += 1;
            if seen > 100_000 {
                break;
            }
            stack.extend(self.proc.children(c));
            let already = self
                .proc
                .cgroups(c)
                .map(|l| self.backend.is_member(cgroup, &l))
                .unwrap_or(true);
            if !already && self.backend.move_process(cgroup, c).is_ok() {
                moved += 1;
            }
        }
        moved
    }

    /// Remove a job cgroup if it is empty. `Ok(false)` while processes remain.
    pub fn remove_if_empty(&self, cgroup: &str) -> std::io::Result<bool> {
        if !self.backend.procs(cgroup)?.is_empty() {
            return Ok(false);
        }
        match self.backend.remove(cgroup) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
