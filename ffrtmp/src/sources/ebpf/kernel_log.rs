//! The kernel program's own warnings (aya-log): the sites where it gives up on something it
//! cannot take back (a strict target's stop not recorded, or not sent) or drops an event
//! (a read failed). It writes them to the `AYA_LOGS` ring; only warnings and errors are
//! written at all (`AYA_LOG_LEVEL`, fixed at load). A task on the record loop's runtime
//! drains the ring into the daemon's log, never the real-time placement thread.

use aya::Ebpf;
use aya_log::EbpfLogger;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tracing::warn;

/// The level the kernel writes at and above (the loader fixes it as a global).
pub const LEVEL: u8 = aya_log::Level::Warn as u8;

/// Hands the kernel's records to `tracing`, target `ffrtmp::kernel`.
pub struct ToTracing;

/// The program's log ring, read into `tracing`.
pub type KernelLogger = EbpfLogger<ToTracing>;

impl log::Log for ToTracing {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn
    }

    fn log(&self, r: &log::Record<'_>) {
        match r.level() {
            log::Level::Error => tracing::error!(target: "ffrtmp::kernel", "kernel: {}", r.args()),
            log::Level::Warn => tracing::warn!(target: "ffrtmp::kernel", "kernel: {}", r.args()),
            _ => {}
        }
    }

    fn flush(&self) {}
}

/// Take the program's log ring. Before its programs load: the map must stay open until
/// then. `None` (said once) when it cannot be had; the program runs the same without it.
pub fn take(ebpf: &mut Ebpf) -> Option<KernelLogger> {
    EbpfLogger::init_with_logger(ebpf, ToTracing)
        .map_err(|e| warn!("eBPF: the kernel program's warnings will not reach the log: {e}"))
        .ok()
}

/// Drain the ring as records come, until the daemon's runtime stops. A record that does
/// not decode is dropped with a warning, never a panic of the daemon.
pub async fn drain(logger: KernelLogger) {
    // SAFETY: the logger owns the ring's descriptor for as long as the AsyncFd holds it.
    let mut fd = match unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) } {
        Ok(fd) => fd,
        Err(e) => {
            warn!("eBPF: cannot watch the kernel program's log ring: {e}");
            return;
        }
    };
    loop {
        let Ok(mut ready) = fd.readable_mut().await else {
            return;
        };
        let logger = ready.get_inner_mut();
        // A record that does not decode panics aya-log's flush after consuming it; the
        // records behind it are read by the next pass (the kernel signals again only once
        // the ring is drained).
        while std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| logger.flush())).is_err() {
            warn!("eBPF: a record of the kernel program's log did not decode; dropped");
        }
        ready.clear_ready();
    }
}
