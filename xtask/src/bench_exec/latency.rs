//! Exec → placed, one target at a time: ffrtmp (normal and strict) and, for comparison,
//! cgrulesengd under the same harness.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::{
    daemon_latencies, placed_under, placement_times, receipt_times, summary, Scene, HIERARCHIES,
};

pub(super) fn latency(bin: &Path, n: usize, strict: bool) -> Result<()> {
    let scene = Scene::new(if strict { "strict" } else { "latency" })?;
    let name = format!("{}t", scene.tag);
    let target = scene.copy("/bin/sleep", &name)?;
    let d = scene.daemon(
        bin,
        &[&name],
        if strict { "placement: strict\n" } else { "" },
        "trace",
    )?;
    // Targets stay alive until the end, so exits (and their cgroup removal) do not
    // interleave with the placements measured; the storm measures churn.
    let Outside {
        outside,
        missed,
        mut alive,
    } = exec_one_at_a_time(&target, &scene.root, n)?;
    let pids: Vec<u32> = alive.iter().map(|c| c.id()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let log = d.stop();
    for c in &mut alive {
        let _ = c.kill();
        let _ = c.wait();
    }
    let own = daemon_latencies(&log);
    let inside: Vec<f64> = pids.iter().filter_map(|p| own.get(p).copied()).collect();
    let mode = if strict { "strict" } else { "normal" };
    println!("== exec → placed, placement {mode}, {n} target execs one at a time ==");
    println!("{}", summary("outside (spawn returned → /proc/PID/cgroup shows a job cgroup in cpu,cpuacct,memory,pids)", outside));
    println!(
        "{}",
        summary("daemon (kernel exec timestamp → move verified)", inside)
    );
    println!(
        "{}",
        summary(
            "  of which exec → event received by the daemon",
            receipt_times(&log)
        )
    );
    println!(
        "{}",
        summary(
            "  of which the placement itself (placer: cgroup, limits, move, verify)",
            placement_times(&log)
        )
    );
    println!("not placed within 2 s: {missed}");
    let unlogged: Vec<&u32> = pids.iter().filter(|p| !own.contains_key(p)).collect();
    if !unlogged.is_empty() {
        println!(
            "placements without an exec→placed log line: {}",
            unlogged.len()
        );
        for p in unlogged.iter().take(3) {
            let needle = format!("PID {p} ");
            for l in log.lines().filter(|l| l.contains(&needle)).take(4) {
                println!("  {l}");
            }
        }
    }
    Ok(())
}

/// The outside measurement of `latency`, with cgrulesengd moving the targets into one
/// existing cgroup (what it does: no cgroup per process, no limits written).
pub(super) fn cgrulesengd(n: usize) -> Result<()> {
    const RULES: &str = "/etc/cgrules.conf";
    if Path::new(RULES).exists() {
        bail!("{RULES} exists: not overwriting another configuration of cgrulesengd");
    }
    let Some(daemon) = ["/usr/sbin/cgrulesengd", "/sbin/cgrulesengd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        bail!("cgrulesengd is not installed: apt-get install cgroup-tools");
    };
    let scene = Scene::new("cgrules")?;
    let name = format!("{}t", scene.tag);
    let target = scene.copy("/bin/sleep", &name)?;
    let dest = format!("{}/dest", scene.root);
    for h in HIERARCHIES {
        std::fs::create_dir(
            PathBuf::from("/sys/fs/cgroup")
                .join(h)
                .join(dest.trim_start_matches('/')),
        )?;
    }
    std::fs::write(
        RULES,
        format!(
            "*:{name} cpu,cpuacct,memory,pids {}\n",
            dest.trim_start_matches('/')
        ),
    )?;
    // cgrulesengd refuses to start without /etc/cgconfig.conf and /etc/cgconfig.d; empty
    // ones are made for the run where missing, and removed with the rules.
    let made_conf = !Path::new("/etc/cgconfig.conf").exists()
        && std::fs::write("/etc/cgconfig.conf", "").is_ok();
    let made_confd = std::fs::create_dir("/etc/cgconfig.d").is_ok();
    struct RemoveRules(bool, bool);
    impl Drop for RemoveRules {
        fn drop(&mut self) {
            let _ = std::fs::remove_file("/etc/cgrules.conf");
            if self.0 {
                let _ = std::fs::remove_file("/etc/cgconfig.conf");
            }
            if self.1 {
                let _ = std::fs::remove_dir("/etc/cgconfig.d");
            }
        }
    }
    let _rules = RemoveRules(made_conf, made_confd);
    let mut d = Command::new(daemon).args(["-n", "-Q"]).spawn()?;
    std::thread::sleep(Duration::from_secs(1));
    if let Some(status) = d.try_wait()? {
        bail!("cgrulesengd exited at start ({status}); run `cgrulesengd -d` to see why");
    }
    let Outside {
        outside,
        missed,
        mut alive,
    } = exec_one_at_a_time(&target, &scene.root, n)?;
    let _ = d.kill();
    let _ = d.wait();
    for c in &mut alive {
        let _ = c.kill();
        let _ = c.wait();
    }
    println!("== cgrulesengd, {n} target execs one at a time (moves into one existing cgroup) ==");
    println!("{}", summary("outside (spawn returned → /proc/PID/cgroup shows the cgroup in cpu,cpuacct,memory,pids)", outside));
    println!("not placed within 2 s: {missed}");
    Ok(())
}

/// What the parent saw of N execs of `target`, one at a time.
struct Outside {
    /// µs from `spawn` returning to `/proc/PID/cgroup` showing a cgroup under the root.
    outside: Vec<f64>,
    /// Not placed within 2 s.
    missed: usize,
    /// The targets, still running.
    alive: Vec<std::process::Child>,
}

/// The outside measurement, the same for every governor measured: spawn the target (it
/// returns once the exec is done: std waits on a CLOEXEC pipe), then poll
/// `/proc/PID/cgroup` until every hierarchy shows a cgroup under `root`.
fn exec_one_at_a_time(target: &Path, root: &str, n: usize) -> Result<Outside> {
    let mut out = Outside {
        outside: Vec::with_capacity(n),
        missed: 0,
        alive: Vec::with_capacity(n),
    };
    for _ in 0..n {
        let c = Command::new(target).arg("120").spawn()?;
        let t0 = Instant::now();
        loop {
            if placed_under(c.id(), root) {
                out.outside.push(t0.elapsed().as_secs_f64() * 1e6);
                break;
            }
            if t0.elapsed() > Duration::from_secs(2) {
                out.missed += 1;
                break;
            }
            // Sleep rather than spin: a spinning parent would take one of the two cores
            // the daemon needs. Resolution: the sleep plus timer slack, about 0.1 ms.
            std::thread::sleep(Duration::from_micros(20));
        }
        out.alive.push(c);
    }
    Ok(out)
}
