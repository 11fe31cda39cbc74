"""Streaming STOMP parser: bytes in arbitrary chunks, frames out. Pure: no I/O."""

from __future__ import annotations

import re
from collections.abc import Iterator

from .frames import (
    HDR_CONTENT_LENGTH,
    HEARTBEAT,
    KNOWN_COMMANDS,
    MAX_COMMAND_LENGTH,
    UNESCAPED_COMMANDS,
    Frame,
    FrameError,
    FrameTooLarge,
    _FRAME_SETTERS,
    _Heartbeat,
    unescape,
    valid_command,
)

# The blank line that ends a frame's head: LF LF, or LF CR LF after a CRLF line.
# One regex search finds the first of both, in linear time.
_BLANK_LINE = re.compile(rb"\n\r?\n")
_NOT_NUL = re.compile(rb"[^\x00]")

DEFAULT_MAX_FRAME_SIZE = 64 * 1024
DEFAULT_MAX_HEADERS = 100
DEFAULT_MAX_HEADER_LINE = 8 * 1024

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_MAX_HEADERS",
    "DEFAULT_MAX_HEADER_LINE",
    "MAX_COMMAND_LENGTH",
    "FrameParser",
]


class FrameParser:
    """Collects bytes and returns every complete frame; partial input stays buffered.

    `version` is the negotiated STOMP version: it decides how headers are unescaped.
    Limits bound the memory one connection can make the server hold: a frame (command
    to NUL) is at most `max_frame_size` bytes, with at most `max_headers` header lines of
    at most `max_header_line` bytes each (EOL excluded) and a command of at most 32.
    After a FrameError the parser's state is undefined: drop the connection.
    """

    def __init__(
        self,
        *,
        version: str = "1.2",
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_headers: int = DEFAULT_MAX_HEADERS,
        max_header_line: int = DEFAULT_MAX_HEADER_LINE,
    ) -> None:
        self.version = version
        self.max_frame_size = max_frame_size
        self.max_headers = max_headers
        self.max_header_line = max_header_line
        self.partial_since: float | None = None  # see frames()
        self._reset()

    @property
    def buffered(self) -> int:
        """Bytes held for a frame that is not complete yet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame | _Heartbeat]:
        """Add bytes; return the frames (and HEARTBEAT for lone EOLs) they complete."""
        if self._buffer:
            self._buffer += data
            # Bytes that only extend a partial frame are scanned once, here, and never
            # copied again until the frame is complete.
            if not self._ready():
                return []
            data = bytes(self._buffer)
            self._reset()
        elif not data:
            return []
        elif type(data) is not bytes:
            data = bytes(data)
        items: list[Frame | _Heartbeat] = []
        pos = self._parse(data, items)
        if pos < len(data):
            self._buffer += memoryview(data)[pos:]
            # Checks the limits on what is buffered; the rest cannot be a whole item.
            self._ready()
        return items

    def frames(self, data: bytes, now: float = 0.0) -> Iterator[Frame | _Heartbeat]:
        """Yield the items of one message one at a time, each parsed only once the ones
        before it were taken.

        So a frame sees the version that a CONNECT before it negotiated, and nothing after
        the item where the caller stops (a DISCONNECT, an ERROR) is parsed at all. Once the
        message is taken, `partial_since` is the `now` of the message in which the frame
        still being received began, or None.
        """
        pos, size = 0, len(data)
        while pos < size:
            # A NUL ends every frame, so a piece that ends at the next NUL completes at most one.
            if not self._buffer:
                start = _NOT_NUL.search(data, pos)  # stray NULs between frames
                if start is None:
                    break
                pos = start.start()
            nul = data.find(b"\x00", pos)
            end = size if nul < 0 else nul + 1
            items = self.feed(data[pos:end])
            if end < size and self._buffer and not any(i is not HEARTBEAT for i in items):
                # That NUL lay inside a body counted by content-length: a binary body
                # may hold many, so take the rest of the message in one go.
                items += self.feed(data[end:])
                end = size
            if items:  # the frame that was being received is complete
                self.partial_since = None
            pos = end
            yield from items
        if not self._buffer:
            self.partial_since = None
        elif self.partial_since is None:
            self.partial_since = now

    # Whole items, from bytes that arrived together.

    def _parse(self, data: bytes, items: list) -> int:
        """Append every complete item of `data` to `items`; return where the rest starts."""
        n = len(data)
        pos = 0
        max_size = self.max_frame_size
        search = _BLANK_LINE.search
        parse_head = self._parse_head
        append = items.append
        new_frame, set_command, set_headers, set_body = _FRAME_SETTERS
        while pos < n:
            byte = data[pos]
            if byte == 0x0A:  # LF: heart-beat
                append(HEARTBEAT)
                pos += 1
                continue
            if byte == 0x0D:  # CRLF: heart-beat; a lone CR is an error
                if pos + 1 >= n:
                    break
                if data[pos + 1] != 0x0A:
                    raise FrameError("CR not followed by LF")
                append(HEARTBEAT)
                pos += 2
                continue
            if byte == 0x00:  # a stray NUL between frames
                pos += 1
                continue
            limit = pos + max_size
            blank = search(data, pos, limit)
            if blank is None:
                if n >= limit:
                    raise self._too_large()
                break
            head_end, body_start = blank.span()
            command, headers, length = parse_head(data, pos, head_end)
            if length is None:
                nul = data.find(b"\x00", body_start, limit)
                if nul < 0:
                    if n >= limit:
                        raise self._too_large()
                    break
            else:
                nul = body_start + length
                if nul >= limit:
                    raise self._too_large()
                if nul >= n:
                    break
                if data[nul] != 0:
                    raise FrameError(
                        "Frame body is not terminated by NUL after content-length bytes"
                    )
            # Frame(...) without its frozen __init__: see frames._FRAME_SETTERS.
            frame = new_frame(Frame)
            set_command(frame, command)
            set_headers(frame, headers)
            set_body(frame, data[body_start:nul])
            append(frame)
            pos = nul + 1
        return pos

    def _parse_head(
        self, data: bytes | bytearray, start: int, end: int
    ) -> tuple[str, tuple[tuple[str, str], ...], int | None]:
        """Command, headers and content-length (None if absent) of `data[start:end]`."""
        try:
            text = data[start:end].decode()
        except UnicodeDecodeError as exc:
            raise FrameError("Frame head is not valid UTF-8") from exc
        if "\r" in text:
            if text[-1] == "\r":
                text = text[:-1]
            text = text.replace("\r\n", "\n")
            if "\r" in text:
                raise FrameError("CR not followed by LF")
        lines = text.split("\n")
        if len(lines) - 1 > self.max_headers:
            raise FrameError(f"More than {self.max_headers} headers")
        if end - start > self.max_header_line:
            limit = self.max_header_line
            for line in lines:
                if len(line) > limit // 4 and len(line.encode()) > limit:
                    raise self._line_too_long()
        command = lines[0]
        # The set lookup first: a call to valid_command alone costs 2% of a frame's parse.
        if command not in KNOWN_COMMANDS and not valid_command(command):
            raise FrameError("Invalid command", command[:MAX_COMMAND_LENGTH])
        version = self.version
        do_unescape = version != "1.0" and command not in UNESCAPED_COMMANDS and "\\" in text
        headers = []
        append = headers.append
        for line in lines[1:]:
            key, sep, value = line.partition(":")
            if not sep:
                raise FrameError("Header line without ':'", line[:64])
            append((key, value))
        if do_unescape:
            headers = [(unescape(k, version), unescape(v, version)) for k, v in headers]
        length = None
        for key, value in headers:
            if key == HDR_CONTENT_LENGTH:
                if value.isdigit() and value.isascii() and len(value) <= 18:
                    length = int(value)
                else:
                    length = self._content_length(value)
                break
        return command, tuple(headers), length

    def _content_length(self, text: str) -> int:
        if not (text.isascii() and text.isdigit()):
            raise FrameError("Invalid content-length", text[:32])
        digits = text.lstrip("0")
        # int() refuses very long digit strings; anything this long is over any limit.
        if len(digits) > 18:
            raise self._too_large()
        return int(digits or "0")

    # A partial frame, buffered across feeds.

    def _reset(self) -> None:
        self._buffer = bytearray()
        self._scanned = 0  # buffered bytes already searched
        self._lines = 0  # complete lines of the head
        self._line_start = 0  # where the head's current line starts
        self._body_start = -1  # set once the head is complete and no content-length
        self._need = -1  # set once the head is complete with a content-length

    def _ready(self) -> bool:
        """Whether the buffer now holds a whole item; check the limits on the rest.

        Every call only searches the bytes added since the last one, so a frame that
        dribbles in byte by byte costs linear time, and the buffer never exceeds the
        frame size limit by more than one chunk.
        """
        buf = self._buffer
        size = len(buf)
        max_size = self.max_frame_size
        if self._need >= 0:
            return size >= self._need
        if self._body_start >= 0:
            if buf.find(b"\x00", self._scanned, max_size) >= 0:
                return True
            if size >= max_size:
                raise self._too_large()
            self._scanned = size
            return False
        if buf[0] == 0x0D:  # a CR between frames, waiting for its LF
            return size >= 2
        # Still in the head: a blank line may straddle the old and the new bytes.
        blank = _BLANK_LINE.search(buf, max(self._scanned - 2, 0), max_size)
        if blank is not None:
            head_end, body_start = blank.span()
            _, _, length = self._parse_head(buf, 0, head_end)
            if length is None:
                self._body_start = self._scanned = body_start
                return self._ready()
            self._need = body_start + length + 1
            if self._need > max_size:
                raise self._too_large()
            return size >= self._need
        lines = self._lines
        line_start = self._line_start
        while True:
            lf = buf.find(b"\n", max(self._scanned, line_start), size)
            if lf < 0:
                break
            self._check_line(lines, lf - line_start - (buf[lf - 1] == 0x0D))
            lines += 1
            line_start = lf + 1
            if lines - 1 > self.max_headers:
                raise FrameError(f"More than {self.max_headers} headers")
        # The line still open may end with the CR of a CRLF.
        self._check_line(lines, size - line_start - (buf[size - 1] == 0x0D))
        if size >= max_size:
            raise self._too_large()
        self._lines, self._line_start, self._scanned = lines, line_start, size
        return False

    def _check_line(self, index: int, length: int) -> None:
        if index == 0:
            if length > MAX_COMMAND_LENGTH:
                raise FrameError(f"Command longer than {MAX_COMMAND_LENGTH} bytes")
        elif length > self.max_header_line:
            raise self._line_too_long()

    def _line_too_long(self) -> FrameError:
        return FrameError(f"Header line longer than {self.max_header_line} bytes")

    def _too_large(self) -> FrameTooLarge:
        return FrameTooLarge(
            f"The frame exceeds the size limit of {self.max_frame_size} bytes"
        )

