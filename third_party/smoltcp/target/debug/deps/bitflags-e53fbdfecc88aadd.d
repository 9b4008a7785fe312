/work/main/third_party/smoltcp/target/debug/deps/bitflags-e53fbdfecc88aadd.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bitflags-1.3.2/src/lib.rs

/work/main/third_party/smoltcp/target/debug/deps/libbitflags-e53fbdfecc88aadd.rlib: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bitflags-1.3.2/src/lib.rs

/work/main/third_party/smoltcp/target/debug/deps/libbitflags-e53fbdfecc88aadd.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bitflags-1.3.2/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bitflags-1.3.2/src/lib.rs:
