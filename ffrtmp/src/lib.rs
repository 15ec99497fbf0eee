//! ffrtmp: a Linux process governor. It finds processes it did not start and puts each into
//! its own cgroup with CPU, memory and pids limits the moment it appears.
//!
//! The pipeline is the architecture:
//! `sources` (exec events, /proc scan) → `matcher` (pure decision) → `placer` (cgroup
//! backends) → `record` (state file, health, logs), driven by `daemon`; `config` turns
//! files, environment and flags into validated settings; `cli` is the command line.

pub mod cli;
pub mod config;
pub mod daemon;
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
