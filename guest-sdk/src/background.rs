//! Work after the response: futures queued during a request that run once
//! its response is sent, inside the same `incoming-handler` call.
//!
//! The host counts a request as in flight until that call returns, so this
//! work finishes before a reload retires the version. This module only
//! keeps the queue; [`handler`](crate::handler) decides when it runs.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;

type Work = Pin<Box<dyn Future<Output = ()>>>;

thread_local! {
    static QUEUE: RefCell<Vec<Work>> = const { RefCell::new(Vec::new()) };
}

/// Runs `work` after the response has been sent, like `waitUntil` in a
/// Worker: the client does not wait for it, the host does (a reload's drain
/// waits for it, up to `--drain-timeout`).
///
/// Call it while handling a request, including from work already queued;
/// pieces of work run concurrently. Work queued outside a request (in
/// `init` or `drain`) runs after the next request this instance serves.
pub fn after_response(work: impl Future<Output = ()> + 'static) {
    QUEUE.with(|queue| queue.borrow_mut().push(Box::pin(work)));
}

/// Runs everything queued, and what that work queues in turn, to the end.
pub(crate) async fn run_queued() {
    loop {
        let batch = QUEUE.with(|queue| std::mem::take(&mut *queue.borrow_mut()));
        if batch.is_empty() {
            return;
        }
        let tasks: Vec<_> = batch.into_iter().map(wstd::runtime::spawn).collect();
        for task in tasks {
            task.await;
        }
    }
}
