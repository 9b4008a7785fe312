//! The frames udp tunnels' datagrams travel in: a stream of them never panics the decoder,
//! and every frame decoded lies inside the buffer.
#![no_main]
use kakuremichi_proto::datagrams::{decode, Frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let mut rest = bytes;
    while let Ok(Some((frame, used))) = decode(rest) {
        assert!(used > 0 && used <= rest.len());
        if let Frame::Datagram(_, datagram) = frame {
            assert!(datagram.len() < used);
        }
        rest = &rest[used..];
    }
});
