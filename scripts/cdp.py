#!/usr/bin/env python3
"""A small headless-Chromium driver over the DevTools protocol, standard library only.

    scripts/cdp.py walk CONTROL_URL SETUP_CODE OUT_DIR [AGENT_COMMAND TARGET CHECK_COMMAND [TUNNEL_URL]]

walks Control's first-run path as a person does it in a browser (setup page, dashboard,
log out, log in, an agent enrolled in the form, a tunnel made in the form, the tunnels list
and its filter) and saves a screenshot of each page as OUT_DIR/<page>.png, at a laptop
width and at a phone width. It fails (exit 1) when a page does not show what it should.

With AGENT_COMMAND (a shell command in which {api_key} is replaced by the key the page shows),
TARGET and CHECK_COMMAND, it goes on as the seed's use case 5 does: it starts the real agent
with the key from the page, waits until the agents page shows it online, creates a tunnel to
TARGET in the form, and waits until CHECK_COMMAND (a request through the gateway) succeeds.
With TUNNEL_URL (that tunnel's https://host:port), it then protects the tunnel in its
access page and opens it as a visitor: through Control's login, then with the password.
"""
import base64, json, os, shutil, socket, struct, subprocess, sys, tempfile, time, urllib.request


class Page:
    """One browser tab over a WebSocket to Chromium's DevTools endpoint."""

    def __init__(self, ws_url):
        host_port, path = ws_url[len("ws://"):].split("/", 1)
        host, port = host_port.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise RuntimeError(f"DevTools refused the WebSocket: {head!r}")
        self.next_id = 0

    def _send(self, text):
        data = text.encode()
        mask = os.urandom(4)
        header = bytearray([0x81])
        if len(data) < 126:
            header.append(0x80 | len(data))
        elif len(data) < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", len(data))
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", len(data))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.sock.sendall(bytes(header) + mask + masked)

    def _exactly(self, n):
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise RuntimeError("DevTools closed the connection")
            out += chunk
        return out

    def _receive(self):
        message = b""
        while True:
            first, second = self._exactly(2)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._exactly(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._exactly(8))[0]
            message += self._exactly(length)
            if first & 0x80:
                return json.loads(message)

    def call(self, method, **params):
        self.next_id += 1
        self._send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            reply = self._receive()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def js(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        return result.get("result", {}).get("value")

    def go(self, url):
        self.call("Page.navigate", url=url)
        self.settle()

    def settle(self):
        """Wait until the document finished loading (after a navigation or a form submit)."""
        time.sleep(0.2)
        for _ in range(100):
            if self.js("document.readyState") == "complete":
                return
            time.sleep(0.05)

    def submit(self, fields, form="main form"):
        """Fill a form (the page's first by default) and submit it as a click would."""
        script = f"var form = document.querySelector({json.dumps(form)});" + "".join(
            f"form.querySelector('[name={name}]').value = {json.dumps(value)};"
            for name, value in fields.items())
        self.js(script + "form.requestSubmit();")
        self.settle()

    def screenshot(self, path, width, height):
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=width < 600)
        shot = self.call("Page.captureScreenshot", format="png")
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))


def browser():
    profile = tempfile.mkdtemp(prefix="kakuremichi-chromium-")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if not binary:
        sys.exit("cdp.py: chromium is not installed (scripts/install-deps installs it)")
    process = subprocess.Popen(
        # The walk's gateway serves certificates from Control's internal CA.
        [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--ignore-certificate-errors",
         "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port_file = os.path.join(profile, "DevToolsActivePort")
    for _ in range(200):
        if os.path.exists(port_file) and open(port_file).read().count("\n") >= 1:
            break
        time.sleep(0.05)
    port = int(open(port_file).read().split("\n")[0])
    targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
    page = next(t for t in targets if t["type"] == "page")
    return process, profile, Page(page["webSocketDebuggerUrl"])


def expect(page, text, what):
    body = page.js("document.body.innerText") or ""
    if text not in body:
        sys.exit(f"cdp.py: {what}: expected {text!r} on {page.js('location.href')}, page shows:\n{body}")


def wait_for(what, check, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.5)
    sys.exit(f"cdp.py: {what} did not happen within {seconds} s")


def protect(page, control, tunnel_url, shoot):
    """Protect the walk's tunnel in its access page, then open it as a visitor: through
    Control's login (the browser already has a Control session), and with the password."""
    page.go(control + "/tunnels")
    page.js("[...document.querySelectorAll('tr')].find(r => r.innerText.includes('hello.localhost'))"
            ".querySelector('a[href$=\"/access\"]').click()")
    page.settle()
    expect(page, "Who may open hello.localhost", "a tunnel's access page")
    page.submit({"users": "admin", "password": "pin 2468", "bypass": "/health"},
                form="form[action$='/access']")
    expect(page, "Saved. Every gateway applies", "saving access rules says so")
    shoot("tunnel-access")

    def private():
        page.go(tunnel_url + "/")
        return "is private" in (page.js("document.body.innerText") or "")
    wait_for("the gateway asking for a login", private, seconds=10)
    shoot("tunnel-login")
    page.js("document.querySelector('a[href*=\"/access?\"]').click()")
    page.settle()
    expect(page, '"user":"admin"', "a Control login opens the tunnel, and the origin is told who")
    page.go(tunnel_url + "/.kakuremichi/logout")
    expect(page, "logged out", "logging out of the tunnel")
    page.go(tunnel_url + "/")
    page.submit({"password": "not it"}, form="form")
    expect(page, "not right", "a wrong tunnel password is refused")
    page.submit({"password": "pin 2468"}, form="form")
    expect(page, '"origin":"demo"', "the tunnel password opens the tunnel")


def walk(control, code, out, agent_command=None, target=None, check_command=None,
         tunnel_url=None):
    process, profile, page = browser()
    processes = []
    try:
        page.call("Page.enable")
        shots = []

        def shoot(name):
            page.screenshot(os.path.join(out, f"{name}.png"), 1280, 800)
            page.screenshot(os.path.join(out, f"{name}-phone.png"), 390, 844)
            shots.append(name)

        page.go(control + "/")
        expect(page, "Create the first administrator", "first visit leads to setup")
        shoot("setup")
        page.submit({"code": "wrong", "name": "admin", "password": "short", "confirm": "short"})
        expect(page, "not the setup code", "a wrong code is refused with a reason")
        shoot("setup-error")
        password = "correct horse battery staple"
        page.submit({"code": code, "name": "admin", "password": password, "confirm": password})
        expect(page, "Dashboard", "setup logs the administrator in")
        shoot("dashboard")
        page.js("document.querySelector('header form').requestSubmit()")
        page.settle()
        expect(page, "Log in", "log out leads to the login page")
        page.submit({"name": "admin", "password": "not the password"})
        expect(page, "Wrong name or password", "a wrong password is refused with a reason")
        shoot("login")
        page.submit({"name": "admin", "password": password})
        expect(page, "Dashboard", "login")
        page.go(control + "/agents/new")
        page.submit({"name": "garage-pi"})
        expect(page, "garage-pi is enrolled", "enrolling an agent shows its key once")
        expect(page, "API_KEY", "the install snippets")
        expect(page, "a loopback address", "a loopback public URL is flagged on the enrolment page")
        page.call("Emulation.setDeviceMetricsOverride", width=1280, height=1400, deviceScaleFactor=1, mobile=False)
        shot = page.call("Page.captureScreenshot", format="png")
        with open(os.path.join(out, "agent-enrolled.png"), "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        agent = None
        if agent_command:
            key = page.js("document.getElementById('api-key').textContent").strip()
            agent = subprocess.Popen(agent_command.replace("{api_key}", key), shell=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            processes.append(agent)

            def online():
                page.go(control + "/agents")
                return "garage-pi" in (page.js("document.body.innerText") or "") and \
                    page.js("[...document.querySelectorAll('tr')].some(r => r.innerText.includes('garage-pi') && r.innerText.includes('online'))")
            wait_for("the enrolled agent showing online", online)
        page.go(control + "/agents")
        expect(page, "garage-pi", "the agents list")
        shoot("agents")
        if agent_command:
            page.go(control + "/tunnels/new")
            page.submit({"hostname": "hello.localhost", "target": target})
            expect(page, "hello.localhost", "the tunnel made in the form")
            wait_for("a request through the gateway to the new tunnel",
                     lambda: subprocess.run(check_command, shell=True, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL).returncode == 0)
            shots.append("use case 5: agent online, tunnel answers through the gateway")
        if tunnel_url:
            protect(page, control, tunnel_url, shoot)
            shots.append("issue 10: a Control login and a password open a protected tunnel")
        page.go(control + "/gateways")
        expect(page, "Agents × gateways", "the gateways page shows which agent reaches which gateway")
        shoot("gateways")
        page.go(control + "/agents")
        page.js("[...document.querySelectorAll('td a')].find(a => a.innerText == 'garage-pi').click()")
        page.settle()
        expect(page, "Rotate API key", "an agent's own page")
        shoot("agent")
        page.go(control + "/tunnels/new")
        expect(page, "New tunnel", "the new-tunnel form")
        page.submit({"hostname": "not a hostname!", "target": "127.0.0.1:8080"})
        expect(page, "invalid hostname", "a bad hostname is refused with a reason")
        shoot("tunnel-new-error")
        page.submit({"hostname": "wiki.example.com", "target": "127.0.0.1:8080"})
        expect(page, "wiki.example.com", "a tunnel made in the form shows in the list")
        page.go(control + "/tunnels/new")
        page.submit({"kind": "tcp", "ports": "15432", "target": "127.0.0.1:5432", "proxy_protocol": "v2"})
        expect(page, "tcp 15432", "a tcp tunnel made in the form shows in the list")
        page.go(control + "/tunnels/new")
        page.submit({"kind": "udp", "ports": "15432-15433", "target": "127.0.0.1:5432-5433", "proxy_protocol": "v1"})
        expect(page, "applies to tcp and tls tunnels", "PROXY on a udp tunnel is refused with a reason")
        if tunnel_url:
            # wiki.example.com forwards to a port nothing listens on: a visitor gets 502,
            # and the pages say so instead of "serving".
            port = tunnel_url.rsplit(":", 1)[1]
            visit = ["curl", "-sk", "-o", "/dev/null", "--resolve", f"wiki.example.com:{port}:127.0.0.1",
                     f"https://wiki.example.com:{port}/"]

            def failing():
                subprocess.run(visit, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                page.go(control + "/tunnels")
                return "502: cannot reach" in (page.js("document.body.innerText") or "")
            wait_for("the tunnels page showing the failing origin", failing, seconds=15)
            page.go(control + "/")
            expect(page, "wiki.example.com answers 502", "the dashboard lists the failing origin")
            shoot("dashboard-attention")
        page.go(control + "/tunnels")
        shoot("tunnels")
        page.js("document.querySelector('a.edit').click()")
        page.settle()
        expect(page, "Edit tunnel", "editing a tunnel")
        shoot("tunnel-edit")
        for path, name, shown in [("/users", "bob", "Password for bob"),
                                  ("/tokens", "backup script", "shown only this once")]:
            page.go(control + path)
            page.submit({"name": name}, form=f"form[action='{path}/new']")
            expect(page, shown, f"adding to {path} shows the secret once")
            page.go(control + path)
            expect(page, name, f"the list at {path}")
            shoot(path.strip("/"))
        page.go(control + "/certificates")
        expect(page, "none uploaded yet", "the certificates page lists a manual certificate to upload")
        shoot("certificates")
        page.go(control + "/account")
        expect(page, "Change password", "the account page")
        shoot("account")
        page.submit({}, form="form[action='/account/totp/start']")
        expect(page, "Scan this", "turning on two-factor login shows a QR code")
        shoot("two-factor")
        page.go(control + "/tunnels?q=shop")
        expect(page, "match", "the tunnels filter")
        # The list reloads itself (the page's own script, admitted by the CSP): a mark set
        # in this page's window is gone after a reload.
        page.js("window.kmMark = 1")
        wait_for("the tunnels page reloading itself",
                 lambda: page.js("window.kmMark === undefined"), seconds=15)
        expect(page, "match", "the reloaded page keeps its filter")
        print("walked: " + ", ".join(shots))
    finally:
        for started in processes:
            started.terminate()
            started.wait()
        process.terminate()
        process.wait()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) not in (5, 8, 9) or sys.argv[1] != "walk":
        sys.exit(__doc__)
    walk(sys.argv[2].rstrip("/"), *sys.argv[3:])
