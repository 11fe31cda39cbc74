"""Malformed input: exactly one ERROR frame with a `message`, then close; one log line;
no unhandled exception; and other connections never notice."""

import json
import logging

import pytest

from tests.support.inprocess import raw_frame

pytestmark = pytest.mark.django_db(transaction=True)

CASES = {
    # name: (bytes after CONNECT, binary?, fragment of the ERROR message)
    "unknown command": (b"FOO\n\n\x00", False, "command"),
    "lower-case command": (b"send\ndestination:/start\n\n\x00", False, "command"),
    "server command": (b"MESSAGE\ndestination:/user/dialog\n\n\x00", False, "command"),
    "invalid command": (b"1SEND\n\n\x00", False, "command"),
    "command too long": (b"S" * 40 + b"\n\n\x00", False, "command"),
    "header without colon": (b"SEND\ndestination\n\n\x00", False, "':'"),
    "non-numeric content-length": (b"SEND\ndestination:/start\ncontent-length:abc\n\n\x00", False, "content-length"),
    "negative content-length": (b"SEND\ndestination:/start\ncontent-length:-1\n\n\x00", False, "content-length"),
    "content-length with a space": (b"SEND\ndestination:/start\ncontent-length: 2\n\nab\x00", False, "content-length"),
    "no NUL after content-length": (b"SEND\ndestination:/start\ncontent-length:2\n\nabc\x00", False, "NUL"),
    "invalid escape": (b"SEND\ndestination:/start\nx:\\t\n\n\x00", False, "escape"),
    "trailing backslash": (b"SEND\ndestination:/start\nx:a\\\n\n\x00", False, "backslash"),
    "CR inside a header": (b"SEND\ndestination:/st\rart\n\n\x00", False, "CR"),
    "lone CR between frames": (b"\rSEND\ndestination:/start\n\n\x00", False, "CR"),
    "head not UTF-8": (b"SEND\ndestination:/\xff\n\n\x00", True, "UTF-8"),
    "too many headers": (b"SEND\n" + b"".join(b"h%d:v\n" % i for i in range(101)) + b"\n\x00", False, "headers"),
    "header line too long": (b"SEND\nx:" + b"a" * 9000 + b"\n\n\x00", False, "header line"),
    "frame over 64 KiB": (b"SEND\ndestination:/start\n\n" + b"x" * (64 * 1024) + b"\x00", False, "size limit"),
    "declared over 64 KiB": (b"SEND\ndestination:/start\ncontent-length:70000\n\n", False, "size limit"),
    "head over 64 KiB": (b"SEND\n" + b"".join(b"x%d:%s\n" % (i, b"a" * 1000) for i in range(70)), False, "size limit"),
    "SEND without destination": (b"SEND\n\n{}\x00", False, "destination"),
    "SEND to nowhere": (b"SEND\ndestination:/nowhere\n\n{}\x00", False, "destination"),
    "SUBSCRIBE without id": (b"SUBSCRIBE\ndestination:/user/dialog\n\n\x00", False, "id"),
    # The id itself goes back in the ERROR but never into the log (tests/hardening/test_log_privacy.py).
    "UNSUBSCRIBE unknown id": (b"UNSUBSCRIBE\nid:7\n\n\x00", False, "No subscription with id"),
    "second CONNECT": (b"CONNECT\naccept-version:1.2\n\n\x00", False, "connected"),
}


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.INFO)
    return caplog


def check_logs(caplog, session: str, reason: str | None):
    rejected = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert len(rejected) == 1, [r.getMessage() for r in rejected]
    assert session in rejected[0].getMessage()
    if reason:
        assert reason.lower() in rejected[0].getMessage().lower()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def check_unaffected(other):
    await other.expect_nothing(0.05)
    await other.send("SEND", [("destination", "/start"), ("receipt", "still-here")], "not json")
    assert json.loads((await other.expect("MESSAGE")).body)["eventCode"] == 11
    await other.expect_receipt("still-here")


@pytest.mark.parametrize("case", CASES)
async def test_malformed_frame_gets_one_error_then_close(stomp, logs, case):
    data, binary, fragment = CASES[case]
    other = await stomp(connect=True)
    await other.subscribe()
    client = await stomp()
    session = (await client.connect()).get("session")
    await client.send_bytes(data, binary=binary)
    error = await client.expect_error(fragment)  # ERROR, close, then nothing
    assert error.get("content-type") == "text/plain"
    assert error.body.decode().startswith(error.get("message")[:50])
    check_logs(logs, session, fragment)
    await check_unaffected(other)
    await client.close()
    assert not [r for r in logs.records if r.levelno >= logging.ERROR], logs.text


@pytest.mark.parametrize("case", ["frame over 64 KiB", "declared over 64 KiB", "head over 64 KiB"])
async def test_the_size_limit_holds_for_frames_split_over_messages(stomp, logs, case):
    data, _, fragment = CASES[case]
    client = await stomp(connect=True)
    for i in range(0, len(data), 8 * 1024):
        await client.send_bytes(data[i:i + 8 * 1024])
        if not await client.ws.receive_nothing(timeout=0.02):
            break
    await client.expect_error(fragment)
    await client.expect_nothing()


async def test_a_frame_just_under_the_limit_is_fine(stomp):
    client = await stomp(connect=True)
    head = b"SEND\ndestination:/start\nreceipt:ok\n\n"
    await client.send_bytes(head + b"x" * (64 * 1024 - len(head) - 1) + b"\x00")
    await client.expect_receipt("ok")


@pytest.mark.parametrize(
    ("version", "data", "fragment"),
    [
        ("1.1", b"SEND\ndestination:/start\nx:\\r\n\n\x00", "escape"),  # \r is a 1.2 escape
        ("1.0", b"FOO\n\n\x00", "command"),
        ("1.1", b"SUBSCRIBE\nid:1\n\n\x00", "destination"),
    ],
)
async def test_errors_in_other_versions(stomp, logs, version, data, fragment):
    client = await stomp()
    session = (await client.connect(accept_version=version)).get("session")
    await client.send_bytes(data)
    await client.expect_error(fragment)
    check_logs(logs, session, fragment)


async def test_the_error_for_a_frame_with_receipt_carries_receipt_id(stomp, logs):
    client = await stomp(connect=True)
    await client.send_bytes(raw_frame("SEND", [("destination", "/nowhere"), ("receipt", "r-9")]))
    error = await client.expect_error("destination", receipt_id="r-9")
    assert error.get("message")


async def test_an_error_before_connect_is_logged_once(stomp, logs):
    other = await stomp(connect=True)
    await other.subscribe()
    client = await stomp()
    await client.send_bytes(b"GARBAGE\n\n\x00")
    await client.expect_error()
    rejected = [r for r in logs.records if "rejected" in r.getMessage()]
    assert len(rejected) == 1
    await check_unaffected(other)


async def test_many_bad_connections_leave_a_good_one_alone(stomp, logs):
    good = await stomp(connect=True)
    await good.subscribe()
    bad_inputs = [data for data, binary, _ in CASES.values() if not binary][:8]
    for data in bad_inputs:
        bad = await stomp(connect=True)
        await bad.send_bytes(data)
        await bad.expect_error()
        await bad.close()
    assert len([r for r in logs.records if "rejected" in r.getMessage()]) == len(bad_inputs)
    await check_unaffected(good)
    assert not [r for r in logs.records if r.levelno >= logging.ERROR], logs.text
