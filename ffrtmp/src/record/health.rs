//! Health from consecutive failures: a pure state machine; the daemon logs transitions.

use serde::Serialize;

/// Consecutive failures (scans or placements) after which the daemon is degraded.
pub const DEGRADED_AFTER: u32 = 3;
/// … and unhealthy.
pub const UNHEALTHY_AFTER: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Healthy,
    Degraded,
    Unhealthy,
}

impl std::fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Unhealthy => "unhealthy",
        })
    }
}

/// The status for a pair of consecutive-failure counts.
pub fn status_for(scan_failures: u32, attach_failures: u32) -> HealthStatus {
    let worst = scan_failures.max(attach_failures);
    if worst >= UNHEALTHY_AFTER {
        HealthStatus::Unhealthy
    } else if worst >= DEGRADED_AFTER {
        HealthStatus::Degraded
    } else {
        HealthStatus::Healthy
    }
}

#[derive(Debug, Clone)]
pub struct Health {
    pub scan_failures: u32,
    pub attach_failures: u32,
    /// Consecutive placements that left some limit unapplied (e.g. a controller missing):
    /// the process is governed, not fully — degraded, never unhealthy.
    pub limits_missing: u32,
    /// The exec event source stopped; the daemon only scans now (slower to place).
    pub source_lost: bool,
    pub status: HealthStatus,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            scan_failures: 0,
            attach_failures: 0,
            limits_missing: 0,
            source_lost: false,
            status: HealthStatus::Healthy,
        }
    }
}

impl Health {
    /// Record a scan; returns the new status if it changed.
    pub fn scan(&mut self, ok: bool) -> Option<HealthStatus> {
        self.scan_failures = if ok { 0 } else { self.scan_failures + 1 };
        self.update()
    }

    /// Record a placement; returns the new status if it changed.
    pub fn placement(&mut self, ok: bool) -> Option<HealthStatus> {
        self.attach_failures = if ok { 0 } else { self.attach_failures + 1 };
        self.update()
    }

    /// Record a placement that was made but left `missing` limits unapplied.
    pub fn limits(&mut self, missing: usize) -> Option<HealthStatus> {
        self.limits_missing = if missing == 0 {
            0
        } else {
            self.limits_missing + 1
        };
        self.update()
    }

    /// Record whether the exec event source works.
    pub fn source(&mut self, working: bool) -> Option<HealthStatus> {
        self.source_lost = !working;
        self.update()
    }

    fn update(&mut self) -> Option<HealthStatus> {
        let mut s = status_for(self.scan_failures, self.attach_failures);
        if s == HealthStatus::Healthy && (self.limits_missing > 0 || self.source_lost) {
            s = HealthStatus::Degraded;
        }
        if s != self.status {
            self.status = s;
            Some(s)
        } else {
            None
        }
    }

    /// The predecessor's log line: `Health status: degraded (scan failures: 3, attach failures: 0)`.
    pub fn line(&self) -> String {
        match self.status {
            HealthStatus::Healthy => "Health status: healthy".into(),
            s if self.source_lost => format!(
                "Health status: {s} (scan failures: {}, attach failures: {}, exec event source lost: scanning only)",
                self.scan_failures, self.attach_failures
            ),
            s if self.limits_missing > 0 => format!(
                "Health status: {s} (scan failures: {}, attach failures: {}, placements missing a limit: {})",
                self.scan_failures, self.attach_failures, self.limits_missing
            ),
            s => format!(
                "Health status: {s} (scan failures: {}, attach failures: {})",
                self.scan_failures, self.attach_failures
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table() {
        let cases = [
            (0, 0, HealthStatus::Healthy),
            (2, 0, HealthStatus::Healthy),
            (3, 0, HealthStatus::Degraded),
            (0, 3, HealthStatus::Degraded),
            (9, 9, HealthStatus::Degraded),
            (10, 0, HealthStatus::Unhealthy),
            (0, 25, HealthStatus::Unhealthy),
        ];
        for (s, a, want) in cases {
            assert_eq!(status_for(s, a), want, "{s} {a}");
        }
    }

    #[test]
    fn transitions_are_reported_once() {
        let mut h = Health::default();
        assert_eq!(h.placement(false), None);
        assert_eq!(h.placement(false), None);
        assert_eq!(h.placement(false), Some(HealthStatus::Degraded));
        assert_eq!(
            h.line(),
            "Health status: degraded (scan failures: 0, attach failures: 3)"
        );
        assert_eq!(h.placement(false), None);
        assert_eq!(
            h.scan(true),
            None,
            "a good scan does not clear placement failures"
        );
        assert_eq!(h.placement(true), Some(HealthStatus::Healthy));
        assert_eq!(h.line(), "Health status: healthy");
        for _ in 0..9 {
            h.scan(false);
        }
        assert_eq!(h.scan(false), Some(HealthStatus::Unhealthy));
    }

    #[test]
    fn missing_limits_degrade_but_never_make_unhealthy() {
        let mut h = Health::default();
        assert_eq!(h.placement(true), None);
        assert_eq!(h.limits(1), Some(HealthStatus::Degraded));
        for _ in 0..20 {
            h.placement(true);
            h.limits(1);
        }
        assert_eq!(h.status, HealthStatus::Degraded);
        assert!(
            h.line().contains("placements missing a limit: 21"),
            "{}",
            h.line()
        );
        assert_eq!(h.limits(0), Some(HealthStatus::Healthy));
    }
}
