//! The state file loader; what it accepts is written back the same on the next flush.
#![no_main]

use ffrtmp::record::state;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = state::parse(data) {
        let written = file.to_json();
        let again = state::parse(&written).expect("the daemon reads back what it wrote");
        assert_eq!(
            again.to_json(),
            written,
            "a second flush writes the same file"
        );
    }
});
