//! What `daemon_logic.rs` drives the real `Daemon` with, as a normal user: a fixture
//! `/proc` (a directory per real child process, with the stat, cgroup and status files the
//! daemon reads, so names, namespaces and cgroups are the test's to choose), a fake
//! cgroup backend that keeps its cgroups in memory and writes each move into the fixture
//! `cgroup` file, an in-memory ledger of stops, and the channel source. Processes are
//! real (`sleep` children): pidfds, exits, SIGSTOP and SIGCONT are the kernel's.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ffrtmp::config::{EnvVars, FlagOverrides, Limits, Settings, Sources};
use ffrtmp::daemon::{Daemon, Options, ScanRole};
use ffrtmp::exec::ExecNotice;
use ffrtmp::placer::backend::{CgroupBackend, CgroupMode, RootReport, Usage};
use ffrtmp::placer::limits::{v2_writes, Controller, LimitWrite, Plan};
use ffrtmp::placer::unit::{UnitBus, UnitLimits, UNSET};
use ffrtmp::placer::{PlaceError, Placer, Step};
use ffrtmp::process::{parse_cgroup_file, MemoryLedger, ProcFs, StopLedger};
use ffrtmp::record::logging::LogControl;
use ffrtmp::record::metrics::Snapshot;
use ffrtmp::record::observe::Observer;
use ffrtmp::sources::{ChannelSource, Feed};
use ffrtmp_common::StopKey;

pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The real kernel's state letter of a process (R, S, T, …).
pub fn real_state(pid: u32) -> u8 {
    ProcFs::system().stat(pid).map(|s| s.state).unwrap_or(b'?')
}

/// How the fake backend behaves.
#[derive(Debug, Default)]
pub struct Behaviour {
    /// Fail this many moves with EAGAIN before they work.
    pub eagain_moves: u32,
    /// Every move takes this long.
    pub move_delay: Duration,
    /// Writes of this limit file fail (ENOENT: its controller is not enabled there).
    pub refused_file: Option<&'static str>,
}

#[derive(Debug, Default)]
pub struct Cgroup {
    /// Every limit write, in order, as `file=value`.
    pub limits: Vec<String>,
    pub procs: Vec<u32>,
    /// What each limit file shows now (absent: the kernel's default).
    pub files: BTreeMap<&'static str, String>,
}

/// A move the backend did: which process, where, and the process's real state then.
#[derive(Debug, Clone)]
pub struct Move {
    pub pid: u32,
    pub cgroup: String,
    pub state: u8,
}

#[derive(Default)]
struct Inner {
    cgroups: BTreeMap<String, Cgroup>,
    moves: Vec<Move>,
    failed_moves: u32,
    behaviour: Behaviour,
}

/// A cgroup v2 backend in memory. A move rewrites `<proc>/<pid>/cgroup`.
#[derive(Clone)]
pub struct FakeBackend {
    proc_root: PathBuf,
    inner: Arc<Mutex<Inner>>,
}

impl FakeBackend {
    pub fn new(proc_root: &Path) -> Self {
        FakeBackend {
            proc_root: proc_root.to_path_buf(),
            inner: Arc::default(),
        }
    }
    pub fn behave(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.inner.lock().unwrap().behaviour)
    }
    pub fn moves(&self) -> Vec<Move> {
        self.inner.lock().unwrap().moves.clone()
    }
    pub fn failed_moves(&self) -> u32 {
        self.inner.lock().unwrap().failed_moves
    }
    pub fn cgroup(&self, path: &str) -> Option<(Vec<String>, Vec<u32>)> {
        let i = self.inner.lock().unwrap();
        i.cgroups
            .get(path)
            .map(|c| (c.limits.clone(), c.procs.clone()))
    }
    /// The process exited: the kernel takes it out of its cgroup.
    pub fn exited(&self, pid: u32) {
        for c in self.inner.lock().unwrap().cgroups.values_mut() {
            c.procs.retain(|p| *p != pid);
        }
    }
    /// Another writer changes a limit file.
    pub fn set_file(&self, cgroup: &str, file: &'static str, value: &str) {
        let mut i = self.inner.lock().unwrap();
        let cg = i.cgroups.get_mut(cgroup).expect("no such cgroup");
        cg.files.insert(file, value.to_string());
    }
    /// What a limit file shows now.
    pub fn file(&self, cgroup: &str, file: &str) -> Option<String> {
        let i = self.inner.lock().unwrap();
        i.cgroups.get(cgroup)?.files.get(file).cloned()
    }
    pub fn cgroups(&self) -> Vec<String> {
        self.inner.lock().unwrap().cgroups.keys().cloned().collect()
    }
    fn write_membership(&self, pid: u32, cgroup: &str) {
        let _ = std::fs::write(
            self.proc_root.join(pid.to_string()).join("cgroup"),
            format!("0::{cgroup}\n"),
        );
    }
}

impl CgroupBackend for FakeBackend {
    fn mode(&self) -> CgroupMode {
        CgroupMode::V2
    }
    fn describe(&self) -> String {
        "fake cgroup v2 backend (tests)".into()
    }
    fn prepare_root(&self, root: &str) -> RootReport {
        self.inner
            .lock()
            .unwrap()
            .cgroups
            .entry(root.to_string())
            .or_default();
        RootReport {
            available: Controller::ALL.to_vec(),
            ..Default::default()
        }
    }
    fn create(&self, cgroup: &str) -> Result<(), PlaceError> {
        self.inner
            .lock()
            .unwrap()
            .cgroups
            .entry(cgroup.to_string())
            .or_default();
        Ok(())
    }
    fn plan(&self, limits: &Limits, plan: Plan) -> Vec<LimitWrite> {
        v2_writes(limits, plan)
    }
    fn write_limits(
        &self,
        cgroup: &str,
        writes: Vec<LimitWrite>,
    ) -> Vec<(String, Result<(), PlaceError>)> {
        let mut i = self.inner.lock().unwrap();
        let refused = i.behaviour.refused_file;
        let cg = i.cgroups.entry(cgroup.to_string()).or_default();
        writes
            .into_iter()
            .map(|w| {
                let label = format!("{}={}", w.file, w.value);
                if refused == Some(w.file) {
                    let e = std::io::Error::from_raw_os_error(libc::ENOENT);
                    return (label, Err(PlaceError::io(Step::WriteLimit, cgroup, &e)));
                }
                cg.limits.push(label.clone());
                cg.files.insert(w.file, w.value);
                (label, Ok(()))
            })
            .collect()
    }
    fn read_limit(&self, cgroup: &str, w: &LimitWrite) -> std::io::Result<String> {
        let i = self.inner.lock().unwrap();
        let cg = i
            .cgroups
            .get(cgroup)
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOENT))?;
        let default = match w.file {
            "cpu.max" => "max 100000",
            "cpu.weight" => "100",
            _ => "max",
        };
        Ok(cg.files.get(w.file).cloned().unwrap_or(default.into()))
    }
    fn move_process(&self, cgroup: &str, pid: u32) -> Result<(), PlaceError> {
        let delay = self.inner.lock().unwrap().behaviour.move_delay;
        std::thread::sleep(delay);
        let mut i = self.inner.lock().unwrap();
        if i.behaviour.eagain_moves > 0 {
            i.behaviour.eagain_moves -= 1;
            i.failed_moves += 1;
            return Err(PlaceError::io(
                Step::Move,
                &format!("{cgroup}/cgroup.procs"),
                &std::io::Error::from_raw_os_error(libc::EAGAIN),
            ));
        }
        for c in i.cgroups.values_mut() {
            c.procs.retain(|p| *p != pid);
        }
        i.cgroups
            .entry(cgroup.to_string())
            .or_default()
            .procs
            .push(pid);
        i.moves.push(Move {
            pid,
            cgroup: cgroup.to_string(),
            state: real_state(pid),
        });
        drop(i);
        self.write_membership(pid, cgroup);
        Ok(())
    }
    fn remove(&self, cgroup: &str) -> std::io::Result<()> {
        let mut i = self.inner.lock().unwrap();
        let prefix = format!("{cgroup}/");
        let children = i.cgroups.keys().any(|k| k.starts_with(&prefix));
        match i.cgroups.get(cgroup) {
            Some(c) if !c.procs.is_empty() || children => {
                Err(std::io::Error::from_raw_os_error(libc::EBUSY))
            }
            _ => {
                i.cgroups.remove(cgroup);
                Ok(())
            }
        }
    }
    fn procs(&self, cgroup: &str) -> std::io::Result<Vec<u32>> {
        let i = self.inner.lock().unwrap();
        Ok(i.cgroups
            .get(cgroup)
            .map(|c| c.procs.clone())
            .unwrap_or_default())
    }
    fn children(&self, cgroup: &str) -> std::io::Result<Vec<String>> {
        let i = self.inner.lock().unwrap();
        let prefix = format!("{cgroup}/");
        Ok(i.cgroups
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter(|rest| !rest.contains('/'))
            .map(str::to_string)
            .collect())
    }
    fn usage(&self, _cgroup: &str) -> Usage {
        Usage::default()
    }
    fn read_limits(&self, _cgroup: &str) -> Limits {
        Limits::default()
    }
    fn procs_files(&self, _cgroup: &str) -> Vec<PathBuf> {
        Vec::new()
    }
}

/// systemd as the daemon sees it over D-Bus: each unit's four properties, and every write.
#[derive(Clone, Default)]
pub struct FakeBus {
    units: Arc<Mutex<BTreeMap<String, UnitLimits>>>,
    writes: Arc<Mutex<Vec<(String, UnitLimits)>>>,
    /// systemd's bus refuses every write (and counts them) while set.
    down: Arc<Mutex<Option<u32>>>,
    /// A refused write went through all the same (its reply lost to a timeout).
    applied_anyway: Arc<Mutex<bool>>,
}

impl FakeBus {
    /// Every `SetUnitProperties`, in order.
    pub fn writes(&self) -> Vec<(String, UnitLimits)> {
        self.writes.lock().unwrap().clone()
    }
    /// A unit's values now (systemd's defaults for one never written).
    pub fn unit(&self, name: &str) -> UnitLimits {
        self.units
            .lock()
            .unwrap()
            .get(name)
            .copied()
            .unwrap_or(NONE)
    }
    /// An operator's own values, before the daemon comes.
    pub fn set(&self, name: &str, l: UnitLimits) {
        self.units.lock().unwrap().insert(name.into(), l);
    }
    /// The bus refuses writes (`true`) or takes them again; how many it refused.
    pub fn down(&self, down: bool) -> u32 {
        let mut d = self.down.lock().unwrap();
        let refused = d.unwrap_or(0);
        *d = down.then_some(refused);
        refused
    }
    /// Refused writes go through all the same (`down` must be set too).
    pub fn apply_refused(&self, on: bool) {
        *self.applied_anyway.lock().unwrap() = on;
    }
    /// How many writes the bus refused since it went down.
    pub fn refused(&self) -> u32 {
        self.down.lock().unwrap().unwrap_or(0)
    }
}

/// A unit with none of the four properties set.
pub const NONE: UnitLimits = UnitLimits {
    cpu_quota_per_sec_usec: UNSET,
    cpu_weight: UNSET,
    memory_max: UNSET,
    tasks_max: UNSET,
};

impl UnitBus for FakeBus {
    fn read(&self, unit: &str) -> Result<UnitLimits, String> {
        Ok(self.unit(unit))
    }
    fn write(&self, unit: &str, props: &[(&'static str, u64)]) -> Result<(), String> {
        let l = self.unit(unit).with(props);
        if let Some(n) = self.down.lock().unwrap().as_mut() {
            *n += 1;
            if *self.applied_anyway.lock().unwrap() {
                self.units.lock().unwrap().insert(unit.into(), l);
            }
            return Err("org.freedesktop.DBus.Error.NoReply: no reply".into());
        }
        self.units.lock().unwrap().insert(unit.into(), l);
        self.writes.lock().unwrap().push((unit.into(), l));
        Ok(())
    }
}

/// A real child process with a fixture /proc entry saying what the test wants.
pub struct Proc {
    pub child: Child,
    pub pid: u32,
    /// Start time in clock ticks (the real one).
    pub start_ticks: u64,
    dir: PathBuf,
}

impl Proc {
    /// Its exec held at the gate as `target` going through, for when it is answered: its
    /// exe becomes the marked binary and the kernel names it after the file.
    pub fn exec_of(&self, target: &str) -> impl FnOnce() + Send + 'static {
        self.exec_to(target, self.dir.join(format!("image-{target}")))
    }

    /// An exec of a file named `comm` whose running binary is `exe` (a script: its
    /// interpreter), for when it is answered.
    pub fn exec_to(&self, comm: &str, exe: PathBuf) -> impl FnOnce() + Send + 'static {
        let (dir, comm) = (self.dir.clone(), comm.to_string());
        move || {
            let link = dir.join("exe");
            std::fs::remove_file(&link).unwrap();
            std::os::unix::fs::symlink(exe, link).unwrap();
            for f in ["stat", "status"] {
                let path = dir.join(f);
                let text = std::fs::read_to_string(&path).unwrap();
                let open = text.find('(').unwrap_or(0);
                let close = text.rfind(')').unwrap_or(0);
                let text = if f == "stat" {
                    format!("{}({comm}){}", &text[..open], &text[close + 1..])
                } else {
                    (text.lines())
                        .map(|l| match l.starts_with("Name:") {
                            true => format!("Name:\t{comm}"),
                            false => l.to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                        + "\n"
                };
                std::fs::write(&path, text).unwrap();
            }
        }
    }

    /// The kernel's `start_boottime` (ns) that maps to this process's start ticks.
    pub fn start_ns(&self) -> u64 {
        self.start_ticks * 10_000_000 + 4321
    }
    pub fn set_cgroup(&self, path: &str) {
        std::fs::write(self.dir.join("cgroup"), format!("0::{path}\n")).unwrap();
    }
    pub fn cgroup(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("cgroup")).unwrap_or_default();
        parse_cgroup_file(&text)
            .into_iter()
            .find(|l| l.hierarchy == 0)
            .map(|l| l.path)
            .unwrap_or_default()
    }
    /// Stop it the way the kernel program does and record the stop in `ledger`.
    pub fn stop(&self, ledger: &MemoryLedger) -> StopKey {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.pid as i32, libc::SIGSTOP) };
        assert!(wait_until(Duration::from_secs(2), || real_state(self.pid) == b'T'));
        let key = StopKey {
            tgid: self.pid,
            _pad: 0,
            start_ns: self.start_ns(),
        };
        ledger.record(key, ffrtmp::process::monotonic_ns());
        key
    }
    pub fn kill(&mut self) {
        // SAFETY: kill(2) on our own child (continued first if it was stopped).
        unsafe { libc::kill(self.pid as i32, libc::SIGCONT) };
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Everything one test runs.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub proc_root: PathBuf,
    pub proc: ProcFs,
    pub backend: FakeBackend,
    pub bus: FakeBus,
    pub ledger: Arc<MemoryLedger>,
    observer: Option<Observer>,
    pub state_path: PathBuf,
    pub runtime_dir: PathBuf,
    feed: Option<crossbeam_channel::Sender<Feed>>,
    reload: Option<tokio::sync::mpsc::Sender<Box<Settings>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Run against the harness before the daemon starts.
pub type Before<'a> = Box<dyn FnOnce(&Harness) + 'a>;

pub struct Start<'a> {
    pub yaml: &'a str,
    pub dry_run: bool,
    pub role: ScanRole,
    /// Ledgers a dead daemon left.
    pub orphans: Vec<Arc<dyn StopLedger>>,
    /// Before the daemon starts (fixture processes, registered roots).
    pub before: Option<Before<'a>>,
    /// The pause in placements the record loop waits for (`Options::quiet`).
    pub quiet: Duration,
}

impl Default for Start<'_> {
    fn default() -> Self {
        Start {
            yaml: "target_commands: [ffmpeg]\n",
            dry_run: false,
            role: ScanRole::Reconcile,
            orphans: Vec::new(),
            before: None,
            quiet: Duration::from_millis(2),
        }
    }
}

impl Harness {
    /// Started with this configuration and everything else as `Start::default()` says.
    pub fn started(yaml: &str) -> Harness {
        Harness::new().start(Start {
            yaml,
            ..Default::default()
        })
    }

    /// The parts, not running yet.
    pub fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let proc_root = dir.path().join("proc");
        std::fs::create_dir_all(&proc_root).unwrap();
        let runtime_dir = dir.path().join("run");
        Harness {
            proc: ProcFs::new(&proc_root),
            backend: FakeBackend::new(&proc_root),
            bus: FakeBus::default(),
            proc_root,
            ledger: Arc::new(MemoryLedger::default()),
            observer: None,
            state_path: dir.path().join("state.json"),
            runtime_dir,
            dir,
            feed: None,
            reload: None,
            stop: None,
            thread: None,
        }
    }

    pub fn settings(&self, yaml: &str) -> Settings {
        let path = self.dir.path().join("config.yaml");
        std::fs::write(
            &path,
            format!(
                "{yaml}\ncgroup_root: /ffrtmp\nstate_path: {}\nmetrics_addr: \"\"\n{}",
                self.state_path.display(),
                if yaml.contains("reconcile_interval") {
                    ""
                } else {
                    "reconcile_interval: 1h\n"
                }
            ),
        )
        .unwrap();
        ffrtmp::config::load(&Sources {
            config_file: Some(&path),
            env: &EnvVars::default(),
            flags: &FlagOverrides::default(),
            passwd: Path::new("/nonexistent"),
        })
        .unwrap()
    }

    /// Start the daemon with a channel source.
    pub fn start(mut self, s: Start) -> Harness {
        if let Some(f) = s.before {
            f(&self);
        }
        let settings = self.settings(s.yaml);
        let placer = Placer::new(
            Box::new(self.backend.clone()),
            "/ffrtmp".into(),
            self.proc.clone(),
        )
        .with_units(Box::new(self.bus.clone()));
        let opts = Options {
            dry_run: s.dry_run,
            scan_role: s.role,
            flush_coalesce: Duration::from_millis(20),
            runtime_dir: self.runtime_dir.clone(),
            realtime: false,
            quiet: s.quiet,
        };
        let daemon = Daemon::new(settings, opts, placer, LogControl::default())
            .with_ledgers(Some(self.ledger.clone() as Arc<dyn StopLedger>), s.orphans);
        let observer = daemon.observer();
        let (source, feed) = ChannelSource::new();
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(8);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        self.thread = Some(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let shutdown = async {
                let _ = stop_rx.await;
            };
            rt.block_on(daemon.run(vec![Box::new(source)], reload_rx, shutdown));
        }));
        self.feed = Some(feed);
        self.reload = Some(reload_tx);
        self.stop = Some(stop_tx);
        self.observer = Some(observer);
        // Ready once the startup scan is done (as READY=1 would say).
        assert!(
            wait_until(Duration::from_secs(10), || self
                .observer
                .as_ref()
                .unwrap()
                .snapshot_within(Duration::from_millis(100))
                .is_some_and(|s| s.tally.scans() >= 1)),
            "the daemon did not finish its startup scan"
        );
        self
    }

    /// A real `sleep` child shown in the fixture /proc with `comm`, in cgroup `cgroup`,
    /// in PID namespace depth `pidns`.
    pub fn spawn(&self, comm: &str, cgroup: &str, pidns: u32) -> Proc {
        let child = Command::new("sleep")
            .arg("60")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let real = ProcFs::system().stat(pid).unwrap();
        let dir = self.proc_root.join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("stat"),
            format!(
                "{pid} ({comm}) S {} {pid} {pid} 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 1 0 {} 1000 200\n",
                std::process::id(),
                real.start_time
            ),
        )
        .unwrap();
        std::fs::write(dir.join("cgroup"), format!("0::{cgroup}\n")).unwrap();
        let nspid: String = std::iter::once(pid.to_string())
            .chain((0..pidns).map(|i| (i + 1).to_string()))
            .collect::<Vec<_>>()
            .join("\t");
        // The real status file (procfs reads it whole), with the name, uid and PID
        // namespaces the test chose.
        let real_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let status: String = real_status
            .lines()
            .map(|l| match l.split_once(':').map(|(k, _)| k) {
                Some("Name") => format!("Name:\t{comm}"),
                Some("Uid") => "Uid:\t1000\t1000\t1000\t1000".to_string(),
                Some("NSpid") => format!("NSpid:\t{nspid}"),
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.join("status"), status + "\n").unwrap();
        std::fs::write(dir.join("cmdline"), format!("{comm}\0")).unwrap();
        std::os::unix::fs::symlink(format!("/usr/bin/{comm}"), dir.join("exe")).unwrap();
        std::os::unix::fs::symlink("/", dir.join("cwd")).unwrap();
        Proc {
            child,
            pid,
            start_ticks: real.start_time,
            dir,
        }
    }

    /// The exec notice the kernel would send for `p` (no stop).
    pub fn notice(&self, p: &Proc) -> ExecNotice {
        let mut n = ExecNotice::pid(p.pid, "ebpf");
        n.start_ns = Some(p.start_ns());
        n.exec_mono_ns = Some(ffrtmp::process::monotonic_ns());
        n
    }

    /// The notice for `p` stopped at exec, with the stop claimed as the reader does.
    pub fn stopped_notice(&self, p: &Proc) -> ExecNotice {
        let key = p.stop(&self.ledger);
        let mut n = self.notice(p);
        n.stop = Some(ffrtmp::process::Stopped::claim(
            self.ledger.clone() as Arc<dyn StopLedger>,
            key,
            &self.proc,
        ));
        n
    }

    /// The notice the exec gate would send for `p` held at its exec of the binary of
    /// `target` (its /proc still shows the old image), answered through `answers`.
    pub fn gated_notice(
        &self,
        p: &Proc,
        target: &str,
        answers: &Arc<dyn ffrtmp::process::gated::Responder>,
    ) -> ExecNotice {
        // The marked binary: the process's exe once `exec_went_through`.
        let image = p.dir.join(format!("image-{target}"));
        std::fs::write(&image, "").unwrap();
        let m = std::fs::metadata(&image).unwrap();
        let held = ffrtmp::process::gated::Held::new(
            p.pid as i32,
            p.pid,
            target.to_string(),
            (format!("/usr/bin/{target}").into(), (m.dev(), m.ino())),
            ffrtmp::process::monotonic_ns(),
            answers.clone(),
        );
        let name = target.as_bytes().to_vec();
        let mut n = ExecNotice::pid(p.pid, "gate");
        n.known.argv0 = Some(name.clone());
        n.known.exe_name = Some(name);
        n.read_mono_ns = Some(ffrtmp::process::monotonic_ns());
        n.gated = Some(ffrtmp::process::Gated::new(held));
        n
    }

    pub fn send(&self, n: ExecNotice) {
        self.feed.as_ref().unwrap().send(Feed::Exec(n)).unwrap();
    }

    pub fn event(&self, e: ffrtmp::sources::SourceEvent) {
        self.feed.as_ref().unwrap().send(Feed::Event(e)).unwrap();
    }

    pub fn job(p: &Proc) -> String {
        format!("/ffrtmp/auto-ffmpeg-{}", p.pid)
    }

    /// A new process `comm` in `cgroup` (no PID namespace of its own) whose exec notice is
    /// sent now.
    pub fn exec(&self, comm: &str, cgroup: &str) -> Proc {
        let p = self.spawn(comm, cgroup, 0);
        self.send(self.notice(&p));
        p
    }

    /// Wait until `p` is in `job`; fails the test, saying where it is, if it is not there
    /// within 5 s.
    pub fn assert_placed(&self, p: &Proc, job: &str) {
        assert!(
            self.placed(p, job, Duration::from_secs(5)),
            "PID {} not placed in {job}: in {}",
            p.pid,
            p.cgroup()
        );
    }

    /// A new process `comm` in `cgroup` whose exec notice is sent now, and seen placed in
    /// its own job under the root (`/ffrtmp/auto-<comm>-<pid>`; fails the test otherwise):
    /// the process and its job cgroup.
    pub fn exec_placed(&self, comm: &str, cgroup: &str) -> (Proc, String) {
        let p = self.exec(comm, cgroup);
        let job = format!("/ffrtmp/auto-{comm}-{}", p.pid);
        self.assert_placed(&p, &job);
        (p, job)
    }

    /// `p` exits: the fake backend takes it out of its cgroup, as the kernel would, and it
    /// is killed and reaped (its fixture /proc entry goes).
    pub fn exit(&self, p: &mut Proc) {
        self.backend.exited(p.pid);
        p.kill();
    }

    /// A positive marker: a new ffmpeg, sent now, is placed only once everything the engine
    /// was given before it is done (it takes its work in order). A test that asserts that
    /// nothing happened waits for it first; it holds the returned process meanwhile and
    /// leaves its PID out of what it counts.
    pub fn marker(&self) -> Proc {
        let p = self.exec("ffmpeg", "/");
        assert!(
            self.placed(&p, &Self::job(&p), Duration::from_secs(5)),
            "the marker was not placed"
        );
        p
    }

    /// A positive marker behind scan candidates: a new ffmpeg that only a scan reports
    /// (the one lost events ask for now) is placed once the engine is done with every
    /// candidate of the scans before (they share the work queue, in order).
    pub fn marker_by_scan(&self) -> Proc {
        let p = self.spawn("ffmpeg", "/", 0);
        self.event(ffrtmp::sources::SourceEvent::Lost {
            source: "marker",
            count: 1,
        });
        assert!(
            self.placed(&p, &Self::job(&p), Duration::from_secs(5)),
            "the marker was not placed"
        );
        p
    }

    /// Wait until `n` scans are reported: their candidates have gone to the engine (the
    /// record loop hands them on before it answers the next snapshot).
    pub fn scans_done(&self, n: u64) -> bool {
        wait_until(Duration::from_secs(5), || {
            self.with_snapshot(|s| s.tally.scans() >= n)
        })
    }

    /// The moves of processes other than `marker`.
    pub fn moves_besides(&self, marker: &Proc) -> Vec<Move> {
        let mut m = self.backend.moves();
        m.retain(|m| m.pid != marker.pid);
        m
    }

    /// Wait until `p` is in `cgroup` (the fixture says so).
    pub fn placed(&self, p: &Proc, cgroup: &str, timeout: Duration) -> bool {
        wait_until(timeout, || p.cgroup() == cgroup)
    }

    /// What the daemon shows (`/metrics`' snapshot), asked as `/metrics` asks.
    pub fn with_snapshot<T>(&self, f: impl FnOnce(&Snapshot) -> T) -> T {
        let s = self
            .observer
            .as_ref()
            .expect("the daemon runs")
            .snapshot_within(Duration::from_secs(5))
            .expect("the daemon answers a snapshot within 5 s");
        f(&s)
    }

    /// Whether the daemon governs this PID now.
    pub fn governs(&self, pid: u32) -> bool {
        self.with_snapshot(|s| s.jobs.live.iter().any(|j| j.pid == pid))
    }

    /// How many processes the daemon governs now.
    pub fn governed(&self) -> usize {
        self.with_snapshot(|s| s.jobs.live.len())
    }

    /// Send a new configuration, as SIGHUP does after reading the file.
    pub fn reload(&self, yaml: &str) {
        let s = self.settings(yaml);
        self.reload
            .as_ref()
            .expect("the daemon runs")
            .blocking_send(Box::new(s))
            .unwrap();
    }

    /// Stop the daemon and wait for it.
    pub fn stop(&mut self) {
        if let Some(c) = self.stop.take() {
            let _ = c.send(());
        }
        self.reload = None;
        if let Some(t) = self.thread.take() {
            t.join().expect("the daemon thread panicked");
        }
        self.feed = None;
    }

    pub fn state(&self) -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(&self.state_path).unwrap_or_else(|_| "{}".into()),
        )
        .unwrap()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop();
    }
}
