"""A real SMTP server (aiosmtpd) that keeps what it receives, for the email action and notifications."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

REFUSED_PREFIX = "nobody@"


@dataclass
class Delivered:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class SmtpSink:
    """Accepts every recipient except `nobody@…` (550), and records each message it takes."""

    port: int = 0
    delivered: list[Delivered] = field(default_factory=list)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address.startswith(REFUSED_PREFIX):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.delivered.append(Delivered(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted"

    def to(self, address: str) -> list[EmailMessage]:
        return [d.message for d in self.delivered if address in d.rcpt_tos]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_smtp(login: tuple[str, str] | None = None) -> tuple[SmtpSink, Controller]:
    """A server on a free port; with `login` it takes mail only after AUTH with that user and password."""
    sink = SmtpSink(port=free_port())
    auth: dict[str, Any] = {}
    if login is not None:
        expected = (login[0].encode(), login[1].encode())

        def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
            ok = isinstance(data, LoginPassword) and (data.login, data.password) == expected
            return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 535 itself

        # Plain-text AUTH is fine on the loopback interface of a test.
        auth = {"authenticator": authenticator, "auth_required": True, "auth_require_tls": False}
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port, **auth)
    controller.start()
    return sink, controller
