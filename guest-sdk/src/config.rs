//! The app's runtime settings from the host (`wasi:config`), so a build
//! need not bake them in. Set them with `--config-var KEY=VALUE` or an app's
//! `[app.NAME.config]` table; changing one is a reload of that app.

use crate::__bindings::wasi::config::store;

/// The value of `key`, if the host sets it.
pub fn get(key: &str) -> Result<Option<String>, String> {
    store::get(key).map_err(describe)
}

/// Every value the host sets, as `(key, value)` pairs.
pub fn get_all() -> Result<Vec<(String, String)>, String> {
    store::get_all().map_err(describe)
}

fn describe(e: store::Error) -> String {
    match e {
        store::Error::Upstream(text) | store::Error::Io(text) => text,
    }
}
