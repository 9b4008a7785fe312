"""A real SMTP server for tests/tests/alerts.rs: aiosmtpd offering STARTTLS with the given
certificate, requiring it before AUTH, accepting one user and password, and keeping each
mail it takes as a file in a directory.

    python3 tests/smtp_server.py PORT DIR CERT KEY USER PASSWORD
"""
import os
import signal
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

port, maildir, cert, key, user, password = sys.argv[1:7]
os.makedirs(maildir, exist_ok=True)


class Keep:
    async def handle_DATA(self, server, session, envelope):
        name = os.path.join(maildir, f"{len(os.listdir(maildir)):04}.eml")
        with open(name, "wb") as mail:
            mail.write(envelope.content)
        return "250 OK"


def authenticate(server, session, envelope, mechanism, data):
    right = (isinstance(data, LoginPassword) and data.login == user.encode()
             and data.password == password.encode())
    return AuthResult(success=right)


context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)
controller = Controller(Keep(), hostname="127.0.0.1", port=int(port), tls_context=context,
                        require_starttls=True, authenticator=authenticate,
                        auth_require_tls=True, auth_required=True)
controller.start()
print("ready", flush=True)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
controller.stop()
