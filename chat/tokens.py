"""Resume tokens (PROTOCOL.md §7.1). Pure.

A token is a selector, which finds its user, and a verifier, which the server keeps only as
its SHA-256 and compares in constant time: a database read leaks no usable token, and the
time of a comparison says nothing about how much of a guess was right.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

SELECTOR_BYTES = 12  # 96 bits: unique among the pool's rows
VERIFIER_BYTES = 32  # 256 bits of secret, well above the protocol's 128
SEPARATOR = "."
MAX_TOKEN_LENGTH = 100  # longer text is no token of ours, whatever it holds


def _hash(verifier: str) -> str:
    return hashlib.sha256(verifier.encode()).hexdigest()


@dataclass(frozen=True)
class ResumeToken:
    selector: str
    verifier: str = field(repr=False)  # never in a log line, not even by accident

    @classmethod
    def new(cls) -> ResumeToken:
        return cls(secrets.token_urlsafe(SELECTOR_BYTES), secrets.token_urlsafe(VERIFIER_BYTES))

    @classmethod
    def parse(cls, text: object) -> ResumeToken | None:
        """The token a client sent, or None when it cannot be one of ours."""
        if not isinstance(text, str) or len(text) > MAX_TOKEN_LENGTH:
            return None
        selector, separator, verifier = text.partition(SEPARATOR)
        if not separator or not selector or not verifier:
            return None
        return cls(selector, verifier)

    @property
    def secret(self) -> str:
        """The text the client keeps: sent once, in a 10, to its owner."""
        return f"{self.selector}{SEPARATOR}{self.verifier}"

    @property
    def verifier_hash(self) -> str:
        return _hash(self.verifier)

    def matches(self, verifier_hash: str | None) -> bool:
        return verifier_hash is not None and hmac.compare_digest(self.verifier_hash, verifier_hash)
