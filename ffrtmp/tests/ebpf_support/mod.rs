//! Helpers of the eBPF root tests (`ebpf_root.rs`, `ebpf_strict.rs`): skipping with a
//! reason, one daemon at a time, `ffrtmp watch` run with eBPF and a log to read, and
//! children that are never left stopped.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::support::{self, unique, wait_until, TestRoot};

/// The tests start daemons and time placements on a 2-core machine: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Say why a test is skipped. Written to stderr directly: libtest captures `eprintln!` of
/// passing tests, and a skip must be visible.
pub fn skipped(test: &str, why: &str) {
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("SKIPPED {test}: {why}\n").as_bytes(),
    );
}

pub fn skip_reason() -> Option<String> {
    support::root_skip_reason().or_else(|| {
        (!ffrtmp::sources::ebpf::is_embedded()).then(|| {
            "ffrtmp was built without the eBPF object (run `cargo xtask build-ebpf`, then rebuild)"
                .to_string()
        })
    })
}

#[macro_export]
macro_rules! require_ebpf {
    () => {
        if let Some(why) = $crate::ebpf_support::skip_reason() {
            $crate::ebpf_support::skipped(module_path!(), &why);
            if std::env::var_os("FFRTMP_REQUIRE_ROOT_TESTS").is_some()
                || std::env::var_os("CI").is_some()
            {
                panic!(
                    "root/eBPF tests must run here (FFRTMP_REQUIRE_ROOT_TESTS or CI is set): {why}"
                );
            }
            return;
        }
    };
}

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A short, unique name prefix (comm names must stay within 15 bytes).
pub fn tag() -> String {
    let u = unique();
    let (pid, n) = u.split_once('-').unwrap();
    format!("e{}{n}", pid.parse::<u32>().unwrap() % 100_000)
}

/// A running `ffrtmp watch` (eBPF by default), its stderr in a file.
pub struct Watch {
    pub child: Child,
    pub log: PathBuf,
    pub config: PathBuf,
}

impl Watch {
    /// `yaml` gets cgroup_root, state_path and a 1 h reconcile interval (so placements in
    /// the tests come from events unless a test asks for a scan).
    pub fn start(
        dir: &Path,
        root: &TestRoot,
        yaml: &str,
        args: &[&str],
        env: &[(&str, &str)],
        wrapper: &[&str],
    ) -> Watch {
        let n = unique();
        let config = dir.join(format!("config-{n}.yaml"));
        let log = dir.join(format!("watch-{n}.log"));
        let mut text = yaml.to_string();
        text.push_str(&format!("\ncgroup_root: {}\n", root.path));
        if !yaml.contains("state_path") {
            text.push_str(&format!(
                "state_path: {}\n",
                dir.join(format!("state-{n}.json")).display()
            ));
        }
        if !yaml.contains("reconcile_interval") {
            text.push_str("reconcile_interval: 1h\n");
        }
        if !yaml.contains("metrics_addr") {
            text.push_str("metrics_addr: 127.0.0.1:0\n");
        }
        std::fs::write(&config, text).unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((w, rest)) => {
                let mut c = Command::new(w);
                c.args(rest).arg(support::ffrtmp_bin());
                c
            }
            None => Command::new(support::ffrtmp_bin()),
        };
        cmd.args(["watch", "--config"])
            .arg(&config)
            .args(args)
            // Its own runtime directory: never the host's /run/ffrtmp.
            .env(ffrtmp::placer::registry::RUNTIME_DIR_ENV, dir.join("run"))
            .env_remove("SCAN_INTERVAL")
            .env_remove("TARGET_COMMANDS")
            .env_remove("STATE_PATH")
            .env_remove(ffrtmp::sources::ebpf::HOOK_ENV)
            .env_remove(ffrtmp::sources::ebpf::RING_ENV)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = support::spawn_retrying(&mut cmd);
        Watch { child, log, config }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `http://host:port` of /metrics and /healthz (from the log).
    pub fn metrics_url(&self) -> Option<String> {
        let log = self.log_text();
        let rest = log.split("Serving /metrics and /healthz on ").nth(1)?;
        Some(rest.lines().next()?.trim().to_string())
    }

    /// Wait until the eBPF source runs and the startup scan is done.
    pub fn ready(&self) {
        let ok = wait_until(Duration::from_secs(20), || {
            let l = self.log_text();
            l.contains("Event source ebpf started") && l.contains("Scan complete")
        });
        assert!(ok, "daemon not ready:\n{}", self.log_text());
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Exit code, waiting at most `timeout`.
    pub fn exit_code(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            if Instant::now() > deadline {
                panic!(
                    "daemon still running after {timeout:?}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(mut self) -> String {
        self.signal(libc::SIGTERM);
        assert_eq!(
            self.exit_code(Duration::from_secs(10)),
            Some(0),
            "{}",
            self.log_text()
        );
        self.log_text()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- daemon log {} ----\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// Whether the daemon placed `pid` from an exec event (kernel timestamp → `exec→placed`).
pub fn placed_by_event(log: &str, pid: u32) -> bool {
    let needle = format!("Limits applied to PID {pid} ");
    log.lines()
        .any(|l| l.contains(&needle) && l.contains("exec→placed"))
}

/// Whether the log mentions `pid` (and not merely a longer PID starting with its digits).
pub fn mentions(log: &str, pid: u32) -> bool {
    log.contains(&format!("PID {pid}:")) || log.contains(&format!("PID {pid} "))
}

pub fn job(root: &TestRoot, name: &str, pid: u32) -> String {
    root.job(&format!("auto-{name}-{pid}"))
}

pub fn spawn(root: &mut TestRoot, path: &Path, args: &[&str]) -> u32 {
    let mut cmd = Command::new(path);
    cmd.args(args).stdin(Stdio::null());
    root.own(support::spawn_retrying(&mut cmd))
}

/// Whether `pid` is anywhere under the test's cgroup root (cpu hierarchy line).
pub fn under_root(root: &TestRoot, pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains(&format!("{}/", root.path)))
}

/// A dash copy that writes its own /proc/self/cgroup (builtins only: no child process) as
/// its first action, then exits 0.
pub fn strict_script(out: &Path) -> String {
    format!(
        "while read -r l; do echo \"$l\"; done < /proc/self/cgroup > {}",
        out.display()
    )
}

pub fn wait_exit(c: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(s) = c.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Wait for every child; then continue and kill the ones still there (never leave one
/// stopped, even when the test is about to fail). Returns (PID, status if it exited).
pub fn finish_all(
    kids: Vec<Child>,
    timeout: Duration,
) -> Vec<(u32, Option<std::process::ExitStatus>)> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    for mut k in kids {
        let left = deadline.saturating_duration_since(Instant::now());
        let status = wait_exit(&mut k, left.max(Duration::from_millis(10)));
        if status.is_none() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(k.id() as i32, libc::SIGCONT) };
            let _ = k.kill();
            let _ = k.wait();
        }
        out.push((k.id(), status));
    }
    out
}
