//! Pebble, Let's Encrypt's test CA, and pebble-challtestsrv as its DNS, run for one test.
//! Pebble validates HTTP-01 on `http_port` of whatever address the DNS server gives for a
//! name (127.0.0.1 unless [`Pebble::set_address`] says otherwise).

use crate::{free_tcp_port, free_udp_port, wait_for};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

/// A running Pebble with its DNS server; both are killed on drop.
pub struct Pebble {
    children: Vec<Child>,
    /// The ACME directory URL.
    pub directory: String,
    /// PEM of the CA Pebble's own HTTPS listener uses (pass to `--acme-ca-bundle`).
    pub listener_ca: PathBuf,
    /// PEM of the root that issued certificates chain to (pass to `curl --cacert`).
    pub issuing_root: PathBuf,
    management: u16,
    dns_management: u16,
    dir: PathBuf,
    dns: u16,
}

/// Start the CA itself (its config and listener certificate are in `dir`).
fn spawn_pebble(dir: &Path, dns: u16) -> Child {
    let log = |name: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(name))
            .unwrap()
    };
    Command::new("pebble")
        .arg("-config")
        .arg(dir.join("pebble.json"))
        .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
        .envs([
            ("PEBBLE_VA_NOSLEEP", "1"),
            ("PEBBLE_WFE_NONCEREJECT", "0"),
            ("PEBBLE_AUTHZREUSE", "0"),
        ])
        .stdout(log("pebble.log"))
        .stderr(log("pebble.err"))
        .spawn()
        .expect("pebble (apt install pebble)")
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Pebble {
    /// Start Pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`, issuing
    /// certificates valid for `validity` seconds.
    pub fn start(dir: &Path, http_port: u16, tls_port: u16, validity: u64) -> Pebble {
        let dir = dir.join("pebble");
        std::fs::create_dir_all(&dir).unwrap();
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=pebble test listener CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        );
        openssl(
            &dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-keyout",
                "localhost.key",
                "-out",
                "localhost.csr",
            ],
        );
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n",
        )
        .unwrap();
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "localhost.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
                "-out",
                "localhost.pem",
            ],
        );
        let (listen, management) = (free_tcp_port(), free_tcp_port());
        let (dns, dns_management) = (free_udp_port(), free_tcp_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.join("localhost.pem"),
            "privateKey": dir.join("localhost.key"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validity,
        }});
        std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
        let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
        let dns_server = Command::new("pebble-challtestsrv")
            .args([
                "-dns01",
                &format!("127.0.0.1:{dns}"),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
            ])
            .args([
                "-management",
                &format!("127.0.0.1:{dns_management}"),
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
            ])
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .spawn()
            .expect("pebble-challtestsrv (apt install pebble)");
        let pebble = spawn_pebble(&dir, dns);
        let mut pebble = Pebble {
            children: vec![dns_server, pebble],
            dir: dir.clone(),
            dns,
            directory: format!("https://127.0.0.1:{listen}/dir"),
            listener_ca: dir.join("ca.pem"),
            issuing_root: dir.join("issuing-root.pem"),
            management,
            dns_management,
        };
        let root = wait_for(Duration::from_secs(10), || {
            pebble.management_get("/roots/0")
        })
        .expect("pebble starts");
        std::fs::write(&pebble.issuing_root, root).unwrap();
        pebble.children.shrink_to_fit();
        pebble
    }

    fn management_get(&self, path: &str) -> Option<String> {
        let output = Command::new("curl")
            .args(["-sf", "--cacert"])
            .arg(&self.listener_ca)
            .arg(format!("https://127.0.0.1:{}{path}", self.management))
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).to_string())
    }

    /// Restart the CA (same address and listener certificate). Pebble keeps its state in
    /// memory, so it forgets every account and order, and issues from new roots.
    pub fn restart(&mut self) {
        let _ = self.children[1].kill();
        let _ = self.children[1].wait();
        self.children[1] = spawn_pebble(&self.dir, self.dns);
        let root = wait_for(Duration::from_secs(10), || self.management_get("/roots/0"))
            .expect("pebble restarts");
        std::fs::write(&self.issuing_root, root).unwrap();
    }

    /// Make the DNS server answer `hostname` with `ip`.
    pub fn set_address(&self, hostname: &str, ip: &str) {
        let body =
            serde_json::json!({"host": format!("{hostname}."), "addresses": [ip]}).to_string();
        let output = Command::new("curl")
            .args([
                "-sf",
                "-X",
                "POST",
                "--data",
                &body,
                &format!("http://127.0.0.1:{}/add-a", self.dns_management),
            ])
            .output()
            .expect("curl runs");
        assert!(output.status.success(), "challtestsrv add-a failed");
    }

    /// Control's arguments for ordering from this Pebble.
    pub fn control_args(&self) -> Vec<String> {
        vec![
            "--acme-directory".into(),
            self.directory.clone(),
            "--acme-ca-bundle".into(),
            self.listener_ca.display().to_string(),
            "--acme-email".into(),
            "tests@example.com".into(),
        ]
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
