//! Exec → placed, one target at a time: ffrtmp (normal and strict), and ffrtmp against
//! cgrulesengd under the same harness in interleaved rounds.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::{
    daemon_latencies, daemon_nice, loadavg, niced, percentiles, placed_under, print_breakdown,
    summary, Scene, HIERARCHIES,
};

pub(super) fn latency(bin: &Path, n: usize, strict: bool) -> Result<()> {
    let scene = Scene::new(if strict { "strict" } else { "latency" })?;
    let name = format!("{}t", scene.tag);
    let target = scene.copy("/bin/sleep", &name)?;
    let load = loadavg();
    let d = scene.daemon(
        bin,
        &[&name],
        if strict { "placement: strict\n" } else { "" },
        "info",
    )?;
    // Targets stay alive until the end, so exits (and their cgroup removal) do not
    // interleave with the placements measured; the storm measures churn.
    let Outside {
        outside,
        missed,
        mut alive,
        ..
    } = exec_one_at_a_time(
        &target,
        &scene.root,
        n,
        Duration::from_millis(super::GAP_MS.load(std::sync::atomic::Ordering::Relaxed) as u64),
    )?;
    let pids: Vec<u32> = alive.iter().map(|c| c.id()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let (log, own) = d.stop_with(&mut alive);
    let inside: Vec<f64> = pids.iter().filter_map(|p| own.get(p).copied()).collect();
    eprintln!("  slowest outside: {}", slowest(&outside));
    eprintln!("  slowest in the daemon: {}", slowest(&inside));
    let mode = if strict { "strict" } else { "normal" };
    println!(
        "== exec → placed, placement {mode}, {n} target execs one at a time, {} ms apart (daemon nice {}, {load}) ==",
        super::GAP_MS.load(std::sync::atomic::Ordering::Relaxed),
        daemon_nice()
    );
    println!("{}", summary("outside (spawn returned → /proc/PID/cgroup shows a job cgroup in cpu,cpuacct,memory,pids)", outside.clone()));
    println!(
        "{}",
        summary("daemon (kernel exec timestamp → move verified)", inside)
    );
    print_breakdown(&log);
    println!("not placed within 2 s: {missed}");
    let unlogged = pids.iter().filter(|p| !own.contains_key(p)).count();
    if unlogged > 0 {
        println!("placements without an exec→placed log line: {unlogged}");
    }
    Ok(())
}

/// cgrulesengd with /etc/cgrules.conf moving `name` into `<root>/dest`, for as long as
/// the value lives (then the rules and the empty config it needed are removed).
pub(super) struct Cgrulesengd {
    child: Child,
    made_conf: bool,
    made_confd: bool,
}

impl Cgrulesengd {
    pub(super) fn start(root: &str, name: &str) -> Result<Cgrulesengd> {
        const RULES: &str = "/etc/cgrules.conf";
        if Path::new(RULES).exists() {
            bail!("{RULES} exists: not overwriting another configuration of cgrulesengd");
        }
        let Some(bin) = ["/usr/sbin/cgrulesengd", "/sbin/cgrulesengd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
        else {
            bail!("cgrulesengd is not installed: apt-get install cgroup-tools");
        };
        let dest = format!("{root}/dest");
        for h in HIERARCHIES {
            let _ = std::fs::create_dir(
                PathBuf::from("/sys/fs/cgroup")
                    .join(h)
                    .join(dest.trim_start_matches('/')),
            );
        }
        std::fs::write(
            RULES,
            format!(
                "*:{name} cpu,cpuacct,memory,pids {}\n",
                dest.trim_start_matches('/')
            ),
        )?;
        // cgrulesengd refuses to start without /etc/cgconfig.conf and /etc/cgconfig.d;
        // empty ones are made for the run where missing, and removed with the rules.
        let made_conf = !Path::new("/etc/cgconfig.conf").exists()
            && std::fs::write("/etc/cgconfig.conf", "").is_ok();
        let made_confd = std::fs::create_dir("/etc/cgconfig.d").is_ok();
        let mut child = niced(Path::new(bin)).args(["-n", "-Q"]).spawn()?;
        std::thread::sleep(Duration::from_secs(1));
        if let Some(status) = child.try_wait()? {
            bail!("cgrulesengd exited at start ({status}); run `cgrulesengd -d` to see why");
        }
        Ok(Cgrulesengd {
            child,
            made_conf,
            made_confd,
        })
    }
}

impl Drop for Cgrulesengd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file("/etc/cgrules.conf");
        if self.made_conf {
            let _ = std::fs::remove_file("/etc/cgconfig.conf");
        }
        if self.made_confd {
            let _ = std::fs::remove_dir("/etc/cgconfig.d");
        }
    }
}

/// The three slowest samples with their positions in the round (`#0` is the first exec
/// after the governor started): where a round's max comes from.
pub(super) fn slowest(v: &[f64]) -> String {
    let top = slowest_three(v)
        .into_iter()
        .map(|k| format!("#{k} {:.2} ms", v[k] / 1000.0))
        .collect::<Vec<_>>()
        .join(", ");
    // p90 of each third of the round, in exec order: whether slow samples cluster (after
    // the governor's start, say) or are spread over the round.
    let thirds = v
        .chunks(v.len().div_ceil(3).max(1))
        .filter_map(|c| percentiles(c).map(|p| format!("{:.2}", p.1)))
        .collect::<Vec<_>>()
        .join(" / ");
    format!("{top}; p90 by third of the round: {thirds} ms")
}

/// Positions of the three largest samples, largest first.
fn slowest_three(v: &[f64]) -> Vec<usize> {
    let mut i: Vec<usize> = (0..v.len()).collect();
    i.sort_by(|a, b| v[*b].partial_cmp(&v[*a]).unwrap());
    i.truncate(3);
    i
}

/// For the three slowest samples from outside, the daemon's own exec → placed of the same
/// PIDs: a slow sample the daemon placed fast was slow after the move (the observer waiting
/// for a CPU), not in the placement.
fn own_for_slowest(o: &Outside, own: &std::collections::HashMap<u32, f64>) -> String {
    let three = slowest_three(&o.outside)
        .into_iter()
        .map(|k| match own.get(&o.pids[k]) {
            Some(us) => format!("#{k} {:.2} ms", us / 1000.0),
            None => format!("#{k} not logged"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let all: Vec<f64> = o.pids.iter().filter_map(|p| own.get(p).copied()).collect();
    match percentiles(&all) {
        Some((p50, p90, p99, max)) => format!(
            "{three}; the round's own p50 {p50:.2}, p90 {p90:.2}, p99 {p99:.2}, max {max:.2} ms"
        ),
        None => three,
    }
}

/// One round's result line.
fn round_line(who: &str, round: usize, load: &str, o: &Outside) -> String {
    match percentiles(&o.outside) {
        Some((p50, p90, p99, max)) => format!(
            "| {who} | {round} | {p50:.2} | {p90:.2} | {p99:.2} | {max:.2} | {} | {load} |",
            o.missed
        ),
        None => format!(
            "| {who} | {round} | - | - | - | - | {} | {load} |",
            o.missed
        ),
    }
}

/// Interleaved rounds: ffrtmp, cgrulesengd, ffrtmp, … with the same outside harness (or,
/// with both harnesses, each governor's round seen through one and then the other).
pub(super) fn compare(bin: &Path, n: usize, rounds: usize, harnesses: &[Harness]) -> Result<()> {
    let scene = Scene::new("compare")?;
    let ff_name = format!("{}f", scene.tag);
    let cg_name = format!("{}g", scene.tag);
    let ff_target = scene.copy("/bin/sleep", &ff_name)?;
    let cg_target = scene.copy("/bin/sleep", &cg_name)?;
    println!(
        "== exec → placed from outside, ffrtmp and cgrulesengd interleaved: {rounds} rounds of {n} execs each, 5 ms apart, both at nice {}; harness {harnesses:?} ==",
        daemon_nice()
    );
    println!("| governor | round | p50 ms | p90 ms | p99 ms | max ms | not placed in 2 s | load at start |");
    println!("|---|---|---|---|---|---|---|---|");
    // Per (governor, harness): each round's percentiles, and every sample of every round
    // (a run's single p99 or max is a few samples).
    let mut stats: Vec<(String, Vec<Option<Pct>>, Vec<f64>)> = Vec::new();
    let label = |who: &str, h: Harness| {
        if harnesses.len() > 1 {
            format!("{who} ({h:?})")
        } else {
            who.to_string()
        }
    };
    let mut note = |who: String, o: &Outside| match stats.iter_mut().find(|(w, _, _)| *w == who) {
        Some((_, p, all)) => {
            p.push(percentiles(&o.outside));
            all.extend_from_slice(&o.outside);
        }
        None => stats.push((who, vec![percentiles(&o.outside)], o.outside.clone())),
    };
    let gap = Duration::from_millis(5);
    for r in 1..=rounds {
        let d = scene.daemon(bin, &[&ff_name], "", "info")?;
        let mut own = std::collections::HashMap::new();
        let mut seen = Vec::new();
        for &h in harnesses {
            let load = loadavg();
            let o = execs(h, &ff_target, &scene.root, n, gap)?;
            println!("{}", round_line(&label("ffrtmp", h), r, &load, &o));
            seen.push((h, o));
        }
        own.extend(daemon_latencies(&d.stop()));
        for (h, mut o) in seen {
            eprintln!(
                "  ffrtmp ({h:?}) round {r}: slowest {}",
                slowest(&o.outside)
            );
            eprintln!(
                "  ffrtmp ({h:?}) round {r}: the daemon's own exec → placed for those: {}",
                own_for_slowest(&o, &own)
            );
            note(label("ffrtmp", h), &o);
            o.kill();
        }
        scene.clear_jobs();

        let g = Cgrulesengd::start(&scene.root, &cg_name)?;
        for &h in harnesses {
            let load = loadavg();
            let mut o = execs(h, &cg_target, &scene.root, n, gap)?;
            println!("{}", round_line(&label("cgrulesengd", h), r, &load, &o));
            eprintln!(
                "  cgrulesengd ({h:?}) round {r}: slowest {}",
                slowest(&o.outside)
            );
            note(label("cgrulesengd", h), &o);
            o.kill();
        }
        drop(g);
        scene.clear_jobs();
    }
    let median = |v: &[Option<Pct>], f: fn(&Pct) -> f64| {
        let mut x: Vec<f64> = v.iter().flatten().map(f).collect();
        x.sort_by(|a, b| a.partial_cmp(b).unwrap());
        x.get(x.len() / 2).copied().unwrap_or(f64::NAN)
    };
    for &h in harnesses {
        let find = |who: &str| stats.iter().find(|(w, _, _)| *w == label(who, h));
        let (Some((_, ff, ff_all)), Some((_, cg, cg_all))) = (find("ffrtmp"), find("cgrulesengd"))
        else {
            continue;
        };
        let fns: [(&str, Pick); 4] = [
            ("p50", |p| p.0),
            ("p90", |p| p.1),
            ("p99", |p| p.2),
            ("max", |p| p.3),
        ];
        for (name, f) in fns {
            let (a, b) = (median(ff, f), median(cg, f));
            println!(
                "{h:?}: median {name} of the rounds: ffrtmp {a:.2} ms, cgrulesengd {b:.2} ms (ffrtmp/cgrulesengd {:.2})",
                a / b
            );
        }
        if let (Some(a), Some(b)) = (percentiles(ff_all), percentiles(cg_all)) {
            let ms = |p: Pct| format!("{:.2} / {:.2} / {:.2} / {:.2} ms", p.0, p.1, p.2, p.3);
            println!(
                "{h:?}: all rounds pooled (ffrtmp n={}, cgrulesengd n={}): ffrtmp/cgrulesengd p50 {:.2}, p90 {:.2}, p99 {:.2}, max {:.2} (ffrtmp {}, cgrulesengd {})",
                ff_all.len(),
                cg_all.len(),
                a.0 / b.0,
                a.1 / b.1,
                a.2 / b.2,
                a.3 / b.3,
                ms(a),
                ms(b)
            );
        }
    }
    Ok(())
}

/// p50, p90, p99, max (ms).
type Pct = (f64, f64, f64, f64);
/// One of a `Pct`.
type Pick = fn(&Pct) -> f64;

/// What the parent saw of N execs of `target`, one at a time.
struct Outside {
    /// µs from `spawn` returning to `/proc/PID/cgroup` showing a cgroup under the root.
    outside: Vec<f64>,
    /// The PID of each sample of `outside`.
    pids: Vec<u32>,
    /// Not placed within 2 s.
    missed: usize,
    /// The targets, still running.
    alive: Vec<Child>,
    /// The targets the fork harness started (our children, not `Child`s).
    forked: Vec<u32>,
}

impl Outside {
    fn kill(&mut self) {
        for c in &mut self.alive {
            let _ = c.kill();
            let _ = c.wait();
        }
        for pid in self.forked.drain(..) {
            // SAFETY: kill(2) and waitpid on our own children.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
                libc::waitpid(pid as i32, std::ptr::null_mut(), 0);
            }
        }
    }

    /// Poll `/proc/PID/cgroup` from `t0` until `pid` shows a cgroup under `root` in every
    /// hierarchy (2 s at most), and note the sample.
    fn poll(&mut self, pid: u32, root: &str, t0: Instant) {
        loop {
            if placed_under(pid, root) {
                self.outside.push(t0.elapsed().as_secs_f64() * 1e6);
                self.pids.push(pid);
                return;
            }
            if t0.elapsed() > Duration::from_secs(2) {
                self.missed += 1;
                return;
            }
            // Sleep rather than spin: a spinning parent would take one of the two cores
            // the daemon needs. Resolution: the sleep plus timer slack, about 0.1 ms.
            std::thread::sleep(Duration::from_micros(20));
        }
    }
}

/// How `compare` sees an exec happen (`--harness`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Harness {
    /// `Command::spawn` returns (std's posix_spawn: the parent resumes when the child's
    /// exec has let go of its memory).
    Spawn,
    /// fork, execve in the child; the clock starts when a close-on-exec pipe reaches EOF
    /// (issue 19's harness).
    Fork,
}

/// The outside measurement, the same for every governor measured: spawn the target (std's
/// posix_spawn returns once the child's exec has let go of the parent's memory), then poll
/// `/proc/PID/cgroup` until every hierarchy shows a cgroup under `root`; `gap` between
/// execs.
fn exec_one_at_a_time(target: &Path, root: &str, n: usize, gap: Duration) -> Result<Outside> {
    let mut out = Outside {
        outside: Vec::with_capacity(n),
        pids: Vec::with_capacity(n),
        missed: 0,
        alive: Vec::with_capacity(n),
        forked: Vec::new(),
    };
    for _ in 0..n {
        let c = Command::new(target).arg("120").spawn()?;
        let t0 = Instant::now();
        out.poll(c.id(), root, t0);
        out.alive.push(c);
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
    }
    Ok(out)
}

/// The same with `Harness::Fork`: fork, execve; the clock starts at the pipe's EOF.
fn exec_forked(target: &Path, root: &str, n: usize, gap: Duration) -> Result<Outside> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(target.as_os_str().as_bytes())?;
    let arg = std::ffi::CString::new("120")?;
    let argv = [path.as_ptr(), arg.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null()];
    let mut out = Outside {
        outside: Vec::with_capacity(n),
        pids: Vec::with_capacity(n),
        missed: 0,
        alive: Vec::new(),
        forked: Vec::with_capacity(n),
    };
    for _ in 0..n {
        let mut fds = [0; 2];
        // SAFETY: pipe2 into a local array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            bail!("pipe2: {}", std::io::Error::last_os_error());
        }
        // SAFETY: the child calls only execve and _exit (async-signal-safe).
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: as above.
            unsafe {
                libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
                libc::_exit(127);
            }
        }
        let mut b = [0u8; 1];
        // SAFETY: our own pipe's descriptors; the read returns 0 once the exec closed the
        // child's copy of the write end.
        unsafe {
            libc::close(fds[1]);
            libc::read(fds[0], b.as_mut_ptr().cast(), 1);
        }
        let t0 = Instant::now();
        // SAFETY: our own descriptor.
        unsafe { libc::close(fds[0]) };
        if pid < 0 {
            bail!("fork: {}", std::io::Error::last_os_error());
        }
        out.poll(pid as u32, root, t0);
        out.forked.push(pid as u32);
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
    }
    Ok(out)
}

/// N execs one at a time, seen through `h`.
fn execs(h: Harness, target: &Path, root: &str, n: usize, gap: Duration) -> Result<Outside> {
    match h {
        Harness::Spawn => exec_one_at_a_time(target, root, n, gap),
        Harness::Fork => exec_forked(target, root, n, gap),
    }
}
