//! A home network behind a real NAT, as network namespaces (needs root): a LAN namespace
//! whose default route is a router namespace that masquerades it and lets nothing in, and a
//! WAN side in this namespace holding the gateways' and Control's addresses. The router's
//! firewall can then drop UDP, or TCP to a port, as the networks agents sit behind do.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// The namespaces, links and routes of one test, removed when dropped.
pub struct Nat {
    router: String,
    lan: String,
    /// The host's end of the WAN link.
    link: String,
    /// `10.<n>.0.0/24` is the WAN, `10.<n>.1.0/24` the LAN.
    net: u8,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")))
}

fn must(args: &[&str]) {
    let output = run(args);
    assert!(
        output.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `args` as run in the namespace `ns`.
fn in_namespace<'a>(ns: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    ["ip", "netns", "exec", ns]
        .into_iter()
        .chain(args.iter().copied())
        .collect()
}

/// The router masquerades the LAN and forwards nothing it is not told to.
const TABLES: &str = r#"
table ip nat {
  chain post {
    type nat hook postrouting priority 100;
    oifname "wan0" masquerade
  }
}
table ip filter {
  chain lan_in {
    type filter hook forward priority 0; policy drop;
  }
}
"#;

/// The router's forwarding rules: the LAN out, and only replies back in.
const OPEN: &str = "
flush chain ip filter lan_in
add rule ip filter lan_in iifname lan0 oifname wan0 accept
add rule ip filter lan_in iifname wan0 oifname lan0 ct state established,related accept
";

impl Nat {
    /// Build the network; panics (with what failed) when not root.
    pub fn new() -> Nat {
        assert!(
            run(&["id", "-u"]).stdout.starts_with(b"0"),
            "NAT tests need root for network namespaces (scripts/test runs them as root)"
        );
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{:x}{n}", std::process::id() % 0xfffff);
        // Spread over 10.20–219 so parallel runs rarely meet; a clash fails loudly below.
        let net = (20 + (std::process::id() + n * 37) % 200) as u8;
        let nat = Nat {
            router: format!("kmr{tag}"),
            lan: format!("kml{tag}"),
            link: format!("kmw{tag}"),
            net,
        };
        let (router, lan, link) = (&nat.router, &nat.lan, &nat.link);
        let wan = |host: u8| format!("10.{net}.0.{host}/24");
        let lan_ip = |host: u8| format!("10.{net}.1.{host}/24");
        must(&["ip", "netns", "add", router]);
        must(&["ip", "netns", "add", lan]);
        must(&[
            "ip", "link", "add", link, "type", "veth", "peer", "name", "wan0", "netns", router,
        ]);
        for host in [1, 2] {
            must(&["ip", "addr", "add", &wan(host), "dev", link]);
        }
        must(&["ip", "link", "set", link, "up"]);
        let in_router = |args: &[&str]| must(&in_namespace(router, args));
        in_router(&["ip", "addr", "add", &wan(254), "dev", "wan0"]);
        in_router(&["ip", "link", "set", "wan0", "up"]);
        in_router(&["ip", "link", "set", "lo", "up"]);
        in_router(&[
            "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", lan,
        ]);
        in_router(&["ip", "addr", "add", &lan_ip(1), "dev", "lan0"]);
        in_router(&["ip", "link", "set", "lan0", "up"]);
        in_router(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let in_lan = |args: &[&str]| must(&in_namespace(lan, args));
        in_lan(&["ip", "addr", "add", &lan_ip(2), "dev", "eth0"]);
        in_lan(&["ip", "link", "set", "eth0", "up"]);
        in_lan(&["ip", "link", "set", "lo", "up"]);
        in_lan(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &format!("10.{net}.1.1"),
        ]);
        nat.firewall(&format!("{TABLES}{OPEN}"));
        // The way into the LAN is known; only the router's rules keep the WAN out.
        must(&[
            "ip",
            "route",
            "add",
            &format!("10.{net}.1.0/24"),
            "via",
            &format!("10.{net}.0.254"),
        ]);
        nat
    }

    /// The `n`th WAN address of this namespace (1 or 2): where Control and gateways listen.
    pub fn wan_ip(&self, n: u8) -> String {
        format!("10.{}.0.{n}", self.net)
    }

    /// The LAN host's address.
    pub fn lan_ip(&self) -> String {
        format!("10.{}.1.2", self.net)
    }

    /// The command prefix that runs a program on the LAN host.
    pub fn in_lan(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.lan]
            .map(String::from)
            .to_vec()
    }

    /// Run `args` on the LAN host and return its output.
    pub fn run_in_lan(&self, args: &[&str]) -> Output {
        run(&in_namespace(&self.lan, args))
    }

    /// Apply nft commands in the router.
    fn firewall(&self, script: &str) {
        let path = std::env::temp_dir().join(format!("{}.nft", self.router));
        std::fs::write(&path, script).expect("nft script");
        must(&[
            "ip",
            "netns",
            "exec",
            &self.router,
            "nft",
            "-f",
            &path.display().to_string(),
        ]);
        let _ = std::fs::remove_file(path);
    }

    /// The router drops UDP from the LAN.
    pub fn drop_udp(&self) {
        self.firewall("insert rule ip filter lan_in iifname lan0 meta l4proto udp drop");
    }

    /// The router drops TCP from the LAN to `port`.
    pub fn drop_tcp_port(&self, port: u16) {
        self.firewall(&format!(
            "insert rule ip filter lan_in iifname lan0 tcp dport {port} drop"
        ));
    }

    /// The router lets the LAN out again.
    pub fn open(&self) {
        self.firewall(OPEN);
    }
}

impl Default for Nat {
    fn default() -> Self {
        Nat::new()
    }
}

impl Drop for Nat {
    fn drop(&mut self) {
        // Whatever a test left running on the LAN goes with it.
        for ns in [&self.lan, &self.router] {
            let pids = run(&["ip", "netns", "pids", ns]).stdout;
            for pid in String::from_utf8_lossy(&pids).split_whitespace() {
                let _ = run(&["kill", "-9", pid]);
            }
        }
        let _ = run(&["ip", "route", "del", &format!("10.{}.1.0/24", self.net)]);
        let _ = run(&["ip", "netns", "del", &self.lan]);
        let _ = run(&["ip", "netns", "del", &self.router]);
        let _ = run(&["ip", "link", "del", &self.link]);
    }
}
