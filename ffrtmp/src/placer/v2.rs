//! cgroup v2 (unified hierarchy): one tree; controllers must be enabled in every ancestor's
//! `cgroup.subtree_control` before a job cgroup has the files its limits need. Limits and
//! moves go through cgroups-rs controllers rooted at the job directory.

use std::io;
use std::path::PathBuf;

use cgroups_rs::cpu::CpuController;
use cgroups_rs::memory::MemController;
use cgroups_rs::pid::PidController;
use cgroups_rs::MaxValue;

use super::backend::{CgroupBackend, CgroupMode, RootReport, Usage};
use super::cgroupfs::{
    dir_of, list_dirs, mkdir, move_tgid, read_keyed, read_procs, read_trimmed, read_u64, rmdir,
    written,
};
use super::error::{PlaceError, Step};
use super::limits::{v2_writes, Controller, LimitWrite, Plan};
use crate::config::Limits;

#[derive(Debug, Clone)]
pub struct V2Backend {
    mount: PathBuf,
}

impl V2Backend {
    pub fn new(mount: PathBuf) -> Self {
        V2Backend { mount }
    }

    fn controllers_of(&self, dir: &std::path::Path) -> io::Result<Vec<String>> {
        Ok(read_trimmed(&dir.join("cgroup.controllers"))?
            .split_whitespace()
            .map(str::to_string)
            .collect())
    }

    fn set(&self, cgroup: &str, w: &LimitWrite) -> Result<(), PlaceError> {
        let dir = dir_of(&self.mount, cgroup);
        let r = match w.file {
            "cpu.max" => CpuController::new(dir.clone(), true).set_cfs_quota_and_period(
                Some(w.number.map_or(-1, |n| n as i64)),
                Some(super::limits::CPU_PERIOD_US),
            ),
            "cpu.weight" => {
                CpuController::new(dir.clone(), true).set_shares(w.number.unwrap_or(100))
            }
            "memory.max" => {
                MemController::new(dir.clone(), true).set_limit(w.number.map_or(-1, |n| n as i64))
            }
            "pids.max" => PidController::new(dir.clone(), true).set_pid_max(max_value(w.number)),
            other => unreachable!("no v2 setter for {other}"),
        };
        written(&dir, w.file, &w.value, r)
    }
}

/// A pids limit as cgroups-rs takes it.
pub(super) fn max_value(n: Option<u64>) -> MaxValue {
    n.map_or(MaxValue::Max, |n| MaxValue::Value(n as i64))
}

fn not_delegated(c: Controller, dir: &std::path::Path) -> PlaceError {
    let parent = dir.parent().unwrap_or(dir);
    PlaceError::missing_controller(
        c.name(),
        format!("it is not in {}/cgroup.controllers", dir.display()),
        format!(
            "enable it in the parent: echo +{} > {}/cgroup.subtree_control (under systemd, give the unit that owns {} Delegate=yes)",
            c.name(),
            parent.display(),
            parent.display()
        ),
    )
}

impl CgroupBackend for V2Backend {
    fn mode(&self) -> CgroupMode {
        CgroupMode::V2
    }

    fn describe(&self) -> String {
        format!("cgroup v2 at {}", self.mount.display())
    }

    fn prepare_root(&self, root: &str) -> RootReport {
        let mut report = RootReport::default();
        let mut dirs = vec![self.mount.clone()];
        for part in root.split('/').filter(|p| !p.is_empty()) {
            let next = dirs.last().unwrap().join(part);
            dirs.push(next);
        }
        let mut usable: Vec<Controller> = Controller::ALL.to_vec();
        for (i, dir) in dirs.iter().enumerate() {
            if i > 0 {
                match mkdir(dir) {
                    Ok(true) => report.created.push(dir.clone()),
                    Ok(false) => {}
                    Err(e) => {
                        let err = PlaceError::io(Step::PrepareRoot, &dir.display().to_string(), &e);
                        for c in usable.drain(..) {
                            report.missing.push((c, err.to_string()));
                        }
                        break;
                    }
                }
            }
            let have = self.controllers_of(dir).unwrap_or_default();
            usable.retain(|c| {
                let ok = have.iter().any(|h| h == c.name());
                if !ok {
                    report
                        .missing
                        .push((*c, not_delegated(*c, dir).to_string()));
                }
                ok
            });
            let enabled = read_trimmed(&dir.join("cgroup.subtree_control")).unwrap_or_default();
            let subtree = dir.join("cgroup.subtree_control");
            usable.retain(|c| {
                if enabled.split_whitespace().any(|e| e == c.name()) {
                    return true;
                }
                match std::fs::write(&subtree, format!("+{}", c.name())) {
                    Ok(()) => true,
                    Err(e) => {
                        let fix = if e.raw_os_error() == Some(libc::EBUSY) {
                            format!(
                                "{} has processes of its own, so it cannot enable controllers for children (no-internal-process rule): move them into a leaf cgroup, or choose a cgroup_root whose parent holds no processes",
                                dir.display()
                            )
                        } else {
                            PlaceError::io(Step::PrepareRoot, &subtree.display().to_string(), &e).to_string()
                        };
                        report.missing.push((
                            *c,
                            format!("cannot enable {} in {}: {e}; {fix}", c.name(), subtree.display()),
                        ));
                        false
                    }
                }
            });
        }
        report.available = usable;
        report
    }

    fn create(&self, cgroup: &str) -> Result<(), PlaceError> {
        let dir = dir_of(&self.mount, cgroup);
        mkdir(&dir)
            .map_err(|e| PlaceError::io(Step::CreateCgroup, &dir.display().to_string(), &e))?;
        Ok(())
    }

    fn plan(&self, limits: &Limits, plan: Plan) -> Vec<LimitWrite> {
        v2_writes(limits, plan)
    }

    fn read_limit(&self, cgroup: &str, w: &LimitWrite) -> io::Result<String> {
        read_trimmed(&dir_of(&self.mount, cgroup).join(w.file))
    }

    fn write_limits(
        &self,
        cgroup: &str,
        writes: Vec<LimitWrite>,
    ) -> Vec<(String, Result<(), PlaceError>)> {
        if writes.is_empty() {
            return Vec::new();
        }
        let dir = dir_of(&self.mount, cgroup);
        let have = self.controllers_of(&dir).unwrap_or_default();
        writes
            .into_iter()
            .map(|w| {
                let label = format!("{}={}", w.file, w.value);
                if !have.iter().any(|h| h == w.controller.name()) {
                    return (label, Err(not_delegated(w.controller, &dir)));
                }
                (label, self.set(cgroup, &w))
            })
            .collect()
    }

    fn move_process(&self, cgroup: &str, pid: u32) -> Result<(), PlaceError> {
        move_tgid(dir_of(&self.mount, cgroup), true, pid)
    }

    fn remove(&self, cgroup: &str) -> io::Result<()> {
        rmdir(&dir_of(&self.mount, cgroup))
    }

    fn procs(&self, cgroup: &str) -> io::Result<Vec<u32>> {
        read_procs(&dir_of(&self.mount, cgroup))
    }

    fn children(&self, cgroup: &str) -> io::Result<Vec<String>> {
        list_dirs(&dir_of(&self.mount, cgroup))
    }

    fn usage(&self, cgroup: &str) -> Usage {
        let dir = dir_of(&self.mount, cgroup);
        Usage {
            memory_bytes: read_u64(&dir.join("memory.current")),
            pids: read_u64(&dir.join("pids.current")),
            throttling: std::fs::read_to_string(dir.join("cpu.stat"))
                .ok()
                .and_then(|t| super::backend::Throttling::from_cpu_stat(&t)),
            ..self.final_usage(cgroup)
        }
    }

    fn final_usage(&self, cgroup: &str) -> Usage {
        let dir = dir_of(&self.mount, cgroup);
        Usage {
            cpu_usec: read_keyed(&dir.join("cpu.stat"), "usage_usec"),
            oom_kills: read_keyed(&dir.join("memory.events"), "oom_kill"),
            ..Usage::default()
        }
    }

    fn read_limits(&self, cgroup: &str) -> Limits {
        let dir = dir_of(&self.mount, cgroup);
        let cpu_max = read_trimmed(&dir.join("cpu.max")).unwrap_or_default();
        let mut it = cpu_max.split_whitespace();
        let quota = it.next().and_then(|q| q.parse::<u64>().ok());
        let period = it
            .next()
            .and_then(|p| p.parse::<u64>().ok())
            .unwrap_or(100_000);
        Limits {
            cpu_quota: quota.map(|q| (q * 100 / period.max(1)) as u32),
            cpu_weight: read_u64(&dir.join("cpu.weight")).map(|w| w as u32),
            memory_limit: read_u64(&dir.join("memory.max")).map(|b| b / (1024 * 1024)),
            pids_max: read_u64(&dir.join("pids.max")),
        }
    }

    fn procs_files(&self, cgroup: &str) -> Vec<PathBuf> {
        vec![dir_of(&self.mount, cgroup).join("cgroup.procs")]
    }

    fn move_cost(&self) -> Option<String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let options = super_options(&mountinfo, &self.mount.display().to_string())?;
        Some(favordynmods_note(&options, kernel_release().as_deref()))
    }
}

/// The super options of the cgroup2 mount at `mount` (`nsdelegate,favordynmods,…`, sorted),
/// from /proc/self/mountinfo (procfs's parser).
pub fn super_options(mountinfo: &str, mount: &str) -> Option<String> {
    use procfs::FromBufRead;
    let infos = procfs::process::MountInfos::from_buf_read(mountinfo.as_bytes()).ok()?;
    let m = infos
        .0
        .into_iter()
        .find(|m| m.fs_type == "cgroup2" && m.mount_point == std::path::Path::new(mount))?;
    let mut opts: Vec<String> = m
        .super_options
        .into_iter()
        .map(|(k, v)| v.map_or(k.clone(), |v| format!("{k}={v}")))
        .collect();
    opts.sort();
    Some(opts.join(","))
}

/// From uname(2): the unit's `ProcSubset=pid` hides /proc/sys/kernel/osrelease.
fn kernel_release() -> Option<String> {
    Some(
        rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned(),
    )
}

/// What `favordynmods` (Linux 6.0+) means for a placement, for the start-up log.
fn favordynmods_note(options: &str, release: Option<&str>) -> String {
    if options.split(',').any(|o| o == "favordynmods") {
        return "cgroup2 is mounted with favordynmods: a move into a job cgroup does not wait for an RCU grace period".into();
    }
    let major = release
        .and_then(|r| r.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    if major.is_some_and(|m| m < 6) {
        return "cgroup2 without favordynmods (Linux before 6.0 has no such option); moves do not wait for an RCU grace period there".into();
    }
    "cgroup2 is mounted without favordynmods: each move into a job cgroup waits for an RCU grace period \
     (exec→placed p50 19-24 ms instead of 4-10 ms in the VM tier; docs/deployment.md); \
     `install-edge.sh --favordynmods` turns it on, at a cost to every fork and exit"
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
24 30 0:22 / /sys ro,nosuid - sysfs sysfs rw
26 24 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,favordynmods,memory_recursiveprot
";

    #[test]
    fn favordynmods_is_read_from_the_super_options() {
        let o = super_options(MOUNTINFO, "/sys/fs/cgroup").unwrap();
        assert_eq!(o, "favordynmods,memory_recursiveprot,nsdelegate,rw");
        assert!(favordynmods_note(&o, Some("6.1.0-57-cloud-amd64")).contains("with favordynmods"));
        let plain = "rw,nsdelegate,memory_recursiveprot";
        assert!(favordynmods_note(plain, Some("6.1.0-57-cloud-amd64"))
            .contains("waits for an RCU grace period"));
        assert!(favordynmods_note(plain, Some("5.10.0-32-cloud-amd64")).contains("before 6.0"));
        assert_eq!(super_options(MOUNTINFO, "/sys"), None);
    }
}
