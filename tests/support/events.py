"""The tests' own view of PROTOCOL.md §4: event codes, the event body, and /start bodies."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

PAIRED, START_REFUSED, MESSAGE, MESSAGE_REFUSED, LEFT, STOP_REFUSED = 10, 11, 20, 21, 30, 31
EVENT_KEYS = {"chatUUID", "senderUUID", "eventCode", "serviceContent", "content"}


@dataclass
class Event:
    """One MESSAGE on /user/dialog: its headers, its JSON body, and when the test saw it."""

    headers: dict
    body: dict
    at: float = field(default_factory=time.monotonic)

    @property
    def code(self) -> int:
        return self.body["eventCode"]

    @property
    def chat(self) -> str | None:
        return self.body["chatUUID"]

    @property
    def sender(self) -> str | None:
        return self.body["senderUUID"]

    @property
    def service(self):
        return self.body["serviceContent"]

    @property
    def content(self):
        return self.body["content"]

    @property
    def error(self) -> str | None:
        service = self.service
        return service.get("error") if isinstance(service, dict) else None

    def __repr__(self) -> str:
        return f"Event({json.dumps(self.body, ensure_ascii=False)[:300]})"


def event_body(code: int, *, chat=None, sender=None, service=None, content=None) -> dict:
    """The JSON body PROTOCOL.md §4 says an event has."""
    return {"chatUUID": chat, "senderUUID": sender, "eventCode": code, "serviceContent": service, "content": content}


def start_body(name: str, language: str = "en", *, gender=None, age=None, target_gender=None, target_age=None) -> dict:
    return {
        "name": name,
        "languageCode": language,
        "userAttributes": {"gender": gender, "age": age},
        "targetAttributes": {"gender": target_gender, "age": target_age},
    }
