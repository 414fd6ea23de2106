//! Making the store one request (0.2) or one instance (0.3) of a version
//! runs in: the sandbox (no ambient authority, only the granted
//! directories and environment), guest output with the generation prefix,
//! the memory limit and the epoch deadline.
//!
//! Shared by a version and its 0.3 instances, which make stores without
//! holding the version.

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::{Engine, Store};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::runtime::guest_log::GuestLog;
use crate::runtime::outgoing::OutgoingPolicy;
use crate::runtime::state::{AppServices, HostState};

/// What it takes to make a store of one version.
pub struct Stores {
    /// The engine the version's code was compiled for.
    pub engine: Engine,
    /// The version's generation.
    pub generation: u64,
    /// Where guest output goes, prefixed with app and generation.
    pub log: GuestLog,
    /// Environment variables guests see.
    pub env: Arc<[(String, String)]>,
    /// Host directories guests may read: (host path, path the guest sees).
    pub dirs: Arc<[(PathBuf, String)]>,
    /// Where guests may send outgoing HTTP requests.
    pub outgoing: OutgoingPolicy,
    /// A memory limit per instance below the engine's, if any.
    pub max_memory: Option<usize>,
    /// The app's services (name, key-value, config).
    pub services: Arc<AppServices>,
}

impl Stores {
    /// A fresh store: no ambient authority, guest output prefixed with
    /// this generation, and an epoch deadline that makes the guest yield at
    /// every tick so timeouts and drains can stop it.
    pub fn new_store(&self) -> Store<HostState> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(self.log.clone())
            .stderr(self.log.clone())
            .envs(&self.env);
        for (host, guest) in self.dirs.iter() {
            // Checked at start-up; if the directory went away since, the
            // guest goes without it rather than the request failing here.
            if let Err(e) = wasi.preopened_dir(host, guest, FsPerms::ReadOnly) {
                tracing::warn!(dir = %host.display(), error = %e, "cannot open a directory for the guest");
            }
        }
        let wasi = wasi.build();
        let state = HostState::new(
            wasi,
            self.outgoing.clone(),
            self.generation,
            self.services.clone(),
        );
        let mut store = Store::new(&self.engine, state);
        if let Some(bytes) = self.max_memory {
            store.data_mut().limits().limit_memory(bytes);
        }
        // Always installed: it also records how far memory grew, which
        // instance reuse reads (a call per `memory.grow`, not per request).
        store.limiter(|state| state.limits());
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        store
    }
}
