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
    /// The number written (the quota for `cpu.max`); `None` for no limit.
    pub number: Option<u64>,
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

/// Which limits a write plan covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Only the configured ones: a new cgroup starts from the kernel's defaults.
    Configured,
    /// Every one, the unset ones back to the kernel's default: a running job or pool
    /// whose limits changed, or that another writer changed.
    All,
}

fn write(
    controller: Controller,
    file: &'static str,
    value: String,
    number: Option<u64>,
) -> LimitWrite {
    LimitWrite {
        controller,
        file,
        value,
        number,
    }
}

/// The writes for cgroup v2, in order.
pub fn v2_writes(l: &Limits, plan: Plan) -> Vec<LimitWrite> {
    let all = plan == Plan::All;
    let mut w = Vec::with_capacity(4);
    match l.cpu_quota {
        Some(p) => w.push(write(
            Controller::Cpu,
            "cpu.max",
            format!("{} {}", quota_us(p), CPU_PERIOD_US),
            Some(quota_us(p)),
        )),
        None if all => w.push(write(
            Controller::Cpu,
            "cpu.max",
            format!("max {CPU_PERIOD_US}"),
            None,
        )),
        None => {}
    }
    if let Some(weight) = l.cpu_weight.or(all.then_some(DEFAULT_WEIGHT)) {
        let n = u64::from(weight);
        w.push(write(Controller::Cpu, "cpu.weight", n.to_string(), Some(n)));
    }
    memory_and_pids(l, all, "memory.max", &mut w);
    w
}

/// The writes for cgroup v1, in order (the period before the quota).
pub fn v1_writes(l: &Limits, plan: Plan) -> Vec<LimitWrite> {
    let all = plan == Plan::All;
    let mut w = Vec::with_capacity(5);
    match l.cpu_quota {
        Some(p) => {
            let period = Some(CPU_PERIOD_US);
            w.push(write(
                Controller::Cpu,
                "cpu.cfs_period_us",
                CPU_PERIOD_US.to_string(),
                period,
            ));
            let q = quota_us(p);
            w.push(write(
                Controller::Cpu,
                "cpu.cfs_quota_us",
                q.to_string(),
                Some(q),
            ));
        }
        None if all => w.push(write(
            Controller::Cpu,
            "cpu.cfs_quota_us",
            "-1".into(),
            None,
        )),
        None => {}
    }
    if let Some(weight) = l.cpu_weight.or(all.then_some(DEFAULT_WEIGHT)) {
        let s = shares(weight);
        w.push(write(Controller::Cpu, "cpu.shares", s.to_string(), Some(s)));
    }
    memory_and_pids(l, all, "memory.limit_in_bytes", &mut w);
    w
}

/// The memory limit (in `memory_file`, the version's) and the pids limit, alike on both
/// versions: written when set, or put back to `max` in a full plan.
fn memory_and_pids(l: &Limits, all: bool, memory_file: &'static str, w: &mut Vec<LimitWrite>) {
    if l.memory_limit.is_some() || all {
        let b = l.memory_limit.map(mib_to_bytes);
        w.push(write(Controller::Memory, memory_file, text(b), b));
    }
    if l.pids_max.is_some() || all {
        let p = l.pids_max;
        w.push(write(Controller::Pids, "pids.max", text(p), p));
    }
}

/// The kernel's default `cpu_weight`.
pub const DEFAULT_WEIGHT: u32 = 100;

/// A limit's file text: the number, or `max` for none.
fn text(n: Option<u64>) -> String {
    n.map_or_else(|| "max".into(), |n| n.to_string())
}

/// Whether a limit file's text shows `want`: the same text, or for `max` any value the
/// kernel shows for "no limit" (v1's memory.limit_in_bytes reads back a page-rounded
/// LONG_MAX).
pub fn reads_as(got: &str, want: &str) -> bool {
    got == want || (want == "max" && got.parse::<u64>().is_ok_and(|n| n >= 1 << 62))
}

/// What changed between two sets of limits, for the log: `cpu_quota 200 → 100`.
pub fn changes(from: &Limits, to: &Limits) -> String {
    let weight = |l: &Limits| Some(u64::from(l.cpu_weight.unwrap_or(DEFAULT_WEIGHT)));
    let show = |v: Option<u64>| v.map_or_else(|| "max".to_string(), |v| v.to_string());
    let pairs = [
        (
            "cpu_quota",
            from.cpu_quota.map(u64::from),
            to.cpu_quota.map(u64::from),
        ),
        ("cpu_weight", weight(from), weight(to)),
        ("memory_limit", from.memory_limit, to.memory_limit),
        ("pids_max", from.pids_max, to.pids_max),
    ];
    let parts: Vec<String> = pairs
        .into_iter()
        .filter(|(_, a, b)| a != b)
        .map(|(k, a, b)| format!("{k} {} → {}", show(a), show(b)))
        .collect();
    parts.join(", ")
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

    /// Each write as (file, value).
    fn files(writes: &[LimitWrite]) -> Vec<(&str, &str)> {
        writes.iter().map(|w| (w.file, w.value.as_str())).collect()
    }

    #[test]
    fn v2_files() {
        assert_eq!(
            files(&v2_writes(&all(300, 100, 8192, 64), Plan::Configured)),
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
        assert_eq!(
            files(&v1_writes(&all(20, 50, 64, 5), Plan::Configured)),
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
        assert!(v2_writes(&Limits::default(), Plan::Configured).is_empty());
        assert!(v1_writes(&Limits::default(), Plan::Configured).is_empty());
        assert!(needed_controllers(&Limits::default()).is_empty());
        let l = Limits {
            memory_limit: Some(1),
            ..Default::default()
        };
        assert_eq!(needed_controllers(&l), [Controller::Memory]);
    }

    #[test]
    fn a_full_plan_puts_unset_limits_back_to_the_defaults() {
        let l = Limits {
            cpu_quota: Some(50),
            ..Default::default()
        };
        let pairs = |w: Vec<LimitWrite>| -> Vec<(&str, String)> {
            w.into_iter().map(|w| (w.file, w.value)).collect()
        };
        assert_eq!(
            pairs(v2_writes(&Limits::default(), Plan::All)),
            [
                ("cpu.max", "max 100000".to_string()),
                ("cpu.weight", "100".into()),
                ("memory.max", "max".into()),
                ("pids.max", "max".into())
            ]
        );
        assert_eq!(
            pairs(v1_writes(&l, Plan::All)),
            [
                ("cpu.cfs_period_us", "100000".to_string()),
                ("cpu.cfs_quota_us", "50000".into()),
                ("cpu.shares", "1024".into()),
                ("memory.limit_in_bytes", "max".into()),
                ("pids.max", "max".into())
            ]
        );
        assert!(reads_as("9223372036854771712", "max"));
        assert!(!reads_as("67108864", "max"));
        let to = Limits {
            cpu_quota: Some(25),
            memory_limit: Some(64),
            ..Default::default()
        };
        assert_eq!(changes(&l, &to), "cpu_quota 50 → 25, memory_limit max → 64");
    }
}
