"""Sends the notices that services return, once their transaction has committed."""

from __future__ import annotations

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from .events import Notice


async def send_notices(layer, notices: list[Notice]) -> None:
    for notice in notices:
        if notice.channel is not None:
            await layer.send(notice.channel, notice.message)
        else:
            await layer.group_send(notice.group, notice.message)


def send_notices_sync(notices: list[Notice]) -> None:
    """For admin actions and commands, which run outside any consumer."""
    if notices:
        async_to_sync(send_notices)(get_channel_layer(), notices)
