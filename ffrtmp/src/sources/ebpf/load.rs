//! Loading the object and attaching one exec hook.
//!
//! The classic tracepoint (`tracepoint/sched/sched_process_exec`) is tried first: the
//! kernel runs it with preemption off, so it is never preempted itself and is skipped only
//! while other BPF work runs on that CPU (the BTF tracepoint is run preemptibly on 7.x
//! kernels, which then skip it for some execs: `ffrtmp-ebpf/src/exec.rs`). It needs
//! tracefs, which is mounted here if absent — before aya first looks for it, because aya
//! remembers "tracefs not found" for the life of the process — and a perf event, which
//! Debian's `perf_event_paranoid=3` refuses without CAP_SYS_ADMIN. Where either cannot be
//! had, the BTF tracepoint (`tp_btf/sched_process_exec`) is used: it needs neither and
//! reads `bprm->filename` at an offset taken from the running kernel's BTF.
//! Either hook reads the task's identity, names and namespace at the offsets of
//! `btf::kernel_offsets`, set as the global `OFFSETS`.

use std::path::Path;

use aya::programs::{BtfTracePoint, TracePoint};
use aya::{Btf, Ebpf, EbpfLoader};
use tracing::{debug, info};

use ffrtmp_common::KernelOffsets;

use super::btf::running_kernel_offsets;
use super::error::{classify, EbpfError, Stage};
use super::object::object;

/// Environment knob: which hook to use (`auto`, `tp_btf`, `tracepoint`), or `off` to
/// refuse to load (tests of the scan path; with `--fallback-scan` the scan takes over).
pub const HOOK_ENV: &str = "FFRTMP_EBPF_HOOK";
/// Environment knob: ring buffer size in bytes (rounded up to a power-of-two number of
/// pages). Small rings are how tests make the ring overflow.
pub const RING_ENV: &str = "FFRTMP_EBPF_RING_BYTES";

/// The ring when the kernel filters: only targets are forwarded, so even an exec storm of
/// nothing but targets (~3 000/s on these machines) fills 256 KiB (about 700 events of 368
/// bytes) only if the reader stalls for a quarter of a second — and a loss is never a
/// miss, it triggers a reconciliation scan. Pages of the ring the reader touches count in
/// its RSS, so the ring is sized for the filtered rate, not for every exec.
pub const RING_FILTERED_BYTES: u32 = 256 << 10;
/// The ring with `forward_all`: every exec system-wide is forwarded.
pub const RING_ALL_BYTES: u32 = 4 << 20;

pod!(
    PodOffsets(KernelOffsets),
    "repr(C), twelve u32, no padding."
);

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// The attached exec hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    TpBtf,
    TracePoint,
}

impl Hook {
    /// The program in the embedded object that this hook loads.
    pub fn program_name(self) -> &'static str {
        match self {
            Hook::TpBtf => "sched_process_exec_btf",
            Hook::TracePoint => "sched_process_exec",
        }
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            Hook::TpBtf => "tp_btf/sched_process_exec",
            Hook::TracePoint => "tracepoint/sched/sched_process_exec",
        })
    }
}

/// Which hooks to try, from `FFRTMP_EBPF_HOOK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookChoice {
    Auto,
    Only(Hook),
}

/// Load-time options, from the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    pub hook: HookChoice,
    pub ring_bytes: Option<u32>,
}

impl LoadOptions {
    pub fn from_env() -> Result<Self, EbpfError> {
        Self::parse(
            std::env::var(HOOK_ENV).ok().as_deref(),
            std::env::var(RING_ENV).ok().as_deref(),
        )
    }

    pub fn parse(hook: Option<&str>, ring: Option<&str>) -> Result<Self, EbpfError> {
        let hook = match hook.map(str::trim).filter(|s| !s.is_empty()) {
            None | Some("auto") => HookChoice::Auto,
            Some("tp_btf") => HookChoice::Only(Hook::TpBtf),
            Some("tracepoint") => HookChoice::Only(Hook::TracePoint),
            Some("off") => return Err(EbpfError::Disabled),
            Some(other) => {
                return Err(EbpfError::Setting {
                    key: HOOK_ENV,
                    value: other.into(),
                    message: "accepted: auto, tp_btf, tracepoint, off".into(),
                })
            }
        };
        let ring_bytes = match ring.map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (4096..=1 << 30).contains(&n) => Some(n),
                _ => {
                    return Err(EbpfError::Setting {
                        key: RING_ENV,
                        value: v.into(),
                        message: "a byte count from 4096 to 1073741824".into(),
                    })
                }
            },
        };
        Ok(LoadOptions { hook, ring_bytes })
    }
}

/// The object loaded (maps created, no program loaded yet), the offsets the program got,
/// and why the kernel's BTF could not give some of them.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub offsets: KernelOffsets,
    /// `None`: every offset was found. Otherwise what is missing (or why BTF is unusable).
    pub btf_problem: Option<String>,
    pub ring_bytes: u32,
}

/// Load the object. Globals are fixed at load, so the offsets are found first. (aya's
/// loader parses the kernel's BTF for its own use; the tp_btf attach parses it again after
/// the loader is gone rather than keep one copy through both, which measured a higher
/// peak RSS.)
pub fn load_object(opts: &LoadOptions, forward_all: bool) -> Result<Loaded, EbpfError> {
    let bytes = object()?;
    raise_memlock();
    let (offsets, btf_problem) = match running_kernel_offsets() {
        Ok((o, missing)) if missing.is_empty() => (o, None),
        Ok((o, missing)) => (o, Some(missing.join("; "))),
        Err(e) => (KernelOffsets::default(), Some(e)),
    };
    let ring_bytes = opts.ring_bytes.unwrap_or(if forward_all {
        RING_ALL_BYTES
    } else {
        RING_FILTERED_BYTES
    });
    let mut loader = EbpfLoader::new();
    loader.map_max_entries("EVENTS", ring_bytes);
    loader.map_max_entries("COUNTERS", super::counters::entries()?);
    let pod = PodOffsets(offsets);
    loader.override_global("OFFSETS", &pod, true);
    loader.override_global(aya_log::LEVEL, &super::kernel_log::LEVEL, true);
    let ebpf = loader.load(bytes).map_err(|e| classify(Stage::Load, &e))?;
    Ok(Loaded {
        ebpf,
        offsets,
        btf_problem,
        ring_bytes,
    })
}

/// Load and attach one hook, trying the classic tracepoint first unless told otherwise.
pub fn attach(loaded: &mut Loaded, opts: &LoadOptions) -> Result<Hook, EbpfError> {
    let ebpf = &mut loaded.ebpf;
    let btf_usable = loaded.offsets.valid & ffrtmp_common::OFFSETS_BPRM != 0;
    match opts.hook {
        HookChoice::Only(Hook::TpBtf) => attach_btf(ebpf).map(|()| Hook::TpBtf),
        HookChoice::Only(Hook::TracePoint) => {
            ensure_tracefs()?;
            attach_tracepoint(ebpf)
                .map(|()| Hook::TracePoint)
                .map_err(|(_, e)| e)
        }
        HookChoice::Auto => match ensure_tracefs()
            .map_err(|e| (Stage::Attach, e))
            .and_then(|()| attach_tracepoint(ebpf))
        {
            Ok(()) => Ok(Hook::TracePoint),
            Err((stage, e)) if btf_usable && try_btf_after(stage, &e) => {
                let why = match &e {
                    EbpfError::PerfRefused { .. } => "the kernel refuses perf events to this process (Debian's kernel.perf_event_paranoid=3 allows them only with CAP_SYS_ADMIN, which the shipped unit does not grant; with kernel.perf_event_paranoid=2, CAP_PERFMON is enough)".to_string(),
                    EbpfError::Tracefs { detail } => format!("tracefs is not mounted and could not be ({detail})"),
                    EbpfError::Permission { detail } => format!("attaching it was refused ({detail})"),
                    other => other.to_string(),
                };
                info!("eBPF: the classic tracepoint cannot be used: {why}; using the BTF tracepoint. A kernel that runs it preemptibly (7.x) skips it for some execs under load: those are counted (ffrtmp_kernel_skipped_total) and placed by the reconciliation they trigger");
                attach_btf(ebpf).map(|()| Hook::TpBtf)
            }
            Err((_, e)) => {
                if let Some(p) = loaded.btf_problem.as_ref().filter(|_| !btf_usable) {
                    info!("eBPF: BTF does not give the exec filename ({p}), so there is no BTF tracepoint to fall back to");
                }
                Err(e)
            }
        },
    }
}

fn attach_btf(ebpf: &mut Ebpf) -> Result<(), EbpfError> {
    let btf = Btf::from_sys_fs().map_err(|e| classify(Stage::Load, &e))?;
    let p: &mut BtfTracePoint = ebpf
        .program_mut(Hook::TpBtf.program_name())
        .ok_or_else(|| missing_program(Hook::TpBtf.program_name()))?
        .try_into()
        .map_err(|e| classify(Stage::Load, &e))?;
    p.load("sched_process_exec", &btf)
        .map_err(|e| classify(Stage::Load, &e))?;
    p.attach().map_err(|e| classify(Stage::Attach, &e))?;
    Ok(())
}

/// Whether a failure of the classic tracepoint leaves the BTF tracepoint worth trying.
/// Anything that failed while attaching does: tp_btf needs neither tracefs (whose files an
/// LSM or their mode may refuse) nor a perf event. A load the kernel refused for want of
/// a capability, a missing or stale object, or a disabled source would fail it the same way.
fn try_btf_after(stage: Stage, e: &EbpfError) -> bool {
    stage == Stage::Attach || e.worth_another_hook()
}

fn attach_tracepoint(ebpf: &mut Ebpf) -> Result<(), (Stage, EbpfError)> {
    let load = |e: EbpfError| (Stage::Load, e);
    let p: &mut TracePoint = ebpf
        .program_mut(Hook::TracePoint.program_name())
        .ok_or_else(|| load(missing_program(Hook::TracePoint.program_name())))?
        .try_into()
        .map_err(|e| load(classify(Stage::Load, &e)))?;
    p.load().map_err(|e| load(classify(Stage::Load, &e)))?;
    if let Err(e) = p.attach("sched", "sched_process_exec") {
        // Not left loaded for the daemon's life when the other hook takes over.
        let _ = p.unload();
        return Err((Stage::Attach, classify(Stage::Attach, &e)));
    }
    Ok(())
}

fn missing_program(name: &str) -> EbpfError {
    EbpfError::Load {
        detail: format!(
            "the embedded object has no program {name}: it is from another ffrtmp version; rebuild it with `cargo xtask build-ebpf` and rebuild ffrtmp"
        ),
    }
}

/// tracefs holds the tracepoint ids aya needs. Mount it if neither usual place has it.
fn ensure_tracefs() -> Result<(), EbpfError> {
    let populated = |p: &str| {
        std::fs::read_dir(p)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
    };
    if populated(TRACEFS) || populated(DEBUGFS_TRACING) {
        return Ok(());
    }
    if !Path::new(TRACEFS).is_dir() {
        return Err(EbpfError::Tracefs {
            detail: format!(
                "{TRACEFS} does not exist (kernel without CONFIG_TRACING, or /sys not mounted)"
            ),
        });
    }
    rustix::mount::mount(
        "nodev",
        TRACEFS,
        "tracefs",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .map_err(|e| EbpfError::Tracefs {
        detail: format!("mount -t tracefs nodev {TRACEFS}: {e}"),
    })?;
    info!("eBPF: mounted tracefs at {TRACEFS}");
    Ok(())
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; newer ones to the cgroup. The
/// raise fails without CAP_SYS_RESOURCE, which newer kernels do not need: only a note.
fn raise_memlock() {
    let unlimited = rustix::process::Rlimit {
        current: None,
        maximum: None,
    };
    if let Err(e) = rustix::process::setrlimit(rustix::process::Resource::Memlock, unlimited) {
        debug!("eBPF: cannot raise RLIMIT_MEMLOCK ({e}); not needed on Linux 5.11+");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_default_to_auto_and_the_object_ring() {
        let o = LoadOptions::parse(None, None).unwrap();
        assert_eq!(o.hook, HookChoice::Auto);
        assert_eq!(o.ring_bytes, None);
        let o = LoadOptions::parse(Some("tracepoint"), Some("8192")).unwrap();
        assert_eq!(o.hook, HookChoice::Only(Hook::TracePoint));
        assert_eq!(o.ring_bytes, Some(8192));
        assert_eq!(
            LoadOptions::parse(Some("tp_btf"), Some(" ")).unwrap().hook,
            HookChoice::Only(Hook::TpBtf)
        );
    }

    #[test]
    fn any_attach_failure_of_the_tracepoint_tries_the_btf_one() {
        let denied = || EbpfError::Permission {
            detail: "read /sys/kernel/tracing/events/sched/sched_process_exec/id: EACCES".into(),
        };
        assert!(try_btf_after(Stage::Attach, &denied()), "tracefs refused");
        assert!(
            !try_btf_after(Stage::Load, &denied()),
            "a refused load: tp_btf is refused the same"
        );
        assert!(!try_btf_after(Stage::Load, &EbpfError::NotBuilt));
        let perf = EbpfError::PerfRefused {
            detail: "perf_event_open: EACCES".into(),
        };
        assert!(try_btf_after(Stage::Attach, &perf));
    }

    #[test]
    fn bad_options_name_the_variable() {
        let e = LoadOptions::parse(Some("kprobe"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains(HOOK_ENV) && e.contains("tracepoint"), "{e}");
        let e = LoadOptions::parse(Some("off"), None).unwrap_err();
        assert!(matches!(e, EbpfError::Disabled), "{e:?}");
        for bad in ["12", "lots", "4294967296"] {
            let e = LoadOptions::parse(None, Some(bad)).unwrap_err().to_string();
            assert!(e.contains(RING_ENV) && e.contains(bad), "{e}");
        }
    }
}
