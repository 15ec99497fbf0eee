//! Limits on a systemd service instead of a move out of it (`services: limit_unit`): the
//! unit's `CPUQuota=`, `CPUWeight=`, `MemoryMax=` and `TasksMax=` are set through systemd's
//! D-Bus API (`SetUnitProperties`, runtime only: a reboot forgets them), after its values
//! are read, so they can be put back when the job ends. systemd then writes the cgroup
//! files and keeps them; `systemctl stop` still ends everything in the unit.
//!
//! `UnitBus` is the seam: `SystemdBus` talks to systemd over the system bus (zbus, blocking
//! API: it runs on the chore runner's blocking pool, never on the placement thread); the
//! tests use a fake.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::config::Limits;

/// systemd's "not set" / "infinity" for the four properties.
pub const UNSET: u64 = u64::MAX;

/// A unit's four resource properties as systemd's D-Bus API has them (`UNSET`: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitLimits {
    /// `CPUQuotaPerSecUSec`: CPU time per second of wall time, µs (`CPUQuota=` 50% is 500000).
    pub cpu_quota_per_sec_usec: u64,
    /// `CPUWeight`.
    pub cpu_weight: u64,
    /// `MemoryMax`, bytes.
    pub memory_max: u64,
    /// `TasksMax`.
    pub tasks_max: u64,
}

impl UnitLimits {
    /// A target's limits as unit properties; those it does not set are left to systemd's
    /// default (none), as a job cgroup leaves them to the kernel's.
    pub fn from_limits(l: &Limits) -> UnitLimits {
        UnitLimits {
            cpu_quota_per_sec_usec: l.cpu_quota.map_or(UNSET, |p| u64::from(p) * 10_000),
            cpu_weight: l.cpu_weight.map_or(UNSET, u64::from),
            memory_max: l.memory_limit.map_or(UNSET, super::limits::mib_to_bytes),
            tasks_max: l.pids_max.unwrap_or(UNSET),
        }
    }

    /// As `systemctl set-property` would be written: `CPUQuota=50% MemoryMax=67108864 …`.
    pub fn describe(&self) -> String {
        let v = |n: u64, f: &dyn Fn(u64) -> String| {
            if n == UNSET {
                "infinity".to_string()
            } else {
                f(n)
            }
        };
        format!(
            "CPUQuota={} CPUWeight={} MemoryMax={} TasksMax={}",
            v(self.cpu_quota_per_sec_usec, &|q| format!("{}%", q / 10_000)),
            if self.cpu_weight == UNSET {
                "(default)".to_string()
            } else {
                self.cpu_weight.to_string()
            },
            v(self.memory_max, &|m| m.to_string()),
            v(self.tasks_max, &|t| t.to_string()),
        )
    }

    /// The D-Bus properties, in `SetUnitProperties`' order.
    pub fn properties(&self) -> [(&'static str, u64); 4] {
        [
            ("CPUQuotaPerSecUSec", self.cpu_quota_per_sec_usec),
            ("CPUWeight", self.cpu_weight),
            ("MemoryMax", self.memory_max),
            ("TasksMax", self.tasks_max),
        ]
    }

    /// The properties whose value differs from `now`'s: only those are set (none is set
    /// to what it already is).
    pub fn changes_from(&self, now: &UnitLimits) -> Vec<(&'static str, u64)> {
        (self.properties().into_iter())
            .zip(now.properties())
            .filter(|(a, b)| a.1 != b.1)
            .map(|(a, _)| a)
            .collect()
    }

    /// These values, with `other`'s where these are `UNSET`.
    pub fn or(self, other: &UnitLimits) -> UnitLimits {
        let pick = |a: u64, b: u64| if a == UNSET { b } else { a };
        UnitLimits {
            cpu_quota_per_sec_usec: pick(self.cpu_quota_per_sec_usec, other.cpu_quota_per_sec_usec),
            cpu_weight: pick(self.cpu_weight, other.cpu_weight),
            memory_max: pick(self.memory_max, other.memory_max),
            tasks_max: pick(self.tasks_max, other.tasks_max),
        }
    }

    /// These values with `props` set.
    pub fn with(mut self, props: &[(&str, u64)]) -> UnitLimits {
        for (k, v) in props {
            match *k {
                "CPUQuotaPerSecUSec" => self.cpu_quota_per_sec_usec = *v,
                "CPUWeight" => self.cpu_weight = *v,
                "MemoryMax" => self.memory_max = *v,
                "TasksMax" => self.tasks_max = *v,
                _ => {}
            }
        }
        self
    }
}

/// systemd, as the daemon asks it to limit a unit.
pub trait UnitBus: Send + Sync {
    /// The unit's current values of the four properties.
    fn read(&self, unit: &str) -> Result<UnitLimits, String>;
    /// Set these of them, runtime only.
    fn write(&self, unit: &str, props: &[(&'static str, u64)]) -> Result<(), String>;
}

const DEST: &str = "org.freedesktop.systemd1";
/// How long one D-Bus call to systemd may take.
const BUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
const MANAGER: &str = "org.freedesktop.systemd1.Manager";

/// systemd on the system bus; connected at first use, again after a failure.
#[derive(Default)]
pub struct SystemdBus {
    conn: Mutex<Option<zbus::blocking::Connection>>,
}

impl SystemdBus {
    fn conn(&self) -> Result<zbus::blocking::Connection, String> {
        let mut c = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(conn) = c.as_ref() {
            return Ok(conn.clone());
        }
        // A hung systemd must not hold up the chore runner (state writes, removals) for long.
        let conn = zbus::blocking::connection::Builder::system()
            .map(|b| b.method_timeout(BUS_TIMEOUT))
            .and_then(|b| b.build());
        let conn = conn.map_err(|e| {
            format!("cannot reach systemd on the system bus: {e} (is dbus running, and may ffrtmp use AF_UNIX?)")
        })?;
        *c = Some(conn.clone());
        Ok(conn)
    }

    /// Forget a connection that failed, so the next call connects again.
    fn failed<T>(&self, r: zbus::Result<T>, what: &str) -> Result<T, String> {
        r.map_err(|e| {
            *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
            format!("{what}: {e}")
        })
    }
}

impl UnitBus for SystemdBus {
    fn read(&self, unit: &str) -> Result<UnitLimits, String> {
        let conn = self.conn()?;
        let manager = zbus::blocking::Proxy::new(&conn, DEST, "/org/freedesktop/systemd1", MANAGER);
        let manager = self.failed(manager, "systemd's manager object")?;
        // LoadUnit, not GetUnit: a stopped unit may have been unloaded; its runtime
        // properties (drop-ins under /run/systemd/system.control) load with it.
        let path: zbus::zvariant::OwnedObjectPath = self.failed(
            manager.call("LoadUnit", &(unit,)),
            &format!("LoadUnit {unit}"),
        )?;
        let service = zbus::blocking::proxy::Builder::<zbus::blocking::Proxy>::new(&conn)
            .destination(DEST)
            .and_then(|b| b.path(path))
            .and_then(|b| b.interface("org.freedesktop.systemd1.Service"))
            .map(|b| b.cache_properties(zbus::proxy::CacheProperties::No))
            .and_then(|b| b.build());
        let service = self.failed(service, &format!("the unit object of {unit}"))?;
        let get = |name: &str| {
            self.failed(
                service.get_property::<u64>(name),
                &format!("{unit}'s {name}"),
            )
        };
        Ok(UnitLimits {
            cpu_quota_per_sec_usec: get("CPUQuotaPerSecUSec")?,
            cpu_weight: get("CPUWeight")?,
            memory_max: get("MemoryMax")?,
            tasks_max: get("TasksMax")?,
        })
    }

    fn write(&self, unit: &str, props: &[(&'static str, u64)]) -> Result<(), String> {
        if props.is_empty() {
            return Ok(());
        }
        let conn = self.conn()?;
        let manager = zbus::blocking::Proxy::new(&conn, DEST, "/org/freedesktop/systemd1", MANAGER);
        let manager = self.failed(manager, "systemd's manager object")?;
        let shown: Vec<String> = props.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let props: Vec<(&str, zbus::zvariant::Value)> = (props.iter())
            .map(|(k, v)| (*k, zbus::zvariant::Value::from(*v)))
            .collect();
        let r: zbus::Result<()> = manager.call("SetUnitProperties", &(unit, true, props));
        self.failed(r, &format!("SetUnitProperties {unit} {}", shown.join(" ")))
    }
}

/// A service's limit: its values from before and now, or why not (with its values from
/// before, when they were read).
pub type UnitLimited = Result<(UnitLimits, UnitLimits), (Option<UnitLimits>, String)>;

impl super::Placer {
    /// Talk to this systemd instead of the system bus's (tests).
    pub fn with_units(mut self, units: Box<dyn UnitBus>) -> Self {
        self.units = units;
        self
    }

    /// Put a target's limits on the service it runs in. Its current values are read;
    /// `before` (its values from before its first job, if known) defaults to them. A limit
    /// the target does not set keeps the value from before (the operator's own, or
    /// systemd's default). Only properties that differ are set. The values from before, and
    /// those it has now; when the write fails, the values from before all the same (a call
    /// that timed out may have gone through: they must still be put back).
    pub fn limit_unit(
        &self,
        name: &str,
        limits: &Limits,
        before: Option<UnitLimits>,
    ) -> UnitLimited {
        let current = self.units.read(name).map_err(|e| (before, e))?;
        let before = before.unwrap_or(current);
        let now = UnitLimits::from_limits(limits).or(&before);
        (self.units.write(name, &now.changes_from(&current))).map_err(|e| (Some(before), e))?;
        Ok((before, now))
    }

    /// Put back a service's values from before its job.
    pub fn restore_unit(&self, name: &str, before: &UnitLimits) -> Result<(), String> {
        let now = self.units.read(name)?;
        self.units.write(name, &before.changes_from(&now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_become_unit_properties() {
        let l = Limits {
            cpu_quota: Some(50),
            memory_limit: Some(64),
            ..Limits::default()
        };
        let u = UnitLimits::from_limits(&l);
        assert_eq!(u.cpu_quota_per_sec_usec, 500_000);
        assert_eq!(u.memory_max, 67_108_864);
        assert_eq!((u.cpu_weight, u.tasks_max), (UNSET, UNSET));
        assert_eq!(
            u.describe(),
            "CPUQuota=50% CPUWeight=(default) MemoryMax=67108864 TasksMax=infinity"
        );
    }
}
