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
    let log = d.stop();
    for c in &mut alive {
        let _ = c.kill();
        let _ = c.wait();
    }
    let own = daemon_latencies(&log);
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
struct Cgrulesengd {
    child: Child,
    made_conf: bool,
    made_confd: bool,
}

impl Cgrulesengd {
    fn start(root: &str, name: &str) -> Result<Cgrulesengd> {
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
fn slowest(v: &[f64]) -> String {
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

/// Interleaved rounds: ffrtmp, cgrulesengd, ffrtmp, … with the same outside harness.
pub(super) fn compare(bin: &Path, n: usize, rounds: usize) -> Result<()> {
    let scene = Scene::new("compare")?;
    let ff_name = format!("{}f", scene.tag);
    let cg_name = format!("{}g", scene.tag);
    let ff_target = scene.copy("/bin/sleep", &ff_name)?;
    let cg_target = scene.copy("/bin/sleep", &cg_name)?;
    println!(
        "== exec → placed from outside, ffrtmp and cgrulesengd interleaved: {rounds} rounds of {n} execs each, 5 ms apart, both at nice {} ==",
        daemon_nice()
    );
    println!("| governor | round | p50 ms | p90 ms | p99 ms | max ms | not placed in 2 s | load at start |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut ff = Vec::new();
    let mut cg = Vec::new();
    // Every sample of every round, per governor: a run's single p99 or max is a few samples.
    let (mut ff_all, mut cg_all) = (Vec::new(), Vec::new());
    for r in 1..=rounds {
        let load = loadavg();
        let d = scene.daemon(bin, &[&ff_name], "", "info")?;
        let mut o = exec_one_at_a_time(&ff_target, &scene.root, n, Duration::from_millis(5))?;
        let own = daemon_latencies(&d.stop());
        println!("{}", round_line("ffrtmp", r, &load, &o));
        eprintln!("  ffrtmp round {r}: slowest {}", slowest(&o.outside));
        eprintln!(
            "  ffrtmp round {r}: the daemon's own exec → placed for those: {}",
            own_for_slowest(&o, &own)
        );
        ff.push(percentiles(&o.outside));
        ff_all.extend_from_slice(&o.outside);
        o.kill();
        scene.clear_jobs();

        let load = loadavg();
        let g = Cgrulesengd::start(&scene.root, &cg_name)?;
        let mut o = exec_one_at_a_time(&cg_target, &scene.root, n, Duration::from_millis(5))?;
        drop(g);
        println!("{}", round_line("cgrulesengd", r, &load, &o));
        eprintln!("  cgrulesengd round {r}: slowest {}", slowest(&o.outside));
        cg.push(percentiles(&o.outside));
        cg_all.extend_from_slice(&o.outside);
        o.kill();
        scene.clear_jobs();
    }
    let median = |v: &[Option<(f64, f64, f64, f64)>], f: fn(&(f64, f64, f64, f64)) -> f64| {
        let mut x: Vec<f64> = v.iter().flatten().map(f).collect();
        x.sort_by(|a, b| a.partial_cmp(b).unwrap());
        x.get(x.len() / 2).copied().unwrap_or(f64::NAN)
    };
    for (label, f) in [
        (
            "p50",
            (|p: &(f64, f64, f64, f64)| p.0) as fn(&(f64, f64, f64, f64)) -> f64,
        ),
        ("p90", |p| p.1),
        ("p99", |p| p.2),
        ("max", |p| p.3),
    ] {
        let (a, b) = (median(&ff, f), median(&cg, f));
        println!(
            "median {label} of the rounds: ffrtmp {a:.2} ms, cgrulesengd {b:.2} ms (ffrtmp/cgrulesengd {:.2})",
            a / b
        );
    }
    if let (Some(a), Some(b)) = (percentiles(&ff_all), percentiles(&cg_all)) {
        let ms = |p: (f64, f64, f64, f64)| {
            format!("{:.2} / {:.2} / {:.2} / {:.2} ms", p.0, p.1, p.2, p.3)
        };
        println!(
            "all rounds pooled (ffrtmp n={}, cgrulesengd n={}): ffrtmp/cgrulesengd p50 {:.2}, p90 {:.2}, p99 {:.2}, max {:.2} (ffrtmp {}, cgrulesengd {})",
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
    Ok(())
}

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
}

impl Outside {
    fn kill(&mut self) {
        for c in &mut self.alive {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The outside measurement, the same for every governor measured: spawn the target (it
/// returns once the exec is done: std waits on a CLOEXEC pipe), then poll
/// `/proc/PID/cgroup` until every hierarchy shows a cgroup under `root`; `gap` between
/// execs.
fn exec_one_at_a_time(target: &Path, root: &str, n: usize, gap: Duration) -> Result<Outside> {
    let mut out = Outside {
        outside: Vec::with_capacity(n),
        pids: Vec::with_capacity(n),
        missed: 0,
        alive: Vec::with_capacity(n),
    };
    for _ in 0..n {
        let c = Command::new(target).arg("120").spawn()?;
        let t0 = Instant::now();
        loop {
            if placed_under(c.id(), root) {
                out.outside.push(t0.elapsed().as_secs_f64() * 1e6);
                out.pids.push(c.id());
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
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
    }
    Ok(out)
}
