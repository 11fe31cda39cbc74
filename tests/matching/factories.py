"""Pool users for tests, stored the way pool_enter stores them."""

from __future__ import annotations

import json
import uuid

from matching.models import PoolUser
from chat.requests import StartRequest, parse_start
from matching.services import user_fields


def request_of(data: dict | None = None, **fields) -> StartRequest:
    data = {"languageCode": "en", **(data or {}), **fields}
    return parse_start(json.dumps(data).encode())


def pool_user(data: dict | None = None, *, status=PoolUser.Status.WAITING, **extra) -> PoolUser:
    request = request_of(data)
    return PoolUser.objects.create(
        **user_fields(request),
        channel_name=extra.pop("channel_name", f"test.{uuid.uuid4().hex}"),
        status=status,
        **extra,
    )
