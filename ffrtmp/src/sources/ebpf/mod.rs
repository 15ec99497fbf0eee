//! The eBPF exec source: the kernel program (`ffrtmp-ebpf`, embedded at build time) sees
//! every exec, forwards those whose comm, exe or argv[0] names a target (or all, with
//! `forward_all`), and stops strict targets; this module loads it, keeps its target table
//! in step with the config, pins its ledger of stops, and turns its ring-buffer records
//! into notices for the placement engine (on the reader thread).
//!
//! `start` does everything that can fail before the daemon runs (check, load, attach,
//! first target table, ledger), so `ffrtmp watch` can exit with the cause and the fix.
//!
//! Files: `object` (the embedded object and its layout check), `btf` (member offsets),
//! `load` (load and attach), `targets` (the kernel prefilter), `ledger` (the stops),
//! `reader` (ring → notices, its own thread), `error`.

pub mod btf;
pub mod counters;
pub mod error;
pub mod ledger;
pub mod load;
pub mod object;
pub mod reader;
pub mod targets;

use std::os::fd::AsFd;
use std::sync::Arc;

use aya::maps::{Array, HashMap, MapData, PerCpuArray, RingBuf};
use aya::Ebpf;
use ffrtmp_common::{OFFSETS_ARGV0, OFFSETS_EXE, OFFSETS_IDENTITY, OFFSETS_PIDNS};
use tracing::{info, warn};

pub use counters::KernelCounters;
pub use error::EbpfError;
pub use ledger::KernelLedger;
pub use load::{Hook, LoadOptions, HOOK_ENV, RING_ENV};
pub use object::{build_id, is_embedded};
pub use reader::RingReader;
pub use targets::{Plan, TargetTable};

use super::{Attached, EventSource, SourceSinks};
use crate::config::Settings;
use crate::process::{ProcFs, ProcessId};

/// A loaded and attached exec hook with its ring buffer, ready to be started.
pub struct EbpfSource {
    ebpf: Ebpf,
    ring: RingBuf<MapData>,
    counters: PerCpuArray<MapData, u64>,
    ledger: Arc<KernelLedger>,
    hook: Hook,
}

/// What `start` hands back.
pub struct Started {
    pub source: EbpfSource,
    /// Rewrites the kernel's target table; call `apply` on every reload.
    pub table: TargetTable,
    pub plan: Plan,
    /// This daemon's ledger of stops.
    pub ledger: Arc<KernelLedger>,
    /// Ledgers left by daemons that died: their processes are to be placed and resumed.
    pub orphans: Vec<KernelLedger>,
    /// Whether strict targets are stopped (not in a dry run, and only with a ledger that
    /// survives the daemon); `Some(reason)` when strict placement is off for a reason.
    pub strict_off: Option<String>,
}

impl EbpfSource {
    pub fn hook(&self) -> Hook {
        self.hook
    }
}

impl RingReader {
    /// The source's ring alone (tests and tools that read it without a daemon).
    pub fn from_source(s: EbpfSource) -> RingReader {
        RingReader::new(s.ring, s.ebpf, s.ledger)
    }
}

/// Load the program, attach it, pin its ledger, fill the target table from `settings`.
/// `me` names this daemon's ledger; `dry_run` stops nothing and pins nothing.
pub fn start(
    settings: &Settings,
    opts: &LoadOptions,
    me: ProcessId,
    dry_run: bool,
) -> Result<Started, EbpfError> {
    let mut loaded = load::load_object(opts, settings.forward_all)?;
    let hook = load::attach(&mut loaded, opts)?;
    let valid = loaded.offsets.valid;
    let (btf_problem, ring_bytes) = (loaded.btf_problem.clone(), loaded.ring_bytes);
    let mut ebpf = loaded.ebpf;
    let take = |ebpf: &mut Ebpf, name: &str| {
        ebpf.take_map(name).ok_or_else(|| EbpfError::Load {
            detail: format!("the embedded object has no map {name}: rebuild it with `cargo xtask build-ebpf` and rebuild ffrtmp"),
        })
    };
    let wrong = |e: aya::maps::MapError| EbpfError::Load {
        detail: format!(
            "{} (the embedded object does not match this ffrtmp: rebuild both)",
            error::chain_text(&e)
        ),
    };
    let targets = HashMap::try_from(take(&mut ebpf, "TARGETS")?).map_err(wrong)?;
    let kernel_settings = Array::try_from(take(&mut ebpf, "SETTINGS")?).map_err(wrong)?;
    let ring = RingBuf::try_from(take(&mut ebpf, "EVENTS")?).map_err(wrong)?;
    let counters = PerCpuArray::try_from(take(&mut ebpf, "COUNTERS")?).map_err(wrong)?;
    let ledger = Arc::new(KernelLedger::new(
        HashMap::try_from(take(&mut ebpf, "STOPPED")?).map_err(wrong)?,
    ));

    let proc = ProcFs::system();
    let dir = std::path::Path::new(ledger::PIN_DIR);
    let mut strict_off = None;
    let orphans = if dry_run {
        strict_off = Some("dry run: nothing is stopped".to_string());
        Vec::new()
    } else {
        let (found, problems) = ledger::orphans(dir, me, &proc);
        for p in problems {
            warn!("eBPF: ledger of strict stops: {p}");
        }
        found
    };
    if strict_off.is_none() && valid & OFFSETS_IDENTITY == 0 {
        strict_off = Some(
            "the kernel's BTF does not give the task's start time, without which a stop cannot be recorded"
                .to_string(),
        );
    }
    if strict_off.is_none() {
        if let Err(e) = ensure_bpffs().and_then(|()| ledger.pin(dir, me)) {
            strict_off = Some(format!(
                "the ledger of stops cannot be kept in bpffs ({e}); without it a stop would not survive a crash of the daemon. Mount bpffs: mount -t bpf bpf /sys/fs/bpf"
            ));
        }
    }
    let mut table = TargetTable::new(targets, kernel_settings, strict_off.is_none());
    let plan = table.apply(settings)?;
    release_startup_memory();
    let names: Vec<&str> = [
        (OFFSETS_EXE, "exe"),
        (OFFSETS_ARGV0, "argv[0]"),
        (OFFSETS_IDENTITY, "start time"),
        (OFFSETS_PIDNS, "PID namespace"),
    ]
    .iter()
    .filter(|(bit, _)| valid & bit != 0)
    .map(|(_, n)| *n)
    .collect();
    info!(
        "eBPF exec source: {hook} attached; kernel filter: {} ({} target key(s), matched on comm{}); ring {} KiB; object {}",
        if plan.forward_all {
            "off, every exec is forwarded"
        } else {
            "name of a target"
        },
        plan.entries.len(),
        names
            .iter()
            .filter(|n| matches!(**n, "exe" | "argv[0]"))
            .map(|n| format!(", {n}"))
            .collect::<String>(),
        ring_bytes / 1024,
        build_id().unwrap_or("none")
    );
    if let Some(p) = btf_problem {
        warn!("eBPF: BTF lacks some offsets ({p}); events carry less and /proc is read instead (aliases are found by the reconciliation scan)");
    }
    Ok(Started {
        source: EbpfSource {
            ebpf,
            ring,
            counters,
            ledger: ledger.clone(),
            hook,
        },
        table,
        plan,
        ledger,
        orphans,
        strict_off,
    })
}

/// bpffs at /sys/fs/bpf (systemd mounts it; a minimal system may not): mount it if absent.
fn ensure_bpffs() -> Result<(), String> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let path = c"/sys/fs/bpf";
    // SAFETY: statfs into a zeroed struct with a valid path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut st) } == 0 && st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    // SAFETY: valid NUL-terminated strings; no mount data.
    let r = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            path.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(format!(
            "/sys/fs/bpf is not bpffs and mounting it failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    info!("eBPF: mounted bpffs at /sys/fs/bpf");
    Ok(())
}

/// Loading parses the kernel's BTF (several MiB; twice when the tp_btf fallback loads:
/// aya's relocations and the tp_btf load); glibc keeps the freed heap mapped, which would stay in the daemon's RSS for its
/// whole life. Hand it back.
fn release_startup_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl EventSource for EbpfSource {
    fn name(&self) -> &'static str {
        reader::SOURCE
    }

    fn start(self: Box<Self>, _sinks: SourceSinks) -> std::io::Result<Attached> {
        let EbpfSource {
            ebpf,
            ring,
            counters,
            ledger,
            hook,
        } = *self;
        let prog = ebpf
            .program(hook.program_name())
            .and_then(|p| p.fd().ok())
            .and_then(|fd| fd.as_fd().try_clone_to_owned().ok());
        Ok(Attached {
            thread: None,
            ring: Some(RingReader::new(ring, ebpf, ledger)),
            counters: Some(KernelCounters::new(counters, prog)),
        })
    }
}
