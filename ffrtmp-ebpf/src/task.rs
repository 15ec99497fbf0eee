//! What the event says about the exec'ing task beyond the helpers' comm, pid and uid: its
//! start time and parent (identity), its PID namespace depth (containers), and the two
//! other names a target can go by — the exe's basename (a symlink of another name points
//! at it) and argv[0]'s basename (`exec -a`). Each is read from `task_struct` at offsets
//! user space took from BTF; a group whose offsets are unknown is left empty and flagged.
//! No loop but the bounded scan of argv[0] for its last '/'.

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
/// Two reads: argv[0] into a 128-byte window, a scan of the window for the last '/', and
/// the basename read again from user memory into the key, starting one past that '/'. The
/// scan keeps one number, `base`, and never uses it to index the stack: it only becomes an
/// address for the second helper call and a length to compare, so the verifier does not
/// need to tell its values apart and walks the loop once per byte. (Building the key byte
/// by byte during the scan made the position in the key an index whose 16 values the
/// verifier explored separately: past its one-million-instruction limit on 5.10 and 6.1.)
#[inline(always)]
unsafe fn argv0_name(mm: Option<*const u8>, key: &mut Key) -> u32 {
    let Some(mm) = mm.filter(|_| offsets_valid(OFFSETS_ARGV0)) else {
        return EXEC_FLAG_ARGV0_FAILED;
    };
    let mut buf = [0u8; ARGV0_SCAN];
    // SAFETY (caller): checked reads.
    let Some(start) = (unsafe { read::<u64>(mm, offset(|o| &o.mm_arg_start)) }) else {
        return EXEC_FLAG_ARGV0_FAILED;
    };
    // SAFETY: the helper checks the user address and writes at most ARGV0_SCAN bytes.
    let n = unsafe {
        bpf_probe_read_user_str(
            buf.as_mut_ptr().cast(),
            ARGV0_SCAN as u32,
            start as *const core::ffi::c_void,
        )
    };
    if n <= 0 {
        return EXEC_FLAG_ARGV0_FAILED;
    }
    let mut base = 0u64;
    for (i, &c) in buf.iter().enumerate() {
        if c == b'/' {
            base = i as u64 + 1;
        }
    }
    // SAFETY: as above; at most COMM_LEN bytes, NUL-terminated, into the zeroed key.
    let r = unsafe {
        bpf_probe_read_user_str(
            key.0.as_mut_ptr().cast(),
            COMM_LEN as u32,
            (start + base) as *const core::ffi::c_void,
        )
    };
    if r <= 0 {
        key.clear();
        return EXEC_FLAG_ARGV0_FAILED;
    }
    // `n` counts the NUL; a full window may have cut argv[0] before its basename.
    let len = (n as u64 - 1).saturating_sub(base);
    if len > (COMM_LEN - 1) as u64 || n as usize == ARGV0_SCAN {
        return EXEC_FLAG_ARGV0_TRUNCATED;
    }
    0
}
