//! Root tests of the whole daemon (`ffrtmp watch --fallback-scan`) against the kernel's
//! real cgroups: on this host v1, in the VM tier v2. Targets are uniquely named copies of
//! /bin/sleep or /bin/sh started by the test, so no other process can match.

mod support;

use std::time::Duration;

use ffrtmp::placer::CgroupMode;
use support::*;

const SECS: Duration = Duration::from_secs(10);

fn limits_yaml(name: &str, extra: &str) -> String {
    format!(
        "scan_interval: 200ms\ntarget_commands: [{name}]\ndefault_limits:\n  cpu_quota: 20\n  cpu_weight: 50\n  memory_limit: 64\n  pids_max: 16\n{extra}"
    )
}

#[test]
fn scanned_target_is_placed_with_its_limits_and_bystanders_are_not() {
    require!(Root);
    let (dir, mut root, name, target) = Fixture::new("t", "/bin/sleep").parts();
    let bystander = named_copy(dir.path(), "/bin/sleep", &format!("other-{}", unique()));
    let pid = root.own(spawn_in(&target, &["60"], dir.path()));
    let other = root.own(spawn_in(&bystander, &["60"], dir.path()));
    let before_other = std::fs::read_to_string(format!("/proc/{other}/cgroup")).unwrap();

    let d = scanning(&dir, &root, &limits_yaml(&name, ""));
    let job = root.job(&format!("auto-{name}-{pid}"));
    d.expect(
        SECS,
        || root.is_in(pid, &job),
        &format!("target not placed in {job}"),
    );
    match root.mode() {
        CgroupMode::V1 => {
            assert_eq!(root.read(&job, "cpu", "cpu.cfs_quota_us"), "20000");
            assert_eq!(root.read(&job, "cpu", "cpu.cfs_period_us"), "100000");
            assert_eq!(root.read(&job, "cpu", "cpu.shares"), "512");
            assert_eq!(
                root.read(&job, "memory", "memory.limit_in_bytes"),
                "67108864"
            );
            assert_eq!(root.read(&job, "pids", "pids.max"), "16");
        }
        CgroupMode::V2 => {
            assert_eq!(root.read(&job, "", "cpu.max"), "20000 100000");
            assert_eq!(root.read(&job, "", "cpu.weight"), "50");
            assert_eq!(root.read(&job, "", "memory.max"), "67108864");
            assert_eq!(root.read(&job, "", "pids.max"), "16");
        }
    }
    d.logs(&format!(
        "Attaching to PID {pid} ({name}) as job auto-{name}-{pid}"
    ));
    d.logs(&format!("Limits applied to PID {pid}"));
    d.logs("Discovered 1 new process(es)");
    d.logs("Scan complete: new=");
    // /metrics and /healthz show what just happened.
    let url = d
        .metrics_url()
        .expect("the daemon logs where it serves metrics");
    let (code, metrics) = http_get(&format!("{url}/metrics"));
    assert_eq!(code, 200);
    assert!(
        metrics.contains("ffrtmp_governed_processes 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ffrtmp_placements_total{result=\"placed\"} 1\n"),
        "{metrics}"
    );
    let job_labels = format!("{{job_id=\"auto-{name}-{pid}\",command=\"{name}\",pid=\"{pid}\"}}");
    assert!(
        metrics.contains(&format!("ffrtmp_job_memory_bytes{job_labels}")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("ffrtmp_job_cpu_seconds_total{job_labels}")),
        "{metrics}"
    );
    assert!(
        !metrics.contains("ffrtmp_scan_duration_seconds_count 0\n"),
        "{metrics}"
    );
    let (code, health) = http_get(&format!("{url}/healthz"));
    assert_eq!(code, 200);
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["governed"], 1);

    // The marker: a target started now is placed once the engine is done with what the
    // startup scan found (the bystander among it).
    let marker = root.own(spawn_in(&target, &["60"], dir.path()));
    d.logs(&format!("Limits applied to PID {marker} "));
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{other}/cgroup")).unwrap(),
        before_other,
        "bystander moved"
    );
    let (code, log) = d.stop_code();
    assert_eq!(code, Some(0), "{log}");
    // Stopping the daemon leaves the governed process running, in its cgroup.
    assert!(root.is_in(pid, &job), "{log}");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("state.json")).unwrap()).unwrap();
    let rec = &state["processes"][pid.to_string()];
    assert_eq!(rec["job_id"], format!("auto-{name}-{pid}"));
    assert_eq!(rec["cgroup"], job);
    assert!(rec["start_time"].as_u64().is_some());
    assert_eq!(rec["limits"]["cpu_quota"], 20);
    assert!(state["statistics"]["total_attachments"].as_u64() >= Some(1));
}

/// A cgroup of the job's name left empty by a placement a killed daemon cut short (v1
/// renames a spare hierarchy by hierarchy) gives way: the target gets its job cgroup, not
/// the spare's name (found by `ten_kill_9_while_targets_start_place_each_target_once`).
#[test]
fn an_empty_leftover_of_the_jobs_name_gives_way() {
    require!(Root);
    let (dir, mut root, name, target) = Fixture::new("g", "/bin/sleep").parts();
    let pid = root.own(spawn_in(&target, &["60"], dir.path()));
    root.backend.create(&job(&root, &name, pid)).unwrap();
    let d = scanning(&dir, &root, &limits_yaml(&name, ""));
    placed(&d, &root, &name, pid);
    d.logs(&format!("Limits applied to PID {pid} "));
    if root.mode() == CgroupMode::V1 {
        // v1 places in a spare and renames it; v2 makes the job's cgroup (it exists).
        d.logs("left by a placement cut short, to give job");
    }
}

#[test]
fn memory_limit_oom_kills_inside_the_job() {
    require!(Root);
    let (dir, mut root, name, sh) = Fixture::new("m", "/bin/sh").parts();
    // Waits to be placed (the test creates `go`), then grows without bound: `tail` keeps
    // the whole "line" of /dev/zero in memory.
    let (go, script) = after_go(&dir, "exec tail /dev/zero");
    let mut child = spawn_in(&sh, &["-c", &script], dir.path());
    let pid = child.id();
    let d = scanning(&dir, &root, &limits_yaml(&name, ""));
    placed(&d, &root, &name, pid);
    std::fs::write(&go, "").unwrap();
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "expected an OOM kill, got {status:?}"
    );
    d.logs(&format!("PID {pid} ({name}) exited"));
    root.own(child);
}

#[test]
fn pids_max_stops_forks() {
    require!(Root);
    let (dir, mut root, name, sh) = Fixture::new("p", "/bin/sh").parts();
    // 12 forks under pids_max 5: the kernel must refuse some (the shell may die of it).
    let (go, script) = after_go(
        &dir,
        "i=0; while [ $i -lt 12 ]; do sleep 30 & i=$((i+1)); done; sleep 30",
    );
    let pid = root.own(spawn_in(&sh, &["-c", &script], dir.path()));
    let yaml = format!(
        "scan_interval: 200ms\ntarget_commands: [{name}]\ndefault_limits:\n  pids_max: 5\n"
    );
    let d = scanning(&dir, &root, &yaml);
    let job = placed(&d, &root, &name, pid);
    assert_eq!(root.read(&job, "pids", "pids.max"), "5");
    std::fs::write(&go, "").unwrap();
    let refused = || -> u64 {
        let events = root.read(&job, "pids", "pids.events");
        events.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    assert!(wait_until(SECS, || refused() > 0), "no fork was refused");
    let current: u64 = root.read(&job, "pids", "pids.current").parse().unwrap();
    assert!(current <= 5, "pids.current {current} > pids.max 5");
    drop(d);
}

#[test]
fn restart_readopts_without_moving_and_reused_pids_are_not_adopted() {
    require!(Root);
    let (dir, mut root, name, target) = Fixture::new("r", "/bin/sleep").parts();
    let pid = root.own(spawn_in(&target, &["60"], dir.path()));
    let yaml = limits_yaml(&name, "");
    let d = scanning(&dir, &root, &yaml);
    let job = placed(&d, &root, &name, pid);
    let config = d.config.clone();
    let (code, _) = d.stop_code();
    assert_eq!(code, Some(0));
    assert!(root.is_in(pid, &job));

    // A stale entry: a process we start under another name, recorded with the wrong start
    // time — as if its PID had belonged to an earlier, governed process.
    let stranger = named_copy(dir.path(), "/bin/sleep", &format!("stranger-{}", unique()));
    let spid = root.own(spawn_in(&stranger, &["60"], dir.path()));
    let state_path = dir.path().join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    let fake_job = root.job(&format!("auto-{name}-{spid}"));
    state["processes"][spid.to_string()] = serde_json::json!({
        "pid": spid, "job_id": format!("auto-{name}-{spid}"), "command": name,
        "discovered_at": "2026-01-01T00:00:00Z", "start_time": 1, "cgroup": fake_job,
    });
    std::fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();
    let stranger_cgroup = std::fs::read_to_string(format!("/proc/{spid}/cgroup")).unwrap();

    let d2 = Daemon::again(
        config,
        state_path.clone(),
        dir.path().join("second.log"),
        Daemon::new(dir.path(), &root, "").fallback_scan(),
    );
    d2.logs("State loaded from");
    d2.logs(&format!("Re-adopted PID {pid}"));
    d2.logs(&format!("Dropping PID {spid}"));
    d2.logs("Scan complete");
    let (_, log) = d2.stop_code();
    assert!(
        !log.contains(&format!("Attaching to PID {pid}")),
        "re-adopted process was placed again:\n{log}"
    );
    assert!(root.is_in(pid, &job));
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{spid}/cgroup")).unwrap(),
        stranger_cgroup,
        "stranger was moved"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    assert!(state["processes"].get(pid.to_string()).is_some());
    assert!(
        state["processes"].get(spid.to_string()).is_none(),
        "reused PID kept in state"
    );
}

#[test]
fn processes_that_exit_mid_placement_are_not_failures() {
    require!(Root);
    let (dir, mut root, name, target) = Fixture::new("e", "/bin/sleep").parts();
    let yaml = format!("scan_interval: 100ms\ntarget_commands: [{name}]\ndefault_limits:\n  cpu_quota: 50\n  memory_limit: 64\n");
    let d = scanning(&dir, &root, &yaml);
    d.logs("Scan complete");
    // A stream of short-lived targets: many exit while being read or placed.
    for _ in 0..300 {
        let c = spawn_in(&target, &["0.01"], dir.path());
        root.own(c);
        std::thread::sleep(Duration::from_millis(3));
    }
    // The marker: a longer-lived target started last is placed, and logged, once every
    // earlier one was handled.
    let marker = root.own(spawn_in(&target, &["5"], dir.path()));
    d.logs(&format!("Limits applied to PID {marker} "));
    let (code, log) = d.stop_code();
    assert_eq!(code, Some(0));
    assert!(
        !log.contains("ERROR"),
        "an exiting process was reported as a failure:\n{log}"
    );
    assert!(!log.contains("degraded"), "{log}");
}

#[test]
fn placement_happens_at_min_runtime_not_a_scan_later() {
    require!(Root);
    let (dir, mut root, name, target) = Fixture::new("n", "/bin/sleep").parts();
    // Scans are 30 s apart. The startup scan sees the target young; only the min_runtime
    // timer can place it in time (a scan-driven placement would come 30 s later).
    let yaml =
        format!("scan_interval: 30s\ntarget_commands: [{name}]\nfilters:\n  min_runtime: 3s\n");
    // Before the spawn: the target's age counts from its fork (in 10 ms ticks, rounded
    // down), so the bound below holds however long the spawn takes.
    let started = std::time::Instant::now();
    let pid = root.own(spawn_in(&target, &["60"], dir.path()));
    let d = scanning(&dir, &root, &yaml);
    placed(&d, &root, &name, pid);
    let placed_after = started.elapsed();
    assert!(
        placed_after >= Duration::from_millis(2980),
        "placed before min_runtime: {placed_after:?}"
    );
    assert!(
        placed_after < Duration::from_secs(8),
        "placed late: {placed_after:?}\n{}",
        d.log_text()
    );
    assert!(d.log_text().contains("has not run min_runtime yet"));
}

#[test]
fn filters_keep_blocked_dirs_out_by_path_component() {
    require!(Root);
    let (dir, mut root, name, target) = Fixture::new("f", "/bin/sleep").parts();
    let blocked = dir.path().join("blocked");
    let blocked_sub = blocked.join("sub");
    let sibling = dir.path().join("blockedx"); // shares a string prefix, not a component
    for d in [&blocked_sub, &sibling] {
        std::fs::create_dir_all(d).unwrap();
    }
    let in_sub = root.own(spawn_in(&target, &["60"], &blocked_sub));
    let in_sibling = root.own(spawn_in(&target, &["60"], &sibling));
    let yaml = format!(
        "scan_interval: 200ms\ntarget_commands: [{name}]\nfilters:\n  blocked_dirs: [{}]\n",
        blocked.display()
    );
    let d = scanning(&dir, &root, &yaml);
    d.expect(
        SECS,
        || root.is_in(in_sibling, &root.job(&format!("auto-{name}-{in_sibling}"))),
        "not placed in its job cgroup",
    );
    d.logs(&format!("Skipping PID {in_sub}"));
    assert!(!root.exists(&root.job(&format!("auto-{name}-{in_sub}"))));
}

#[test]
fn drift_is_detected_and_corrected() {
    require!(Root);
    let (dir, mut root, name, target) = Fixture::new("d", "/bin/sleep").parts();
    let pid = root.own(spawn_in(&target, &["60"], dir.path()));
    // Drift is found by the reconciliation pass (every scan_interval when scanning, every
    // reconcile_interval with eBPF events).
    let d = Daemon::new(
        dir.path(),
        &root,
        &limits_yaml(&name, "reconcile_interval: 1s\n"),
    )
    .fallback_scan()
    .start();
    let job = placed(&d, &root, &name, pid);
    // Only once the daemon has verified its own move: a move before that is a failed
    // placement (retried), not drift.
    d.logs(&format!("Limits applied to PID {pid} "));
    // Another writer moves it into a sibling cgroup of our own.
    let elsewhere = root.job("elsewhere");
    root.backend.create(&elsewhere).unwrap();
    root.backend.move_process(&elsewhere, pid).unwrap();
    assert!(root.is_in(pid, &elsewhere));
    d.logs(&format!(
        "PID {pid} (job auto-{name}-{pid}) was moved out of"
    ));
    d.expect(SECS, || root.is_in(pid, &job), "not moved back");
    let (_, _) = d.stop_code();
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("state.json")).unwrap()).unwrap();
    assert!(state["statistics"]["total_drift_corrections"].as_u64() >= Some(1));
}

#[test]
fn a_corrupt_state_file_is_set_aside_and_the_daemon_runs() {
    require!(Root);
    let root = TestRoot::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("state.json"),
        "{\"processes\": {\"1\": {\"pid\": ",
    )
    .unwrap();
    let d = Daemon::new(
        dir.path(),
        &root,
        "scan_interval: 200ms\ntarget_commands: [ffrt-none]\n",
    )
    .fallback_scan()
    .start();
    d.logs("Scan complete");
    let (code, log) = d.stop_code();
    assert_eq!(code, Some(0));
    assert!(log.contains("is unusable"), "{log}");
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.json.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1);
    let fresh: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("state.json")).unwrap()).unwrap();
    assert_eq!(fresh["version"], 2);
}

#[test]
fn dry_run_changes_nothing() {
    require!(Root);
    let (dir, mut root, name, target) = Fixture::new("y", "/bin/sleep").parts();
    let pid = root.own(spawn_in(&target, &["60"], dir.path()));
    let before = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let d = Daemon::new(dir.path(), &root, &limits_yaml(&name, ""))
        .fallback_scan()
        .args(&["--dry-run"])
        .start();
    d.logs(&format!("dry-run: would place PID {pid}"));
    let (code, _) = d.stop_code();
    assert_eq!(code, Some(0));
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap(),
        before
    );
    assert!(!root.exists(&root.job(&format!("auto-{name}-{pid}"))));
    assert!(
        !dir.path().join("state.json").exists(),
        "dry-run wrote the state file"
    );
}

#[test]
fn sighup_reloads_and_a_bad_config_keeps_the_old_one() {
    require!(Root);
    // The second name becomes a target by the reload; the first never runs.
    let (dir, mut root, second, t2) = Fixture::new("i", "/bin/sleep").parts();
    let first = format!("{}h", tag());
    let d = scanning(&dir, &root, &limits_yaml(&first, ""));
    d.logs("Scan complete");
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    // A bad config: rejected, the daemon keeps running with the old one.
    std::fs::write(&d.config, cfg.replace("cpu_weight: 50", "cpu_weight: 0")).unwrap();
    d.signal(libc::SIGHUP);
    d.logs("Reload rejected, keeping the current configuration");
    assert!(d.log_text().contains("cpu_weight"));
    // A good one takes effect: the second name becomes a target.
    std::fs::write(&d.config, cfg.replace(&first, &second)).unwrap();
    let pid = root.own(spawn_in(&t2, &["60"], dir.path()));
    d.signal(libc::SIGHUP);
    d.logs("Configuration reloaded");
    d.expect(
        SECS,
        || root.is_in(pid, &root.job(&format!("auto-{second}-{pid}"))),
        "not placed in its job cgroup",
    );
}

#[test]
fn ffrtmp_run_beside_the_daemon_leaves_its_spare_cgroups_alone() {
    require!(Root);
    let (dir, mut root, name, target) = Fixture::new("w", "/bin/sleep").parts();
    let d = scanning(&dir, &root, &limits_yaml(&name, ""));
    d.logs("Scan complete");
    let spares = || -> Vec<String> {
        let names = root.backend.children(&root.path).unwrap();
        names
            .into_iter()
            .filter(|n| n.starts_with("spare-"))
            .collect()
    };
    let before = spares();
    if root.backend.supports_rename() {
        assert!(!before.is_empty(), "the daemon keeps spare cgroups on v1");
    }
    // `ffrtmp run` prepares the same root while the daemon holds spare cgroups there.
    succeeds(ffrtmp_cmd().args([
        "run",
        "--cgroup-root",
        &root.path,
        "--job-id",
        "beside",
        "--",
        "true",
    ]));
    assert_eq!(
        spares(),
        before,
        "ffrtmp run removed the daemon's spare cgroups"
    );
    // The daemon still places the next targets, with their limits.
    for _ in 0..3 {
        let pid = root.own(spawn_in(&target, &["60"], dir.path()));
        let job = placed(&d, &root, &name, pid);
        assert_eq!(root.backend.read_limits(&job).memory_limit, Some(64));
    }
    let (_, log) = d.stop_code();
    assert!(!log.contains("Failed to place"), "{log}");
}

/// A job cgroup the placement thread has just made is empty until its move is done (on
/// cgroup v2 the move waits for an RCU grace period): the scan's leftover sweep must not
/// take it for a leftover and remove it under the placement (seen in the systemd VM tier:
/// `Failed to place …: cgroup.procs: No such file or directory`).
#[test]
fn a_fresh_empty_job_cgroup_is_not_swept_as_a_leftover() {
    require!(Root);
    let root = TestRoot::new();
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::new(
        dir.path(),
        &root,
        "scan_interval: 1s\nreconcile_interval: 1s\ntarget_commands: [ffrt-none]\n",
    )
    .fallback_scan()
    .start();
    d.logs("Scan complete");
    let job = root.job("auto-ffrt-none-4194000");
    root.backend.create(&job).unwrap();
    let before = scans_in(&d.log_text());
    d.expect(
        SECS,
        || scans_in(&d.log_text()) >= before + 2,
        "two reconciliation scans",
    );
    let still = root.backend.procs(&job).is_ok();
    let (_, log) = d.stop_code();
    let _ = root.backend.remove(&job);
    assert!(
        still,
        "a fresh job cgroup was removed as a leftover:\n{log}"
    );
    assert!(!log.contains("Removed leftover cgroup"), "{log}");
}

/// Job cgroups are removed on the kernel's word (EBUSY while a process is inside), without
/// reading `cgroup.procs` first. On v1 a move goes hierarchy by hierarchy: a cgroup with a
/// process in the first hierarchy only (one on its way in) must stay whole in every
/// hierarchy, and go from all of them once it is empty.
#[test]
fn a_job_cgroup_is_removed_only_once_no_hierarchy_holds_a_process() {
    require!(Root);
    let root = TestRoot::new();
    let placer = ffrtmp::placer::Placer::new(
        ffrtmp::placer::detect().unwrap(),
        root.path.clone(),
        ffrtmp::process::ProcFs::system(),
    );
    let job = root.job(&format!("rm-{}", unique()));
    root.backend.create(&job).unwrap();
    let mut child = std::process::Command::new("/bin/sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let files = root.backend.procs_files(&job);
    std::fs::write(&files[0], child.id().to_string()).unwrap();
    assert!(
        !placer.remove_if_empty(&job).unwrap(),
        "removed with PID {} in {}",
        child.id(),
        files[0].display()
    );
    for f in &files {
        assert!(
            f.exists(),
            "{} is gone while {} holds PID {}",
            f.display(),
            files[0].display(),
            child.id()
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(wait_until(SECS, || placer
        .remove_if_empty(&job)
        .unwrap_or(false)));
    for f in &files {
        assert!(!f.exists(), "{} left behind", f.display());
    }
}
