"""SEND dispatch (with /app aliases) and BEGIN/COMMIT/ABORT transactions."""

import json

import pytest
from channels.db import database_sync_to_async
from django.test import override_settings

from matching.models import PoolUser

pytestmark = pytest.mark.django_db(transaction=True)

START = json.dumps({"name": "Tx", "languageCode": "de"})


async def pool_size():
    return await database_sync_to_async(PoolUser.objects.count)()


@pytest.mark.parametrize(
    ("destination", "body", "code"),
    [
        ("/start", "nope", 11),
        ("/app/start", "nope", 11),
        ("/message", "nope", 21),
        ("/app/message", "{}", 21),
        ("/stop", "nope", 31),
        ("/app/stop", "{}", 31),
    ],
)
async def test_send_is_dispatched_by_destination(stomp, destination, body, code):
    client = await stomp(connect=True)
    await client.subscribe()
    await client.send("SEND", [("destination", destination), ("receipt", "r")], body)
    message = await client.expect("MESSAGE")
    assert json.loads(message.body)["eventCode"] == code
    await client.expect_receipt("r")


@pytest.mark.parametrize("destination", ["/start", "/app/start"])
async def test_start_stores_the_user(stomp, destination):
    client = await stomp(connect=True)
    await client.send("SEND", [("destination", destination), ("receipt", "r")], START)
    await client.expect_receipt("r")
    assert await pool_size() == 1


@pytest.mark.parametrize("destination", ["/nowhere", "/app", "/app/", "/app/nowhere", "/user/dialog", "start", "/START"])
async def test_send_to_an_unknown_destination_is_an_error(stomp, destination):
    client = await stomp(connect=True)
    await client.send("SEND", [("destination", destination), ("receipt", "r")], START)
    await client.expect_error("destination", receipt_id="r")
    assert await pool_size() == 0


async def test_send_without_destination_is_an_error(stomp):
    client = await stomp(connect=True)
    await client.send("SEND", [("receipt", "r")], START)
    await client.expect_error("destination", receipt_id="r")


# Transactions


async def test_sends_in_a_transaction_take_effect_at_commit(stomp):
    client = await stomp(connect=True)
    await client.subscribe()
    await client.send("BEGIN", [("transaction", "tx")])
    await client.send("SEND", [("destination", "/start"), ("transaction", "tx"), ("receipt", "queued")], START)
    await client.send("SEND", [("destination", "/app/message"), ("transaction", "tx")], "[]")
    await client.expect_receipt("queued")
    await client.expect_nothing()
    assert await pool_size() == 0
    await client.send("COMMIT", [("transaction", "tx"), ("receipt", "done")])
    refused = await client.expect("MESSAGE")
    assert json.loads(refused.body)["eventCode"] == 21
    await client.expect_receipt("done")
    assert await pool_size() == 1


async def test_a_refusal_in_a_transaction_is_produced_only_at_commit(stomp):
    client = await stomp(connect=True)
    await client.subscribe()
    await client.send("BEGIN", [("transaction", "tx")])
    await client.send("SEND", [("destination", "/start"), ("transaction", "tx")], "not json")
    await client.expect_nothing()
    await client.send("COMMIT", [("transaction", "tx")])
    assert json.loads((await client.expect("MESSAGE")).body)["eventCode"] == 11


async def test_abort_discards_the_sends(stomp):
    client = await stomp(connect=True)
    await client.subscribe()
    await client.send("BEGIN", [("transaction", "tx")])
    await client.send("SEND", [("destination", "/start"), ("transaction", "tx")], START)
    await client.send("SEND", [("destination", "/start"), ("transaction", "tx")], "not json")
    await client.send("ABORT", [("transaction", "tx"), ("receipt", "aborted")])
    await client.expect_receipt("aborted")
    await client.expect_nothing()
    assert await pool_size() == 0
    # The name is free again, and sends outside a transaction are immediate.
    await client.send("BEGIN", [("transaction", "tx"), ("receipt", "again")])
    await client.expect_receipt("again")
    await client.send("SEND", [("destination", "/start"), ("receipt", "now")], START)
    await client.expect_receipt("now")
    assert await pool_size() == 1


async def test_transactions_are_independent(stomp):
    client = await stomp(connect=True)
    await client.subscribe()
    await client.send("BEGIN", [("transaction", "a")])
    await client.send("BEGIN", [("transaction", "b")])
    await client.send("SEND", [("destination", "/start"), ("transaction", "a")], START)
    await client.send("SEND", [("destination", "/start"), ("transaction", "b")], "not json")
    await client.send("ABORT", [("transaction", "a")])
    await client.send("COMMIT", [("transaction", "b"), ("receipt", "b")])
    assert json.loads((await client.expect("MESSAGE")).body)["eventCode"] == 11
    await client.expect_receipt("b")
    assert await pool_size() == 0


async def test_disconnect_aborts_open_transactions(stomp):
    client = await stomp(connect=True)
    await client.send("BEGIN", [("transaction", "tx")])
    await client.send("SEND", [("destination", "/start"), ("transaction", "tx")], START)
    await client.send("DISCONNECT", [("receipt", "bye")])
    await client.expect_receipt("bye")
    await client.expect_closed()
    await client.close()
    assert await pool_size() == 0


@pytest.mark.parametrize(
    "frame",
    [
        ("COMMIT", [("transaction", "nope")]),
        ("ABORT", [("transaction", "nope")]),
        ("SEND", [("destination", "/start"), ("transaction", "nope")]),
    ],
)
async def test_an_unknown_transaction_is_an_error(stomp, frame):
    client = await stomp(connect=True)
    command, headers = frame
    await client.send(command, headers + [("receipt", "r")], START)
    await client.expect_error("nope", receipt_id="r")
    assert await pool_size() == 0


@pytest.mark.parametrize("command", ["BEGIN", "COMMIT", "ABORT"])
async def test_a_transaction_header_is_required(stomp, command):
    client = await stomp(connect=True)
    await client.send(command)
    await client.expect_error("transaction")


async def test_a_committed_transaction_is_closed(stomp):
    client = await stomp(connect=True)
    await client.send("BEGIN", [("transaction", "tx")])
    await client.send("COMMIT", [("transaction", "tx")])
    await client.send("COMMIT", [("transaction", "tx")])
    await client.expect_error("tx")


async def test_a_duplicate_begin_is_an_error(stomp):
    client = await stomp(connect=True)
    await client.send("BEGIN", [("transaction", "tx")])
    await client.send("BEGIN", [("transaction", "tx"), ("receipt", "r")])
    await client.expect_error("tx", receipt_id="r")


async def test_the_open_transaction_limit(stomp):
    with override_settings(RANDOMCHAT_MAX_TRANSACTIONS=2):
        client = await stomp(connect=True)
        await client.send("BEGIN", [("transaction", "1")])
        await client.send("BEGIN", [("transaction", "2"), ("receipt", "2")])
        await client.expect_receipt("2")
        await client.send("BEGIN", [("transaction", "3")])
        await client.expect_error("transactions")


async def test_the_frames_per_transaction_limit(stomp):
    with override_settings(RANDOMCHAT_MAX_TRANSACTION_FRAMES=2):
        client = await stomp(connect=True)
        await client.send("BEGIN", [("transaction", "tx")])
        for i in range(2):
            await client.send("SEND", [("destination", "/start"), ("transaction", "tx"), ("receipt", str(i))], START)
            await client.expect_receipt(str(i))
        await client.send("SEND", [("destination", "/start"), ("transaction", "tx")], START)
        await client.expect_error("frames")
    assert await pool_size() == 0


async def test_a_repeated_header_the_first_wins(stomp):
    client = await stomp(connect=True)
    await client.send_bytes(
        b"SUBSCRIBE\nid:first\nid:second\ndestination:/user/dialog\ndestination:/nowhere\n\n\x00"
        b"SEND\ndestination:/start\ndestination:/nowhere\nreceipt:r\nreceipt:x\n\nnot json\x00"
    )
    assert (await client.expect("MESSAGE")).get("subscription") == "first"
    await client.expect_receipt("r")
    await client.expect_nothing()


@pytest.mark.parametrize("binary", [False, True])
async def test_content_length_zero_is_an_empty_body_and_a_counted_body_may_hold_nul(stomp, binary):
    client = await stomp(connect=True)
    await client.subscribe()
    await client.send_bytes(b"SEND\ndestination:/start\ncontent-length:0\nreceipt:1\n\n\x00", binary=binary)
    assert json.loads((await client.expect("MESSAGE")).body)["serviceContent"]["error"] == "invalid_json"
    await client.expect_receipt("1")
    body = json.dumps({"name": "N", "languageCode": "en"}).encode() + b"\x00"
    await client.send_bytes(
        b"SEND\ndestination:/start\nreceipt:2\ncontent-length:%d\n\n%s\x00" % (len(body), body), binary=binary
    )
    assert json.loads((await client.expect("MESSAGE")).body)["serviceContent"]["error"] == "invalid_json"
    await client.expect_receipt("2")
