//! An app that takes part in its own reload through the lifecycle hooks.
//!
//! Its `init` refuses to start when its setting `GREETING` is missing
//! (`wasm-host serve --env GREETING=hi …` provides it), and `drain` says
//! goodbye on stderr. For the tests, the version stamp can make `init`
//! misbehave too: a version stamped `bad…` refuses, `trap…` panics, and
//! `hang…` never returns (so the ready timeout refuses it).
use wasm_host_sdk::{Request, app_name, generation};

fn init() -> Result<(), String> {
    let version = stamp::version();
    if std::env::var("GREETING").is_err() {
        return Err(format!(
            "the setting GREETING is missing in {version}: serve with --env GREETING=..."
        ));
    }
    if version.starts_with("bad") {
        return Err(format!("{version} refuses to start"));
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
        generation(),
        app_name()
    );
}

fn greet(_request: Request) -> String {
    let greeting = std::env::var("GREETING").unwrap_or_default();
    format!(
        "{greeting}: lifecycle {} generation {}\n",
        stamp::version(),
        generation()
    )
}

wasm_host_sdk::app! {
    handler: greet,
    init: init,
    drain: drain,
}
