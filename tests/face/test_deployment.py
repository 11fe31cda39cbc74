"""docs/DEPLOYMENT.md documents every environment variable the settings read, and only those."""

import re

from django.conf import settings

from randomchat import env
from tests.support.live import REPO

DOC_PATH = REPO / "docs" / "DEPLOYMENT.md"


def documented() -> set[str]:
    """The variables named in the first column of the doc's "Environment variables" table."""
    section = DOC_PATH.read_text(encoding="utf-8").split("\n## Environment variables\n")[1].split("\n## ")[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", row)}


def read_by_settings() -> set[str]:
    assert settings.configured and settings.SECRET_KEY  # settings.py has run: its reads are recorded
    return set(env.VARIABLES)


def test_every_variable_the_settings_read_is_documented():
    undocumented = read_by_settings() - documented()
    assert not undocumented, f"read by settings.py, missing from {DOC_PATH.name}: {sorted(undocumented)}"


def test_every_documented_variable_is_read_by_the_settings():
    unread = documented() - read_by_settings()
    assert not unread, f"in {DOC_PATH.name}, never read by settings.py: {sorted(unread)}"


def test_the_table_is_found():
    """The checks above can fail: the table parses to the variables everyone knows."""
    assert {"DATABASE_URL", "REDIS_URL", "RANDOMCHAT_CONNECT_TIMEOUT", "RANDOMCHAT_RATE_START_PER_S"} <= documented()
