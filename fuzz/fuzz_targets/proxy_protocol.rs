//! PROXY protocol v1 lines and v2 blocks, as a load balancer (or a stranger) sends them.
#![no_main]
use kakuremichi_proto::proxy_protocol::{parse_v1, parse_v2, v2_block_len};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = parse_v1(bytes);
    if let Some(head) = bytes.get(..16).and_then(|h| <&[u8; 16]>::try_from(h).ok()) {
        if let Ok(len) = v2_block_len(head) {
            if let Some(block) = bytes.get(16..16 + len) {
                let _ = parse_v2(head, block);
            }
        }
        let _ = parse_v2(head, &bytes[16..]);
    }
});
