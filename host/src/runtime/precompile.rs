//! Optimized code made ahead of a deploy (`wasm-host compile`): a
//! component is compiled into the on-disk code cache that a host with the
//! same settings reads, so the reload that follows links in milliseconds
//! instead of compiling on a loaded machine.
//!
//! Compiles, stores and links (so a component that would not load says so
//! at build time); runs none of the guest's code.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::runtime::digest::Digest;
use crate::runtime::engine::Runtime;
use crate::runtime::pool::EngineKey;
use crate::runtime::version::{self, LoadError};
use crate::runtime::world::World;

/// What a precompile did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Precompiled {
    /// The component's content digest.
    pub digest: Digest,
    /// The world it serves.
    pub world: World,
    /// Its code was in the cache already; nothing was compiled.
    pub already: bool,
    /// Time to compile (or load) and link.
    pub took: Duration,
}

/// Why a precompile could not be done.
#[derive(Debug, thiserror::Error)]
pub enum PrecompileError {
    /// The runtime has no on-disk cache to fill.
    #[error("there is no code cache to fill (--no-cache?); give --cache-dir")]
    NoCache,
    /// The component would not load.
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// Compiles `bytes` with the optimized tier into `runtime`'s disk cache
/// and links it.
pub async fn precompile(
    runtime: &Runtime,
    bytes: Arc<[u8]>,
) -> Result<Precompiled, PrecompileError> {
    version::check_header(&bytes)?;
    let digest = Digest::of(&bytes);
    let key = EngineKey::for_bytes(&bytes);
    if runtime.code_cache(key).is_none() {
        return Err(PrecompileError::NoCache);
    }
    let started = Instant::now();
    let tier = runtime
        .tier(false, key)
        .map_err(|e| LoadError::Engine(format!("{e:#}")))?;
    let (_, from_disk) = version::link(runtime, tier, bytes, digest).await?;
    Ok(Precompiled {
        digest,
        world: key.world,
        already: from_disk,
        took: started.elapsed(),
    })
}
