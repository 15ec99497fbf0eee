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
