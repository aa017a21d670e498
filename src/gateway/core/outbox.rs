//! Frames waiting to go down one agent's channel: a queue local to the
//! worker that owns the agent.
//!
//! A cross-thread channel would cost over 800 bytes per agent (cache-padded
//! atomics and a preallocated ring) for a queue that never leaves its
//! thread and holds a frame a minute. This one is an `Rc`, allocates only
//! while frames wait, and closes when the sending side (kept in the
//! agent's directory record) is dropped: removing the record ends the
//! channel task.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::Write;
use std::rc::Rc;
use std::task::{Poll, Waker};

use crate::proto::ToAgent;

struct Shared {
    queue: RefCell<VecDeque<ToAgent>>,
    waker: Cell<Option<Waker>>,
    closed: Cell<bool>,
    capacity: usize,
}

/// The sending side, held by the agent's directory record.
pub(crate) struct Outbox(Rc<Shared>);

/// The receiving side, held by the agent's channel task.
pub(crate) struct Inbox(Rc<Shared>);

/// A queue of at most `capacity` frames.
pub(crate) fn outbox(capacity: usize) -> (Outbox, Inbox) {
    let shared = Rc::new(Shared {
        queue: RefCell::new(VecDeque::new()),
        waker: Cell::new(None),
        closed: Cell::new(false),
        capacity,
    });
    (Outbox(shared.clone()), Inbox(shared))
}

impl Outbox {
    /// Queues a frame; gives it back if the queue is full (the agent
    /// stopped reading) or the channel task has ended.
    pub fn try_send(&self, frame: ToAgent) -> Result<(), ToAgent> {
        let mut queue = self.0.queue.borrow_mut();
        if queue.len() >= self.0.capacity || Rc::strong_count(&self.0) < 2 {
            return Err(frame);
        }
        queue.push_back(frame);
        drop(queue);
        if let Some(w) = self.0.waker.take() {
            w.wake();
        }
        Ok(())
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.0.closed.set(true);
        if let Some(w) = self.0.waker.take() {
            w.wake();
        }
    }
}

impl Inbox {
    /// Waits for frames, then appends every queued one to `out` as wire
    /// text, so a burst goes down in one write. False once the sender is
    /// gone and the queue is drained (frames queued before the close, like
    /// a goodbye, still come).
    pub async fn recv_batch(&self, out: &mut Vec<u8>) -> bool {
        std::future::poll_fn(|cx| {
            let mut queue = self.0.queue.borrow_mut();
            if !queue.is_empty() {
                for frame in queue.drain(..) {
                    // Writing into a Vec cannot fail.
                    let _ = write!(out, "{frame}");
                }
                // Give the memory back: an idle agent holds no queue.
                *queue = VecDeque::new();
                return Poll::Ready(true);
            }
            if self.0.closed.get() {
                return Poll::Ready(false);
            }
            self.0.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }

    /// Resolves once the sender is gone (the record was removed). Used
    /// while a write is under way, when `recv_batch` is not waiting, so the
    /// one waker slot is never claimed by both.
    pub async fn closed(&self) {
        std::future::poll_fn(|cx| {
            if self.0.closed.get() {
                return Poll::Ready(());
            }
            self.0.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> compio::runtime::Runtime {
        compio::runtime::Runtime::new().expect("runtime")
    }

    #[test]
    fn a_burst_arrives_in_one_batch_then_the_close_after_the_goodbye() {
        runtime().block_on(async {
            let (tx, rx) = outbox(2);
            assert_eq!(tx.try_send(ToAgent::Pong(1)), Ok(()));
            assert_eq!(tx.try_send(ToAgent::Bye("shutdown".into())), Ok(()));
            assert_eq!(tx.try_send(ToAgent::Pong(2)), Err(ToAgent::Pong(2)), "full at 2");
            drop(tx);
            let mut out = Vec::new();
            assert!(rx.recv_batch(&mut out).await);
            assert_eq!(out, b"PONG 1\nBYE shutdown\n");
            assert!(!rx.recv_batch(&mut out).await, "closed and drained");
            rx.closed().await;
        });
    }

    #[test]
    fn a_waiting_receiver_is_woken() {
        runtime().block_on(async {
            let (tx, rx) = outbox(4);
            let waiter = compio::runtime::spawn(async move {
                let mut out = Vec::new();
                rx.recv_batch(&mut out).await.then_some(out)
            });
            compio::runtime::spawn(async move {
                assert_eq!(tx.try_send(ToAgent::Cmpi(5)), Ok(()));
            })
            .detach();
            assert_eq!(waiter.await.expect("task ran"), Some(b"CMPI 5\n".to_vec()));
        });
    }

    #[test]
    fn a_writer_hears_the_close_while_busy() {
        runtime().block_on(async {
            let (tx, rx) = outbox(4);
            let watcher = compio::runtime::spawn(async move { rx.closed().await });
            compio::runtime::spawn(async move { drop(tx) }).detach();
            watcher.await.expect("woken by the close");
        });
    }

    #[test]
    fn sending_after_the_receiver_is_gone_fails() {
        let (tx, rx) = outbox(4);
        drop(rx);
        assert_eq!(tx.try_send(ToAgent::Pong(1)), Err(ToAgent::Pong(1)));
    }
}
