//! The command line as users meet it, without root: config errors name the file, line
//! and key and exit 2; warnings about the environment overriding the file are printed by
//! `config check` and logged by `watch` at start.

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::*;

/// A config error exits 2 and names the file, its line and the key, without a backtrace.
#[test]
fn config_errors_exit_2_naming_the_file_line_and_key() {
    let cases: [(&str, &[&str], &str, &[&str]); 2] = [
        // yaml_serde reports the list the name is in (line 3).
        (
            "scan_interval: 10s\ntarget_commands:\n  - ffmpeg\n  - \"gst\\nlaunch\"\n",
            &["config", "check"],
            ":3:",
            &["target_commands", "control character"],
        ),
        (
            "scan_interval: 10s\ndefault_limits:\n  cpu_weight: 20000\n",
            &["watch", "--fallback-scan"],
            ":3:",
            &["default_limits.cpu_weight", "accepted 1–10000"],
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, (yaml, args, line, says)) in cases.into_iter().enumerate() {
        let cfg = dir.path().join(format!("bad-{i}.yaml"));
        let at = format!("{}{line}", cfg.display());
        let says: Vec<&str> = [at.as_str()]
            .into_iter()
            .chain(says.iter().copied())
            .collect();
        fails(&mut with_config(&cfg, yaml, args), 2, &says);
    }
}

#[test]
fn the_guide_env_file_over_the_guide_config_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    let yaml = format!(
        "target_commands: [ffmpeg, gst-launch-1.0]\ncgroup_root: /ffrtmp-cli-test\nstate_path: {}\nmetrics_addr: \"\"\n",
        dir.path().join("s.json").display()
    );
    let out = with_config(&cfg, &yaml, &["config", "check"])
        .env("TARGET_COMMANDS", "ffmpeg")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains(
            "# warning: environment variable TARGET_COMMANDS=\"ffmpeg\" overrides target_commands"
        ),
        "{text}"
    );
    assert!(text.contains("gst-launch-1.0 NOT governed"), "{text}");

    // `watch` logs it at start (a dry run: nothing is created or moved).
    let log = dir.path().join("watch.log");
    let mut w = ffrtmp_cmd()
        .args(["watch", "--dry-run", "--fallback-scan", "--config"])
        .arg(&cfg)
        .env("TARGET_COMMANDS", "ffmpeg")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let seen = wait_until(Duration::from_secs(20), || read().contains("Scan complete"));
    // SAFETY: our own child.
    unsafe { libc::kill(w.id() as i32, libc::SIGTERM) };
    let _ = w.wait();
    let text = read();
    assert!(seen, "{text}");
    assert!(
        text.contains(
            "WARN [watch] config: environment variable TARGET_COMMANDS=\"ffmpeg\" overrides"
        ),
        "{text}"
    );
}

/// Output to a reader that went away (`ffrtmp config check | grep -q …`) is dropped: the
/// command ends as it would have, without the panic `println!` gives on a closed pipe.
#[test]
fn output_to_a_closed_pipe_is_dropped_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills both descriptors, which are then owned here.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors from pipe2, owned by nothing else.
    let (reader, writer) = unsafe {
        use std::os::fd::{FromRawFd, OwnedFd};
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    };
    drop(reader);
    let out = with_config(
        &dir.path().join("watch-config.yaml"),
        "target_commands: [ffmpeg]\n",
        &["config", "check"],
    )
    .stdout(writer)
    .stderr(Stdio::piped())
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
