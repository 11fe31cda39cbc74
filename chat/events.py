"""Event bodies and the notices that carry them over the channel layer. Pure."""

from __future__ import annotations

import json
from dataclasses import dataclass

PAIRED = 10
START_REFUSED = 11
MESSAGE = 20
MESSAGE_REFUSED = 21
LEFT = 30
STOP_REFUSED = 31
REPORTED = 40
REPORT_REFUSED = 41


def event_body(code: int, *, chat=None, sender=None, service=None, content=None) -> bytes:
    """The JSON body of every event: exactly the five keys of the protocol."""
    event = {
        "chatUUID": None if chat is None else str(chat),
        "senderUUID": None if sender is None else str(sender),
        "eventCode": code,
        "serviceContent": service,
        "content": content,
    }
    return _encode(event)


def _encode(event: dict) -> bytes:
    try:
        return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:  # a lone surrogate echoed as sent: only \u escapes carry it
        return json.dumps(event, separators=(",", ":")).encode()


def with_service(message: dict, **fields) -> dict:
    """The event `message` with `fields` added to its serviceContent: what one recipient alone
    may see (its resume token), added by its own connection."""
    event = json.loads(message["body"])
    event["serviceContent"] = {**(event["serviceContent"] or {}), **fields}
    return {**message, "body": _encode(event)}


@dataclass(frozen=True)
class Notice:
    """A channel-layer message a service asks to send, once its transaction committed, to
    one connection's channel.

    Dialog events go to each participant's channel, named in the database, rather than to a
    group: channels-redis keeps group membership in Redis, and a Redis restarted empty would
    silently drop every event sent to a group until its members joined again.
    """

    channel: str
    message: dict


def chat_event(code: int, chat=None, *, sender=None, service=None, content=None, seq: int | None = None) -> dict:
    """The channel-layer message that carries one event to a consumer; `seq` is the event's
    place in its dialog (chat/order.py), for every event both participants get after the 10."""
    return {
        "type": "chat.event",
        "chat": None if chat is None else str(chat),
        "code": code,
        "seq": seq,
        "body": event_body(code, chat=chat, sender=sender, service=service, content=content),
    }
