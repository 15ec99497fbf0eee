//! The daemon under test: the real `ffrtmp watch`, built by `Daemon::new(…)…start()` with
//! a config of the test's own, its log in a file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{spawn_retrying, unique, wait_until, TestRoot};

/// What a test's daemon is started with. `yaml` gets `cgroup_root`, and unless it sets
/// them: `state_path` (`<dir>/state.json`, shared by the daemons a test starts in one
/// directory, as a restart shares it), `metrics_addr` (a free port) and a 1 h
/// `reconcile_interval` (placements come from exec events unless a test asks for scans).
pub struct Builder {
    dir: PathBuf,
    root_path: String,
    yaml: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    wrapper: Vec<String>,
    open_files: Option<u64>,
}

impl Builder {
    /// Extra arguments of `ffrtmp watch`.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// `--fallback-scan`: the /proc scan governs when the eBPF source cannot be used.
    pub fn fallback_scan(self) -> Self {
        self.args(&["--fallback-scan"])
    }

    pub fn env(mut self, vars: &[(&str, &str)]) -> Self {
        self.env
            .extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// A command that runs the daemon (`prlimit … --`, `setpriv …`).
    pub fn wrapper(mut self, cmd: &[&str]) -> Self {
        self.wrapper = cmd.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Start it with this open-files limit, soft and hard (what `prlimit --nofile=N:N`
    /// does, without needing prlimit in the VM).
    pub fn open_files(mut self, n: u64) -> Self {
        self.open_files = Some(n);
        self
    }

    pub fn start(self) -> Daemon {
        let n = unique();
        let config = self.dir.join(format!("config-{n}.yaml"));
        let state = self.dir.join("state.json");
        let mut text = format!("{}\ncgroup_root: {}\n", self.yaml, self.root_path);
        if !self.yaml.contains("state_path") {
            text.push_str(&format!("state_path: {}\n", state.display()));
        }
        if !self.yaml.contains("reconcile_interval") {
            text.push_str("reconcile_interval: 1h\n");
        }
        if !self.yaml.contains("metrics_addr") {
            text.push_str("metrics_addr: 127.0.0.1:0\n");
        }
        std::fs::write(&config, text).unwrap();
        Daemon::spawn(
            config,
            state,
            self.dir.join(format!("daemon-{n}.log")),
            &self,
        )
    }
}

/// A running `ffrtmp watch`, its stderr in a file.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
    pub config: PathBuf,
    pub state: PathBuf,
}

impl Daemon {
    /// A daemon for `root`, its files in `dir`, with `yaml` (see `Builder`).
    #[allow(clippy::new_ret_no_self)]
    pub fn new(dir: &Path, root: &TestRoot, yaml: &str) -> Builder {
        Builder {
            dir: dir.to_path_buf(),
            root_path: root.path.clone(),
            yaml: yaml.to_string(),
            args: Vec::new(),
            env: Vec::new(),
            wrapper: Vec::new(),
            open_files: None,
        }
    }

    /// Another daemon with the config file an earlier one was started with.
    pub fn again(config: PathBuf, state: PathBuf, log: PathBuf, b: Builder) -> Daemon {
        Daemon::spawn(config, state, log, &b)
    }

    fn spawn(config: PathBuf, state: PathBuf, log: PathBuf, b: &Builder) -> Daemon {
        let mut cmd = match b.wrapper.split_first() {
            Some((w, rest)) => {
                let mut c = Command::new(w);
                c.args(rest).arg(super::ffrtmp_bin());
                c
            }
            None => Command::new(super::ffrtmp_bin()),
        };
        cmd.args(["watch", "--config"])
            .arg(&config)
            .args(&b.args)
            // Its own runtime directory: never the host's /run/ffrtmp.
            .env(
                ffrtmp::placer::registry::RUNTIME_DIR_ENV,
                config.parent().unwrap().join("run"),
            )
            .env_remove("RUST_BACKTRACE")
            .env_remove("SCAN_INTERVAL")
            .env_remove("TARGET_COMMANDS")
            .env_remove("STATE_PATH")
            .env_remove(ffrtmp::sources::ebpf::HOOK_ENV)
            .env_remove(ffrtmp::sources::ebpf::RING_ENV)
            .envs(b.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(n) = b.open_files {
            use std::os::unix::process::CommandExt;
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: setrlimit is async-signal-safe; it runs in the child before exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        Daemon {
            child: spawn_retrying(&mut cmd),
            log,
            config,
            state,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until `cond` holds (at most `within`); else fail, saying `what` and the log.
    pub fn expect(&self, within: Duration, cond: impl FnMut() -> bool, what: &str) {
        assert!(wait_until(within, cond), "{what}:\n{}", self.log_text());
    }

    /// Wait (`within`) for the child `c` to exit with success; else fail saying `what`,
    /// its status and this daemon's log.
    pub fn exits_ok(&self, c: &mut std::process::Child, within: Duration, what: &str) {
        let status = super::wait_exit(c, within);
        assert!(
            status.is_some_and(|s| s.success()),
            "{what}: {status:?}\n{}",
            self.log_text()
        );
    }

    /// Wait (10 s) for a log line containing `needle`; else fail with the log.
    pub fn logs(&self, needle: &str) {
        self.logs_within(needle, Duration::from_secs(10));
    }

    /// Wait (`within`) for a log line containing `needle`; else fail with the log.
    pub fn logs_within(&self, needle: &str, within: Duration) {
        self.expect(
            within,
            || self.log_text().contains(needle),
            &format!("no {needle:?} in the log"),
        );
    }

    /// Wait for a log line containing `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log_text().contains(needle))
    }

    /// `http://host:port` the daemon serves /metrics and /healthz on (from its log).
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

    pub fn pid(&self) -> u32 {
        self.child.id()
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

    /// SIGTERM and wait; returns the exit code and the log.
    pub fn stop_code(mut self) -> (Option<i32>, String) {
        self.signal(libc::SIGTERM);
        let code = self.exit_code(Duration::from_secs(10));
        (code, self.log_text())
    }

    /// SIGTERM, wait for exit code 0; returns the log.
    pub fn stop(self) -> String {
        let (code, log) = self.stop_code();
        assert_eq!(code, Some(0), "{log}");
        log
    }
}

impl Drop for Daemon {
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
