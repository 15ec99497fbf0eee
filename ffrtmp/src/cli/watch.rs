//! `ffrtmp watch`: load the config, pick the sources, run the daemon, handle signals.

use std::path::PathBuf;
use std::process::ExitCode;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::check::default_config;
use super::{fail, WatchArgs, EXIT_CONFIG, EXIT_FAILURE};
use crate::config::{self, EnvVars, FlagOverrides, Settings, Sources};
use crate::daemon::{Control, Daemon, Options, ScanRole};
use crate::placer::{detect, Placer};
use crate::process::ProcFs;
use crate::record::logging;
use crate::sources::EventSource;

struct Loader {
    path: Option<PathBuf>,
    env: EnvVars,
    flags: FlagOverrides,
}

impl Loader {
    fn load(&self) -> Result<Settings, config::ConfigError> {
        config::load(&Sources {
            config_file: self.path.as_deref(),
            env: &self.env,
            flags: &self.flags,
            passwd: std::path::Path::new("/etc/passwd"),
        })
    }
}

pub fn main(a: WatchArgs) -> ExitCode {
    let loader = Loader {
        path: a.config.clone().or_else(default_config),
        env: EnvVars::from_process(),
        flags: FlagOverrides {
            scan_interval: a.scan_interval.clone(),
            targets: a.targets.clone(),
            state_path: a.state_path.clone(),
            cgroup_root: a.cgroup_root.clone(),
        },
    };
    let settings = match loader.load() {
        Ok(s) => s,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    let log = logging::init(settings.log_level, "watch");
    if loader.path.is_none() {
        info!(
            "No config file (none given, {} absent); using defaults, environment and flags",
            config::DEFAULT_CONFIG_PATH
        );
    }

    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(EXIT_FAILURE, format!("cannot start the async runtime: {e}")),
    };
    rt.block_on(async move {
        let (sources, role) = match pick_sources(&a, &settings) {
            Ok(s) => s,
            Err(e) => {
                error!("{e}");
                return fail(EXIT_FAILURE, e);
            }
        };
        let backend = match detect() {
            Ok(b) => b,
            Err(e) => return fail(EXIT_FAILURE, e),
        };
        let placer = Placer::new(backend, settings.cgroup_root.clone(), ProcFs::system());
        let opts = Options {
            dry_run: a.dry_run,
            scan_role: role,
            ..Default::default()
        };
        let (ctl_tx, ctl_rx) = mpsc::channel(8);
        let signals = tokio::spawn(handle_signals(loader, ctl_tx));
        let daemon = Daemon::new(settings, opts, placer, log);
        daemon.run(sources, ctl_rx).await;
        signals.abort();
        ExitCode::SUCCESS
    })
}

/// The event sources for this run. The eBPF source is the default; without it the scan
/// becomes the source only when `--fallback-scan` allows it.
fn pick_sources(
    a: &WatchArgs,
    _settings: &Settings,
) -> Result<(Vec<Box<dyn EventSource>>, ScanRole), String> {
    let ebpf_error = "the eBPF exec source is not available in this build (it was built without the kernel object)";
    if a.fallback_scan {
        warn!("{ebpf_error}; --fallback-scan given: scanning /proc every scan_interval instead");
        Ok((Vec::new(), ScanRole::Primary))
    } else {
        Err(format!("{ebpf_error}. Build it with `cargo xtask build-ebpf` and rebuild ffrtmp, or run with --fallback-scan to scan /proc instead"))
    }
}

/// SIGTERM/SIGINT stop the daemon; SIGHUP reloads the config (a bad one is rejected).
async fn handle_signals(loader: Loader, tx: mpsc::Sender<Control>) {
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        error!("Cannot install signal handlers; stop the daemon with SIGKILL");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM received"); let _ = tx.send(Control::Shutdown).await; return; }
            _ = int.recv() => { info!("SIGINT received"); let _ = tx.send(Control::Shutdown).await; return; }
            _ = hup.recv() => match loader.load() {
                Ok(s) => { let _ = tx.send(Control::Reload(Box::new(s))).await; }
                Err(e) => error!("Reload rejected, keeping the current configuration: {e}"),
            },
        }
    }
}
