//! The JSON messages on the control WebSocket, both ways: never panics, and what decodes
//! encodes back to a message that decodes the same.
#![no_main]
use kakuremichi_proto::messages::{decode, encode, ControlMessage, NodeMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(message) = decode::<NodeMessage>(text) {
        let again = encode(&message);
        assert!(decode::<NodeMessage>(&again).is_ok(), "{again}");
    }
    if let Ok(message) = decode::<ControlMessage>(text) {
        let again = encode(&message);
        assert!(decode::<ControlMessage>(&again).is_ok(), "{again}");
    }
});
