//! The instances of one 0.3 version, as wasmtime's `ProxyHandler` sees
//! them: how one is made, when it takes another request, when it is done.
//!
//! `ProxyHandler` runs each instance in a task of its own and hands it
//! requests from a queue; the hooks here are where the reload rules go in.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use wasmtime::component::GuestTaskId;
use wasmtime::{Store, StoreContextMut};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::handler::{
    HandlerState, Instance, Proxy, ProxyHandler, ShouldAccept, WorkerExpiration, WorkerState,
    WorkerStatus,
};
use wasmtime_wasi_http::p3::bindings::ServicePre;

use super::{End, Fate, P3Settings};
use crate::ops::metrics::VersionCounters;
use crate::runtime::state::HostState;
use crate::runtime::store::Stores;
use crate::runtime::work::{WorkCounter, WorkGuard};

/// The instances of one 0.3 version.
pub(crate) type Instances = ProxyHandler<Pool>;

/// What the instances of one version are made from and answer to. Holds no
/// reference to the version itself: an instance may outlive the version's
/// place in the app, and the version owns this.
pub(crate) struct Pool {
    /// Makes the stores, as for any request of this version.
    pub stores: Arc<Stores>,
    /// The linked component.
    pub pre: ServicePre<HostState>,
    /// The version's instances alive: each counts from before it is made
    /// until it is dropped.
    pub alive: Arc<WorkCounter>,
    /// Cancelled by the drain deadline: every instance ends now.
    pub forced: CancellationToken,
    /// Cancelled when the version stops taking requests: idle instances go.
    pub retiring: CancellationToken,
    /// The version's counters.
    pub counters: Arc<VersionCounters>,
    /// Concurrency, uses and idle time.
    pub settings: P3Settings,
    /// Bound on one request, and on the work after the last response.
    pub request_timeout: Duration,
}

/// What a request carries into the instance that takes it: a place for that
/// instance's [`Fate`], so the request can tell why it got no answer.
#[derive(Debug, Default)]
pub(crate) struct Ticket {
    fate: OnceLock<Arc<Fate>>,
}

impl Ticket {
    /// How the instance that took this request ended, if it was ended.
    pub fn end(&self) -> Option<&End> {
        self.fate.get()?.get()
    }
}

impl HandlerState for Pool {
    type StoreData = HostState;
    type WorkerExpiration = Expiry;
    type WorkerState = Worker;

    async fn instantiate(&self) -> wasmtime::Result<Instance<HostState, Expiry, Worker>> {
        // Counted from before the instance exists, so a drain that looks
        // while it is being made waits for it.
        let counted = self.alive.enter();
        let mut store = self.stores.new_store();
        let made =
            tokio::time::timeout(self.request_timeout, self.pre.instantiate_async(&mut store))
                .await;
        let service = match made {
            Ok(service) => service?,
            Err(_) => wasmtime::bail!(
                "the instance did not start within {:?} (--request-timeout)",
                self.request_timeout
            ),
        };
        self.counters.instance_started();
        let fate = Arc::new(Fate::default());
        Ok(Instance {
            store,
            proxy: Proxy::P3(service),
            view: <HostState as WasiHttpView>::http,
            expiration: Expiry {
                idle: self.settings.idle,
                request_timeout: self.request_timeout,
                sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
                forced: self.forced.clone(),
                on_forced: Box::pin(self.forced.clone().cancelled_owned()),
                retiring: self.retiring.clone(),
                on_retiring: Box::pin(self.retiring.clone().cancelled_owned()),
                fate: fate.clone(),
            },
            state: Worker {
                concurrency: self.settings.concurrency as usize,
                uses: self.settings.uses as usize,
                request_timeout: self.request_timeout,
                fate,
                counters: self.counters.clone(),
                generation: self.stores.generation,
                _counted: counted,
            },
        })
    }
}

/// When an instance is done. Polled by wasmtime from outside the instance's
/// event loop, so it fires even while a guest spins in a loop.
pub(crate) struct Expiry {
    idle: Duration,
    request_timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    forced: CancellationToken,
    on_forced: Pin<Box<WaitForCancellationFutureOwned>>,
    retiring: CancellationToken,
    on_retiring: Pin<Box<WaitForCancellationFutureOwned>>,
    fate: Arc<Fate>,
}

impl WorkerExpiration for Expiry {
    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        status: WorkerStatus,
        start: Instant,
    ) -> Poll<()> {
        let me = self.get_mut();
        let busy = status != WorkerStatus::Idle;
        // The drain deadline ends everything still running.
        if me.forced.is_cancelled() || me.on_forced.as_mut().poll(cx).is_ready() {
            if busy {
                me.fate.set(End::Forced);
            }
            return Poll::Ready(());
        }
        // A version that takes no more requests keeps no idle instance: it
        // retires as soon as its last task has ended.
        let retiring = me.retiring.is_cancelled() || me.on_retiring.as_mut().poll(cx).is_ready();
        if retiring && !busy {
            return Poll::Ready(());
        }
        // Requests, and the work after them, are bounded by the request
        // timeout from the latest start; an idle instance by the idle time.
        let wait = if busy { me.request_timeout } else { me.idle };
        let Some(deadline) = start.checked_add(wait) else {
            return Poll::Pending;
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        if me.sleep.deadline() != deadline {
            me.sleep.as_mut().reset(deadline);
        }
        if me.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        if busy {
            me.fate.set(End::TimedOut);
        }
        Poll::Ready(())
    }
}

/// One instance's state: how many requests it takes, and what happens when
/// it is dropped.
pub(crate) struct Worker {
    concurrency: usize,
    uses: usize,
    request_timeout: Duration,
    fate: Arc<Fate>,
    counters: Arc<VersionCounters>,
    generation: u64,
    /// The instance's place in its version's count of instances alive,
    /// released with it.
    _counted: WorkGuard,
}

impl WorkerState for Worker {
    type StoreData = HostState;
    type RequestData = Arc<Ticket>;

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        if total >= self.uses {
            ShouldAccept::Never
        } else if concurrent >= self.concurrency {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        _store: StoreContextMut<'_, HostState>,
        ticket: Arc<Ticket>,
        _task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync + 'static>> {
        // A ticket is taken by exactly one instance.
        let _ = ticket.fate.set(self.fate.clone());
        Box::pin(tokio::time::sleep(self.request_timeout))
    }

    fn drop(&self, store: Store<HostState>, result: wasmtime::Result<()>) {
        if let Err(error) = result {
            // Whatever ended it first (timeout, drain deadline) was recorded
            // then; an error with no such cause is the guest's own trap.
            self.fate.set(End::Trapped(format!("{error:#}")));
            let reason = self.fate.get().map_or("trap", End::reason);
            self.counters.instance_ended(reason);
            tracing::warn!(
                generation = self.generation,
                reason,
                error = %format!("{error:#}"),
                "0.3 instance ended early; its requests still running fail"
            );
        }
        drop(store);
    }
}
