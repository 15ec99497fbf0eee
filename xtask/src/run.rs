//! `cargo xtask run`: build everything and run the governor with the bundled example
//! config and a state directory in the checkout (`.state/`).

use anyhow::{Context, Result};

use crate::util::{cargo, is_root, repo_root, run};

pub fn run_governor(args: &[String]) -> Result<()> {
    let root = repo_root();
    let install = if is_root() {
        vec!["--install".to_string()]
    } else {
        Vec::new()
    };
    if let Err(e) = crate::ebpf::build(&install) {
        eprintln!("xtask run: the eBPF object could not be built ({e:#}); ffrtmp will fall back to scanning /proc");
    }
    run(cargo()
        .current_dir(&root)
        .args(["build", "--release", "-p", "ffrtmp"]))?;
    let state = root.join(".state");
    std::fs::create_dir_all(&state)
        .with_context(|| format!("cannot create {}", state.display()))?;
    let bin = root.join("target/release/ffrtmp");
    print!("{}", first_steps(&bin));
    let mut cmd = std::process::Command::new(&bin);
    cmd.current_dir(&root)
        .args([
            "watch",
            "--config",
            "examples/watch-config.yaml",
            "--fallback-scan",
            "--state-path",
        ])
        .arg(state.join("watch-state.json"))
        .args(args);
    run(&mut cmd)
}

/// What a newcomer can try while the governor runs, and what to expect: the example config
/// is the predecessor's, with `min_runtime: 10s` for ffmpeg (5 s for the other targets) and
/// `blocked_dirs: [/tmp]`, so a target started from /tmp is skipped and a placement waits.
fn first_steps(bin: &std::path::Path) -> String {
    let b = bin.display();
    format!(
        "
xtask run: starting the governor (examples/watch-config.yaml, state in .state/). In a second terminal:

  sudo {b} status                       # this daemon's jobs (it publishes its state file in /run/ffrtmp)
  cp /bin/sleep /var/tmp/ffmpeg          # a stand-in target named ffmpeg
  (cd / && /var/tmp/ffmpeg 120 &)        # its working directory outside /tmp: the example blocks /tmp

What to expect here: \"PID N (ffmpeg) matches ffmpeg but has not run min_runtime yet; placing it in 10s\"
at once (at the next scan, within 10 s, without the eBPF source); the example keeps the guide's
min_runtime: 10s for ffmpeg, so then \"Limits applied to PID N (job
auto-ffmpeg-N)\" 10 s later; `status` lists it with its CPU and memory. Without a min_runtime a target is
placed within milliseconds of its exec: `ffrtmp watch --config FILE` with your own file. Ctrl-C stops the
governor; governed processes keep running in their cgroups.

"
    )
}
