//! Log output: `[watch] message key=value` lines as the predecessor printed them (operators
//! grep for those), with a timestamp on a terminal and without one under journald, which
//! stamps lines itself. The level can be changed at reload.

use std::io::IsTerminal;

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

/// Changes the level of an installed logger.
#[derive(Clone)]
pub struct LogControl(Option<reload::Handle<LevelFilter, Registry>>);

impl LogControl {
    pub fn set_level(&self, level: tracing::Level) {
        if let Some(h) = &self.0 {
            let _ = h.modify(|f| *f = LevelFilter::from_level(level));
        }
    }
}

/// Install the logger for `tag` (`watch`, `run`, …). A second call (tests) is a no-op.
pub fn init(level: tracing::Level, tag: &'static str) -> LogControl {
    let (filter, handle) = reload::Layer::new(LevelFilter::from_level(level));
    let timestamps =
        std::env::var_os("JOURNAL_STREAM").is_none() || std::io::stderr().is_terminal();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .event_format(TaggedFormat { tag, timestamps });
    match tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
    {
        Ok(()) => LogControl(Some(handle)),
        Err(_) => LogControl(None),
    }
}
