//! Typed config values: Go-style durations and range-checked numbers.
//!
//! Each type checks its range while it is deserialized, so yaml_serde reports a bad value
//! with the key path and the line it is on.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Parse a duration the way the predecessor (Go's `time.ParseDuration`) did: one or more
/// `<number><unit>` groups, units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`, decimals allowed
/// (`1.5s`, `1h30m`, `500ms`). A lone `0` is zero. Negative durations are rejected. Exact,
/// in integer nanoseconds: a fraction finer than a nanosecond is cut off, as Go does.
pub fn parse_go_duration(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    if unsigned == "0" {
        return Ok(Duration::ZERO);
    }
    if s.starts_with('-') {
        return Err(format!("negative duration {input:?}"));
    }
    let s = unsigned;
    let not_a_duration = || format!("{input:?} is not a duration");
    let too_long = || format!("{input:?} is too long");
    let mut total_ns: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(not_a_duration());
        }
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale: u64 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("{input:?} has no unit")),
            other => return Err(format!("{input:?} has unknown unit {other:?}")),
        };
        let whole = digits_value(int).ok_or_else(too_long)?;
        // The fraction's significant digits past the 19th cannot reach a nanosecond of
        // even the largest unit; leading zeros only scale it down.
        let zeros = frac.len() - frac.trim_start_matches('0').len();
        let sig = &frac[zeros..frac.len().min(zeros + 19)];
        let places = (zeros + sig.len()) as u32;
        let part = if places > 38 {
            0
        } else {
            digits_value(sig).ok_or_else(too_long)? * u128::from(scale) / 10u128.pow(places)
        };
        let group = whole
            .checked_mul(u128::from(scale))
            .and_then(|w| w.checked_add(part))
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(too_long)?;
        total_ns = total_ns
            .checked_add(group)
            .filter(|&t| t <= i64::MAX as u64)
            .ok_or_else(too_long)?;
        rest = tail;
    }
    Ok(Duration::from_nanos(total_ns))
}

/// The value of a run of ASCII digits (0 when empty); `None` past `u64::MAX`.
fn digits_value(digits: &str) -> Option<u128> {
    digits.bytes().try_fold(0u128, |v, d| {
        let v = v * 10 + u128::from(d - b'0');
        (v <= u128::from(u64::MAX)).then_some(v)
    })
}

/// Format a duration in the Go style used by the predecessor's files and log lines
/// (Go's `Duration.String`): exact, so it reads back as the same duration.
pub fn format_go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", decimal(ns, 3));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", decimal(ns, 6));
    }
    let total_s = d.as_secs();
    let (h, m) = (total_s / 3600, (total_s / 60) % 60);
    let secs = decimal(ns % 60_000_000_000, 9);
    match (h, m) {
        (0, 0) => format!("{secs}s"),
        (0, m) => format!("{m}m{secs}s"),
        (h, m) => format!("{h}h{m}m{secs}s"),
    }
}

/// `v / 10^places` written out exactly, without trailing zeros (`1500, 3` → `1.5`).
fn decimal(v: u128, places: u32) -> String {
    let unit = 10u128.pow(places);
    let (whole, frac) = (v / unit, v % unit);
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:0width$}", width = places as usize);
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// Bounds for a duration-valued key.
pub trait DurationBounds {
    const MIN: Duration;
    const MAX: Duration;
}

/// A duration checked against `B`'s range while it is parsed.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct BoundedDuration<B>(pub Duration, PhantomData<B>);

impl<B> BoundedDuration<B> {
    pub fn new(d: Duration) -> Self {
        Self(d, PhantomData)
    }
}

impl<B: DurationBounds> BoundedDuration<B> {
    /// Parse and range-check a duration written as text (a file value, env var or flag).
    pub fn parse(text: &str) -> Result<Self, String> {
        let d = parse_go_duration(text)
            .map_err(|e| format!("{e}; write it like 10s, 500ms or 1m30s"))?;
        if d < B::MIN || d > B::MAX {
            return Err(format!(
                "{text:?} is out of range (accepted {} to {})",
                format_go_duration(B::MIN),
                format_go_duration(B::MAX)
            ));
        }
        Ok(Self::new(d))
    }
}

impl<B> fmt::Debug for BoundedDuration<B> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&format_go_duration(self.0))
    }
}

impl<B> Serialize for BoundedDuration<B> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_go_duration(self.0))
    }
}

impl<'de, B: DurationBounds> Deserialize<'de> for BoundedDuration<B> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<B>(PhantomData<B>);
        impl<B: DurationBounds> Visitor<'_> for V<B> {
            type Value = BoundedDuration<B>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(
                    f,
                    "a duration such as \"10s\" (accepted {} to {})",
                    format_go_duration(B::MIN),
                    format_go_duration(B::MAX)
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                BoundedDuration::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                if v == 0 {
                    return BoundedDuration::parse("0").map_err(E::custom);
                }
                Err(E::custom(format!(
                    "{v} has no unit; write it like \"{v}s\" or \"{v}ms\""
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Err(E::custom(format!("negative duration {v}")))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

macro_rules! duration_bounds {
    ($(#[$m:meta])* $name:ident, $min:expr, $max:expr) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
        pub struct $name;
        impl DurationBounds for $name {
            const MIN: Duration = $min;
            const MAX: Duration = $max;
        }
    };
}

duration_bounds!(
    /// `scan_interval`: 100ms to 1h.
    ScanIntervalRange, Duration::from_millis(100), Duration::from_secs(3600)
);
duration_bounds!(
    /// `state_flush_interval`: 1s to 1h.
    FlushIntervalRange, Duration::from_secs(1), Duration::from_secs(3600)
);
duration_bounds!(
    /// `reconcile_interval`: 1s to 24h.
    ReconcileIntervalRange, Duration::from_secs(1), Duration::from_secs(86400)
);
duration_bounds!(
    /// `min_runtime` / `max_runtime`: 0 to 30 days.
    RuntimeRange, Duration::ZERO, Duration::from_secs(30 * 86400)
);

duration_bounds!(
    /// `strict_timeout`: 100ms to 1m.
    StrictTimeoutRange, Duration::from_millis(100), Duration::from_secs(60)
);

duration_bounds!(
    /// `gate_timeout`: 10ms to 1s (a held exec waits at most this long).
    GateTimeoutRange, Duration::from_millis(10), Duration::from_secs(1)
);

pub type ScanInterval = BoundedDuration<ScanIntervalRange>;
pub type GateTimeout = BoundedDuration<GateTimeoutRange>;
pub type StrictTimeout = BoundedDuration<StrictTimeoutRange>;
pub type FlushInterval = BoundedDuration<FlushIntervalRange>;
pub type ReconcileInterval = BoundedDuration<ReconcileIntervalRange>;
pub type Runtime = BoundedDuration<RuntimeRange>;

/// An integer config value with an accepted range and a unit for messages.
pub trait IntBounds {
    const MIN: u64;
    const MAX: u64;
    /// What the number means, for messages ("percent of one core").
    const MEANING: &'static str;
    /// Whether `max` (no limit) is accepted.
    const ALLOWS_MAX: bool;
}

/// An integer checked against `B` while it is parsed; `Max` is the word `max`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Bounded<B> {
    Value(u64, PhantomData<B>),
    Max,
}

impl<B: IntBounds> Bounded<B> {
    pub fn value(v: u64) -> Self {
        Bounded::Value(v, PhantomData)
    }

    /// Check a number against the range.
    pub fn check(v: u64) -> Result<Self, String> {
        if v < B::MIN || v > B::MAX {
            return Err(format!(
                "{v} is out of range (accepted {}–{}, {})",
                B::MIN,
                B::MAX,
                B::MEANING
            ));
        }
        Ok(Self::value(v))
    }

    /// Parse text (env var or flag).
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t == "max" && B::ALLOWS_MAX {
            return Ok(Bounded::Max);
        }
        if let Some(stripped) = t.strip_prefix('-') {
            if stripped.chars().all(|c| c.is_ascii_digit()) && !stripped.is_empty() {
                return Err(format!(
                    "{t} is out of range (accepted {}–{}, {})",
                    B::MIN,
                    B::MAX,
                    B::MEANING
                ));
            }
        }
        match t.parse::<u64>() {
            Ok(v) => Self::check(v),
            Err(_) => Err(format!(
                "{t:?} is not a whole number (accepted {}–{}{}, {})",
                B::MIN,
                B::MAX,
                if B::ALLOWS_MAX { " or max" } else { "" },
                B::MEANING
            )),
        }
    }

    /// `None` for `max`.
    pub fn get(&self) -> Option<u64> {
        match self {
            Bounded::Value(v, _) => Some(*v),
            Bounded::Max => None,
        }
    }
}

impl<B> fmt::Debug for Bounded<B> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Bounded::Value(v, _) => write!(f, "{v}"),
            Bounded::Max => f.write_str("max"),
        }
    }
}

impl<B> Serialize for Bounded<B> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Bounded::Value(v, _) => s.serialize_u64(*v),
            Bounded::Max => s.serialize_str("max"),
        }
    }
}

impl<'de, B: IntBounds> Deserialize<'de> for Bounded<B> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<B>(PhantomData<B>);
        impl<B: IntBounds> Visitor<'_> for V<B> {
            type Value = Bounded<B>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(
                    f,
                    "a whole number {}–{}{} ({})",
                    B::MIN,
                    B::MAX,
                    if B::ALLOWS_MAX { " or max" } else { "" },
                    B::MEANING
                )
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Bounded::check(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                if v >= 0 {
                    return self.visit_u64(v as u64);
                }
                Err(E::custom(format!(
                    "{v} is out of range (accepted {}–{}, {})",
                    B::MIN,
                    B::MAX,
                    B::MEANING
                )))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Err(E::custom(format!(
                    "{v} is not a whole number (accepted {}–{}, {})",
                    B::MIN,
                    B::MAX,
                    B::MEANING
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Bounded::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

macro_rules! int_bounds {
    ($(#[$m:meta])* $name:ident, $min:expr, $max:expr, $meaning:expr, $allows_max:expr) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq)]
        pub struct $name;
        impl IntBounds for $name {
            const MIN: u64 = $min;
            const MAX: u64 = $max;
            const MEANING: &'static str = $meaning;
            const ALLOWS_MAX: bool = $allows_max;
        }
    };
}

int_bounds!(
    CpuQuotaRange,
    1,
    100_000,
    "percent of one core: 200 = 2 cores",
    true
);
int_bounds!(
    CpuWeightRange,
    1,
    10_000,
    "relative CPU weight, default 100",
    false
);
int_bounds!(MemoryRange, 1, 16 * 1024 * 1024, "MiB", true);
int_bounds!(PidsRange, 1, 4_194_304, "processes and threads", true);
int_bounds!(RetryRange, 0, 100, "attempts", false);

pub type CpuQuota = Bounded<CpuQuotaRange>;
pub type CpuWeight = Bounded<CpuWeightRange>;
pub type MemoryMib = Bounded<MemoryRange>;
pub type PidsMax = Bounded<PidsRange>;
pub type RetryAttempts = Bounded<RetryRange>;

/// Parse a string value inside the visitor, so yaml_serde reports errors with the key
/// path and line of the value.
pub struct TextVisitor<T>(pub fn(&str) -> Result<T, String>, pub &'static str);

impl<T> Visitor<'_> for TextVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.1)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.0)(v).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ok = [
            ("10s", Duration::from_secs(10)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("500ms", Duration::from_millis(500)),
            ("1.5s", Duration::from_millis(1500)),
            ("1h30m", Duration::from_secs(5400)),
            ("2m3s", Duration::from_secs(123)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("7ns", Duration::from_nanos(7)),
            (" 5s ", Duration::from_secs(5)),
            ("+3s", Duration::from_secs(3)),
            (".5s", Duration::from_millis(500)),
        ];
        for (text, want) in ok {
            assert_eq!(parse_go_duration(text), Ok(want), "{text}");
        }
        for bad in ["", "10", "s", "10x", "-5s", "1..5s", "abc", "5 s", "1d"] {
            assert!(parse_go_duration(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn go_duration_formatting_round_trips() {
        for text in ["10s", "500ms", "1m30s", "2h0m0s", "1.5s", "250µs", "0s"] {
            let d = parse_go_duration(text).unwrap();
            assert_eq!(
                parse_go_duration(&format_go_duration(d)).unwrap(),
                d,
                "{text}"
            );
        }
        assert_eq!(format_go_duration(Duration::from_micros(15_200)), "15.2ms");
        assert_eq!(format_go_duration(Duration::from_secs(90)), "1m30s");
    }

    /// Found by the duration fuzz target: formatting kept 3 decimals, so a logged or
    /// rendered value read back as another duration.
    #[test]
    fn go_durations_are_exact() {
        let d = parse_go_duration("12501.12425s").unwrap();
        assert_eq!(d, Duration::from_nanos(12_501_124_250_000));
        assert_eq!(format_go_duration(d), "3h28m21.12425s");
        assert_eq!(
            format_go_duration(Duration::from_nanos(1_234_567)),
            "1.234567ms"
        );
        assert_eq!(format_go_duration(Duration::from_nanos(1_001)), "1.001µs");
        // Go cuts a fraction finer than a nanosecond off.
        assert_eq!(parse_go_duration("1.5ns"), Ok(Duration::from_nanos(1)));
        assert_eq!(
            parse_go_duration("1.0000000001s"),
            Ok(Duration::from_secs(1))
        );
        // Go's range: up to 2^63-1 ns.
        assert_eq!(
            parse_go_duration("9223372036.854775807s"),
            Ok(Duration::from_nanos(i64::MAX as u64))
        );
        assert!(parse_go_duration("9223372036.854775808s")
            .unwrap_err()
            .contains("too long"));
        assert_eq!(
            parse_go_duration("0.00000000000027777778h"),
            Ok(Duration::from_nanos(1))
        );
        assert_eq!(parse_go_duration("-0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("+0"), Ok(Duration::ZERO));
        assert!(parse_go_duration("99999999999999999999999h")
            .unwrap_err()
            .contains("too long"));
    }

    #[test]
    fn bounded_ints() {
        assert_eq!(CpuWeight::parse("100").unwrap().get(), Some(100));
        assert!(CpuWeight::parse("0")
            .unwrap_err()
            .contains("accepted 1–10000"));
        assert!(CpuWeight::parse("10001").is_err());
        assert!(CpuWeight::parse("max").is_err(), "weight has no max");
        assert_eq!(CpuQuota::parse("max").unwrap().get(), None);
        assert!(CpuQuota::parse("-5").unwrap_err().contains("out of range"));
        assert!(MemoryMib::parse("0").is_err());
        assert!(MemoryMib::parse("4GB")
            .unwrap_err()
            .contains("not a whole number"));
        assert_eq!(RetryAttempts::parse("0").unwrap().get(), Some(0));
    }

    #[test]
    fn bounded_durations() {
        assert!(ScanInterval::parse("10s").is_ok());
        assert!(ScanInterval::parse("0s")
            .unwrap_err()
            .contains("out of range"));
        assert!(ScanInterval::parse("2h")
            .unwrap_err()
            .contains("accepted 100ms to 1h"));
        assert!(Runtime::parse("0").is_ok());
    }
}
