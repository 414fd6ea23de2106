//! An app that takes part in its own reload through the host's
//! `wasm-host:app/lifecycle` hooks (see `wit/app.wit`).
//!
//! Its `init` refuses to start when its setting is missing, and `drain`
//! says goodbye on stderr. The setting here is the version stamp itself:
//! a version stamped `bad…` lacks it, `trap…` panics in `init`, and
//! `hang…` never returns from `init` (so the ready timeout refuses it).
use wstd::http::{Body, Error, Request, Response};

mod bindings {
    wit_bindgen::generate!({ path: "../../wit/app.wit", world: "hooks" });
}

use bindings::wasm_host::app::info;

struct Hooks;

impl bindings::exports::wasm_host::app::lifecycle::Guest for Hooks {
    fn init() -> Result<(), String> {
        let version = stamp::version();
        if version.starts_with("bad") {
            return Err(format!("the setting GREETING is missing in {version}"));
        }
        if version.starts_with("trap") {
            panic!("init of {version} traps");
        }
        if version.starts_with("hang") {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        Ok(())
    }

    fn drain() {
        eprintln!(
            "drain: generation {} of {} says goodbye",
            info::generation(),
            info::app_name()
        );
    }
}

bindings::export!(Hooks with_types_in bindings);

#[wstd::http_server]
async fn main(_request: Request<Body>) -> Result<Response<Body>, Error> {
    Ok(Response::new(
        format!(
            "lifecycle {} generation {}\n",
            stamp::version(),
            info::generation()
        )
        .into(),
    ))
}
