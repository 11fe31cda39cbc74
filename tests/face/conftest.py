"""The face's live daphne: tests/conftest.py's, without a rematch window."""

import pytest


@pytest.fixture
def daphne_server(start_daphne):
    """The page's "Next" pairs the same two browsers again: no rematch window (its own tests: e2e)."""
    return start_daphne(env={"RANDOMCHAT_REMATCH_WINDOW": "0"})
