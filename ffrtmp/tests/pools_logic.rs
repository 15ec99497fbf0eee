//! Pools and the limits in force, as a normal user: the real `Daemon` with a fake cgroup
//! backend and a fixture /proc (`logic_support`). A pooled job's cgroup is made in its pool;
//! a reload, a restart after a config change and another writer's edit all end with the
//! configured limits in the files and in the state file.

mod logic_support;

use std::time::Duration;

use ffrtmp::daemon::ScanRole;
use ffrtmp::record::tally::Count;
use logic_support::{wait_until, Harness, Start};

const T: Duration = Duration::from_secs(5);

const POOLED: &str = "target_commands: [ffmpeg]
default_limits:
  cpu_quota: 200
  memory_limit: 64
pools:
  live:
    limits:
      cpu_quota: 100
commands:
  ffmpeg:
    pool: live
reconcile_interval: 1s
";

/// A daemon with the pool `live`, and a target placed in it: its job cgroup.
fn pooled() -> (Harness, logic_support::Proc, String) {
    let h = Harness::started(POOLED);
    let p = h.exec("ffmpeg", "/");
    let job = format!("/ffrtmp/live/auto-ffmpeg-{}", p.pid);
    h.assert_placed(&p, &job);
    (h, p, job)
}

#[test]
fn a_pooled_job_is_made_in_its_pool_which_has_the_pool_limits() {
    let (h, p, job) = pooled();
    assert_eq!(
        h.backend.file("/ffrtmp/live", "cpu.max").as_deref(),
        Some("100000 100000"),
        "the pool's limit"
    );
    let (limits, _) = h.backend.cgroup(&job).unwrap();
    assert_eq!(limits, ["cpu.max=200000 100000", "memory.max=67108864"]);
    assert!(wait_until(T, || h.state()["processes"][p.pid.to_string()]
        ["cgroup"]
        == job.as_str()));
    // Without pools nothing changes: the job goes under the root, as before.
    let h2 = Harness::new().start(Start::default());
    h2.exec_placed("ffmpeg", "/");
}

#[test]
fn a_reload_reaches_running_jobs_and_pools_and_drift_goes_back_to_the_new_limits() {
    let (h, p, job) = pooled();
    let lower = POOLED
        .replace("cpu_quota: 200\n  memory_limit: 64", "cpu_quota: 100")
        .replace("      cpu_quota: 100", "      cpu_quota: 50");
    h.reload(&lower);
    let file = |cg: &str, f: &str| h.backend.file(cg, f).unwrap_or_default();
    assert!(
        wait_until(T, || file(&job, "cpu.max") == "100000 100000"),
        "the running job keeps {}",
        file(&job, "cpu.max")
    );
    assert!(
        wait_until(T, || file(&job, "memory.max") == "max"),
        "a limit no longer configured goes back to the kernel's default"
    );
    assert!(wait_until(T, || file("/ffrtmp/live", "cpu.max") == "50000 100000"));
    assert!(
        wait_until(T, || h.state()["processes"][p.pid.to_string()]["limits"]
            == serde_json::json!({"cpu_quota": 100})),
        "the state file says the limits in force: {}",
        h.state()["processes"][p.pid.to_string()]
    );
    // A change is not a drift correction.
    assert_eq!(h.with_snapshot(|t| t.tally.get(Count::DriftCorrections)), 0);
    // Another writer: the next pass restores the configured (new) limits, and counts it.
    h.backend.set_file(&job, "cpu.max", "200000 100000");
    h.backend.set_file("/ffrtmp/live", "cpu.max", "max 100000");
    assert!(wait_until(T, || file(&job, "cpu.max") == "100000 100000"));
    assert!(wait_until(T, || file("/ffrtmp/live", "cpu.max") == "50000 100000"));
    assert!(wait_until(T, || h
        .with_snapshot(|t| t.tally.get(Count::DriftCorrections))
        == 2));
}

#[test]
fn a_restart_after_a_config_change_applies_the_new_limits_without_a_move() {
    let mut h = Harness::started("target_commands: [ffmpeg]\ndefault_limits:\n  cpu_quota: 200\n");
    let (p, job) = h.exec_placed("ffmpeg", "/");
    assert!(wait_until(T, || h.state()["processes"][p.pid.to_string()]
        ["limits"]
        == serde_json::json!({"cpu_quota": 200})));
    h.stop();
    let moves = h.backend.moves().len();
    let h2 = h.start(Start {
        yaml: "target_commands: [ffmpeg]\ndefault_limits:\n  cpu_quota: 100\n",
        role: ScanRole::Reconcile,
        ..Default::default()
    });
    assert!(wait_until(T, || h2.governs(p.pid)), "not re-adopted");
    assert!(wait_until(T, || h2
        .backend
        .file(&job, "cpu.max")
        .as_deref()
        == Some("100000 100000")));
    assert!(wait_until(T, || h2.state()["processes"][p.pid.to_string()]
        ["limits"]
        == serde_json::json!({"cpu_quota": 100})));
    assert_eq!(h2.backend.moves().len(), moves, "moved again");
}

#[test]
fn a_job_whose_command_is_no_longer_a_target_keeps_its_limits_until_it_exits() {
    let h = Harness::started(
        "target_commands: [ffmpeg]\ndefault_limits:\n  cpu_quota: 200\nreconcile_interval: 1s\n",
    );
    let (p, job) = h.exec_placed("ffmpeg", "/");
    let scans = h.with_snapshot(|t| t.tally.scans());
    h.reload("target_commands: [x264]\ndefault_limits:\n  cpu_quota: 50\nreconcile_interval: 1s\n");
    // Two passes after the reload (the reload's and one more) have looked at it.
    assert!(h.scans_done(scans + 2));
    assert!(h.governs(p.pid), "still governed");
    assert_eq!(
        h.backend.file(&job, "cpu.max").as_deref(),
        Some("200000 100000"),
        "it keeps the limits in force"
    );
    // And they are still kept against another writer.
    h.backend.set_file(&job, "cpu.max", "max 100000");
    assert!(wait_until(T, || h.backend.file(&job, "cpu.max").as_deref()
        == Some("200000 100000")));
}

#[test]
fn a_pool_no_longer_configured_is_removed_once_empty() {
    let (h, mut p, _) = pooled();
    let scans = h.with_snapshot(|t| t.tally.scans());
    h.reload("target_commands: [ffmpeg]\nreconcile_interval: 1s\n");
    assert!(h.scans_done(scans + 2));
    assert!(
        h.backend.cgroup("/ffrtmp/live").is_some(),
        "removed while its job runs"
    );
    h.exit(&mut p);
    assert!(
        wait_until(T, || h.backend.cgroup("/ffrtmp/live").is_none()),
        "pool left: {:?}",
        h.backend.cgroups()
    );
}

#[test]
fn a_pool_whose_limit_cannot_be_written_is_shown_and_its_failure_counted_each_pass() {
    let h = Harness::new();
    h.backend.behave(|b| b.refused_file = Some("pids.max"));
    let h = h.start(Start {
        yaml: &POOLED.replace(
            "      cpu_quota: 100\n",
            "      cpu_quota: 100\n      pids_max: 64\n",
        ),
        ..Default::default()
    });
    // Shown in the state file (status, /metrics), though not all its limits are in force.
    assert!(
        wait_until(T, || h.state()["pools"]["live"]["cgroup"] == "/ffrtmp/live"),
        "{}",
        h.state()["pools"]
    );
    assert_eq!(
        h.backend.file("/ffrtmp/live", "cpu.max").as_deref(),
        Some("100000 100000")
    );
    // Tried again, and counted, at each pass.
    let failures = |h: &Harness| h.with_snapshot(|t| t.tally.get(Count::LimitFailures));
    assert!(wait_until(Duration::from_secs(10), || failures(&h) >= 3));
}
