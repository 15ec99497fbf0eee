//! The record stage: what happened is written down — state file, health, logs.

pub mod health;
pub mod logging;
pub mod state;
