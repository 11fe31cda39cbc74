"""Live end-to-end tests: a real daphne (tests/conftest.py's `daphne_server`) and real STOMP clients.

Tests that use a live server are marked `django_db(transaction=True)`, so their rows are
committed where daphne can see them (and flushed after each test).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# Assertions inside the helper modules get pytest's explanations too.
pytest.register_assert_rewrite("tests.e2e.clients", "tests.e2e.flow")

from tests.support.skip import npm_missing, skip_or_fail  # noqa: E402

NODE_DIR = Path(__file__).resolve().parent.parent / "node"


@pytest.fixture(scope="session")
def node_bin() -> str:
    """The `node` executable, with the test clients' packages installed."""
    node = shutil.which("node")
    if node is None:
        skip_or_fail("Node.js is not installed: the stompjs live tests need it")
    for package in ("@stomp/stompjs", "ws"):
        if not (NODE_DIR / "node_modules" / package / "package.json").is_file():
            skip_or_fail(npm_missing(package, "tests/node"))
    return node


@pytest.fixture
def daphne_server(start_daphne):
    """tests/conftest.py's daphne, without a rematch window: the seed's flows pair the same two
    clients again after /stop (PROTOCOL.md §7.2 has its own tests, test_rematch.py)."""
    return start_daphne(env={"RANDOMCHAT_REMATCH_WINDOW": "0"})
