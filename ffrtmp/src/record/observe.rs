//! Asking the record loop what it knows: `/metrics`, `/healthz` and tests send a `Query`
//! and get a `Snapshot` back, which the loop makes between its other messages. Nothing is
//! shared with it, so no lock: a slow scrape holds nothing the daemon needs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::metrics::Snapshot;

/// One request for a snapshot.
pub struct Query(oneshot::Sender<Arc<Snapshot>>);

impl Query {
    pub fn answer(self, s: Arc<Snapshot>) {
        // The asker may have given up (a scrape's deadline): nothing to do.
        let _ = self.0.send(s);
    }
}

/// A handle that asks the record loop for snapshots.
#[derive(Clone)]
pub struct Observer(mpsc::Sender<Query>);

/// Queries waiting at once; more make the asker wait (`/metrics` is asked rarely).
const QUERIES: usize = 64;

/// An observer and the end the record loop answers.
pub fn channel() -> (Observer, mpsc::Receiver<Query>) {
    let (tx, rx) = mpsc::channel(QUERIES);
    (Observer(tx), rx)
}

impl Observer {
    /// The record loop's snapshot; `None` once it is gone.
    pub async fn snapshot(&self) -> Option<Arc<Snapshot>> {
        let (tx, rx) = oneshot::channel();
        self.0.send(Query(tx)).await.ok()?;
        rx.await.ok()
    }

    /// From a thread outside the runtime (tests): the snapshot, if the record loop answers
    /// within `timeout`.
    pub fn snapshot_within(&self, timeout: Duration) -> Option<Arc<Snapshot>> {
        let (tx, mut rx) = oneshot::channel();
        self.0.try_send(Query(tx)).ok()?;
        let deadline = Instant::now() + timeout;
        loop {
            match rx.try_recv() {
                Ok(s) => return Some(s),
                Err(oneshot::error::TryRecvError::Closed) => return None,
                Err(oneshot::error::TryRecvError::Empty) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Err(oneshot::error::TryRecvError::Empty) => return None,
            }
        }
    }
}
