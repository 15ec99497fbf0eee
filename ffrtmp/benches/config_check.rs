//! Benchmark: `ffrtmp config check` on a config with N target names, for N from 20 000 to
//! 100 000: validation must grow linearly with the input (it once grew quadratically:
//! every name was compared with every name before it).
//!
//!     cargo bench -p ffrtmp --bench config_check -- [ROUNDS]
//!
//! Prints the best of ROUNDS (default 3) wall times per size and the time per name; the
//! per-name time should stay flat. Goal: 100 000 names under 1 s.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut per_name = Vec::new();
    for n in [20_000usize, 50_000, 100_000] {
        let path = dir.path().join(format!("names-{n}.yaml"));
        let mut text = String::from("target_commands:\n");
        for i in 0..n {
            text.push_str(&format!("  - transcoder-{i}\n"));
        }
        // A command section and a filter with an unknown user: the per-target merge and the
        // warnings run for every name too.
        text.push_str("filters:\n  allowed_users: [no-such-user]\ncommands:\n  transcoder-7:\n    limits: {cpu_quota: 50}\n");
        std::fs::write(&path, text).expect("write config");
        let best = (0..rounds)
            .map(|_| {
                let t = Instant::now();
                let status = Command::new(env!("CARGO_BIN_EXE_ffrtmp"))
                    .args(["config", "check", "--config"])
                    .arg(&path)
                    .stdout(Stdio::null())
                    .status()
                    .expect("run ffrtmp config check");
                assert!(status.success(), "config check failed on {n} names");
                t.elapsed()
            })
            .min()
            .unwrap_or(Duration::ZERO);
        let us = best.as_secs_f64() * 1e6 / n as f64;
        per_name.push(us);
        println!(
            "config check, {n:>6} names: {:.3} s ({us:.2} µs per name)",
            best.as_secs_f64()
        );
    }
    println!(
        "per-name time, 100 000 against 20 000 names: {:.2}x (1.0 = linear)",
        per_name[2] / per_name[0]
    );
}
