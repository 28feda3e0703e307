//! The GPU buffer pool: storage buffers filed by byte size, so a training step, which makes
//! the same sizes every time, allocates nothing after the first step.
//!
//! A buffer is recycled as soon as its tensor is dropped, even if recorded commands still use
//! it: the next user records its commands later, and the GPU runs commands in recording order.
//! The pool holds at most `GANFORGE_GPU_POOL_MB` MiB (default 2048); beyond that, dropped
//! buffers are released to wgpu (which frees them once no command uses them).

use std::collections::HashMap;

pub(crate) struct BufferPool {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    held: u64,
    max: u64,
    hits: u64,
    misses: u64,
}

impl BufferPool {
    pub(crate) fn new() -> Self {
        let mb = std::env::var("GANFORGE_GPU_POOL_MB")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(2048);
        BufferPool {
            free: HashMap::new(),
            held: 0,
            max: mb << 20,
            hits: 0,
            misses: 0,
        }
    }

    /// A free buffer of exactly `bytes` bytes, if one is held.
    pub(crate) fn take(&mut self, bytes: u64) -> Option<wgpu::Buffer> {
        match self.free.get_mut(&bytes).and_then(|v| v.pop()) {
            Some(b) => {
                self.held -= bytes;
                self.hits += 1;
                Some(b)
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    /// Keeps `b` for reuse (or lets it go when the pool is full).
    pub(crate) fn recycle(&mut self, b: wgpu::Buffer) {
        let bytes = b.size();
        if self.held + bytes > self.max {
            return;
        }
        self.held += bytes;
        self.free.entry(bytes).or_default().push(b);
    }

    /// (hits, misses, bytes held).
    pub(crate) fn stats(&self) -> (u64, u64, u64) {
        (self.hits, self.misses, self.held)
    }
}
