//! The WASI 0.3 (`wasi:http/service`) throughput rows: which servers they
//! compare, on which component.
//!
//! Both servers run the same file, `hello-p3-plain` (it imports nothing but
//! WASI, so `wasmtime serve` can link it), each with its own defaults:
//! wasm-host runs up to 16 requests at once on one instance and replaces it
//! after 1000; `wasmtime serve` 48 does the same with 16 and 128. The
//! measuring itself is the throughput and cold sections' code.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::servers::{Kind, Tools};

/// Where the examples build puts the 0.3 hello.
const HELLO: &str = "examples/target/wasm32-wasip2/release/hello-p3-plain.wasm";

/// The 0.3 hello stamped `v1` (answering `hello v1 from 0.3`), written
/// into `scratch`; its path.
pub fn hello(repo: &Path, scratch: &Path) -> Result<PathBuf> {
    let built = std::fs::read(repo.join(HELLO)).context("hello-p3-plain.wasm was not built")?;
    let stamped = stamp::restamp(&built, "v1").context("hello-p3-plain.wasm carries no stamp")?;
    let path = scratch.join("hello-p3-plain.wasm");
    std::fs::write(&path, stamped)?;
    Ok(path)
}

/// The servers of the 0.3 rows, by name: the same names as the 0.2 rows,
/// so the report's ratio lines read alike. No tuned `wasmtime serve`: the
/// issue's 0.3 target is against its defaults, and with instances reused
/// across requests the pooling flags that helped 0.2 matter little.
pub fn contenders(tools: &Tools) -> Vec<(&'static str, Kind)> {
    let mut list = vec![("wasm-host", Kind::WasmHost(vec![]))];
    if tools.wasmtime.is_some() {
        list.push(("wasmtime serve (defaults)", Kind::Wasmtime(vec![])));
    }
    // In the same rounds as the others, so its ratio shares their machine
    // state (the 0.2 rows' ceiling is another run).
    list.push(("native hyper (ceiling)", Kind::Native));
    list
}
