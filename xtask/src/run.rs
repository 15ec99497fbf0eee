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
    let mut cmd = std::process::Command::new(root.join("target/release/ffrtmp"));
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
