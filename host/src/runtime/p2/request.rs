//! Runs one HTTP request on one 0.2 version: a fresh store and instance (or
//! a warm one), the guest's `handle`, and the mapping of guest failures to
//! HTTP statuses.
//!
//! The guest runs in the request's own task until it answers; what it does
//! after its answer (background work) goes on in a task of its own (see
//! `InPlace`), and the [`WorkGuard`] it holds keeps its version from being
//! retired until that work ends. This module does not choose the version:
//! the caller does.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use hyper::body::Body;
use tokio::sync::OwnedSemaphorePermit;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};

use super::Warm;
use crate::ops::metrics::{CONNECTIONS, Cutoff};
use crate::runtime::http::{OverTls, Response, plain};
use crate::runtime::trace::TraceParent;
use crate::runtime::version::Version;
use crate::runtime::work::WorkGuard;
use crate::runtime::world::Linked;

/// How a guest's run ended.
enum GuestEnd {
    /// `handle` returned after setting a good response.
    Returned,
    /// `handle` returned without setting a response, or after setting an
    /// error.
    Unanswered,
    /// The guest trapped or a host call failed.
    Failed(wasmtime::Error),
    /// The request timeout passed.
    TimedOut,
    /// A drain deadline ended it.
    Forced,
}

/// Runs `req` on `version`, holding `guard` (and `turn`, the app's
/// admission permit) for as long as the guest runs. If the client goes
/// away before the guest answers, the guest may go on for `hangup_grace`,
/// then it is stopped.
pub(crate) async fn handle<B>(
    version: Arc<Version>,
    guard: WorkGuard,
    turn: OwnedSemaphorePermit,
    req: hyper::Request<B>,
    hangup_grace: Duration,
) -> Response
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    let (mut store, warm_proxy, uses) = match version.warm().take() {
        Some(warm) => (warm.store, Some(warm.proxy), warm.uses),
        None => (version.new_store(), None, 0),
    };
    // Set for every request, so a reused instance never carries the trace
    // of the request before.
    store
        .data_mut()
        .set_trace(req.extensions().get::<TraceParent>().cloned());
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let answered = Arc::new(AtomicU8::new(SILENT));
    let resources = {
        let mut http = store.data_mut().http();
        // Count the response when the guest sets it, before its work can
        // end, so a drain that ends right after still counts it.
        let counted = version.clone();
        let answered = answered.clone();
        let respond = move |response: Result<_, ErrorCode>| {
            counted.count_served();
            let state = if response.is_ok() { ANSWERED } else { FAILED };
            answered.store(state, Ordering::Release);
            let _ = sender.send(response);
        };
        let scheme = if req.extensions().get::<OverTls>().is_some() {
            Scheme::Https
        } else {
            Scheme::Http
        };
        http.new_incoming_request(scheme, req)
            .and_then(|req| Ok((req, http.new_response_outparam_from_callback(respond)?)))
    };
    let (req, out) = match resources {
        Ok(pair) => pair,
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("bad request: {e:#}\n")),
    };

    let run_version = version.clone();
    let run_answered = answered.clone();
    let mut run = InPlace::new(answered, hangup_grace, version.generation(), async move {
        let version = run_version;
        let _held = (guard, turn);
        let run = async {
            let proxy = match warm_proxy {
                Some(proxy) => proxy,
                None => match version.linked() {
                    Linked::P2(pre) => pre.instantiate_async(&mut store).await?,
                    Linked::P3(_) => wasmtime::bail!("a 0.3 version on the 0.2 path"),
                },
            };
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await?;
            Ok::<_, wasmtime::Error>(proxy)
        };
        let outcome = tokio::select! {
            biased;
            _ = version.cancelled().cancelled() => None,
            result = tokio::time::timeout(version.request_timeout(), run) => Some(result),
        };
        let end = match outcome {
            None => GuestEnd::Forced,
            Some(Ok(Ok(proxy))) => {
                // Only an instance that returned cleanly after a good answer
                // may serve again; one that trapped, timed out, was cut off,
                // reported an error or never answered is dropped, since it
                // would most likely fail the next request the same way.
                if run_answered.load(Ordering::Acquire) == ANSWERED {
                    version.warm().give_back(
                        Warm {
                            store,
                            proxy,
                            uses: uses + 1,
                        },
                        version.state().takes_requests(),
                    );
                    GuestEnd::Returned
                } else {
                    GuestEnd::Unanswered
                }
            }
            Some(Ok(Err(e))) => GuestEnd::Failed(e),
            Some(Err(_)) => GuestEnd::TimedOut,
        };
        // A reused instance that fails where a fresh one would not have
        // been tried: reuse goes off for the version, so this is the only
        // request it costs. A component built for reuse keeps it after a
        // trap (a bug in one request, which a fresh instance would hit as
        // well): the instance that trapped is gone, the others serve on.
        if uses > 0 {
            let why = match &end {
                GuestEnd::Unanswered => Some("it returned without sending a response"),
                GuestEnd::Failed(_) if version.built_for_reuse() => None,
                GuestEnd::Failed(_) => Some("it trapped"),
                _ => None,
            };
            if let Some(why) = why {
                version
                    .warm()
                    .turn_off(version.app_name(), version.generation(), why);
            }
        }
        log_end(&version, &end);
        end
    });

    let mut receiver = receiver;
    let answer = tokio::select! {
        biased;
        end = &mut run => Err(end),
        answer = &mut receiver => Ok(answer),
    };
    let end = match answer {
        // The guest answered and may still be working: the answer goes out
        // now, and dropping `run` hands the rest of its work to a task.
        Ok(Ok(Ok(response))) => return response,
        Ok(Ok(Err(code))) => return guest_error(code),
        // The response channel closes only as the guest's store goes away,
        // that is, as its run ends.
        Ok(Err(_)) => run.await,
        Err(end) => match receiver.try_recv() {
            Ok(Ok(response)) => return response,
            Ok(Err(code)) => return guest_error(code),
            Err(_) => end,
        },
    };
    // The guest ended without setting a response: say why.
    match end {
        GuestEnd::TimedOut => plain(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the app did not answer within {:?} (--request-timeout)\n",
                version.request_timeout()
            ),
        ),
        GuestEnd::Forced => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the app version was stopped by the drain deadline before it answered\n".into(),
        ),
        GuestEnd::Failed(_) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the app failed while handling this request\n".into(),
        ),
        GuestEnd::Returned | GuestEnd::Unanswered => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the app returned without sending a response\n".into(),
        ),
    }
}

/// A guest's run, polled in place by the request that started it rather
/// than spawned: most guests finish by the time they answer, and a task per
/// request costs a wake-up of another worker thread.
///
/// A run never ends early because its caller went away: whatever of it is
/// left when an `InPlace` is dropped (the guest answered and keeps working,
/// or the client hung up) goes on in a task of its own.
struct InPlace {
    run: Option<Pin<Box<dyn Future<Output = GuestEnd> + Send>>>,
    /// Whether the guest has set its response ([`SILENT`] until then).
    answered: Arc<AtomicU8>,
    /// How long a guest may go on unanswered once its caller is gone.
    hangup_grace: Duration,
    generation: u64,
}

impl InPlace {
    fn new(
        answered: Arc<AtomicU8>,
        hangup_grace: Duration,
        generation: u64,
        run: impl Future<Output = GuestEnd> + Send + 'static,
    ) -> Self {
        Self {
            run: Some(Box::pin(run)),
            answered,
            hangup_grace,
            generation,
        }
    }
}

/// The guest has not set a response yet.
const SILENT: u8 = 0;
/// The guest set a response.
const ANSWERED: u8 = 1;
/// The guest reported an error instead of a response.
const FAILED: u8 = 2;

impl Future for InPlace {
    type Output = GuestEnd;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<GuestEnd> {
        let Some(run) = self.run.as_mut() else {
            // Only polled again after it ended by a caller's mistake.
            return Poll::Ready(GuestEnd::Returned);
        };
        let end = std::task::ready!(run.as_mut().poll(cx));
        self.run = None;
        Poll::Ready(end)
    }
}

impl Drop for InPlace {
    fn drop(&mut self) {
        let Some(mut run) = self.run.take() else {
            return;
        };
        // One more turn here first: a guest that answered has usually only
        // its body's last bytes left to write, and a task would cost more.
        let waker = std::task::Waker::noop();
        if run
            .as_mut()
            .poll(&mut Context::from_waker(waker))
            .is_ready()
        {
            return;
        }
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime,
            // Dropped outside the runtime (at process exit): nothing can
            // drive the guest any more.
            Err(_) => {
                tracing::debug!("guest run dropped outside the runtime");
                return;
            }
        };
        if self.answered.load(Ordering::Acquire) != SILENT {
            // Work after the answer: it goes on to its end (bounded by the
            // request timeout and the drain deadline).
            runtime.spawn(run);
            return;
        }
        // The client went away before the answer: nobody will read it, and
        // the guest holds a turn of the app's concurrency. A short grace
        // lets a guest that is nearly done finish (and its side effects
        // complete); then it is stopped, so clients that hang up or reset
        // streams cannot pin every turn for the whole request timeout.
        let (grace, generation) = (self.hangup_grace, self.generation);
        runtime.spawn(async move {
            if tokio::time::timeout(grace, run).await.is_err() {
                CONNECTIONS.cut(Cutoff::Hangup);
                tracing::warn!(
                    generation,
                    grace_ms = grace.as_millis() as u64,
                    "guest stopped: its client went away before the answer (--hangup-grace)"
                );
            }
        });
    }
}

fn log_end(version: &Version, end: &GuestEnd) {
    let generation = version.generation();
    match end {
        GuestEnd::Returned => {}
        GuestEnd::Unanswered => tracing::warn!(
            generation,
            "guest returned without sending a response (or after reporting an error); its instance is dropped"
        ),
        GuestEnd::Failed(e) => {
            tracing::warn!(generation, error = %format!("{e:#}"), "guest trapped")
        }
        GuestEnd::TimedOut => tracing::warn!(
            generation,
            timeout_ms = version.request_timeout().as_millis() as u64,
            "guest stopped at the request timeout"
        ),
        GuestEnd::Forced => tracing::warn!(generation, "guest stopped by the drain deadline"),
    }
}

/// Maps an error the guest reported through `response-outparam.set`.
fn guest_error(code: ErrorCode) -> Response {
    let status = match code {
        ErrorCode::HttpRequestDenied => StatusCode::FORBIDDEN,
        ErrorCode::ConnectionTimeout | ErrorCode::ConnectionReadTimeout => {
            StatusCode::GATEWAY_TIMEOUT
        }
        ErrorCode::HttpRequestBodySize(_) => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    plain(status, format!("the app reported an error: {code:?}\n"))
}
