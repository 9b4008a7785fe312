//! A smoltcp device whose wire is two packet queues: the peer table fills `rx` with decrypted
//! packets and drains `tx` to encrypt them. Buffers come from and go back to pools.

use crate::pool::PacketPool;
use smoltcp::phy::{self, Checksum, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use std::collections::VecDeque;

/// IP packets in both directions between smoltcp and the peer table.
#[derive(Default)]
pub struct QueueDevice {
    /// Packets waiting for smoltcp.
    pub rx: VecDeque<Vec<u8>>,
    /// Packets smoltcp emitted.
    pub tx: VecDeque<Vec<u8>>,
    /// Received packets smoltcp is done with, for their pool.
    pub spent: Vec<Vec<u8>>,
    /// Buffers for emitted packets.
    pub pool: PacketPool,
}

/// Hands one received packet to smoltcp.
pub struct RxToken<'a> {
    packet: Vec<u8>,
    spent: &'a mut Vec<Vec<u8>>,
}
/// Lets smoltcp emit one packet.
pub struct TxToken<'a> {
    queue: &'a mut VecDeque<Vec<u8>>,
    pool: &'a mut PacketPool,
}

impl phy::Device for QueueDevice {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let packet = self.rx.pop_front()?;
        Some((
            RxToken {
                packet,
                spent: &mut self.spent,
            },
            TxToken {
                queue: &mut self.tx,
                pool: &mut self.pool,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        Some(TxToken {
            queue: &mut self.tx,
            pool: &mut self.pool,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = crate::TUNNEL_MTU;
        // Every received packet was authenticated end to end by WireGuard's Poly1305, which
        // catches far more than a 16-bit checksum; verifying it again cost 5% of the agent's
        // CPU. Outgoing checksums are still computed: kernel stacks behind other WireGuard
        // peers check them.
        caps.checksum.ipv4 = Checksum::Tx;
        caps.checksum.tcp = Checksum::Tx;
        caps
    }
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let result = f(&self.packet);
        self.spent.push(self.packet);
        result
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = self.pool.take();
        packet.resize(len, 0);
        let result = f(&mut packet);
        self.queue.push_back(packet);
        result
    }
}
