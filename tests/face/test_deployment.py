"""docs/DEPLOYMENT.md documents every environment variable the settings read, only those, and
their numeric defaults as the settings have them."""

import re

from django.conf import settings

from randomchat import env
from tests.support.live import REPO

DOC_PATH = REPO / "docs" / "DEPLOYMENT.md"
NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def documented() -> dict[str, str]:
    """Each variable of the doc's "Environment variables" table, with its default as written.

    A row may name several variables (`A_PER_S`, `A_BURST`) and give their defaults in order."""
    section = DOC_PATH.read_text(encoding="utf-8").split("\n## Environment variables\n")[1].split("\n## ")[0]
    found = {}
    for line in section.splitlines():
        if line.startswith("| `"):
            names_cell, default_cell = line.split("|")[1:3]
            names = re.findall(r"`([A-Z][A-Z0-9_]*)`", names_cell)
            defaults = [d.strip() for d in default_cell.split(",")]
            found |= dict(zip(names, defaults if len(defaults) == len(names) else [default_cell.strip()] * len(names)))
    return found


def read_by_settings() -> dict[str, object]:
    assert settings.configured and settings.SECRET_KEY  # settings.py has run: its reads are recorded
    return env.VARIABLES


def test_every_variable_the_settings_read_is_documented():
    undocumented = read_by_settings().keys() - documented().keys()
    assert not undocumented, f"read by settings.py, missing from {DOC_PATH.name}: {sorted(undocumented)}"


def test_every_documented_variable_is_read_by_the_settings():
    unread = documented().keys() - read_by_settings().keys()
    assert not unread, f"in {DOC_PATH.name}, never read by settings.py: {sorted(unread)}"


def test_numeric_defaults_are_documented_as_the_settings_have_them():
    read = read_by_settings()
    numeric = {name: text for name, text in documented().items() if NUMBER.fullmatch(text)}
    wrong = {name: (text, read[name]) for name, text in numeric.items() if name in read and float(text) != read[name]}
    assert not wrong, f"{DOC_PATH.name} default vs settings.py default: {wrong}"


def test_the_table_is_found():
    """The checks above can fail: the table parses to variables everyone knows, defaults included."""
    found = documented()
    assert found["RANDOMCHAT_CONNECT_TIMEOUT"] == "10"
    assert (found["RANDOMCHAT_RATE_START_PER_S"], found["RANDOMCHAT_RATE_START_BURST"]) == ("1", "5")
    assert {"DATABASE_URL", "REDIS_URL"} <= found.keys()
    assert sum(1 for text in found.values() if NUMBER.fullmatch(text)) >= 30
