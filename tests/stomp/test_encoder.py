"""encode_frame: frames out as exact bytes. Pure unit tests: no Django, no database."""

from __future__ import annotations

import pytest

from randomchat.stomp import Frame, FrameError, FrameParser, encode_frame
from randomchat.stomp.frames import escape, unescape


def test_layout():
    frame = Frame("MESSAGE", (("destination", "/user/dialog"), ("subscription", "0")), b"{}")
    assert encode_frame(frame) == (
        b"MESSAGE\ndestination:/user/dialog\nsubscription:0\ncontent-length:2\n\n{}\x00"
    )


def test_content_length_counts_utf8_bytes():
    # stompjs#367: "\u00a3123" arrived as "\u00a312" from a server that counted characters.
    frame = Frame("MESSAGE", (("destination", "/d"),), "\u00a3123".encode())
    assert encode_frame(frame) == b"MESSAGE\ndestination:/d\ncontent-length:5\n\n\xc2\xa3123\x00"


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_content_length_is_always_written(version):
    assert encode_frame(Frame("RECEIPT", (("receipt-id", "7"),)), version) == (
        b"RECEIPT\nreceipt-id:7\ncontent-length:0\n\n\x00"
    )
    assert encode_frame(Frame("CONNECTED", (("version", version),)), version) == (
        b"CONNECTED\nversion:" + version.encode() + b"\ncontent-length:0\n\n\x00"
    )


def test_a_given_content_length_is_replaced_by_the_true_one():
    headers = (("content-length", "99"), ("destination", "/d"), ("content-length", "1"))
    frame = Frame("SEND", headers, b"abc")
    assert encode_frame(frame) == b"SEND\ndestination:/d\ncontent-length:3\n\nabc\x00"


def test_body_with_nul_and_eols():
    frame = Frame("MESSAGE", (), b"\x00\n\r\n\x00")
    assert encode_frame(frame) == b"MESSAGE\ncontent-length:5\n\n\x00\n\r\n\x00\x00"


def test_header_order_and_repeats_are_kept():
    frame = Frame("SEND", (("b", "1"), ("a", "2"), ("b", "3")))
    assert encode_frame(frame) == b"SEND\nb:1\na:2\nb:3\ncontent-length:0\n\n\x00"


def test_utf8_headers():
    frame = Frame("MESSAGE", (("d\u00e9st", "\u20ac \U0001f600"),))
    assert encode_frame(frame) == (
        "MESSAGE\nd\u00e9st:\u20ac \U0001f600\ncontent-length:0\n\n\x00".encode()
    )


def test_escapes_in_12():
    frame = Frame("MESSAGE", (("k:\n", "a:b\\c\nd\re"),))
    assert encode_frame(frame, "1.2") == (
        b"MESSAGE\nk\\c\\n:a\\cb\\\\c\\nd\\re\ncontent-length:0\n\n\x00"
    )


def test_escapes_in_11():
    frame = Frame("MESSAGE", (("k:\n", "a:b\\c\nd"),))
    assert encode_frame(frame, "1.1") == (
        b"MESSAGE\nk\\c\\n:a\\cb\\\\c\\nd\ncontent-length:0\n\n\x00"
    )


def test_11_cannot_carry_cr():
    with pytest.raises(FrameError):
        encode_frame(Frame("MESSAGE", (("k", "a\rb"),)), "1.1")


def test_no_escapes_in_10():
    frame = Frame("MESSAGE", (("k\\n", "a:b\\c"),))
    assert encode_frame(frame, "1.0") == b"MESSAGE\nk\\n:a:b\\c\ncontent-length:0\n\n\x00"


@pytest.mark.parametrize("header", [("k", "a\nb"), ("k", "a\rb"), ("k:", "v"), ("k\n", "v")])
def test_10_refuses_what_it_cannot_carry(header):
    with pytest.raises(FrameError):
        encode_frame(Frame("MESSAGE", (header,)), "1.0")


@pytest.mark.parametrize("command", ["CONNECTED", "CONNECT", "STOMP"])
@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_connect_and_connected_are_never_escaped(command, version):
    frame = Frame(command, (("server", "randomchat/1.0 (a:b\\c)"),))
    assert encode_frame(frame, version) == (
        command.encode() + b"\nserver:randomchat/1.0 (a:b\\c)\ncontent-length:0\n\n\x00"
    )
    with pytest.raises(FrameError):
        encode_frame(Frame(command, (("message", "a\nb"),)), version)


@pytest.mark.parametrize("command", ["", "SE ND", "SEND\n", "1SEND", "C" * 33, "S\u00c9ND"])
def test_invalid_command(command):
    with pytest.raises(FrameError):
        encode_frame(Frame(command))


def test_a_lone_surrogate_is_a_frame_error():
    with pytest.raises(FrameError):
        encode_frame(Frame("MESSAGE", (("k", "\ud800"),)))


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_our_parser_reads_what_we_write(version):
    headers = (("destination", "/user/dialog"), ("x", "a:b\\c"), ("x", "second"))
    body = "\u00a3123\x00".encode()
    data = encode_frame(Frame("MESSAGE", headers, body), version)
    assert FrameParser(version=version).feed(data) == [
        Frame("MESSAGE", headers + (("content-length", "6"),), body)
    ]


@pytest.mark.parametrize(
    ("raw", "version", "escaped"),
    [
        ("a:b\\c\nd\re", "1.2", "a\\cb\\\\c\\nd\\re"),
        ("a:b\\c\nd", "1.1", "a\\cb\\\\c\\nd"),
        ("a:b\\c\nd\re", "1.0", "a:b\\c\nd\re"),
        ("\\\\n", "1.2", "\\\\\\\\n"),
        ("", "1.2", ""),
    ],
)
def test_escape_and_unescape(raw, version, escaped):
    assert escape(raw, version) == escaped
    assert unescape(escaped, version) == raw
