"""docs/asyncapi.yaml: a valid AsyncAPI 3.0 document whose schemas fit what a live server sends."""

from __future__ import annotations

import copy
import json
import re
import uuid

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from tests.support.live import ARTIFACTS, REPO
from tests.support.skip import npm_missing, skip_or_fail
from tests.support.wire import WireClient

DOC_PATH = REPO / "docs" / "asyncapi.yaml"
OFFICIAL_SCHEMA = REPO / "web" / "node_modules" / "@asyncapi" / "specs" / "schemas" / "3.0.0-without-$id.json"
DOC_URI = "urn:randomchat:asyncapi"
SLUGS = {
    "invalid_json", "invalid_field", "already_waiting", "already_in_dialog", "not_in_dialog",
    "unknown_chat", "not_participant", "dialog_ended", "empty_content", "content_too_long",
    "rate_limited", "unavailable", "already_reported", "resume_failed",
}
EVENT_MESSAGES = {
    10: "paired", 11: "startRefused", 20: "chatMessage", 21: "messageRefused", 30: "left", 31: "stopRefused",
    40: "reported", 41: "reportRefused",
}


@pytest.fixture(scope="module")
def doc() -> dict:
    return yaml.safe_load(DOC_PATH.read_text(encoding="utf-8"))


def validator(doc: dict, pointer: str) -> jsonschema.Draft7Validator:
    """A validator for the schema at `pointer` (a JSON pointer into the document), refs resolved."""
    registry = Registry().with_resource(DOC_URI, Resource.from_contents(doc, default_specification=DRAFT7))
    return jsonschema.Draft7Validator({"$ref": f"{DOC_URI}#{pointer}"}, registry=registry)


def resolve(doc: dict, ref: str):
    assert ref.startswith("#/"), ref
    node = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def event_payload_pointer(doc: dict, code: int) -> str:
    """The payload schema of the /user/dialog message that carries `code`."""
    message_ref = doc["channels"]["dialog"]["messages"][EVENT_MESSAGES[code]]["$ref"]
    return resolve(doc, message_ref)["payload"]["$ref"][1:]


def errors(validator: jsonschema.Draft7Validator, instance) -> list[str]:
    return [f"{list(error.absolute_path)}: {error.message}" for error in validator.iter_errors(instance)]


# The document itself


def test_document_has_the_asyncapi_3_shape(doc):
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] and doc["info"]["version"]
    assert doc["defaultContentType"] == "application/json"
    addresses = {name: channel["address"] for name, channel in doc["channels"].items()}
    assert addresses == {
        "dialog": "/user/dialog", "start": "/start", "message": "/message", "stop": "/stop", "report": "/report",
        "resume": "/resume",
    }
    for name in ("start", "message", "stop", "report", "resume"):
        assert doc["channels"][name]["x-aliases"] == [f"/app/{name}"]
    actions = {}
    for operation in doc["operations"].values():
        channel = resolve(doc, operation["channel"]["$ref"])
        actions[channel["address"]] = operation["action"]
        for message in operation["messages"]:
            assert message["$ref"].startswith(operation["channel"]["$ref"] + "/messages/"), message
    assert actions == {
        "/user/dialog": "send", "/start": "receive", "/message": "receive", "/stop": "receive", "/report": "receive",
        "/resume": "receive",
    }
    for ref in refs(doc):
        resolve(doc, ref)  # every reference points at something
    for name, schema in doc["components"]["schemas"].items():
        jsonschema.Draft7Validator.check_schema(schema)


def test_document_is_valid_against_the_official_asyncapi_3_schema(doc):
    if not OFFICIAL_SCHEMA.is_file():
        skip_or_fail(npm_missing(str(OFFICIAL_SCHEMA.relative_to(REPO)), "web"))
    official = jsonschema.Draft7Validator(json.loads(OFFICIAL_SCHEMA.read_text(encoding="utf-8")))
    problems = errors(official, doc)
    assert not problems, problems[:5]
    broken = copy.deepcopy(doc)
    broken["operations"]["sendEvent"]["action"] = "publish"  # the AsyncAPI 2 word
    assert errors(official, broken)


def test_error_slugs_are_the_protocols_and_cover_the_code(doc):
    assert set(doc["components"]["schemas"]["ErrorSlug"]["enum"]) == SLUGS
    raised = set()
    for package in ("randomchat", "chat", "matching", "dialogs", "moderation"):
        for path in (REPO / package).rglob("*.py"):
            raised |= set(re.findall(r'Refusal\(\s*"([a-z_]+)"', path.read_text(encoding="utf-8")))
    assert raised, "no Refusal(...) found in the source"
    assert raised <= SLUGS, f"slugs the server raises but the document lacks: {raised - SLUGS}"


def test_event_envelope_oneof_has_one_branch_per_code(doc):
    event = doc["components"]["schemas"]["Event"]
    assert event["additionalProperties"] is False
    assert set(event["required"]) == {"chatUUID", "senderUUID", "eventCode", "serviceContent", "content"}
    assert event["properties"]["eventCode"]["enum"] == list(EVENT_MESSAGES)
    assert [resolve(doc, branch["$ref"]) for branch in event["oneOf"]] == [
        resolve(doc, "#" + event_payload_pointer(doc, code)) for code in EVENT_MESSAGES
    ]


def test_start_request_schema_follows_the_field_rules(doc):
    check = validator(doc, "/components/schemas/StartRequest")
    valid = [
        {"languageCode": "ru"},
        {"name": "Bob", "languageCode": "ru", "userAttributes": {"gender": "male", "age": None},
         "targetAttributes": {"gender": "female", "age": None}},
        {"name": "  Привет  ", "languageCode": "EN", "userAttributes": None, "targetAttributes": {"age": 30}},
        {"name": "x" * 64, "languageCode": "deu", "targetAttributes": {"age": {"min": 18, "max": None}}},
        {"languageCode": "en", "userAttributes": {"age": 0}, "targetAttributes": {"age": {"min": None, "max": 150}}},
    ]
    invalid = [
        {},
        {"languageCode": "e"},
        {"languageCode": "engl"},
        {"languageCode": "e1"},
        {"languageCode": "en\n"},
        {"name": "", "languageCode": "en"},
        {"name": "   ", "languageCode": "en"},
        {"name": "x" * 65, "languageCode": "en"},
        {"name": "a\u0007b", "languageCode": "en"},
        {"name": "a\u200bb", "languageCode": "en"},
        {"name": 5, "languageCode": "en"},
        {"languageCode": "en", "userAttributes": {"gender": "robot"}},
        {"languageCode": "en", "userAttributes": {"age": 151}},
        {"languageCode": "en", "userAttributes": {"age": -1}},
        {"languageCode": "en", "userAttributes": {"age": True}},
        {"languageCode": "en", "userAttributes": []},
        {"languageCode": "en", "targetAttributes": {"age": {"min": "18"}}},
        {"languageCode": "en", "targetAttributes": {"age": "any"}},
    ]
    for body in valid:
        assert not errors(check, body), body
    for body in invalid:
        assert errors(check, body), body


# Real payloads from a live server


async def capture_session(ws_url: str) -> tuple[list, list[tuple[dict, str]]]:
    """Drive a live server through every event code and most refusals.

    Returns the events every client received, and each /start body sent with the outcome
    (`ok` or the refusal's slug).
    """
    starts: list[tuple[dict, str]] = []
    clients: list[WireClient] = []

    async def client(**headers) -> WireClient:
        connection = await WireClient(ws_url).open(headers=headers)
        clients.append(connection)
        return connection

    alice_start = {"name": "Alice", "languageCode": "en",
                   "userAttributes": {"gender": "female", "age": 30},
                   "targetAttributes": {"gender": "male", "age": {"min": 25, "max": 40}}}
    bob_start = {"name": "Боб 👋", "languageCode": "EN",
                 "userAttributes": {"gender": "male", "age": 35}, "targetAttributes": {"gender": "female"}}
    try:
        a, b, c, flood = await client(), await client(), await client(), await client()

        # 11: refused starts.
        await c.send_json("/start", "{not json")
        await c.event(11, error="invalid_json")
        for bad in ({"languageCode": "english"}, {"name": "x" * 65, "languageCode": "en"},
                    {"languageCode": "en", "userAttributes": {"age": 200}},
                    {"languageCode": "en", "targetAttributes": {"gender": "any"}}):
            await c.send_json("/start", bad)
            starts.append((bad, (await c.event(11, error="invalid_field")).body["serviceContent"]["error"]))

        # Waiting, already waiting, cancelled (30 with null ids), nothing to stop (31).
        await a.send_json("/start", alice_start)
        starts.append((alice_start, "ok"))
        await a.send_json("/start", alice_start)
        await a.event(11, error="already_waiting")
        await a.send_json("/stop", {})
        cancelled = await a.event(30)
        assert cancelled.body["serviceContent"] == {"reason": "cancelled"}
        await a.send_json("/stop", {})
        await a.event(31, error="not_in_dialog")

        # 10: a pair (Bob through the Spring-style alias).
        await a.send_json("/start", alice_start)
        await b.send_json("/app/start", bob_start)
        starts.append((bob_start, "ok"))
        paired_a, paired_b = await a.event(10), await b.event(10)
        chat = paired_a.body["chatUUID"]
        alice, bob = paired_a.body["senderUUID"], paired_b.body["senderUUID"]
        assert paired_b.body["chatUUID"] == chat and alice != bob
        assert paired_a.body["serviceContent"]["partner"]["name"] == "Боб 👋"
        await a.send_json("/start", alice_start)
        await a.event(11, error="already_in_dialog")

        # 20 both ways, including non-ASCII and HTML-looking text.
        for sender, author, text in ((a, alice, "Привет, мир 👋"), (b, bob, "<b>bold</b><script>alert(1)</script>")):
            await sender.send_json("/message", {"chatUUID": chat, "senderUUID": author, "content": text})
            for receiver in (a, b):
                event = await receiver.event(20)
                assert (event.body["senderUUID"], event.body["content"]) == (author, text)

        # 21: refused messages.
        for body, slug in (
            ("[1, 2", "invalid_json"),
            ({"chatUUID": chat, "senderUUID": alice, "content": 5}, "invalid_field"),
            ({"chatUUID": "not-a-uuid", "senderUUID": alice, "content": "hi"}, "invalid_field"),
            ({"chatUUID": chat, "senderUUID": alice, "content": "  "}, "empty_content"),
            ({"chatUUID": chat, "senderUUID": alice, "content": "x" * 4097}, "content_too_long"),
            ({"chatUUID": str(uuid.uuid4()), "senderUUID": alice, "content": "hi"}, "unknown_chat"),
            ({"chatUUID": chat, "senderUUID": bob, "content": "I am Bob"}, "not_participant"),
        ):
            await a.send_json("/message", body)
            await a.event(21, error=slug)

        # 31: refused stops, then 30 "stop" to both, then refusals on the ended dialog.
        await a.send_json("/stop", {"chatUUID": chat, "senderUUID": bob, "content": None})
        await a.event(31, error="not_participant")
        await a.send_json("/stop", {"chatUUID": str(uuid.uuid4()), "senderUUID": alice, "content": None})
        await a.event(31, error="unknown_chat")
        await a.send_json("/stop", {"chatUUID": chat, "senderUUID": alice, "content": None})
        for receiver in (a, b):
            left = await receiver.event(30)
            assert left.body["senderUUID"] == alice and left.body["serviceContent"] == {"reason": "stop"}
        await a.send_json("/message", {"chatUUID": chat, "senderUUID": alice, "content": "still there?"})
        await a.event(21, error="dialog_ended")
        await a.send_json("/stop", {"chatUUID": chat, "senderUUID": alice, "content": None})
        await a.event(31, error="dialog_ended")

        # 40 and 41: Bob reports the dialog that just ended, once.
        report = {"chatUUID": chat, "senderUUID": bob, "content": "rude"}
        await b.send_json("/report", report)
        assert set((await b.event(40)).body["serviceContent"]) == {"reportId"}
        await b.send_json("/app/report", report)
        await b.event(41, error="already_reported")
        await b.send_json("/report", {**report, "content": "x" * 501})
        await b.event(41, error="invalid_field")

        # A new pair; Bob's socket closes: 30 "disconnect" to Alice.
        await a.send_json("/start", alice_start)
        await b.send_json("/start", bob_start)
        second = (await a.event(10)).body["chatUUID"]
        assert second != chat and (await b.event(10)).body["chatUUID"] == second
        await b.close()
        gone = await a.event(30)
        assert gone.body["chatUUID"] == second and gone.body["serviceContent"] == {"reason": "disconnect"}

        # Resume: Carol's socket drops; a new connection resumes her (10 resumed, then Dan's
        # 20 she missed); her first token, used, and a forged one get 11 resume_failed.
        carol, dan = await client(**{"resume-grace": "30"}), await client()
        await carol.send_json("/start", {"name": "Carol", "languageCode": "et"})
        await dan.send_json("/start", {"name": "Dan", "languageCode": "et"})
        token = (await carol.event(10)).body["serviceContent"]["resumeToken"]
        dan_ten = (await dan.event(10)).body
        carol.abort()
        await carol.closed.wait()
        await dan.send_json("/message", {"chatUUID": dan_ten["chatUUID"], "senderUUID": dan_ten["senderUUID"],
                                         "content": "are you there?"})
        await dan.event(20)
        back, thief = await client(**{"resume-grace": "30"}), await client()
        await back.send_json("/resume", {"resumeToken": token})
        resumed = await back.event(10)
        assert resumed.body["serviceContent"]["resumed"] is True
        assert (await back.event(20)).body["content"] == "are you there?"
        for forged in (token, token[:-1] + ("A" if token[-1] != "A" else "B")):
            await thief.send_json("/app/resume", {"resumeToken": forged})
            await thief.event(11, error="resume_failed")

        # rate_limited: more /start frames in one burst than the bucket holds.
        await flood.send("".join(
            f"SEND\ndestination:/start\ncontent-length:2\n\n{{}}\x00" for _ in range(12)
        ))
        slugs = [(await flood.event(11)).body["serviceContent"]["error"] for _ in range(12)]
        assert "rate_limited" in slugs, slugs
    finally:
        for connection in clients:
            await connection.close()
    return [event for connection in clients for event in connection.events], starts


@pytest.mark.django_db(transaction=True)
async def test_live_payloads_match_the_schemas(doc, daphne_server):
    events, starts = await capture_session(daphne_server.ws_url)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "captured-events.json").write_text(
        json.dumps([{"headers": e.headers, "body": e.body} for e in events], ensure_ascii=False, indent=1),
        encoding="utf-8",
    )

    envelope = validator(doc, "/components/schemas/Event")
    headers = validator(doc, "/components/schemas/EventHeaders")
    by_code = {code: validator(doc, event_payload_pointer(doc, code)) for code in EVENT_MESSAGES}
    for event in events:
        assert not errors(envelope, event.body), (event.body, errors(envelope, event.body))
        assert not errors(by_code[event.body["eventCode"]], event.body), event.body
        assert not errors(headers, event.headers), (event.headers, errors(headers, event.headers))
        assert int(event.headers["content-length"]) == len(json.dumps(event.body, ensure_ascii=False, separators=(",", ":")).encode())

    assert {event.body["eventCode"] for event in events} == set(EVENT_MESSAGES)
    seen_slugs = {event.body["serviceContent"]["error"] for event in events if event.body["eventCode"] % 10 == 1}
    assert seen_slugs == SLUGS - {"unavailable"}, seen_slugs
    reasons = {event.body["serviceContent"]["reason"] for event in events if event.body["eventCode"] == 30}
    assert reasons == {"cancelled", "stop", "disconnect"}

    # The request schema agrees with the server on the /start bodies it saw.
    start = validator(doc, "/components/schemas/StartRequest")
    for body, outcome in starts:
        assert (not errors(start, body)) == (outcome == "ok"), (body, outcome, errors(start, body))

    # The schemas can fail: real payloads, each broken in one way, are refused.
    sample = {event.body["eventCode"]: event.body for event in events}
    broken = [
        {**sample[10], "extra": 1},
        {key: value for key, value in sample[20].items() if key != "content"},
        {**sample[20], "eventCode": 12},
        {**sample[20], "serviceContent": {}},
        {**sample[20], "content": ""},
        {**sample[10], "chatUUID": "not-a-uuid"},
        {**sample[10], "serviceContent": {"partner": {**sample[10]["serviceContent"]["partner"], "age": 3}}},
        {**sample[11], "serviceContent": {**sample[11]["serviceContent"], "error": "bogus"}},
        {**sample[21], "serviceContent": {"error": "invalid_field"}},
        {**sample[30], "serviceContent": {"reason": "bored"}},
        {**sample[31], "content": "x"},
        {**sample[40], "serviceContent": {"reportId": "nope"}},
        {**sample[10], "serviceContent": {**sample[10]["serviceContent"], "resumed": False}},
        {**sample[10], "serviceContent": {**sample[10]["serviceContent"], "resumeToken": 5}},
        {**sample[41], "eventCode": 42},
    ]
    for body in broken:
        assert errors(envelope, body), f"an invalid payload passed: {body}"
    assert errors(headers, {**events[0].headers, "destination": "/topic/other"})


@pytest.mark.django_db
def test_document_is_served(client):
    response = client.get("/asyncapi.yaml")
    assert response.status_code == 200
    assert response["Content-Type"].split(";")[0] in ("application/yaml", "text/yaml")
    assert b"".join(response.streaming_content) == DOC_PATH.read_bytes()
