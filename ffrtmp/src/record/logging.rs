//! Log output. On a terminal (or a file): `[watch] message` lines as the predecessor printed
//! them (operators grep for those), with a timestamp. When stderr is the journal (systemd
//! sets JOURNAL_STREAM to its device and inode): native journald entries with structured
//! fields (`FFRTMP_PID`, `FFRTMP_JOB`, `FFRTMP_COMMAND`, `FFRTMP_LATENCY_US`, …). The level
//! can be changed at reload.

use tracing::{Event, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{reload, Registry};

struct TaggedFormat {
    tag: &'static str,
    timestamps: bool,
}

impl<S, N> FormatEvent<S, N> for TaggedFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        if self.timestamps {
            write!(
                w,
                "{} ",
                chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ")
            )?;
        }
        write!(w, "{:>5} [{}] ", event.metadata().level(), self.tag)?;
        // Only the message: structured fields (pid, job, …) repeat what the message says.
        let mut msg = MessageOnly(String::new());
        event.record(&mut msg);
        writeln!(w, "{}", msg.0)
    }
}

struct MessageOnly(String);

impl tracing::field::Visit for MessageOnly {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        }
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            use std::fmt::Write;
            let _ = write!(self.0, "{value:?}");
        }
    }
}

/// Changes the level of an installed logger (`default()`: none installed, a no-op).
#[derive(Clone, Default)]
pub struct LogControl(Option<reload::Handle<LevelFilter, Registry>>);

impl LogControl {
    pub fn set_level(&self, level: tracing::Level) {
        if let Some(h) = &self.0 {
            let _ = h.modify(|f| *f = LevelFilter::from_level(level));
        }
    }
}

/// Whether stderr is connected to the journal (JOURNAL_STREAM names its device:inode).
pub fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(st) = rustix::fs::fstat(std::io::stderr()) else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(st.st_dev) && ino.parse::<u64>().ok() == Some(st.st_ino)
}

/// Install the logger for `tag` (`watch`, `run`, …). `unit`: the systemd service to file
/// journal entries under (OBJECT_SYSTEMD_UNIT) when the daemon runs outside that service's
/// cgroup. A second call (tests) is a no-op.
pub fn init(level: tracing::Level, tag: &'static str, unit: Option<String>) -> LogControl {
    let (filter, handle) = reload::Layer::new(LevelFilter::from_level(level));
    let journal = stderr_is_journal()
        .then(|| tracing_journald::layer().ok())
        .flatten()
        .map(|l| {
            let l = l
                .with_field_prefix(Some("FFRTMP".into()))
                .with_syslog_identifier(format!("ffrtmp-{tag}"));
            match unit {
                Some(u) => l.with_custom_fields([("OBJECT_SYSTEMD_UNIT", u)]),
                None => l,
            }
        });
    let fmt = journal.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .event_format(TaggedFormat {
                tag,
                timestamps: true,
            })
    });
    match tracing_subscriber::registry()
        .with(filter)
        .with(journal)
        .with(fmt)
        .try_init()
    {
        Ok(()) => LogControl(Some(handle)),
        Err(_) => LogControl(None),
    }
}
