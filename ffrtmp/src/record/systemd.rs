//! sd_notify from the main process: READY after the source is attached and the first scan
//! is done, STATUS lines, WATCHDOG pings from the event loop, STOPPING at shutdown.
//! Outside systemd (no NOTIFY_SOCKET) every call is a no-op; a failing notification is
//! logged once and never stops the daemon.

use std::cell::Cell;
use std::time::Duration;

use sd_notify::NotifyState;

#[derive(Debug, Default)]
pub struct Notifier {
    enabled: bool,
    /// Half of WatchdogSec, when the watchdog is on.
    watchdog: Option<Duration>,
    warned: Cell<bool>,
    last_status: std::cell::RefCell<String>,
}

impl Notifier {
    /// From the environment systemd sets (NOTIFY_SOCKET, WATCHDOG_USEC/WATCHDOG_PID).
    pub fn from_env() -> Self {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        let mut usec = 0;
        let watchdog = (enabled && sd_notify::watchdog_enabled(false, &mut usec) && usec > 0)
            .then(|| Duration::from_micros(usec / 2));
        Notifier {
            enabled,
            watchdog,
            ..Default::default()
        }
    }

    /// How often the event loop must ping (half of WatchdogSec), if at all.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    fn send(&self, states: &[NotifyState]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(false, states) {
            if !self.warned.replace(true) {
                tracing::warn!(
                    "sd_notify failed: {e} (systemd may not see READY or watchdog pings)"
                );
            }
        }
    }

    pub fn ready(&self, status: &str) {
        self.last_status.replace(status.to_string());
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// Send STATUS only when it changed.
    pub fn status(&self, status: &str) {
        if *self.last_status.borrow() != status {
            self.last_status.replace(status.to_string());
            self.send(&[NotifyState::Status(status)]);
        }
    }

    pub fn watchdog(&self) {
        if self.watchdog.is_some() {
            self.send(&[NotifyState::Watchdog]);
        }
    }

    pub fn reloading(&self) {
        self.send(&[NotifyState::Reloading]);
    }

    pub fn reloaded(&self) {
        self.send(&[NotifyState::Ready]);
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    /// A fake NOTIFY_SOCKET receives exactly what systemd would.
    #[test]
    fn sends_ready_status_watchdog_and_stopping() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let n = Notifier {
            enabled: true,
            watchdog: Some(Duration::from_secs(5)),
            ..Default::default()
        };
        // sd-notify reads the socket path from the environment at each call.
        std::env::set_var("NOTIFY_SOCKET", &path);
        let mut buf = [0u8; 512];
        let mut recv = || {
            let k = sock.recv(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..k]).into_owned()
        };
        n.ready("source ebpf, governed 0, healthy");
        assert_eq!(recv(), "READY=1\nSTATUS=source ebpf, governed 0, healthy\n");
        n.status("source ebpf, governed 0, healthy");
        n.status("source ebpf, governed 1, healthy");
        assert_eq!(
            recv(),
            "STATUS=source ebpf, governed 1, healthy\n",
            "unchanged STATUS is not resent"
        );
        n.watchdog();
        assert_eq!(recv(), "WATCHDOG=1\n");
        n.stopping();
        assert_eq!(recv(), "STOPPING=1\n");
        std::env::remove_var("NOTIFY_SOCKET");
    }

    #[test]
    fn outside_systemd_nothing_is_sent() {
        let n = Notifier::default();
        n.ready("x");
        n.watchdog();
        assert!(n.watchdog_interval().is_none());
    }
}
