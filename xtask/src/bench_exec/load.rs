//! Load and cost: the exec storm, a burst of targets at once, the daemon's memory and
//! start-up, and the placement's steps timed one by one.

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{
    daemon_latencies, daemon_nice, loadavg, lost_events, niced, placed_under, print_breakdown,
    summary, Daemon, Scene, HIERARCHIES,
};

pub(super) fn storm(bin: &Path, n: usize) -> Result<()> {
    // The kernel's own steps for one job cgroup, measured in the same run: the floor the
    // daemon's CPU per target is held against.
    let floor = floor_ms(200, false)?;
    println!(
        "== the kernel's own steps for one job cgroup (mkdir, a move in and out, rmdir, in {}), done directly: {floor:.3} ms of CPU per target ==",
        HIERARCHIES.join(", ")
    );
    // What the daemon's way of placing adds in the kernel alone: a spare's cgroup.procs
    // files opened, the move through the open files, the spare's rename to the job's name,
    // and the /proc reads of the decision and the verify.
    let design = floor_ms(200, true)?;
    println!(
        "== the same with the kernel steps of the daemon's design (cgroup.procs opened, the move through the open files, a rename, /proc/PID/stat, status and cgroup read): {design:.3} ms ({:.2}x the floor) ==",
        design / floor
    );
    // A control run without targets: what the non-target execs alone cost the daemon.
    let control = storm_run(bin, n, None, (floor, design))?;
    for every in [50, 20] {
        storm_run(bin, n, Some((every, control)), (floor, design))?;
    }
    Ok(())
}

/// This thread's CPU time, seconds (user and system).
fn thread_cpu() -> f64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// CPU (ms) one job cgroup costs the kernel when its steps are done directly: mkdir in each
/// hierarchy, a process moved in and back out, rmdir; the mean of `rounds`. With `design`,
/// as the daemon does them: each hierarchy's `cgroup.procs` opened ahead, the cgroup
/// renamed (a spare becoming the job), the PID written through the open files, and the
/// process's `/proc` stat, status and cgroup read (identity, containers, verify).
fn floor_ms(rounds: usize, design: bool) -> Result<f64> {
    let scene = Scene::new("floor")?;
    let own: HashMap<String, String> = std::fs::read_to_string("/proc/self/cgroup")?
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            Some(
                ctrls
                    .split(',')
                    .map(|c| (c.to_string(), path.to_string()))
                    .collect::<Vec<_>>(),
            )
        })
        .flatten()
        .collect();
    let dir = |h: &str, rel: &str| {
        PathBuf::from("/sys/fs/cgroup")
            .join(h)
            .join(rel.trim_start_matches('/'))
    };
    let mut total = 0.0;
    for i in 0..rounds {
        let job = format!("{}/floor{i}", scene.root);
        let mut c = Command::new("/bin/sleep").arg("5").spawn()?;
        let pid = c.id().to_string();
        let t = thread_cpu();
        let made = if design {
            format!("{job}-spare")
        } else {
            job.clone()
        };
        for h in HIERARCHIES {
            std::fs::create_dir(dir(h, &made))?;
        }
        if design {
            let mut procs = HIERARCHIES
                .iter()
                .map(|h| {
                    let p = dir(h, &made).join("cgroup.procs");
                    std::fs::OpenOptions::new().write(true).open(p)
                })
                .collect::<std::io::Result<Vec<_>>>()?;
            for f in &mut procs {
                std::io::Write::write_all(f, pid.as_bytes())?;
            }
            for h in HIERARCHIES {
                std::fs::rename(dir(h, &made), dir(h, &job))?;
            }
            for f in ["stat", "status", "cgroup"] {
                std::fs::read(format!("/proc/{pid}/{f}"))?;
            }
        } else {
            for h in HIERARCHIES {
                std::fs::write(dir(h, &job).join("cgroup.procs"), &pid)?;
            }
        }
        for h in HIERARCHIES {
            let back = own
                .get(h)
                .with_context(|| format!("/proc/self/cgroup has no {h} line"))?;
            std::fs::write(dir(h, back).join("cgroup.procs"), &pid)?;
        }
        for h in HIERARCHIES {
            std::fs::remove_dir(dir(h, &job))?;
        }
        total += thread_cpu() - t;
        let _ = c.kill();
        let _ = c.wait();
    }
    Ok(total * 1000.0 / rounds as f64)
}

/// `every`: one exec in `every` is a target (a `sleep 1`: it exits during the run, so its
/// exit and its cgroup's removal are in the daemon's CPU time), and the CPU seconds of the
/// control run. Returns the daemon's CPU seconds.
/// `floors`: the kernel's own steps, plain and as the daemon's design does them (ms).
fn storm_run(
    bin: &Path,
    n: usize,
    targets: Option<(usize, f64)>,
    (floor, design): (f64, f64),
) -> Result<f64> {
    let scene = Scene::new("storm")?;
    let name = format!("{}t", scene.tag);
    let target = scene.copy("/bin/sleep", &name)?;
    let load = loadavg();
    let d = scene.daemon(bin, &[&name], "", "info")?;
    let cpu0 = d.cpu_seconds();
    let clock0 = d.cpu_clock()?;
    let threads0 = d.thread_stats();
    let next = Arc::new(AtomicUsize::new(0));
    let kids: Arc<Mutex<Vec<Child>>> = Arc::default();
    let started = Instant::now();
    let every = targets.map(|t| t.0);
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (next, kids, target) = (next.clone(), kids.clone(), target.clone());
            std::thread::spawn(move || -> std::io::Result<()> {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok(());
                    }
                    if every.is_some_and(|e| i % e == 0) {
                        let c = Command::new(&target).arg("1").spawn()?;
                        kids.lock().unwrap().push(c);
                    } else {
                        Command::new("/bin/true").status()?;
                    }
                }
            })
        })
        .collect();
    // Watch the targets get placed while the storm runs (they live one second).
    let want: Arc<Mutex<Vec<u32>>> = Arc::default();
    let placed: Arc<Mutex<Vec<u32>>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (kids, placed, done, root) = (
            kids.clone(),
            placed.clone(),
            done.clone(),
            scene.root.clone(),
        );
        std::thread::spawn(move || {
            let mut seen = std::collections::HashSet::new();
            while !done.load(Ordering::Relaxed) {
                let pids: Vec<u32> = kids.lock().unwrap().iter().map(|c| c.id()).collect();
                for p in pids {
                    if !seen.contains(&p) && placed_under(p, &root) {
                        seen.insert(p);
                        placed.lock().unwrap().push(p);
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    for w in workers {
        w.join().unwrap()?;
    }
    let took = started.elapsed();
    *want.lock().unwrap() = kids.lock().unwrap().iter().map(|c| c.id()).collect();
    // Let the last targets be placed, exit, and their cgroups go.
    std::thread::sleep(Duration::from_millis(1500));
    done.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    for c in kids.lock().unwrap().iter_mut() {
        let _ = c.wait();
    }
    std::thread::sleep(Duration::from_millis(1500));
    let (u1, s1) = d.cpu_seconds();
    let (user, sys) = (u1 - cpu0.0, s1 - cpu0.1);
    let cpu = d.cpu_clock()? - clock0;
    let threads: Vec<(String, f64, u64)> = d
        .thread_stats()
        .into_iter()
        .map(|(name, (t, w))| {
            let (t0, w0) = threads0.get(&name).copied().unwrap_or((0.0, 0));
            (name, t - t0, w.saturating_sub(w0))
        })
        .filter(|(_, t, w)| *t > 0.0 || *w > 0)
        .collect();
    let log = d.stop();
    let want = want.lock().unwrap().clone();
    let placed = placed.lock().unwrap().clone();
    let by_event = daemon_latencies(&log);
    let targets_n = want.len();
    // A target is governed if the harness saw it placed or the daemon logged its placement.
    let never: Vec<&u32> = want
        .iter()
        .filter(|p| !placed.contains(p) && !log.contains(&format!("Limits applied to PID {p} ")))
        .collect();
    println!(
        "== exec storm: {n} execs in {:.1} s ({:.0}/s) from 2 threads, {targets_n} targets ({:.0} %), daemon nice {}, {load} ==",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        targets_n as f64 * 100.0 / n as f64,
        daemon_nice()
    );
    println!(
        "events lost (ring buffer full / read failures): {}",
        lost_events(&log)
    );
    let cpu_ms = cpu * 1000.0;
    match targets {
        None => println!(
            "daemon CPU time: {cpu:.4} s (ticks: user {user:.2}, system {sys:.2}) = {:.2} ms per 1000 non-target execs",
            cpu_ms / (n as f64 / 1000.0)
        ),
        Some((_, control)) => {
            println!("targets never placed: {}", never.len());
            println!(
                "targets placed from exec events: {} (the rest by a reconciliation after a loss)",
                want.iter().filter(|p| by_event.contains_key(p)).count()
            );
            let non_targets = (n - targets_n) as f64 / n as f64;
            let per_target = (cpu - control * non_targets) * 1000.0 / targets_n.max(1) as f64;
            println!(
                "daemon CPU time: {cpu:.4} s (ticks: user {user:.2}, system {sys:.2}); less the control run's share for the non-target execs: {per_target:.3} ms per placed target, its exit and cgroup removal included"
            );
            println!(
                "daemon CPU per placed target against the kernel's own steps ({floor:.3} ms): {:.2}x (goal: at most 1.5x); against those of its design ({design:.3} ms): {:.2}x",
                per_target / floor,
                per_target / design
            );
            let per = |x: f64| x / targets_n.max(1) as f64;
            let shares: Vec<String> = threads
                .iter()
                .map(|(name, t, w)| format!("{name} {:.3} ms, {:.1} switches", per(*t * 1000.0), per(*w as f64)))
                .collect();
            println!(
                "  by thread, per placed target (CPU in ticks of 10 ms; context switches, each a sleep and a wakeup or a preemption; the control run not taken off; threads that exited are missing; the main thread is named after the binary): {}",
                shares.join(", ")
            );
            println!(
                "{}",
                summary(
                    "daemon exec→placed during the storm",
                    want.iter().filter_map(|p| by_event.get(p).copied()).collect()
                )
            );
            print_breakdown(&log);
        }
    }
    Ok(cpu)
}

/// `count` targets started at once (a barrier releases `count` threads), `rounds` times.
pub(super) fn burst(bin: &Path, count: usize, rounds: usize) -> Result<()> {
    let scene = Scene::new("burst")?;
    let name = format!("{}t", scene.tag);
    let target = scene.copy("/bin/sleep", &name)?;
    let load = loadavg();
    let d = scene.daemon(bin, &[&name], "", "info")?;
    let mut outside = Vec::new();
    let mut pids = Vec::new();
    let mut missed = 0;
    let mut all = Vec::new();
    for _ in 0..rounds {
        let barrier = Arc::new(Barrier::new(count));
        let handles: Vec<_> = (0..count)
            .map(|_| {
                let (b, t) = (barrier.clone(), target.clone());
                std::thread::spawn(move || -> std::io::Result<(Child, Instant)> {
                    b.wait();
                    let c = Command::new(&t).arg("60").stdin(Stdio::null()).spawn()?;
                    Ok((c, Instant::now()))
                })
            })
            .collect();
        let mut started: Vec<(Child, Instant, bool)> = Vec::new();
        for h in handles {
            let (c, t) = h.join().unwrap()?;
            started.push((c, t, false));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while started.iter().any(|s| !s.2) && Instant::now() < deadline {
            for s in started.iter_mut().filter(|s| !s.2) {
                if placed_under(s.0.id(), &scene.root) {
                    s.2 = true;
                    outside.push(s.1.elapsed().as_secs_f64() * 1e6);
                }
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        missed += started.iter().filter(|s| !s.2).count();
        pids.extend(started.iter().map(|s| s.0.id()));
        all.extend(started.into_iter().map(|s| s.0));
        std::thread::sleep(Duration::from_millis(300));
    }
    let (log, own) = d.stop_with(&mut all);
    println!(
        "== burst: {count} targets started at once, {rounds} rounds, daemon nice {}, {load} ==",
        daemon_nice()
    );
    println!("not placed within 10 s: {missed}");
    println!(
        "{}",
        summary(
            "outside (spawn returned → placed; polled every ~0.3 ms across all 50)",
            outside
        )
    );
    println!(
        "{}",
        summary(
            "daemon (kernel exec timestamp → move verified)",
            pids.iter().filter_map(|p| own.get(p).copied()).collect()
        )
    );
    print_breakdown(&log);
    Ok(())
}

pub(super) fn rss(bin: &Path, n: usize) -> Result<()> {
    let scene = Scene::new("rss")?;
    let name = format!("{}t", scene.tag);
    let target = scene.copy("/bin/sleep", &name)?;
    let load = loadavg();
    let d = scene.daemon(bin, &[&name], "", "info")?;
    std::thread::sleep(Duration::from_secs(2));
    let mem = |d: &Daemon| Mem {
        rss: d.status_kb("VmRSS:"),
        anon: d.status_kb("RssAnon:"),
        file: d.status_kb("RssFile:"),
        peak: d.status_kb("VmHWM:"),
    };
    let idle = mem(&d);
    eprintln!(
        "idle RSS by mapping (KiB, largest first): {}",
        rss_by_mapping(d.pid())
    );
    // A first batch runs every code path of placement, exit watching and the state file
    // once (their code pages and the allocator's first growth are paid once, not per
    // process); the second batch shows what each further governed process costs.
    let warm = (n / 10).max(10);
    let mut kids = Vec::new();
    let mut missed = 0;
    let mut spawn_and_wait = |count: usize, kids: &mut Vec<std::process::Child>| -> Result<()> {
        let first = kids.len();
        for _ in 0..count {
            kids.push(Command::new(&target).arg("300").spawn()?);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut waiting: Vec<u32> = kids[first..].iter().map(|c| c.id()).collect();
        while !waiting.is_empty() && Instant::now() < deadline {
            waiting.retain(|p| !placed_under(*p, &scene.root));
            std::thread::sleep(Duration::from_millis(200));
        }
        missed += waiting.len();
        std::thread::sleep(Duration::from_secs(2));
        Ok(())
    };
    spawn_and_wait(warm, &mut kids)?;
    let warmed = mem(&d);
    spawn_and_wait(n, &mut kids)?;
    let busy = mem(&d);
    let _ = d.stop();
    for c in &mut kids {
        let _ = c.kill();
        let _ = c.wait();
    }
    println!("== daemon memory ({load}) ==");
    println!("idle: {idle}");
    println!("{warm} governed processes: {warmed}");
    println!(
        "{} governed processes ({missed} not placed within 60 s): {busy}",
        warm + n
    );
    let per = |a: u64, b: u64, k: usize| (b as f64 - a as f64) / k as f64;
    println!(
        "per governed process: {:.2} KiB over the {} after the first {warm} (anon {:.2}, file {:.2}); {:.2} KiB averaged from idle over all {}",
        per(warmed.rss, busy.rss, n),
        n,
        per(warmed.anon, busy.anon, n),
        per(warmed.file, busy.file, n),
        per(idle.rss, busy.rss, warm + n),
        warm + n
    );
    Ok(())
}

/// Resident KiB per mapping name from /proc/PID/smaps (anonymous ones by kind), largest
/// first: where idle memory is, for the numbers in docs/benchmarks.md.
fn rss_by_mapping(pid: u32) -> String {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut by: std::collections::BTreeMap<String, u64> = Default::default();
    let mut name = String::new();
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            // `start-end perms offset dev inode [path]`
            let path = f.nth(4).unwrap_or("");
            name = match path {
                "" => "anonymous (heap arenas, thread stacks)".into(),
                p => p.rsplit('/').next().unwrap_or(p).to_string(),
            };
        } else if first == "Rss:" {
            *by.entry(name.clone()).or_default() +=
                f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    let mut v: Vec<_> = by.into_iter().filter(|(_, kb)| *kb > 0).collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    v.iter()
        .map(|(n, kb)| format!("{n} {kb}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The daemon's memory from /proc/PID/status, in KiB.
struct Mem {
    rss: u64,
    anon: u64,
    file: u64,
    peak: u64,
}

impl std::fmt::Display for Mem {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "RSS {} KiB (anon {}, file {}; peak {} KiB)",
            self.rss, self.anon, self.file, self.peak
        )
    }
}

/// Start → READY=1: the daemon sends it (sd_notify) once the eBPF source is attached, the
/// state file loaded and the first scan done. A datagram socket stands in for systemd's.
pub(super) fn ready(bin: &Path, runs: usize) -> Result<()> {
    let scene = Scene::new("ready")?;
    let config = scene.dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "target_commands: [{}t]\ncgroup_root: {}\nstate_path: {}\nmetrics_addr: \"\"\ninline_placement: off\n",
            scene.tag,
            scene.root,
            scene.dir.join("state.json").display()
        ),
    )?;
    let load = loadavg();
    let mut times = Vec::new();
    for i in 0..runs {
        let sock_path: PathBuf = scene.dir.join(format!("notify-{i}.sock"));
        let sock = UnixDatagram::bind(&sock_path)?;
        sock.set_read_timeout(Some(Duration::from_secs(20)))?;
        let t0 = Instant::now();
        let mut child = niced(bin)
            .args(["watch", "--config"])
            .arg(&config)
            .env("NOTIFY_SOCKET", &sock_path)
            .env("FFRTMP_RUNTIME_DIR", scene.dir.join("run"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut buf = [0u8; 512];
        let ready = loop {
            match sock.recv(&mut buf) {
                Ok(k) if String::from_utf8_lossy(&buf[..k]).contains("READY=1") => {
                    break Some(t0.elapsed())
                }
                Ok(_) => continue,
                Err(_) => break None,
            }
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
        let _ = std::fs::remove_file(&sock_path);
        match ready {
            Some(t) => times.push(t.as_secs_f64() * 1e6),
            None => bail!("no READY=1 within 20 s"),
        }
    }
    println!("== start → READY=1 (eBPF load and attach, state, first scan), {runs} starts, daemon nice {}, {load} ==", daemon_nice());
    println!("{}", summary("exec of ffrtmp watch → READY=1", times));
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
        // What the daemon reads of a process the event names (pin, identity, membership).
        let t = Instant::now();
        for f in ["stat", "cgroup"] {
            let _ = std::fs::read(format!("/proc/{pid}/{f}"));
        }
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
        summary("read what the event does not carry (stat, cgroup)", facts)
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
