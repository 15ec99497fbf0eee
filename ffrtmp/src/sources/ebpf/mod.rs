//! The eBPF exec source: the kernel program (`ffrtmp-ebpf`, embedded at build time) sees
//! every exec, forwards those whose comm names a target (or all, with `forward_all`), and
//! stops strict targets; this module loads it, keeps its target table in step with the
//! config, and turns its ring-buffer records into `SourceEvent`s.
//!
//! `start` does everything that can fail before the daemon runs (load, attach, first
//! target table), so `ffrtmp watch` can exit with the cause and the fix. It returns the
//! source (handed to `Daemon::run`) and the `TargetTable` (kept by whoever handles SIGHUP).
//!
//! Files: `object` (the embedded object), `btf` (the filename offset for tp_btf), `load`
//! (load and attach), `targets` (the kernel prefilter), `reader` (ring → events), `error`.

pub mod btf;
pub mod error;
pub mod load;
pub mod object;
pub mod reader;
pub mod targets;

use aya::maps::{Array, HashMap, MapData, PerCpuArray, RingBuf};
use aya::Ebpf;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::info;

pub use error::EbpfError;
pub use load::{Hook, LoadOptions, HOOK_ENV, RING_ENV};
pub use object::is_embedded;
pub use targets::{Plan, TargetTable};

use super::{EventSource, SourceEvent};
use crate::config::Settings;

/// A loaded and attached exec hook with its ring buffer, ready to be spawned.
pub struct EbpfSource {
    ebpf: Ebpf,
    ring: RingBuf<MapData>,
    counters: PerCpuArray<MapData, u64>,
    hook: Hook,
}

/// What `start` hands back.
pub struct Started {
    pub source: EbpfSource,
    /// Rewrites the kernel's target table; call `apply` on every reload.
    pub table: TargetTable,
    pub plan: Plan,
}

impl EbpfSource {
    pub fn hook(&self) -> Hook {
        self.hook
    }
}

/// Load the program, attach it, and fill the target table from `settings`.
pub fn start(settings: &Settings, opts: &LoadOptions) -> Result<Started, EbpfError> {
    let mut loaded = load::load_object(opts)?;
    let hook = load::attach(&mut loaded, opts)?;
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
    let mut table = TargetTable::new(targets, kernel_settings);
    let plan = table.apply(settings)?;
    release_startup_memory();
    info!(
        "eBPF exec source: {hook} attached; kernel filter: {} ({} target key(s){})",
        if plan.forward_all {
            "off, every exec is forwarded"
        } else {
            "comm of a target"
        },
        plan.entries.len(),
        match opts.ring_bytes {
            Some(n) => format!(", ring {n} bytes"),
            None => String::new(),
        }
    );
    Ok(Started {
        source: EbpfSource {
            ebpf,
            ring,
            counters,
            hook,
        },
        table,
        plan,
    })
}

/// Loading parses the kernel's BTF (several MiB, twice: aya's relocations and the tp_btf
/// load); glibc keeps the freed heap mapped, which would stay in the daemon's RSS for its
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

    fn spawn(self: Box<Self>, tx: mpsc::Sender<SourceEvent>) -> JoinHandle<()> {
        let EbpfSource {
            ebpf,
            ring,
            counters,
            ..
        } = *self;
        tokio::spawn(async move {
            match reader::Running::register(ring, counters, ebpf) {
                Ok(r) => r.run(tx).await,
                Err(e) => {
                    let _ = tx
                        .send(SourceEvent::Failed {
                            source: reader::SOURCE,
                            error: format!("cannot watch the ring buffer fd: {e}"),
                        })
                        .await;
                }
            }
        })
    }
}
