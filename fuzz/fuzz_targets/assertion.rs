//! Control's login assertions as a stranger sends them to a gateway's callback: never
//! panics, and none verifies without Control's key.
#![no_main]
use kakuremichi_proto::access::verify_assertion;
use libfuzzer_sys::fuzz_target;
use ring::signature::{Ed25519KeyPair, KeyPair};
use std::sync::OnceLock;

fn public_key() -> &'static [u8] {
    static KEY: OnceLock<Vec<u8>> = OnceLock::new();
    KEY.get_or_init(|| {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        pair.public_key().as_ref().to_vec()
    })
}

fuzz_target!(|token: &str| {
    assert!(verify_assertion(public_key(), token, "app.example.com", 1_000).is_err());
});
