//! ffrtmp: a Linux process governor. It finds processes it did not start and puts each into
//! its own cgroup with CPU, memory and pids limits the moment it appears.
//!
//! The pipeline is the architecture, and its threads are too (docs/architecture.md):
//! `sources` (the eBPF ring reader thread, the /proc scan) → `engine` (the placement
//! thread: `matcher`'s pure decision, `placer`'s cgroup backends, the one table of
//! governed processes) → `record` (state file, health, logs, metrics), run by `daemon`'s
//! record loop; `config` turns files, environment and flags into validated settings;
//! `process` is what is read about a process (and the `Stopped` value); `cli` is the
//! command line.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod durable;
pub mod engine;
pub mod exec;
pub mod job;
pub mod matcher;
pub mod placer;
pub mod process;
pub mod record;
pub mod sources;

/// Helpers for the unit tests that start real processes.
#[cfg(test)]
pub(crate) mod testutil {
    use std::process::{Child, Command};
    use std::time::Duration;

    /// Spawn, retrying ETXTBSY: a binary a test just copied can still be open for writing
    /// in a child another test thread forked meanwhile (the fd lives until that exec).
    pub fn spawn(cmd: &mut Command) -> Child {
        for _ in 0..100 {
            match cmd.spawn() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                r => return r.unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program())),
            }
        }
        panic!("spawn {:?}: text file busy for a second", cmd.get_program())
    }
}
