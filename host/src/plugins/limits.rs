//! What one plugin instance may hold: all of its linear memories and tables
//! together are counted against its memory cap (`memory_mib`), and the number of
//! memories, tables and core instances is bounded, so a component cannot get around
//! the cap by spreading across many memories or a huge table.

use wasmtime::ResourceLimiter;

/// Bytes a table slot is counted as (a function or resource reference).
const TABLE_SLOT_BYTES: usize = 16;
/// Slots one table may have, whatever the cap.
const MAX_TABLE_SLOTS: usize = 1_000_000;
/// Linear memories, tables and core instances one plugin instance may create. A
/// component from Rust has one or two memories; componentize-py and -js ones a few
/// more, from their adapters.
const MAX_MEMORIES: usize = 16;
const MAX_TABLES: usize = 64;
const MAX_INSTANCES: usize = 128;

/// Refuses growth past the cap and remembers that it did, so a trap that follows is
/// reported as the cap, not as a generic trap.
pub struct MemoryCap {
    bytes: usize,
    /// Bytes of every memory and table so far (they never shrink).
    used: usize,
    pub hit: bool,
}

impl MemoryCap {
    pub fn new(bytes: usize) -> MemoryCap {
        MemoryCap {
            bytes,
            used: 0,
            hit: false,
        }
    }

    /// Bytes of every memory and table so far.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Takes `more` bytes if they fit under the cap.
    fn take(&mut self, more: usize) -> bool {
        match self.used.checked_add(more) {
            Some(total) if total <= self.bytes => {
                self.used = total;
                true
            }
            _ => {
                self.hit = true;
                false
            }
        }
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.take(desired.saturating_sub(current)))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_SLOTS {
            self.hit = true;
            return Ok(false);
        }
        Ok(self.take(
            desired
                .saturating_sub(current)
                .saturating_mul(TABLE_SLOT_BYTES),
        ))
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::{Config, Engine, Instance, Module, Store};

    const PAGE: usize = 64 * 1024;

    /// Instantiates `wat` in a store capped at `cap` bytes; the error, if any.
    fn instantiate(wat: &str, cap: usize) -> (Result<Instance, String>, Store<MemoryCap>) {
        let mut config = Config::new();
        // Bytes the limiter is asked about are what the module declares.
        config.memory_reservation(0);
        let engine = Engine::new(&config).unwrap();
        let module = Module::new(&engine, wat::parse_str(wat).unwrap()).unwrap();
        let mut store = Store::new(&engine, MemoryCap::new(cap));
        store.limiter(|cap| cap);
        let instance = Instance::new(&mut store, &module, &[]).map_err(|e| format!("{e:#}"));
        (instance, store)
    }

    #[test]
    fn every_memory_counts_against_one_cap() {
        // Four memories of 4 pages each: 16 pages in all, under a 20-page cap...
        let four = "(module (memory 4) (memory 4) (memory 4) (memory 4))";
        let (ok, store) = instantiate(four, 20 * PAGE);
        assert!(ok.is_ok(), "{ok:?}");
        assert_eq!(store.data().used, 16 * PAGE);
        // ...but not under a 10-page one, though each alone fits.
        let (refused, store) = instantiate(four, 10 * PAGE);
        assert!(refused.is_err());
        assert!(store.data().hit);
    }

    #[test]
    fn many_memories_and_huge_tables_are_refused() {
        let many: String = format!("(module {})", "(memory 0) ".repeat(MAX_MEMORIES + 1));
        let (refused, _) = instantiate(&many, 1 << 30);
        assert!(refused.unwrap_err().contains("memory"), "too many memories");
        // A table of 2 million slots: past the slots any table may have.
        let (refused, store) = instantiate("(module (table 2000000 funcref))", 1 << 30);
        assert!(refused.is_err());
        assert!(store.data().hit);
        // A table of 500,000 slots is 8 MB: it counts against a 4 MB cap.
        let (refused, store) = instantiate("(module (table 500000 funcref))", 4 << 20);
        assert!(refused.is_err());
        assert!(store.data().hit);
        // Growing a table at run time is counted too.
        let grow = "(module (table 1 funcref) (func (export \"grow\") (result i32) (table.grow 0 (ref.null func) (i32.const 400000))))";
        let (instance, mut store) = instantiate(grow, 4 << 20);
        let grow = instance
            .unwrap()
            .get_typed_func::<(), i32>(&mut store, "grow")
            .unwrap();
        assert_eq!(grow.call(&mut store, ()).unwrap(), -1, "growth refused");
        assert!(store.data().hit);
    }
}
