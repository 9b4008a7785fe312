//! One-line installs: the agent binaries Control was given (`--release-dir`), served at
//! `/releases/kakuremichi-agent-<arch>`, and `/install.sh`, which picks the machine's binary,
//! checks its SHA-256 against the sum written into the script, installs it as a systemd or
//! procd service with `CONTROL_URL` and the API key, and starts it.

use crate::error::Error;
use std::path::{Path, PathBuf};

/// Architectures as `uname -m` names them, with a binary per architecture.
const ARCHES: [&str; 2] = ["x86_64", "aarch64"];

/// An agent binary Control serves.
#[derive(Clone, Debug)]
pub struct Release {
    /// `uname -m` of the machines it runs on.
    pub arch: &'static str,
    pub path: PathBuf,
    /// SHA-256, hex.
    pub sha256: String,
}

impl Release {
    /// The file name, and the last segment of its URL.
    pub fn name(&self) -> String {
        format!("kakuremichi-agent-{}", self.arch)
    }
}

/// The agent binaries in `dir` (`kakuremichi-agent-x86_64`, `kakuremichi-agent-aarch64`),
/// hashed once at start.
pub fn scan(dir: &Path) -> Result<Vec<Release>, Error> {
    let mut releases = Vec::new();
    for arch in ARCHES {
        let path = dir.join(format!("kakuremichi-agent-{arch}"));
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        let sha256 = kakuremichi_proto::access::sha256_hex(&bytes);
        releases.push(Release { arch, path, sha256 });
    }
    if releases.is_empty() {
        return Err(Error::Config(format!(
            "--release-dir {}: no kakuremichi-agent-x86_64 or kakuremichi-agent-aarch64 in it",
            dir.display()
        )));
    }
    Ok(releases)
}

/// The install script for agents of the Control at `control_url`.
pub fn install_script(control_url: &str, releases: &[Release]) -> String {
    let control_url = control_url.trim_end_matches('/');
    let sums: String = releases
        .iter()
        .map(|r| format!("    {}) sum={} ;;\n", r.arch, r.sha256))
        .collect();
    let arches: Vec<&str> = releases.iter().map(|r| r.arch).collect();
    SCRIPT
        .replace("@CONTROL_URL@", control_url)
        .replace("@SUMS@", &sums)
        .replace("@ARCHES@", &arches.join(" "))
        .replace("@PROCD_INIT@", PROCD_INIT)
        .replace("@SYSTEMD_UNIT@", &crate::install::systemd_unit("agent"))
}

/// The OpenWrt package's init script: the installer sets up the same service.
const PROCD_INIT: &str = include_str!("../../openwrt/kakuremichi/files/etc/init.d/kakuremichi");

const SCRIPT: &str = r#"#!/bin/sh
# kakuremichi agent installer, served by Control at @CONTROL_URL@/install.sh
#   curl -fsSL @CONTROL_URL@/install.sh | sh -s -- API_KEY
# Installs the agent for this machine's architecture (checked against its SHA-256), then a
# systemd unit or, on OpenWrt, a procd service with CONTROL_URL and the key, and starts it.
# ROOT (default /) installs into another root, e.g. for an image. ALLOW_TARGETS (e.g.
#   curl -fsSL @CONTROL_URL@/install.sh | ALLOW_TARGETS=127.0.0.1:8080 sh -s -- API_KEY)
# limits what the agent forwards to, whatever Control asks.
set -eu
CONTROL_URL=@CONTROL_URL@
API_KEY=${1:-${API_KEY:-}}
ALLOW_TARGETS=${ALLOW_TARGETS:-}
ROOT=${ROOT:-}
fail() { echo "kakuremichi install: $*" >&2; exit 1; }
[ -n "$API_KEY" ] || fail "pass the agent's API key: curl -fsSL $CONTROL_URL/install.sh | sh -s -- kmk_..."
case "$API_KEY" in *[!A-Za-z0-9_-]*) fail "the API key has characters an API key never has" ;; esac
case "$ALLOW_TARGETS" in *[!A-Za-z0-9.:/,*\[\]-]*) fail "ALLOW_TARGETS holds characters a target list never has" ;; esac
arch=$(uname -m)
case "$arch" in
@SUMS@    *) fail "Control has no agent for $arch (it serves: @ARCHES@)" ;;
esac
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
url="$CONTROL_URL/releases/kakuremichi-agent-$arch"
# curl, or what a stock OpenWrt (uclient-fetch) or a busybox system (wget) has.
if command -v curl >/dev/null; then curl -fsSL "$url" -o "$tmp"
elif command -v uclient-fetch >/dev/null; then uclient-fetch -qO "$tmp" "$url"
elif command -v wget >/dev/null; then wget -qO "$tmp" "$url"
else fail "needs curl, uclient-fetch or wget"; fi
# Busybox has no `install`: copy beside, then rename over a binary that may be running.
place() { mkdir -p "$(dirname "$2")"; cp "$1" "$2.new"; chmod 0755 "$2.new"; mv "$2.new" "$2"; }
got=$(sha256sum "$tmp" | cut -d' ' -f1)
[ "$got" = "$sum" ] || fail "the download's SHA-256 is $got, expected $sum: not installed"
# On OpenWrt: the package's own procd service, configured through UCI as the package is.
if [ -f "$ROOT/etc/openwrt_release" ]; then
    place "$tmp" "$ROOT/usr/bin/kakuremichi-agent"
    mkdir -p "$ROOT/etc/init.d" "$ROOT/etc/config"
    cat >"$ROOT/etc/init.d/kakuremichi.new" <<'INIT'
@PROCD_INIT@INIT
    chmod 0755 "$ROOT/etc/init.d/kakuremichi.new"
    mv "$ROOT/etc/init.d/kakuremichi.new" "$ROOT/etc/init.d/kakuremichi"
    ( umask 077; printf "config kakuremichi 'agent'\n\toption enabled '1'\n\toption control_url '%s'\n\toption api_key '%s'\n\toption allow_targets '%s'\n" \
        "$CONTROL_URL" "$API_KEY" "$ALLOW_TARGETS" >"$ROOT/etc/config/kakuremichi" )
    [ -n "$ROOT" ] || { /etc/init.d/kakuremichi enable; /etc/init.d/kakuremichi restart; }
    echo "kakuremichi agent installed as a procd service (logread shows its log)"
    exit 0
fi
place "$tmp" "$ROOT/usr/local/bin/kakuremichi-agent"
mkdir -p "$ROOT/etc/kakuremichi" "$ROOT/etc/systemd/system"
chmod 0700 "$ROOT/etc/kakuremichi"
( umask 077; printf 'CONTROL_URL=%s\nAPI_KEY=%s\nALLOW_TARGETS=%s\n' "$CONTROL_URL" "$API_KEY" "$ALLOW_TARGETS" >"$ROOT/etc/kakuremichi/agent.env" )
cat >"$ROOT/etc/systemd/system/kakuremichi-agent.service" <<'UNIT'
@SYSTEMD_UNIT@UNIT
if [ -z "$ROOT" ] && command -v systemctl >/dev/null; then
    systemctl daemon-reload
    systemctl enable --now kakuremichi-agent.service
    systemctl restart kakuremichi-agent.service
    echo "kakuremichi agent installed and started (journalctl -u kakuremichi-agent shows its log)"
else
    echo "kakuremichi agent installed; start it with: systemctl enable --now kakuremichi-agent"
fi
"#;
