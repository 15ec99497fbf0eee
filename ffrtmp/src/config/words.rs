//! Settings whose value is one of a few words (`placement: strict`, `services: move`): one
//! table per setting gives its parsing (file, environment and flag alike), its display and
//! its errors, which list the words accepted.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Visitor};

/// A setting read as one of a few words.
pub trait Words: Sized + Copy + PartialEq + 'static {
    /// The setting, as errors name it: "a placement mode".
    const SETTING: &'static str;
    /// Each value with its word, in the order errors list them.
    const WORDS: &'static [(Self, &'static str)];
    /// Whether "Strict" reads as "strict".
    const ANY_CASE: bool = false;

    /// The value a word names, or an error that lists the words accepted.
    fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let t = if Self::ANY_CASE {
            t.to_ascii_lowercase()
        } else {
            t.to_string()
        };
        match Self::WORDS.iter().find(|(_, w)| *w == t) {
            Some((v, _)) => Ok(*v),
            None => Err(format!(
                "{t:?} is not {} (accepted: {})",
                Self::SETTING,
                Self::list(", ")
            )),
        }
    }

    /// The word for this value.
    fn word(self) -> &'static str {
        Self::WORDS
            .iter()
            .find(|(v, _)| *v == self)
            .map_or("?", |(_, w)| w)
    }

    /// The words joined by `sep`.
    fn list(sep: &str) -> String {
        let words: Vec<&str> = Self::WORDS.iter().map(|(_, w)| *w).collect();
        words.join(sep)
    }
}

/// Reads a `Words` setting from a string (serde).
pub struct WordsVisitor<T>(pub PhantomData<T>);

impl<T: Words> Visitor<'_> for WordsVisitor<T> {
    type Value = T;
    /// "auto, on or off".
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match T::WORDS.split_last() {
            Some(((_, last), rest)) if !rest.is_empty() => {
                let rest: Vec<&str> = rest.iter().map(|(_, w)| *w).collect();
                write!(f, "{} or {last}", rest.join(", "))
            }
            _ => f.write_str(&T::list(", ")),
        }
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        T::parse(v).map_err(E::custom)
    }
}

/// A `Words` setting from its table, with its `Display`, `Serialize` and `Deserialize`
/// (each the setting's word):
/// `words_setting!(Placement, "a placement mode", any_case, [Normal = "normal", ...]);`
macro_rules! words_setting {
    ($t:ident, $setting:literal, $($any_case:ident,)? [$($v:ident = $w:literal),+ $(,)?]) => {
        impl $crate::config::words::Words for $t {
            const SETTING: &'static str = $setting;
            const WORDS: &'static [(Self, &'static str)] = &[$(($t::$v, $w)),+];
            $(const ANY_CASE: bool = $crate::config::words::words_setting!(@$any_case);)?
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str($crate::config::words::Words::word(*self))
            }
        }
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str($crate::config::words::Words::word(*self))
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str($crate::config::words::WordsVisitor::<$t>(std::marker::PhantomData))
            }
        }
    };
    (@any_case) => { true };
}
pub(crate) use words_setting;

#[cfg(test)]
mod tests {
    use super::Words;
    use crate::config::raw::{InlinePlacement, JobMetrics, Placement};
    use crate::config::services::Services;

    #[test]
    fn words_parse_display_and_say_what_is_accepted() {
        assert_eq!(Placement::parse(" Strict "), Ok(Placement::Strict));
        assert_eq!(InlinePlacement::parse("OFF"), Ok(InlinePlacement::Off));
        assert_eq!(JobMetrics::parse("per_command"), Ok(JobMetrics::PerCommand));
        // Only the settings that always took any case do.
        assert_eq!(
            Services::parse("Move"),
            Err("\"Move\" is not a services mode (accepted: limit_unit, move)".into())
        );
        assert_eq!(
            InlinePlacement::parse("maybe"),
            Err("\"maybe\" is not an inline_placement mode (accepted: auto, on, off)".into())
        );
        assert_eq!(JobMetrics::PerJob.to_string(), "per_job");
        assert_eq!(Services::LimitUnit.to_string(), "limit_unit");
        assert_eq!(
            serde_json::to_string(&[InlinePlacement::Auto, InlinePlacement::Off]).unwrap(),
            r#"["auto","off"]"#
        );
        let read: Vec<Placement> = yaml_serde::from_str("[normal, STRICT]").unwrap();
        assert_eq!(read, [Placement::Normal, Placement::Strict]);
        let e = yaml_serde::from_str::<InlinePlacement>("[on]").unwrap_err();
        assert!(e.to_string().contains("expected auto, on or off"), "{e}");
    }
}
