"""The demo's outer layer (plain ASGI, around the whole app): a Host check against DNS rebinding, and
the security headers on every response, error pages included.

DNS rebinding: a web page from elsewhere points its own name at 127.0.0.1, and the browser then lets
it read this server's answers as its own. The browser still sends that name as the Host header, so
the server answers only Hosts that name this machine: ``localhost``, ``127.0.0.1``, ``[::1]``, the
address the request came in on (what ``--host`` is bound to, or the interface's address when bound
to all) and any names passed as ``allowed_hosts``. The port is not compared: an SSH tunnel or port
forward legitimately arrives with another port, and a rebinding page cannot choose the name."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

# The page may load nothing from elsewhere: every script, style and image comes from this server.
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


def host_name(host: str) -> str:
    """The name part of a Host header, lower case: 'LocalHost:7860' -> 'localhost', '[::1]:80' -> '::1'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guard:
    """ASGI middleware: refuse other Hosts with a 421, add :data:`SECURITY_HEADERS` to every response."""

    def __init__(self, app: Any, allowed_hosts: Iterable[str] = ()):
        self.app = app
        self.allowed = {host_name(h) for h in (*LOCAL_NAMES, *allowed_hosts)}

    def host_ok(self, scope: dict) -> tuple[bool, str]:
        raw = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), "")
        name = host_name(raw)
        server = scope.get("server") or (None, None)
        ok = bool(name) and (name in self.allowed or (server[0] is not None and name == str(server[0]).lower()))
        return ok, raw

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", ())}
                extra = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items() if k.encode() not in have]
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        ok, raw = self.host_ok(scope)
        if ok:
            await self.app(scope, receive, send_with_headers)
            return
        shown = raw[:80] if raw else "(none)"
        body = json.dumps(
            {
                "error": f"Host {shown!r} refused: this demo answers only localhost, 127.0.0.1, [::1] and the "
                "address it listens on (a guard against DNS rebinding); open it by one of those"
            }
        ).encode()
        await send_with_headers(
            {
                "type": "http.response.start",
                "status": 421,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send_with_headers({"type": "http.response.body", "body": body})
