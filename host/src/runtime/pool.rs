//! The instance pool of one engine: how many instances, memories and
//! stacks it holds, and how a finished instance's linear memory goes back
//! to its starting contents, which is the hot path when every request gets
//! a fresh instance. Also which engine (and so which pool) a component
//! runs on: [`EngineKey`].
//!
//! This module only turns settings into a pool configuration; it creates
//! no engine and knows nothing of versions.

use std::thread;

use wasmtime::{Enabled, PoolingAllocationConfig};

use crate::runtime::image::{self, Image};
use crate::runtime::world::World;

/// Most memory one engine's pool may hold on the host's behalf after
/// guests are done with it, before it goes back to the kernel: split
/// between the engines (per tier, per world and memory pool).
///
/// wasmtime's pool does not return a finished instance's memory at once:
/// what lies beyond [`KEEP_RESIDENT`] is queued, and a queue is returned in
/// one batch once it holds [`PoolingAllocationConfig::decommit_batch_size`]
/// regions. Every memory adds at least one region, so one queue holds at
/// most `batch - 1` memories of up to `--max-memory` each, and there is one
/// queue per CPU (at most 16). A guest that runs out of memory leaves all of
/// `--max-memory` behind: with a fixed batch of 128, six such requests at
/// 512 MiB once left 3 GB resident. So the batch is derived from
/// `--max-memory` to keep queues × (batch − 1) × max-memory within this
/// budget (see [`decommit_batch_size`]).
pub const FREED_MEMORY_BUDGET: usize = 256 << 20;

/// Bytes of each linear memory the pool resets in place (a `memset` of the
/// pages written) instead of returning them to the kernel: small guests
/// then never pay for a page fault on their next request.
const KEEP_RESIDENT: usize = 4 << 20;

/// Largest decommit batch: beyond it, one more syscall saved per batch no
/// longer shows in throughput.
const MAX_DECOMMIT_BATCH: usize = 128;

/// The decommit batch for one pool whose memories grow to at most
/// `max_memory` bytes, so that what its `queues` hold stays within
/// `budget` bytes: 1 (return every memory at once) when even one memory
/// per queue would not fit, up to [`MAX_DECOMMIT_BATCH`] for small
/// memories.
pub fn decommit_batch_size(max_memory: usize, budget: usize, queues: usize) -> usize {
    let per_round = max_memory.max(1).saturating_mul(queues.max(1));
    (1 + budget / per_round).min(MAX_DECOMMIT_BATCH)
}

/// How many decommit queues wasmtime's pool keeps: one per CPU, at most 16
/// (wasmtime's `default_shard_count`, which is not public).
fn decommit_queues() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get().min(16))
}

/// Bytes of linear memory the snapshot pool copies back from the image in
/// place after each instance (see [`Memory::Snapshot`]): a componentize-js
/// component's memory (a ~9 MiB snapshot and the heap a request grows)
/// stays within it. The copy is of at most the memory's current size.
const SNAPSHOT_KEEP_RESIDENT: usize = 16 << 20;

/// How a pool puts a finished instance's linear memory back to its
/// starting contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memory {
    /// The pages the instance wrote are found (the kernel's PAGEMAP_SCAN)
    /// and reset in place, up to [`KEEP_RESIDENT`]; the rest go back to
    /// the kernel. Right for guests whose memory starts small.
    Dirty,
    /// For a component whose memory starts from a snapshot larger than
    /// [`KEEP_RESIDENT`] (componentize-js: ~9 MiB): the first
    /// [`SNAPSHOT_KEEP_RESIDENT`] bytes are copied back from the image
    /// whole, without a scan, and nothing in them goes back to the kernel.
    ///
    /// Why: StarlingMonkey writes ~80 pages per request scattered over
    /// ~47 runs, and wasmtime's scan stops at its 32nd run of written
    /// pages, so pages past it went back to the kernel after every request
    /// and faulted again on the next: ~96 page faults per request, most of
    /// them copy-on-write of a page mapped read-only, each flushing the TLB
    /// of every core running the host (an inter-processor interrupt, dear
    /// in a VM): 36% of the host's CPU. Measured on examples/js-app (debug
    /// host, `wrk -t1 -c16`, 2 cores): 872 req/s with the scan, 1802 req/s
    /// with this pool (0.4 faults per request; copying the memory back
    /// became the largest cost, 36% of CPU).
    ///
    /// The price: every memory this pool has used stays resident (~9 MiB
    /// for StarlingMonkey), so after a burst the host holds as many as the
    /// most instances that ran at once (534 MB after 50 concurrent slow
    /// requests) until later requests reuse them.
    Snapshot,
}

impl Memory {
    /// How the `version loaded` log line names it.
    pub fn name(self) -> &'static str {
        match self {
            Memory::Dirty => "written-pages",
            Memory::Snapshot => "snapshot-copy",
        }
    }
}

/// Which engine a component compiles and runs on: its WASI world, and for
/// 0.2 the memory pool its instances come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineKey {
    /// The world the engine serves.
    pub world: World,
    /// How the engine's pool resets a memory.
    pub memory: Memory,
}

impl EngineKey {
    /// WASI 0.2, memories reset by their written pages.
    pub const P2: EngineKey = EngineKey {
        world: World::P2,
        memory: Memory::Dirty,
    };
    /// WASI 0.2 from a large snapshot.
    pub const P2_SNAPSHOT: EngineKey = EngineKey {
        world: World::P2,
        memory: Memory::Snapshot,
    };
    /// WASI 0.3: an instance takes many requests, so its memory is reset
    /// rarely and one pool serves every 0.3 component.
    pub const P3: EngineKey = EngineKey {
        world: World::P3,
        memory: Memory::Dirty,
    };

    /// The engine for a component's `bytes`: the world they declare (see
    /// [`World::engine_for`]), and for 0.2 the snapshot pool when their
    /// initial memory reaches past [`KEEP_RESIDENT`].
    pub fn for_bytes(bytes: &[u8]) -> EngineKey {
        EngineKey::of(World::engine_for(bytes), image::read(bytes).as_ref())
    }

    /// The engine for a component of `world` whose bytes read as `image`
    /// (`None`: they could not be read).
    pub fn of(world: World, image: Option<&Image>) -> EngineKey {
        match world {
            World::P3 => EngineKey::P3,
            World::P2 => {
                let large = image.is_some_and(|image| image.memory_end > KEEP_RESIDENT as u64);
                if large {
                    EngineKey::P2_SNAPSHOT
                } else {
                    EngineKey::P2
                }
            }
        }
    }
}

/// The pool of one engine: `max_instances` instances at once, memories
/// of at most `max_memory` bytes reset as `memory` says, holding at most
/// `budget` bytes of freed memory (see [`FREED_MEMORY_BUDGET`]).
pub fn config(
    max_instances: u32,
    max_memory: usize,
    memory: Memory,
    budget: usize,
) -> PoolingAllocationConfig {
    let batch = decommit_batch_size(max_memory, budget, decommit_queues());
    tracing::debug!(
        batch,
        budget,
        ?memory,
        "decommit batch of the instance pool"
    );
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(max_instances)
        .total_core_instances(max_instances.saturating_mul(4))
        .total_memories(max_instances.saturating_mul(2))
        .total_tables(max_instances.saturating_mul(4))
        .total_stacks(max_instances)
        .max_memory_size(max_memory)
        // A fresh instance per request makes decommit the hot path: keep
        // memories and tables resident and reset them in place instead of
        // returning pages to the kernel, and batch the rest, as far as the
        // budget for freed memory allows.
        .table_keep_resident(1 << 20)
        .decommit_batch_size(batch);
    match memory {
        Memory::Dirty => pool
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .pagemap_scan(Enabled::Auto),
        // Every slot this pool has used keeps its memory resident, so an
        // instance without a slot of its own component's takes the least
        // recently used idle one (of a retired version, say) rather than
        // one never used: the pool then holds as many memories as
        // instances ran at once, not a new set per deployed version.
        Memory::Snapshot => pool
            .linear_memory_keep_resident(SNAPSHOT_KEEP_RESIDENT)
            .pagemap_scan(Enabled::No)
            .max_unused_warm_slots(0),
    };
    pool
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_memory_waiting_for_decommit_stays_within_the_budget() {
        for max_memory in [64 << 10, 1 << 20, 16 << 20, 64 << 20, 512 << 20, 4 << 30] {
            for queues in [1, 2, 8, 16] {
                let batch = decommit_batch_size(max_memory, FREED_MEMORY_BUDGET, queues);
                assert!((1..=MAX_DECOMMIT_BATCH).contains(&batch));
                // At most batch - 1 memories wait in each queue.
                let held = queues * (batch - 1) * max_memory;
                assert!(
                    held <= FREED_MEMORY_BUDGET,
                    "{max_memory} x {queues}: {batch}"
                );
            }
        }
        // The default 512 MiB returns each memory at once; small guests
        // still batch.
        assert_eq!(decommit_batch_size(512 << 20, FREED_MEMORY_BUDGET, 2), 1);
        assert_eq!(decommit_batch_size(1 << 20, FREED_MEMORY_BUDGET, 2), 128);
    }

    #[test]
    fn garbage_goes_to_the_03_engine() {
        // It is refused there for lacking a handler (see World::engine_for).
        assert_eq!(EngineKey::for_bytes(b"not wasm"), EngineKey::P3);
    }
}
