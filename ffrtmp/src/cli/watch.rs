//! `ffrtmp watch`: load the config, pick the sources, run the daemon, handle signals.

use std::path::PathBuf;
use std::process::ExitCode;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::check::default_config;
use super::{fail, WatchArgs, EXIT_CONFIG, EXIT_FAILURE};
use crate::config::raw::AUTO;
use crate::config::{self, EnvVars, FlagOverrides, Settings, Sources};
use crate::daemon::{Daemon, Options, ScanRole};
use crate::placer::delegation::{self, Auto};
use crate::placer::{detect, Placer};
use crate::process::ProcFs;
use crate::process::{ProcessId, StopLedger};
use crate::record::http::{self, Exposition, UsageReader};
use crate::record::logging;
use crate::record::metrics::BuildInfo;
use crate::record::systemd::Notifier;
use crate::sources::ebpf::{self, TargetTable};
use crate::sources::gate;
use crate::sources::EventSource;
use std::os::unix::process::CommandExt;
use std::sync::Arc;

struct Loader {
    path: Option<PathBuf>,
    env: EnvVars,
    flags: FlagOverrides,
    /// What `cgroup_root: auto` resolved to at start (reloads keep it).
    resolved_root: Option<String>,
}

impl Loader {
    fn load(&self) -> Result<Settings, config::ConfigError> {
        let mut s = config::load(&Sources {
            config_file: self.path.as_deref(),
            env: &self.env,
            flags: &self.flags,
            passwd: std::path::Path::new("/etc/passwd"),
        })?;
        if let (true, Some(r)) = (s.cgroup_root == AUTO, &self.resolved_root) {
            s.cgroup_root = r.clone();
        }
        Ok(s)
    }
}

/// Resolve `cgroup_root: auto` (see `placer::delegation`). Under systemd on cgroup v2 this
/// may re-execute the daemon inside its delegated scope; it returns only in the process
/// that goes on.
fn resolve_auto_root(dry_run: bool) -> String {
    let inputs = delegation::inspect();
    let mut auto = delegation::decide(&inputs);
    if let Auto::Scope {
        scope,
        slice,
        create: true,
    } = &auto
    {
        if dry_run {
            info!("dry-run: would create the delegated scope {scope} with systemd-run and continue inside it");
        } else if let Some(run) = &inputs.systemd_run {
            info!("cgroup_root auto: creating the delegated scope {scope} and continuing inside it (systemd-run --scope, same PID)");
            let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
            let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
            let err = delegation::reexec_command(run, slice, &exe, &args).exec();
            error!("cannot re-execute through {}: {err}", run.display());
            auto = Auto::Fixed {
                why: format!("creating the delegated scope failed: {err}"),
            };
        }
    }
    if let (Some(sup), false) = (auto.supervisor(), dry_run) {
        if let Err(e) = delegation::join(&auto) {
            error!("cannot move ffrtmp into {sup}: {e}");
            auto = Auto::Fixed {
                why: format!("moving into {sup} failed: {e}"),
            };
        }
    }
    match &auto {
        Auto::Fixed { why } => info!("cgroup_root auto: {} ({why})", auto.root()),
        Auto::Scope { scope, .. } => info!(
            "cgroup_root auto: jobs in {} (delegated scope {scope}; ffrtmp runs in {})",
            auto.root(),
            auto.supervisor().unwrap_or_default()
        ),
        Auto::Own { own } => info!(
            "cgroup_root auto: jobs in {} (delegated cgroup {own}; ffrtmp runs in {})",
            auto.root(),
            auto.supervisor().unwrap_or_default()
        ),
    }
    auto.root()
}

pub fn main(a: WatchArgs) -> ExitCode {
    // One malloc arena for the whole daemon: glibc gives each thread that allocates its
    // own (engine, record loop, blocking pool, HTTP), each keeping touched pages; the
    // daemon allocates little and never contends on the heap (bench-exec rss).
    // A fixed mmap threshold: a large buffer (the state file's JSON, ~450 bytes per
    // governed process) is mapped and unmapped whole. glibc's default threshold rises to
    // the size of the last such buffer freed, after which those buffers come from the
    // heap and their pages stay resident.
    // SAFETY: mallopt before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
    let (loader, settings, log) = match prepare(&a) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // The blocking pool runs the housekeeping chores and /metrics rendering.
        .thread_name("ffrtmp-chores")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(EXIT_FAILURE, format!("cannot start the async runtime: {e}")),
    };
    rt.block_on(serve(a, loader, settings, log))
}

/// The settings (with `cgroup_root: auto` resolved), the logger, the process's limits and
/// cgroup namespace made right.
fn prepare(a: &WatchArgs) -> Result<(Loader, Settings, logging::LogControl), ExitCode> {
    let mut loader = Loader {
        path: a.config.clone().or_else(default_config),
        env: EnvVars::from_process(),
        flags: FlagOverrides {
            scan_interval: a.scan_interval.clone(),
            targets: a.targets.clone(),
            state_path: a.state_path.clone(),
            cgroup_root: a.cgroup_root.clone(),
            placement: a.placement.clone(),
        },
        resolved_root: None,
    };
    let mut settings = loader.load().map_err(|e| fail(EXIT_CONFIG, e))?;
    let log = logging::init(settings.log_level, "watch", delegation::service_unit());
    if loader.path.is_none() {
        info!(
            "No config file (none given, {} absent); using defaults, environment and flags",
            config::DEFAULT_CONFIG_PATH
        );
    }
    raise_open_files_limit();
    reserve_descriptor_table(DESCRIPTORS_RESERVED);
    match delegation::join_init_cgroup_namespace() {
        Ok(true) => info!("Joined the host's cgroup namespace (PID 1's): this process was in a private one, as in a Kubernetes pod"),
        Ok(false) => {}
        Err(e) => {
            return Err(fail(
                EXIT_FAILURE,
                format!("ffrtmp runs in a private cgroup namespace (a container's) and cannot join the host's ({e}): the cgroup paths of the host's processes would be wrong. Give it CAP_SYS_ADMIN (deployment/kubernetes/30-daemonset.yaml does), or run it on the host"),
            ))
        }
    }
    if settings.cgroup_root == AUTO {
        let root = resolve_auto_root(a.dry_run);
        settings.cgroup_root = root.clone();
        loader.resolved_root = Some(root);
    }
    Ok((loader, settings, log))
}

/// Signals, sources, the daemon and its `/metrics` server, until SIGTERM or SIGINT.
async fn serve(
    a: WatchArgs,
    loader: Loader,
    settings: Settings,
    log: logging::LogControl,
) -> ExitCode {
    // Register the handlers before anything else: a SIGTERM during startup must stop the
    // daemon cleanly, not kill it with the default action.
    let (Ok(term), Ok(int), Ok(hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        return fail(EXIT_FAILURE, "cannot install signal handlers");
    };
    let me = ProcessId {
        pid: std::process::id(),
        start_time: ProcFs::system()
            .stat(std::process::id())
            .map_or(0, |s| s.start_time),
    };
    let picked = match pick_sources(&a, &settings, me).and_then(|p| with_gate(p, &settings)) {
        Ok(s) => s,
        Err(e) => return fail(EXIT_FAILURE, e),
    };
    let backend = match detect() {
        Ok(b) => b,
        Err(e) => return fail(EXIT_FAILURE, e),
    };
    let placer = Placer::new(backend, settings.cgroup_root.clone(), ProcFs::system());
    let opts = Options {
        dry_run: a.dry_run,
        scan_role: picked.role,
        ..Default::default()
    };
    let metrics_addr = settings.metrics_addr;
    let daemon = Daemon::new(settings, opts, placer, log)
        .with_ledgers(picked.ledger, picked.orphans)
        .with_notifier(Notifier::from_env());
    let server = match metrics_server(metrics_addr, &daemon).await {
        Ok(s) => s,
        Err(e) => return fail(EXIT_FAILURE, e),
    };
    let (reload_tx, reload_rx) = mpsc::channel(8);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let signals = tokio::spawn(handle_signals(
        [term, int, hup],
        loader,
        reload_tx,
        stop_tx,
        picked.table,
    ));
    let shutdown = async {
        let _ = stop_rx.await;
    };
    daemon.run(picked.sources, reload_rx, shutdown).await;
    signals.abort();
    if let Some(s) = server {
        s.abort();
    }
    ExitCode::SUCCESS
}

/// `/metrics` and `/healthz` on `metrics_addr` (none when it is empty).
async fn metrics_server(
    addr: Option<std::net::SocketAddr>,
    daemon: &Daemon,
) -> Result<Option<tokio::task::JoinHandle<()>>, String> {
    let Some(addr) = addr else {
        info!("metrics_addr is empty: /metrics and /healthz are off");
        return Ok(None);
    };
    let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        format!("cannot listen on {addr} for /metrics and /healthz: {e} (set metrics_addr to a free host:port, or \"\" to disable)")
    })?;
    let bound = l.local_addr().map_or(addr.to_string(), |a| a.to_string());
    info!("Serving /metrics and /healthz on http://{bound}");
    let usage_backend = detect()?;
    let usage: UsageReader = Arc::new(move |cg: &str| usage_backend.usage(cg));
    let expo = Arc::new(Exposition {
        observer: daemon.observer(),
        build: BuildInfo {
            version: env!("CARGO_PKG_VERSION"),
            ebpf_object: ebpf::build_id().unwrap_or("none").to_string(),
        },
        usage,
    });
    Ok(Some(tokio::spawn(http::serve(l, expo))))
}

/// What `pick_sources` found.
struct Picked {
    sources: Vec<Box<dyn EventSource>>,
    role: ScanRole,
    /// The kernel target table (eBPF only), rewritten on reload.
    table: Option<TargetTable>,
    ledger: Option<Arc<dyn StopLedger>>,
    orphans: Vec<Arc<dyn StopLedger>>,
}

/// The event sources for this run. The eBPF source is the default; without it the scan
/// becomes the source only when `--fallback-scan` allows it. With eBPF the scan reconciles
/// every `reconcile_interval`.
fn pick_sources(a: &WatchArgs, settings: &Settings, me: ProcessId) -> Result<Picked, String> {
    let started =
        ebpf::LoadOptions::from_env().and_then(|opts| ebpf::start(settings, &opts, me, a.dry_run));
    match started {
        Ok(s) => {
            if let Some(log) = s.kernel_log {
                tokio::spawn(ebpf::kernel_log::drain(log));
            }
            let strict: Vec<&str> = settings
                .targets
                .iter()
                .filter(|t| settings.placement_of(&t.name) == crate::config::Placement::Strict)
                .map(|t| t.name.as_str())
                .collect();
            if let (Some(why), false) = (&s.strict_off, strict.is_empty()) {
                warn!(
                    "placement strict is configured for {} but no process will be stopped: {why}; they are placed as normal targets",
                    strict.join(", ")
                );
            }
            Ok(Picked {
                sources: vec![Box::new(s.source)],
                role: ScanRole::Reconcile,
                table: Some(s.table),
                ledger: Some(s.ledger as Arc<dyn StopLedger>),
                orphans: s
                    .orphans
                    .into_iter()
                    .map(|l| Arc::new(l) as Arc<dyn StopLedger>)
                    .collect(),
            })
        }
        Err(e) if a.fallback_scan => {
            warn!("eBPF exec source unavailable: {e}. --fallback-scan given: scanning /proc every scan_interval instead");
            Ok(Picked {
                sources: Vec::new(),
                role: ScanRole::Primary,
                table: None,
                ledger: None,
                orphans: Vec::new(),
            })
        }
        Err(e) => Err(format!(
            "eBPF exec source unavailable: {e}. (Or run with --fallback-scan to scan /proc every scan_interval instead.)"
        )),
    }
}

/// The exec gate beside the other sources, as `inline_placement` says: `auto` goes on
/// without it (one line says why), `on` does not start.
fn with_gate(mut p: Picked, settings: &Settings) -> Result<Picked, String> {
    use crate::config::InlinePlacement;
    if settings.inline_placement == InlinePlacement::Off {
        info!(
            "Inline placement is off (inline_placement: off): targets are placed after they start"
        );
        return Ok(p);
    }
    let names: Vec<String> = settings.targets.iter().map(|t| t.name.clone()).collect();
    let path = std::env::var("PATH").unwrap_or_default();
    match gate::open(&names, &path, settings.gate_timeout) {
        Ok(g) => {
            info!(
                "Inline placement is on: a target binary's exec is held until its process is placed (gate_timeout {})",
                crate::config::units::format_go_duration(settings.gate_timeout)
            );
            p.sources.push(Box::new(g));
            Ok(p)
        }
        Err(e) if settings.inline_placement == InlinePlacement::On => Err(format!(
            "inline_placement: on, but the exec gate cannot run: {e}"
        )),
        Err(e) => {
            info!("Inline placement is off: {e}; targets are placed after they start (inline_placement: auto)");
            Ok(p)
        }
    }
}

/// SIGTERM/SIGINT stop the daemon; SIGHUP reloads the config (a bad one is rejected) and
/// rewrites the kernel's target table before the daemon switches to the new settings.
async fn handle_signals(
    [mut term, mut int, mut hup]: [Signal; 3],
    loader: Loader,
    tx: mpsc::Sender<Box<Settings>>,
    stop: tokio::sync::oneshot::Sender<()>,
    mut table: Option<TargetTable>,
) {
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM received"); let _ = stop.send(()); return; }
            _ = int.recv() => { info!("SIGINT received"); let _ = stop.send(()); return; }
            _ = hup.recv() => match loader.load() {
                Ok(s) => {
                    if let Some(t) = table.as_mut() {
                        if let Err(e) = t.apply(&s) {
                            error!("Reload: {e}; the kernel filter may miss new targets until the reconciliation scan finds them");
                        }
                    }
                    let _ = tx.send(Box::new(s)).await;
                }
                Err(e) => error!("Reload rejected, keeping the current configuration: {e}"),
            },
        }
    }
}

/// Descriptor slots the daemon's table is grown to at start: a pidfd per governed process
/// plus ~30 of its own.
const DESCRIPTORS_RESERVED: u64 = 4096;

/// Grow the descriptor table once, now. The kernel grows it by doubling when a new fd
/// does not fit (256, 512, …), and in a multi-threaded process each growth waits for an
/// RCU grace period (`expand_fdtable` → `synchronize_rcu`): measured here as one
/// placement in ~225 taking 12–25 ms instead of 0.2 ms (bench-exec latency, the pidfd
/// of the ~225th governed process). A dup to a high slot, closed again, leaves the table
/// that large (it never shrinks): 4096 slots are ~33 KiB of kernel memory.
fn reserve_descriptor_table(slots: u64) {
    use rustix::fs::{open, Mode, OFlags};
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let top = slots.min(limit).saturating_sub(1);
    let Ok(probe) = open("/dev/null", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()) else {
        return;
    };
    if let Ok(top) = i32::try_from(top) {
        // Dropped at once: the table stays grown.
        let _ = rustix::io::fcntl_dupfd_cloexec(&probe, top);
    }
}

/// One pidfd per governed process: lift the soft RLIMIT_NOFILE to the hard limit (1024 is
/// a common soft default outside the unit, which sets 65536).
fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    if now.current < now.maximum || (now.current.is_some() && now.maximum.is_none()) {
        let want = Rlimit {
            current: now.maximum,
            maximum: now.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, want) {
            warn!(
                "Cannot raise the open files limit from {}: {e}; each governed process holds one",
                now.current.map_or("unlimited".into(), |n| n.to_string())
            );
        }
    }
}
