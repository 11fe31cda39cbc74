import json
import re
from io import StringIO

import pytest
from django.core.management import call_command

from matching.models import PoolUser

from tests.support.factories import ago, make_dialog, make_user

Status = PoolUser.Status

pytestmark = pytest.mark.django_db


def populate():
    make_user(language="en", gender="male", created_at=ago(120))
    make_user(language="en", gender="female", created_at=ago(30))
    make_user(language="ru", created_at=ago(10))
    make_user(language="en", status=Status.CLAIMED, created_at=ago(500))
    make_user(language="ru", status=Status.PAIRING, created_at=ago(400))
    # Not waiting: these count for nothing but their own lines.
    make_user(language="en", gender="male", status=Status.GONE, created_at=ago(9999))
    make_user(language="de", status=Status.CANCELLED, created_at=ago(9999))
    make_dialog()
    make_dialog(ended_at=ago(5))


def test_pool_status__text_report():
    populate()
    out = StringIO()
    call_command("pool_status", stdout=out)
    text = out.getvalue()
    assert re.search(r"^Waiting users: 3 \(longest wait 1(19|20|21)s\)$", text, re.M), text
    assert "  en: 2 (female 1, male 1)\n" in text
    assert "  ru: 1 (unspecified 1)\n" in text
    assert "  de:" not in text
    assert "  by gender: female 1, male 1, unspecified 1\n" in text
    assert "Pairing in progress: 2\n" in text
    assert "Active dialogs: 1\n" in text


def test_pool_status__json_has_the_documented_keys():
    populate()
    out = StringIO()
    call_command("pool_status", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert set(data) == {
        "waiting",
        "by_language",
        "by_gender",
        "by_language_and_gender",
        "oldest_wait_seconds",
        "pairing",
        "active_dialogs",
    }
    assert data["waiting"] == 3
    assert data["by_language"] == {"en": 2, "ru": 1}
    assert data["by_gender"] == {"female": 1, "male": 1, "unspecified": 1}
    assert data["by_language_and_gender"] == {"en": {"female": 1, "male": 1}, "ru": {"unspecified": 1}}
    assert 119 <= data["oldest_wait_seconds"] <= 125
    assert data["pairing"] == 2
    assert data["active_dialogs"] == 1


def test_pool_status__empty_pool():
    out = StringIO()
    call_command("pool_status", "--json", stdout=out)
    assert json.loads(out.getvalue()) == {
        "waiting": 0,
        "by_language": {},
        "by_gender": {},
        "by_language_and_gender": {},
        "oldest_wait_seconds": None,
        "pairing": 0,
        "active_dialogs": 0,
    }
    out = StringIO()
    call_command("pool_status", stdout=out)
    assert out.getvalue() == "Waiting users: 0\nPairing in progress: 0\nActive dialogs: 0\n"
