//! What a user pastes to run a node they just enrolled: the same key and URL, for each way
//! of installing. Shown once with the key, by the API and the pages.

use kakuremichi_proto::ids::NodeKind;

/// One way of installing, with its text.
pub struct Snippet {
    /// A key for the API (`shell`, `docker_compose`, …).
    pub key: &'static str,
    /// A title for people.
    pub title: &'static str,
    pub text: String,
}

/// Every way to start `kind` with this URL and key.
pub fn snippets(kind: NodeKind, control_url: &str, api_key: &str) -> Vec<Snippet> {
    let kind = kind.as_str();
    let binary = format!("kakuremichi-{kind}");
    let mut snippets = Vec::new();
    if kind == "agent" {
        snippets.push(Snippet {
            key: "one_line",
            title: "One-line install (Linux, OpenWrt; x86_64 and aarch64)",
            text: format!(
                "curl -fsSL {}/install.sh | sh -s -- {api_key}",
                control_url.trim_end_matches('/')
            ),
        });
    }
    snippets.extend([
        Snippet {
            key: "shell",
            title: "Shell",
            text: format!("CONTROL_URL={control_url} API_KEY={api_key} {binary}"),
        },
        Snippet {
            key: "docker_compose",
            title: "docker-compose",
            text: format!(
                "  {kind}:\n    image: kakuremichi/{kind}\n    restart: unless-stopped\n    environment:\n      CONTROL_URL: {control_url}\n      API_KEY: {api_key}\n"
            ),
        },
        Snippet {
            key: "openwrt_uci",
            title: "OpenWrt (UCI)",
            text: format!(
                "uci set kakuremichi.{kind}=kakuremichi\nuci set kakuremichi.{kind}.enabled='1'\nuci set kakuremichi.{kind}.control_url='{control_url}'\nuci set kakuremichi.{kind}.api_key='{api_key}'\nuci commit kakuremichi\n/etc/init.d/kakuremichi restart"
            ),
        },
        // The key goes into a root-only environment file: a unit file is readable by every
        // local user (`systemctl cat`).
        Snippet {
            key: "systemd",
            title: "systemd unit (run as root)",
            text: format!(
                "install -d -m 0700 /etc/kakuremichi\n(umask 077; printf 'CONTROL_URL=%s\\nAPI_KEY=%s\\n' '{control_url}' '{api_key}' > /etc/kakuremichi/{kind}.env)\ncat > /etc/systemd/system/{binary}.service <<'EOF'\n[Unit]\nDescription=kakuremichi {kind}\nAfter=network-online.target\nWants=network-online.target\n\n[Service]\nEnvironmentFile=/etc/kakuremichi/{kind}.env\nExecStart=/usr/local/bin/{binary} --state-dir /var/lib/kakuremichi-{kind}\nRestart=always\nDynamicUser=yes\nStateDirectory=kakuremichi-{kind}\nStateDirectoryMode=0700\n\n[Install]\nWantedBy=multi-user.target\nEOF\nsystemctl daemon-reload && systemctl enable --now {binary}\n"
            ),
        },
    ]);
    snippets
}
