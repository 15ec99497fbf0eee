//! What the event says about the exec'ing task beyond the helpers' comm, pid and uid: its
//! start time and parent (identity), its PID namespace depth (containers), and the two
//! other names a target can go by — the exe's basename (a symlink of another name points
//! at it) and argv[0]'s basename (`exec -a`). Each is read from `task_struct` at offsets
//! user space took from BTF; a group whose offsets are unknown is left empty and flagged.
//! No loop but the bounded basename scan of argv[0].

use aya_ebpf::helpers::{
    bpf_probe_read_kernel,
    generated::{bpf_get_current_task, bpf_probe_read_kernel_str, bpf_probe_read_user_str},
};
use ffrtmp_common::{
    TargetKey, ARGV0_SCAN, COMM_LEN, EXEC_FLAG_ARGV0_FAILED, EXEC_FLAG_ARGV0_TRUNCATED,
    EXEC_FLAG_EXE_FAILED, EXEC_FLAG_EXE_TRUNCATED, EXEC_FLAG_TASK_FAILED, OFFSETS_ARGV0,
    OFFSETS_EXE, OFFSETS_IDENTITY, OFFSETS_PIDNS,
};

use crate::maps::{offset, offsets_valid};

/// A name key on an 8-byte boundary, zeroed before any helper writes into it: helpers
/// that copy strings stop at the NUL and do not promise to pad (see `forward::Comm`).
#[repr(C, align(8))]
pub struct Key(pub TargetKey);

impl Key {
    #[inline(always)]
    pub fn zeroed() -> Key {
        let mut k = core::mem::MaybeUninit::<Key>::uninit();
        // SAFETY: Key is 16 bytes, 8-byte aligned: two u64 stores initialise all of it.
        unsafe {
            zero(k.as_mut_ptr());
            k.assume_init()
        }
    }

    /// Back to all zero (a '/' in argv[0] restarts the basename).
    #[inline(always)]
    pub fn clear(&mut self) {
        // SAFETY: as above, on an initialised Key.
        unsafe { zero(self) }
    }
}

/// Two volatile 8-byte stores. A plain `[0u8; 16]` becomes a call to a byte-loop `memset`
/// subprogram, which the verifier walks again at every call (once per '/' of argv[0]).
#[inline(always)]
unsafe fn zero(k: *mut Key) {
    let w = k as *mut u64;
    // SAFETY (caller): `k` points at a writable, 8-byte aligned Key.
    unsafe {
        w.write_volatile(0);
        w.add(1).write_volatile(0);
    }
}

/// The facts, with `EXEC_FLAG_*` bits for what could not be read.
pub struct TaskFacts {
    pub start_ns: u64,
    pub ppid: u32,
    pub pidns_level: u32,
    pub exe: Key,
    pub argv0: Key,
    pub flags: u32,
}

#[inline(always)]
unsafe fn read<T>(base: *const u8, off: usize) -> Option<T> {
    // SAFETY (caller): `base` is a kernel pointer; the helper checks the address.
    unsafe { bpf_probe_read_kernel(base.add(off) as *const T) }.ok()
}

#[inline(always)]
pub fn current() -> TaskFacts {
    // SAFETY: plain helper call; the result is only used through checked reads.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let mut f = TaskFacts {
        start_ns: 0,
        ppid: 0,
        pidns_level: u32::MAX,
        exe: Key::zeroed(),
        argv0: Key::zeroed(),
        flags: 0,
    };
    // SAFETY: every read below goes through bpf_probe_read_kernel (checked).
    unsafe {
        match identity(task) {
            Some((start, ppid)) => {
                f.start_ns = start;
                f.ppid = ppid;
            }
            None => f.flags |= EXEC_FLAG_TASK_FAILED,
        }
        if offsets_valid(OFFSETS_PIDNS) {
            if let Some(pid) = read::<*const u8>(task, offset(|o| &o.task_thread_pid)) {
                if let Some(level) = read::<u32>(pid, offset(|o| &o.pid_level)) {
                    f.pidns_level = level;
                }
            }
        }
        let mm = read::<*const u8>(task, offset(|o| &o.task_mm));
        f.flags |= exe_name(mm, &mut f.exe);
        f.flags |= argv0_name(mm, &mut f.argv0);
    }
    f
}

#[inline(always)]
unsafe fn identity(task: *const u8) -> Option<(u64, u32)> {
    if !offsets_valid(OFFSETS_IDENTITY) {
        return None;
    }
    // SAFETY (caller): checked reads.
    unsafe {
        let start = read::<u64>(task, offset(|o| &o.task_start_boottime))?;
        let parent = read::<*const u8>(task, offset(|o| &o.task_real_parent))?;
        let ppid = read::<i32>(parent, offset(|o| &o.task_tgid))?;
        Some((start, ppid as u32))
    }
}

/// `mm->exe_file->f_path.dentry->d_name.name`, first 15 bytes.
#[inline(always)]
unsafe fn exe_name(mm: Option<*const u8>, key: &mut Key) -> u32 {
    let Some(mm) = mm.filter(|_| offsets_valid(OFFSETS_EXE)) else {
        return EXEC_FLAG_EXE_FAILED;
    };
    // SAFETY (caller): checked reads.
    unsafe {
        let Some(file) = read::<*const u8>(mm, offset(|o| &o.mm_exe_file)) else {
            return EXEC_FLAG_EXE_FAILED;
        };
        let Some(dentry) = read::<*const u8>(file, offset(|o| &o.file_dentry)) else {
            return EXEC_FLAG_EXE_FAILED;
        };
        let Some(name) = read::<*const u8>(dentry, offset(|o| &o.dentry_name)) else {
            return EXEC_FLAG_EXE_FAILED;
        };
        let n = bpf_probe_read_kernel_str(key.0.as_mut_ptr().cast(), COMM_LEN as u32, name.cast());
        if n <= 0 {
            return EXEC_FLAG_EXE_FAILED;
        }
        if n as usize == COMM_LEN {
            // 15 bytes and the NUL were copied: is there more?
            if read::<u8>(name, COMM_LEN - 1).unwrap_or(0) != 0 {
                return EXEC_FLAG_EXE_TRUNCATED;
            }
        }
    }
    0
}

/// The basename of argv[0] (read from the new program's stack, `mm->arg_start`), first
/// 15 bytes.
///
/// The scan is a small state machine over a fixed 128-byte window, not a search for the
/// last '/': the verifier follows every path through a loop, and a "last slash" index
/// that can take any of 128 values multiplies its paths past its limit (measured: one
/// million instructions on 6.18). Here the only state is the position in the key (16
/// values) and the truncation bit: a '/' restarts the key, any other byte is appended
/// while there is room. Bytes after the NUL are the zeros the buffer was filled with.
#[inline(always)]
unsafe fn argv0_name(mm: Option<*const u8>, key: &mut Key) -> u32 {
    let Some(mm) = mm.filter(|_| offsets_valid(OFFSETS_ARGV0)) else {
        return EXEC_FLAG_ARGV0_FAILED;
    };
    let mut buf = [0u8; ARGV0_SCAN];
    // SAFETY (caller): checked reads.
    let n = unsafe {
        let Some(start) = read::<u64>(mm, offset(|o| &o.mm_arg_start)) else {
            return EXEC_FLAG_ARGV0_FAILED;
        };
        bpf_probe_read_user_str(
            buf.as_mut_ptr().cast(),
            ARGV0_SCAN as u32,
            start as *const core::ffi::c_void,
        )
    };
    if n <= 0 {
        return EXEC_FLAG_ARGV0_FAILED;
    }
    // `cut` is the flag itself, never branched on after the loop: the verifier can then
    // treat the paths out of the loop as one (it only tells apart values that decide a
    // branch or an offset, and `pos` is dead by then).
    let mut pos = 0usize;
    let mut cut = 0u32;
    for &c in buf.iter() {
        if c == b'/' {
            key.clear();
            pos = 0;
            cut = 0;
        } else if pos < COMM_LEN - 1 {
            key.0[pos] = c;
            pos += 1;
        } else if c != 0 {
            cut = EXEC_FLAG_ARGV0_TRUNCATED;
        }
    }
    // `n` counts the NUL: a full window may have cut argv[0] before its basename.
    let window = ((n as u32) >> 7) & 1; // n == ARGV0_SCAN (128)
    cut | (window * EXEC_FLAG_ARGV0_TRUNCATED)
}
