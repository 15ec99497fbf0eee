//! The ring buffer's exec record, as the reader thread decodes it and turns it into a notice.
#![no_main]

use ffrtmp::sources::ebpf::reader::notice_of;
use ffrtmp_common::user::decode_exec_event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = decode_exec_event(data) {
        let again = decode_exec_event(&ev.to_bytes()).expect("an encoded record decodes");
        assert_eq!(again.to_bytes(), ev.to_bytes());
        let _ = notice_of(&ev, None);
    }
});
