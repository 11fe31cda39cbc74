"""The development SECRET_KEY says it is insecure, so that `check --deploy` flags it anywhere."""

from .test_settings import PRODUCTION, manage


def test_check_deploy_flags_the_development_key():
    result = manage("check", "--deploy")
    assert "security.W009" in result.stdout + result.stderr
    key = manage("shell", "-c", "from django.conf import settings; print(settings.SECRET_KEY)")
    assert key.stdout.strip().splitlines()[-1].startswith("django-insecure-")


def test_check_deploy_flags_the_development_key_in_production_mode_too():
    result = manage("check", "--deploy", **{**PRODUCTION, "SECRET_KEY": "django-insecure-" + "x" * 60})
    assert result.returncode == 0  # warnings only
    assert "security.W009" in result.stdout + result.stderr
    assert "security.W009" not in manage("check", "--deploy", **PRODUCTION).stdout
