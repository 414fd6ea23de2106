//! The host's side of the app: what a version may learn about itself
//! (`wasm-host:app/info`) and how the `init`/`drain` functions an app names
//! in [`app!`](crate::app) are run for `wasm-host:app/lifecycle`.

use std::fmt::Display;
use std::future::Future;

use crate::__bindings::wasm_host::app::info;
use crate::handler::{Awaited, Plain};

/// This version's generation: 1 for the first version the host loaded, one
/// more for each reload since.
pub fn generation() -> u64 {
    info::generation()
}

/// The app's name, as the host knows it (the component file's stem unless
/// configured otherwise).
pub fn app_name() -> String {
    info::app_name()
}

/// What a lifecycle hook may return: `()` or `Result<(), E>` whose error
/// text the host shows to whoever asked for the reload.
pub trait HookOutcome {
    /// The outcome in the host's terms.
    fn into_outcome(self) -> Result<(), String>;
}

impl HookOutcome for () {
    fn into_outcome(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: Display> HookOutcome for Result<(), E> {
    fn into_outcome(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

/// A lifecycle hook: a function taking nothing, sync or `async`, returning
/// a [`HookOutcome`]. `M` tells the two forms apart and is inferred.
pub trait Hook<M> {
    /// Runs the hook to its end.
    fn run(self) -> Result<(), String>;
}

impl<F, R> Hook<(Plain, R)> for F
where
    F: FnOnce() -> R,
    R: HookOutcome,
{
    fn run(self) -> Result<(), String> {
        self().into_outcome()
    }
}

impl<F, Fut> Hook<(Awaited, Fut)> for F
where
    F: FnOnce() -> Fut,
    Fut: Future,
    Fut::Output: HookOutcome,
{
    fn run(self) -> Result<(), String> {
        wstd::runtime::block_on(self()).into_outcome()
    }
}

/// Runs the app's `init`.
pub fn run_init<M>(hook: impl Hook<M>) -> Result<(), String> {
    hook.run()
}

/// Runs the app's `drain`; the host has no use for a failure, so it is
/// logged.
pub fn run_drain<M>(hook: impl Hook<M>) {
    if let Err(e) = hook.run() {
        eprintln!("wasm-host-sdk: drain failed: {e}");
    }
}
