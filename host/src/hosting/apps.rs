//! The apps one host runs, by name: where the control socket and the admin
//! listener look an app up.
//!
//! Only a lookup table (and whether a binary upgrade is under way, which
//! holds changes back). It never starts, reloads or stops an app.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;

use crate::app::App;

/// The apps of one host.
pub struct Apps {
    apps: ArcSwap<Vec<Arc<App>>>,
    /// A successor is loading what the apps run now: a change made here
    /// meanwhile would not reach it.
    upgrading: AtomicBool,
}

impl Apps {
    /// A table of `apps`.
    pub fn new(apps: Vec<Arc<App>>) -> Self {
        Self {
            apps: ArcSwap::from_pointee(apps),
            upgrading: AtomicBool::new(false),
        }
    }

    /// Marks a binary upgrade as under way (or over).
    pub fn set_upgrading(&self, on: bool) {
        self.upgrading.store(on, Ordering::Release);
    }

    /// Refuses a change while a binary upgrade is under way.
    pub fn check_not_upgrading(&self) -> Result<(), String> {
        if self.upgrading.load(Ordering::Acquire) {
            return Err("the host binary is being upgraded, and a change now would not reach the new process; ask again once `wasm-host upgrade` has finished".into());
        }
        Ok(())
    }

    /// Every app, in the order they were started.
    pub fn all(&self) -> Arc<Vec<Arc<App>>> {
        self.apps.load_full()
    }

    /// Replaces the table, e.g. after apps were added or removed.
    pub fn set(&self, apps: Vec<Arc<App>>) {
        self.apps.store(Arc::new(apps));
    }

    /// The app called `name`; without a name, the only app. The error says
    /// which names exist.
    pub fn find(&self, name: Option<&str>) -> Result<Arc<App>, String> {
        let apps = self.apps.load();
        let names = || {
            apps.iter()
                .map(|a| a.name().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match name {
            Some(name) => apps
                .iter()
                .find(|a| a.name() == name)
                .cloned()
                .ok_or_else(|| {
                    format!("this host runs no app named `{name}`; it runs: {}", names())
                }),
            None if apps.len() == 1 => Ok(apps[0].clone()),
            None => Err(format!(
                "this host runs several apps ({}); name the one you mean",
                names()
            )),
        }
    }
}
