//! Interop: kakuremichi's netstack is standard WireGuard. A wireguard-go interface in a
//! network namespace (keys set with `wg`, kernel TCP behind it) and our netstack on the host
//! complete a handshake, and TCP runs both ways: we connect to a kernel echo server, and a
//! kernel client connects to our echo listener. Needs root, `ip`, `wireguard-go` and `wg`
//! (scripts/install-deps installs them).

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use kakuremichi_netstack::{public_key_of, PeerSpec, Stack};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const OUR_OVERLAY_IP: Ipv4Addr = Ipv4Addr::new(10, 233, 0, 1);
const THEIR_OVERLAY_IP: Ipv4Addr = Ipv4Addr::new(10, 233, 0, 2);
const THEIR_ECHO_PORT: u16 = 7000;
const OUR_ECHO_PORT: u16 = 7001;
const PAYLOAD_BYTES: usize = 4 << 20;

/// Runs in the namespace: an echo server for us to connect to, and a client that sends to
/// our echo listener and checks what comes back.
const KERNEL_SIDE: &str = r#"
import hashlib, socket, sys, threading, time
payload = hashlib.shake_256(b"kakuremichi interop").digest(int(sys.argv[1]))
server = socket.socket(); server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("10.233.0.2", 7000)); server.listen(1)
def echo():
    conn, _ = server.accept()
    while True:
        data = conn.recv(65536)
        if not data: break
        conn.sendall(data)
    conn.close()
threading.Thread(target=echo, daemon=True).start()
print("listening", flush=True)
deadline = time.time() + 20
while True:
    try:
        client = socket.create_connection(("10.233.0.1", 7001), timeout=2); break
    except OSError:
        if time.time() > deadline: raise
        time.sleep(0.1)
client.settimeout(20)
def send():
    client.sendall(payload); client.shutdown(socket.SHUT_WR)
threading.Thread(target=send, daemon=True).start()
received = bytearray()
while True:
    data = client.recv(65536)
    if not data: break
    received += data
print("kernel client echo", "ok" if received == payload else "MISMATCH %d bytes" % len(received), flush=True)
time.sleep(3)
"#;

fn run(args: &[&str]) -> String {
    let output = Command::new(args[0])
        .args(&args[1..])
        .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e} (scripts/install-deps installs it)"));
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// A namespace with a veth link to the host and a wireguard-go interface; removed on drop.
struct Namespace {
    name: String,
    wireguard_go: Option<Child>,
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Some(mut child) = self.wireguard_go.take() {
            // SIGTERM, so wireguard-go removes its control socket (`ip netns exec` execs it:
            // the child's PID is wireguard-go's).
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn base64_key(text: &str) -> [u8; 32] {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .unwrap_or_else(|| panic!("not a WireGuard key: {text:?}"))
}

fn payload() -> Vec<u8> {
    // The same bytes the kernel side makes: SHAKE-256 of a fixed string, read from python.
    let out = Command::new("python3")
        .args([
            "-c",
            "import hashlib,sys; sys.stdout.buffer.write(hashlib.shake_256(b'kakuremichi interop').digest(int(sys.argv[1])))",
            &PAYLOAD_BYTES.to_string(),
        ])
        .output()
        .expect("python3");
    assert_eq!(out.stdout.len(), PAYLOAD_BYTES);
    out.stdout
}

#[test]
fn netstack_and_wireguard_go_carry_tcp_both_ways() {
    let pid = std::process::id();
    let subnet = 16 + pid % 200;
    let (host_veth, ns_veth) = (format!("kkio{pid}h"), format!("kkio{pid}n"));
    let wg_name = format!("kkwg{pid}");
    let ns = Namespace {
        name: format!("kkinterop{pid}"),
        wireguard_go: None,
    };
    let host_ip = format!("172.30.{subnet}.1");
    let ns_ip = format!("172.30.{subnet}.2");
    run(&["ip", "netns", "add", &ns.name]);
    run(&[
        "ip", "link", "add", &host_veth, "type", "veth", "peer", "name", &ns_veth,
    ]);
    run(&["ip", "link", "set", &ns_veth, "netns", &ns.name]);
    run(&[
        "ip",
        "addr",
        "add",
        &format!("{host_ip}/30"),
        "dev",
        &host_veth,
    ]);
    run(&["ip", "link", "set", &host_veth, "up"]);
    run(&[
        "ip",
        "-n",
        &ns.name,
        "addr",
        "add",
        &format!("{ns_ip}/30"),
        "dev",
        &ns_veth,
    ]);
    run(&["ip", "-n", &ns.name, "link", "set", &ns_veth, "up"]);
    run(&["ip", "-n", &ns.name, "link", "set", "lo", "up"]);

    let mut ns = ns;
    ns.wireguard_go = Some(
        Command::new("ip")
            .args(["netns", "exec", &ns.name, "wireguard-go", "-f", &wg_name])
            .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("wireguard-go (scripts/install-deps installs it)"),
    );
    let socket = format!("/var/run/wireguard/{wg_name}.sock");
    let started = Instant::now();
    while !std::path::Path::new(&socket).exists() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "wireguard-go made no {socket}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut our_key = [0u8; 32];
    getrandom::fill(&mut our_key).expect("randomness");
    let their_private = run(&["wg", "genkey"]);
    let key_file = std::env::temp_dir().join(format!("kkinterop-{pid}.key"));
    std::fs::write(&key_file, &their_private).expect("key file");
    let their_public = base64_key(&run(&[
        "sh",
        "-c",
        &format!("wg pubkey < {}", key_file.display()),
    ]));
    let our_public = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(public_key_of(&our_key))
    };

    smol::block_on(async {
        let bind: SocketAddr = format!("{host_ip}:0").parse().unwrap();
        let stack = Stack::bind(bind, our_key).await.expect("bind");
        let our_endpoint = stack.local_addr().to_string();
        run(&[
            "ip",
            "netns",
            "exec",
            &ns.name,
            "wg",
            "set",
            &wg_name,
            "private-key",
            key_file.to_str().unwrap(),
            "listen-port",
            "51820",
            "peer",
            &our_public,
            "allowed-ips",
            &format!("{OUR_OVERLAY_IP}/32"),
            "endpoint",
            &our_endpoint,
        ]);
        let _ = std::fs::remove_file(&key_file);
        run(&[
            "ip",
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{THEIR_OVERLAY_IP}/24"),
            "dev",
            &wg_name,
        ]);
        run(&[
            "ip", "-n", &ns.name, "link", "set", &wg_name, "mtu", "1420", "up",
        ]);

        stack.set_address(OUR_OVERLAY_IP, 24);
        stack.set_peers(&[PeerSpec {
            public_key: their_public,
            overlay_ip: THEIR_OVERLAY_IP,
            endpoint: Some(format!("{ns_ip}:51820").parse().unwrap()),
            persistent_keepalive: Some(25),
            incarnation: 0,
        }]);
        // Traffic starts once the handshake is done, so a failure below is about TCP.
        let handshake_started = Instant::now();
        while !stack.peer_stats().first().is_some_and(|p| p.is_up()) {
            assert!(
                handshake_started.elapsed() < Duration::from_secs(10),
                "no handshake with wireguard-go in 10 s: {:?}",
                stack.peer_stats()
            );
            async_io::Timer::after(Duration::from_millis(20)).await;
        }
        println!(
            "handshake with wireguard-go: {:?}",
            handshake_started.elapsed()
        );
        let listener = stack.listen(OUR_ECHO_PORT).expect("listen");
        let echo = smol::spawn(async move {
            let (stream, from) = listener.accept().await.expect("accept");
            let (reader, writer) = futures_lite::io::split(stream);
            let copied = kakuremichi_rt::copy::copy_one_way(reader, writer).await;
            (from, copied)
        });

        let kernel_side = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                "python3",
                "-c",
                KERNEL_SIDE,
                &PAYLOAD_BYTES.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 in the namespace");
        std::thread::sleep(Duration::from_millis(300));

        // We connect to the kernel's echo server and check our bytes come back.
        let expected = payload();
        let ours = async {
            let stream = stack
                .connect(SocketAddrV4::new(THEIR_OVERLAY_IP, THEIR_ECHO_PORT))
                .await
                .expect("connect to the echo server behind wireguard-go");
            let (mut reader, mut writer) = futures_lite::io::split(stream);
            let send = async {
                writer.write_all(&expected).await.expect("send");
                writer.close().await.expect("close");
            };
            let receive = async {
                let mut back = Vec::new();
                reader.read_to_end(&mut back).await.expect("receive");
                back
            };
            future::zip(send, receive).await.1
        };
        let deadline = async {
            async_io::Timer::after(Duration::from_secs(30)).await;
            panic!("TCP through wireguard-go did not finish in 30 s");
        };
        let back = future::or(ours, deadline).await;
        assert!(
            back == expected,
            "echo from the kernel side differs: {} of {} bytes",
            back.len(),
            expected.len()
        );

        let (from, copied) = future::or(echo, async {
            async_io::Timer::after(Duration::from_secs(30)).await;
            panic!("the kernel client never finished through our listener");
        })
        .await;
        let output = kernel_side.wait_with_output().expect("kernel side");
        let said = String::from_utf8_lossy(&output.stdout);
        assert_eq!(*from.ip(), THEIR_OVERLAY_IP);
        let copied = copied.unwrap_or_else(|e| {
            panic!(
                "our echo of the kernel client: {e}\nkernel side: {said}\n{}\n{:?}",
                String::from_utf8_lossy(&output.stderr),
                stack.peer_stats()
            )
        });
        assert_eq!(copied as usize, PAYLOAD_BYTES);
        assert!(
            said.contains("kernel client echo ok"),
            "kernel side: {said}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stats = stack.peer_stats();
        assert!(stats[0].is_up(), "{stats:?}");
        assert!(stats[0].rx_bytes as usize > 2 * PAYLOAD_BYTES, "{stats:?}");
    });

    let handshakes = run(&[
        "ip",
        "netns",
        "exec",
        &ns.name,
        "wg",
        "show",
        &wg_name,
        "latest-handshakes",
    ]);
    let since_epoch: u64 = handshakes
        .split_whitespace()
        .nth(1)
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    assert!(
        since_epoch > 0,
        "wireguard-go reports no handshake: {handshakes}"
    );
    println!(
        "wireguard-go: latest handshake {since_epoch}, transfer {}",
        run(&["ip", "netns", "exec", &ns.name, "wg", "show", &wg_name, "transfer"])
    );
}
