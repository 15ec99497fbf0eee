//! The record stage: what happened is written down — state file, health, logs, metrics
//! (served on `/metrics` and `/healthz`).

pub mod health;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod state;
pub mod systemd;
