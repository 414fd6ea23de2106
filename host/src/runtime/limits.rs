//! The resource limiter of one store: the app's memory limit per linear
//! memory (`max_memory`), and a record of how large the store's memories
//! were made and have grown, which decides when a reused instance has
//! grown enough to be replaced by a fresh one.
//!
//! It limits and measures; it never drops or resets an instance itself.

use wasmtime::{ResourceLimiter, Result};

/// A store's limiter. Wasmtime reports each memory's initial size as a
/// growth from zero, which is how [`Limits::memory_at_start`] knows it.
#[derive(Debug, Default)]
pub struct Limits {
    /// The largest a linear memory may grow, if the app sets a limit.
    max_memory: Option<usize>,
    /// The size of the largest memory seen so far, in bytes.
    memory: usize,
    /// The initial size of the largest memory made, in bytes.
    at_start: usize,
}

impl Limits {
    /// Caps each linear memory at `bytes`.
    pub fn limit_memory(&mut self, bytes: usize) {
        self.max_memory = Some(bytes);
    }

    /// The size of the store's largest linear memory so far, in bytes
    /// (0 before anything was instantiated).
    pub fn memory(&self) -> usize {
        self.memory
    }

    /// The initial size of the store's largest linear memory, in bytes.
    pub fn memory_at_start(&self) -> usize {
        self.at_start
    }
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool> {
        if self.max_memory.is_some_and(|max| desired > max) {
            // The guest's `memory.grow` returns -1, as it would at the
            // memory's own maximum: the guest decides what to do.
            return Ok(false);
        }
        if current == 0 {
            self.at_start = self.at_start.max(desired);
        }
        self.memory = self.memory.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool> {
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_past_the_limit_is_refused_and_not_recorded() {
        let mut limits = Limits::default();
        limits.limit_memory(1 << 20);
        assert!(limits.memory_growing(0, 64 << 10, None).unwrap());
        assert!(!limits.memory_growing(64 << 10, 2 << 20, None).unwrap());
        assert_eq!(limits.memory(), 64 << 10);
    }

    #[test]
    fn the_largest_memory_is_recorded_without_a_limit() {
        let mut limits = Limits::default();
        assert!(limits.memory_growing(0, 9 << 20, None).unwrap());
        assert!(limits.memory_growing(0, 1 << 20, None).unwrap());
        assert!(limits.memory_growing(9 << 20, 12 << 20, None).unwrap());
        assert_eq!(limits.memory(), 12 << 20);
        // Made at 9 MiB (the largest of the two made), grown since.
        assert_eq!(limits.memory_at_start(), 9 << 20);
    }
}
