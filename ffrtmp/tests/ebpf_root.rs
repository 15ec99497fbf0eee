//! Root integration tests of the eBPF exec source, on this host's real kernel and real v1
//! cgroups, driving the real `ffrtmp watch` binary: targets, long names, non-targets,
//! children forked right after exec, ring overflow, missing capabilities, reload. Strict
//! placement is in `ebpf_strict.rs`. Every cgroup is created beneath the test's own cgroup
//! (`support::TestRoot`) and removed afterwards; every process moved is one the test
//! started, under a name no other process has.
//!
//! They skip with a printed reason when not root or when the binary was built without the
//! eBPF object; with `FFRTMP_REQUIRE_ROOT_TESTS` or `CI` set, a skip is a failure (CI
//! builds the object first: `cargo xtask build-ebpf`).
//!
//! Placement through the eBPF path is told apart from the scan by the daemon's log: only
//! an exec event carries a kernel timestamp, so only it logs `exec→placed`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::*;

#[test]
fn ebpf_places_targets_including_long_names_and_leaves_others_alone() {
    require!(Ebpf);
    let _g = serial();
    for hook in ["tp_btf", "tracepoint"] {
        let dir = tempfile::tempdir().unwrap();
        let mut root = TestRoot::new();
        let t = tag();
        let short = format!("{t}a");
        let long = format!("{t}-long-target-name");
        // Same first 15 bytes as `long`: the kernel forwards it, user space must refuse it.
        let impostor = format!("{}-impostor", &long[..15]);
        let other = format!("{t}n");
        let w = Daemon::new(
            dir.path(),
            &root,
            &format!("target_commands: [{short}, {long}]\n"),
        )
        .env(&[("FFRTMP_EBPF_HOOK", hook), ("LOG_LEVEL", "debug")])
        .start();
        w.ready();
        assert!(w.log_text().contains(if hook == "tp_btf" {
            "tp_btf/sched_process_exec attached"
        } else {
            "tracepoint/sched/sched_process_exec attached"
        }));
        let bins: Vec<PathBuf> = [&short, &long, &impostor, &other]
            .iter()
            .map(|n| named_copy(dir.path(), "/bin/sleep", n))
            .collect();
        // One exec at a time, each placed before the next: tp_btf runs preemptibly on newer
        // kernels, which skip the program when it is entered again on the same CPU (an exec
        // the scan then places), and this test is about what the hook forwards.
        let mut pids = Vec::new();
        for (name, bin) in [(&short, &bins[0]), (&long, &bins[1])] {
            let pid = spawn(&mut root, bin, &["30"]);
            pids.push(pid);
            let cg = job(&root, name, pid);
            w.expect(
                Duration::from_secs(5),
                || root.is_in(pid, &cg),
                &format!("[{hook}] target {name} (PID {pid}) not placed in {cg}"),
            );
            w.expect(
                Duration::from_secs(5),
                || placed_by_event(&w.log_text(), pid),
                &format!("[{hook}] {name} was not placed from an exec event"),
            );
        }
        pids.extend(bins[2..].iter().map(|b| spawn(&mut root, b, &["30"])));
        // At debug level the daemon logs every notice it refuses. Events are handled in
        // order: once the impostor is refused, the non-target (later) would have been seen.
        assert!(
            wait_until(Duration::from_secs(5), || w
                .log_text()
                .contains(&format!("Skipping PID {}:", pids[2]))),
            "[{hook}] the impostor was not forwarded and refused:\n{}",
            w.log_text()
        );
        // The marker: a target exec'd last is placed from its event once every earlier exec
        // (the non-target's among them, had it been forwarded) was handled.
        let marker = spawn(&mut root, &bins[0], &["30"]);
        w.expect(
            Duration::from_secs(5),
            || placed_by_event(&w.log_text(), marker),
            &format!("[{hook}] the marker was not placed"),
        );
        for (name, pid) in [(&impostor, pids[2]), (&other, pids[3])] {
            assert!(
                !under_root(&root, pid),
                "[{hook}] {name} (PID {pid}) was placed"
            );
        }
        let log = w.stop();
        assert!(
            !mentions(&log, pids[3]),
            "the non-target reached user space:\n{log}"
        );
    }
}

#[test]
fn ebpf_children_forked_right_after_exec_end_up_in_the_job_cgroup() {
    require!(Ebpf);
    let (_g, mut t) = Fixture::serial("f", "/bin/dash");
    let w = t.watching(&format!("target_commands: [{}]\n", t.name));
    let script = "i=0; while [ $i -lt 20 ]; do sleep 30 & i=$((i+1)); done; wait";
    let procfs = ffrtmp::process::ProcFs::system();
    for round in 0..5 {
        let pid = t.spawn(&["-c", script]);
        let cg = t.job(pid);
        w.expect(
            Duration::from_secs(5),
            || t.root.is_in(pid, &cg),
            &format!("round {round}: PID {pid} not placed"),
        );
        assert!(
            wait_until(Duration::from_secs(5), || procfs.children(pid).len() == 20),
            "round {round}: the target did not fork 20 children"
        );
        // The daemon moves the children it finds right after the parent; nothing else
        // would move a child left behind (reconciliation is 1 h away).
        let kids = procfs.children(pid);
        let outside = || -> Vec<u32> {
            kids.iter()
                .copied()
                .filter(|k| !t.root.is_in(*k, &cg))
                .collect()
        };
        wait_until(Duration::from_secs(5), || outside().is_empty());
        assert!(
            outside().is_empty(),
            "round {round}: children outside {cg}: {:?}",
            outside()
        );
    }
    w.stop();
}

#[test]
fn ebpf_overflow_is_reported_and_every_target_is_placed_after_reconciliation() {
    require!(Ebpf);
    let (_g, dir, mut root, name) = scene("o");
    // One page: about 12 events fit.
    let w = Daemon::new(dir.path(), &root, &format!("target_commands: [{name}]\n"))
        .env(&[("FFRTMP_EBPF_RING_BYTES", "4096")])
        .start();
    w.ready();
    let bin = named_copy(dir.path(), "/bin/sleep", &name);
    // Pause the reader (the whole daemon) while 40 targets exec.
    w.signal(libc::SIGSTOP);
    // Each spawn returns once its exec happened: the ring is full by now.
    let pids: Vec<u32> = (0..40).map(|_| spawn(&mut root, &bin, &["30"])).collect();
    w.signal(libc::SIGCONT);
    let all_placed = wait_until(Duration::from_secs(20), || {
        pids.iter().all(|p| root.is_in(*p, &job(&root, &name, *p)))
    });
    let log = w.log_text();
    assert!(all_placed, "not every target was placed:\n{log}");
    assert!(
        log.contains("event(s); reconciling now"),
        "no loss reported:\n{log}"
    );
    let by_event = pids.iter().filter(|p| placed_by_event(&log, **p)).count();
    assert!(
        by_event < 40,
        "all 40 arrived as events: the ring did not overflow"
    );
    eprintln!("overflow: {by_event} of 40 placed from events, the rest by the reconciliation scan");
    w.stop();
}

#[test]
fn ebpf_without_cap_bpf_the_error_says_so_and_fallback_scan_governs() {
    require!(Ebpf);
    let _g = serial();
    let no_setpriv = !Path::new("/usr/bin/setpriv").exists();
    let why = no_setpriv.then(|| "needs setpriv (util-linux) to drop capabilities".to_string());
    if skipped(&test_name(), why) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut root = TestRoot::new();
    let name = format!("{}c", tag());
    let drop_caps = [
        "/usr/bin/setpriv",
        "--bounding-set",
        "-bpf,-perfmon,-sys_admin",
        "--inh-caps=-all",
    ];
    let yaml = format!("target_commands: [{name}]\nscan_interval: 200ms\n");

    let mut w = Daemon::new(dir.path(), &root, &yaml)
        .wrapper(&drop_caps)
        .start();
    assert_eq!(
        w.exit_code(Duration::from_secs(20)),
        Some(1),
        "{}",
        w.log_text()
    );
    let log = w.log_text();
    assert!(
        log.contains("CAP_BPF") && log.contains("--fallback-scan"),
        "{log}"
    );
    assert!(
        !log.contains("panicked") && !log.contains("stack backtrace"),
        "{log}"
    );
    drop(w);

    let w = Daemon::new(dir.path(), &root, &yaml)
        .args(&["--fallback-scan"])
        .wrapper(&drop_caps)
        .start();
    w.logs_within("Scan complete", Duration::from_secs(20));
    let bin = named_copy(dir.path(), "/bin/sleep", &name);
    let pid = spawn(&mut root, &bin, &["30"]);
    placed(&w, &root, &name, pid);
    let log = w.stop();
    assert_eq!(log.matches("--fallback-scan given").count(), 1, "{log}");
    assert!(log.contains("CAP_BPF"), "{log}");
    assert!(!placed_by_event(&log, pid));
}

#[test]
fn ebpf_reload_rewrites_the_kernel_target_table() {
    require!(Ebpf);
    let (_g, dir, mut root, t) = scene("r");
    let (a, b) = (format!("{t}a"), format!("{t}b"));
    let w = Daemon::new(dir.path(), &root, &format!("target_commands: [{a}]\n"))
        .env(&[("LOG_LEVEL", "debug")])
        .start();
    w.ready();
    let (bin_a, bin_b) = (
        named_copy(dir.path(), "/bin/sleep", &a),
        named_copy(dir.path(), "/bin/sleep", &b),
    );
    // Swap the targets: a out, b in.
    let text = std::fs::read_to_string(&w.config)
        .unwrap()
        .replace(&format!("[{a}]"), &format!("[{b}]"));
    std::fs::write(&w.config, text).unwrap();
    let scans = scans_in(&w.log_text());
    w.signal(libc::SIGHUP);
    w.logs("Configuration reloaded");
    // The reload's own scan finishes before the new processes exist.
    w.expect(
        Duration::from_secs(10),
        || scans_in(&w.log_text()) > scans,
        "no scan after the reload",
    );
    let pb = spawn(&mut root, &bin_b, &["30"]);
    let pa = spawn(&mut root, &bin_a, &["30"]);
    placed(&w, &root, &b, pb);
    w.expect(
        Duration::from_secs(5),
        || placed_by_event(&w.log_text(), pb),
        "new target not placed from an event",
    );
    // The marker: a target exec'd after pa, placed from its event once pa's was handled.
    let marker = spawn(&mut root, &bin_b, &["30"]);
    w.expect(
        Duration::from_secs(5),
        || placed_by_event(&w.log_text(), marker),
        "the marker was not placed",
    );
    assert!(!under_root(&root, pa), "the removed target was placed");
    let log = w.stop();
    assert!(
        !mentions(&log, pa),
        "the removed target still reached user space:\n{log}"
    );
}

/// A target reached under another name is forwarded by the kernel and placed from its
/// exec event, with the kernel filter on: through a symlink of another name (its exe's
/// basename is the target's), and with another argv[0] (`exec -a`). With `forward_all`
/// too. A process whose names are none of the target's is not.
#[test]
fn ebpf_places_targets_known_by_their_exe_or_argv0_from_their_exec_event() {
    require!(Ebpf);
    let (_g, dir, mut root, t) = scene("");
    let (name, alias, plain) = (format!("{t}w"), format!("{t}alias"), format!("{t}p"));
    let bin = named_copy(dir.path(), "/bin/sleep", &name);
    let other = named_copy(dir.path(), "/bin/sleep", &plain);
    // Exec'd through a symlink: the comm is the link's name, the exe the target's.
    let link = dir.path().join(&alias);
    std::os::unix::fs::symlink(&bin, &link).unwrap();
    for forward_all in [false, true] {
        let w = watching(
            &dir,
            &root,
            &format!("target_commands: [{name}]\nforward_all: {forward_all}\n"),
        );
        let by_link = spawn(&mut root, &link, &["30"]);
        // Another binary, started as `exec -a <target> …`: argv[0] is the target's name.
        let by_argv0 = {
            use std::os::unix::process::CommandExt;
            let mut c = Command::new(&other);
            c.arg0(format!("/opt/bin/{name}"))
                .arg("30")
                .stdin(std::process::Stdio::null());
            root.own(support::spawn_retrying(&mut c))
        };
        let stranger = spawn(&mut root, &other, &["30"]);
        for (how, pid) in [("a symlink", by_link), ("argv[0]", by_argv0)] {
            let cg = job(&root, &name, pid);
            let placed = wait_until(Duration::from_secs(3), || root.is_in(pid, &cg));
            assert!(
                placed,
                "[forward_all {forward_all}] target by {how} not placed:\n{}",
                w.log_text()
            );
            // The record loop logs a placement after the move is visible.
            w.expect(
                Duration::from_secs(3),
                || placed_by_event(&w.log_text(), pid),
                &format!("[forward_all {forward_all}] target by {how} not placed from its event"),
            );
        }
        // The marker: a target exec'd after the stranger.
        let marker = spawn(&mut root, &bin, &["30"]);
        w.expect(
            Duration::from_secs(5),
            || placed_by_event(&w.log_text(), marker),
            "the marker was not placed",
        );
        assert!(
            !under_root(&root, stranger),
            "a process of another name was placed"
        );
        w.stop();
    }
}

/// Containers are not ours: a target in a PID namespace of its own, in a cgroup of its own
/// with a 64 MiB memory limit (what a container runtime makes), is left in it — the
/// predecessor moved it into its job cgroup and the container's limit no longer applied.
#[test]
fn ebpf_a_target_in_a_container_keeps_its_cgroup_and_limits() {
    require!(Ebpf);
    let (_g, dir, mut root, name) = scene("c");
    let container = TestRoot::new();
    let ct = container.job("ct");
    container.backend.create(&ct).unwrap();
    let limits = ffrtmp::config::Limits {
        memory_limit: Some(64),
        ..Default::default()
    };
    for (label, r) in container.backend.apply_limits(&ct, &limits) {
        r.unwrap_or_else(|e| panic!("{label}: {e}"));
    }
    let w = Daemon::new(
        dir.path(),
        &root,
        &format!("target_commands: [{name}]\nreconcile_interval: 1s\n"),
    )
    .env(&[("LOG_LEVEL", "debug")])
    .start();
    w.ready();
    let bin = named_copy(dir.path(), "/bin/sleep", &name);
    // Enter the container's cgroup, then a new PID namespace, then exec the target.
    let procs: Vec<String> = container
        .backend
        .procs_files(&ct)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let script = format!(
        "for f in {}; do echo $$ > $f; done; exec unshare --pid --fork --kill-child {} 30",
        procs.join(" "),
        bin.display()
    );
    let unshare = spawn(&mut root, Path::new("/bin/sh"), &["-c", &script]);
    let pid = first_child(unshare, |pid| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
    });
    let reason = format!("Skipping PID {pid} ({name}): it runs in a container");
    w.expect(
        Duration::from_secs(5),
        || w.log_text().contains(&reason),
        &format!("no container skip for PID {pid}"),
    );
    // Through a few reconciliations it stays where the container put it, with its limit.
    let scans = scans_in(&w.log_text());
    w.expect(
        Duration::from_secs(10),
        || scans_in(&w.log_text()) >= scans + 2,
        "two reconciliation scans",
    );
    assert!(
        container.is_in(pid, &ct),
        "moved out of its container's cgroup:\n{}",
        w.log_text()
    );
    assert!(!under_root(&root, pid));
    let limit = match container.mode() {
        ffrtmp::placer::CgroupMode::V1 => container.read(&ct, "memory", "memory.limit_in_bytes"),
        ffrtmp::placer::CgroupMode::V2 => container.read(&ct, "", "memory.max"),
    };
    assert_eq!(limit, "67108864");
    let metrics = support::http_get(&format!("{}/metrics", w.metrics_url().unwrap())).1;
    assert!(
        metrics.contains("ffrtmp_skipped_total{reason=\"container\"} 1\n"),
        "{metrics}"
    );
    let log = w.stop();
    assert_eq!(log.matches(&reason).count(), 1, "logged once:\n{log}");
    // SAFETY: our own child (unshare kills the target with it).
    unsafe { libc::kill(unshare as i32, libc::SIGKILL) };
}

/// The kernel program's counters reach /metrics: execs it saw, what it forwarded.
#[test]
fn ebpf_kernel_counters_are_exported() {
    require!(Ebpf);
    let (_g, mut t) = Fixture::serial("m", "/bin/sleep");
    let w = t.watching(&format!("target_commands: [{}]\n", t.name));
    for _ in 0..3 {
        let _ = std::process::Command::new("/bin/true").status();
    }
    // Five targets, each forwarded exactly once.
    let pids: Vec<u32> = (0..5).map(|_| t.spawn(&["30"])).collect();
    for &pid in &pids {
        assert!(wait_until(Duration::from_secs(5), || t.is_placed(pid)));
    }
    let url = w.metrics_url().unwrap();
    let value = |m: &str, name: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name}:\n{m}"))
    };
    // The reader publishes the counters every 250 ms.
    let mut m = String::new();
    assert!(
        wait_until(Duration::from_secs(3), || {
            m = support::http_get(&format!("{url}/metrics")).1;
            m.contains("ffrtmp_kernel_forwarded_total ")
                && value(&m, "ffrtmp_kernel_forwarded_total") >= 5
        }),
        "{m}"
    );
    // The marker: a sixth target, counted once its event was read; a double count of the
    // first five would show by then.
    let sixth = t.spawn(&["30"]);
    assert!(
        wait_until(Duration::from_secs(5), || {
            m = support::http_get(&format!("{url}/metrics")).1;
            t.is_placed(sixth)
                && value(&m, "ffrtmp_kernel_forwarded_total") >= 6
                && value(&m, "ffrtmp_exec_events_total{source=\"ebpf\"}") >= 6
        }),
        "{m}"
    );
    assert_eq!(
        value(&m, "ffrtmp_kernel_forwarded_total"),
        6,
        "each target exec is forwarded once:\n{m}"
    );
    assert_eq!(
        value(&m, "ffrtmp_exec_events_total{source=\"ebpf\"}"),
        6,
        "{m}"
    );
    assert!(value(&m, "ffrtmp_kernel_execs_total") >= 8, "{m}");
    assert_eq!(value(&m, "ffrtmp_kernel_ring_full_total"), 0, "{m}");
    assert_eq!(value(&m, "ffrtmp_kernel_stop_failures_total"), 0, "{m}");
    // The kernel's own count of runs it skipped, read from the program's info: there
    // from 5.12 (bpf_prog_info.recursion_misses), absent before, never a made-up 0.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut v = release
        .trim()
        .split(['.', '-', '+'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    if (major, minor) >= (5, 12) {
        value(&m, "ffrtmp_kernel_skipped_total");
    } else {
        assert!(!m.contains("ffrtmp_kernel_skipped_total"), "{release}: {m}");
    }
    assert!(
        w.log_text()
            .contains("tracepoint/sched/sched_process_exec attached"),
        "the classic tracepoint is the default hook:\n{}",
        w.log_text()
    );
    assert!(
        m.contains("ffrtmp_build_info{version=\"0.1.0\",ebpf_object=\""),
        "{m}"
    );
    w.stop();
}

/// The tracepoint is shared: a program attached to it through perf decides whether perf's
/// own listeners get each event (returning 0 drops it for all of them). With the daemon's
/// default hook attached, a counting `perf_event_open` on `sched:sched_process_exec` (what
/// `perf stat` and `perf record -e` open) must still count every exec.
#[test]
fn ebpf_other_tracers_still_see_every_exec() {
    require!(Ebpf);
    let (_g, dir, root, name) = scene("z");
    let w = watching(&dir, &root, &format!("target_commands: [{name}]\n"));
    assert!(
        w.log_text()
            .contains("tracepoint/sched/sched_process_exec attached"),
        "the classic tracepoint is the default hook:\n{}",
        w.log_text()
    );
    let id: u64 = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .find_map(|t| {
            std::fs::read_to_string(format!("{t}/events/sched/sched_process_exec/id")).ok()
        })
        .expect("tracefs: the daemon attached a classic tracepoint, so it is mounted")
        .trim()
        .parse()
        .unwrap();
    // struct perf_event_attr: type @0, size @4, config @8, flags @40 (bit 1: inherit).
    let mut attr = [0u64; 16];
    attr[0] = 2 | (128u64 << 32); // PERF_TYPE_TRACEPOINT, size 128
    attr[1] = id;
    attr[5] = 1 << 1;
    // SAFETY: a zeroed attr of the size it claims; this process and its children, any CPU.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            0,
            -1,
            -1,
            libc::c_ulong::from(8u8), // PERF_FLAG_FD_CLOEXEC
        )
    };
    assert!(
        fd >= 0,
        "perf_event_open: {}",
        std::io::Error::last_os_error()
    );
    for _ in 0..5 {
        assert!(Command::new("/bin/true").status().unwrap().success());
    }
    let mut count = 0u64;
    // SAFETY: an 8-byte read into a local from the fd opened above, then closed.
    let n = unsafe {
        let n = libc::read(fd as i32, (&mut count as *mut u64).cast(), 8);
        libc::close(fd as i32);
        n
    };
    assert_eq!(n, 8);
    assert!(
        count >= 5,
        "perf counted {count} of 5 execs while the daemon's program was attached"
    );
    w.stop();
}
