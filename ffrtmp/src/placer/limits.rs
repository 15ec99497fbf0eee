//! Limit arithmetic: config units to cgroup file values, for v2 and v1. Pure.

use crate::config::Limits;

/// CFS period used for every quota, µs.
pub const CPU_PERIOD_US: u64 = 100_000;

/// A controller a limit belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Controller {
    Cpu,
    Memory,
    Pids,
}

impl Controller {
    pub const ALL: [Controller; 3] = [Controller::Cpu, Controller::Memory, Controller::Pids];
    pub fn name(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::Memory => "memory",
            Controller::Pids => "pids",
        }
    }
}

/// One value to write into one cgroup file, and what reading it back must show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitWrite {
    pub controller: Controller,
    pub file: &'static str,
    /// The text the file must read back.
    pub value: String,
    /// The number written (the quota for `cpu.max`).
    pub number: u64,
}

/// `cpu_quota` percent → quota µs per `CPU_PERIOD_US` (200 % → 200000).
pub fn quota_us(percent: u32) -> u64 {
    u64::from(percent) * CPU_PERIOD_US / 100
}

/// `cpu_weight` (1–10000, default 100) → v1 `cpu.shares` (default 1024), at least 2.
pub fn shares(weight: u32) -> u64 {
    (u64::from(weight) * 1024 / 100).max(2)
}

pub fn mib_to_bytes(mib: u64) -> u64 {
    mib * 1024 * 1024
}

/// The writes for cgroup v2, in order. Only configured limits are written; the rest keep
/// the kernel default (no limit).
pub fn v2_writes(l: &Limits) -> Vec<LimitWrite> {
    let mut w = Vec::with_capacity(4);
    if let Some(p) = l.cpu_quota {
        w.push(LimitWrite {
            controller: Controller::Cpu,
            file: "cpu.max",
            value: format!("{} {}", quota_us(p), CPU_PERIOD_US),
            number: quota_us(p),
        });
    }
    if let Some(weight) = l.cpu_weight {
        w.push(LimitWrite {
            controller: Controller::Cpu,
            file: "cpu.weight",
            value: weight.to_string(),
            number: u64::from(weight),
        });
    }
    if let Some(m) = l.memory_limit {
        w.push(LimitWrite {
            controller: Controller::Memory,
            file: "memory.max",
            value: mib_to_bytes(m).to_string(),
            number: mib_to_bytes(m),
        });
    }
    if let Some(n) = l.pids_max {
        w.push(LimitWrite {
            controller: Controller::Pids,
            file: "pids.max",
            value: n.to_string(),
            number: n,
        });
    }
    w
}

/// The writes for cgroup v1, in order (the period before the quota).
pub fn v1_writes(l: &Limits) -> Vec<LimitWrite> {
    let mut w = Vec::with_capacity(5);
    if let Some(p) = l.cpu_quota {
        w.push(LimitWrite {
            controller: Controller::Cpu,
            file: "cpu.cfs_period_us",
            value: CPU_PERIOD_US.to_string(),
            number: CPU_PERIOD_US,
        });
        w.push(LimitWrite {
            controller: Controller::Cpu,
            file: "cpu.cfs_quota_us",
            value: quota_us(p).to_string(),
            number: quota_us(p),
        });
    }
    if let Some(weight) = l.cpu_weight {
        w.push(LimitWrite {
            controller: Controller::Cpu,
            file: "cpu.shares",
            value: shares(weight).to_string(),
            number: shares(weight),
        });
    }
    if let Some(m) = l.memory_limit {
        w.push(LimitWrite {
            controller: Controller::Memory,
            file: "memory.limit_in_bytes",
            value: mib_to_bytes(m).to_string(),
            number: mib_to_bytes(m),
        });
    }
    if let Some(n) = l.pids_max {
        w.push(LimitWrite {
            controller: Controller::Pids,
            file: "pids.max",
            value: n.to_string(),
            number: n,
        });
    }
    w
}

/// The controllers the limits need.
pub fn needed_controllers(l: &Limits) -> Vec<Controller> {
    let mut c = Vec::new();
    if l.cpu_quota.is_some() || l.cpu_weight.is_some() {
        c.push(Controller::Cpu);
    }
    if l.memory_limit.is_some() {
        c.push(Controller::Memory);
    }
    if l.pids_max.is_some() {
        c.push(Controller::Pids);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(q: u32, w: u32, m: u64, p: u64) -> Limits {
        Limits {
            cpu_quota: Some(q),
            cpu_weight: Some(w),
            memory_limit: Some(m),
            pids_max: Some(p),
        }
    }

    #[test]
    fn conversions() {
        assert_eq!(quota_us(200), 200_000);
        assert_eq!(quota_us(1), 1_000);
        assert_eq!(quota_us(50), 50_000);
        assert_eq!(shares(100), 1024);
        assert_eq!(shares(200), 2048);
        assert_eq!(shares(10_000), 102_400);
        assert_eq!(shares(1), 10);
        assert_eq!(mib_to_bytes(4096), 4_294_967_296);
        assert_eq!(mib_to_bytes(64), 67_108_864);
    }

    #[test]
    fn v2_files() {
        let w = v2_writes(&all(300, 100, 8192, 64));
        let pairs: Vec<(&str, &str)> = w.iter().map(|w| (w.file, w.value.as_str())).collect();
        assert_eq!(
            pairs,
            [
                ("cpu.max", "300000 100000"),
                ("cpu.weight", "100"),
                ("memory.max", "8589934592"),
                ("pids.max", "64")
            ]
        );
    }

    #[test]
    fn v1_files() {
        let w = v1_writes(&all(20, 50, 64, 5));
        let pairs: Vec<(&str, &str)> = w.iter().map(|w| (w.file, w.value.as_str())).collect();
        assert_eq!(
            pairs,
            [
                ("cpu.cfs_period_us", "100000"),
                ("cpu.cfs_quota_us", "20000"),
                ("cpu.shares", "512"),
                ("memory.limit_in_bytes", "67108864"),
                ("pids.max", "5"),
            ]
        );
    }

    #[test]
    fn unset_limits_are_not_written() {
        assert!(v2_writes(&Limits::default()).is_empty());
        assert!(v1_writes(&Limits::default()).is_empty());
        assert!(needed_controllers(&Limits::default()).is_empty());
        let l = Limits {
            memory_limit: Some(1),
            ..Default::default()
        };
        assert_eq!(needed_controllers(&l), [Controller::Memory]);
    }
}
