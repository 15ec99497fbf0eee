//! The daemon's decision paths, as a normal user: the real `Daemon` (record loop, engine
//! thread, housekeeping) driven by a channel source, with a fake cgroup backend and a
//! fixture /proc (`logic_support`). Processes are real children, so pidfds, exits and
//! SIGSTOP/SIGCONT are the kernel's. Each test waits for a condition (generous timeouts):
//! none of them measures speed.

mod logic_support;

use std::sync::Arc;
use std::time::Duration;

use ffrtmp::daemon::ScanRole;
use ffrtmp::process::StopLedger;
use ffrtmp::record::tally::Count;
use ffrtmp::sources::SourceEvent;
use logic_support::{real_state, wait_until, Harness, Start};

const T: Duration = Duration::from_secs(5);

#[test]
fn an_exec_notice_is_placed_with_its_limits_recorded_and_counted() {
    let h = Harness::started(
        "target_commands: [ffmpeg]\ndefault_limits:\n  cpu_quota: 150\n  memory_limit: 64\n",
    );
    let p = h.exec("ffmpeg", "/user.slice/session-1.scope");
    let bystander = h.exec("bash", "/user.slice/session-1.scope");
    let job = Harness::job(&p);
    h.assert_placed(&p, &job);
    let (limits, procs) = h.backend.cgroup(&job).unwrap();
    assert_eq!(
        limits,
        ["cpu.max=150000 100000", "memory.max=67108864"],
        "only the configured limits are written"
    );
    assert_eq!(procs, [p.pid]);
    assert!(wait_until(T, || h.governs(p.pid)));
    assert!(wait_until(T, || h.state()["processes"][p.pid.to_string()]
        ["job_id"]
        == job.trim_start_matches("/ffrtmp/")));
    assert_eq!(
        bystander.cgroup(),
        "/user.slice/session-1.scope",
        "a non-target is never moved"
    );
    assert_eq!(h.backend.moves().len(), 1);
    h.with_snapshot(|t| {
        assert_eq!(t.tally.placements()["placed"], 1);
        assert_eq!(
            t.tally.exec_to_placed.count(),
            1,
            "an exec event gives a latency sample"
        );
    });
    assert_eq!(
        h.with_snapshot(|t| t.execs.clone()),
        vec![("ebpf", 2)],
        "both notices were taken"
    );
}

#[test]
fn a_stopped_target_is_resumed_only_after_its_move() {
    let h = Harness::started("target_commands: [ffmpeg]\nplacement: strict\n");
    let p = h.spawn("ffmpeg", "/", 0);
    h.send(h.stopped_notice(&p));
    h.assert_placed(&p, &Harness::job(&p));
    assert!(wait_until(T, || real_state(p.pid) != b'T'), "left stopped");
    let moves = h.backend.moves();
    assert_eq!(
        moves[0].state, b'T',
        "it was still stopped when it was moved: {moves:?}"
    );
    assert!(
        wait_until(T, || h.ledger.is_empty()),
        "the ledger entry is cleared"
    );
}

/// Every path out of a stopped process's handling resumes it: not a target after all,
/// deferred by min_runtime, in a container, a dry run.
#[test]
fn a_stopped_process_is_resumed_whatever_the_decision() {
    let h = Harness::started("target_commands: [ffmpeg, x264]\nplacement: strict\ncommands:\n  x264:\n    filters:\n      min_runtime: 1h\n");
    let stranger = h.spawn("ffmpeg-impostor", "/", 0);
    let young = h.spawn("x264", "/", 0);
    let contained = h.spawn("ffmpeg", "/system.slice/docker-0123.scope", 1);
    for p in [&stranger, &young, &contained] {
        h.send(h.stopped_notice(p));
    }
    for p in [&stranger, &young, &contained] {
        assert!(
            wait_until(T, || real_state(p.pid) != b'T'),
            "PID {} left stopped",
            p.pid
        );
    }
    assert!(h.backend.moves().is_empty(), "{:?}", h.backend.moves());
    assert!(wait_until(T, || h.ledger.is_empty()));
}

#[test]
fn a_dry_run_moves_nothing_and_resumes_what_it_was_handed() {
    let h = Harness::new().start(Start {
        dry_run: true,
        ..Default::default()
    });
    let p = h.spawn("ffmpeg", "/", 0);
    h.send(h.stopped_notice(&p));
    assert!(wait_until(T, || real_state(p.pid) != b'T'));
    // The marker: a second stopped target, resumed once the engine is done with both.
    let marker = h.spawn("ffmpeg", "/", 0);
    h.send(h.stopped_notice(&marker));
    assert!(wait_until(T, || real_state(marker.pid) != b'T'));
    assert!(h.backend.moves().is_empty());
    assert_eq!(p.cgroup(), "/");
    assert!(!h.state_path.exists(), "a dry run writes no state");
}

/// A placement stuck longer than strict_timeout: the stopped process is resumed unplaced
/// (counted), and placed when the move goes through.
#[test]
fn strict_timeout_resumes_a_target_whose_placement_is_stuck() {
    let h = Harness::new();
    h.backend.behave(|b| b.move_delay = Duration::from_secs(3));
    let h = h.start(Start {
        yaml: "target_commands: [ffmpeg]\nplacement: strict\nstrict_timeout: 300ms\n",
        ..Default::default()
    });
    let p = h.spawn("ffmpeg", "/", 0);
    h.send(h.stopped_notice(&p));
    assert!(
        wait_until(Duration::from_millis(2500), || real_state(p.pid) != b'T'),
        "still stopped 2.5 s after the stop with strict_timeout 300ms (the move takes 3 s)"
    );
    assert!(
        h.backend.moves().is_empty(),
        "resumed before the move ended"
    );
    // The count reaches the record stage as a message after the resume.
    assert!(
        wait_until(T, || h
            .with_snapshot(|t| t.tally.get(Count::StrictTimeouts))
            == 1),
        "strict timeout not counted"
    );
    assert!(
        h.placed(&p, &Harness::job(&p), T),
        "placed once the move went through"
    );
}

/// A daemon that died left a process stopped in its ledger: this one places it, then
/// resumes it.
#[test]
fn a_stop_left_by_a_dead_daemon_is_placed_and_resumed() {
    let orphan = Arc::new(ffrtmp::process::MemoryLedger::default());
    let h = Harness::new();
    let p = h.spawn("ffmpeg", "/", 0);
    let key = p.stop(&orphan);
    let h = h.start(Start {
        orphans: vec![orphan.clone() as Arc<dyn StopLedger>],
        ..Default::default()
    });
    h.assert_placed(&p, &Harness::job(&p));
    assert!(wait_until(T, || real_state(p.pid) != b'T'), "left stopped");
    assert_eq!(
        h.backend.moves()[0].state,
        b'T',
        "placed before it was resumed"
    );
    // SIGCONT goes first, the ledger entry after it (a daemon dying in between leaves an
    // entry for a running process, never the reverse): the entry may outlive the resume
    // by a moment (seen on 6.1 under TCG).
    assert!(
        wait_until(T, || !orphan.entries().iter().any(|(k, _)| *k == key)),
        "the ledger entry stayed after the resume"
    );
}

/// A transient error is retried after a backoff; a scan meanwhile does not place the
/// process a second time; statistics count one placement.
#[test]
fn a_retried_placement_is_not_doubled_by_a_scan_in_its_backoff() {
    let h = Harness::new();
    h.backend.behave(|b| b.eagain_moves = 2);
    let h = h.start(Start::default());
    let p = h.exec("ffmpeg", "/");
    assert!(wait_until(T, || h.backend.failed_moves() >= 1));
    // Lost events force a full scan now, inside the backoff.
    h.event(SourceEvent::Lost {
        source: "channel",
        count: 1,
    });
    h.assert_placed(&p, &Harness::job(&p));
    // The startup scan and the one the lost events asked for, then the marker.
    assert!(h.scans_done(2));
    let marker = h.marker_by_scan();
    let moves = h.moves_besides(&marker);
    assert_eq!(moves.len(), 1, "moved once: {moves:?}");
    assert_eq!(h.backend.failed_moves(), 2);
    assert_eq!(
        h.backend
            .cgroups()
            .iter()
            .filter(|c| c.contains("auto-ffmpeg") && **c != Harness::job(&marker))
            .count(),
        1,
        "{:?}",
        h.backend.cgroups()
    );
    // One placement of it, one of the marker.
    assert!(wait_until(T, || h.state()["statistics"]
        ["total_attachments"]
        == 2));
    assert!(wait_until(T, || h.with_snapshot(|t| t
        .tally
        .placements()
        .get("placed")
        == Some(&2))));
    h.with_snapshot(|t| {
        assert_eq!(t.tally.placements()["placed"], 2);
        assert_eq!(t.tally.placements()["retried"], 2);
        assert_eq!(t.tally.placements()["failed"], 0);
    });
}

#[test]
fn min_runtime_defers_the_placement() {
    let h = Harness::started("target_commands: [ffmpeg]\nfilters:\n  min_runtime: 1500ms\n");
    // Before the spawn: the age counts from the fork (10 ms ticks, rounded down).
    let t0 = std::time::Instant::now();
    // Seen placed after 1.49 s at the earliest: placed no earlier.
    let _placed = h.exec_placed("ffmpeg", "/");
    assert!(
        t0.elapsed() >= Duration::from_millis(1490),
        "placed {:?} after the spawn, before min_runtime 1500ms",
        t0.elapsed()
    );
    assert_eq!(
        h.with_snapshot(|t| t.tally.exec_to_placed.count()),
        0,
        "the wait for min_runtime is not exec -> placed latency"
    );
}

/// Another writer moves a governed process out: the reconciliation puts it back and
/// counts the drift.
#[test]
fn drift_is_corrected_and_counted() {
    let h = Harness::started("target_commands: [ffmpeg]\nreconcile_interval: 1s\n");
    let (p, job) = h.exec_placed("ffmpeg", "/");
    p.set_cgroup("/system.slice/stream@a.service");
    assert!(h.placed(&p, &job, T), "not moved back");
    assert!(wait_until(T, || h
        .with_snapshot(|t| t.tally.get(Count::DriftCorrections))
        == 1));
}

/// The record loop writes down outcomes (and runs chores) once placements pause, but
/// never waits longer than 50 ms for that pause: a steady stream of targets must not keep
/// its placements out of the journal. Here the pause asked for is an hour.
#[test]
fn outcomes_are_written_down_without_a_pause_after_at_most_the_wait() {
    let h = Harness::new().start(Start {
        quiet: Duration::from_secs(3600),
        ..Default::default()
    });
    // The first after the start may be taken in with the start's own state write; both
    // stay alive (an exit would write the state, and take in what is held with it).
    let mut alive = Vec::new();
    for _ in 0..2 {
        let (p, _) = h.exec_placed("ffmpeg", "/");
        assert!(
            wait_until(T, || h.governs(p.pid)),
            "the placement was not written down"
        );
        assert!(wait_until(T, || h.state()["processes"][p.pid.to_string()].is_object()));
        alive.push(p);
    }
}

#[test]
fn an_exit_ends_the_job_and_removes_its_cgroup() {
    let h = Harness::new().start(Start::default());
    let (mut p, job) = h.exec_placed("ffmpeg", "/");
    assert!(wait_until(T, || h.governed() == 1));
    // The kernel empties the cgroup when the process exits; so does the fake.
    h.exit(&mut p);
    assert!(wait_until(T, || h.governed() == 0));
    assert!(
        wait_until(T, || h.backend.cgroup(&job).is_none()),
        "job cgroup left: {:?}",
        h.backend.cgroups()
    );
    assert!(wait_until(T, || h.state()["processes"]
        .as_object()
        .is_some_and(|m| m.is_empty())));
}

/// Jobs that end together: their removals go to the blocking pool as one batch, and every
/// one is done and counted.
#[test]
fn jobs_that_end_together_are_all_removed() {
    let h = Harness::new().start(Start::default());
    let mut procs: Vec<_> = (0..5).map(|_| h.exec("ffmpeg", "/")).collect();
    for p in &procs {
        h.assert_placed(p, &Harness::job(p));
    }
    assert!(wait_until(T, || h.governed() == 5));
    for p in procs.iter_mut() {
        h.exit(p);
    }
    assert!(wait_until(T, || h.governed() == 0));
    // Each removal's result reached the record loop: the job's last numbers are in.
    assert!(
        wait_until(T, || h.with_snapshot(
            |t| t.jobs.ending.is_empty() && t.jobs.ended.len() == 5
        )),
        "not every ended job's removal was finished"
    );
    for p in &procs {
        let job = Harness::job(p);
        assert!(
            wait_until(T, || h.backend.cgroup(&job).is_none()),
            "job cgroup {job} left: {:?}",
            h.backend.cgroups()
        );
    }
}

/// Events the source lost: the reconciliation runs at once and finds the target.
#[test]
fn lost_events_trigger_a_scan_that_places_what_was_missed() {
    let h = Harness::new().start(Start::default());
    let p = h.spawn("ffmpeg", "/", 0);
    let _marker = h.marker();
    assert_eq!(
        p.cgroup(),
        "/",
        "the reconciliation interval is an hour: nothing yet"
    );
    assert_eq!(
        h.with_snapshot(|t| t.tally.scans()),
        1,
        "the startup scan only"
    );
    h.event(SourceEvent::Lost {
        source: "channel",
        count: 3,
    });
    h.assert_placed(&p, &Harness::job(&p));
    assert!(wait_until(T, || h
        .with_snapshot(|t| t.tally.get(Count::ScanCandidates) == 1)));
    h.with_snapshot(|t| {
        assert_eq!(t.tally.get(Count::EventsLost), 3);
        assert_eq!(t.tally.get(Count::ScanCandidates), 1);
    });
}

/// Containers are not ours: a target in its own PID namespace, or in a container
/// manager's cgroup, keeps its container's cgroup; counted; unless govern_containers.
#[test]
fn targets_in_containers_keep_their_cgroups_unless_asked() {
    let h = Harness::started(
        "target_commands: [ffmpeg, x264]\ncommands:\n  x264:\n    govern_containers: true\n",
    );
    let in_ns = h.spawn("ffmpeg", "/", 1);
    let in_pod = h.spawn(
        "ffmpeg",
        "/kubepods.slice/kubepods-pod1.slice/cri-containerd-ab.scope",
        0,
    );
    let opted_in = h.spawn("x264", "/machine.slice/machine-edge1.scope/payload", 1);
    for p in [&in_ns, &in_pod, &opted_in] {
        h.send(h.notice(p));
    }
    // Sent last: once it is placed, the engine is done with the other two.
    h.assert_placed(&opted_in, &format!("/ffrtmp/auto-x264-{}", opted_in.pid));
    assert_eq!(in_ns.cgroup(), "/");
    assert_eq!(
        in_pod.cgroup(),
        "/kubepods.slice/kubepods-pod1.slice/cri-containerd-ab.scope"
    );
    assert!(
        wait_until(T, || h.with_snapshot(|t| t
            .tally
            .skipped()
            .get("container")
            == Some(&2))),
        "container skips not counted"
    );
    assert_eq!(h.backend.moves().len(), 1);
}

/// `ffrtmp run --cgroup-root /jobs` put a job there: the daemon (root /ffrtmp) never
/// moves it.
#[test]
fn jobs_placed_by_ffrtmp_run_under_another_root_are_left_alone() {
    let h = Harness::new().start(Start {
        before: Some(Box::new(|h: &Harness| {
            ffrtmp::placer::registry::register_tool_root(&h.runtime_dir, "/jobs").unwrap();
        })),
        ..Default::default()
    });
    let run = h.exec("ffmpeg", "/jobs/run-1");
    let own = h.exec("ffmpeg", "/ffrtmp/run-2");
    // A scan too: neither is a candidate for placement.
    h.event(SourceEvent::Lost {
        source: "channel",
        count: 1,
    });
    assert!(h.scans_done(2));
    let marker = h.marker_by_scan();
    assert_eq!(run.cgroup(), "/jobs/run-1");
    assert_eq!(own.cgroup(), "/ffrtmp/run-2");
    assert!(
        h.moves_besides(&marker).is_empty(),
        "{:?}",
        h.backend.moves()
    );
    assert!(h.with_snapshot(|t| t.tally.skipped()["ffrtmp_run"]) >= 1);
    assert_eq!(
        ffrtmp::placer::registry::published_root(&h.runtime_dir).as_deref(),
        Some("/ffrtmp"),
        "the daemon published its root for run and attach"
    );
}

/// A restart: the new daemon takes governed processes back from the state file without
/// moving them, and drops the record of a PID now used by another process.
#[test]
fn a_restart_readopts_without_moving() {
    let mut h = Harness::new().start(Start::default());
    let (p, job) = h.exec_placed("ffmpeg", "/");
    assert!(wait_until(T, || h.state()["processes"]
        .as_object()
        .is_some_and(|m| !m.is_empty())));
    h.stop();
    let moves_before = h.backend.moves().len();
    let h2 = h.start(Start {
        role: ScanRole::Reconcile,
        ..Default::default()
    });
    assert!(wait_until(T, || h2.governs(p.pid)), "not re-adopted");
    assert_eq!(h2.backend.moves().len(), moves_before, "moved again");
    assert_eq!(p.cgroup(), job);
}

/// A state file lost in a crash: the first scan finds the job cgroup with its live process
/// and takes it back in place, limits read from the cgroup, without a second cgroup.
#[test]
fn a_lost_state_file_does_not_lose_a_governed_process() {
    let mut h = Harness::new().start(Start::default());
    let (p, job) = h.exec_placed("ffmpeg", "/");
    h.stop();
    std::fs::remove_file(&h.state_path).unwrap();
    let moves_before = h.backend.moves().len();
    let h2 = h.start(Start {
        role: ScanRole::Reconcile,
        ..Default::default()
    });
    assert!(wait_until(T, || h2.governs(p.pid)), "not taken back");
    assert!(wait_until(T, || h2.state()["processes"][p.pid.to_string()]
        ["job_id"]
        == job.trim_start_matches("/ffrtmp/")));
    assert_eq!(h2.backend.moves().len(), moves_before, "moved again");
    assert_eq!(p.cgroup(), job);
}

/// A stop the kernel made after the reader's last read is still in the daemon's ledger
/// when it shuts down: the exiting daemon resumes it rather than leave it for a successor
/// that may never start (`dpkg -r`).
#[test]
fn a_shutdown_resumes_a_stop_it_never_took() {
    let mut h = Harness::new().start(Start::default());
    let p = h.spawn("ffmpeg", "/", 0);
    p.stop(&h.ledger);
    h.stop();
    assert!(
        wait_until(T, || real_state(p.pid) != b'T'),
        "left stopped by the exiting daemon"
    );
    assert!(h.ledger.is_empty());
    assert!(
        h.backend.moves().is_empty(),
        "an exiting daemon places nothing"
    );
}

/// An exec notice whose start time is not the process's (its PID reused, or clocks that
/// disagree): the process that has the PID now is judged on its own /proc facts, never
/// dropped — a target is placed, a non-target is left alone.
#[test]
fn a_notice_with_another_start_time_is_decided_on_proc() {
    let h = Harness::new().start(Start::default());
    let target = h.spawn("ffmpeg", "/", 0);
    let other = h.spawn("bash", "/", 0);
    for p in [&target, &other] {
        let mut n = h.notice(p);
        n.start_ns = Some(p.start_ns() + 5_000_000_000);
        h.send(n);
    }
    h.assert_placed(&target, &Harness::job(&target));
    let marker = h.marker();
    assert_eq!(other.cgroup(), "/", "a non-target is never moved");
    assert_eq!(h.moves_besides(&marker).len(), 1);
}
