"""Live end-to-end fixtures: a real daphne process and real STOMP clients.

The server shares the test database (tests/live.py); tests that use it are marked
`django_db(transaction=True)`, so their rows are committed where daphne can see them
(and flushed after each test). Each test gets its own daphne (about 1 s to start).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# Assertions inside the helper modules get pytest's explanations too.
pytest.register_assert_rewrite("tests.e2e.clients", "tests.e2e.flow", "tests.e2e.rawstomp")

from tests.live import DaphneServer  # noqa: E402

NODE_DIR = Path(__file__).resolve().parent.parent / "node"
_servers_key = pytest.StashKey[list]()


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def skip_or_fail(reason: str) -> None:
    """Skip locally; in CI a missing prerequisite is a failure, never a silent skip."""
    if _in_ci():
        pytest.fail(f"{reason} (CI=true: the e2e tests must not be skipped)", pytrace=False)
    pytest.skip(reason)


def _register(request, server: DaphneServer) -> None:
    request.node.stash.setdefault(_servers_key, []).append((server, server.log_size()))


@pytest.fixture
def start_daphne(request, django_db_setup):
    """Factory for servers of one test (own env vars); each is stopped after the test."""
    marker = request.node.get_closest_marker("django_db")
    transactional = marker is not None and bool(marker.kwargs.get("transaction", marker.args[0] if marker.args else False))
    if not transactional and "transactional_db" not in request.fixturenames:
        pytest.fail(
            "a live daphne sees committed rows only: mark the test @pytest.mark.django_db(transaction=True)",
            pytrace=False,
        )
    started: list[DaphneServer] = []

    def start(**kwargs) -> DaphneServer:
        server = DaphneServer(**kwargs)
        started.append(server)
        server.start()
        _register(request, server)
        return server

    yield start
    died = [server for server in started if not server.running]
    for server in started:
        server.stop()
    try:
        assert not died, "".join(
            f"daphne on port {server.port} died during the test (exit code {server.returncode}):\n{server.log()}\n"
            for server in died
        )
    finally:
        for server in started:
            server.remove_log()


@pytest.fixture
def daphne_server(start_daphne) -> DaphneServer:
    """A fresh daphne for this test with the default settings.

    One per test, not per session: the flush after each transactional test deletes rows a
    running server relies on (its process registration), which no production server sees.
    """
    # The seed's flows pair the same two clients again after /stop: no rematch window
    # (PROTOCOL.md §7.2 has its own tests, test_rematch.py).
    return start_daphne(env={"RANDOMCHAT_REMATCH_WINDOW": "0"})


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and report.when in ("call", "teardown"):
        for server, offset in item.stash.get(_servers_key, []):
            report.sections.append((f"daphne on port {server.port}", server.log(since=offset) or "(no output)"))
    return report


@pytest.fixture(scope="session")
def node_bin() -> str:
    """The `node` executable, with the test clients' packages installed."""
    node = shutil.which("node")
    if node is None:
        skip_or_fail("Node.js is not installed: the stompjs live tests need it")
    for package in ("@stomp/stompjs", "ws"):
        if not (NODE_DIR / "node_modules" / package / "package.json").is_file():
            skip_or_fail(f"{package} is missing: run npm ci in tests/node")
    return node
