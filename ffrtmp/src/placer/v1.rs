//! cgroup v1 (legacy and hybrid hosts): the same relative path in the cpu, memory and pids
//! hierarchies (and cpuacct, for CPU usage, when it is mounted on its own). Limits and moves
//! go through cgroups-rs controllers rooted at the job directory.

use std::io;
use std::path::{Path, PathBuf};

use cgroups_rs::cpu::CpuController;
use cgroups_rs::hierarchies::V1;
use cgroups_rs::memory::MemController;
use cgroups_rs::pid::PidController;
use cgroups_rs::Controllers;

use super::backend::{CgroupBackend, CgroupMode, RootReport, Usage};
use super::cgroupfs::{
    dir_of, list_dirs, mkdir, move_tgid, read_keyed, read_procs, read_trimmed, read_u64, rmdir,
    written,
};
use super::error::{PlaceError, Step};
use super::limits::{v1_writes, Controller, LimitWrite, Plan, CPU_PERIOD_US};
use crate::config::Limits;
use crate::process::CgroupLine;

/// One mounted v1 hierarchy and the controllers on it.
#[derive(Debug, Clone)]
struct Hierarchy {
    mount: PathBuf,
    controllers: Vec<&'static str>,
}

#[derive(Debug, Clone)]
pub struct V1Backend {
    /// Distinct hierarchies used, in move order (cpu, cpuacct, memory, pids).
    hierarchies: Vec<Hierarchy>,
}

impl V1Backend {
    /// Find the cpu, cpuacct, memory and pids hierarchies in /proc/self/mountinfo.
    pub fn from_mountinfo() -> Result<Self, String> {
        let v1 = V1::new();
        let mut found: Vec<(&'static str, PathBuf)> = Vec::new();
        for (name, c) in [
            ("cpu", Controllers::Cpu),
            ("cpuacct", Controllers::CpuAcct),
            ("memory", Controllers::Mem),
            ("pids", Controllers::Pids),
        ] {
            if let Some(m) = v1.get_mount_point(c) {
                found.push((name, m));
            }
        }
        if !found
            .iter()
            .any(|(n, _)| matches!(*n, "cpu" | "memory" | "pids"))
        {
            return Err("no cgroup hierarchy found: /sys/fs/cgroup is not cgroup2 and no v1 cpu, memory or pids hierarchy is mounted (mount cgroup2 at /sys/fs/cgroup, or the v1 controllers)".into());
        }
        Ok(Self::with_mounts(found))
    }

    /// Build from explicit `(controller, mount point)` pairs.
    pub fn with_mounts(mounts: Vec<(&'static str, PathBuf)>) -> Self {
        let mut hierarchies: Vec<Hierarchy> = Vec::new();
        for (name, mount) in mounts {
            match hierarchies.iter_mut().find(|h| h.mount == mount) {
                Some(h) => h.controllers.push(name),
                None => hierarchies.push(Hierarchy {
                    mount,
                    controllers: vec![name],
                }),
            }
        }
        V1Backend { hierarchies }
    }

    fn mount_of(&self, controller: &str) -> Option<&Path> {
        self.hierarchies
            .iter()
            .find(|h| h.controllers.contains(&controller))
            .map(|h| h.mount.as_path())
    }

    fn set(&self, cgroup: &str, w: &LimitWrite) -> Result<(), PlaceError> {
        let name = w.controller.name();
        let mount = self.mount_of(name).ok_or_else(|| missing(w.controller))?;
        let dir = dir_of(mount, cgroup);
        let r =
            match w.file {
                "cpu.cfs_period_us" => CpuController::new(dir.clone(), false)
                    .set_cfs_period(w.number.unwrap_or(CPU_PERIOD_US)),
                "cpu.cfs_quota_us" => CpuController::new(dir.clone(), false)
                    .set_cfs_quota(w.number.map_or(-1, |n| n as i64)),
                "cpu.shares" => {
                    CpuController::new(dir.clone(), false).set_shares(w.number.unwrap_or(1024))
                }
                "memory.limit_in_bytes" => MemController::new(dir.clone(), false)
                    .set_limit(w.number.map_or(-1, |n| n as i64)),
                "pids.max" => PidController::new(dir.clone(), false)
                    .set_pid_max(super::v2::max_value(w.number)),
                other => unreachable!("no v1 setter for {other}"),
            };
        written(&dir, w.file, &w.value, r)
    }

    /// What `read` finds in `cgroup` of every hierarchy, sorted and without repeats; a
    /// hierarchy where it does not exist adds nothing.
    fn union<T: Ord>(
        &self,
        cgroup: &str,
        read: fn(&Path) -> io::Result<Vec<T>>,
    ) -> io::Result<Vec<T>> {
        let mut all = Vec::new();
        for h in &self.hierarchies {
            match read(&dir_of(&h.mount, cgroup)) {
                Ok(found) => all.extend(found),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        all.sort_unstable();
        all.dedup();
        Ok(all)
    }
}

/// Move a whole process into `cgroup` of one hierarchy.
fn move_into(h: &Hierarchy, cgroup: &str, pid: u32) -> Result<(), PlaceError> {
    move_tgid(dir_of(&h.mount, cgroup), false, pid)
}

fn missing(c: Controller) -> PlaceError {
    PlaceError::missing_controller(
        c.name(),
        "no cgroup v1 hierarchy has it mounted".into(),
        format!("mount it: mkdir -p /sys/fs/cgroup/{0} && mount -t cgroup -o {0} cgroup /sys/fs/cgroup/{0}", c.name()),
    )
}

impl CgroupBackend for V1Backend {
    fn mode(&self) -> CgroupMode {
        CgroupMode::V1
    }

    fn describe(&self) -> String {
        let parts: Vec<String> = self
            .hierarchies
            .iter()
            .map(|h| format!("{} at {}", h.controllers.join(","), h.mount.display()))
            .collect();
        format!("cgroup v1: {}", parts.join(", "))
    }

    fn prepare_root(&self, root: &str) -> RootReport {
        let mut report = RootReport::default();
        for h in &self.hierarchies {
            let mut dir = h.mount.clone();
            for part in root.split('/').filter(|p| !p.is_empty()) {
                dir.push(part);
                match mkdir(&dir) {
                    Ok(true) => report.created.push(dir.clone()),
                    Ok(false) => {}
                    Err(e) => {
                        for c in &h.controllers {
                            if let Some(c) = Controller::ALL.into_iter().find(|x| x.name() == *c) {
                                let err = PlaceError::io(
                                    Step::PrepareRoot,
                                    &dir.display().to_string(),
                                    &e,
                                );
                                report.missing.push((c, err.to_string()));
                            }
                        }
                        break;
                    }
                }
            }
        }
        for c in Controller::ALL {
            if report.missing.iter().any(|(m, _)| *m == c) {
                continue;
            }
            if self.mount_of(c.name()).is_some() {
                report.available.push(c);
            } else {
                report.missing.push((c, missing(c).to_string()));
            }
        }
        report
    }

    fn create(&self, cgroup: &str) -> Result<(), PlaceError> {
        let mut made = Vec::new();
        for h in &self.hierarchies {
            let dir = dir_of(&h.mount, cgroup);
            match mkdir(&dir) {
                Ok(true) => made.push(dir),
                Ok(false) => {}
                Err(e) => {
                    // Leave no half-made job behind in the hierarchies already done.
                    for d in made {
                        let _ = rmdir(&d);
                    }
                    return Err(PlaceError::io(
                        Step::CreateCgroup,
                        &dir.display().to_string(),
                        &e,
                    ));
                }
            }
        }
        Ok(())
    }

    fn plan(&self, limits: &Limits, plan: Plan) -> Vec<LimitWrite> {
        v1_writes(limits, plan)
    }

    fn read_limit(&self, cgroup: &str, w: &LimitWrite) -> io::Result<String> {
        let mount = self.mount_of(w.controller.name()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("no {} hierarchy", w.controller.name()),
            )
        })?;
        read_trimmed(&dir_of(mount, cgroup).join(w.file))
    }

    fn write_limits(
        &self,
        cgroup: &str,
        writes: Vec<LimitWrite>,
    ) -> Vec<(String, Result<(), PlaceError>)> {
        writes
            .into_iter()
            .map(|w| (format!("{}={}", w.file, w.value), self.set(cgroup, &w)))
            .collect()
    }

    fn move_process(&self, cgroup: &str, pid: u32) -> Result<(), PlaceError> {
        for h in &self.hierarchies {
            move_into(h, cgroup, pid)?;
        }
        Ok(())
    }

    fn move_home(&self, lines: &[CgroupLine], pid: u32) -> Result<String, PlaceError> {
        for h in &self.hierarchies {
            let line = lines
                .iter()
                .find(|l| l.controllers.iter().any(|c| c == h.controllers[0]));
            let Some(l) = line else {
                let why = format!(
                    "where PID {pid} was in the {} hierarchy is not known",
                    h.controllers[0]
                );
                return Err(PlaceError::permanent(Step::Move, why));
            };
            move_into(h, &l.path, pid)?;
        }
        Ok(self.location(lines))
    }

    fn is_member(&self, cgroup: &str, lines: &[CgroupLine]) -> bool {
        self.hierarchies.iter().all(|h| {
            lines
                .iter()
                .find(|l| l.controllers.iter().any(|c| c == h.controllers[0]))
                .is_some_and(|l| l.path == cgroup)
        })
    }

    fn location(&self, lines: &[CgroupLine]) -> String {
        let parts: Vec<String> = self
            .hierarchies
            .iter()
            .filter_map(|h| {
                let l = lines
                    .iter()
                    .find(|l| l.controllers.iter().any(|c| c == h.controllers[0]))?;
                Some(format!("{}:{}", h.controllers[0], l.path))
            })
            .collect();
        parts.join(" ")
    }

    fn remove(&self, cgroup: &str) -> io::Result<()> {
        let mut first_err = None;
        // In move order: a process on its way in (or a child left behind) is in the first
        // hierarchy first, and the EBUSY there leaves the cgroup whole in all of them.
        for h in &self.hierarchies {
            match rmdir(&dir_of(&h.mount, cgroup)) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Err(e),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn procs(&self, cgroup: &str) -> io::Result<Vec<u32>> {
        self.union(cgroup, read_procs)
    }

    fn children(&self, cgroup: &str) -> io::Result<Vec<String>> {
        self.union(cgroup, list_dirs)
    }

    fn usage(&self, cgroup: &str) -> Usage {
        let at = |c: &str, f: &str| self.mount_of(c).map(|m| dir_of(m, cgroup).join(f));
        Usage {
            memory_bytes: at("memory", "memory.usage_in_bytes").and_then(|p| read_u64(&p)),
            pids: at("pids", "pids.current").and_then(|p| read_u64(&p)),
            throttling: at("cpu", "cpu.stat")
                .and_then(|p| std::fs::read_to_string(p).ok())
                .and_then(|t| super::backend::Throttling::from_cpu_stat(&t)),
            ..self.final_usage(cgroup)
        }
    }

    fn final_usage(&self, cgroup: &str) -> Usage {
        let at = |c: &str, f: &str| self.mount_of(c).map(|m| dir_of(m, cgroup).join(f));
        Usage {
            cpu_usec: at("cpuacct", "cpuacct.usage")
                .and_then(|p| read_u64(&p))
                .map(|ns| ns / 1000),
            oom_kills: at("memory", "memory.oom_control").and_then(|p| read_keyed(&p, "oom_kill")),
            ..Usage::default()
        }
    }

    fn read_limits(&self, cgroup: &str) -> Limits {
        let at = |c: &str, f: &str| self.mount_of(c).map(|m| dir_of(m, cgroup).join(f));
        let quota = at("cpu", "cpu.cfs_quota_us")
            .and_then(|p| read_trimmed(&p).ok())
            .and_then(|v| v.parse::<i64>().ok());
        let period = at("cpu", "cpu.cfs_period_us")
            .and_then(|p| read_u64(&p))
            .unwrap_or(CPU_PERIOD_US);
        Limits {
            cpu_quota: quota
                .filter(|q| *q > 0)
                .map(|q| (q as u64 * 100 / period.max(1)) as u32),
            cpu_weight: at("cpu", "cpu.shares")
                .and_then(|p| read_u64(&p))
                .map(|s| (s * 100 / 1024) as u32),
            memory_limit: at("memory", "memory.limit_in_bytes")
                .and_then(|p| read_u64(&p))
                .filter(|b| *b < (1u64 << 62))
                .map(|b| b / (1024 * 1024)),
            pids_max: at("pids", "pids.max").and_then(|p| read_u64(&p)),
        }
    }

    fn procs_files(&self, cgroup: &str) -> Vec<PathBuf> {
        self.hierarchies
            .iter()
            .map(|h| dir_of(&h.mount, cgroup).join("cgroup.procs"))
            .collect()
    }

    fn rename(&self, cgroup: &str, new_name: &str) -> Result<String, PlaceError> {
        let parent = cgroup.rsplit_once('/').map_or("", |(p, _)| p);
        let target = format!("{parent}/{new_name}");
        let mut done: Vec<&Hierarchy> = Vec::new();
        for h in &self.hierarchies {
            let (from, to) = (dir_of(&h.mount, cgroup), dir_of(&h.mount, &target));
            if let Err(e) = std::fs::rename(&from, &to) {
                // Put back what was renamed, so the hierarchies agree again.
                for d in done {
                    let _ = std::fs::rename(dir_of(&d.mount, &target), dir_of(&d.mount, cgroup));
                }
                return Err(PlaceError::io(
                    Step::CreateCgroup,
                    &to.display().to_string(),
                    &e,
                ));
            }
            done.push(h);
        }
        Ok(target)
    }

    fn supports_rename(&self) -> bool {
        true
    }
}
