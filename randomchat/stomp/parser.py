"""Streaming STOMP parser: bytes in arbitrary chunks, frames out. Pure: no I/O."""

from __future__ import annotations

import re

from .frames import (
    HDR_CONTENT_LENGTH,
    HEARTBEAT,
    Frame,
    FrameError,
    _Heartbeat,
    escapes_headers,
    unescape,
)

_BLANK_LINE = re.compile(rb"\n\r?\n")
_COMMAND = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")

DEFAULT_MAX_FRAME_SIZE = 64 * 1024
DEFAULT_MAX_HEADERS = 100
DEFAULT_MAX_HEADER_LINE = 8 * 1024
MAX_COMMAND_LENGTH = 32


class FrameParser:
    """Collects bytes and returns every complete frame; partial input stays buffered.

    `version` is the negotiated STOMP version: it decides how headers are unescaped.
    Limits bound the memory one connection can make the server hold.
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
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held for a frame that is not complete yet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame | _Heartbeat]:
        """Add bytes; return the frames (and HEARTBEAT for lone EOLs) they complete."""
        buffer = self._buffer
        buffer += data
        items: list[Frame | _Heartbeat] = []
        pos = 0
        size = len(buffer)
        try:
            while pos < size:
                byte = buffer[pos]
                if byte == 0x0A:  # LF: heart-beat
                    items.append(HEARTBEAT)
                    pos += 1
                    continue
                if byte == 0x0D:  # CRLF: heart-beat; a lone CR is an error
                    if pos + 1 >= size:
                        break
                    if buffer[pos + 1] != 0x0A:
                        raise FrameError("CR not followed by LF")
                    items.append(HEARTBEAT)
                    pos += 2
                    continue
                if byte == 0x00:  # stray NUL between frames
                    pos += 1
                    continue
                frame, end = self._parse_frame(buffer, pos, size)
                if frame is None:
                    break
                items.append(frame)
                pos = end
        finally:
            del buffer[:pos]
        return items

    def _parse_frame(self, buffer: bytearray, start: int, size: int) -> tuple[Frame | None, int]:
        match = _BLANK_LINE.search(buffer, start)
        if match is None:
            self._check_incomplete_head(buffer, start, size)
            return None, start
        head_end = match.start()
        body_start = match.end()
        if body_start - start > self.max_frame_size:
            raise self._too_large()
        command, headers = self._parse_head(bytes(buffer[start:head_end]))
        length_text = _first(headers, HDR_CONTENT_LENGTH)
        if length_text is not None:
            if not length_text.isdigit() or not length_text.isascii():
                raise FrameError(f"Invalid content-length {length_text!r}")
            length = int(length_text)
            if body_start - start + length + 1 > self.max_frame_size:
                raise self._too_large()
            nul = body_start + length
            if nul >= size:
                return None, start
            if buffer[nul] != 0:
                raise FrameError("Frame body is not terminated by NUL after content-length bytes")
        else:
            nul = buffer.find(b"\x00", body_start)
            if nul < 0:
                if size - start > self.max_frame_size:
                    raise self._too_large()
                return None, start
            if nul + 1 - start > self.max_frame_size:
                raise self._too_large()
        return Frame(command, headers, bytes(buffer[body_start:nul])), nul + 1

    def _check_incomplete_head(self, buffer: bytearray, start: int, size: int) -> None:
        if size - start > self.max_frame_size:
            raise self._too_large()
        last_eol = buffer.rfind(b"\n", start)
        line_start = start if last_eol < 0 else last_eol + 1
        if size - line_start > self.max_header_line:
            raise FrameError(f"Header line longer than {self.max_header_line} bytes")
        if buffer.count(b"\n", start) > self.max_headers + 1:
            raise FrameError(f"More than {self.max_headers} headers")

    def _parse_head(self, head: bytes) -> tuple[str, tuple[tuple[str, str], ...]]:
        lines = head.split(b"\n")
        if len(lines) - 1 > self.max_headers:
            raise FrameError(f"More than {self.max_headers} headers")
        try:
            text_lines = [_strip_cr(line, self.max_header_line).decode() for line in lines]
        except UnicodeDecodeError as exc:
            raise FrameError("Frame head is not valid UTF-8") from exc
        command = text_lines[0]
        if len(command) > MAX_COMMAND_LENGTH or not _COMMAND.fullmatch(command):
            raise FrameError(f"Invalid command {command[:MAX_COMMAND_LENGTH]!r}")
        do_unescape = escapes_headers(command, self.version)
        headers = []
        for line in text_lines[1:]:
            key, sep, value = line.partition(":")
            if not sep:
                raise FrameError(f"Header line without ':' {line[:64]!r}")
            if do_unescape:
                key = unescape(key, self.version)
                value = unescape(value, self.version)
            headers.append((key, value))
        return command, tuple(headers)

    def _too_large(self) -> FrameError:
        return FrameError(
            f"The frame exceeds the size limit of {self.max_frame_size} bytes"
        )


def _strip_cr(line: bytes, limit: int) -> bytes:
    if len(line) > limit:
        raise FrameError(f"Header line longer than {limit} bytes")
    if line.endswith(b"\r"):
        line = line[:-1]
    if b"\r" in line:
        raise FrameError("CR not followed by LF")
    return line


def _first(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value
    return None
