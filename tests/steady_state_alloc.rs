//! A steady-state training step allocates no tensor-sized buffer: after the first steps, every
//! buffer of at least `pool::MIN_POOLED_LEN` f32s comes from the pool. Checked with a counting
//! global allocator (this test binary only), so a kernel that bypasses the pool is caught.
//! Small allocations (scalars, per-channel statistics, graph nodes) are outside the claim.

use ganforge::backend::cpu::pool;
use ganforge::bench::{Bench, Workload};
use ganforge::Device;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts allocations of at least `MIN_POOLED_LEN` f32s.
struct CountingAllocator;
static LARGE_ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
const LARGE: usize = pool::MIN_POOLED_LEN * 4;

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= LARGE {
            LARGE_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= LARGE {
            LARGE_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

#[test]
fn training_steps_allocate_no_large_buffer_in_steady_state() {
    for w in [Workload::W1, Workload::W4] {
        let mut bench = Bench::new(w, &Device::Cpu).unwrap();
        let step = |b: &mut Bench| match w {
            Workload::W4 => b.critic_step().and_then(|_| b.generator_step()),
            _ => b.gan_step(),
        };
        // Two steps fill the pool with every size a step uses.
        step(&mut bench).unwrap();
        step(&mut bench).unwrap();
        let (before, stats_before) = (LARGE_ALLOCATIONS.load(Ordering::Relaxed), pool::stats());
        step(&mut bench).unwrap();
        let (after, stats_after) = (LARGE_ALLOCATIONS.load(Ordering::Relaxed), pool::stats());
        assert!(
            stats_after.hits > stats_before.hits,
            "{w:?}: the pool was not used at all"
        );
        assert_eq!(
            after,
            before,
            "{w:?}: {} buffers of >= {LARGE} bytes were allocated in a steady-state step",
            after - before
        );
    }
}
