"""STOMP frames, header escaping and the serializer. Pure: stdlib only, no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass

CMD_CONNECT = "CONNECT"
CMD_STOMP = "STOMP"
CMD_CONNECTED = "CONNECTED"
CMD_SEND = "SEND"
CMD_SUBSCRIBE = "SUBSCRIBE"
CMD_UNSUBSCRIBE = "UNSUBSCRIBE"
CMD_ACK = "ACK"
CMD_NACK = "NACK"
CMD_BEGIN = "BEGIN"
CMD_COMMIT = "COMMIT"
CMD_ABORT = "ABORT"
CMD_DISCONNECT = "DISCONNECT"
CMD_MESSAGE = "MESSAGE"
CMD_RECEIPT = "RECEIPT"
CMD_ERROR = "ERROR"

CLIENT_COMMANDS = frozenset(
    {
        CMD_CONNECT, CMD_STOMP, CMD_SEND, CMD_SUBSCRIBE, CMD_UNSUBSCRIBE, CMD_ACK,
        CMD_NACK, CMD_BEGIN, CMD_COMMIT, CMD_ABORT, CMD_DISCONNECT,
    }
)
SERVER_COMMANDS = frozenset({CMD_CONNECTED, CMD_MESSAGE, CMD_RECEIPT, CMD_ERROR})

# Frames whose headers are never escaped (STOMP 1.2 "Value Encoding").
UNESCAPED_COMMANDS = frozenset({CMD_CONNECT, CMD_STOMP, CMD_CONNECTED})

HDR_ACCEPT_VERSION = "accept-version"
HDR_CONTENT_LENGTH = "content-length"
HDR_CONTENT_TYPE = "content-type"
HDR_DESTINATION = "destination"
HDR_HEART_BEAT = "heart-beat"
HDR_ID = "id"
HDR_MESSAGE = "message"
HDR_MESSAGE_ID = "message-id"
HDR_RECEIPT = "receipt"
HDR_RECEIPT_ID = "receipt-id"
HDR_SERVER = "server"
HDR_SESSION = "session"
HDR_SUBSCRIPTION = "subscription"
HDR_TRANSACTION = "transaction"
HDR_VERSION = "version"

SUPPORTED_VERSIONS = ("1.0", "1.1", "1.2")


class FrameError(ValueError):
    """Raised for bytes that are not a valid STOMP frame, or that break a codec limit.

    `reason` is fixed text, safe to log; `detail` is the offending input, if any, which
    only the message (`str()`, meant for the client) quotes.
    """

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason if detail is None else f"{reason} {detail!r}")
        self.reason = reason
        self.detail = detail


class FrameTooLarge(FrameError):
    """Raised for a frame over the size limit."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One STOMP frame; headers keep their order and repeats, the first one wins."""

    command: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def get(self, name: str, default: str | None = None) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return default


# The parser builds frames on its hot path without Frame's frozen __init__, which goes
# through object.__setattr__ once per field; the slot descriptors set the same fields
# about three times faster.
_FRAME_SETTERS = (
    object.__new__,
    Frame.command.__set__,  # type: ignore[attr-defined]
    Frame.headers.__set__,  # type: ignore[attr-defined]
    Frame.body.__set__,  # type: ignore[attr-defined]
)


class _Heartbeat:
    __slots__ = ()

    def __repr__(self) -> str:
        return "HEARTBEAT"


HEARTBEAT = _Heartbeat()
"""What the parser yields for a lone EOL between frames."""

# STOMP 1.2 "Value Encoding"; 1.1 has no \r escape, 1.0 has no escapes at all.
_UNESCAPES_12 = {"\\": "\\", "n": "\n", "r": "\r", "c": ":"}
_UNESCAPES_11 = {"\\": "\\", "n": "\n", "c": ":"}

_COMMAND_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
MAX_COMMAND_LENGTH = 32
KNOWN_COMMANDS = CLIENT_COMMANDS | SERVER_COMMANDS


def valid_command(command: str) -> bool:
    """Whether `command` can stand on a frame's first line (case-sensitive, 1-32 chars)."""
    return command in KNOWN_COMMANDS or (
        len(command) <= MAX_COMMAND_LENGTH and _COMMAND_RE.fullmatch(command) is not None
    )


def escapes_headers(command: str, version: str) -> bool:
    """Whether header names and values of this frame are escaped in this version."""
    return version != "1.0" and command not in UNESCAPED_COMMANDS


def escape(value: str, version: str = "1.2") -> str:
    """Escape a header name or value; 1.0 has no escapes and 1.1 cannot carry CR."""
    if version == "1.0":
        return value
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    if "\n" in value:
        value = value.replace("\n", "\\n")
    if ":" in value:
        value = value.replace(":", "\\c")
    if "\r" in value:
        if version == "1.1":
            raise FrameError("STOMP 1.1 cannot carry a CR in a header")
        value = value.replace("\r", "\\r")
    return value


def unescape(value: str, version: str = "1.2") -> str:
    """Undo `escape`; an unknown escape or a trailing lone backslash is a FrameError."""
    if version == "1.0" or "\\" not in value:
        return value
    table = _UNESCAPES_11 if version == "1.1" else _UNESCAPES_12
    parts = value.split("\\")
    out = [parts[0]]
    # After a split on backslashes, an escaped backslash leaves an empty part.
    i = 1
    n = len(parts)
    while i < n:
        part = parts[i]
        if part:
            replacement = table.get(part[0])
            if replacement is None:
                raise FrameError("Invalid escape sequence in header", "\\" + part[0])
            out.append(replacement)
            out.append(part[1:])
            i += 1
        elif i + 1 < n:
            # "\\\\": an escaped backslash; the part after it is plain text.
            out.append("\\")
            out.append(parts[i + 1])
            i += 2
        else:
            raise FrameError("Header ends with a lone backslash")
    return "".join(out)


def _header_block(headers: list[tuple[str, str]], do_escape: bool, version: str) -> str:
    """`key:value\n` lines; escaped, or checked to need no escaping where none exists."""
    text = "".join([f"{key}:{value}\n" for key, value in headers])
    count = len(headers)
    # Fast path: nothing in any name or value needs escaping.
    if (
        text.count(":") == count
        and text.count("\n") == count
        and "\\" not in text
        and "\r" not in text
    ):
        return text
    if do_escape:
        return "".join(
            [f"{escape(key, version)}:{escape(value, version)}\n" for key, value in headers]
        )
    for key, value in headers:
        if ":" in key or "\n" in key or "\r" in key or "\n" in value or "\r" in value:
            raise FrameError(f"A header cannot be carried unescaped (STOMP {version})", key[:64])
    return text


def encode_frame(frame: Frame, version: str = "1.2") -> bytes:
    """Serialize a frame; `content-length` is always written, counted in bytes.

    Raises FrameError for what the wire cannot carry: an invalid command, or a header
    the version (or a CONNECT/STOMP/CONNECTED frame) cannot escape.
    """
    command = frame.command
    if not valid_command(command):
        raise FrameError("Invalid command", command[:MAX_COMMAND_LENGTH])
    headers = [item for item in frame.headers if item[0] != HDR_CONTENT_LENGTH]
    body = frame.body
    text = _header_block(headers, escapes_headers(command, version), version)
    try:
        head = f"{command}\n{text}{HDR_CONTENT_LENGTH}:{len(body)}\n\n".encode()
    except UnicodeEncodeError as exc:
        raise FrameError("A header is not encodable as UTF-8") from exc
    return b"".join((head, body, b"\x00"))
