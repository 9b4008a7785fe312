#!/usr/bin/env python3
"""Control's pages walked as a person does it, in Debian's Chromium driven by Playwright.

    scripts/walk.py CONTROL_URL SETUP_CODE OUT_DIR [AGENT_COMMAND TARGET CHECK_COMMAND [TUNNEL_URL]]

walks Control's first-run path (setup page, dashboard, log out, log in, an agent enrolled in
the form, a tunnel made in the form, the tunnels list and its filter) and saves a screenshot
of each page as OUT_DIR/<page>.png, at a laptop width and at a phone width. It fails (exit 1)
when a page does not show what it should.

With AGENT_COMMAND (a shell command in which {api_key} is replaced by the key the page shows),
TARGET and CHECK_COMMAND, it goes on as the seed's use case 5 does: it starts the real agent
with the key from the page, waits until the agents page shows it online, creates a tunnel to
TARGET in the form, and waits until CHECK_COMMAND (a request through the gateway) succeeds.
With TUNNEL_URL (that tunnel's https://host:port), it then protects the tunnel in its
access page and opens it as a visitor: through Control's login, then with the password.
"""
import os, shutil, subprocess, sys, time

from playwright.sync_api import sync_playwright

LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def fail(why):
    sys.exit(f"walk.py: {why}")


class Walk:
    def __init__(self, page, out):
        self.page, self.out, self.shots = page, out, []

    def go(self, url):
        self.page.goto(url)

    def text(self):
        return self.page.inner_text("body")

    def expect(self, text, what):
        if text not in self.text():
            fail(f"{what}: expected {text!r} on {self.page.url}, page shows:\n{self.text()}")

    def submit(self, fields, form="main form"):
        """Fill a form (the page's first by default) and submit it as a click would."""
        form = self.page.locator(form).first
        for name, value in fields.items():
            field = form.locator(f'[name="{name}"]')
            if field.evaluate("e => e.tagName") == "SELECT":
                field.select_option(value)
            else:
                field.fill(value)
        with self.page.expect_navigation():
            form.evaluate("f => f.requestSubmit()")

    def click(self, locator):
        with self.page.expect_navigation():
            locator.click()

    def shoot(self, name, laptop=LAPTOP):
        self.page.set_viewport_size(laptop)
        self.page.screenshot(path=os.path.join(self.out, f"{name}.png"))
        if laptop is LAPTOP:
            self.page.set_viewport_size(PHONE)
            self.page.screenshot(path=os.path.join(self.out, f"{name}-phone.png"))
            self.page.set_viewport_size(LAPTOP)
        self.shots.append(name)


def wait_for(what, check, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.5)
    fail(f"{what} did not happen within {seconds} s")


def protect(walk, control, tunnel_url):
    """Protect the walk's tunnel in its access page, then open it as a visitor: through
    Control's login (the browser already has a Control session), and with the password."""
    page = walk.page
    walk.go(control + "/tunnels")
    walk.click(page.locator("tr", has_text="hello.localhost").locator('a[href$="/access"]'))
    walk.expect("Who may open hello.localhost", "a tunnel's access page")
    walk.submit({"users": "admin", "password": "pin 2468", "bypass": "/health"},
                form="form[action$='/access']")
    walk.expect("Saved. Every gateway applies", "saving access rules says so")
    walk.shoot("tunnel-access")

    def private():
        walk.go(tunnel_url + "/")
        return "is private" in walk.text()
    wait_for("the gateway asking for a login", private, seconds=10)
    walk.shoot("tunnel-login")
    walk.click(page.locator('a[href*="/access?"]'))
    page.wait_for_load_state()
    walk.expect('"user":"admin"', "a Control login opens the tunnel, and the origin is told who")
    walk.go(tunnel_url + "/.kakuremichi/logout")
    walk.expect("logged out", "logging out of the tunnel")
    walk.go(tunnel_url + "/")
    walk.submit({"password": "not it"}, form="form")
    walk.expect("not right", "a wrong tunnel password is refused")
    walk.submit({"password": "pin 2468"}, form="form")
    walk.expect('"origin":"demo"', "the tunnel password opens the tunnel")


def traffic(walk, control, check_command):
    """Requests through the gateway show on the tunnel's own page, in figures and charts."""
    for _ in range(40):
        subprocess.run(check_command, shell=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    walk.go(control + "/tunnels")
    walk.click(walk.page.locator("td a", has_text="hello.localhost").first)
    walk.expect("Traffic", "a tunnel's own page")

    def counted():
        walk.page.reload()
        figure = walk.page.locator("dl.figures dd").first.inner_text().replace(",", "")
        return figure.isdigit() and int(figure) >= 40
    wait_for("the requests counted on the tunnel's page", counted, seconds=40)
    if walk.page.locator("figure.chart svg path").count() < 8:
        fail("the tunnel's page draws its four charts")
    walk.click(walk.page.locator("nav.ranges a", has_text="24h"))
    walk.expect("per 15 min", "the 24 h range has 15-minute steps")
    walk.click(walk.page.locator("nav.ranges a", has_text="1h"))
    walk.shoot("tunnel-traffic", laptop={"width": 1280, "height": 1000})
    walk.page.set_viewport_size(PHONE)
    walk.page.screenshot(path=os.path.join(walk.out, "tunnel-traffic-phone.png"), full_page=True)
    walk.page.set_viewport_size(LAPTOP)


def shoot_whole(walk, name):
    """A page at laptop and phone width, each as long as the page."""
    walk.page.screenshot(path=os.path.join(walk.out, f"{name}.png"), full_page=True)
    walk.page.set_viewport_size(PHONE)
    walk.page.screenshot(path=os.path.join(walk.out, f"{name}-phone.png"), full_page=True)
    walk.page.set_viewport_size(LAPTOP)
    walk.shots.append(name)


def logs_and_alerts(walk, control):
    """The requests of the walk in the Logs page; a channel and a rule made in the Alerts page."""
    walk.go(control + "/logs")
    walk.expect("hello.localhost", "the Logs page lists the requests through the gateway")
    walk.expect("from 1 of 1 gateways", "the Logs page says which gateways answered")
    shoot_whole(walk, "logs")
    walk.go(control + "/alerts")
    walk.submit({"name": "ops webhook", "kind": "webhook",
                 "url": "https://hooks.example.com/kakuremichi", "secret": "a webhook secret"},
                form="form[action='/alerts/channels']")
    walk.expect("ops webhook", "a channel made in the Alerts page")
    if "a webhook secret" in walk.page.content():
        fail("the Alerts page shows a channel's secret")
    walk.submit({"name": "origin down", "kind": "target_failing", "for_secs": "60"},
                form="form[action='/alerts/rules']")
    walk.expect("origin down", "a rule made in the Alerts page")
    walk.submit({"name": "bad", "kind": "ntfy", "url": "ftp://nowhere"},
                form="form[action='/alerts/channels']")
    walk.expect("invalid", "a bad channel is refused with a reason")
    walk.go(control + "/alerts")
    shoot_whole(walk, "alerts")


def first_run(walk, control, code):
    """Setup, the dashboard, logging out and in, enrolling an agent."""
    walk.go(control + "/")
    walk.expect("Create the first administrator", "first visit leads to setup")
    walk.shoot("setup")
    walk.submit({"code": "wrong", "name": "admin", "password": "short", "confirm": "short"})
    walk.expect("not the setup code", "a wrong code is refused with a reason")
    walk.shoot("setup-error")
    password = "correct horse battery staple"
    walk.submit({"code": code, "name": "admin", "password": password, "confirm": password})
    walk.expect("Dashboard", "setup logs the administrator in")
    walk.shoot("dashboard")
    walk.submit({}, form="header form")
    walk.expect("Log in", "log out leads to the login page")
    walk.submit({"name": "admin", "password": "not the password"})
    walk.expect("Wrong name or password", "a wrong password is refused with a reason")
    walk.shoot("login")
    walk.submit({"name": "admin", "password": password})
    walk.expect("Dashboard", "login")
    walk.go(control + "/agents/new")
    walk.submit({"name": "garage-pi"})
    walk.expect("garage-pi is enrolled", "enrolling an agent shows its key once")
    walk.expect("API_KEY", "the install snippets")
    walk.expect("a loopback address", "a loopback public URL is flagged on the enrolment page")
    walk.shoot("agent-enrolled", laptop={"width": 1280, "height": 1400})
    walk.page.set_viewport_size(LAPTOP)


def tunnels(walk, control, tunnel_url):
    """Tunnels made in the form, refused with reasons, a failing origin said so, editing."""
    walk.go(control + "/tunnels/new")
    walk.expect("New tunnel", "the new-tunnel form")
    walk.submit({"hostname": "not a hostname!", "target": "127.0.0.1:8080"})
    walk.expect("must be 1 to 63 of a-z", "a bad hostname is refused with a reason")
    walk.shoot("tunnel-new-error")
    walk.submit({"hostname": "wiki.example.com", "target": "127.0.0.1:8080"})
    walk.expect("wiki.example.com", "a tunnel made in the form shows in the list")
    walk.go(control + "/tunnels/new")
    walk.submit({"kind": "tcp", "ports": "15432", "target": "127.0.0.1:5432", "proxy_protocol": "v2"})
    walk.expect("tcp 15432", "a tcp tunnel made in the form shows in the list")
    walk.go(control + "/tunnels/new")
    walk.submit({"kind": "udp", "ports": "15432-15433", "target": "127.0.0.1:5432-5433",
                 "proxy_protocol": "v1"})
    walk.expect("applies to tcp and tls tunnels", "PROXY on a udp tunnel is refused with a reason")
    if tunnel_url:
        # wiki.example.com forwards to a port nothing listens on: a visitor gets 502, and
        # the pages say so instead of "serving".
        port = tunnel_url.rsplit(":", 1)[1]
        visit = ["curl", "-sk", "-o", "/dev/null", "--resolve",
                 f"wiki.example.com:{port}:127.0.0.1", f"https://wiki.example.com:{port}/"]

        def failing():
            subprocess.run(visit, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            walk.go(control + "/tunnels")
            return "502: cannot reach" in walk.text()
        wait_for("the tunnels page showing the failing origin", failing, seconds=15)
        walk.go(control + "/")
        walk.expect("wiki.example.com answers 502", "the dashboard lists the failing origin")
        walk.shoot("dashboard-attention")
    walk.go(control + "/tunnels")
    walk.shoot("tunnels")
    walk.click(walk.page.locator("a.edit").first)
    walk.expect("Edit tunnel", "editing a tunnel")
    walk.shoot("tunnel-edit")


def the_rest(walk, control):
    """People, tokens, certificates, the account and two-factor login, the filter."""
    for path, name, shown in [("/users", "bob", "Password for bob"),
                              ("/tokens", "backup script", "shown only this once")]:
        walk.go(control + path)
        walk.submit({"name": name}, form=f"form[action='{path}/new']")
        walk.expect(shown, f"adding to {path} shows the secret once")
        walk.go(control + path)
        walk.expect(name, f"the list at {path}")
        walk.shoot(path.strip("/"))
    walk.go(control + "/certificates")
    walk.expect("none uploaded yet", "the certificates page lists a manual certificate to upload")
    walk.shoot("certificates")
    walk.go(control + "/account")
    walk.expect("Change password", "the account page")
    walk.shoot("account")
    walk.submit({}, form="form[action='/account/totp/start']")
    walk.expect("Scan this", "turning on two-factor login shows a QR code")
    walk.shoot("two-factor")
    walk.go(control + "/tunnels?q=shop")
    walk.expect("match", "the tunnels filter")
    # The list reloads itself (the page's own script, admitted by the CSP): a mark set in
    # this page's window is gone after a reload.
    walk.page.evaluate("window.kmMark = 1")
    wait_for("the tunnels page reloading itself",
             lambda: walk.page.evaluate("window.kmMark === undefined"), seconds=15)
    walk.expect("match", "the reloaded page keeps its filter")


def run(control, code, out, agent_command=None, target=None, check_command=None,
        tunnel_url=None):
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if not binary:
        fail("chromium is not installed (scripts/install-deps installs it)")
    processes = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=binary, args=["--no-sandbox"])
        # The walk's gateway serves certificates from Control's internal CA.
        context = browser.new_context(viewport=LAPTOP, ignore_https_errors=True)
        walk = Walk(context.new_page(), out)
        try:
            first_run(walk, control, code)
            if agent_command:
                key = walk.page.inner_text("#api-key").strip()
                agent = subprocess.Popen(agent_command.replace("{api_key}", key), shell=True,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                processes.append(agent)

                def online():
                    walk.go(control + "/agents")
                    row = walk.page.locator("tr", has_text="garage-pi")
                    return row.count() > 0 and "online" in row.first.inner_text()
                wait_for("the enrolled agent showing online", online)
            walk.go(control + "/agents")
            walk.expect("garage-pi", "the agents list")
            walk.shoot("agents")
            if agent_command:
                walk.go(control + "/tunnels/new")
                walk.submit({"hostname": "hello.localhost", "target": target})
                walk.expect("hello.localhost", "the tunnel made in the form")
                wait_for("a request through the gateway to the new tunnel",
                         lambda: subprocess.run(check_command, shell=True,
                                                stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL).returncode == 0)
                walk.shots.append("use case 5: agent online, tunnel answers through the gateway")
                traffic(walk, control, check_command)
                logs_and_alerts(walk, control)
            if tunnel_url:
                protect(walk, control, tunnel_url)
                walk.shots.append("issue 10: a Control login and a password open a protected tunnel")
            walk.go(control + "/gateways")
            walk.expect("Agents × gateways", "the gateways page shows which agent reaches which gateway")
            walk.shoot("gateways")
            walk.go(control + "/agents")
            walk.click(walk.page.locator("td a", has_text="garage-pi").first)
            walk.expect("Rotate API key", "an agent's own page")
            walk.shoot("agent")
            tunnels(walk, control, tunnel_url)
            the_rest(walk, control)
            print("walked: " + ", ".join(walk.shots))
        finally:
            for started in processes:
                started.terminate()
                started.wait()
            browser.close()


if __name__ == "__main__":
    if len(sys.argv) not in (4, 7, 8):
        sys.exit(__doc__)
    run(sys.argv[1].rstrip("/"), *sys.argv[2:])
