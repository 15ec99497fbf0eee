//! Thread priorities: the placement thread runs SCHED_FIFO at priority 1 (the lowest
//! real-time priority), everything else `SCHED_BATCH`, nicer than the process.
//!
//! Why batch for the rest: the record loop and the chores wake after every placement (its
//! message, the refill, the exit) and an ordinary thread that wakes may preempt the task
//! running on that CPU, a transcoder that has just started; a batch thread never preempts
//! on waking, it runs when the running task's slice ends, with the same share of CPU. In
//! `bench-exec compare` (five runs each way, interleaved with cgrulesengd) the p90 from
//! outside went from 0.86–1.16× cgrulesengd's to 0.81–0.96× (docs/benchmarks.md).
//!
//! Why real-time: the kernel wakes the placement thread from the exec'ing process's CPU,
//! and the fair scheduler lets the running task finish its slice first (0.75 ms by
//! default): measured here, exec → the event taken p50 0.04 ms but p90 0.75 ms at nice -10,
//! p90 0.03 ms at SCHED_FIFO 1 (docs/benchmarks.md). The thread sleeps between events and
//! does bounded work per event; the kernel's real-time throttling (95 % of each second)
//! keeps it from starving a CPU should it ever spin.
//!
//! The unit asks for it (`CPUSchedulingPolicy=fifo`, `CPUSchedulingPriority=1`: the whole
//! process starts real-time and every other thread steps down); started by hand as root,
//! the placement thread asks for it itself. Without it (no CAP_SYS_NICE, RLIMIT_RTPRIO 0,
//! a container) placement runs as an ordinary thread and the start-up log says what it
//! costs.

/// How much nicer than the process the record loop and housekeeping run.
pub const HOUSEKEEPING_NICE: i32 = 10;

fn tid() -> libc::pid_t {
    rustix::thread::gettid().as_raw_nonzero().get()
}

/// The calling thread's policy.
fn policy() -> i32 {
    // SAFETY: sched_getscheduler on this thread.
    unsafe { libc::sched_getscheduler(tid()) }
}

/// Make the calling thread (the placement thread) SCHED_FIFO 1 unless it already runs at
/// a real-time policy. `Ok(true)`: it runs real-time now.
pub fn placement_realtime() -> Result<bool, String> {
    if matches!(policy(), libc::SCHED_FIFO | libc::SCHED_RR) {
        return Ok(true);
    }
    let p = libc::sched_param { sched_priority: 1 };
    // SAFETY: sched_setscheduler on this thread with a valid param.
    if unsafe { libc::sched_setscheduler(tid(), libc::SCHED_FIFO, &p) } != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok(true)
}

/// The calling thread steps down to `SCHED_BATCH`, `HOUSEKEEPING_NICE` nicer than it
/// was (never above 19). Threads made from it later inherit that; threads made before
/// keep theirs. The kernel always allows giving up priority, but a seccomp filter may not
/// (systemd's `@resources` group holds both calls): the error says which call failed.
pub fn housekeeping() -> Result<(), String> {
    let tid = tid();
    // SAFETY: scheduling calls on this thread; errno is cleared before getpriority
    // because -1 is a valid nice value.
    unsafe {
        let p = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(tid, libc::SCHED_BATCH, &p) != 0 {
            return Err(format!(
                "sched_setscheduler(SCHED_BATCH): {}",
                std::io::Error::last_os_error()
            ));
        }
        *libc::__errno_location() = 0;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
        if now == -1 && *libc::__errno_location() != 0 {
            return Err(format!("getpriority: {}", std::io::Error::last_os_error()));
        }
        if libc::setpriority(
            libc::PRIO_PROCESS,
            tid as libc::id_t,
            (now + HOUSEKEEPING_NICE).min(19),
        ) != 0
        {
            return Err(format!("setpriority: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}
