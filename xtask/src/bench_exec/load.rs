//! Load and cost: the exec storm, the daemon's memory, and the placement's steps timed
//! one by one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::{daemon_latencies, placed_under, summary, Scene, HIERARCHIES};

pub(super) fn storm(bin: &Path, n: usize) -> Result<()> {
    // A control run without targets: what the non-target execs alone cost the daemon.
    storm_run(bin, n, None)?;
    storm_run(bin, n, Some(20))
}

/// `every`: one exec in `every` is a target.
fn storm_run(bin: &Path, n: usize, every: Option<usize>) -> Result<()> {
    let scene = Scene::new("storm")?;
    let name = format!("{}t", scene.tag);
    let target = scene.copy("/bin/sleep", &name)?;
    let d = scene.daemon(bin, &[&name], "", "info")?;
    let cpu0 = d.cpu_seconds();
    let next = Arc::new(AtomicUsize::new(0));
    let targets: Arc<Mutex<Vec<Child>>> = Arc::default();
    let started = Instant::now();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (next, targets, target) = (next.clone(), targets.clone(), target.clone());
            std::thread::spawn(move || -> std::io::Result<()> {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok(());
                    }
                    if every.is_some_and(|e| i % e == 0) {
                        let c = Command::new(&target).arg("20").spawn()?;
                        targets.lock().unwrap().push(c);
                    } else {
                        Command::new("/bin/true").status()?;
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap()?;
    }
    let took = started.elapsed();
    let mut kids = std::mem::take(&mut *targets.lock().unwrap());
    let want: Vec<u32> = kids.iter().map(|c| c.id()).collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut unplaced: Vec<u32> = want.clone();
    while !unplaced.is_empty() && Instant::now() < deadline {
        unplaced.retain(|p| !placed_under(*p, &scene.root));
        std::thread::sleep(Duration::from_millis(100));
    }
    let (u1, s1) = d.cpu_seconds();
    let (user, sys) = (u1 - cpu0.0, s1 - cpu0.1);
    let cpu = user + sys;
    let log = d.stop();
    for c in &mut kids {
        let _ = c.kill();
        let _ = c.wait();
    }
    let lost_events: u64 = log
        .lines()
        .filter_map(|l| {
            l.split("eBPF: ")
                .nth(1)?
                .split(" exec event(s) lost")
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    let by_event = daemon_latencies(&log);
    let targets_n = want.len();
    println!("== exec storm: {n} execs in {:.1} s ({:.0}/s) from 2 threads, {targets_n} targets ({:.0} %) ==", took.as_secs_f64(), n as f64 / took.as_secs_f64(), targets_n as f64 * 100.0 / n as f64);
    println!("targets never placed: {}", unplaced.len());
    if targets_n > 0 {
        println!(
            "targets placed from exec events: {} (the rest by a reconciliation after a loss)",
            want.iter().filter(|p| by_event.contains_key(p)).count()
        );
    }
    println!("events dropped (ring buffer full / read failures, daemon log): {lost_events}");
    println!(
        "daemon CPU time: {cpu:.2} s (user {user:.2} s, system {sys:.2} s), {:.1} ms per 1000 execs{}",
        cpu * 1000.0 / (n as f64 / 1000.0),
        if targets_n > 0 { format!(", {:.2} ms per placed target", cpu * 1000.0 / targets_n as f64) } else { String::new() }
    );
    println!(
        "{}",
        summary(
            "daemon exec→placed during the storm",
            by_event.values().copied().collect()
        )
    );
    Ok(())
}

pub(super) fn rss(bin: &Path, n: usize) -> Result<()> {
    let scene = Scene::new("rss")?;
    let name = format!("{}t", scene.tag);
    let target = scene.copy("/bin/sleep", &name)?;
    let d = scene.daemon(bin, &[&name], "", "info")?;
    std::thread::sleep(Duration::from_secs(2));
    let idle = (d.status_kb("VmRSS:"), d.status_kb("VmHWM:"));
    let mut kids = Vec::new();
    for _ in 0..n {
        kids.push(Command::new(&target).arg("300").spawn()?);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut waiting: Vec<u32> = kids.iter().map(|c| c.id()).collect();
    while !waiting.is_empty() && Instant::now() < deadline {
        waiting.retain(|p| !placed_under(*p, &scene.root));
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    let busy = (d.status_kb("VmRSS:"), d.status_kb("VmHWM:"));
    let _ = d.stop();
    for c in &mut kids {
        let _ = c.kill();
        let _ = c.wait();
    }
    println!("== daemon memory ==");
    println!("idle: RSS {} KiB (peak {} KiB)", idle.0, idle.1);
    println!(
        "{} governed processes ({} not placed within 60 s): RSS {} KiB (peak {} KiB)",
        n,
        waiting.len(),
        busy.0,
        busy.1
    );
    Ok(())
}

/// Time the file operations of one placement on this host, done directly.
pub(super) fn steps(n: usize) -> Result<()> {
    let scene = Scene::new("steps")?;
    let mut facts = Vec::new();
    let mut mkdir = Vec::new();
    let mut limit = Vec::new();
    let mut mv = Vec::new();
    let mut verify = Vec::new();
    let mut rmdir = Vec::new();
    let base = |h: &str, job: &str| {
        PathBuf::from("/sys/fs/cgroup")
            .join(h)
            .join(scene.root.trim_start_matches('/'))
            .join(job)
    };
    for i in 0..n {
        let job = format!("job{i}");
        let mut c = Command::new("/bin/sleep").arg("5").spawn()?;
        let pid = c.id().to_string();
        // What the daemon reads before deciding (pin, match, filters, parent).
        let t = Instant::now();
        let ppid = std::process::id();
        for f in ["stat", "cmdline", "status", "cgroup"] {
            let _ = std::fs::read(format!("/proc/{pid}/{f}"));
        }
        for l in ["exe", "cwd"] {
            let _ = std::fs::read_link(format!("/proc/{pid}/{l}"));
        }
        let _ = std::fs::read(format!("/proc/{ppid}/stat"));
        let _ = std::fs::read(format!("/proc/{ppid}/cmdline"));
        let _ = std::fs::read_link(format!("/proc/{ppid}/exe"));
        facts.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        for h in HIERARCHIES {
            std::fs::create_dir(base(h, &job))?;
        }
        mkdir.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        std::fs::write(base("cpu", &job).join("cpu.shares"), "1024")?;
        let back = std::fs::read_to_string(base("cpu", &job).join("cpu.shares"))?;
        limit.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(back.trim(), "1024");
        let t = Instant::now();
        for h in HIERARCHIES {
            std::fs::write(base(h, &job).join("cgroup.procs"), &pid)?;
        }
        mv.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        let _ = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        verify.push(t.elapsed().as_secs_f64() * 1e6);
        let _ = c.kill();
        let _ = c.wait();
        let t = Instant::now();
        for h in HIERARCHIES {
            while std::fs::remove_dir(base(h, &job)).is_err() {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        rmdir.push(t.elapsed().as_secs_f64() * 1e6);
    }
    println!("== placement steps done directly, {n} rounds (v1: cpu, cpuacct, memory, pids) ==");
    println!(
        "{}",
        summary(
            "read the process facts (9 /proc files of it and its parent)",
            facts
        )
    );
    println!("{}", summary("mkdir job cgroup in 4 hierarchies", mkdir));
    println!("{}", summary("write + read back cpu.shares", limit));
    println!(
        "{}",
        summary("move: write cgroup.procs in 4 hierarchies", mv)
    );
    println!("{}", summary("verify: read /proc/PID/cgroup", verify));
    println!(
        "{}",
        summary("rmdir job cgroup in 4 hierarchies (after exit)", rmdir)
    );
    Ok(())
}
