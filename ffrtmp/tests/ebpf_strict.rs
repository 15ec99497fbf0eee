//! Root integration tests of strict placement (the kernel stops a target at exec; the
//! daemon places it and continues it), on this host's real kernel and real v1 cgroups:
//! the target's first view of itself is inside its cgroup, a target whose placement fails
//! still runs, and no path leaves a process stopped. Same rules as `ebpf_root.rs`.

mod support;
#[macro_use]
mod ebpf_support;

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use ebpf_support::{finish_all, job, serial, strict_script, tag, wait_exit, Watch};
use support::{named_copy, wait_until, TestRoot};

#[test]
fn ebpf_strict_target_is_inside_its_cgroup_before_it_runs() {
    require_ebpf!();
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let root = TestRoot::new();
    let name = format!("{}s", tag());
    let w = Watch::start(
        dir.path(),
        &root,
        &format!("target_commands: [{name}]\nplacement: strict\n"),
        &[],
        &[],
        &[],
    );
    w.ready();
    let sh = named_copy(dir.path(), "/bin/dash", &name);
    for round in 0..5 {
        let out = dir.path().join(format!("cgroup-{round}"));
        let mut c = Command::new(&sh)
            .args(["-c", &strict_script(&out)])
            .spawn()
            .unwrap();
        let pid = c.id();
        let status = wait_exit(&mut c, Duration::from_secs(10));
        if status.is_none() {
            let _ = c.kill();
        }
        assert!(
            status.is_some_and(|s| s.success()),
            "round {round}: strict target did not finish: {status:?}\n{}",
            w.log_text()
        );
        let seen = ffrtmp::process::parse_cgroup_file(&std::fs::read_to_string(&out).unwrap());
        let cg = job(&root, &name, pid);
        assert!(
            root.backend.is_member(&cg, &seen),
            "round {round}: the target's first view of itself was outside {cg}: {seen:?}"
        );
    }
    let log = w.stop();
    assert!(log.contains("exec→placed"), "{log}");
}

#[test]
fn ebpf_strict_target_whose_placement_fails_still_runs() {
    require_ebpf!();
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let root = TestRoot::new();
    if root.mode() != ffrtmp::placer::CgroupMode::V1 {
        ebpf_support::skipped(
            module_path!(),
            "makes cgroup creation fail by removing the root from one v1 hierarchy",
        );
        return;
    }
    let name = format!("{}x", tag());
    let w = Watch::start(
        dir.path(),
        &root,
        &format!("target_commands: [{name}]\nplacement: strict\n"),
        &[],
        &[],
        &[],
    );
    w.ready();
    // Remove the root (with any empty cgroups the daemon keeps under it) from the pids
    // hierarchy: no job cgroup can be created or entered there any more.
    let pids_root = Path::new("/sys/fs/cgroup/pids").join(root.path.trim_start_matches('/'));
    let gone = wait_until(Duration::from_secs(5), || {
        for e in std::fs::read_dir(&pids_root)
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.path().is_dir() {
                let _ = std::fs::remove_dir(e.path());
            }
        }
        let _ = std::fs::remove_dir(&pids_root);
        !pids_root.exists()
    });
    assert!(gone, "cannot remove {}", pids_root.display());
    let sh = named_copy(dir.path(), "/bin/dash", &name);
    let marker = dir.path().join("ran");
    let mut c = Command::new(&sh)
        .args(["-c", &format!("echo ran > {}", marker.display())])
        .spawn()
        .unwrap();
    let pid = c.id();
    let status = wait_exit(&mut c, Duration::from_secs(10));
    if status.is_none() {
        // SAFETY: our own child; continue it so the kill below is not left pending.
        unsafe { libc::kill(pid as i32, libc::SIGCONT) };
        let _ = c.kill();
    }
    assert!(
        status.is_some_and(|s| s.success()),
        "the target was left stopped or failed: {status:?}\n{}",
        w.log_text()
    );
    assert!(marker.exists());
    let log = w.stop();
    assert!(log.contains(&format!("Failed to place PID {pid}")), "{log}");
    // Re-create it so TestRoot's cleanup finds what it expects.
    let _ = std::fs::create_dir(&pids_root);
}

#[test]
fn ebpf_strict_never_leaves_a_process_stopped() {
    require_ebpf!();
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let root = TestRoot::new();
    let long = format!("{}-strict-long-name", tag());
    // Shares the first 15 bytes: the kernel stops it, user space refuses it.
    let impostor = format!("{}-other", &long[..15]);
    let w = Watch::start(
        dir.path(),
        &root,
        &format!("target_commands: [{long}]\nplacement: strict\n"),
        &[],
        &[],
        &[],
    );
    w.ready();
    let run = |name: &str| -> Child {
        let sh = dir.path().join(name);
        if !sh.exists() {
            named_copy(dir.path(), "/bin/dash", name);
        }
        Command::new(&sh).args(["-c", "exit 0"]).spawn().unwrap()
    };
    let mut c = run(&impostor);
    let status = wait_exit(&mut c, Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "the prefix impostor stayed stopped: {status:?}\n{}",
        w.log_text()
    );

    // Stop the daemon, let targets be stopped by the kernel, then shut the daemon down:
    // whether it handles the events or drains them at shutdown, every one is continued.
    w.signal(libc::SIGSTOP);
    let kids: Vec<Child> = (0..5).map(|_| run(&long)).collect();
    std::thread::sleep(Duration::from_millis(200));
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

/// The reader itself, without a daemon: events it read but could not hand over, and events
/// still in the ring, are continued when its task is aborted (what shutdown does).
#[test]
fn ebpf_reader_continues_stopped_processes_it_never_handed_over() {
    use ffrtmp::sources::{ebpf, EventSource, SourceEvent};
    require_ebpf!();
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let name = format!("{}d", tag());
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        format!("target_commands: [{name}]\nplacement: strict\n"),
    )
    .unwrap();
    let settings = ffrtmp::config::load(&ffrtmp::config::Sources {
        config_file: Some(&config),
        env: &ffrtmp::config::EnvVars::default(),
        flags: &ffrtmp::config::FlagOverrides::default(),
        passwd: Path::new("/etc/passwd"),
    })
    .unwrap();
    let started = ebpf::start(&settings, &ebpf::LoadOptions::parse(None, None).unwrap()).unwrap();
    let sh = named_copy(dir.path(), "/bin/dash", &name);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (kids, handed_over) = rt.block_on(async {
        // Room for one notice: the reader blocks on the second, with more read or in the ring.
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let task = Box::new(started.source).spawn(tx);
        let kids: Vec<Child> = (0..4)
            .map(|_| Command::new(&sh).args(["-c", "exit 0"]).spawn().unwrap())
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        task.abort();
        let _ = task.await;
        // What reached the channel is the daemon's to continue (it drains it at shutdown).
        let mut handed_over = Vec::new();
        while let Ok(SourceEvent::Exec(n)) = rx.try_recv() {
            handed_over.push(n.pid);
        }
        (kids, handed_over)
    });
    assert_eq!(handed_over.len(), 1, "the channel holds one notice");
    for pid in &handed_over {
        // SAFETY: our own child, stopped by the kernel; this is the daemon's part.
        unsafe { libc::kill(*pid as i32, libc::SIGCONT) };
    }
    for (pid, status) in finish_all(kids, Duration::from_secs(5)) {
        assert!(
            status.is_some_and(|s| s.success()),
            "PID {pid} left stopped: {status:?}"
        );
    }
}
