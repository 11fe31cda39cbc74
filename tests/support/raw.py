"""Below the clients: raw HTTP requests and WebSocket handshakes against a live server, with any
Host header, and one HTTP request through the ASGI application in process."""

from __future__ import annotations

import base64
import os
import socket


def request(server, path: str, *, host: str | None = None, headers: dict | None = None) -> tuple[int, int]:
    """GET `path` over a fresh socket; (status, the client's own port)."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host or server.http_url.split('/')[2]}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return _status(server, lines)


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
    return _status(server, lines)


def _status(server, lines: list[str]) -> tuple[int, int]:
    """Send a request head over a fresh socket; (the response's status, the client's own port)."""
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        status_line = sock.makefile("rb").readline().decode("latin-1")
        return int(status_line.split()[1]), sock.getsockname()[1]


async def asgi_get(path: str, *, headers=(), client=("127.0.0.1", 50000), method: str = "GET"):
    """One HTTP request through randomchat's ASGI application, in process: (status, headers, body)."""
    from asgiref.testing import ApplicationCommunicator

    from randomchat.asgi import application

    scope = {
        "type": "http", "http_version": "1.1", "method": method, "scheme": "http", "path": path,
        "raw_path": path.encode(), "query_string": b"", "root_path": "", "client": client,
        "server": ("127.0.0.1", 80), "headers": [(b"host", b"localhost"), *headers],
    }
    communicator = ApplicationCommunicator(application, scope)
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(10)
    body = await communicator.receive_output(10)
    await communicator.wait(10)
    return start["status"], dict(start["headers"]), body["body"]
