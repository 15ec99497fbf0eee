//! `bench-exec inline`: what the exec gate (docs/inline.md) buys and costs, in one run with
//! the rounds interleaved (gate, eBPF path, cgrulesengd, no daemon, …).
//!
//! The target is a copy of Debian's static busybox under the target's name, run as `cat
//! /proc/self/cgroup` (busybox picks its applet from argv[0]; the kernel names the process
//! after the file): its first action, after a static binary's few startup instructions,
//! reads its own cgroup. A sample is "outside" when that read shows no job cgroup under
//! the run's root in every hierarchy.
//!
//! - First actions outside the job, per governor: the gate (`inline_placement: on`, the
//!   copy on the daemon's `PATH`), the exec events' path (`off`), cgrulesengd.
//! - The exec time the gate adds: fork → first output (the first action's read came back)
//!   and fork → exit, of the target and of the same binary under a name that is no
//!   target's, in the gate's rounds.
//! - The kernel's own part of that time: the same pair of execs with a bare listener of
//!   ours in place of the daemon, which answers each held exec at once (`bare_gate.rs`).
//! - Non-target execs untouched: fork → exit of the non-target copy with the gate's daemon
//!   running (idle, and between target execs) against no daemon at all.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::latency::Cgrulesengd;
use super::{daemon_nice, loadavg, percentiles, placement_times, summary, Scene};

/// What N execs of one binary showed.
#[derive(Default)]
struct Execs {
    /// First actions that saw no job cgroup.
    outside: usize,
    n: usize,
    /// µs: fork → first output, fork → exit.
    first: Vec<f64>,
    exit: Vec<f64>,
}

impl Execs {
    fn add(&mut self, other: Execs) {
        self.outside += other.outside;
        self.n += other.n;
        self.first.extend(other.first);
        self.exit.extend(other.exit);
    }
}

pub(super) fn inline(bin: &Path, n: usize, rounds: usize) -> Result<()> {
    let scene = Scene::new("inline")?;
    let target_name = format!("{}t", scene.tag);
    let other_name = format!("{}o", scene.tag);
    if !is_static("/bin/busybox")? {
        bail!("/bin/busybox is dynamically linked (ld.so would run before the first action): install busybox-static");
    }
    let target = scene.copy("/bin/busybox", &target_name)?;
    let other = scene.copy("/bin/busybox", &other_name)?;
    println!(
        "== exec gate: {rounds} rounds of {n} execs per governor, interleaved; the target is static busybox reading /proc/self/cgroup first (daemons at nice {}) ==",
        daemon_nice()
    );
    println!("| governor | round | first actions outside the job | load at start |");
    println!("|---|---|---|---|");
    let (mut gate, mut gate_other, mut ebpf, mut cg, mut bare) = Default::default();
    let (mut holds, mut placing, mut idle) = (Vec::new(), Vec::new(), Execs::default());
    let mut taken = Vec::new();
    let (mut listener, mut listener_other) = (Execs::default(), Execs::default());
    for r in 1..=rounds {
        let load = loadavg();
        let d = scene.daemon(bin, &[&target_name], "inline_placement: on\n", "info")?;
        if !d.log().contains("Inline placement is on") {
            bail!("the gate did not open:\n{}", d.log());
        }
        let marked = format!("Holding every exec of {}", target.display());
        if !d.log().contains(&marked) {
            bail!("the target was not marked:\n{}", d.log());
        }
        // Non-target execs beside the idle daemon first (what the gate does to them), then
        // target and non-target execs alternating: both see the same daemon at work.
        Execs::add(&mut idle, execs(&other, &scene.root, n)?);
        let (g, o) = execs_alternating(&target, &other, &scene.root, n)?;
        let log = d.stop();
        let held = held_times(&log);
        eprintln!(
            "  gate round {r}: slowest holds {}",
            super::latency::slowest(&held)
        );
        holds.extend(held);
        taken.extend(super::ms_after(&log, ", taken "));
        placing.extend(placement_times(&log));
        println!("{}", row("ffrtmp, exec gate", r, &g, &load));
        Execs::add(&mut gate, g);
        Execs::add(&mut gate_other, o);
        scene.clear_jobs();

        // The kernel's own part: a listener that answers at once and places nothing.
        let l = super::bare_gate::BareGate::start(&target, daemon_nice())?;
        let (g, o) = execs_alternating(&target, &other, &scene.root, n)?;
        drop(l);
        Execs::add(&mut listener, g);
        Execs::add(&mut listener_other, o);

        let load = loadavg();
        let d = scene.daemon(bin, &[&target_name], "", "info")?;
        let e = execs(&target, &scene.root, n)?;
        drop(d);
        println!("{}", row("ffrtmp, exec events", r, &e, &load));
        Execs::add(&mut ebpf, e);
        scene.clear_jobs();

        let load = loadavg();
        let c = Cgrulesengd::start(&scene.root, &target_name)?;
        let e = execs(&target, &scene.root, n)?;
        drop(c);
        println!("{}", row("cgrulesengd", r, &e, &load));
        Execs::add(&mut cg, e);
        scene.clear_jobs();

        Execs::add(&mut bare, execs(&other, &scene.root, n)?);
    }
    for (who, e) in [
        ("exec gate", &gate),
        ("exec events", &ebpf),
        ("cgrulesengd", &cg),
    ] {
        println!(
            "all rounds, {who}: {} of {} first actions outside the job",
            e.outside, e.n
        );
    }
    let (g, o, b) = (&gate, &gate_other, &bare);
    println!(
        "exec time the gate adds (target against the same binary under another name, gate on; ms):"
    );
    added("  fork → first action", &g.first, &o.first);
    added("  fork → exit", &g.exit, &o.exit);
    println!(
        "exec time a listener that answers at once adds (the kernel's own part of a held exec, placing nothing; same rounds; ms):"
    );
    added(
        "  fork → first action",
        &listener.first,
        &listener_other.first,
    );
    added("  fork → exit", &listener.exit, &listener_other.exit);
    println!(
        "{}",
        summary("  the daemon: held (gate read the event → answered)", holds)
    );
    println!(
        "{}",
        summary(
            "  of which the hand-over (gate read → engine took it)",
            taken
        )
    );
    println!(
        "{}",
        summary(
            "  of which the placement itself (placer: cgroup, limits, move, verify)",
            placing
        )
    );
    println!("non-target execs, with the gate's daemon against none (fork → exit; ms):");
    for (label, with) in [
        ("  beside the idle daemon", &idle.exit),
        ("  between target execs", &o.exit),
    ] {
        added(label, with, &b.exit);
        if let (Some(w), Some(wo)) = (percentiles(with), percentiles(&b.exit)) {
            let (p50, p90) = (w.0 / wo.0, w.1 / wo.1);
            println!(
                "{label}: ratio with/without the daemon p50 {p50:.3}, p90 {p90:.3} (goal ≤ 1.02)"
            );
        }
    }
    Ok(())
}

fn row(who: &str, round: usize, e: &Execs, load: &str) -> String {
    format!("| {who} | {round} | {} of {} | {load} |", e.outside, e.n)
}

/// p50 and p99 of `a`, of `b`, and of their difference.
fn added(label: &str, a: &[f64], b: &[f64]) {
    if let (Some(x), Some(y)) = (percentiles(a), percentiles(b)) {
        println!(
            "{label}: p50 {:.3} against {:.3} (+{:.3}), p99 {:.3} against {:.3} (+{:.3})",
            x.0,
            y.0,
            x.0 - y.0,
            x.2,
            y.2,
            x.2 - y.2
        );
    }
}

/// N execs of `bin` as `cat /proc/self/cgroup`, one at a time.
fn execs(bin: &Path, root: &str, n: usize) -> Result<Execs> {
    let mut e = Execs::default();
    for _ in 0..n {
        one(bin, root, &mut e)?;
    }
    Ok(e)
}

/// N execs each of `a` and `b`, alternating.
fn execs_alternating(a: &Path, b: &Path, root: &str, n: usize) -> Result<(Execs, Execs)> {
    let (mut ea, mut eb) = (Execs::default(), Execs::default());
    for _ in 0..n {
        one(a, root, &mut ea)?;
        one(b, root, &mut eb)?;
    }
    Ok((ea, eb))
}

/// One exec of `bin` as `cat /proc/self/cgroup`, then 2 ms (`--gap-ms`: that long).
fn one(bin: &Path, root: &str, e: &mut Execs) -> Result<()> {
    let t0 = Instant::now();
    let mut c = Command::new(bin)
        .arg0("cat")
        .arg("/proc/self/cgroup")
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("exec {}", bin.display()))?;
    let mut out = c.stdout.take().context("stdout")?;
    let mut text = Vec::new();
    let mut first = None;
    let mut buf = [0u8; 4096];
    loop {
        let k = out.read(&mut buf)?;
        if k == 0 {
            break;
        }
        first.get_or_insert_with(|| t0.elapsed());
        text.extend_from_slice(&buf[..k]);
    }
    c.wait()?;
    let exit = t0.elapsed();
    e.n += 1;
    e.first.push(first.unwrap_or(exit).as_secs_f64() * 1e6);
    e.exit.push(exit.as_secs_f64() * 1e6);
    if !super::under_root(&String::from_utf8_lossy(&text), root) {
        e.outside += 1;
    }
    let gap = super::GAP_MS.load(std::sync::atomic::Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(if gap > 0 { gap as u64 } else { 2 }));
    Ok(())
}

/// Whether an ELF file has no program interpreter (`PT_INTERP`): statically linked.
fn is_static(path: &str) -> Result<bool> {
    let b = std::fs::read(path).with_context(|| format!("read {path}"))?;
    let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]) as usize;
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 {
        bail!("{path} is not a 64-bit ELF file");
    }
    let phoff = u64::from_le_bytes(b[32..40].try_into()?) as usize;
    let (size, count) = (u16_at(54), u16_at(56));
    let interp = (0..count)
        .map(|i| phoff + i * size)
        .any(|at| at + 4 <= b.len() && u32_at(at) == 3);
    Ok(!interp)
}

/// `read→placed X.XXXms` of every placement held at exec, in µs.
fn held_times(log: &str) -> Vec<f64> {
    super::ms_after(log, "held at exec: read→placed ")
}
