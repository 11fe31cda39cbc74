"""Scale-out tests: several real daphne processes sharing PostgreSQL and Redis.

They run only on PostgreSQL + Redis (DATABASE_URL and REDIS_URL set, as .ci/run does) and
skip on the embedded default. With CI=true and both set, a service that does not answer
is a failure, never a skip.

Every daphne process a test starts is stopped at its end (also on failure or timeout);
the services the restart tests stop are started again by their guards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.scaleout.helpers", "tests.scaleout.load", "tests.scaleout.services")

from tests.support.live import DaphneServer, live_servers, watch  # noqa: E402
from tests.support.skip import skip_or_fail  # noqa: E402

from . import services  # noqa: E402

HERE = Path(__file__).resolve().parent
_timings_key = pytest.StashKey[list]()

# Every server of these tests logs at INFO (pairs, refusals, process releases): the
# evidence a failed test attaches.
BASE_ENV = {"RANDOMCHAT_LOG_LEVEL": "INFO"}


def pytest_collection_modifyitems(config, items):
    reason = services.missing_services()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def services_ready():
    if not services.pg_up():
        skip_or_fail("PostgreSQL (DATABASE_URL) does not accept connections")
    if not services.redis_up():
        skip_or_fail("Redis (REDIS_URL) does not answer PING")


@pytest.fixture
def cluster(request, transactional_db, services_ready):
    """`cluster(n, **env)` starts n daphne processes sharing the test database and Redis.

    All of them are stopped after the test. Their output is attached to a failed test's
    report; with RANDOMCHAT_SCALEOUT_LOG_DIR set it is also kept there.
    """
    stack = contextlib.ExitStack()
    started: list[DaphneServer] = []

    def start(count: int, **env) -> list[DaphneServer]:
        env = {**BASE_ENV, **{k: str(v) for k, v in env.items()}}
        servers = stack.enter_context(live_servers(count, env=env))
        for server in servers:
            started.append(server)
            watch(request, server)
        return servers

    try:
        yield start
    finally:
        keep = os.environ.get("RANDOMCHAT_SCALEOUT_LOG_DIR")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            for index, server in enumerate(started):
                if server.log_path is not None and server.log_path.exists():
                    shutil.copy(server.log_path, Path(keep) / f"{request.node.name}-{index}-{server.port}.log")
        stack.close()
        from django.db import connections

        # The test's own connections may have met a restarted PostgreSQL.
        connections.close_all()


@pytest.fixture
def redis_guard(transactional_db, services_ready):
    """For tests that stop Redis: it runs again after the test, whatever happened."""
    reason = services.redis_controllable()
    if reason:
        skip_or_fail(reason)
    try:
        yield
    finally:
        services.redis_start()


@pytest.fixture
def pg_guard(transactional_db, services_ready):
    """For tests that stop PostgreSQL: it runs again after the test, before the flush."""
    reason = services.pg_controllable()
    if reason:
        skip_or_fail(reason)
    try:
        yield
    finally:
        services.pg_start()
        from django.db import connections

        connections.close_all()


@pytest.fixture
def timings(request):
    """`timings(label, seconds)` records a duration (or another unit), printed in the summary."""

    def record(label: str, value: float, unit: str = "s") -> None:
        request.config.stash.setdefault(_timings_key, []).append((request.node.name, label, value, unit))
        request.node.user_properties.append((label, round(value, 3)))

    return record


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    rows = config.stash.get(_timings_key, [])
    if not rows:
        return
    terminalreporter.section("scale-out timings")
    for test, label, value, unit in rows:
        terminalreporter.write_line(f"{test}: {label}: {value:.2f} {unit}" if unit == "s" else f"{test}: {label}: {value} {unit}")
