//! Why the eBPF source could not start, each cause with the fix the user can apply.
//!
//! aya reports failures as nested errors (`EbpfError` → `MapError`/`ProgramError` →
//! `io::Error`); `classify` walks that chain once and turns the errno into one of the
//! causes the issue names, so `ffrtmp watch` can say what to do instead of dumping a chain.

use std::error::Error as StdError;
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error("ffrtmp was built without the eBPF object: run `cargo xtask build-ebpf` and rebuild (cargo build --release -p ffrtmp)")]
    NotBuilt,
    #[error("{detail}: rebuild both halves from one checkout (cargo xtask build-ebpf, then cargo build --release -p ffrtmp)")]
    StaleObject { detail: String },
    #[error("the eBPF source is disabled (FFRTMP_EBPF_HOOK=off): unset it to use eBPF")]
    Disabled,
    #[error("the kernel refused to load the eBPF program ({detail}): ffrtmp needs CAP_BPF and CAP_PERFMON. Run it as root with them (check `grep Cap /proc/self/status`, or a systemd CapabilityBoundingSet= that leaves them out); kernels before 5.8 need CAP_SYS_ADMIN instead")]
    Permission { detail: String },
    #[error("the kernel refused the perf event the classic exec tracepoint is attached through ({detail}): kernel.perf_event_paranoid is above 2 (Debian's default is 3), which allows perf events only with CAP_SYS_ADMIN. Set `sysctl kernel.perf_event_paranoid=2` (CAP_PERFMON is then enough), or let ffrtmp use the BTF tracepoint (FFRTMP_EBPF_HOOK=auto, needs /sys/kernel/btf/vmlinux)")]
    PerfRefused { detail: String },
    #[error("tracefs is needed to attach the exec tracepoint and it is not mounted; mounting it failed ({detail}). Mount it: mount -t tracefs nodev /sys/kernel/tracing (or make /sys/kernel/btf/vmlinux available so the BTF tracepoint, which needs no tracefs, can be used)")]
    Tracefs { detail: String },
    #[error("this kernel has no BPF ring buffer ({detail}): the eBPF source needs Linux 5.8 or later built with CONFIG_BPF_SYSCALL. Upgrade the kernel, or run with --fallback-scan")]
    NoRingBuffer { detail: String },
    #[error("{key}={value:?} is not valid: {message}")]
    Setting {
        key: &'static str,
        value: String,
        message: String,
    },
    #[error("cannot load the eBPF program: {detail}. If the kernel is older than 5.8 or lacks BPF support, run with --fallback-scan")]
    Load { detail: String },
    #[error("cannot attach the exec hook: {detail}. Run with --fallback-scan to govern by scanning /proc instead")]
    Attach { detail: String },
    #[error("cannot write the kernel target table: {detail}")]
    Targets { detail: String },
}

/// Which step failed, for the generic causes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Load,
    Attach,
}

/// Turn an aya error into the cause the user can act on.
pub fn classify(stage: Stage, err: &(dyn StdError + 'static)) -> EbpfError {
    let detail = chain_text(err);
    let errno = first_errno(err);
    if matches!(errno, Some(libc::EPERM) | Some(libc::EACCES)) {
        // Perf events have a permission rule of their own (perf_event_paranoid).
        if stage == Stage::Attach && detail.contains("perf_event_open") {
            return EbpfError::PerfRefused { detail };
        }
        return EbpfError::Permission { detail };
    }
    if detail.contains("tracefs not found") {
        return EbpfError::Tracefs { detail };
    }
    // Creating a BPF_MAP_TYPE_RINGBUF map on a kernel that does not know the type.
    if stage == Stage::Load && errno == Some(libc::EINVAL) && detail.contains("EVENTS") {
        return EbpfError::NoRingBuffer { detail };
    }
    match stage {
        Stage::Load => EbpfError::Load { detail },
        Stage::Attach => EbpfError::Attach { detail },
    }
}

impl EbpfError {
    /// Whether another hook could work where this one failed (permission and
    /// missing-object failures would fail the same way).
    pub fn worth_another_hook(&self) -> bool {
        !matches!(
            self,
            EbpfError::Permission { .. }
                | EbpfError::NotBuilt
                | EbpfError::StaleObject { .. }
                | EbpfError::Disabled
        )
    }
}

/// The messages of an error and its sources, joined: aya's outer messages name the map or
/// program, the inner ones the errno.
pub fn chain_text(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        let s = e.to_string();
        // Transparent wrappers repeat their source's text.
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    // aya's load error carries the verifier log; an empty one says nothing.
    parts
        .join(": ")
        .replace(". Verifier output: ", "")
        .trim_end()
        .to_string()
}

fn first_errno(err: &(dyn StdError + 'static)) -> Option<i32> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(n) = io.raw_os_error() {
                return Some(n);
            }
        }
        if let Some(aya::programs::ProgramError::LoadError { io_error, .. }) =
            e.downcast_ref::<aya::programs::ProgramError>()
        {
            return io_error.raw_os_error();
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use aya::maps::MapError;
    use aya::programs::ProgramError;

    fn syscall(call: &'static str, errno: i32) -> ProgramError {
        ProgramError::SyscallError(aya::sys::SyscallError {
            call,
            io_error: io::Error::from_raw_os_error(errno),
        })
    }

    fn map_create(name: &str, errno: i32) -> aya::EbpfError {
        aya::EbpfError::MapError(MapError::CreateError {
            name: name.into(),
            io_error: io::Error::from_raw_os_error(errno),
        })
    }

    #[test]
    fn eperm_on_map_create_is_a_missing_capability() {
        let e = classify(Stage::Load, &map_create("COUNTERS", libc::EPERM));
        assert!(matches!(e, EbpfError::Permission { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("CAP_BPF") && text.contains("CAP_PERFMON"),
            "{text}"
        );
        assert!(text.contains("COUNTERS"), "{text}");
    }

    #[test]
    fn eperm_on_program_load_is_a_missing_capability() {
        let e = classify(Stage::Load, &syscall("bpf_prog_load", libc::EPERM));
        assert!(matches!(e, EbpfError::Permission { .. }), "{e:?}");
    }

    #[test]
    fn a_refused_perf_event_is_not_a_missing_bpf_capability() {
        // As aya reports it under the unit on Debian (perf_event_paranoid=3).
        let e = classify(
            Stage::Attach,
            &syscall("perf_event_open_trace_point", libc::EACCES),
        );
        assert!(matches!(e, EbpfError::PerfRefused { .. }), "{e:?}");
        assert!(e.worth_another_hook(), "tp_btf needs no perf event");
        assert!(e.to_string().contains("perf_event_paranoid=2"), "{e}");
        // The same errno loading a program is the missing capability.
        let e = classify(Stage::Load, &syscall("bpf_prog_load", libc::EACCES));
        assert!(matches!(e, EbpfError::Permission { .. }), "{e:?}");
        assert!(!e.worth_another_hook());
    }

    #[test]
    fn missing_tracefs_names_the_mount_command() {
        let err = ProgramError::IOError(io::Error::other("tracefs not found"));
        let e = classify(Stage::Attach, &err);
        assert!(matches!(e, EbpfError::Tracefs { .. }), "{e:?}");
        assert!(e.to_string().contains("mount -t tracefs"));
    }

    #[test]
    fn einval_creating_the_ring_means_no_ring_buffer() {
        let e = classify(Stage::Load, &map_create("EVENTS", libc::EINVAL));
        assert!(matches!(e, EbpfError::NoRingBuffer { .. }), "{e:?}");
        assert!(e.to_string().contains("5.8"));
        // EINVAL elsewhere is a generic load failure.
        let e = classify(Stage::Load, &map_create("TARGETS", libc::EINVAL));
        assert!(matches!(e, EbpfError::Load { .. }), "{e:?}");
    }

    #[test]
    fn not_built_says_how_to_build() {
        let t = EbpfError::NotBuilt.to_string();
        assert!(
            t.contains("cargo xtask build-ebpf") && t.contains("rebuild"),
            "{t}"
        );
        assert!(!EbpfError::NotBuilt.worth_another_hook());
    }
}
