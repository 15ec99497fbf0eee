//! The command line: argument definitions and dispatch. Each command lives in its own file.

/// `println!` for the commands' output: see [`say`].
macro_rules! say {
    ($($t:tt)*) => { $crate::cli::say(format_args!($($t)*)) };
}

mod attach;
pub mod check;
mod run;
mod status;
mod watch;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::units::{CpuQuota, CpuWeight, MemoryMib, PidsMax};
use crate::config::Limits;

/// Exit codes.
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;

/// `ffrtmp --version`: the version and the embedded kernel program.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (kernel object ",
    env!("FFRTMP_EBPF_ID"),
    ", event layout 2)"
);
const _: () = assert!(
    ffrtmp_common::EVENT_ABI == 2,
    "update the layout in VERSION"
);

#[derive(Parser, Debug)]
#[command(
    name = "ffrtmp",
    version = VERSION,
    about = "Finds transcoders it did not start and puts each under cgroup limits the moment it appears",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Govern matching processes: the daemon.
    Watch(WatchArgs),
    /// Run a command inside its own cgroup with limits.
    Run(RunArgs),
    /// Place a running process into its own cgroup with limits.
    Attach(AttachArgs),
    /// Show governed processes with their limits and live CPU and memory use.
    Status(StatusArgs),
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate a config file and print the effective configuration (with env and defaults).
    Check {
        /// Config file (YAML).
        #[arg(long, visible_alias = "watch-config", value_name = "PATH")]
        config: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Config file (YAML). Default: /etc/ffrtmp/watch-config.yaml if it exists, else built-in defaults.
    #[arg(long, visible_alias = "watch-config", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Use the periodic /proc scan as the event source (every scan_interval) if the eBPF
    /// source cannot be used.
    #[arg(long)]
    pub fallback_scan: bool,
    /// Decide and log what would be done; create, move and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Override scan_interval (e.g. 5s).
    #[arg(long, value_name = "DURATION")]
    pub scan_interval: Option<String>,
    /// Override target_commands (repeat for several).
    #[arg(long = "target", value_name = "NAME")]
    pub targets: Vec<String>,
    /// Override state_path.
    #[arg(long, value_name = "PATH")]
    pub state_path: Option<PathBuf>,
    /// Override cgroup_root.
    #[arg(long, value_name = "PATH")]
    pub cgroup_root: Option<String>,
    /// Override placement: `strict` stops each target at exec until it is placed (eBPF
    /// source only; per-command `placement` in the config still wins).
    #[arg(long, value_name = "normal|strict")]
    pub placement: Option<String>,
}

/// Limits given on the command line (`run`, `attach`).
#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// CPU quota in percent of one core (200 = 2 cores).
    #[arg(long, value_name = "PCT", value_parser = |s: &str| CpuQuota::parse(s))]
    pub cpu_quota: Option<CpuQuota>,
    /// CPU weight 1–10000 (default 100).
    #[arg(long, value_name = "W", value_parser = |s: &str| CpuWeight::parse(s))]
    pub cpu_weight: Option<CpuWeight>,
    /// Memory limit in MiB.
    #[arg(long, value_name = "MIB", value_parser = |s: &str| MemoryMib::parse(s))]
    pub memory_limit: Option<MemoryMib>,
    /// Maximum number of processes and threads.
    #[arg(long, value_name = "N", value_parser = |s: &str| PidsMax::parse(s))]
    pub pids_max: Option<PidsMax>,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            cpu_quota: self.cpu_quota.and_then(|v| v.get()).map(|v| v as u32),
            cpu_weight: self.cpu_weight.and_then(|v| v.get()).map(|v| v as u32),
            memory_limit: self.memory_limit.and_then(|v| v.get()),
            pids_max: self.pids_max.and_then(|v| v.get()),
        }
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Job id (default run-<pid of ffrtmp run>): the job cgroup's name under the root. A
    /// name whose cgroup holds other cgroups (a pool) is refused.
    #[arg(long, value_name = "ID")]
    pub job_id: Option<String>,
    /// Cgroup root the job cgroup is created under. `auto`: the root the watch daemon
    /// published in /run/ffrtmp (its jobs' tree), else /ffrtmp.
    #[arg(long, value_name = "PATH", default_value = "auto")]
    pub cgroup_root: String,
    /// The command and its arguments (after --).
    #[arg(trailing_var_arg = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// PID of the process to place.
    #[arg(long)]
    pub pid: u32,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Job id (default attach-<pid>): the job cgroup's name under the root. A name whose
    /// cgroup holds other cgroups (a pool) is refused.
    #[arg(long, value_name = "ID")]
    pub job_id: Option<String>,
    /// Wait for the process to exit, then remove its cgroup.
    #[arg(long)]
    pub wait: bool,
    /// Cgroup root the job cgroup is created under. `auto`: the root the watch daemon
    /// published in /run/ffrtmp (its jobs' tree), else /ffrtmp.
    #[arg(long, value_name = "PATH", default_value = "auto")]
    pub cgroup_root: String,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// State file of the daemon (default: $STATE_PATH, else the one the running daemon
    /// published in its runtime directory, else /var/lib/ffrtmp/watch-state.json).
    #[arg(long, value_name = "PATH")]
    pub state_path: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Parse arguments and run. The binary's `main` is only this.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Watch(a) => watch::main(a),
        Command::Run(a) => run::main(a),
        Command::Attach(a) => attach::main(a),
        Command::Status(a) => status::main(a),
        Command::Config {
            command: ConfigCommand::Check { config },
        } => check::main(config),
    }
}

/// `run` and `attach`: the cgroup root (`auto`: the daemon's published one) and the job
/// id (`default` unless given); a bad one is a config error (exit 2), said.
fn root_and_job(
    cgroup_root: &str,
    job_id: Option<&str>,
    default: &str,
) -> Result<(String, crate::job::JobId), ExitCode> {
    let root = match crate::config::raw::CgroupRoot::parse(cgroup_root) {
        Ok(r) if r.0 == crate::config::raw::AUTO => crate::placer::delegation::tools_root(),
        Ok(r) => r.0,
        Err(e) => return Err(fail(EXIT_CONFIG, format!("--cgroup-root: {e}"))),
    };
    let job_id =
        crate::job::JobId::named(job_id.unwrap_or(default)).map_err(|e| fail(EXIT_CONFIG, e))?;
    Ok((root, job_id))
}

/// `run`/`attach`: record the root this job goes under, so the daemon never moves it.
pub fn register_root(root: &str) {
    let dir = crate::placer::registry::runtime_dir();
    if let Err(e) = crate::placer::registry::register_tool_root(&dir, root) {
        eprintln!(
            "ffrtmp: warning: cannot record {root} in {}: {e}; a running `ffrtmp watch` with another cgroup root may move this job",
            dir.display()
        );
    }
}

/// Write a line of a command's output to stdout. A reader that went away (`ffrtmp status |
/// grep -q`) is not an error: the line is dropped and the command goes on to its end, where
/// `println!` would panic and leave, say, `attach` without removing its job's cgroup.
pub fn say(line: std::fmt::Arguments) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(line).and_then(|()| out.write_all(b"\n")) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            let _ = writeln!(std::io::stderr(), "ffrtmp: cannot write to stdout: {e}");
        }
    }
}

/// Print an error for the user (no backtrace) and return the exit code.
pub fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("ffrtmp: error: {msg}");
    ExitCode::from(code)
}
