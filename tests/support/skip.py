"""Skipping a test whose prerequisite (a service, Node, a browser, npm packages) is missing."""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def skip_or_fail(reason: str) -> None:
    """Skip with the reason; with CI=true a missing prerequisite fails the test instead."""
    __tracebackhide__ = True  # the report names the test's line, not this one
    if in_ci():
        pytest.fail(f"{reason} (CI=true: this test must not be skipped)", pytrace=False)
    pytest.skip(reason)


def npm_missing(path: str, folder: str) -> str:
    """The reason when npm's packages that a test needs are not installed."""
    return f"{path} is missing: run `npm ci` in {folder}/ (bin/test does)"
