//! Root test: a CPU quota the daemon applies is enforced by the kernel — a busy loop is
//! held to its quota (measured from the job cgroup's own CPU accounting, ±15 %). Alone in
//! its test binary so no other test's load skews the measurement.

mod support;

use std::time::{Duration, Instant};

use support::*;

#[test]
fn busy_loop_is_held_to_its_cpu_quota() {
    require!(Root);
    let (dir, mut root, name, sh) = Fixture::new("c", "/bin/sh").parts();
    let pid = root.own(spawn_in(&sh, &["-c", "while :; do :; done"], dir.path()));
    let yaml = format!(
        "scan_interval: 200ms\ntarget_commands: [{name}]\ndefault_limits:\n  cpu_quota: 30\n"
    );
    let d = scanning(&dir, &root, &yaml);
    let job = root.job(&format!("auto-{name}-{pid}"));
    assert!(
        wait_until(Duration::from_secs(10), || root.is_in(pid, &job)),
        "{}",
        d.log_text()
    );
    std::thread::sleep(Duration::from_millis(300));

    let usage = || {
        root.backend
            .usage(&job)
            .cpu_usec
            .expect("the job cgroup accounts CPU time")
    };
    let (u0, t0) = (usage(), Instant::now());
    std::thread::sleep(Duration::from_secs(4));
    let (u1, t1) = (usage(), Instant::now());
    let share = (u1 - u0) as f64 / 1e6 / (t1 - t0).as_secs_f64();
    eprintln!("busy loop under cpu_quota 30: {:.3} of a core", share);
    assert!(
        (0.255..=0.345).contains(&share),
        "CPU share {share:.3} is not 0.30 ±15 %"
    );
}
