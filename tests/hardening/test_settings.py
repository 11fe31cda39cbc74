"""Settings: check --deploy is clean in production, DEBUG off unless asked, SECRET_KEY required,
every variable read by a typed helper of randomchat.env."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from randomchat import env

REPO = Path(__file__).resolve().parents[2]
PRODUCTION = {
    "RANDOMCHAT_PRODUCTION": "1",
    "SECRET_KEY": "k" * 20 + "production-secret-for-the-deploy-check-0123456789",
    "ALLOWED_HOSTS": "chat.example.com",
}


def manage(*args, **env):
    base = {k: v for k, v in os.environ.items() if k not in ("DJANGO_DEBUG", "SECRET_KEY", "RANDOMCHAT_PRODUCTION")}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env={**base, **env}, capture_output=True, text=True, timeout=60
    )


def test_check_deploy_is_clean_in_production():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_warns_without_production_mode():
    """The check can fail: outside production mode it reports the development settings."""
    result = manage("check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    assert "SECURE_HSTS_SECONDS" in result.stdout + result.stderr


def test_secret_key_required_in_production():
    env = {k: v for k, v in PRODUCTION.items() if k != "SECRET_KEY"}
    result = manage("check", **env)
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


@pytest.mark.parametrize("value, expected", [(None, "False"), ("0", "False"), ("1", "True")])
def test_debug_only_when_asked(value, expected):
    env = {} if value is None else {"DJANGO_DEBUG": value}
    result = manage("shell", "-c", "from django.conf import settings; print(settings.DEBUG)", **env)
    assert result.stdout.strip().splitlines()[-1] == expected, result.stderr


def test_healthz_timeout_and_heartbeat_grace_come_from_the_environment():
    shown = "from django.conf import settings as s; print(s.RANDOMCHAT_HEALTHZ_TIMEOUT, s.RANDOMCHAT_HEARTBEAT_GRACE)"
    result = manage("shell", "-c", shown, RANDOMCHAT_HEALTHZ_TIMEOUT="0.5", RANDOMCHAT_HEARTBEAT_GRACE="4")
    assert result.stdout.strip().splitlines()[-1] == "0.5 4.0", result.stderr


@pytest.fixture
def variables(monkeypatch):
    """A fresh record of the variables read (randomchat.env.VARIABLES)."""
    monkeypatch.setattr(env, "VARIABLES", {})
    return env.VARIABLES


@pytest.mark.parametrize(
    "read, value, expected",
    [
        (lambda: env.env_float("X", 2), None, 2.0),
        (lambda: env.env_float("X", 2), "", 2.0),
        (lambda: env.env_float("X", 2), "0.25", 0.25),
        (lambda: env.env_int("X", 7), "", 7),
        (lambda: env.env_int("X", 7), "9", 9),
        (lambda: env.env_bool("X", True), "", False),
        (lambda: env.env_bool("X", False), " Yes ", True),
        (lambda: env.env_str("X", "d"), "", ""),
        (lambda: env.env_list("X", ["d"]), "", []),
        (lambda: env.env_list("X", ["d"]), "a, b,,", ["a", "b"]),
    ],
)
def test_env_helpers_read_typed_values(monkeypatch, variables, read, value, expected):
    if value is None:
        monkeypatch.delenv("X", raising=False)
    else:
        monkeypatch.setenv("X", value)
    result = read()
    assert (result, type(result)) == (expected, type(expected))
    assert list(variables) == ["X"]


def test_env_rate_reads_and_records_two_variables(monkeypatch, variables):
    monkeypatch.setenv("R_PER_S", "0.5")
    monkeypatch.delenv("R_BURST", raising=False)
    assert env.env_rate("R", 1, 5) == (0.5, 5.0)
    assert variables == {"R_PER_S": 1, "R_BURST": 5}
