"""Raw HTTP and WebSocket handshakes against a live server, with any Host header."""

from __future__ import annotations

import base64
import os
import socket


def request(server, path: str, *, host: str | None = None, headers: dict | None = None) -> tuple[int, int]:
    """GET `path` over a fresh socket; (status, the client's own port)."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host or server.http_url.split('/')[2]}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        status_line = sock.makefile("rb").readline().decode("latin-1")
        return int(status_line.split()[1]), sock.getsockname()[1]


def websocket_handshake(server, *, host: str | None = None, origin: str | None = None) -> tuple[int, int]:
    """The status of a WebSocket opening handshake on /connect (101: accepted)."""
    headers = {
        "Upgrade": "websocket",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Protocol": "v12.stomp",
    }
    if origin is not None:
        headers["Origin"] = origin
    lines = [
        "GET /connect HTTP/1.1", f"Host: {host or server.http_url.split('/')[2]}", "Connection: Upgrade",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        status_line = sock.makefile("rb").readline().decode("latin-1")
        return int(status_line.split()[1]), sock.getsockname()[1]
