//! The Go-style duration parser (SCAN_INTERVAL=30s, min_runtime: 1m30s); what it accepts
//! is printed back in a form it reads as the same duration.
#![no_main]

use ffrtmp::config::units::{format_go_duration, parse_go_duration};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = parse_go_duration(text) {
        let shown = format_go_duration(d);
        assert_eq!(
            parse_go_duration(&shown),
            Ok(d),
            "{text:?} -> {d:?} -> {shown:?}"
        );
    }
});
