//! The BTF reader: the kernel's type information, from which the agent takes the offsets
//! its eBPF program reads.
#![no_main]

use ffrtmp::sources::ebpf::btf::kernel_offsets;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kernel_offsets(data);
});
