//! `cargo xtask fuzz`: coverage-guided fuzzing (cargo fuzz, libFuzzer with AddressSanitizer)
//! of everything the daemon reads that it does not control. Each target starts from a corpus
//! seeded from the test fixtures; a crash, a timeout or running out of memory fails the run
//! and leaves the input in `fuzz/artifacts/<target>/`.
//!
//! cargo fuzz asks for nightly flags (`-Zsanitizer=address`); on a stable toolchain
//! `RUSTC_BOOTSTRAP=1` allows them, and this task sets it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::util::{cargo, repo_root, run, show};

/// The targets (fuzz/fuzz_targets/<name>.rs) and what each reads.
pub const TARGETS: [(&str, &str); 6] = [
    (
        "config",
        "the YAML file, the environment's overrides, validated settings",
    ),
    ("state", "the state file loader"),
    (
        "exec_event",
        "the ring buffer's exec record (ffrtmp-common) and its notice",
    ),
    (
        "proc",
        "/proc parsers: stat, status, cgroup, cmdline, mountinfo",
    ),
    ("btf", "the BTF reader (kernel struct offsets)"),
    ("duration", "the Go-style duration parser"),
];

/// How many targets run at once (the machines have 2 cores).
const PARALLEL: usize = 2;

struct Options {
    seconds: u64,
    targets: Vec<String>,
}

fn options(args: &[String]) -> Result<Options> {
    let mut o = Options {
        seconds: 30,
        targets: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                let v = it.next().context("--seconds needs a number")?;
                o.seconds = v.parse().with_context(|| format!("--seconds {v:?}"))?;
            }
            "--target" => o.targets.push(it.next().context("--target needs a name")?.clone()),
            other => bail!(
                "unknown option {other:?}\nusage: cargo xtask fuzz [--seconds N] [--target NAME]…\n  targets: {}",
                TARGETS.map(|t| t.0).join(", ")
            ),
        }
    }
    for t in &o.targets {
        if !TARGETS.iter().any(|(n, _)| n == t) {
            bail!(
                "no fuzz target {t:?}; targets: {}",
                TARGETS.map(|t| t.0).join(", ")
            );
        }
    }
    if o.targets.is_empty() {
        o.targets = TARGETS.iter().map(|t| t.0.to_string()).collect();
    }
    Ok(o)
}

pub fn fuzz(args: &[String]) -> Result<()> {
    let o = options(args)?;
    build()?;
    let mut failed = Vec::new();
    for chunk in o.targets.chunks(PARALLEL) {
        let mut running: Vec<(String, Child, Instant)> = Vec::new();
        for t in chunk {
            match start(t, o.seconds) {
                Ok(c) => running.push((t.clone(), c, Instant::now())),
                Err(e) => {
                    // Not one left running behind the error.
                    for (_, mut c, _) in running {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                    return Err(e);
                }
            }
        }
        for (t, mut child, started) in running {
            let status = child.wait()?;
            let log = std::fs::read_to_string(log_path(&t)).unwrap_or_default();
            println!(
                "fuzz {t}: {} in {} s",
                summary(&log),
                started.elapsed().as_secs()
            );
            if !status.success() {
                eprintln!("{}", tail(&log, 40));
                failed.push(format!(
                    "{t} ({status}; input in fuzz/artifacts/{t}/, log {})",
                    log_path(&t).display()
                ));
            }
        }
    }
    if !failed.is_empty() {
        bail!("fuzzing found a failure: {}", failed.join("; "));
    }
    Ok(())
}

/// cargo-fuzz itself (from crates.io when missing), then every target in one build.
/// libfuzzer-sys compiles libFuzzer, which wants a C++ compiler (g++, installed as root).
fn build() -> Result<()> {
    crate::util::ensure_tool("c++", "g++")?;
    let have = cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        run(cargo().args(["install", "cargo-fuzz", "--locked", "--version", "0.13.2"]))?;
    }
    run(fuzz_cmd().args(["build", "-O"]))
}

fn fuzz_cmd() -> Command {
    let mut c = cargo();
    c.current_dir(repo_root())
        .env("RUSTC_BOOTSTRAP", "1")
        .arg("fuzz");
    c
}

fn corpus_dir(target: &str) -> PathBuf {
    repo_root().join("fuzz/corpus").join(target)
}

fn log_path(target: &str) -> PathBuf {
    repo_root().join("fuzz/logs").join(format!("{target}.log"))
}

/// Seed the corpus and start the target for `seconds`, its output to its log.
fn start(target: &str, seconds: u64) -> Result<Child> {
    let corpus = corpus_dir(target);
    std::fs::create_dir_all(&corpus)?;
    for (name, bytes) in seeds(target)? {
        std::fs::write(corpus.join(format!("seed-{name}")), bytes)?;
    }
    let log = log_path(target);
    std::fs::create_dir_all(log.parent().unwrap())?;
    let out = std::fs::File::create(&log)?;
    let mut c = fuzz_cmd();
    c.args(["run", "-O", target])
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        // An input that takes a second, or a gigabyte, is a finding.
        .args(["-timeout=1", "-rss_limit_mb=1024", "-print_final_stats=1"])
        .stdout(out.try_clone()?)
        .stderr(out);
    eprintln!("+ {} > {}", show(&c), log.display());
    c.spawn()
        .with_context(|| format!("cannot start {}", show(&c)))
}

/// What the target starts from: the committed seeds (fuzz/seeds/<target>/) and the test
/// fixtures the daemon would read.
fn seeds(target: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let root = repo_root();
    let mut out = files_in(&root.join("fuzz/seeds").join(target))?;
    match target {
        "config" => {
            let mut yaml = files_in(&root.join("examples"))?;
            yaml.extend(files_in(&root.join("ffrtmp/tests/fixtures/seed"))?);
            let env: Vec<_> = yaml
                .iter()
                .filter(|(n, _)| n.ends_with(".env"))
                .cloned()
                .collect();
            yaml.retain(|(n, _)| n.ends_with(".yaml"));
            // Every file alone, and with each env file after it.
            for (n, y) in &yaml {
                out.push((n.clone(), y.clone()));
                for (e, text) in &env {
                    let b = [&y[..], &[0], &text[..]].concat();
                    out.push((format!("{n}+{e}"), b));
                }
            }
        }
        "proc" => {
            let files = ["stat", "status", "cgroup", "cmdline", "mountinfo"];
            for (i, f) in files.iter().enumerate() {
                let mut b = vec![i as u8];
                b.extend(std::fs::read(format!("/proc/self/{f}"))?);
                out.push((f.to_string(), b));
            }
        }
        "duration" => {
            for d in [
                "30s", "10s", "1m30s", "2h45m", "500ms", "1.5h", "250us", "1µs", "0", "-1s",
            ] {
                out.push((d.replace('.', "_"), d.as_bytes().to_vec()));
            }
        }
        _ => {}
    }
    if out.is_empty() {
        bail!("no seeds for fuzz target {target}");
    }
    Ok(out)
}

fn files_in(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for e in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = e?.path();
        if path.is_file() {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            out.push((name, std::fs::read(&path)?));
        }
    }
    out.sort();
    Ok(out)
}

/// libFuzzer's closing numbers: runs, executions per second, coverage, corpus.
fn summary(log: &str) -> String {
    let stat = |key: &str| {
        log.lines()
            .filter_map(|l| l.strip_prefix(key)?.trim().strip_prefix(':'))
            .next_back()
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| "?".into())
    };
    let last_status = log
        .lines()
        .rfind(|l| l.starts_with('#') && l.contains("cov:"))
        .unwrap_or("(no status line)");
    format!(
        "{} runs, {} exec/s, peak {} MB; last: {}",
        stat("stat::number_of_executed_units"),
        stat("stat::average_exec_per_sec"),
        stat("stat::peak_rss_mb"),
        last_status.split_whitespace().collect::<Vec<_>>().join(" ")
    )
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
