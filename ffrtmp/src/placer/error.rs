//! `PlaceError` and the errno classification that decides retry vs give up.

use std::io;

/// The step of a placement that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Pin,
    PrepareRoot,
    CreateCgroup,
    WriteLimit,
    Move,
    Verify,
    Remove,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            Step::Pin => "pin process",
            Step::PrepareRoot => "prepare cgroup root",
            Step::CreateCgroup => "create cgroup",
            Step::WriteLimit => "write limit",
            Step::Move => "move process",
            Step::Verify => "verify placement",
            Step::Remove => "remove cgroup",
        })
    }
}

/// What to do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The process left: not a failure.
    Vanished,
    /// Transient: retry with backoff.
    Retryable,
    /// Will not get better by itself: log with the fix, count, give up.
    Permanent,
}

/// Classify by errno, never by message text.
pub fn classify(errno: Option<i32>) -> Class {
    match errno {
        Some(libc::ESRCH) => Class::Vanished,
        Some(libc::EAGAIN | libc::EBUSY | libc::EINTR | libc::ENOMEM) => Class::Retryable,
        _ => Class::Permanent,
    }
}

/// Backoff before retry `attempt` (1-based): 50 ms doubling, capped at 5 s, with ±50 % jitter.
pub fn backoff(attempt: u32, jitter_seed: u64) -> std::time::Duration {
    let base = 50u64
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(5_000);
    // xorshift of the seed: cheap jitter without a RNG dependency.
    let mut x = jitter_seed | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let factor = 50 + (x % 101); // 50..=150 %
    std::time::Duration::from_millis(base * factor / 100)
}

/// The operator's fix for a permanent errno.
pub fn fix_for(errno: Option<i32>, path: &str) -> Option<String> {
    Some(match errno? {
        libc::EACCES | libc::EPERM => format!(
            "ffrtmp may not write {path}: run it as root, or under systemd with Delegate=yes and cgroup_root inside its delegated subtree"
        ),
        libc::EROFS => format!(
            "{path} is on a read-only cgroup filesystem (common in containers): run ffrtmp on the host or mount cgroupfs read-write"
        ),
        libc::ENOSPC => format!(
            "the kernel refused a new cgroup at {path} (cgroup.max.descendants or max depth reached): raise the limit or remove leftover cgroups"
        ),
        libc::EINVAL => format!("the kernel rejected the value written to {path}"),
        _ => return None,
    })
}

/// A failed placement step.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{step} failed: {detail}{}", fix.as_ref().map(|f| format!(" — fix: {f}")).unwrap_or_default())]
pub struct PlaceError {
    pub step: Step,
    pub class: Class,
    pub errno: Option<i32>,
    pub detail: String,
    pub fix: Option<String>,
}

impl PlaceError {
    /// From an I/O error on `path` during `step`.
    pub fn io(step: Step, path: &str, e: &io::Error) -> Self {
        let errno = e.raw_os_error();
        PlaceError {
            step,
            class: classify(errno),
            errno,
            detail: format!("{path}: {e}"),
            fix: fix_for(errno, path),
        }
    }

    /// A controller the limits need is not available where the job cgroups live.
    pub fn missing_controller(controller: &str, detail: String, fix: String) -> Self {
        PlaceError {
            step: Step::PrepareRoot,
            class: Class::Permanent,
            errno: None,
            detail: format!("the {controller} controller is not available: {detail}"),
            fix: Some(fix),
        }
    }

    pub fn permanent(step: Step, detail: String) -> Self {
        PlaceError {
            step,
            class: Class::Permanent,
            errno: None,
            detail,
            fix: None,
        }
    }

    pub fn vanished(step: Step, detail: String) -> Self {
        PlaceError {
            step,
            class: Class::Vanished,
            errno: Some(libc::ESRCH),
            detail,
            fix: None,
        }
    }
}

/// A cgroups-rs error at `step` on the file `shown`: its OS error classified when it
/// keeps one, else permanent.
pub fn from_cgroups_rs(step: Step, shown: &str, e: &cgroups_rs::error::Error) -> PlaceError {
    match cgroups_rs_io(e) {
        Some(io) => PlaceError::io(step, shown, io),
        None => PlaceError::permanent(step, format!("{shown}: {e}")),
    }
}

/// The io::Error inside a cgroups-rs error, if any (it keeps the OS error as its cause).
pub fn cgroups_rs_io(e: &cgroups_rs::error::Error) -> Option<&io::Error> {
    std::error::Error::source(e)?.downcast_ref::<io::Error>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_classes() {
        assert_eq!(classify(Some(libc::ESRCH)), Class::Vanished);
        for e in [libc::EAGAIN, libc::EBUSY, libc::EINTR, libc::ENOMEM] {
            assert_eq!(classify(Some(e)), Class::Retryable, "{e}");
        }
        for e in [
            libc::EACCES,
            libc::EPERM,
            libc::EROFS,
            libc::EINVAL,
            libc::ENOSPC,
        ] {
            assert_eq!(classify(Some(e)), Class::Permanent, "{e}");
        }
        assert_eq!(classify(None), Class::Permanent);
    }

    #[test]
    fn backoff_doubles_with_bounded_jitter() {
        use std::time::Duration;
        for seed in [1u64, 7, 12345, u64::MAX] {
            for attempt in 1..=12 {
                let base = (50u64 << (attempt - 1)).min(5000);
                let d = backoff(attempt, seed);
                assert!(
                    d >= Duration::from_millis(base / 2),
                    "{attempt} {seed} {d:?}"
                );
                assert!(
                    d <= Duration::from_millis(base * 3 / 2),
                    "{attempt} {seed} {d:?}"
                );
            }
        }
        assert_ne!(backoff(3, 1), backoff(3, 2), "jitter varies with the seed");
    }

    #[test]
    fn permanent_errors_carry_a_fix() {
        let e = PlaceError::io(
            Step::Move,
            "/sys/fs/cgroup/x/cgroup.procs",
            &io::Error::from_raw_os_error(libc::EACCES),
        );
        assert_eq!(e.class, Class::Permanent);
        assert!(e.to_string().contains("fix: ffrtmp may not write"), "{e}");
        let e = PlaceError::io(Step::Move, "p", &io::Error::from_raw_os_error(libc::EROFS));
        assert!(e.to_string().contains("read-only"), "{e}");
        let e = PlaceError::io(Step::Move, "p", &io::Error::from_raw_os_error(libc::EBUSY));
        assert_eq!(e.class, Class::Retryable);
        assert!(e.fix.is_none());
    }

    #[test]
    fn cgroups_rs_errors_keep_their_errno() {
        let dir = tempfile::tempdir().unwrap();
        // A PidController rooted at a directory without pids.max: the write creates the file,
        // so use a missing directory to get a real ENOENT through cgroups-rs.
        let ctl = cgroups_rs::pid::PidController::new(dir.path().join("missing"), false);
        let e = ctl.set_pid_max(cgroups_rs::MaxValue::Value(5)).unwrap_err();
        assert_eq!(
            cgroups_rs_io(&e).and_then(|e| e.raw_os_error()),
            Some(libc::ENOENT)
        );
    }
}
