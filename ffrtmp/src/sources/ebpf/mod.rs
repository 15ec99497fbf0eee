//! The eBPF exec source: the kernel program (`ffrtmp-ebpf`, embedded at build time) sees
//! every exec, forwards those whose comm, exe or argv[0] names a target (or all, with
//! `forward_all`), and stops strict targets; this module loads it, keeps its target table
//! in step with the config, pins its ledger of stops, and turns its ring-buffer records
//! into notices the placement engine reads on its own thread (`reader`, an `exec::Ring`).
//!
//! `start` does everything that can fail before the daemon runs (check, load, attach,
//! first target table, ledger), so `ffrtmp watch` can exit with the cause and the fix.
//!
//! Files: `object` (the embedded object and its layout check), `btf` (member offsets),
//! `load` (load and attach), `targets` (the kernel prefilter), `ledger` (the stops),
//! `reader` (ring → notices, drained by the engine's thread), `counters` (the kernel's
//! counters), `kernel_log` (the program's own warnings, aya-log), `error`.

/// A wrapper that lets aya's maps hold a type of `ffrtmp-common`: aya's `Pod` and the
/// common types are both foreign here (orphan rule), and tying ffrtmp-common to one aya
/// version would be worse. `$why` says why the type has no padding (each size is asserted
/// in ffrtmp-common), which is what makes the `unsafe impl` sound.
macro_rules! pod {
    ($vis:vis $name:ident($inner:ty), $why:literal) => {
        #[derive(Clone, Copy)]
        #[repr(transparent)]
        #[doc = concat!("`", stringify!($inner), "` for aya's maps: ", $why)]
        $vis struct $name(pub $inner);
        // SAFETY: repr(transparent) over a repr(C) type without padding (see the doc).
        unsafe impl aya::Pod for $name {}
    };
}

pub mod btf;
pub mod counters;
pub mod error;
pub mod kernel_log;
pub mod ledger;
pub mod load;
pub mod object;
pub mod reader;
pub mod targets;

use std::os::fd::AsFd;
use std::sync::Arc;

use aya::maps::{Array, HashMap, MapData, RingBuf};
use aya::Ebpf;
use ffrtmp_common::{OFFSETS_ARGV0, OFFSETS_EXE, OFFSETS_IDENTITY};
use tracing::{info, warn};

pub use counters::{KernelCounters, MappedCounters};
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
    counters: MappedCounters,
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
    /// The kernel program's log ring, for `kernel_log::drain` on the record loop's runtime.
    pub kernel_log: Option<kernel_log::KernelLogger>,
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
    let kernel_log = kernel_log::take(&mut loaded.ebpf);
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
    let counters = MappedCounters::new(take(&mut ebpf, "COUNTERS")?)
        .map_err(|detail| EbpfError::Load { detail })?;
    let ledger = Arc::new(KernelLedger::new(
        HashMap::try_from(take(&mut ebpf, "STOPPED")?).map_err(wrong)?,
    ));

    let (orphans, strict_off) = strict_ledger(&ledger, me, dry_run, valid);
    let mut table = TargetTable::new(targets, kernel_settings, strict_off.is_none());
    let plan = table.apply(settings)?;
    release_startup_memory();
    say_attached(hook, &plan, valid, ring_bytes);
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
        kernel_log,
    })
}

/// Whether strict stops can be made (`Some(why not)`), and the ledgers dead daemons left.
/// A stop is kept in a ledger pinned in bpffs, so it survives a crash of the daemon.
fn strict_ledger(
    ledger: &KernelLedger,
    me: ProcessId,
    dry_run: bool,
    valid: u32,
) -> (Vec<KernelLedger>, Option<String>) {
    if dry_run {
        return (Vec::new(), Some("dry run: nothing is stopped".to_string()));
    }
    let dir = std::path::Path::new(ledger::PIN_DIR);
    let (orphans, problems) = ledger::orphans(dir, me, &ProcFs::system());
    for p in problems {
        warn!("eBPF: ledger of strict stops: {p}");
    }
    if valid & OFFSETS_IDENTITY == 0 {
        let why = "the kernel's BTF does not give the task's start time, without which a stop cannot be recorded";
        return (orphans, Some(why.to_string()));
    }
    let off = ensure_bpffs().and_then(|()| ledger.pin(dir, me)).err().map(|e| {
        format!(
            "the ledger of stops cannot be kept in bpffs ({e}); without it a stop would not survive a crash of the daemon. Mount bpffs: mount -t bpf bpf /sys/fs/bpf"
        )
    });
    (orphans, off)
}

/// The start-up line: the hook, the kernel filter, what the events carry, the ring.
fn say_attached(hook: Hook, plan: &Plan, valid: u32, ring_bytes: u32) {
    let names: String = [(OFFSETS_EXE, "exe"), (OFFSETS_ARGV0, "argv[0]")]
        .iter()
        .filter(|(bit, _)| valid & bit != 0)
        .map(|(_, n)| format!(", {n}"))
        .collect();
    info!(
        "eBPF exec source: {hook} attached; kernel filter: {} ({} target key(s), matched on comm{names}); ring {} KiB; object {}",
        if plan.forward_all {
            "off, every exec is forwarded"
        } else {
            "name of a target"
        },
        plan.entries.len(),
        ring_bytes / 1024,
        build_id().unwrap_or("none")
    );
}

/// bpffs at /sys/fs/bpf (systemd mounts it; a minimal system may not): mount it if absent.
fn ensure_bpffs() -> Result<(), String> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let path = "/sys/fs/bpf";
    if rustix::fs::statfs(path).is_ok_and(|st| st.f_type == BPF_FS_MAGIC) {
        return Ok(());
    }
    rustix::mount::mount("bpf", path, "bpf", rustix::mount::MountFlags::empty(), None)
        .map_err(|e| format!("/sys/fs/bpf is not bpffs and mounting it failed: {e}"))?;
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
            ring: Some(Box::new(RingReader::new(ring, ebpf, ledger))),
            counters: Some(Box::new(KernelCounters::new(counters, prog))),
            gate: None,
        })
    }
}
