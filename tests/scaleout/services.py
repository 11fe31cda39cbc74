"""Checks on, and control of, the PostgreSQL and Redis the scale-out tests run against.

The restart tests stop and start the real services of this machine (as .ci/run starts
them); they only do so for services on this host that they can control.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

NEEDS = "needs PostgreSQL + Redis: run with DATABASE_URL and REDIS_URL set, as .ci/run does"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", ""}


def missing_services() -> str | None:
    """Why the scale-out tests cannot run in this environment, or None."""
    database_url = os.environ.get("DATABASE_URL", "")
    redis_url = os.environ.get("REDIS_URL", "")
    if not database_url or not redis_url:
        return NEEDS
    if urlsplit(database_url).scheme not in {"postgres", "postgresql", "pgsql", "postgis"}:
        return f"{NEEDS} (DATABASE_URL is not a PostgreSQL URL)"
    return None


# Redis


def redis_address() -> tuple[str, int]:
    parts = urlsplit(os.environ["REDIS_URL"])
    return parts.hostname or "127.0.0.1", parts.port or 6379


def redis_cli(*args: str, timeout: float = 5.0) -> subprocess.CompletedProcess:
    host, port = redis_address()
    return subprocess.run(
        ["redis-cli", "-h", host, "-p", str(port), *args], capture_output=True, text=True, timeout=timeout
    )


def redis_up() -> bool:
    try:
        return redis_cli("ping", timeout=2).stdout.strip() == "PONG"
    except (OSError, subprocess.SubprocessError):
        return False


def redis_controllable() -> str | None:
    host, _ = redis_address()
    if host not in LOCAL_HOSTS:
        return f"Redis at {host} is not on this machine: the restart test cannot restart it"
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed: the Redis restart test needs it"
    return None


def redis_stop() -> None:
    redis_cli("shutdown", "nosave")
    wait_for(lambda: not redis_up(), 10, "Redis to stop")


def redis_start() -> None:
    """Start Redis the way .ci/run does, and wait for it to answer."""
    if redis_up():
        return
    _, port = redis_address()
    Path("/var/lib/redis").mkdir(parents=True, exist_ok=True)
    Path("/var/log/redis").mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", str(port),
            "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
            "--logfile", "/var/log/redis/ci.log",
        ],
        check=False,
        capture_output=True,
        timeout=15,
    )
    wait_for(redis_up, 15, "Redis to answer PING")


# PostgreSQL


def pg_address() -> tuple[str, int]:
    parts = urlsplit(os.environ["DATABASE_URL"])
    return parts.hostname or "127.0.0.1", parts.port or 5432


def pg_up() -> bool:
    host, port = pg_address()
    try:
        return subprocess.run(
            ["pg_isready", "-q", "-h", host, "-p", str(port)], capture_output=True, timeout=5
        ).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def pg_cluster() -> tuple[str, str] | None:
    """(version, name) of the one local cluster, as `ls /etc/postgresql` finds it in .ci/run."""
    root = Path("/etc/postgresql")
    versions = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    if len(versions) != 1 or not (root / versions[0] / "main").is_dir():
        return None
    return versions[0], "main"


def pg_controllable() -> str | None:
    host, _ = pg_address()
    if host not in LOCAL_HOSTS:
        return f"PostgreSQL at {host} is not on this machine: the restart test cannot restart it"
    if shutil.which("pg_ctlcluster") is None or shutil.which("pg_isready") is None:
        return "pg_ctlcluster/pg_isready are not installed: the PostgreSQL restart test needs them"
    if pg_cluster() is None:
        return "no single PostgreSQL cluster under /etc/postgresql/*/main"
    return None


def _pg_ctl(action: str) -> subprocess.CompletedProcess:
    version, name = pg_cluster()
    return subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, action],
        capture_output=True,
        text=True,
        timeout=60,
    )


def pg_stop() -> None:
    result = _pg_ctl("stop")
    assert result.returncode == 0 or not pg_up(), f"pg_ctlcluster stop failed: {result.stderr}"
    wait_for(lambda: not pg_up(), 15, "PostgreSQL to stop")


def pg_start() -> None:
    if pg_up():
        return
    _pg_ctl("start")
    wait_for(pg_up, 30, "PostgreSQL to accept connections")


# Helpers


def wait_for(condition, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
