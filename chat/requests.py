"""Client requests, validated: the /start, /message, /stop and /resume bodies. Every problem is a
Refusal that names its field."""

from __future__ import annotations

import json
import re
import unicodedata
import uuid
from dataclasses import dataclass

from django.conf import settings

from .refusals import Refusal, resume_failed
from .tokens import ResumeToken

GENDERS = ("male", "female", "other")
MAX_AGE = 150
MAX_NAME_LENGTH = 64
MAX_CLIENT_MESSAGE_ID = 64
MAX_LANGUAGE_LENGTH = 3  # ISO 639 codes: 2 letters (639-1) or 3 (639-2, 639-3)
DEFAULT_NAME = "Anonymous"
_LANGUAGE = re.compile(rf"[A-Za-z]{{2,{MAX_LANGUAGE_LENGTH}}}")


@dataclass(frozen=True, slots=True)
class Attributes:
    gender: str | None = None
    age: int | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """What a user wants; None everywhere accepts anyone. Ages are inclusive."""

    gender: str | None = None
    age_min: int | None = None
    age_max: int | None = None


@dataclass(frozen=True, slots=True)
class StartRequest:
    name: str
    language: str
    attributes: Attributes
    target: Target


def is_unicode(text: str) -> bool:
    """False for a string with a lone surrogate: valid JSON text ("\\ud800"), but no UTF-8.

    Such a string can be neither stored nor sent back in an event, so it is refused.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_json_object(body: bytes) -> dict:
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refusal("invalid_json", f"The body is not valid JSON: {exc}") from None
    except RecursionError:
        # Deep nesting fits in one frame; uncaught, it would end the connection's consumer.
        raise Refusal("invalid_json", "The body is nested too deeply") from None
    if not isinstance(data, dict):
        raise Refusal("invalid_json", "The body must be a JSON object")
    return data


def parse_start(body: bytes) -> StartRequest:
    """Validate a /start body; every problem names its field."""
    data = parse_json_object(body)
    return StartRequest(
        name=_name(data.get("name")),
        language=_language(data.get("languageCode")),
        attributes=_attributes(_section(data, "userAttributes")),
        target=_target(_section(data, "targetAttributes")),
    )


def parse_resume(body: bytes) -> ResumeToken:
    """A /resume body: {"resumeToken": "<the token of a 10>"}."""
    value = parse_json_object(body).get("resumeToken")
    if not isinstance(value, str):
        raise Refusal("invalid_field", "resumeToken must be a string", "resumeToken")
    token = ResumeToken.parse(value)
    if token is None:
        raise resume_failed()
    return token


def _section(data: dict, key: str) -> dict:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Refusal("invalid_field", f"{key} must be an object or null", key)
    return value


def _name(value) -> str:
    if value is None:
        return DEFAULT_NAME
    if not isinstance(value, str):
        raise Refusal("invalid_field", "name must be a string", "name")
    name = value.strip()
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise Refusal("invalid_field", f"name must be 1-{MAX_NAME_LENGTH} characters", "name")
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in name):
        raise Refusal("invalid_field", "name must not contain control characters", "name")
    if not is_unicode(name):
        raise Refusal("invalid_field", "name must be valid Unicode (no lone surrogates)", "name")
    return name


def _language(value) -> str:
    if not isinstance(value, str) or not _LANGUAGE.fullmatch(value):
        raise Refusal("invalid_field", f"languageCode must be a 2-{MAX_LANGUAGE_LENGTH} letter language code", "languageCode")
    return value.lower()


def _gender(value, field: str) -> str | None:
    if value is None or value in GENDERS:
        return value
    raise Refusal("invalid_field", f"{field} must be one of {', '.join(GENDERS)} or null", field)


def _age(value, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_AGE:
        raise Refusal("invalid_field", f"{field} must be an integer 0-{MAX_AGE} or null", field)
    return value


def _attributes(section: dict) -> Attributes:
    return Attributes(
        gender=_gender(section.get("gender"), "userAttributes.gender"),
        age=_age(section.get("age"), "userAttributes.age"),
    )


def _target(section: dict) -> Target:
    gender = _gender(section.get("gender"), "targetAttributes.gender")
    age = section.get("age")
    if isinstance(age, dict):
        age_min = _age(age.get("min"), "targetAttributes.age.min")
        age_max = _age(age.get("max"), "targetAttributes.age.max")
        if age_min is not None and age_max is not None and age_min > age_max:
            raise Refusal("invalid_field", "targetAttributes.age.min must not exceed max", "targetAttributes.age")
    else:
        age_min = age_max = _age(age, "targetAttributes.age")
    return Target(gender=gender, age_min=age_min, age_max=age_max)


@dataclass(frozen=True, slots=True)
class DialogRequest:
    """A /message or /stop body; ids are as sent (strings), for the x1 echo."""

    chat: str | None
    sender: str | None
    content: object
    client_message_id: object = None


def parse_dialog_request(body: bytes) -> DialogRequest:
    data = parse_json_object(body)
    chat, sender = data.get("chatUUID"), data.get("senderUUID")
    return DialogRequest(
        chat=chat if isinstance(chat, str) else None,
        sender=sender if isinstance(sender, str) else None,
        content=data.get("content"),
        client_message_id=data.get("clientMessageId"),
    )


def uuid_field(value: str | None, field: str) -> uuid.UUID:
    if value is None:
        raise Refusal("invalid_field", f"{field} must be a UUID string", field)
    try:
        return uuid.UUID(value)
    except ValueError:
        raise Refusal("invalid_field", f"{field} must be a UUID string", field) from None


def validate_content(content: object) -> str:
    if not isinstance(content, str):
        raise Refusal("invalid_field", "content must be a string", "content")
    if not content.strip():
        raise Refusal("empty_content", "content must not be empty", "content")
    # Either would make storing the message fail (PostgreSQL text holds no NUL; no database
    # stores a lone surrogate), and an unexpected error ends the connection's consumer.
    if "\x00" in content:
        raise Refusal("invalid_field", "content must not contain NUL characters", "content")
    if not is_unicode(content):
        raise Refusal("invalid_field", "content must be valid Unicode (no lone surrogates)", "content")
    limit = settings.RANDOMCHAT_MAX_CONTENT_LENGTH
    if len(content) > limit:
        raise Refusal("content_too_long", f"content is longer than {limit} characters", "content")
    return content


@dataclass(frozen=True, slots=True)
class MessageDraft:
    """A /message that passed every check that needs no database."""

    chat: uuid.UUID
    sender: uuid.UUID
    held_user: uuid.UUID | None
    content: str
    client_message_id: str | None = None


def message_draft(request: DialogRequest, held_user: uuid.UUID | None) -> MessageDraft:
    content = validate_content(request.content)
    return MessageDraft(
        uuid_field(request.chat, "chatUUID"),
        uuid_field(request.sender, "senderUUID"),
        held_user,
        content,
        client_message_id(request.client_message_id),
    )


def client_message_id(value: object) -> str | None:
    """The sender's own key for a message: a resend with the same key is stored once."""
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= MAX_CLIENT_MESSAGE_ID
        or not value.isprintable()
        or not is_unicode(value)
    ):
        raise Refusal(
            "invalid_field", f"clientMessageId must be 1-{MAX_CLIENT_MESSAGE_ID} printable characters or null",
            "clientMessageId",
        )
    return value
