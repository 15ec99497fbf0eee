//! Root tests of pools and reloads against the kernel's real cgroups (v1 on this host, v2
//! in the VM tier), with enforcement measured from the cgroups' own CPU accounting. Alone
//! in their test binary, one at a time (`serial`), so no other test's load skews a share.

mod support;

use std::time::{Duration, Instant};

use support::*;

const SECS: Duration = Duration::from_secs(10);
const BUSY: &[&str] = &["-c", "while :; do :; done"];

/// The CPU a cgroup used per second of wall time over `over` (its own accounting, which
/// counts its children's).
fn share(root: &TestRoot, cgroup: &str, over: Duration) -> f64 {
    let usage = || {
        root.backend
            .usage(cgroup)
            .cpu_usec
            .expect("the cgroup accounts CPU time")
    };
    let (u0, t0) = (usage(), Instant::now());
    std::thread::sleep(over);
    let (u1, t1) = (usage(), Instant::now());
    (u1 - u0) as f64 / 1e6 / (t1 - t0).as_secs_f64()
}

/// Start a busy loop of the fixture's target (a shell) in its directory.
fn busy(f: &mut Fixture) -> u32 {
    f.root.own(spawn_in(&f.bin, BUSY, f.dir.path()))
}

fn pooled_yaml(name: &str, pool: &str, job: &str) -> String {
    format!(
        "scan_interval: 200ms\ntarget_commands: [{name}]\ndefault_limits:\n{job}\npools:\n  live:\n    limits:\n{pool}\ndefault_pool: live\n"
    )
}

#[test]
fn three_busy_targets_in_a_pool_are_held_to_its_one_core_together() {
    require!(Root);
    let (_one_at_a_time, mut f) = Fixture::serial("p", "/bin/sh");
    let pids: Vec<u32> = (0..3).map(|_| busy(&mut f)).collect();
    let (root, name) = (&f.root, &f.name);
    // Each is allowed a core and a half; the pool one core for all three. (cgroup v1
    // refuses a child's CPU quota above its parent's: there each job gets the pool's.)
    let yaml = pooled_yaml(name, "      cpu_quota: 100", "  cpu_quota: 150");
    let d = scanning(&f.dir, root, &yaml);
    let pool = root.job("live");
    for pid in &pids {
        let job = root.job(&format!("live/auto-{name}-{pid}"));
        d.expect(
            SECS,
            || root.is_in(*pid, &job),
            &format!("{pid} not placed in {job}"),
        );
    }
    let job = root.job(&format!("live/auto-{name}-{}", pids[0]));
    let quota = match root.mode() {
        ffrtmp::placer::CgroupMode::V1 => root.read(&job, "cpu", "cpu.cfs_quota_us"),
        ffrtmp::placer::CgroupMode::V2 => root.read(&job, "", "cpu.max"),
    };
    let want = match root.mode() {
        ffrtmp::placer::CgroupMode::V1 => "100000",
        ffrtmp::placer::CgroupMode::V2 => "150000 100000",
    };
    assert_eq!(quota, want, "the job's own quota in its pool");
    assert!(!d.log_text().contains("NOT applied"), "{}", d.log_text());
    std::thread::sleep(Duration::from_millis(300));
    let together = share(root, &pool, Duration::from_secs(4));
    eprintln!("three busy targets in a pool of cpu_quota 100: {together:.3} of a core");
    assert!(
        (0.85..=1.15).contains(&together),
        "the pool used {together:.3} cores, not 1.0 ±15 % (each job alone may use 1.0; the machine has {} CPUs)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    d.logs("Limits of pool live: cpu_quota=100%");
}

#[test]
fn a_reload_from_50_to_25_halves_a_running_targets_share() {
    require!(Root);
    let (_one_at_a_time, mut f) = Fixture::serial("r", "/bin/sh");
    let pid = busy(&mut f);
    let (root, name) = (&f.root, &f.name);
    let yaml = format!(
        "scan_interval: 200ms\ntarget_commands: [{name}]\ndefault_limits:\n  cpu_quota: 50\n"
    );
    let d = scanning(&f.dir, root, &yaml);
    let job = root.job(&format!("auto-{name}-{pid}"));
    d.expect(SECS, || root.is_in(pid, &job), "not placed");
    std::thread::sleep(Duration::from_millis(300));
    let before = share(root, &job, Duration::from_secs(3));
    std::fs::write(&d.config, yaml.replace("cpu_quota: 50", "cpu_quota: 25")).unwrap();
    d.signal(libc::SIGHUP);
    let line = format!("Limits of job auto-{name}-{pid} changed: cpu_quota 50 → 25");
    d.logs(&line);
    std::thread::sleep(Duration::from_millis(300));
    let after = share(root, &job, Duration::from_secs(3));
    eprintln!("a running busy target: {before:.3} of a core at cpu_quota 50, {after:.3} after the reload to 25");
    assert!(
        (0.425..=0.575).contains(&before),
        "{before:.3} is not 0.50 ±15 %"
    );
    assert!(
        (0.2125..=0.2875).contains(&after),
        "{after:.3} is not 0.25 ±15 %"
    );
    let state = std::fs::read_to_string(&d.state).unwrap();
    assert!(
        state.contains("\"cpu_quota\": 25"),
        "the state file says the limits in force: {state}"
    );
}

#[test]
fn a_pools_memory_limit_oom_kills_inside_the_pool_and_nowhere_else() {
    require!(Root);
    let (_one_at_a_time, f) = Fixture::serial("o", "/bin/sh");
    let (dir, mut root, name, sh) = f.parts();
    // Waits to be placed (the test creates `go`), then grows without bound.
    let (go, script) = after_go(&dir, "exec tail /dev/zero");
    let mut hog = spawn_in(&sh, &["-c", &script], dir.path());
    let hog_pid = hog.id();
    let calm = root.own(spawn_in(
        &sh,
        &["-c", "while :; do sleep 1; done"],
        dir.path(),
    ));
    let bystander = root.own(spawn_in(Path::new("/bin/sleep"), &["60"], dir.path()));
    // No job limit: only the pool's 64 MiB bounds the hog.
    let yaml = pooled_yaml(&name, "      memory_limit: 64", "  cpu_weight: 100");
    let d = scanning(&dir, &root, &yaml);
    let hog_job = root.job(&format!("live/auto-{name}-{hog_pid}"));
    d.expect(SECS, || root.is_in(hog_pid, &hog_job), "hog not placed");
    d.expect(
        SECS,
        || root.is_in(calm, &root.job(&format!("live/auto-{name}-{calm}"))),
        "calm sibling not placed",
    );
    assert_eq!(
        root.backend.read_limits(&hog_job).memory_limit,
        None,
        "the hog's own job has no memory limit"
    );
    std::fs::write(&go, "").unwrap();
    let status = wait_exit(&mut hog, SECS).expect("the hog was not killed");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "expected an OOM kill, got {status:?}"
    );
    // The pool's limit was hit (the kernel's own count), not a job's.
    let pool = root.job("live");
    let hits: u64 = match root.mode() {
        ffrtmp::placer::CgroupMode::V1 => root
            .read(&pool, "memory", "memory.failcnt")
            .parse()
            .unwrap(),
        ffrtmp::placer::CgroupMode::V2 => root.backend.usage(&pool).oom_kills.unwrap_or(0),
    };
    assert!(hits >= 1, "the pool's memory limit was never hit");
    for (pid, who) in [
        (calm, "its calm sibling in the pool"),
        (bystander, "a process outside the pool"),
    ] {
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "{who} (PID {pid}) was killed too"
        );
    }
}

use std::path::Path;
