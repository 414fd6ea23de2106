//! Counting the live work of one version: requests in flight and the guest
//! work that goes on after a response was sent.
//!
//! A [`WorkGuard`] is held for as long as one piece of work runs; a drain
//! waits on [`WorkCounter::wait_idle`] until the count reaches zero. This
//! module only counts; it never decides what to do with the number.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;
use tokio::time::Instant;

/// The moment `after` past `start`, for a [`WorkCounter::wait_idle`]
/// deadline. Never panics: a span the clock cannot represent (settings are
/// bounded when parsed, so only a bug gets here) waits as long as tokio's
/// own "far future" instead.
pub fn deadline_after(start: Instant, after: std::time::Duration) -> Instant {
    const FAR: std::time::Duration = std::time::Duration::from_secs(86400 * 365 * 30);
    start
        .checked_add(after)
        .or_else(|| start.checked_add(FAR))
        .unwrap_or(start)
}

/// The number of running pieces of work, and a way to wait for none.
#[derive(Debug, Default)]
pub struct WorkCounter {
    running: AtomicUsize,
    idle: Notify,
}

impl WorkCounter {
    /// Counts one more piece of work until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> WorkGuard {
        self.running.fetch_add(1, Ordering::SeqCst);
        WorkGuard {
            counter: self.clone(),
        }
    }

    /// Pieces of work running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Waits until no work runs, or until `deadline`. Returns whether the
    /// counter reached zero.
    pub async fn wait_idle(&self, deadline: Instant) -> bool {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Register before checking, so a guard dropped in between still
            // wakes this waiter.
            notified.as_mut().enable();
            if self.running() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.running() == 0;
            }
        }
    }
}

/// One piece of running work; dropping it ends the work.
#[derive(Debug)]
pub struct WorkGuard {
    counter: Arc<WorkCounter>,
}

impl Drop for WorkGuard {
    fn drop(&mut self) {
        if self.counter.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.counter.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn idle_when_last_guard_drops() {
        let counter = Arc::new(WorkCounter::default());
        let a = counter.enter();
        let b = counter.enter();
        assert_eq!(counter.running(), 2);
        let waiter = {
            let counter = counter.clone();
            tokio::spawn(async move {
                counter
                    .wait_idle(Instant::now() + Duration::from_secs(5))
                    .await
            })
        };
        drop(a);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(b);
        assert!(waiter.await.unwrap());
        assert_eq!(counter.running(), 0);
    }

    #[tokio::test]
    async fn deadline_ends_the_wait() {
        let counter = Arc::new(WorkCounter::default());
        let _busy = counter.enter();
        let idle = counter
            .wait_idle(Instant::now() + Duration::from_millis(30))
            .await;
        assert!(!idle);
    }

    #[test]
    fn absurd_deadlines_do_not_panic() {
        let now = Instant::now();
        let far = deadline_after(now, Duration::MAX);
        assert!(far > now + Duration::from_secs(86400 * 365));
        assert_eq!(
            deadline_after(now, Duration::from_secs(3)),
            now + Duration::from_secs(3)
        );
    }
}
