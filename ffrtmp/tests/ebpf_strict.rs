//! Root integration tests of strict placement (the kernel stops a target at exec; the
//! daemon places it and continues it), on this host's real kernel and real v1 cgroups:
//! the target's first view of itself is inside its cgroup, a target whose placement fails
//! still runs, and no path leaves a process stopped. Same rules as `ebpf_root.rs`.

mod support;

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use ffrtmp::exec::Ring as _;

use support::*;

/// The config of a strict target `name`, and `extra`.
fn strict(name: &str, extra: &str) -> String {
    format!("target_commands: [{name}]\nplacement: strict\n{extra}")
}

/// Run `sh -c script` to its end: it must exit 0 within 10 s, else fail saying `what`, its
/// status and the daemon's log. Its PID.
fn runs_to_end(w: &Daemon, sh: &Path, script: &str, what: &str) -> u32 {
    let mut c = Command::new(sh).args(["-c", script]).spawn().unwrap();
    let pid = c.id();
    w.exits_ok(&mut c, Duration::from_secs(10), what);
    pid
}

#[test]
fn ebpf_strict_target_is_inside_its_cgroup_before_it_runs() {
    require!(Ebpf);
    let (_g, dir, root, name) = scene("s");
    let w = watching(&dir, &root, &strict(&name, ""));
    let sh = named_copy(dir.path(), "/bin/dash", &name);
    for round in 0..5 {
        let out = dir.path().join(format!("cgroup-{round}"));
        let what = format!("round {round}: strict target did not finish");
        let pid = runs_to_end(&w, &sh, &strict_script(&out), &what);
        let (inside, seen, cg) = first_view(&root, &out, &name, pid);
        assert!(
            inside,
            "round {round}: the target's first view of itself was outside {cg}: {seen:?}"
        );
    }
    let log = w.stop();
    assert!(log.contains("exec→placed"), "{log}");
}

#[test]
fn ebpf_strict_target_whose_placement_fails_still_runs() {
    require!(Ebpf);
    let (_g, dir, root, name) = scene("x");
    let w = watching(&dir, &root, &strict(&name, "max_retry_attempts: 0\n"));
    // Make every new job cgroup impossible. cgroup v1: empty the root of the pids
    // hierarchy (the spare cgroups the daemon keeps there go) and mount a read-only tmpfs
    // over it, so a job cgroup cannot be made there (EROFS; a root that is gone would be
    // made again). cgroup v2: allow the root no more descendants than it has.
    // Undone when the test ends, passed or failed (before the root is removed).
    let _restore = OnDrop(match root.mode() {
        ffrtmp::placer::CgroupMode::V1 => {
            let pids_root =
                Path::new("/sys/fs/cgroup/pids").join(root.path.trim_start_matches('/'));
            let emptied = wait_until(Duration::from_secs(5), || {
                for e in std::fs::read_dir(&pids_root)
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    if e.path().is_dir() {
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
                std::fs::read_dir(&pids_root).is_ok_and(|d| d.flatten().all(|e| !e.path().is_dir()))
            });
            assert!(emptied, "cannot empty {}", pids_root.display());
            let status = Command::new("mount")
                .args(["-t", "tmpfs", "-o", "ro,size=4k", "ffrtmp-test"])
                .arg(&pids_root)
                .status()
                .unwrap();
            assert!(
                status.success(),
                "mount a read-only tmpfs on {}",
                pids_root.display()
            );
            Box::new(move || {
                let _ = Command::new("umount").arg(&pids_root).status();
            }) as Box<dyn FnMut()>
        }
        ffrtmp::placer::CgroupMode::V2 => {
            let dir = Path::new("/sys/fs/cgroup").join(root.path.trim_start_matches('/'));
            let stat = std::fs::read_to_string(dir.join("cgroup.stat")).unwrap();
            let now: u64 = stat
                .lines()
                .find_map(|l| l.strip_prefix("nr_descendants "))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            std::fs::write(dir.join("cgroup.max.descendants"), now.to_string()).unwrap();
            Box::new(move || {
                let _ = std::fs::write(dir.join("cgroup.max.descendants"), "max");
            })
        }
    });
    let sh = named_copy(dir.path(), "/bin/dash", &name);
    let marker = dir.path().join("ran");
    let ran = format!("echo ran > {}", marker.display());
    let pid = runs_to_end(&w, &sh, &ran, "the target was left stopped or failed");
    assert!(marker.exists());
    let failed = wait_until(Duration::from_secs(5), || {
        w.log_text().contains(&format!("Failed to place PID {pid}"))
    });
    let log = w.stop();
    assert!(failed, "{log}");
}

/// The daemon is killed (SIGKILL: watchdog, OOM) while a strict target waits, stopped:
/// the next daemon finds the stop in the ledger the dead one pinned, places the target,
/// and only then resumes it; the dead daemon's ledger is removed once empty.
#[test]
fn ebpf_strict_stop_outlives_a_killed_daemon() {
    require!(Ebpf);
    let (_g, dir, root, name) = scene("k");
    let yaml = strict(&name, "strict_timeout: 1m\n");
    let mut w = watching(&dir, &root, &yaml);
    let old_pid = w.child.id();
    let sh = named_copy(dir.path(), "/bin/dash", &name);
    let out = dir.path().join("cgroup");
    // The daemon's loop stalls; the kernel stops the target; the daemon is killed.
    w.signal(libc::SIGSTOP);
    let mut c = Command::new(&sh)
        .args(["-c", &strict_script(&out)])
        .spawn()
        .unwrap();
    let pid = c.id();
    assert!(
        wait_until(Duration::from_secs(5), || state_of(pid) == Some('T')),
        "the kernel did not stop the target"
    );
    w.signal(libc::SIGKILL);
    let _ = w.child.wait();
    let pin_dir = Path::new(ffrtmp::sources::ebpf::ledger::PIN_DIR);
    let old_pins = || {
        std::fs::read_dir(pin_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("stopped-{old_pid}-"))
            })
            .count()
    };
    assert_eq!(old_pins(), 1, "the dead daemon's ledger is pinned");
    assert_eq!(
        state_of(c.id()),
        Some('T'),
        "stopped, and resumed by nobody while no daemon runs"
    );
    // The next daemon.
    let w2 = watching(&dir, &root, &yaml);
    w2.exits_ok(
        &mut c,
        Duration::from_secs(10),
        "the target stayed stopped after the restart",
    );
    let (inside, seen, cg) = first_view(&root, &out, &name, pid);
    assert!(
        inside,
        "resumed before it was placed: its first view of itself was {seen:?}, not {cg}\n{}",
        w2.log_text()
    );
    assert!(
        wait_until(Duration::from_secs(5), || old_pins() == 0),
        "the dead daemon's ledger is still pinned"
    );
    let log = w2.stop();
    assert!(
        log.contains("stopped for strict placement by a daemon that is gone"),
        "{log}"
    );
}

/// `--dry-run` never stops a strict target: with the daemon itself stopped, a target's
/// exec runs through.
#[test]
fn ebpf_dry_run_never_stops_a_strict_target() {
    require!(Ebpf);
    let (_g, dir, root, name) = scene("y");
    let w = Daemon::new(dir.path(), &root, &strict(&name, ""))
        .args(&["--dry-run"])
        .start();
    w.ready();
    let sh = named_copy(dir.path(), "/bin/dash", &name);
    w.signal(libc::SIGSTOP);
    let mut c = Command::new(&sh).args(["-c", "exit 0"]).spawn().unwrap();
    let status = wait_exit(&mut c, Duration::from_secs(5));
    w.signal(libc::SIGCONT);
    let log = w.stop();
    assert!(
        status.is_some_and(|s| s.success()),
        "a dry run stopped the target: {status:?}\n{log}"
    );
    assert!(log.contains("no process will be stopped"), "{log}");
}

#[test]
fn ebpf_strict_never_leaves_a_process_stopped() {
    require!(Ebpf);
    let (_g, dir, root, long) = scene("-strict-long-name");
    // Shares the first 15 bytes: the kernel stops it, user space refuses it.
    let impostor = format!("{}-other", &long[..15]);
    let w = watching(&dir, &root, &strict(&long, ""));
    let run = |name: &str| -> Child {
        let sh = dir.path().join(name);
        if !sh.exists() {
            named_copy(dir.path(), "/bin/dash", name);
        }
        Command::new(&sh).args(["-c", "exit 0"]).spawn().unwrap()
    };
    let mut c = run(&impostor);
    w.exits_ok(
        &mut c,
        Duration::from_secs(10),
        "the prefix impostor stayed stopped",
    );

    // Stop the daemon, let targets be stopped by the kernel, then shut the daemon down:
    // whether it handles the events or drains them at shutdown, every one is continued.
    w.signal(libc::SIGSTOP);
    let kids: Vec<Child> = (0..5).map(|_| run(&long)).collect();
    assert!(
        wait_until(Duration::from_secs(5), || kids.iter().all(|k| state_of(
            k.id()
        ) == Some(
            'T'
        ))),
        "the kernel did not stop every target at exec"
    );
    w.signal(libc::SIGTERM);
    w.signal(libc::SIGCONT);
    let log = w.stop();
    for (pid, status) in finish_all(kids, Duration::from_secs(5)) {
        assert!(
            status.is_some_and(|s| s.success()),
            "PID {pid} left stopped after shutdown: {status:?}\n{log}"
        );
    }
}

/// The ring reader itself, without a daemon: a stop is owned by the notice that carries it
/// (dropping the notice resumes it), and records still in the ring when the reader is
/// dropped (what the engine does as it ends) are resumed after the hook is detached.
#[test]
fn ebpf_ring_reader_resumes_every_stop_it_does_not_hand_over() {
    use ffrtmp::sources::ebpf;
    require!(Ebpf);
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let name = format!("{}d", tag());
    let config = dir.path().join("c.yaml");
    std::fs::write(&config, strict(&name, "")).unwrap();
    let settings = ffrtmp::config::load(&ffrtmp::config::Sources {
        config_file: Some(&config),
        env: &ffrtmp::config::EnvVars::default(),
        flags: &ffrtmp::config::FlagOverrides::default(),
        passwd: Path::new("/etc/passwd"),
    })
    .unwrap();
    let started = ebpf::start(
        &settings,
        &ebpf::LoadOptions::parse(None, None).unwrap(),
        support::me(),
        false,
    )
    .unwrap();
    assert!(started.strict_off.is_none(), "{:?}", started.strict_off);
    let ledger = started.ledger.clone();
    let mut reader = ebpf::RingReader::from_source(started.source);
    let sh = named_copy(dir.path(), "/bin/dash", &name);
    let spawn = || Command::new(&sh).args(["-c", "exit 0"]).spawn().unwrap();
    let stopped = |c: &Child| wait_until(Duration::from_secs(5), || state_of(c.id()) == Some('T'));
    let held_kids: Vec<Child> = (0..2).map(|_| spawn()).collect();
    assert!(held_kids.iter().all(stopped));
    let mut held = Vec::new();
    reader.drain(&mut held);
    assert_eq!(held.len(), 2);
    assert!(held
        .iter()
        .all(|n| n.as_ref().is_ok_and(|n| n.stop.is_some())));
    let ring_kids: Vec<Child> = (0..2).map(|_| spawn()).collect();
    assert!(ring_kids.iter().all(stopped));
    use ffrtmp::process::StopLedger;
    assert_eq!(ledger.entries().len(), 4, "the kernel recorded every stop");
    drop(reader);
    all_succeed(
        ring_kids,
        Duration::from_secs(5),
        "in the ring was left stopped",
    );
    assert!(
        held_kids.iter().all(stopped),
        "a notice still held was resumed by someone else"
    );
    drop(held);
    all_succeed(
        held_kids,
        Duration::from_secs(5),
        "held in a notice was left stopped",
    );
    assert!(
        ledger.entries().is_empty(),
        "every stop was cleared from the ledger"
    );
    ledger.retire();
}

/// The state letter of `/proc/PID/stat` (`T`: stopped).
fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The kernel says so when it cannot record a strict target's stop (its ledger is full:
/// filled here through the pin, as a flood of stopped targets would fill it): the warning
/// comes through aya-log into the daemon's log, with the tgid and the map's return code,
/// and the target runs and is placed as a normal one.
#[test]
fn ebpf_a_stop_the_kernel_cannot_record_is_logged_by_the_kernel() {
    use aya::maps::{HashMap, Map, MapData};
    use ffrtmp::sources::ebpf::ledger::{PodStopKey, PodStopValue, PIN_DIR};
    require!(Ebpf);
    let (_g, mut t) = Fixture::serial("f", "/bin/sleep");
    let w = t.watching(&strict(&t.name, ""));
    let pin = std::fs::read_dir(PIN_DIR)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("stopped-{}-", w.child.id()))
        })
        .expect("the daemon's ledger is pinned");
    let map = Map::HashMap(MapData::from_pin(&pin).unwrap());
    let mut ledger: HashMap<_, PodStopKey, PodStopValue> = HashMap::try_from(map).unwrap();
    // Keys no process has (start times in the far future), stamped now: fresh stops.
    let now = ffrtmp::process::monotonic_ns();
    let fake = |i: u32| {
        PodStopKey(ffrtmp_common::StopKey {
            tgid: i + 1,
            _pad: 0,
            start_ns: u64::MAX - u64::from(i),
        })
    };
    for i in 0..ffrtmp_common::STOPPED_ENTRIES {
        let v = PodStopValue(ffrtmp_common::StopValue { ktime_ns: now });
        if ledger.insert(fake(i), v, 0).is_err() {
            break;
        }
    }
    let pid = t.spawn(&["30"]);
    let said = format!("kernel: strict target tgid {pid} not stopped: its stop could not be recorded in the ledger (map insert returned -7)");
    let logged = wait_until(Duration::from_secs(10), || w.log_text().contains(&said));
    let placed = wait_until(Duration::from_secs(10), || t.is_placed(pid));
    for i in 0..ffrtmp_common::STOPPED_ENTRIES {
        let _ = ledger.remove(&fake(i));
    }
    assert!(logged, "no kernel warning {said:?}:\n{}", w.log_text());
    assert!(placed, "not placed:\n{}", w.log_text());
    assert_ne!(state_of(pid), Some('T'), "left stopped");
    w.stop();
}
