"""FrameParser: bytes in, frames out. Pure unit tests: no Django, no database."""

from __future__ import annotations

import pytest

from randomchat.stomp import HEARTBEAT, Frame, FrameError, FrameParser
from randomchat.stomp.parser import (
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_HEADER_LINE,
    DEFAULT_MAX_HEADERS,
)

EOLS = pytest.mark.parametrize("eol", [b"\n", b"\r\n"], ids=["LF", "CRLF"])


def wire(head: bytes, body: bytes = b"", eol: bytes = b"\n") -> bytes:
    """A frame: `head` is written with LF line ends; each LF becomes `eol`."""
    return head.replace(b"\n", eol) + body + b"\x00"


def feed_chunks(parser: FrameParser, data: bytes, size: int) -> list:
    items = []
    for i in range(0, len(data), size):
        items += parser.feed(data[i : i + size])
    return items


def parse_all(data: bytes, **kwargs) -> list:
    return FrameParser(**kwargs).feed(data)


def raises_whole_and_dribbled(data: bytes, sizes=(1, 7, 4096), **kwargs) -> None:
    """`data` is rejected when it arrives at once and when it arrives in chunks."""
    with pytest.raises(FrameError):
        FrameParser(**kwargs).feed(data)
    for size in sizes:
        with pytest.raises(FrameError):
            feed_chunks(FrameParser(**kwargs), data, size)


SEND_HEAD = b"SEND\ndestination:/message\ncontent-type:application/json\n\n"
SEND_BODY = b'{"chatUUID":"c","senderUUID":"s","content":"\xc2\xa3 and \xe2\x82\xac"}'
SEND = Frame(
    "SEND",
    (("destination", "/message"), ("content-type", "application/json")),
    SEND_BODY,
)


# Basic


@EOLS
def test_one_frame(eol):
    assert parse_all(wire(SEND_HEAD, SEND_BODY, eol)) == [SEND]


@EOLS
def test_frame_split_at_every_byte_offset(eol):
    data = wire(SEND_HEAD, SEND_BODY, eol) + eol + wire(
        b"MESSAGE\ncontent-length:3\n\n", b"a\x00b", eol
    )
    expected = [SEND, HEARTBEAT, Frame("MESSAGE", (("content-length", "3"),), b"a\x00b")]
    for cut in range(len(data) + 1):
        parser = FrameParser()
        assert parser.feed(data[:cut]) + parser.feed(data[cut:]) == expected, cut
        assert parser.buffered == 0


@EOLS
def test_frame_fed_byte_by_byte(eol):
    data = wire(SEND_HEAD, SEND_BODY, eol)
    parser = FrameParser()
    items = []
    for i in range(len(data)):
        items += parser.feed(data[i : i + 1])
        if i < len(data) - 1:
            assert items == []
            assert parser.buffered == i + 1
    assert items == [SEND]
    assert parser.buffered == 0


@EOLS
def test_several_frames_per_chunk(eol):
    data = (
        wire(b"SUBSCRIBE\nid:0\ndestination:/user/dialog\n\n", b"", eol)
        + wire(SEND_HEAD, SEND_BODY, eol)
        + wire(b"DISCONNECT\nreceipt:77\n\n", b"", eol)
    )
    assert parse_all(data) == [
        Frame("SUBSCRIBE", (("id", "0"), ("destination", "/user/dialog"))),
        SEND,
        Frame("DISCONNECT", (("receipt", "77"),)),
    ]


@EOLS
def test_a_chunk_ends_inside_the_next_frame(eol):
    first = wire(b"ACK\nid:1\n\n", b"", eol)
    second = wire(b"NACK\nid:2\n\n", b"", eol)
    parser = FrameParser()
    assert parser.feed(first + second[:5]) == [Frame("ACK", (("id", "1"),))]
    assert parser.buffered == 5
    assert parser.feed(second[5:]) == [Frame("NACK", (("id", "2"),))]
    assert parser.buffered == 0


def test_a_utf8_character_split_between_chunks():
    data = wire("SEND\ndestination:/caf\u00e9\n\n".encode(), "\u20ac".encode())
    cut = data.index(b"\xc3") + 1
    parser = FrameParser()
    assert parser.feed(data[:cut]) == []
    assert parser.feed(data[cut:]) == [
        Frame("SEND", (("destination", "/caf\u00e9"),), b"\xe2\x82\xac")
    ]


def test_feed_accepts_bytearray_and_memoryview():
    data = wire(b"ACK\nid:1\n\n")
    assert FrameParser().feed(bytearray(data)) == [Frame("ACK", (("id", "1"),))]
    assert FrameParser().feed(memoryview(data)) == [Frame("ACK", (("id", "1"),))]


def test_empty_input_is_ignored():
    parser = FrameParser()
    assert parser.feed(b"") == []
    assert parser.feed(b"ACK\n") == []
    assert parser.feed(b"") == []
    assert parser.feed(b"\n\x00") == [Frame("ACK")]


def test_a_frame_without_headers():
    assert parse_all(b"DISCONNECT\n\n\x00") == [Frame("DISCONNECT")]
    assert parse_all(b"DISCONNECT\r\n\r\n\x00") == [Frame("DISCONNECT")]


def test_a_hand_written_frame_from_stompjs():
    # What @stomp/stompjs 7 writes for client.publish() with a string body, byte for byte.
    data = (
        b"CONNECT\naccept-version:1.2,1.1,1.0\nheart-beat:10000,10000\n\n\x00"
        b"SUBSCRIBE\nid:sub-0\ndestination:/user/dialog\n\n\x00"
        b"SEND\ndestination:/app/message\ncontent-length:64\n\n"
        b'{"chatUUID":"1","senderUUID":"2","content":"hello \\u00a3 world"}\x00'
        b"\n"
    )
    assert parse_all(data) == [
        Frame("CONNECT", (("accept-version", "1.2,1.1,1.0"), ("heart-beat", "10000,10000"))),
        Frame("SUBSCRIBE", (("id", "sub-0"), ("destination", "/user/dialog"))),
        Frame(
            "SEND",
            (("destination", "/app/message"), ("content-length", "64")),
            b'{"chatUUID":"1","senderUUID":"2","content":"hello \\u00a3 world"}',
        ),
        HEARTBEAT,
    ]


def test_commands_are_kept_as_sent():
    # Commands are case-sensitive: rejecting unknown ones is the consumer's job.
    assert parse_all(b"send\n\n\x00") == [Frame("send")]
    assert parse_all(b"X-CUSTOM_1\n\n\x00") == [Frame("X-CUSTOM_1")]


@pytest.mark.parametrize("command", [b" SEND", b"SEND ", b"SE ND", b"1SEND", b"S\xc3\xa9ND"])
def test_invalid_command(command):
    raises_whole_and_dribbled(command + b"\n\n\x00")


# Heart-beats and what lies between frames


@EOLS
def test_eol_heartbeats(eol):
    assert parse_all(eol) == [HEARTBEAT]
    assert parse_all(eol * 3) == [HEARTBEAT] * 3
    assert parse_all(eol + wire(b"ACK\nid:1\n\n", b"", eol) + eol) == [
        HEARTBEAT,
        Frame("ACK", (("id", "1"),)),
        HEARTBEAT,
    ]


def test_crlf_heartbeat_split_between_chunks():
    parser = FrameParser()
    assert parser.feed(b"\r") == []
    assert parser.buffered == 1
    assert parser.feed(b"\n") == [HEARTBEAT]
    assert parser.buffered == 0


@EOLS
def test_stray_nuls_are_skipped(eol):
    data = b"\x00\x00" + wire(b"ACK\nid:1\n\n", b"", eol) + b"\x00" + eol + b"\x00"
    assert parse_all(data) == [Frame("ACK", (("id", "1"),)), HEARTBEAT]
    parser = FrameParser()
    assert parser.feed(b"\x00") == []
    assert parser.buffered == 0


@pytest.mark.parametrize("data", [b"\rX", b"\r\r\n", b"\r\x00"])
def test_cr_between_frames_must_be_followed_by_lf(data):
    raises_whole_and_dribbled(data)


# Bodies and content-length


@EOLS
def test_content_length_body_may_hold_nul(eol):
    data = wire(b"SEND\ndestination:/b\ncontent-length:5\n\n", b"\x00a\x00\n\x00", eol)
    assert parse_all(data) == [
        Frame("SEND", (("destination", "/b"), ("content-length", "5")), b"\x00a\x00\n\x00")
    ]


@EOLS
def test_content_length_zero_is_an_empty_body(eol):
    data = wire(b"SEND\ncontent-length:0\n\n", b"", eol) + wire(b"ACK\n\n", b"", eol)
    assert parse_all(data) == [
        Frame("SEND", (("content-length", "0"),), b""),
        Frame("ACK"),
    ]


def test_content_length_with_leading_zeros():
    assert parse_all(b"SEND\ncontent-length:0003\n\nabc\x00") == [
        Frame("SEND", (("content-length", "0003"),), b"abc")
    ]


@EOLS
def test_body_without_content_length_ends_at_the_first_nul(eol):
    parser = FrameParser()
    assert parser.feed(wire(b"SEND\n\n", b"a\r\nb", eol) + b"ACK") == [
        Frame("SEND", (), b"a\r\nb")
    ]
    assert parser.buffered == 3


@EOLS
def test_missing_nul_after_content_length_bytes(eol):
    data = wire(b"SEND\ncontent-length:2\n\n", b"abc", eol)
    raises_whole_and_dribbled(data)


@pytest.mark.parametrize(
    "value",
    [b"-1", b"abc", b"", b" 5", b"5 ", b"+5", b"1e3", b"0x10", b"\xd9\xa3", b"9" * 5000],
)
def test_bad_content_length(value):
    raises_whole_and_dribbled(b"SEND\ncontent-length:" + value + b"\n\nabc\x00")


def test_bad_content_length_is_rejected_before_the_body_arrives():
    parser = FrameParser()
    with pytest.raises(FrameError):
        parser.feed(b"SEND\ncontent-length:-1\n\n")


def test_only_the_first_content_length_counts():
    assert parse_all(b"SEND\ncontent-length:1\ncontent-length:x\n\na\x00") == [
        Frame("SEND", (("content-length", "1"), ("content-length", "x")), b"a")
    ]


# Headers


@EOLS
def test_repeated_header_first_wins(eol):
    (frame,) = parse_all(wire(b"SEND\nfoo:first\nfoo:second\n\n", b"", eol))
    assert frame.headers == (("foo", "first"), ("foo", "second"))
    assert frame.get("foo") == "first"
    assert frame.get("bar") is None
    assert frame.get("bar", "x") == "x"


@EOLS
@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_colon_in_a_value(eol, version):
    (frame,) = parse_all(wire(b"SEND\ndestination:/a:b::c\n\n", b"", eol), version=version)
    assert frame.headers == (("destination", "/a:b::c"),)


@EOLS
def test_empty_header_value_and_empty_key(eol):
    (frame,) = parse_all(wire(b"SEND\nreceipt:\n:v\n\n", b"", eol))
    assert frame.headers == (("receipt", ""), ("", "v"))


@EOLS
def test_whitespace_is_kept(eol):
    (frame,) = parse_all(wire(b"SEND\n key : value \n\n", b"", eol))
    assert frame.headers == ((" key ", " value "),)


@EOLS
def test_header_without_colon(eol):
    raises_whole_and_dribbled(wire(b"SEND\ndestination\n\n", b"", eol))


@pytest.mark.parametrize(
    "data",
    [
        b"SEND\rX\n\n\x00",
        b"SEND\nk:v\rw\n\n\x00",
        b"SEND\nk:v\r\r\n\r\n\x00",
        b"SEND\r\r\n\r\n\x00",
        b"SEND\nk\r:v\n\n\x00",
    ],
)
def test_cr_not_followed_by_lf_in_a_head(data):
    raises_whole_and_dribbled(data)


def test_mixed_eols_in_one_head():
    assert parse_all(b"SEND\r\na:1\nb:2\r\n\n\x00") == [Frame("SEND", (("a", "1"), ("b", "2")))]
    assert parse_all(b"SEND\na:1\r\n\r\n\x00") == [Frame("SEND", (("a", "1"),))]


@pytest.mark.parametrize(
    "head",
    [b"SEND\nk:\xff\n\n", b"SEND\n\xc3:v\n\n", b"SEND\nk:\xed\xa0\x80\n\n", b"SE\xffND\n\n"],
)
def test_invalid_utf8_in_a_head(head):
    raises_whole_and_dribbled(head + b"\x00")


def test_utf8_headers():
    key, value = "d\u00e9st", "\u043f\u0440\u0438\u0432\u0435\u0442 \U0001f600"
    (frame,) = parse_all(f"SEND\n{key}:{value}\n\n\x00".encode())
    assert frame.headers == ((key, value),)


# Escapes


ESCAPED_HEAD = b"SEND\nk\\c\\n\\\\:v\\c\\\\n\\n\n\n"


def test_no_escapes_in_10():
    (frame,) = parse_all(wire(ESCAPED_HEAD), version="1.0")
    assert frame.headers == (("k\\c\\n\\\\", "v\\c\\\\n\\n"),)
    # Unknown escapes, \r and a trailing backslash are plain text in 1.0.
    (frame,) = parse_all(b"SEND\nk:a\\tb\\r\\\n\n\x00", version="1.0")
    assert frame.headers == (("k", "a\\tb\\r\\"),)


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_escapes_in_11_and_12(version):
    (frame,) = parse_all(wire(ESCAPED_HEAD), version=version)
    assert frame.headers == (("k:\n\\", "v:\\n\n"),)


def test_cr_escape_only_in_12():
    (frame,) = parse_all(b"SEND\nk\\r:a\\rb\n\n\x00", version="1.2")
    assert frame.headers == (("k\r", "a\rb"),)
    raises_whole_and_dribbled(b"SEND\nk:a\\rb\n\n\x00", version="1.1")


@pytest.mark.parametrize("version", ["1.1", "1.2"])
@pytest.mark.parametrize(
    "head",
    [
        b"SEND\nk:a\\tb\n\n",
        b"SEND\nk\\x:v\n\n",
        b"SEND\nk:v\\\n\n",
        b"SEND\nk\\:v\n\n",
        b"SEND\nk:\\\\\\\n\n",
    ],
)
def test_unknown_escape_or_lone_backslash(version, head):
    raises_whole_and_dribbled(head + b"\x00", version=version)


@pytest.mark.parametrize("command", [b"CONNECT", b"STOMP", b"CONNECTED"])
@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_connect_stomp_and_connected_are_never_unescaped(command, version):
    (frame,) = parse_all(command + b"\nlogin:a\\b\npasscode:x\\c\\n\\t\\\n\n\x00", version=version)
    assert frame.headers == (("login", "a\\b"), ("passcode", "x\\c\\n\\t\\"))


def test_version_can_change_between_feeds():
    parser = FrameParser(version="1.0")
    assert parser.feed(b"SEND\nk:a\\cb\n\n\x00") == [Frame("SEND", (("k", "a\\cb"),))]
    parser.version = "1.2"
    assert parser.feed(b"SEND\nk:a\\cb\n\n\x00") == [Frame("SEND", (("k", "a:b"),))]


# One message, one item at a time (frames())


def test_frames_parses_each_frame_after_the_one_before_was_taken():
    parser = FrameParser(version="1.0")
    items = parser.frames(b"SEND\nk:a\\cb\n\n\x00SEND\nk:a\\cb\n\n\x00")
    assert next(items) == Frame("SEND", (("k", "a\\cb"),))
    parser.version = "1.2"  # as a CONNECT before the second frame would negotiate
    assert list(items) == [Frame("SEND", (("k", "a:b"),))]


def test_frames_parses_nothing_after_the_caller_stops():
    parser = FrameParser()
    items = parser.frames(b"DISCONNECT\n\n\x00\rnot a frame\x00")
    assert next(items) == Frame("DISCONNECT")
    items.close()
    assert parser.buffered == 0


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x00\x00ACK\n\n\x00\x00\n\x00", [Frame("ACK"), HEARTBEAT]),  # stray NULs between frames
        (b"SEND\ncontent-length:3\n\n\x00\x00\x00\x00ACK\n\n\x00", [Frame("SEND", (("content-length", "3"),), b"\x00\x00\x00"), Frame("ACK")]),
    ],
    ids=["stray-nuls", "nuls-in-a-counted-body"],
)
def test_frames_of_one_message(data, expected):
    assert list(FrameParser().frames(data)) == expected


def test_frames_tells_since_when_a_frame_is_partial():
    parser = FrameParser()
    assert list(parser.frames(b"ACK\n", now=5.0)) == [] and parser.partial_since == 5.0
    assert list(parser.frames(b"id:1\n", now=6.0)) == [] and parser.partial_since == 5.0
    assert list(parser.frames(b"\n\x00ACK", now=7.0)) == [Frame("ACK", (("id", "1"),))]
    assert parser.partial_since == 7.0
    assert list(parser.frames(b"\n\n\x00", now=8.0)) == [Frame("ACK")] and parser.partial_since is None


# Limits


def test_default_limits():
    parser = FrameParser()
    assert parser.max_frame_size == DEFAULT_MAX_FRAME_SIZE == 64 * 1024
    assert parser.max_headers == DEFAULT_MAX_HEADERS == 100
    assert parser.max_header_line == DEFAULT_MAX_HEADER_LINE == 8 * 1024


def sized_frame(size: int, *, content_length: bool) -> bytes:
    """A SEND frame of exactly `size` bytes, command to NUL."""
    if content_length:
        fill = size - len(b"SEND\ncontent-length:00000\n\n") - 1
        return b"SEND\ncontent-length:%05d\n\n" % fill + b"b" * fill + b"\x00"
    fill = size - len(b"SEND\n\n") - 1
    return b"SEND\n\n" + b"b" * fill + b"\x00"


@pytest.mark.parametrize("content_length", [True, False], ids=["content-length", "NUL"])
def test_frame_size_limit(content_length):
    at_limit = sized_frame(DEFAULT_MAX_FRAME_SIZE, content_length=content_length)
    assert len(at_limit) == DEFAULT_MAX_FRAME_SIZE
    assert len(parse_all(at_limit)) == 1
    assert len(feed_chunks(FrameParser(), at_limit, 1)) == 1
    over = sized_frame(DEFAULT_MAX_FRAME_SIZE + 1, content_length=content_length)
    raises_whole_and_dribbled(over)


def test_frame_size_limit_is_configurable():
    parser = FrameParser(max_frame_size=16)
    assert len(b"SEND\n\n012345678\x00") == 16
    assert parser.feed(b"SEND\n\n012345678\x00") == [Frame("SEND", (), b"012345678")]
    raises_whole_and_dribbled(b"SEND\n\n0123456789\x00", max_frame_size=16)


def test_content_length_over_the_limit_is_rejected_from_the_head():
    parser = FrameParser()
    with pytest.raises(FrameError, match="size limit of 65536 bytes"):
        parser.feed(b"SEND\ncontent-length:65536\n\n")


def test_head_over_the_frame_size_limit():
    head = b"SEND\n" + b"k:" + b"v" * 30 + b"\n"
    raises_whole_and_dribbled(head * 10 + b"\n\x00", max_frame_size=200)


@pytest.mark.parametrize("chunk", [1, 1000, 10_000])
def test_a_body_that_never_ends_cannot_grow_the_buffer(chunk):
    parser = FrameParser()
    parser.feed(b"SEND\ndestination:/message\n\n")
    with pytest.raises(FrameError, match="size limit"):
        for _ in range(2 * DEFAULT_MAX_FRAME_SIZE // chunk + 2):
            parser.feed(b"x" * chunk)
            assert parser.buffered < DEFAULT_MAX_FRAME_SIZE


@pytest.mark.parametrize("chunk", [1, 1000])
def test_a_head_that_never_ends_cannot_grow_the_buffer(chunk):
    parser = FrameParser(max_headers=100_000)
    data = b"SEND\n" + b"k:v\n" * DEFAULT_MAX_FRAME_SIZE
    with pytest.raises(FrameError, match="size limit"):
        for i in range(0, len(data), chunk):
            parser.feed(data[i : i + chunk])
            assert parser.buffered < DEFAULT_MAX_FRAME_SIZE


def test_a_content_length_body_that_stalls_is_bounded():
    parser = FrameParser()
    parser.feed(b"SEND\ncontent-length:60000\n\n")
    for _ in range(59):
        parser.feed(b"x" * 1000)
    assert parser.buffered < DEFAULT_MAX_FRAME_SIZE
    assert parser.feed(b"x" * 1000 + b"\x00") == [
        Frame("SEND", (("content-length", "60000"),), b"x" * 60000)
    ]


@EOLS
def test_header_count_limit(eol):
    ok = b"SEND\n" + b"k:v\n" * DEFAULT_MAX_HEADERS + b"\n"
    assert len(parse_all(wire(ok, b"", eol))[0].headers) == DEFAULT_MAX_HEADERS
    assert len(feed_chunks(FrameParser(), wire(ok, b"", eol), 3)) == 1
    over = b"SEND\n" + b"k:v\n" * (DEFAULT_MAX_HEADERS + 1) + b"\n"
    raises_whole_and_dribbled(wire(over, b"", eol))
    # Without its blank line, the head is rejected as soon as it holds one header too many.
    raises_whole_and_dribbled(over.replace(b"\n", eol)[: -len(eol)])


@EOLS
def test_header_line_limit(eol):
    value = b"v" * (DEFAULT_MAX_HEADER_LINE - 2)
    ok = wire(b"SEND\nk:" + value + b"\n\n", b"", eol)
    assert parse_all(ok)[0].get("k") == value.decode()
    assert len(feed_chunks(FrameParser(), ok, 100)) == 1
    over = wire(b"SEND\nk:" + value + b"v\n\n", b"", eol)
    raises_whole_and_dribbled(over, sizes=(1, 100))


def test_header_line_limit_counts_utf8_bytes():
    value = "\u20ac" * 3  # 9 bytes
    assert parse_all(f"SEND\nk:{value}\n\n\x00".encode(), max_header_line=11)
    raises_whole_and_dribbled(f"SEND\nk:{value}\n\n\x00".encode(), max_header_line=10)


def test_a_header_line_that_never_ends_is_rejected_early():
    parser = FrameParser()
    parser.feed(b"SEND\nk:")
    with pytest.raises(FrameError, match="Header line longer"):
        for _ in range(DEFAULT_MAX_HEADER_LINE):
            parser.feed(b"v")
    assert parser.buffered <= DEFAULT_MAX_HEADER_LINE + 8


@EOLS
def test_command_length_limit(eol):
    assert parse_all(wire(b"C" * 32 + b"\n\n", b"", eol)) == [Frame("C" * 32)]
    assert feed_chunks(FrameParser(), wire(b"C" * 32 + b"\n\n", b"", eol), 1) == [Frame("C" * 32)]
    raises_whole_and_dribbled(wire(b"C" * 33 + b"\n\n", b"", eol))


def test_a_command_that_never_ends_is_rejected_early():
    parser = FrameParser()
    with pytest.raises(FrameError, match="Command longer"):
        for _ in range(100):
            parser.feed(b"C")
    assert parser.buffered <= 34
