"""Real daphne processes for live tests, sharing the database the test process sees.

Start them only after pytest-django's `django_db_setup` (the test database must exist),
and use them from tests marked `django_db(transaction=True)`: daphne reads and writes
through its own connections, so it sees committed rows only.

    with DaphneServer(env={"RANDOMCHAT_HEARTBEAT_SEND_MS": "500"}) as server:
        connect_to(server.ws_url)

Several processes need a channel layer they share (REDIS_URL); `live_servers(n)` starts
them together and refuses n > 1 on the in-memory layer.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"  # screenshots and captures a live test leaves to look at
APPLICATION = "randomchat.asgi:application"
DEFAULT_STARTUP_TIMEOUT = 20.0
DEFAULT_STOP_TIMEOUT = 10.0

# Every process any DaphneServer started and has not reaped yet: killed at exit, so an
# interrupted session leaves no server behind.
_running: set[subprocess.Popen] = set()


# The servers whose output a failed test's report shows (tests/conftest.py), with the log offset at start.
SERVERS_KEY = pytest.StashKey[list]()


def watch(request, server: DaphneServer) -> None:
    """Attach what `server` logs from now on to this test's report, should the test fail."""
    request.node.stash.setdefault(SERVERS_KEY, []).append((server, server.log_size()))


class DaphneStartError(RuntimeError):
    """A daphne process exited, or did not listen in time; the message holds its output."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def daphne_command() -> list[str]:
    """The daphne of the project's venv, else of the running interpreter."""
    for candidate in (REPO / ".venv" / "bin" / "daphne", Path(sys.executable).parent / "daphne"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return [str(candidate)]
    found = shutil.which("daphne")
    return [found] if found else [sys.executable, "-m", "daphne"]


def _replace_url_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(name, safe="")))


def _url_from_settings(settings_dict: Mapping) -> str:
    user = quote(settings_dict.get("USER") or "", safe="")
    password = settings_dict.get("PASSWORD") or ""
    auth = user + (":" + quote(password, safe="") if password else "")
    host = settings_dict.get("HOST") or "localhost"
    port = settings_dict.get("PORT")
    netloc = (auth + "@" if auth else "") + host + (f":{port}" if port else "")
    return f"postgres://{netloc}/{quote(settings_dict['NAME'], safe='')}"


def database_env(alias: str = "default") -> dict[str, str]:
    """Env vars that point randomchat's settings at the database `alias` uses now.

    Inside a test session that is the test database (pytest-django has switched NAME).
    """
    from django.db import connections

    connection = connections[alias]
    settings_dict = connection.settings_dict
    name = str(settings_dict["NAME"])
    if connection.vendor == "sqlite":
        if name == ":memory:" or "mode=memory" in name:
            raise DaphneStartError(
                "The test database is an in-memory SQLite database, which another process cannot "
                "open; give DATABASES['default']['TEST']['NAME'] a file name"
            )
        return {"RANDOMCHAT_SQLITE_PATH": str(Path(name).resolve())}
    if connection.vendor == "postgresql":
        url = os.environ.get("DATABASE_URL")
        return {"DATABASE_URL": _replace_url_database(url, name) if url else _url_from_settings(settings_dict)}
    raise DaphneStartError(f"live servers do not know how to share a {connection.vendor} database")


def server_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The current environment, pointed at the current database, plus `extra`."""
    env = dict(os.environ)
    for name in ("DATABASE_URL", "RANDOMCHAT_SQLITE_PATH"):
        env.pop(name, None)
    env.update(database_env())
    # REDIS_URL (the shared channel layer) is passed through as it is, or stays unset.
    env.setdefault("DJANGO_SETTINGS_MODULE", "randomchat.settings")
    env["PYTHONUNBUFFERED"] = "1"
    env.update({key: str(value) for key, value in (extra or {}).items()})
    return env


class DaphneServer:
    """One `daphne randomchat.asgi:application` process on a free 127.0.0.1 port.

    `start()` returns once the port accepts connections; `stop()` terminates it (kill after
    `stop_timeout`). Also a context manager. Its output goes to a log file: `log()`.
    """

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.extra_env = dict(env or {})
        self.host = host
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.extra_args = tuple(extra_args)
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self.returncode: int | None = None
        self._log_file = None
        self.log_path: Path | None = None

    # Addresses

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self._port()}/connect"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self._port()}"

    def _port(self) -> int:
        if self.port is None:
            raise RuntimeError("DaphneServer is not started")
        return self.port

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # Life cycle

    def start(self) -> DaphneServer:
        """Spawn daphne and wait until it listens; a taken port is retried with another one."""
        for attempt in range(3):
            self.spawn()
            try:
                self.wait_ready()
                return self
            except DaphneStartError as exc:
                in_use = "Address already in use" in str(exc) or "CannotListenError" in str(exc)
                self.stop()
                if not in_use or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def spawn(self) -> None:
        """Start the process without waiting for it (see `wait_ready`)."""
        if self.running:
            raise RuntimeError(f"daphne already runs on port {self.port}")
        self.port = free_port(self.host)
        self._close_log()
        self.remove_log()  # a failed earlier attempt's output is in its exception already
        fd, path = tempfile.mkstemp(prefix=f"daphne-{self.port}-", suffix=".log")
        self.log_path = Path(path)
        self._log_file = os.fdopen(fd, "wb")
        command = [*daphne_command(), "-b", self.host, "-p", str(self.port), *self.extra_args, APPLICATION]
        self.process = subprocess.Popen(
            command,
            cwd=REPO,
            env=server_env(self.extra_env),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        self.returncode = None
        _running.add(self.process)

    def wait_ready(self) -> None:
        """Block until the port accepts a TCP connection; DaphneStartError otherwise."""
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise DaphneStartError(
                    f"daphne exited with code {code} before listening on {self.host}:{self.port}\n"
                    f"--- daphne output ---\n{self.log()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                output = self.log()
                self.stop()
                raise DaphneStartError(
                    f"daphne did not listen on {self.host}:{self.port} within {self.startup_timeout:g} s\n"
                    f"--- daphne output ---\n{output}"
                )
            time.sleep(0.05)

    def stop(self) -> int | None:
        """Terminate the process, kill it if it lingers; return its exit code. Idempotent."""
        process = self.process
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=self.stop_timeout)
            self.returncode = process.returncode
            _running.discard(process)
            self.process = None
        self._close_log()
        return self.returncode

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    # Output

    def log_size(self) -> int:
        """Bytes of output so far, to read later what one test made the server say."""
        try:
            return self.log_path.stat().st_size if self.log_path else 0
        except FileNotFoundError:
            return 0

    def log(self, since: int = 0, limit: int = 20_000) -> str:
        """The server's output (stdout and stderr) from byte `since`, at most its last `limit` bytes."""
        if self.log_path is None:
            return ""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(since)
                data = log.read()
        except FileNotFoundError:
            return ""
        if len(data) > limit:
            data = b"[...]\n" + data[-limit:]
        return data.decode("utf-8", "replace")

    def remove_log(self) -> None:
        if self.log_path is not None and not self.running:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None

    def __enter__(self) -> DaphneServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
        self.remove_log()

    def __repr__(self) -> str:
        state = "running" if self.running else f"stopped ({self.returncode})"
        return f"<DaphneServer {self.host}:{self.port} {state}>"


@contextlib.contextmanager
def live_servers(count: int, *, env: Mapping[str, str] | None = None, **kwargs) -> Iterator[list[DaphneServer]]:
    """Start `count` daphne processes at once (each on its own port); stop them all at exit.

    More than one needs a shared channel layer: the in-memory one lives inside one process.
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    merged_env = {**os.environ, **(env or {})}
    if count > 1 and not merged_env.get("REDIS_URL"):
        raise ValueError(
            "several daphne processes need a shared channel layer: set REDIS_URL "
            "(the in-memory layer lives inside one process)"
        )
    servers = [DaphneServer(env=env, **kwargs) for _ in range(count)]
    try:
        for server in servers:
            server.spawn()
        for server in servers:
            try:
                server.wait_ready()
            except DaphneStartError as exc:
                if "Address already in use" not in str(exc) and "CannotListenError" not in str(exc):
                    raise
                server.stop()
                server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()
        for server in servers:
            server.remove_log()


@atexit.register
def _kill_leftovers() -> None:
    for process in list(_running):
        if process.poll() is None:
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
    _running.clear()
