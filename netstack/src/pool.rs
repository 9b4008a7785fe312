//! Recycled packet buffers.
//!
//! A bulk transfer moves about 100,000 packets a second each way, each once as a datagram and
//! once as an IP packet. Allocating and freeing a buffer for each costs little with glibc, but
//! musl's allocator (our static builds) hands emptied pages back to the kernel and faults them
//! in again: a third of the CPU went to `munmap` and page faults. Buffers now go round.

/// Room for one datagram or IP packet at the tunnel MTU, with WireGuard's overhead.
const PACKET_CAPACITY: usize = 1536;
/// Buffers kept for reuse; more than one burst in flight needs.
const MAX_POOLED: usize = 4096;

/// Spare packet buffers, empty but with capacity.
#[derive(Default)]
pub struct PacketPool {
    free: Vec<Vec<u8>>,
    /// The fewest spare buffers since the last [`PacketPool::trim`]: that many were not
    /// needed at all in the period.
    low_water: usize,
}

impl PacketPool {
    /// An empty buffer with room for a packet.
    pub fn take(&mut self) -> Vec<u8> {
        let buffer = self
            .free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(PACKET_CAPACITY));
        self.low_water = self.low_water.min(self.free.len());
        buffer
    }

    /// A pooled buffer holding a copy of `bytes`.
    pub fn copy_of(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut buffer = self.take();
        buffer.extend_from_slice(bytes);
        buffer
    }

    /// Let go of the buffers no one took since the last call: a burst fills the pool (up
    /// to 6 MB), and memory must come back once it is over. Called every few seconds, it
    /// leaves steady traffic its buffers.
    pub fn trim(&mut self) {
        let unused = self.low_water.min(self.free.len());
        self.free.truncate(self.free.len() - unused);
        if self.free.is_empty() {
            self.free = Vec::new();
        }
        self.low_water = self.free.len();
    }

    /// Spare buffers held.
    pub fn len(&self) -> usize {
        self.free.len()
    }

    /// Whether no spare buffer is held.
    pub fn is_empty(&self) -> bool {
        self.free.is_empty()
    }

    /// Return a buffer for reuse. Odd sizes (a rare jumbo datagram) are let go.
    pub fn give(&mut self, mut buffer: Vec<u8>) {
        if self.free.len() < MAX_POOLED && buffer.capacity() <= 2 * PACKET_CAPACITY {
            buffer.clear();
            self.free.push(buffer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming_lets_go_of_what_a_period_did_not_use() {
        let mut pool = PacketPool::default();
        let burst: Vec<_> = (0..100).map(|_| pool.take()).collect();
        burst.into_iter().for_each(|b| pool.give(b));
        assert_eq!(pool.len(), 100);
        pool.trim(); // the burst's own period: all were in use at its low point
        assert_eq!(pool.len(), 100);
        // Steady traffic of 10 buffers at a time keeps 10.
        let steady: Vec<_> = (0..10).map(|_| pool.take()).collect();
        steady.into_iter().for_each(|b| pool.give(b));
        pool.trim();
        assert_eq!(pool.len(), 10);
        pool.trim(); // a quiet period
        assert!(pool.is_empty());
    }
}
