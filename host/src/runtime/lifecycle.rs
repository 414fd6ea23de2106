//! The host side of the `wasm-host:app` WIT package (`wit/app.wit`): the
//! `info` import every version can call, and the optional `lifecycle`
//! exports (`init`, `drain`) the host calls at load and at drain.
//!
//! This module only links and calls; when to call is the version's and the
//! app's business.

use anyhow::Result;
use wasmtime::Store;
use wasmtime::component::{Component, ComponentExportIndex, Instance, Linker};

use crate::runtime::state::HostState;

/// The exported interface holding the hooks.
const LIFECYCLE: &str = "wasm-host:app/lifecycle@0.1.0";

/// The imported interface telling a version about itself.
const INFO: &str = "wasm-host:app/info@0.1.0";

/// Adds the `info` interface to `linker`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let mut info = linker.instance(INFO)?;
    info.func_wrap("generation", |store, (): ()| {
        Ok((store.data().generation(),))
    })?;
    info.func_wrap("app-name", |store, (): ()| {
        Ok((store.data().app_name().to_string(),))
    })?;
    Ok(())
}

/// Whether `component` exports the hook `name` (`init` or `drain`).
pub fn exports_hook(component: &Component, name: &str) -> bool {
    hook_index(component, name).is_some()
}

fn hook_index(component: &Component, name: &str) -> Option<ComponentExportIndex> {
    let interface = component.get_export_index(None, LIFECYCLE)?;
    component.get_export_index(Some(&interface), name)
}

/// Calls `init` on `instance`, if the component has it. The outer error is a
/// trap; the inner one is the guest's own refusal.
pub async fn init(
    store: &mut Store<HostState>,
    component: &Component,
    instance: &Instance,
) -> Result<Result<(), String>> {
    let Some(index) = hook_index(component, "init") else {
        return Ok(Ok(()));
    };
    let func = instance.get_typed_func::<(), (Result<(), String>,)>(&mut *store, &index)?;
    let (outcome,) = func.call_async(&mut *store, ()).await?;
    Ok(outcome)
}

/// Calls `drain` on `instance`, if the component has it.
pub async fn drain(
    store: &mut Store<HostState>,
    component: &Component,
    instance: &Instance,
) -> Result<()> {
    let Some(index) = hook_index(component, "drain") else {
        return Ok(());
    };
    let func = instance.get_typed_func::<(), ()>(&mut *store, &index)?;
    func.call_async(&mut *store, ()).await?;
    Ok(())
}
