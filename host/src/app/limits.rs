//! Per-app admission limits: how many requests may run a guest at once, how
//! many may wait for a turn and for how long, and how large a request body
//! may be.
//!
//! This module decides and meters; it never runs a guest and never picks a
//! version. A request it refuses gets an answer that says which limit and
//! which flag, never a pool-exhaustion error from deep inside the engine.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The longest duration any setting takes (a day). Timeouts and polling
/// periods longer than that are typing mistakes, and an unbounded one
/// overflows the clock arithmetic of deadlines (a drain deadline of
/// `u64::MAX` seconds cannot be represented).
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// [`MAX_DURATION`] as the flags would write it.
const MAX_DURATION_TEXT: &str = "24h";

/// Refuses a duration above [`MAX_DURATION`], for values that arrive
/// already parsed (the control protocol).
pub fn check_duration_bound(value: Duration) -> Result<(), String> {
    if value > MAX_DURATION {
        return Err(format!(
            "is longer than {MAX_DURATION_TEXT}, the longest duration wasm-host accepts"
        ));
    }
    Ok(())
}

/// The limits of one app.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Requests that may run a guest at once (their background work
    /// included).
    pub max_concurrency: usize,
    /// Requests that may wait for a turn beyond those; more get 503.
    pub max_queue: usize,
    /// How long a request may wait in the queue before it gets 503.
    pub queue_timeout: Duration,
    /// Largest request body, in bytes; `None` for no limit.
    pub max_body: Option<u64>,
    /// How long the guest of a request whose client went away before the
    /// answer may go on before it is stopped.
    pub hangup_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // Below the pooling allocator's 1000 instances, leaving room for
            // draining versions, readiness checks and drain hooks.
            max_concurrency: 500,
            max_queue: 1000,
            queue_timeout: Duration::from_secs(10),
            max_body: None,
            hangup_grace: Duration::from_secs(2),
        }
    }
}

/// Why a request was turned away before it reached a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every turn is taken and the queue is full.
    Busy,
    /// It waited in the queue for the whole queue timeout.
    QueueTimeout,
}

/// The turns of one app: a semaphore of `max_concurrency` permits and a
/// bounded count of waiters.
pub struct Admission {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    limits: Limits,
}

impl Admission {
    /// Turns for `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limits.max_concurrency)),
            waiting: AtomicUsize::new(0),
            limits,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A turn to run a guest, held until the permit is dropped: at once if
    /// one is free, else after waiting in the queue (if it has room).
    pub async fn admit(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        // The place in the queue is given back when `_place` drops: after
        // the wait, or when the request is dropped mid-wait because its
        // client hung up. Counting down after the await instead leaked a
        // place for every abandoned waiter until the queue was full for good.
        let _place = QueuePlace::take(&self.waiting, self.limits.max_queue)?;
        let waited = tokio::time::timeout(
            self.limits.queue_timeout,
            self.permits.clone().acquire_owned(),
        )
        .await;
        match waited {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Refusal::QueueTimeout),
        }
    }

    /// Requests waiting for a turn now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// One place in an app's queue, held while a request waits for a turn.
struct QueuePlace<'a>(&'a AtomicUsize);

impl<'a> QueuePlace<'a> {
    /// Takes a place if fewer than `max` are taken.
    fn take(waiting: &'a AtomicUsize, max: usize) -> Result<Self, Refusal> {
        if waiting.fetch_add(1, Ordering::AcqRel) >= max {
            waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Busy);
        }
        Ok(Self(waiting))
    }
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request body that fails once more than `max` bytes have passed, and
/// notes that it did in `hit`, so the host can answer 413 for the guest.
pub struct Capped<B> {
    inner: B,
    max: u64,
    seen: u64,
    hit: Arc<AtomicBool>,
}

impl<B> Capped<B> {
    /// `inner`, cut off after `max` bytes; `hit` is set when that happens.
    pub fn new(inner: B, max: u64, hit: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            max,
            seen: 0,
            hit,
        }
    }
}

impl<B> Body for Capped<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if this.seen > this.max {
                        this.hit.store(true, Ordering::Relaxed);
                        let error = wasmtime_wasi_http::Error::HttpRequestBodySize(Some(this.seen));
                        return Poll::Ready(Some(Err(error)));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            other => other.map(|_| None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The declared length of a request body, if the client sent one.
pub fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn turns_queue_then_refuse() {
        let admission = Admission::new(Limits {
            max_concurrency: 1,
            max_queue: 1,
            queue_timeout: Duration::from_millis(50),
            max_body: None,
            hangup_grace: Duration::from_secs(2),
        });
        let first = admission.admit().await.unwrap();
        // One may wait (and times out); with the queue taken, the next is
        // refused at once.
        let admission = Arc::new(admission);
        let waiter = {
            let admission = admission.clone();
            tokio::spawn(async move { admission.admit().await.map(drop) })
        };
        while admission.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(admission.admit().await.err(), Some(Refusal::Busy));
        assert_eq!(waiter.await.unwrap(), Err(Refusal::QueueTimeout));
        drop(first);
        assert!(admission.admit().await.is_ok());
    }

    #[tokio::test]
    async fn a_waiter_dropped_mid_wait_gives_its_place_back() {
        let admission = Arc::new(Admission::new(Limits {
            max_concurrency: 1,
            max_queue: 2,
            queue_timeout: Duration::from_secs(60),
            max_body: None,
            hangup_grace: Duration::from_secs(2),
        }));
        let _turn = admission.admit().await.unwrap();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let admission = admission.clone();
                tokio::spawn(async move { admission.admit().await.map(drop) })
            })
            .collect();
        while admission.waiting() < 2 {
            tokio::task::yield_now().await;
        }
        // Their clients hang up: the request futures are dropped.
        for waiter in &waiters {
            waiter.abort();
        }
        for waiter in waiters {
            let _ = waiter.await;
        }
        assert_eq!(admission.waiting(), 0);
    }
}
