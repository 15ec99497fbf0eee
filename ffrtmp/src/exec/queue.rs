//! The engine's two inbound queues (hot: exec notices from sources other than the ring;
//! work: everything else) and the eventfd that wakes its poll(2).
//!
//! Each queue is bounded by a count, not by a preallocated array: a bounded crossbeam
//! channel allocates and touches every slot up front (1.4 MiB resident for the work
//! queue's 16 384 `Work`s, idle or not), while the list flavour allocates a block of 31
//! slots as messages arrive and frees it once they are taken. A full queue still makes a
//! blocking writer wait and a `try_send` fail, as before.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::TryRecvError;

/// Wakes the engine from its poll(2): an eventfd queue writers signal (all but a lazy send).
#[derive(Clone)]
pub struct Waker(Arc<OwnedFd>);

impl Waker {
    pub fn new() -> std::io::Result<Waker> {
        use rustix::event::{eventfd, EventfdFlags};
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        Ok(Waker(Arc::new(fd)))
    }

    fn wake(&self) {
        // EAGAIN only at a counter of 2^64-2: the engine is awake anyway.
        let _ = rustix::io::write(&*self.0, &1u64.to_ne_bytes());
    }

    pub fn clear(&self) {
        let mut v = [0u8; 8];
        let _ = rustix::io::read(&*self.0, &mut v);
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// What the writers and the reader of one queue share: how many messages are in it.
struct Fill {
    len: AtomicUsize,
    capacity: usize,
    /// The reader is gone: a waiting writer gives up.
    closed: AtomicBool,
}

/// A writer of one of the engine's queues: bounded, and it wakes the engine (unless it
/// sends lazily).
pub struct Sender<T> {
    tx: crossbeam_channel::Sender<T>,
    fill: Arc<Fill>,
    waker: Waker,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            tx: self.tx.clone(),
            fill: self.fill.clone(),
            waker: self.waker.clone(),
        }
    }
}

/// How long a writer waiting on a full queue sleeps between looks.
const FULL_WAIT: Duration = Duration::from_micros(200);

impl<T> Sender<T> {
    /// Wait while the queue is full. `Err` when the engine is gone.
    pub fn send(&self, mut v: T) -> Result<(), T> {
        loop {
            match self.try_send(v) {
                Ok(()) => return Ok(()),
                Err(back) if self.fill.closed.load(Ordering::Acquire) => return Err(back),
                Err(back) => {
                    v = back;
                    std::thread::sleep(FULL_WAIT);
                }
            }
        }
    }

    /// Without waiting: `Err` when the queue is full or the engine is gone.
    pub fn try_send(&self, v: T) -> Result<(), T> {
        self.enqueue(v)?;
        self.waker.wake();
        Ok(())
    }

    /// As `try_send`, but without waking the engine: it takes the message at its next
    /// turn (an exec, other work, a timer, or its heartbeat at least once a second). For
    /// news that changes no decision until then, so that it costs no wakeup of the
    /// real-time thread, which would preempt whatever runs on its CPU.
    pub fn try_send_lazy(&self, v: T) -> Result<(), T> {
        self.enqueue(v)
    }

    fn enqueue(&self, v: T) -> Result<(), T> {
        let fill = &self.fill;
        if fill.closed.load(Ordering::Acquire) {
            return Err(v);
        }
        if fill.len.fetch_add(1, Ordering::AcqRel) >= fill.capacity {
            fill.len.fetch_sub(1, Ordering::AcqRel);
            return Err(v);
        }
        if let Err(e) = self.tx.send(v) {
            fill.len.fetch_sub(1, Ordering::AcqRel);
            return Err(e.into_inner());
        }
        Ok(())
    }
}

/// The engine's end of one queue.
pub struct Receiver<T> {
    rx: crossbeam_channel::Receiver<T>,
    fill: Arc<Fill>,
}

impl<T> Receiver<T> {
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let v = self.rx.try_recv()?;
        self.fill.len.fetch_sub(1, Ordering::AcqRel);
        Ok(v)
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.fill.closed.store(true, Ordering::Release);
    }
}

/// A queue of at most `capacity` messages whose writers wake `waker`.
pub fn bounded<T>(capacity: usize, waker: &Waker) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let fill = Arc::new(Fill {
        len: AtomicUsize::new(0),
        capacity,
        closed: AtomicBool::new(false),
    });
    (
        Sender {
            tx,
            fill: fill.clone(),
            waker: waker.clone(),
        },
        Receiver { rx, fill },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_refuses_until_a_message_is_taken() {
        let waker = Waker::new().unwrap();
        let (tx, rx) = bounded::<u32>(2, &waker);
        assert!(tx.try_send(1).is_ok());
        assert!(tx.clone().try_send(2).is_ok());
        assert_eq!(tx.try_send(3), Err(3));
        assert_eq!(rx.try_recv(), Ok(1));
        assert!(tx.try_send(3).is_ok());
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.try_recv(), Ok(3));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    }

    fn signalled(waker: &Waker) -> bool {
        use rustix::event::{poll, PollFd, PollFlags};
        let mut p = [PollFd::new(&*waker.0, PollFlags::IN)];
        poll(
            &mut p,
            Some(&rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            }),
        ) == Ok(1)
    }

    #[test]
    fn a_lazy_message_is_queued_and_counted_without_waking_the_engine() {
        let waker = Waker::new().unwrap();
        let (tx, rx) = bounded::<u32>(2, &waker);
        assert!(tx.try_send_lazy(1).is_ok());
        assert!(
            !signalled(&waker),
            "a lazy message must not wake the engine"
        );
        assert!(tx.try_send(2).is_ok());
        assert!(signalled(&waker), "an ordinary one does");
        assert_eq!(
            tx.try_send_lazy(3),
            Err(3),
            "the bound holds for lazy ones too"
        );
        waker.clear();
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.try_recv(), Ok(2));
    }

    /// A queue of one holding 1, and a writer waiting to send 2 into it.
    fn writer_waiting_on_a_full_queue() -> (Receiver<u32>, std::thread::JoinHandle<Result<(), u32>>)
    {
        let waker = Waker::new().unwrap();
        let (tx, rx) = bounded::<u32>(1, &waker);
        tx.send(1).unwrap();
        let writer = std::thread::spawn(move || tx.send(2));
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            !writer.is_finished(),
            "the second send must wait while the queue is full"
        );
        (rx, writer)
    }

    #[test]
    fn a_blocked_writer_goes_on_when_the_reader_takes_one() {
        let (rx, writer) = writer_waiting_on_a_full_queue();
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(writer.join().unwrap(), Ok(()));
        assert_eq!(rx.try_recv(), Ok(2));
    }

    #[test]
    fn a_waiting_writer_gives_up_when_the_reader_is_gone() {
        let (rx, writer) = writer_waiting_on_a_full_queue();
        drop(rx);
        assert_eq!(writer.join().unwrap(), Err(2));
    }
}
