//! `cargo xtask bench-exec <what> [--n N] [--rounds R] [--daemon-nice N] [--bin PATH]`: the
//! eBPF benchmarks of docs/benchmarks.md, run against the release `ffrtmp watch` as root
//! (`--bin`: another build of it, e.g. an older commit's, without building this one).
//!
//! - `inline`: the exec gate against the exec events' path and cgrulesengd, rounds
//!   interleaved: first actions outside the job, the exec time the gate adds and the
//!   kernel's own part of it (a bare listener that answers at once, `bare_gate.rs`),
//!   non-target execs with and without the daemon (`inline.rs`).
//! - `compare`: exec → placed from outside, ffrtmp and libcgroup's cgrulesengd (Debian
//!   `cgroup-tools`, netlink proc connector) under the same harness, in interleaved rounds
//!   (ffrtmp, cgrulesengd, ffrtmp, …; default 3 rounds of N = 300 each, 5 ms apart), both
//!   daemons at the same nice value (`--daemon-nice`, default -10: the unit's `Nice=`).
//!   Each governor's round is seen through two harnesses (`--harness fork|spawn|both`,
//!   default both): fork + execve with the clock started at a close-on-exec pipe's EOF,
//!   and std's `spawn` (posix_spawn) returning; they start their clocks at different
//!   moments of the exec (docs/benchmarks.md, "Two harnesses").
//!   cgrulesengd gets /etc/cgrules.conf for the run (refused if one exists; removed after).
//! - `latency` / `strict`: exec → placed for N (default 500) target execs, one at a time
//!   (each stays alive until the end), from outside (the parent's `spawn` returns once the
//!   exec is done; it then polls `/proc/PID/cgroup` until every hierarchy shows a job
//!   cgroup) and from the daemon's own timestamps (kernel exec time → move verified, its
//!   `exec→placed` log field; `received`: until the engine took the event).
//! - `storm`: N (default 20 000) execs as fast as two threads can, with 2 % and 5 % of
//!   them short-lived targets, and a control run without targets: targets never placed,
//!   events lost, exec → placed during the storm, daemon CPU per placed target (its exit
//!   cleanup included) and per 1 000 non-target execs.
//! - `burst`: 50 targets started at once from 50 threads, in R rounds (default 5): all
//!   placed? exec → placed from outside and the daemon's own.
//! - `rss`: daemon RSS idle, then with N (default 1 000) governed processes.
//! - `ready`: start → READY=1 (on a fake NOTIFY_SOCKET), BPF load included, R runs.
//! - `steps`: where a placement's time goes (mkdir, limit write, move, verify), timed by
//!   doing the same file operations directly.
//! - `all`: every one of these.
//!
//! Every result line is printed with the load average at the start of its run.
//!
//! This file: dispatch, the scene (cgroup root, scratch dir, daemon) and log parsing;
//! `latency.rs`: compare, latency, strict; `load.rs`: storm, burst, rss, ready, steps.
//!
//! Everything runs beneath this process's own cgroup, under names made for the run, and
//! is removed afterwards.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::util::{cargo, is_root, repo_root, run};

mod bare_gate;
mod inline;
mod latency;
mod load;

pub(super) const HIERARCHIES: [&str; 4] = ["cpu", "cpuacct", "memory", "pids"];

/// `--daemon-nice N`: run the daemons under `nice -n N`.
static DAEMON_NICE: AtomicI32 = AtomicI32::new(-10);
/// `--gap-ms N`: pause between the execs of `latency`, `strict` and `inline` (`inline`:
/// 2 ms unless given; `compare`: 5 ms).
pub(super) static GAP_MS: AtomicI32 = AtomicI32::new(0);

const WHAT: &str = "compare|inline|latency|strict|storm|burst|rss|ready|steps|all";

pub fn bench(args: &[String]) -> Result<()> {
    if !is_root() {
        bail!("the benchmarks create cgroups and load BPF: run them as root");
    }
    let mut what = "all".to_string();
    let mut n: Option<usize> = None;
    let mut rounds: Option<usize> = None;
    let mut bin: Option<PathBuf> = None;
    let mut harnesses = vec![latency::Harness::Fork, latency::Harness::Spawn];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--n" => n = Some(it.next().context("--n N")?.parse().context("--n N")?),
            "--rounds" => {
                rounds = Some(it.next().context("--rounds R")?.parse().context("--rounds R")?)
            }
            "--gap-ms" => {
                let v: i32 = it.next().context("--gap-ms N")?.parse().context("--gap-ms N")?;
                GAP_MS.store(v, Ordering::Relaxed);
            }
            "--daemon-nice" => {
                let v: i32 = it.next().context("--daemon-nice N")?.parse().context("--daemon-nice N")?;
                DAEMON_NICE.store(v, Ordering::Relaxed);
            }
            "--bin" => bin = Some(it.next().context("--bin PATH")?.into()),
            "--harness" => {
                harnesses = match it.next().map(String::as_str) {
                    Some("spawn") => vec![latency::Harness::Spawn],
                    Some("fork") => vec![latency::Harness::Fork],
                    Some("both") => vec![latency::Harness::Fork, latency::Harness::Spawn],
                    _ => bail!("--harness spawn|fork|both"),
                }
            }
            w if WHAT.split('|').any(|x| x == w) => what = w.to_string(),
            other => bail!("unknown argument {other:?} ({WHAT}, --n N, --rounds R, --daemon-nice N, --gap-ms N, --bin PATH, --harness spawn|fork|both)"),
        }
    }
    let bin = match bin {
        // Made absolute: `nice` would look a bare name up in PATH.
        Some(b) => std::fs::canonicalize(&b).with_context(|| {
            format!(
                "--bin {}: no such file (give a release build of ffrtmp)",
                b.display()
            )
        })?,
        None => {
            let root = repo_root();
            run(cargo()
                .current_dir(&root)
                .args(["build", "--release", "-p", "ffrtmp"]))?;
            root.join("target/release/ffrtmp")
        }
    };
    let all = what == "all";
    if all || what == "ready" {
        load::ready(&bin, rounds.unwrap_or(10))?;
    }
    if all || what == "steps" {
        load::steps(n.unwrap_or(200))?;
    }
    if all || what == "compare" {
        latency::compare(&bin, n.unwrap_or(300), rounds.unwrap_or(3), &harnesses)?;
    }
    if all || what == "inline" {
        inline::inline(&bin, n.unwrap_or(200), rounds.unwrap_or(3))?;
    }
    if all || what == "latency" {
        latency::latency(&bin, n.unwrap_or(500), false)?;
    }
    if all || what == "strict" {
        latency::latency(&bin, n.unwrap_or(500), true)?;
    }
    if all || what == "burst" {
        load::burst(&bin, 50, rounds.unwrap_or(5))?;
    }
    if all || what == "storm" {
        load::storm(&bin, n.unwrap_or(20_000))?;
    }
    if all || what == "rss" {
        load::rss(&bin, n.unwrap_or(1000))?;
    }
    Ok(())
}

/// `load average 1.12 0.98 0.77` now.
pub(super) fn loadavg() -> String {
    let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let f: Vec<&str> = l.split_whitespace().take(3).collect();
    format!("load {}", f.join(" "))
}

/// `cmd` under `nice -n --daemon-nice`.
pub(super) fn niced(bin: &Path) -> Command {
    let nice = DAEMON_NICE.load(Ordering::Relaxed);
    if nice != 0 {
        let mut c = Command::new("nice");
        c.args(["-n", &nice.to_string()]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

pub(super) fn daemon_nice() -> i32 {
    DAEMON_NICE.load(Ordering::Relaxed)
}

/// A cgroup root beneath our own cgroup, a scratch directory, and cleanup of both.
pub(super) struct Scene {
    pub root: String,
    pub dir: PathBuf,
    created: Vec<PathBuf>,
    pub tag: String,
}

impl Scene {
    pub fn new(what: &str) -> Result<Scene> {
        let own = own_cgroup()?;
        let tag = format!("fb{}{}", std::process::id() % 10_000, &what[..1]);
        let root = format!("{own}/ffrtmp-bench-{tag}");
        let mut created = Vec::new();
        for h in HIERARCHIES {
            let mut p = PathBuf::from("/sys/fs/cgroup").join(h);
            for part in root.split('/').filter(|s| !s.is_empty()) {
                p.push(part);
                if std::fs::create_dir(&p).is_ok() {
                    created.push(p.clone());
                }
            }
        }
        let dir = std::env::temp_dir().join(format!("ffrtmp-bench-{tag}"));
        std::fs::create_dir_all(&dir)?;
        Ok(Scene {
            root,
            dir,
            created,
            tag,
        })
    }

    pub fn copy(&self, src: &str, name: &str) -> Result<PathBuf> {
        let p = self.dir.join(name);
        std::fs::copy(src, &p).with_context(|| format!("copy {src}"))?;
        Ok(p)
    }

    /// Start the daemon and wait until its first scan is done.
    pub fn daemon(
        &self,
        bin: &Path,
        targets: &[&str],
        extra_yaml: &str,
        level: &str,
    ) -> Result<Daemon> {
        let config = self.dir.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                // The exec events' path unless asked (`inline`): the exec gate (docs/inline.md).
                "target_commands: [{}]\ncgroup_root: {}\nstate_path: {}\nreconcile_interval: 1h\nmetrics_addr: \"\"\n{}{extra_yaml}",
                targets.join(", "),
                self.root,
                self.dir.join("state.json").display(),
                if extra_yaml.contains("inline_placement") { "" } else { "inline_placement: off\n" }
            ),
        )?;
        let log = self.dir.join("daemon.log");
        let child = niced(bin)
            .args(["watch", "--config"])
            .arg(&config)
            .env("LOG_LEVEL", level)
            .env("FFRTMP_RUNTIME_DIR", self.dir.join("run"))
            // The scene's binaries on its PATH: the gate marks the targets there.
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    self.dir.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let d = Daemon { child, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !d.log().contains("Scan complete") {
            if Instant::now() > deadline {
                bail!("daemon did not start:\n{}", d.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !d.log().contains("Event source ebpf started") {
            bail!("the daemon is not using eBPF:\n{}", d.log());
        }
        Ok(d)
    }
}

impl Scene {
    /// Remove every cgroup under the root (killing our targets still inside).
    pub fn clear_jobs(&self) {
        for h in HIERARCHIES {
            let base = PathBuf::from("/sys/fs/cgroup")
                .join(h)
                .join(self.root.trim_start_matches('/'));
            for e in std::fs::read_dir(&base).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    kill_all_in(&e.path());
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        self.clear_jobs();
        for p in self.created.iter().rev() {
            let _ = std::fs::remove_dir(p);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// SIGKILL what is left in a job cgroup of the bench (only our own targets are there).
pub(super) fn kill_all_in(dir: &Path) {
    for _ in 0..50 {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        if procs.trim().is_empty() {
            return;
        }
        for p in procs.split_whitespace() {
            let _ = Command::new("kill")
                .args(["-KILL", p])
                .stderr(Stdio::null())
                .status();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(super) struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// (utime, stime) in seconds, in clock ticks of 10 ms.
    pub fn cpu_seconds(&self) -> (f64, f64) {
        stat_fields(&format!("/proc/{}/stat", self.pid()))
    }
    /// The daemon's CPU time in seconds from its process CPU clock: nanoseconds, threads that
    /// have exited included (the ticks of `cpu_seconds` are 10 ms each).
    pub fn cpu_clock(&self) -> Result<f64> {
        let mut clock: libc::clockid_t = 0;
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let pid = self.pid();
        // SAFETY: the out pointer is to a local; clock_getcpuclockid returns the error.
        let rc = unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) };
        if rc != 0 {
            bail!(
                "clock_getcpuclockid(daemon PID {pid}): {}",
                std::io::Error::from_raw_os_error(rc)
            );
        }
        // SAFETY: a clock id the kernel gave and a local out pointer.
        if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
            bail!(
                "clock_gettime(CPU clock of daemon PID {pid}): {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9)
    }
    /// Of each live thread, summed by thread name: CPU seconds (user + system, in ticks) and
    /// context switches (voluntary + involuntary: a thread that sleeps and is woken counts one).
    pub fn thread_stats(&self) -> std::collections::BTreeMap<String, (f64, u64)> {
        let mut by_name = std::collections::BTreeMap::new();
        let task = format!("/proc/{}/task", self.pid());
        for e in std::fs::read_dir(&task).into_iter().flatten().flatten() {
            let dir = e.path();
            let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            let (u, s) = stat_fields(&dir.join("stat").to_string_lossy());
            let switches: u64 = std::fs::read_to_string(dir.join("status"))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
            let e = by_name.entry(name.trim().to_string()).or_insert((0.0, 0));
            e.0 += u + s;
            e.1 += switches;
        }
        by_name
    }
    pub fn status_kb(&self, key: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix(key)?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    }
    pub fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let _ = self.child.wait();
        self.log()
    }

    /// Stop the daemon and kill its targets: its log, and `exec→placed` of each PID it
    /// logged, in µs.
    pub fn stop_with(self, targets: &mut [std::process::Child]) -> (String, HashMap<u32, f64>) {
        let log = self.stop();
        for c in targets {
            let _ = c.kill();
            let _ = c.wait();
        }
        let own = daemon_latencies(&log);
        (log, own)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (utime, stime) in seconds from a `stat` file of /proc.
fn stat_fields(path: &str) -> (f64, f64) {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields after the comm: state is 0, utime 11, stime 12 (clock ticks of 10 ms).
    (ticks(11) / 100.0, ticks(12) / 100.0)
}

pub(super) fn own_cgroup() -> Result<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup")?;
    let paths: Vec<&str> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let _ = f.next();
            let c = f.next()?;
            HIERARCHIES
                .iter()
                .any(|h| c.split(',').any(|x| x == *h))
                .then_some(f.next()?)
        })
        .collect();
    if paths.is_empty() {
        bail!("no v1 cpu/memory/pids hierarchy in /proc/self/cgroup: these benchmarks are for the v1 hosts of docs/benchmarks.md");
    }
    Ok(paths
        .iter()
        .max_by_key(|p| p.len())
        .unwrap()
        .trim_end_matches('/')
        .to_string())
}

/// Whether `/proc/PID/cgroup` shows the process in a job cgroup under `root` in every
/// hierarchy we use. Any job cgroup counts: the daemon may place a process in a prepared
/// cgroup that already has the job's limits and give it the job's name just after.
pub(super) fn placed_under(pid: u32, root: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|t| under_root(&t, root))
}

/// Whether a `/proc/PID/cgroup` text shows a cgroup under `root` in every hierarchy we use.
pub(super) fn under_root(text: &str, root: &str) -> bool {
    let prefix = format!("{root}/");
    HIERARCHIES.iter().all(|h| {
        text.lines().any(|l| {
            let mut f = l.splitn(3, ':');
            let _ = f.next();
            f.next().is_some_and(|c| c.split(',').any(|x| x == *h))
                && f.next().is_some_and(|p| p.starts_with(&prefix))
        })
    })
}

/// `exec→placed X.XXXms` of each PID in the daemon log, in µs.
pub(super) fn daemon_latencies(log: &str) -> HashMap<u32, f64> {
    let mut out = HashMap::new();
    for l in log.lines() {
        let Some(rest) = l.split("Limits applied to PID ").nth(1) else {
            continue;
        };
        let Some(pid) = rest.split_whitespace().next().and_then(|p| p.parse().ok()) else {
            continue;
        };
        let Some(ms) = l
            .split("exec→placed ")
            .nth(1)
            .and_then(|r| r.split("ms").next())
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        out.insert(pid, ms * 1000.0);
    }
    out
}

/// Where the daemon's exec → placed went, from its log: until the ring was read, until the
/// engine took the event, and the placement itself.
pub(super) fn print_breakdown(log: &str) {
    println!(
        "{}",
        summary(
            "  of which exec → the ring reader read the event",
            read_times(log)
        )
    );
    println!(
        "{}",
        summary(
            "  of which exec → the engine took the event",
            receipt_times(log)
        )
    );
    println!(
        "{}",
        summary(
            "  of which the placement itself (placer: cgroup, limits, move, verify)",
            placement_times(log)
        )
    );
}

/// The `X.XXXms` right after `marker` on every log line that has it, in µs.
pub(super) fn ms_after(log: &str, marker: &str) -> Vec<f64> {
    log.lines()
        .filter_map(|l| {
            l.split(marker)
                .nth(1)?
                .split("ms")
                .next()?
                .parse::<f64>()
                .ok()
        })
        .map(|ms| ms * 1000.0)
        .collect()
}

/// `read X.XXXms` (exec → the ring reader had the event) of every placement, in µs.
fn read_times(log: &str) -> Vec<f64> {
    ms_after(log, "; read ")
}

/// `received X.XXXms` (exec → the engine took the event) of every placement, in µs.
fn receipt_times(log: &str) -> Vec<f64> {
    ms_after(log, ", received ")
}

/// Events the daemon said a source lost.
pub(super) fn lost_events(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| {
            l.split("Event source ebpf lost ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Percentiles of µs samples: (p50, p90, p99, max), in ms.
pub(super) fn percentiles(us: &[f64]) -> Option<(f64, f64, f64, f64)> {
    if us.is_empty() {
        return None;
    }
    let mut v = us.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize] / 1000.0;
    Some((p(0.5), p(0.9), p(0.99), v[v.len() - 1] / 1000.0))
}

/// ` in X.XXXms` (the placement itself) of each placement, in µs.
pub(super) fn placement_times(log: &str) -> Vec<f64> {
    log.lines()
        .filter(|l| l.contains("Limits applied to PID "))
        .filter_map(|l| {
            l.rsplit(" in ")
                .next()?
                .split("ms")
                .next()?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map(|ms| ms * 1000.0)
        .collect()
}

pub(super) fn summary(label: &str, mut us: Vec<f64>) -> String {
    if us.is_empty() {
        return format!("{label}: no samples");
    }
    us.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| us[((us.len() as f64 - 1.0) * q).round() as usize];
    format!(
        "{label}: n={} p50 {:.0} µs, p90 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
        us.len(),
        p(0.5),
        p(0.9),
        p(0.99),
        us[us.len() - 1]
    )
}
