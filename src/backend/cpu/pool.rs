//! A pool of CPU buffers, so a steady-state training step allocates nothing.
//!
//! Every step of a training loop creates tensors of the same sizes as the step before. When a
//! tensor's storage is dropped, its `Vec<f32>` comes back here (`impl Drop for Storage`), filed
//! by length; the next kernel that needs a buffer of that length takes it instead of asking the
//! allocator (and the OS, for large buffers: fresh pages fault and are zeroed on first touch).
//!
//! Buffers below [`MIN_POOLED_LEN`] elements go straight back to the allocator (cheap to make);
//! the pool holds at most `GANFORGE_POOL_MB` MiB (default 1024), dropping what would not fit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// Buffers shorter than this are not pooled.
pub const MIN_POOLED_LEN: usize = 4096;

struct Pool {
    free: HashMap<usize, Vec<Vec<f32>>>,
    pooled_bytes: usize,
    max_bytes: usize,
}

static POOL: OnceLock<Mutex<Pool>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);
static MISSES: AtomicU64 = AtomicU64::new(0);

fn pool() -> &'static Mutex<Pool> {
    POOL.get_or_init(|| {
        let mb = std::env::var("GANFORGE_POOL_MB")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1024);
        Mutex::new(Pool {
            free: HashMap::new(),
            pooled_bytes: 0,
            max_bytes: mb << 20,
        })
    })
}

/// A buffer of exactly `len` elements whose contents are unspecified (the caller overwrites
/// every element).
pub fn take(len: usize) -> Vec<f32> {
    if len >= MIN_POOLED_LEN {
        let mut p = pool().lock().unwrap();
        if let Some(v) = p.free.get_mut(&len).and_then(|list| list.pop()) {
            p.pooled_bytes -= len * 4;
            HITS.fetch_add(1, Ordering::Relaxed);
            return v;
        }
        MISSES.fetch_add(1, Ordering::Relaxed);
    }
    vec![0.0; len]
}

/// A buffer of `len` zeros.
pub fn take_zeroed(len: usize) -> Vec<f32> {
    let mut v = take(len);
    v.fill(0.0);
    v
}

/// Gives a buffer back for reuse.
pub fn recycle(v: Vec<f32>) {
    let len = v.len();
    if len < MIN_POOLED_LEN || v.capacity() != len {
        return;
    }
    let mut p = pool().lock().unwrap();
    if p.pooled_bytes + len * 4 > p.max_bytes {
        return;
    }
    p.pooled_bytes += len * 4;
    p.free.entry(len).or_default().push(v);
}

/// Counters of the pool since the process started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStats {
    /// Buffers served from the pool.
    pub hits: u64,
    /// Buffers of a poolable size that had to be allocated.
    pub misses: u64,
    /// Bytes held for reuse now.
    pub pooled_bytes: usize,
}

/// The pool's counters.
pub fn stats() -> PoolStats {
    PoolStats {
        hits: HITS.load(Ordering::Relaxed),
        misses: MISSES.load(Ordering::Relaxed),
        pooled_bytes: pool().lock().unwrap().pooled_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycled_buffers_are_reused_by_length() {
        let len = MIN_POOLED_LEN + 17;
        let v = take(len);
        let ptr = v.as_ptr();
        recycle(v);
        let again = take(len);
        assert_eq!(again.as_ptr(), ptr, "the same buffer comes back");
        assert_eq!(again.len(), len);
        let z = take_zeroed(len + 1);
        assert!(z.iter().all(|&x| x == 0.0));
        recycle(again);
        // A small buffer is not pooled.
        let small = take(10);
        recycle(small);
    }
}
