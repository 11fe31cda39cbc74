"""Typed reads of the environment for settings.py, each recorded in `VARIABLES`.

A setting read from the environment bears its variable's name; `VARIABLES` is what
tests/face/test_deployment.py checks docs/DEPLOYMENT.md against.
"""

from __future__ import annotations

import os

# Every environment variable the settings read, with its default, in the order they were read.
VARIABLES: dict[str, object] = {}


def _read(name: str, default: object) -> str | None:
    VARIABLES[name] = default
    return os.environ.get(name)


def env_str(name: str, default: str) -> str:
    """The variable as it is, even empty; `default` when it is not set."""
    value = _read(name, default)
    return default if value is None else value


def env_bool(name: str, default: bool) -> bool:
    """On for 1, true, yes or on (any case); off for any other value, even empty."""
    value = _read(name, default)
    return default if value is None else value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    """An integer; `default` when not set or empty."""
    value = _read(name, default)
    return default if value in (None, "") else int(value)


def env_float(name: str, default: float) -> float:
    """A number, fractions allowed; `default` when not set or empty."""
    value = _read(name, default)
    return float(default if value in (None, "") else value)


def env_rate(name: str, per_second: float, burst: float) -> tuple[float, float]:
    """A token bucket's (tokens per second, burst) from NAME_PER_S and NAME_BURST."""
    return env_float(f"{name}_PER_S", per_second), env_float(f"{name}_BURST", burst)


def env_list(name: str, default: list[str]) -> list[str]:
    """Comma-separated items; empty is the empty list, not the default."""
    value = _read(name, default)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]
