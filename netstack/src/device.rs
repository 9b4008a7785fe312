//! A smoltcp device whose wire is two packet queues: the peer table fills `rx` with decrypted
//! packets and drains `tx` to encrypt them.

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
}

/// Hands one received packet to smoltcp.
pub struct RxToken(Vec<u8>);
/// Lets smoltcp emit one packet.
pub struct TxToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::Device for QueueDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let packet = self.rx.pop_front()?;
        Some((RxToken(packet), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut self.tx))
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

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = vec![0; len];
        let result = f(&mut packet);
        self.0.push_back(packet);
        result
    }
}
