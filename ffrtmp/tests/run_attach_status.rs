//! Root tests of `ffrtmp run`, `ffrtmp attach` and `ffrtmp status` on real cgroups.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

const SECS: Duration = Duration::from_secs(10);

fn run_cmd(root: &TestRoot, job: &str, cmd: &[&str]) -> Command {
    let mut c = ffrtmp_cmd();
    c.args([
        "run",
        "--cpu-quota",
        "20",
        "--memory-limit",
        "64",
        "--pids-max",
        "32",
        "--cgroup-root",
        &root.path,
        "--job-id",
        job,
        "--",
    ])
    .args(cmd)
    .env_remove("RUST_BACKTRACE");
    c
}

#[test]
fn run_starts_the_command_inside_its_cgroup_and_returns_its_exit_code() {
    require!(Root);
    let root = TestRoot::new();
    let job = format!("run-{}", unique());
    let cg = root.job(&job);
    // The command's very first output is its own /proc/self/cgroup.
    let out = run_cmd(
        &root,
        &job,
        &["/bin/sh", "-c", "cat /proc/self/cgroup; exit 7"],
    )
    .output()
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = ffrtmp::process::parse_cgroup_file(&String::from_utf8_lossy(&out.stdout));
    assert!(
        root.backend.is_member(&cg, &lines),
        "command ran outside {cg}: {lines:?}"
    );
    assert!(
        !root.exists(&cg),
        "cgroup left behind after the command exited"
    );

    fails(
        &mut run_cmd(&root, &job, &["/nonexistent/binary"]),
        127,
        &["cannot start /nonexistent/binary"],
    );
}

#[test]
fn run_forwards_term_and_survives_being_killed() {
    require!(Root);
    let (_dir, mut root, name, sleeper) = Fixture::new("k", "/bin/sleep").parts();

    // SIGTERM to `ffrtmp run` reaches the command; its status comes back (128 + 15).
    let job = format!("run-{}", unique());
    let mut wrapper = run_cmd(&root, &job, &["sleep", "30"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    root.populated(&root.job(&job), SECS);
    // SAFETY: our own child.
    unsafe { libc::kill(wrapper.id() as i32, libc::SIGTERM) };
    let st = wrapper.wait().unwrap();
    assert_eq!(st.code(), Some(143), "{st:?}");

    // SIGKILL of `ffrtmp run` leaves the command running in its cgroup.
    let job = format!("run-{}", unique());
    let mut wrapper = run_cmd(&root, &job, &[sleeper.to_str().unwrap(), "30"])
        .spawn()
        .unwrap();
    let cg = root.job(&job);
    let workload = root.populated(&cg, SECS)[0];
    wrapper.kill().unwrap();
    wrapper.wait().unwrap();
    // A signal its death sent (a parent-death signal, a group kill) is pending by now.
    let status = std::fs::read_to_string(format!("/proc/{workload}/status")).unwrap();
    for pending in ["SigPnd:", "ShdPnd:"] {
        let line = status.lines().find(|l| l.starts_with(pending)).unwrap();
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
    let stat = ffrtmp::process::ProcFs::system().stat(workload).unwrap();
    assert_eq!(String::from_utf8_lossy(&stat.comm), name);
    assert!(!stat.is_zombie());
    assert!(root.is_in(workload, &cg));
    root.own(wrapper);
}

#[test]
fn attach_places_and_returns_and_wait_cleans_up() {
    require!(Root);
    let (dir, mut root, _, sleeper) = Fixture::new("a", "/bin/sleep").parts();
    let pid = root.own(spawn_in(&sleeper, &["60"], dir.path()));
    let out = succeeds(ffrtmp_cmd().args([
        "attach",
        "--pid",
        &pid.to_string(),
        "--cpu-quota",
        "25",
        "--memory-limit",
        "32",
        "--cgroup-root",
        &root.path,
    ]));
    let cg = root.job(&format!("attach-{pid}"));
    assert!(root.is_in(pid, &cg));
    let limits = root.backend.read_limits(&cg);
    assert_eq!(limits.cpu_quota, Some(25));
    assert_eq!(limits.memory_limit, Some(32));
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains(&format!("Attached PID {pid} as job attach-{pid}")));

    // --wait returns when the process exits and removes the cgroup.
    let short = spawn_in(&sleeper, &["1"], dir.path());
    let spid = short.id();
    let waiter = ffrtmp_cmd()
        .args([
            "attach",
            "--pid",
            &spid.to_string(),
            "--job-id",
            "waited",
            "--wait",
            "--cgroup-root",
            &root.path,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    root.own(short);
    let out = waiter.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("removed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!root.exists(&root.job("waited")));

    fails(
        ffrtmp_cmd().args(["attach", "--pid", "999999999", "--cgroup-root", &root.path]),
        1,
        &["no running process with PID 999999999"],
    );
}

#[test]
fn run_and_attach_refuse_a_job_id_that_names_a_pool() {
    require!(Root);
    let mut root = TestRoot::new();
    let pool = root.job("live");
    root.backend.create(&pool).unwrap();
    root.backend
        .create(&format!("{pool}/auto-ffmpeg-1"))
        .unwrap();
    let before = root.backend.read_limits(&pool);
    let says = ["holds other cgroups (auto-ffmpeg-1)", "--job-id"];
    fails(&mut run_cmd(&root, "live", &["/bin/true"]), 2, &says);
    let dir = tempfile::tempdir().unwrap();
    let pid = root.own(spawn_in(Path::new("/bin/sleep"), &["60"], dir.path()));
    let mut attach = ffrtmp_cmd();
    attach
        .args(["attach", "--pid", &pid.to_string(), "--cpu-quota", "25"])
        .args(["--cgroup-root", &root.path, "--job-id", "live"]);
    fails(&mut attach, 2, &says);
    assert!(!root.is_in(pid, &pool), "attached into the pool");
    assert_eq!(
        root.backend.read_limits(&pool),
        before,
        "the pool's limits were written"
    );
}

#[test]
fn status_shows_governed_processes_with_live_numbers() {
    require!(Root);
    let (dir, mut root, name, sh) = Fixture::new("s", "/bin/sh").parts();
    // Once placed, it holds 10 MB and keeps a CPU busy (within its quota): numbers to show.
    let (go, script) = after_go(&dir, "cat /dev/zero | tail -c 10000000");
    let pid = root.own(spawn_in(&sh, &["-c", &script], dir.path()));
    let yaml = format!("scan_interval: 200ms\nstate_flush_interval: 1s\ntarget_commands: [{name}]\ndefault_limits:\n  memory_limit: 64\n  cpu_quota: 10\n");
    let d = scanning(&dir, &root, &yaml);
    let job = root.job(&format!("auto-{name}-{pid}"));
    assert!(wait_until(SECS, || root.is_in(pid, &job)));
    std::fs::write(&go, "").unwrap();
    assert!(wait_until(SECS, || std::fs::read_to_string(&d.state)
        .is_ok_and(|s| s.contains(&job))));
    let status_json = || -> serde_json::Value {
        let out = succeeds(
            ffrtmp_cmd()
                .args(["status", "--json", "--state-path"])
                .arg(&d.state),
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // The job's numbers grow as it runs (slowly under a 10 % quota on an emulated CPU):
    // wait until status shows the 10 MB it holds.
    let mut v = status_json();
    wait_until(Duration::from_secs(30), || {
        v = status_json();
        v["processes"][0]["usage"]["memory_bytes"]
            .as_u64()
            .is_some_and(|b| b > 5_000_000)
    });
    let p = &v["processes"][0];
    assert_eq!(p["pid"], pid);
    assert_eq!(p["cgroup"], job);
    assert_eq!(p["alive"], true);
    assert_eq!(p["limits"]["memory_limit"], 64);
    assert_eq!(p["limits"]["cpu_quota"], 10);
    assert!(
        p["usage"]["memory_bytes"]
            .as_u64()
            .is_some_and(|b| b > 5_000_000),
        "{p}"
    );
    assert!(
        p["usage"]["cpu_usec"].as_u64().is_some_and(|u| u > 1000),
        "{p}"
    );
    assert_eq!(v["health"]["status"], "healthy");
    let text = ffrtmp_cmd()
        .args(["status", "--state-path"])
        .arg(&d.state)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("Health: healthy") && text.contains(&format!("auto-{name}-{pid}")),
        "{text}"
    );
}

/// `ffrtmp run --cgroup-root R2` while the daemon uses R: the daemon never moves the job
/// (the predecessor did, within a second), because run registered R2 in the runtime
/// directory they share. With `--cgroup-root auto` run uses the root the daemon published.
#[test]
fn the_daemon_never_moves_a_job_of_ffrtmp_run_whatever_its_root() {
    require!(Root);
    let dir = tempfile::tempdir().unwrap();
    let daemon_root = TestRoot::new();
    let other_root = TestRoot::new();
    let name = format!("r{}", unique().replace('-', ""));
    let name = &name[..name.len().min(14)];
    let bin = named_copy(dir.path(), "/bin/sleep", name);
    let d = Daemon::new(
        dir.path(),
        &daemon_root,
        &format!("target_commands: [{name}]\nscan_interval: 200ms\nreconcile_interval: 1s\n"),
    )
    .fallback_scan()
    .start();
    d.logs("Scan complete");
    let run_dir = dir.path().join("run");
    assert_eq!(
        ffrtmp::placer::registry::published_root(&run_dir).as_deref(),
        Some(daemon_root.path.as_str()),
        "the daemon published its root"
    );
    let spawn_run = |root: &str, job: &str| {
        let mut c = ffrtmp_cmd();
        c.env(ffrtmp::placer::registry::RUNTIME_DIR_ENV, &run_dir)
            .args(["run", "--cgroup-root", root, "--job-id", job, "--"])
            .arg(&bin)
            .arg("30")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        spawn_retrying(&mut c)
    };
    let mut other = spawn_run(&other_root.path, "job-other");
    let mut auto = spawn_run("auto", "job-auto");
    let child_of = |run: &std::process::Child| first_child(run.id(), |_| true);
    let (p_other, p_auto) = (child_of(&other), child_of(&auto));
    let cg_other = other_root.job("job-other");
    let cg_auto = daemon_root.job("job-auto");
    assert!(wait_until(SECS, || other_root.is_in(p_other, &cg_other)));
    assert!(
        wait_until(SECS, || daemon_root.is_in(p_auto, &cg_auto)),
        "auto did not use the daemon's root"
    );
    // Two reconciliation scans later both are where run put them.
    let scans = scans_in(&d.log_text());
    assert!(wait_until(SECS, || scans_in(&d.log_text()) >= scans + 2));
    assert!(
        other_root.is_in(p_other, &cg_other),
        "the daemon moved the job under the other root:\n{}",
        d.log_text()
    );
    assert!(daemon_root.is_in(p_auto, &cg_auto), "{}", d.log_text());
    let (_, log) = d.stop_code();
    assert!(
        !log.contains(&format!("Attaching to PID {p_other} ")),
        "{log}"
    );
    for c in [&mut other, &mut auto] {
        // SAFETY: our own children.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let _ = c.wait();
    }
}
