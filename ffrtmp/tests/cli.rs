//! The command line as users meet it, without root: config errors name the file, line
//! and key and exit 2; warnings about the environment overriding the file are printed by
//! `config check` and logged by `watch` at start.

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::*;

#[test]
fn a_target_name_with_a_newline_is_a_config_error_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    let yaml = "scan_interval: 10s\ntarget_commands:\n  - ffmpeg\n  - \"gst\\nlaunch\"\n";
    let out = with_config(&cfg, yaml, &["config", "check"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    // yaml_serde reports the list the name is in (line 3).
    assert!(err.contains(&format!("{}:3:", cfg.display())), "{err}");
    assert!(
        err.contains("target_commands") && err.contains("control character"),
        "{err}"
    );
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
