//! How a `udp` tunnel's datagrams cross the overlay: a gateway keeps one overlay TCP
//! connection per tunnel port to the agent's service port and sends each datagram on it as a
//! frame naming the client flow it belongs to; the agent answers on the same connection.
//!
//! A frame is `flow: u32 BE`, `length: u16 BE`, then `length` bytes. A length of
//! [`END_OF_FLOW`], which no datagram can have, ends the flow instead: the gateway forgot the
//! client after its idle timeout, so the agent closes the flow's socket. Carrying datagrams in a
//! stream inside WireGuard costs head-of-line waiting when the overlay loses a packet, but
//! keeps the agent's netstack TCP-only and reuses its flow control; public clients still see
//! plain UDP, loss and all, on their side.

/// The largest datagram a tunnel carries: the most an IPv4 UDP datagram can hold. Larger
/// datagrams cannot exist on the public side; anything over the path MTU is fragmented by
/// the kernel on the last hop, as it would be without the tunnel.
pub const MAX_DATAGRAM: usize = 65_507;
/// Bytes before each datagram.
pub const FRAME_HEADER: usize = 6;
/// The length that marks a flow's end.
pub const END_OF_FLOW: u16 = u16::MAX;

/// One frame on a datagram carrier.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A datagram of a flow.
    Datagram(u32, &'a [u8]),
    /// The flow is over.
    End(u32),
}

/// A frame that cannot be one: the peer is broken or not a kakuremichi node.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("a datagram frame of {0} bytes exceeds {MAX_DATAGRAM}")]
pub struct FrameTooLarge(pub usize);

/// Append one frame to `out`. Datagrams over [`MAX_DATAGRAM`] are refused.
pub fn encode(flow: u32, datagram: &[u8], out: &mut Vec<u8>) -> Result<(), FrameTooLarge> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(FrameTooLarge(datagram.len()));
    }
    out.extend_from_slice(&flow.to_be_bytes());
    out.extend_from_slice(&(datagram.len() as u16).to_be_bytes());
    out.extend_from_slice(datagram);
    Ok(())
}

/// Append the frame that ends `flow`.
pub fn encode_end(flow: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(&flow.to_be_bytes());
    out.extend_from_slice(&END_OF_FLOW.to_be_bytes());
}

/// The first whole frame in `buffer` and how many bytes it took; `Ok(None)` until a whole
/// frame has arrived.
pub fn decode(buffer: &[u8]) -> Result<Option<(Frame<'_>, usize)>, FrameTooLarge> {
    let Some(header) = buffer.get(..FRAME_HEADER) else {
        return Ok(None);
    };
    let flow = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let length = u16::from_be_bytes([header[4], header[5]]);
    if length == END_OF_FLOW {
        return Ok(Some((Frame::End(flow), FRAME_HEADER)));
    }
    let length = usize::from(length);
    if length > MAX_DATAGRAM {
        return Err(FrameTooLarge(length));
    }
    Ok(buffer
        .get(FRAME_HEADER..FRAME_HEADER + length)
        .map(|datagram| (Frame::Datagram(flow, datagram), FRAME_HEADER + length)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_wait_for_the_whole_frame() {
        let mut wire = Vec::new();
        encode(7, b"query", &mut wire).unwrap();
        encode(u32::MAX, b"", &mut wire).unwrap();
        for cut in 0..FRAME_HEADER + 5 {
            assert_eq!(decode(&wire[..cut]), Ok(None), "cut at {cut}");
        }
        encode_end(9, &mut wire);
        let (frame, used) = decode(&wire).unwrap().unwrap();
        assert_eq!((frame, used), (Frame::Datagram(7, b"query"), 11));
        let (frame, second) = decode(&wire[used..]).unwrap().unwrap();
        assert_eq!(
            (frame, second),
            (Frame::Datagram(u32::MAX, b""), FRAME_HEADER)
        );
        let (frame, third) = decode(&wire[used + second..]).unwrap().unwrap();
        assert_eq!((frame, third), (Frame::End(9), FRAME_HEADER));
    }

    #[test]
    fn arbitrary_bytes_decode_to_frames_or_errors_without_panicking() {
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        for round in 0..20_000 {
            let bytes = crate::noise(&mut seed, round % 64);
            let mut rest = &bytes[..];
            // Every frame found takes at least its header, so this ends.
            while let Ok(Some((_, used))) = decode(rest) {
                assert!(used >= FRAME_HEADER && used <= rest.len());
                rest = &rest[used..];
            }
        }
    }

    #[test]
    fn oversized_frames_are_refused_both_ways() {
        let mut wire = Vec::new();
        assert_eq!(
            encode(1, &vec![0; MAX_DATAGRAM + 1], &mut wire),
            Err(FrameTooLarge(MAX_DATAGRAM + 1))
        );
        assert!(wire.is_empty());
        assert_eq!(
            decode(&[0, 0, 0, 1, 0xff, 0xfe]),
            Err(FrameTooLarge(65_534))
        );
    }
}
