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
    /// The next frame, or `None` once the sender is gone and the queue is
    /// drained (frames queued before the close, like a goodbye, still come).
    pub async fn recv(&self) -> Option<ToAgent> {
        std::future::poll_fn(|cx| {
            let mut queue = self.0.queue.borrow_mut();
            if let Some(frame) = queue.pop_front() {
                if queue.is_empty() {
                    // Give the memory back: an idle agent holds no buffer.
                    *queue = VecDeque::new();
                }
                return Poll::Ready(Some(frame));
            }
            if self.0.closed.get() {
                return Poll::Ready(None);
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

    #[test]
    fn frames_arrive_in_order_then_close_after_the_goodbye() {
        compio::runtime::Runtime::new().expect("runtime").block_on(async {
            let (tx, rx) = outbox(2);
            assert_eq!(tx.try_send(ToAgent::Pong(1)), Ok(()));
            assert_eq!(tx.try_send(ToAgent::Bye("shutdown".into())), Ok(()));
            assert_eq!(tx.try_send(ToAgent::Pong(2)), Err(ToAgent::Pong(2)), "full at 2");
            drop(tx);
            assert_eq!(rx.recv().await, Some(ToAgent::Pong(1)));
            assert_eq!(rx.recv().await, Some(ToAgent::Bye("shutdown".into())));
            assert_eq!(rx.recv().await, None);
        });
    }

    #[test]
    fn a_waiting_receiver_is_woken() {
        compio::runtime::Runtime::new().expect("runtime").block_on(async {
            let (tx, rx) = outbox(4);
            let waiter = compio::runtime::spawn(async move { rx.recv().await });
            compio::runtime::spawn(async move {
                assert_eq!(tx.try_send(ToAgent::Cmpi(5)), Ok(()));
            })
            .detach();
            assert_eq!(waiter.await.expect("task ran"), Some(ToAgent::Cmpi(5)));
        });
    }

    #[test]
    fn sending_after_the_receiver_is_gone_fails() {
        let (tx, rx) = outbox(4);
        drop(rx);
        assert_eq!(tx.try_send(ToAgent::Pong(1)), Err(ToAgent::Pong(1)));
    }
}
