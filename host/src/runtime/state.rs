//! The data of one store: what one request (or one readiness check) of a
//! version reaches: WASI, wasi:http, and the app's own services (name,
//! key-value buckets, `wasi:config` values).
//!
//! Only data and the views the linker hands to guests; it compiles and runs
//! nothing.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::kv::Keyvalue;
use crate::kv::guest::KvView;
use crate::realtime::hub::Hub;
use crate::runtime::limits::Limits;
use crate::runtime::outgoing::{OutgoingHooks, OutgoingPolicy};
use crate::runtime::trace::TraceParent;

/// What every version of an app shares, and outlives each of them: its
/// buckets and its channels.
#[derive(Clone)]
pub struct Shared {
    /// The app's buckets.
    pub keyvalue: Arc<Keyvalue>,
    /// The app's channels.
    pub hub: Arc<Hub>,
}

/// What every store of one app version reaches beyond WASI: the app's name,
/// its key-value state (shared by all its versions) and its `wasi:config`
/// values. Made once per version; a store takes a reference count.
pub struct AppServices {
    /// The app's name.
    pub app: Arc<str>,
    /// The app's buckets.
    pub keyvalue: Arc<Keyvalue>,
    /// The app's channels, which guests publish to.
    pub hub: Arc<Hub>,
    /// The values `wasi:config/store` answers with.
    pub config: WasiConfigVariables,
}

/// The data of one store: one request's (or one readiness check's) view of
/// WASI, wasi:http and the app's services.
pub struct HostState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    outgoing: OutgoingHooks,
    generation: u64,
    services: Arc<AppServices>,
    limits: Limits,
}

impl HostState {
    /// The store's resource limiter, which the store's `limiter` points at
    /// and which records how large its memories were made and grew.
    pub fn limits(&mut self) -> &mut Limits {
        &mut self.limits
    }

    /// Resources the guest holds in the store's table now (requests,
    /// streams, fields, pollables...). O(table size): for the end of a
    /// request, not the middle of one.
    pub fn resources_held(&mut self) -> usize {
        self.table.iter_mut().count()
    }

    /// State for a store of generation `generation` of an app, whose WASI
    /// context grants what `wasi` grants, whose outgoing HTTP requests are
    /// checked against `outgoing`, and that reaches the app's `services`.
    pub fn new(
        wasi: WasiCtx,
        outgoing: OutgoingPolicy,
        generation: u64,
        services: Arc<AppServices>,
    ) -> Self {
        Self {
            table: ResourceTable::new(),
            wasi,
            http: WasiHttpCtx::new(),
            outgoing: OutgoingHooks::new(outgoing),
            generation,
            services,
            limits: Limits::default(),
        }
    }

    /// The `traceparent` the guest's outgoing requests carry while it
    /// serves the request at hand (`None`: the request had none).
    pub fn set_trace(&mut self, trace: Option<TraceParent>) {
        self.outgoing.set_trace(trace);
    }

    /// The generation of the version this store runs.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The name of the app this store runs.
    pub fn app_name(&self) -> &str {
        &self.services.app
    }

    /// The app's channels.
    pub fn hub(&self) -> &Hub {
        &self.services.hub
    }

    /// The guest's view of the app's key-value buckets.
    pub fn keyvalue(&mut self) -> KvView<'_> {
        KvView::new(&self.services.keyvalue, &mut self.table)
    }

    /// The guest's view of the app's `wasi:config` values.
    pub fn config(&self) -> WasiConfig<'_> {
        WasiConfig::new(&self.services.config)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outgoing,
        }
    }
}
