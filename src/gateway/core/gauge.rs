//! A count of live things on one worker (connections being served, agent
//! channels) that wakes whoever waits for it to change: how a draining
//! worker waits for its last session without polling.
//!
//! Worker-local (`Cell`, `RefCell`): nothing here is shared between
//! threads. No I/O; the waiting is a plain future.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// A count whose changes wake the tasks waiting on [`Gauge::changed`].
#[derive(Debug, Default)]
pub(crate) struct Gauge {
    value: Cell<usize>,
    /// Bumped by every change, so a waiter can tell one happened.
    changes: Cell<u64>,
    /// Tasks waiting for the next change.
    waiters: RefCell<Vec<Waker>>,
}

impl Gauge {
    /// The count now.
    pub fn get(&self) -> usize {
        self.value.get()
    }

    /// Sets the count and wakes the waiters.
    pub fn set(&self, value: usize) {
        self.value.set(value);
        self.changes.set(self.changes.get().wrapping_add(1));
        // Taken out first, so a waker that runs code touching this gauge
        // finds the list free.
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }

    /// Counts one more until the guard is dropped.
    pub fn enter(self: &Rc<Self>) -> GaugeGuard {
        self.set(self.get() + 1);
        GaugeGuard(Rc::clone(self))
    }

    /// Resolves at the next change after this call.
    pub fn changed(&self) -> Changed<'_> {
        Changed {
            gauge: self,
            seen: self.changes.get(),
        }
    }
}

/// One thing counted by a [`Gauge`]; dropping it counts it out.
#[derive(Debug)]
pub(crate) struct GaugeGuard(Rc<Gauge>);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// The future of [`Gauge::changed`].
#[derive(Debug)]
pub(crate) struct Changed<'a> {
    gauge: &'a Gauge,
    seen: u64,
}

impl Future for Changed<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.gauge.changes.get() != self.seen {
            return Poll::Ready(());
        }
        let mut waiters = self.gauge.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

    /// Counts its wakes.
    struct Counting(AtomicUsize);

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_change_wakes_the_waiter_once_and_completes_its_future() {
        let gauge = Rc::new(Gauge::default());
        let counting = Arc::new(Counting(AtomicUsize::new(0)));
        let waker = Waker::from(counting.clone());
        let mut cx = Context::from_waker(&waker);

        let mut changed = Box::pin(gauge.changed());
        assert_eq!(changed.as_mut().poll(&mut cx), Poll::Pending);
        assert_eq!(
            changed.as_mut().poll(&mut cx),
            Poll::Pending,
            "polled twice, registered once"
        );
        let guard = gauge.enter();
        assert_eq!(gauge.get(), 1);
        assert_eq!(counting.0.load(Ordering::SeqCst), 1, "one wake for one waiter");
        assert_eq!(changed.as_mut().poll(&mut cx), Poll::Ready(()));

        let mut next = Box::pin(gauge.changed());
        assert_eq!(
            next.as_mut().poll(&mut cx),
            Poll::Pending,
            "a new wait needs a new change"
        );
        drop(guard);
        assert_eq!(gauge.get(), 0, "the guard counts itself out");
        assert_eq!(next.as_mut().poll(&mut cx), Poll::Ready(()));
        assert_eq!(counting.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_change_before_the_first_poll_is_not_missed() {
        let gauge = Gauge::default();
        let waker = Waker::from(Arc::new(Counting(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&waker);
        let mut changed = Box::pin(gauge.changed());
        gauge.set(3);
        assert_eq!(changed.as_mut().poll(&mut cx), Poll::Ready(()));
    }
}
