"""Refusal: an action the chat declines, reported to the requester as an x1 event."""

from django.db import InterfaceError, OperationalError

DATABASE_UNAVAILABLE = (OperationalError, InterfaceError)


class Refusal(Exception):
    """Carries the error object of events 11/21/31: a slug, a human detail, maybe a field."""

    def __init__(self, slug: str, detail: str, field: str | None = None, *, after_seq: int | None = None) -> None:
        super().__init__(detail)
        self.slug = slug
        self.detail = detail
        self.field = field
        self.after_seq = after_seq  # `dialog_ended`: the seq of the 30 it must not overtake

    def as_error(self) -> dict:
        error = {"error": self.slug, "detail": self.detail}
        if self.field is not None:
            error["field"] = self.field
        return error


def unavailable() -> Refusal:
    """What an action gets while the database is down: the connection stays open."""
    return Refusal("unavailable", "The service is briefly unavailable; try again shortly")


def resume_failed(detail: str = "Unknown or used resume token, or its dialog has ended") -> Refusal:
    """/resume cannot take the participant over (PROTOCOL.md §7.1)."""
    return Refusal("resume_failed", detail, "resumeToken")
