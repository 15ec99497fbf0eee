//! `services`, `commands.<name>.services` and `service_slices`: what happens to a target
//! that runs in a systemd service (docs/configuration.md).

use serde::de::{Deserialize, Deserializer};

use super::units::TextVisitor;
use super::words::words_setting;

/// What happens to a target that runs in a systemd service (docs/configuration.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Services {
    /// Left in its unit; its limits go onto the unit through systemd (D-Bus), so
    /// `systemctl stop` still ends all of the service.
    #[default]
    LimitUnit,
    /// Moved into a job cgroup of its own, out of its unit.
    Move,
}

words_setting!(
    Services,
    "a services mode",
    [LimitUnit = "limit_unit", Move = "move"]
);

/// A systemd slice's name (`streams.slice`, `system-streams.slice`).
#[derive(Debug, Clone, PartialEq)]
pub struct SliceName(pub String);

impl SliceName {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let ok = t.len() > ".slice".len()
            && t.ends_with(".slice")
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.@:\\".contains(c));
        if !ok {
            return Err(format!(
                "{t:?} is not a slice name such as streams.slice (a unit name ending in .slice, no '/')"
            ));
        }
        Ok(SliceName(t.to_string()))
    }
}

impl<'de> Deserialize<'de> for SliceName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(TextVisitor(
            SliceName::parse,
            "a slice name such as streams.slice",
        ))
    }
}

/// `service_slices`, after `system.slice` (always there).
pub(super) fn service_slices(listed: Option<&Vec<SliceName>>) -> Vec<String> {
    let mut slices = vec!["system.slice".to_string()];
    for s in listed.into_iter().flatten() {
        if !slices.contains(&s.0) {
            slices.push(s.0.clone());
        }
    }
    slices
}
