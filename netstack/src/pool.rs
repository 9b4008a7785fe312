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
}

impl PacketPool {
    /// An empty buffer with room for a packet.
    pub fn take(&mut self) -> Vec<u8> {
        self.free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(PACKET_CAPACITY))
    }

    /// A pooled buffer holding a copy of `bytes`.
    pub fn copy_of(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut buffer = self.take();
        buffer.extend_from_slice(bytes);
        buffer
    }

    /// Return a buffer for reuse. Odd sizes (a rare jumbo datagram) are let go.
    pub fn give(&mut self, mut buffer: Vec<u8>) {
        if self.free.len() < MAX_POOLED && buffer.capacity() <= 2 * PACKET_CAPACITY {
            buffer.clear();
            self.free.push(buffer);
        }
    }
}
