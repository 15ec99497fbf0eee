//! The /proc parsers: the first byte picks stat, status, cgroup, cmdline or mountinfo.
#![no_main]

use ffrtmp::process::{parse_argv0, parse_cgroup_file, parse_stat, parse_status};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 5 {
        0 => {
            let _ = parse_stat(body);
        }
        1 => {
            if let Ok(text) = std::str::from_utf8(body) {
                let _ = parse_status(text);
            }
        }
        2 => {
            if let Ok(text) = std::str::from_utf8(body) {
                let _ = parse_cgroup_file(text);
            }
        }
        3 => {
            let _ = parse_argv0(body);
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(body) {
                let _ = ffrtmp::placer::v2::super_options(text, "/sys/fs/cgroup");
            }
        }
    }
});
