"""Blocking wrappers around real STOMP clients (stomp.py in-process, @stomp/stompjs under Node).

Both record everything they receive in a transcript and offer the same few calls, so one
scenario (tests/e2e/flow.py) can drive either.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import stomp

from tests.support.events import EVENT_KEYS, Event

NODE_CLIENT = Path(__file__).resolve().parent.parent / "node" / "stomp-client.mjs"
DEFAULT_TIMEOUT = 10.0



class Transcript:
    """Everything one client saw, in order; readers block until what they want arrives."""

    def __init__(self) -> None:
        self.entries: list[dict] = []
        self._changed = threading.Condition()

    def add(self, entry: dict) -> None:
        entry.setdefault("at", round(time.monotonic(), 3))  # when the test process saw it
        with self._changed:
            self.entries.append(entry)
            self._changed.notify_all()

    def wait_for(self, predicate, *, start: int = 0, timeout: float, what: str) -> tuple[int, dict]:
        """The first entry from index `start` that matches, and its index."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for index in range(start, len(self.entries)):
                    if predicate(self.entries[index]):
                        return index, self.entries[index]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no {what} within {timeout:g} s; transcript:\n" + self.dump(start)
                    )
                self._changed.wait(remaining)

    def of_type(self, kind: str) -> list[dict]:
        with self._changed:
            return [entry for entry in self.entries if entry["type"] == kind]

    def dump(self, start: int = 0) -> str:
        return "\n".join(json.dumps(entry, ensure_ascii=False)[:500] for entry in self.entries[start:])


class RecordingClient:
    """The calls a scenario uses; subclasses connect a real client and feed `self.transcript`."""

    name = "client"

    def __init__(self) -> None:
        self.transcript = Transcript()
        self._event_cursor = 0  # index after the last event handed out

    # Driving (subclasses)

    def publish(self, destination: str, payload, *, receipt: str | None = None) -> None:
        raise NotImplementedError

    def disconnect(self) -> None:
        """Send DISCONNECT (with a receipt) and close once the RECEIPT arrived."""
        raise NotImplementedError

    def drop(self) -> None:
        """Close the socket abruptly: no DISCONNECT frame."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the client whatever its state (test teardown)."""
        raise NotImplementedError

    # Reading

    def next_event(self, timeout: float = DEFAULT_TIMEOUT) -> Event:
        """The next MESSAGE not handed out yet; fails on an ERROR frame or a timeout."""
        index, entry = self.transcript.wait_for(
            lambda e: e["type"] in ("message", "error"),
            start=self._event_cursor,
            timeout=timeout,
            what=f"event for {self.name}",
        )
        self._event_cursor = index + 1
        assert entry["type"] == "message", f"{self.name} got an ERROR frame: {entry}"
        body = json.loads(entry["body"])
        assert set(body) == EVENT_KEYS, f"event body keys are {sorted(body)}"
        return Event(headers=entry["headers"], body=body)

    def assert_no_event(self, within: float = 0.3) -> None:
        time.sleep(within)
        pending = [e for e in self.transcript.entries[self._event_cursor:] if e["type"] in ("message", "error")]
        assert not pending, f"{self.name} got unexpected frames: {pending}"

    def wait_receipt(self, receipt: str, timeout: float = DEFAULT_TIMEOUT) -> dict:
        _, entry = self.transcript.wait_for(
            lambda e: e["type"] == "receipt" and e["headers"].get("receipt-id") == receipt,
            timeout=timeout,
            what=f"RECEIPT {receipt!r} for {self.name}",
        )
        return entry

    def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> dict:
        _, entry = self.transcript.wait_for(
            lambda e: e["type"] in ("ws-close", "disconnected"), timeout=timeout, what=f"close of {self.name}"
        )
        return entry

    @staticmethod
    def encode(payload) -> str:
        return payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)


class _StompPyListener(stomp.ConnectionListener):
    def __init__(self, transcript: Transcript) -> None:
        self.transcript = transcript

    def _frame(self, kind: str, frame) -> None:
        self.transcript.add({"type": kind, "headers": dict(frame.headers), "body": frame.body})

    def on_connected(self, frame) -> None:
        self._frame("connected", frame)

    def on_message(self, frame) -> None:
        self._frame("message", frame)

    def on_receipt(self, frame) -> None:
        self._frame("receipt", frame)

    def on_error(self, frame) -> None:
        self._frame("error", frame)

    def on_heartbeat(self) -> None:
        self.transcript.add({"type": "received-heartbeat"})

    def on_disconnected(self) -> None:
        self.transcript.add({"type": "disconnected"})


class StompPyClient(RecordingClient):
    """stomp.py's WSStompConnection with its default settings."""

    def __init__(self, ws_url: str, name: str) -> None:
        super().__init__()
        self.name = name
        host_port, _, path = ws_url.removeprefix("ws://").partition("/")
        host, _, port = host_port.rpartition(":")
        self.conn = stomp.WSStompConnection([(host, int(port))], ws_path="/" + path)
        self.conn.set_listener("transcript", _StompPyListener(self.transcript))

    def connect(self) -> RecordingClient:
        self.conn.connect(wait=True)
        return self

    def subscribe(self, destination: str = "/user/dialog", sub_id: str = "1") -> None:
        self.conn.subscribe(destination=destination, id=sub_id)

    def publish(self, destination: str, payload, *, receipt: str | None = None) -> None:
        headers = {"receipt": receipt} if receipt else {}
        self.conn.send(
            destination=destination, body=self.encode(payload), content_type="application/json", headers=headers
        )

    def disconnect(self) -> None:
        # Blocks until the RECEIPT of its DISCONNECT arrived and the socket is closed.
        self.conn.disconnect(receipt=f"{self.name}-bye")

    def drop(self) -> None:
        # shutdown() wakes the receiver thread blocked in recv(); a bare close() would not
        # end the TCP connection while that thread holds the socket.
        self.conn.transport.socket.sock.shutdown(socket.SHUT_RDWR)
        self.wait_closed()

    def close(self) -> None:
        try:
            if self.conn.is_connected():
                self.conn.disconnect()
        except Exception:
            pass
        try:
            self.conn.transport.disconnect_socket()
        except Exception:
            pass


class NodeStompClient(RecordingClient):
    """@stomp/stompjs under Node (tests/node/stomp-client.mjs), driven by JSON lines on stdin.

    The script reports every frame and heart-beat it sends and receives as JSON lines.
    """

    def __init__(self, node: str, ws_url: str, name: str) -> None:
        super().__init__()
        self.name = name
        self.process = subprocess.Popen(
            [node, str(NODE_CLIENT), ws_url, name],
            cwd=NODE_CLIENT.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        self.stderr_lines: list[str] = []
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        for line in self.process.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                entry = {"type": "stdout", "text": line}
            self.transcript.add(entry)
        self.transcript.add({"type": "exit", "code": self.process.wait()})

    def _read_stderr(self) -> None:
        for line in self.process.stderr:
            self.stderr_lines.append(line.rstrip())

    def command(self, op: str, **args) -> None:
        assert self.process.poll() is None, (
            f"node client {self.name} exited with {self.process.returncode}:\n"
            + "\n".join(self.stderr_lines)
            + "\n"
            + self.transcript.dump()
        )
        self.process.stdin.write(json.dumps({"op": op, **args}, ensure_ascii=False) + "\n")
        self.process.stdin.flush()

    def connect(self) -> RecordingClient:
        self.transcript.wait_for(lambda e: e["type"] == "connected", timeout=DEFAULT_TIMEOUT, what="CONNECTED")
        return self

    def subscribe(self, destination: str = "/user/dialog") -> None:
        self.command("subscribe", destination=destination)
        self.transcript.wait_for(
            lambda e: e["type"] == "sent" and e["command"] == "SUBSCRIBE",
            timeout=DEFAULT_TIMEOUT,
            what="SUBSCRIBE sent",
        )

    def publish(self, destination: str, payload, *, receipt: str | None = None) -> None:
        headers = {"content-type": "application/json"}
        if receipt:
            headers["receipt"] = receipt
        self.command("publish", destination=destination, body=self.encode(payload), headers=headers)

    def disconnect(self) -> None:
        """client.deactivate(): DISCONNECT with a receipt, close once the RECEIPT arrived."""
        self.command("deactivate")
        self.transcript.wait_for(lambda e: e["type"] == "deactivated", timeout=DEFAULT_TIMEOUT, what="deactivate()")

    def drop(self) -> None:
        self.command("drop")
        self.wait_closed()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.close()
            except OSError:
                pass
            try:
                self.process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        for reader in self._readers:
            reader.join(timeout=2)
