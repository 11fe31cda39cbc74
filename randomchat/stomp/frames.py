"""STOMP frames, header escaping and the serializer. Pure: stdlib only, no I/O."""

from __future__ import annotations

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
    """Raised for bytes that are not a valid STOMP frame, or that break a codec limit."""


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


class _Heartbeat:
    __slots__ = ()

    def __repr__(self) -> str:
        return "HEARTBEAT"


HEARTBEAT = _Heartbeat()
"""What the parser yields for a lone EOL between frames."""

_ESCAPES_12 = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", ":": "\\c"}
_ESCAPES_11 = {"\\": "\\\\", "\n": "\\n", ":": "\\c"}
_UNESCAPES_12 = {"\\": "\\", "n": "\n", "r": "\r", "c": ":"}
_UNESCAPES_11 = {"\\": "\\", "n": "\n", "c": ":"}
_ESCAPE_TABLES_12 = str.maketrans(_ESCAPES_12)
_ESCAPE_TABLES_11 = str.maketrans(_ESCAPES_11)


def escapes_headers(command: str, version: str) -> bool:
    """Whether header names and values of this frame are escaped in this version."""
    return version != "1.0" and command not in UNESCAPED_COMMANDS


def escape(value: str, version: str = "1.2") -> str:
    return value.translate(_ESCAPE_TABLES_11 if version == "1.1" else _ESCAPE_TABLES_12)


def unescape(value: str, version: str = "1.2") -> str:
    if "\\" not in value:
        return value
    table = _UNESCAPES_11 if version == "1.1" else _UNESCAPES_12
    out = []
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if ch == "\\":
            if i + 1 >= n:
                raise FrameError("Header ends with a lone backslash")
            replacement = table.get(value[i + 1])
            if replacement is None:
                raise FrameError(f"Invalid escape sequence \\{value[i + 1]!s} in header")
            out.append(replacement)
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def encode_frame(frame: Frame, version: str = "1.2") -> bytes:
    """Serialize a frame; `content-length` is always written, counted in bytes."""
    do_escape = escapes_headers(frame.command, version)
    lines = [frame.command]
    for key, value in frame.headers:
        if key == HDR_CONTENT_LENGTH:
            continue
        if do_escape:
            key = escape(key, version)
            value = escape(value, version)
        lines.append(f"{key}:{value}")
    lines.append(f"{HDR_CONTENT_LENGTH}:{len(frame.body)}")
    lines.append("\n")
    return "\n".join(lines).encode() + frame.body + b"\x00"
