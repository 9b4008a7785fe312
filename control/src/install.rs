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

/// Every way to start `kind` with this URL and key; the one-line install only when Control
/// serves agent binaries (`releases`), since without them the command fails.
pub fn snippets(kind: NodeKind, control_url: &str, api_key: &str, releases: bool) -> Vec<Snippet> {
    let kind = kind.as_str();
    let binary = format!("kakuremichi-{kind}");
    let mut snippets = Vec::new();
    if kind == "agent" && releases {
        snippets.push(Snippet {
            key: "one_line",
            title: "One-line install (Linux, OpenWrt; x86_64 and aarch64)",
            text: format!(
                "curl -fsSL {}/install.sh | sh -s -- {api_key}",
                control_url.trim_end_matches('/')
            ),
        });
    }
    // Agents forward only to what their owner lists (empty: anything but link-local and
    // cloud metadata addresses); each snippet shows where the list goes.
    let agent = kind == "agent";
    let (shell_allow, compose_allow, uci_allow, env_allow) = match agent {
        true => (
            "ALLOW_TARGETS= ",
            "      ALLOW_TARGETS: \"\"  # what it may forward to, e.g. \"app:3000,192.168.1.0/24:80\"\n",
            format!("uci set kakuremichi.{kind}.allow_targets=''  # e.g. '127.0.0.1:8080,192.168.1.0/24:80'\n"),
            "ALLOW_TARGETS=%s\\n",
        ),
        false => ("", "", String::new(), ""),
    };
    let env_values = match agent {
        true => format!("'{control_url}' '{api_key}' ''"),
        false => format!("'{control_url}' '{api_key}'"),
    };
    snippets.extend([
        Snippet {
            key: "shell",
            title: "Shell",
            text: format!("CONTROL_URL={control_url} API_KEY={api_key} {shell_allow}{binary}"),
        },
        Snippet {
            key: "docker_compose",
            title: "docker-compose (a service for your compose file)",
            text: format!(
                "  {kind}:\n    image: kakuremichi/{kind}\n    restart: unless-stopped\n    environment:\n      CONTROL_URL: {control_url}\n      API_KEY: {api_key}\n{compose_allow}"
            ),
        },
    ]);
    if agent {
        // The app host of docker/compose.app-host.yml: the agent beside your app.
        snippets.push(Snippet {
            key: "docker_compose_app_host",
            title: "docker-compose beside your app (docker/compose.app-host.yml)",
            text: format!(
                "CONTROL_URL={control_url} API_KEY={api_key} {shell_allow}docker-compose -p kakuremichi-app-host -f docker/compose.app-host.yml up -d"
            ),
        });
    }
    snippets.extend([
        Snippet {
            key: "openwrt_uci",
            title: "OpenWrt (UCI)",
            text: format!(
                "uci set kakuremichi.{kind}=kakuremichi\nuci set kakuremichi.{kind}.enabled='1'\nuci set kakuremichi.{kind}.control_url='{control_url}'\nuci set kakuremichi.{kind}.api_key='{api_key}'\n{uci_allow}uci commit kakuremichi\n/etc/init.d/kakuremichi restart"
            ),
        },
        // The key goes into a root-only environment file: a unit file is readable by every
        // local user (`systemctl cat`).
        Snippet {
            key: "systemd",
            title: "systemd unit (run as root)",
            text: format!(
                "install -d -m 0700 /etc/kakuremichi\n(umask 077; printf 'CONTROL_URL=%s\\nAPI_KEY=%s\\n{env_allow}' {env_values} > /etc/kakuremichi/{kind}.env)\ncat > /etc/systemd/system/{binary}.service <<'EOF'\n{unit}EOF\nsystemctl daemon-reload && systemctl enable --now {binary}\n",
                unit = systemd_unit(kind),
            ),
        },
    ]);
    snippets
}

/// A warning for the enrolment page when `control_url` names this machine's loopback: the
/// snippets then work only here, and an agent elsewhere never reaches Control.
pub fn loopback_warning(control_url: &str) -> Option<String> {
    let uri: hyper::Uri = control_url.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let loopback = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => {
            host.eq_ignore_ascii_case("localhost")
                || host.to_ascii_lowercase().ends_with(".localhost")
        }
    };
    loopback.then(|| {
        format!(
            "Control's public URL is {control_url}, a loopback address: these snippets work only on \
             this machine. For nodes elsewhere, start Control with --public-url set to an address \
             they reach (in the compose stack, set PUBLIC_HOST)."
        )
    })
}

/// The systemd unit of a node (`agent` or `gateway`): the snippet and the install script
/// write the same one. The key is in `/etc/kakuremichi/KIND.env`, not here.
pub fn systemd_unit(kind: &str) -> String {
    format!(
        "[Unit]\nDescription=kakuremichi {kind}\nAfter=network-online.target\nWants=network-online.target\n\n[Service]\nEnvironmentFile=/etc/kakuremichi/{kind}.env\nExecStart=/usr/local/bin/kakuremichi-{kind} --state-dir /var/lib/kakuremichi-{kind}\nRestart=always\nDynamicUser=yes\nStateDirectory=kakuremichi-{kind}\nStateDirectoryMode=0700\n\n[Install]\nWantedBy=multi-user.target\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_liner_is_offered_only_when_control_serves_agents() {
        let keys = |releases| -> Vec<&str> {
            snippets(NodeKind::Agent, "https://c.example", "kmk_x", releases)
                .iter()
                .map(|s| s.key)
                .collect()
        };
        assert!(keys(true).contains(&"one_line"));
        assert!(!keys(false).contains(&"one_line"));
        let agent = snippets(NodeKind::Agent, "https://c.example", "kmk_x", false);
        assert!(agent
            .iter()
            .all(|s| s.text.contains("ALLOW_TARGETS") || s.text.contains("allow_targets")));
    }

    #[test]
    fn a_loopback_public_url_is_flagged() {
        for url in [
            "http://localhost:7080",
            "http://127.0.0.1:7080",
            "http://[::1]:7080/",
            "http://app.localhost",
        ] {
            assert!(loopback_warning(url).is_some(), "{url}");
        }
        for url in [
            "http://192.0.2.10:7080",
            "https://control.example.com",
            "http://localhost.example.com",
        ] {
            assert!(loopback_warning(url).is_none(), "{url}");
        }
    }

    #[test]
    fn readme_shows_the_unit_the_installer_writes() {
        let readme = include_str!("../../README.md");
        assert!(
            readme.contains(&systemd_unit("agent")),
            "README's systemd unit drifted"
        );
    }
}
