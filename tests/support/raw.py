"""Below the clients: raw HTTP requests and WebSocket handshakes against a live server, with any
Host header; one HTTP request through the ASGI application in process; and a bare STOMP
connection over `websockets` for tests that time how and when the server closes it."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


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


async def stomp_open(url: str, heart_beat: str = "0,0"):
    """A `websockets` connection to `url`, CONNECTed with STOMP 1.2."""
    ws = await connect(url, subprotocols=["v12.stomp"], ping_interval=None, max_size=None)
    await ws.send(f"CONNECT\naccept-version:1.2\nheart-beat:{heart_beat}\n\n\x00")
    assert (await asyncio.wait_for(ws.recv(), 10)).startswith("CONNECTED")
    return ws


async def closed_after(ws, timeout: float) -> tuple[list[str], int, float]:
    """Frames received until the server closes (ignoring heart-beats), the close code, the time."""
    t0, frames = time.monotonic(), []
    try:
        while True:
            message = await asyncio.wait_for(ws.recv(), timeout)
            if message != "\n":
                frames.append(message)
    except ConnectionClosed as exc:
        return frames, exc.rcvd.code if exc.rcvd else None, time.monotonic() - t0


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
