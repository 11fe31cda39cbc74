"""Shared plumbing for the live benchmarks in bench/ (not a benchmark itself).

- `Daphne`: one daphne subprocess on a free 127.0.0.1 port, its log in a temp file, its
  RLIMIT_NOFILE raised, stopped (SIGTERM, then SIGKILL) by `stop()` or at exit.
- `sqlite_database()` / `postgres_database()`: a fresh, migrated database and the env vars
  that point randomchat's settings at it; PostgreSQL and Redis are private instances this
  module starts on free ports (`postgres_admin_url()`, `redis_url()`), since the test suite
  restarts the machine's own while it runs.
- `StompClient`: an asyncio `websockets` STOMP client that parses with randomchat's own
  FrameParser and hands every MESSAGE body to a callback.
- `percentile()`, `median()`, `load_average()`, `rss_kib()`, `cpu_seconds()`: measuring and
  reporting helpers.

Every process a benchmark starts is registered here and stopped at exit, also on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from randomchat.stomp import HEARTBEAT, Frame, FrameParser, encode_frame  # noqa: E402

DAPHNE = REPO / ".venv" / "bin" / "daphne"
PYTHON = sys.executable
APPLICATION = "randomchat.asgi:application"
# The benchmarks' Redis: a private redis-server on a free port (started on first use, stopped
# at exit), because the test suite restarts the machine's Redis at 127.0.0.1:6379 while it
# runs. BENCH_REDIS_URL names another one. socket_timeout=30 in the URL was a workaround for a
# server bug, fixed in the settings since e51db12 and kept for older revisions: redis-py 8
# defaults socket_timeout to 5 s, the very time channels-redis blocks in BZPOPMIN, so an idle
# process's channel-layer receive raised redis.exceptions.TimeoutError, which killed the
# consumer that ran it (its WebSocket closed with 1011).
REDIS_SOCKET_TIMEOUT = "socket_timeout=30"
_redis_url: str | None = None
_service_pids: list[int] = []


def service_pids() -> list[int]:
    """The private PostgreSQL (postmaster) and redis-server started so far, to count their CPU."""
    return list(_service_pids)


def redis_url() -> str:
    global _redis_url
    if _redis_url is None:
        if os.environ.get("BENCH_REDIS_URL"):
            _redis_url = os.environ["BENCH_REDIS_URL"]
        else:
            port = free_port()
            redis = spawn(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                           "--loglevel", "warning"])
            _service_pids.append(redis.pid)
            deadline = time.monotonic() + 10
            while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True).stdout.strip() != "PONG":
                if time.monotonic() > deadline:
                    raise RuntimeError("the private redis-server did not start")
                time.sleep(0.05)
            _redis_url = f"redis://127.0.0.1:{port}/0"
        if "socket_timeout" not in _redis_url:
            _redis_url += ("&" if "?" in _redis_url else "?") + REDIS_SOCKET_TIMEOUT
    return _redis_url

# Load generation needs more than the per-connection defaults (1 /start per second, burst 5;
# 10 /message per second, burst 30): benchmarks that say so pass these to the server.
RAISED_RATE_LIMITS = {
    "RANDOMCHAT_RATE_START_PER_S": "100000",
    "RANDOMCHAT_RATE_START_BURST": "100000",
    "RANDOMCHAT_RATE_MESSAGE_PER_S": "100000",
    "RANDOMCHAT_RATE_MESSAGE_BURST": "100000",
    # Every frame's limit and the inbound pacing (f7f2df3): a load generator's connection
    # sends far more frames per second than a person.
    "RANDOMCHAT_RATE_FRAME_PER_S": "100000",
    "RANDOMCHAT_RATE_FRAME_BURST": "100000",
    "RANDOMCHAT_INBOUND_FRAMES_PER_S": "100000",
    "RANDOMCHAT_INBOUND_FRAMES_BURST": "100000",
    # No rematch (PROTOCOL.md §7.2) refuses two connections a new dialog for 300 s, and the
    # idle pairs of bench/rush.py and bench/pairing.py pair the same two again and again: a
    # window this short excludes no one, and the connections, whose dialogs ended longer ago,
    # skip the rematch look-up (as a /start more than the window after a dialog does).
    "RANDOMCHAT_REMATCH_WINDOW": "0.001",
}

_children: set[subprocess.Popen] = set()
_cleanups: list = []


def raise_nofile(limit: int = 20000) -> None:
    """Raise this process's open-file limit as far as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def rss_kib(pid: int) -> int:
    """VmRSS of a process, in KiB, from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stop_all() -> None:
    for proc in list(_children):
        stop_process(proc)
    for cleanup in reversed(_cleanups):
        try:
            cleanup()
        except Exception as exc:  # noqa: BLE001 - best effort at exit
            print(f"cleanup failed: {exc}", file=sys.stderr)
    _cleanups.clear()


atexit.register(_stop_all)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    _children.discard(proc)


def spawn(command: list[str], *, env: dict | None = None, log: Path | None = None, cwd=REPO, **kw) -> subprocess.Popen:
    """A child process that is stopped at exit."""
    out = open(log, "wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, **kw)
    _children.add(proc)
    return proc


def server_env(database_env: dict, extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "RANDOMCHAT_SQLITE_PATH", "REDIS_URL")}
    env.update(database_env)
    env["DJANGO_SETTINGS_MODULE"] = "randomchat.settings"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class Daphne:
    """`daphne <app>` on a free port; `env` is its whole environment."""

    def __init__(self, env: dict, *, app: str = APPLICATION, name: str = "daphne", pythonpath: list[str] | None = None,
                 cwd: Path | str = REPO):
        self.env = dict(env)
        self.cwd = cwd  # daphne imports the application from its working directory
        if pythonpath:
            self.env["PYTHONPATH"] = os.pathsep.join([*pythonpath, self.env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self.app = app
        self.name = name
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connect"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self, timeout: float = 30) -> Daphne:
        self.port = free_port()
        fd, path = tempfile.mkstemp(prefix=f"bench-{self.name}-{self.port}-", suffix=".log")
        os.close(fd)
        self.log_path = Path(path)
        command = [str(DAPHNE), "-b", "127.0.0.1", "-p", str(self.port), "--access-log", "/dev/null", self.app]
        self.proc = spawn(command, env=self.env, log=self.log_path, preexec_fn=raise_nofile, cwd=self.cwd)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not listen in {timeout}s:\n{self.log_tail()}")
                time.sleep(0.05)

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_errors(self) -> list[str]:
        """Lines of its log that look like failures (tracebacks, ERROR records)."""
        if self.log_path is None or not self.log_path.exists():
            return []
        return [
            line for line in self.log_path.read_text(errors="replace").splitlines()
            if "Traceback" in line or " ERROR " in line or "CRITICAL" in line
        ]

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        if self.log_path is not None and os.environ.get("BENCH_KEEP_LOGS") != "1":
            self.log_path.unlink(missing_ok=True)


# Databases


def migrate(database_env: dict) -> None:
    env = server_env(database_env)
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=REPO, env=env, check=True
    )


def sqlite_database(label: str = "bench") -> dict:
    """A fresh, migrated SQLite file (deleted at exit); returns its env."""
    fd, path = tempfile.mkstemp(prefix=f"{label}-", suffix=".sqlite3")
    os.close(fd)
    os.unlink(path)
    env = {"RANDOMCHAT_SQLITE_PATH": path}
    migrate(env)

    def remove() -> None:
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(path + suffix).unlink(missing_ok=True)

    _cleanups.append(remove)
    return env


# The benchmarks' PostgreSQL: a private cluster (initdb in a temp directory, the machine's
# PostgreSQL binaries and defaults, a free port; removed at exit), because the test suite
# stops and starts the machine's cluster at 127.0.0.1:5432 while it runs.
# BENCH_POSTGRES_ADMIN_URL=postgres://postgres@127.0.0.1:5432/test uses that one instead.
_postgres_admin_url: str | None = None


def postgres_admin_url() -> str:
    global _postgres_admin_url
    if _postgres_admin_url is None:
        _postgres_admin_url = os.environ.get("BENCH_POSTGRES_ADMIN_URL") or _private_postgres()
    return _postgres_admin_url


def _private_postgres() -> str:
    import glob
    import pwd
    import shutil

    bindir = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
    user = pwd.getpwnam("postgres")
    datadir = tempfile.mkdtemp(prefix="bench-pg-")
    os.chown(datadir, user.pw_uid, user.pw_gid)

    def as_postgres() -> None:
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)

    subprocess.run([f"{bindir}/initdb", "-D", datadir, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"],
                   check=True, capture_output=True, preexec_fn=as_postgres, cwd="/tmp")
    port = free_port()
    proc = spawn([f"{bindir}/postgres", "-D", datadir, "-p", str(port), "-k", datadir, "-c", "listen_addresses=127.0.0.1"],
                 preexec_fn=as_postgres, cwd="/tmp", log=Path(datadir) / "bench.log")
    _service_pids.append(proc.pid)
    _children.discard(proc)  # stopped below, with a fast shutdown (SIGINT), not SIGTERM's smart one

    def stop() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(datadir, ignore_errors=True)

    _cleanups.insert(0, stop)  # cleanups run last-first: after every database drop
    deadline = time.monotonic() + 30
    while subprocess.run([f"{bindir}/pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port)]).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the private PostgreSQL did not start: {(Path(datadir) / 'bench.log').read_text()[-2000:]}")
        time.sleep(0.1)
    return f"postgres://postgres@127.0.0.1:{port}/postgres"


def _admin_execute(sql: str) -> None:
    import psycopg

    with psycopg.connect(postgres_admin_url().replace("postgres://", "postgresql://"), autocommit=True) as conn:
        conn.execute(sql)


def postgres_database(name: str = "bench_randomchat", keep: bool = False) -> dict:
    """A fresh, migrated PostgreSQL database `name` (dropped at exit unless keep)."""
    if not name.replace("_", "").isalnum():
        raise ValueError(name)
    _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _admin_execute(f'CREATE DATABASE "{name}"')
    base = postgres_admin_url().rsplit("/", 1)[0]
    env = {"DATABASE_URL": f"{base}/{name}"}
    migrate(env)
    if not keep:
        _cleanups.append(lambda: _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    return env


def use_database(database_env: dict) -> None:
    """Point this process's Django at a benchmark database (call before django.setup())."""
    for key in ("DATABASE_URL", "RANDOMCHAT_SQLITE_PATH", "REDIS_URL"):
        os.environ.pop(key, None)
    os.environ.update(database_env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "randomchat.settings"
    import django

    django.setup()


# The client


class Closed(Exception):
    pass


class StompClient:
    """One STOMP-over-WebSocket connection; `on_message(client, body_bytes, t)` per MESSAGE
    (t: time.perf_counter() when the WebSocket message was read; a returned coroutine is
    awaited before the next frame is read).

    Frames are encoded with randomchat.stomp.encode_frame (so they carry content-length)
    and parsed with FrameParser, exactly as the server does it.
    """

    def __init__(self, url: str, on_message=None, heartbeat: str = "0,0"):
        self.url = url
        self.on_message = on_message
        self.heartbeat = heartbeat
        self.ws = None
        self.parser = FrameParser(version="1.2")
        self.receipts: dict[str, asyncio.Future] = {}
        self.reader: asyncio.Task | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.errors: list[Frame] = []
        self.user = None  # free for the benchmark: the client's senderUUID, dialog, ...
        self.chat = None

    async def open(self, subscribe: bool = True) -> StompClient:
        from websockets.asyncio.client import connect

        self.ws = await connect(
            self.url, subprotocols=["v12.stomp"], compression=None, max_size=None,
            ping_interval=None, open_timeout=60, close_timeout=5,
        )
        await self.ws.send(
            encode_frame(Frame("CONNECT", (("accept-version", "1.2"), ("host", "localhost"), ("heart-beat", self.heartbeat))))
        )
        connected = await self._next_frame()
        if connected.command != "CONNECTED":
            raise RuntimeError(f"expected CONNECTED, got {connected}")
        if subscribe:
            await self.ws.send(encode_frame(Frame("SUBSCRIBE", (("id", "sub-0"), ("destination", "/user/dialog")))))
        self.reader = asyncio.get_running_loop().create_task(self._read())
        return self

    async def _next_frame(self) -> Frame:
        while True:
            data = await self.ws.recv()
            for item in self.parser.feed(data.encode() if isinstance(data, str) else data):
                if item is not HEARTBEAT:
                    return item

    async def _read(self) -> None:
        on_message = self.on_message
        clock = time.perf_counter
        try:
            async for data in self.ws:
                now = clock()
                for item in self.parser.feed(data.encode() if isinstance(data, str) else data):
                    if item is HEARTBEAT:
                        continue
                    command = item.command
                    if command == "MESSAGE":
                        if on_message is not None:
                            reply = on_message(self, item.body, now)
                            if reply is not None:  # a coroutine: e.g. the answer to a ping
                                await reply
                    elif command == "RECEIPT":
                        fut = self.receipts.pop(item.get("receipt-id"), None)
                        if fut is not None and not fut.done():
                            fut.set_result(now)
                    elif command == "ERROR":
                        self.errors.append(item)
        except Exception:  # noqa: BLE001 - a dropped connection ends the reader
            pass
        finally:
            if not self.closed.done():
                self.closed.set_result(None)
            for fut in self.receipts.values():
                if not fut.done():
                    fut.set_exception(Closed(self.url))

    async def send(self, destination: str, body: bytes | dict, receipt: str | None = None) -> asyncio.Future | None:
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        headers = (("destination", destination), ("content-type", "application/json"))
        fut = None
        if receipt is not None:
            headers += (("receipt", receipt),)
            fut = asyncio.get_running_loop().create_future()
            self.receipts[receipt] = fut
        await self.ws.send(encode_frame(Frame("SEND", headers, body)))
        return fut

    async def send_raw(self, data: bytes | str) -> None:
        await self.ws.send(data)

    async def close(self) -> None:
        if self.ws is not None:
            try:
                await self.ws.close()
            except Exception:  # noqa: BLE001
                pass
        if self.reader is not None:
            try:
                await asyncio.wait_for(self.reader, 5)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001
                self.reader.cancel()


# Statistics


def percentile(values, q: float) -> float:
    """The q-quantile (0..100) of values by linear interpolation (numpy's default)."""
    data = sorted(values)
    if not data:
        return float("nan")
    k = (len(data) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def median(values) -> float:
    return statistics.median(values) if values else float("nan")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def header(title: str, argv: list[str] | None = None) -> None:
    command = " ".join([".venv/bin/python", *(argv or sys.argv)])
    print(f"# {title}")
    print(f"# command: {command}")
    print(f"# host: {os.cpu_count()} cores, load average before: {load_average()}")
    sys.stdout.flush()
