//! The record stage: what happened is written down — the governed jobs (`jobs`), the
//! counters (`tally`), health, the state file, logs, metrics (served on `/metrics` and
//! `/healthz` from a `Snapshot` the record loop hands out: `observe`).

pub mod exposition;
pub mod health;
pub mod http;
pub mod jobs;
pub mod logging;
pub mod metrics;
pub mod observe;
pub mod pool_metrics;
pub mod state;
pub mod systemd;
pub mod tally;
