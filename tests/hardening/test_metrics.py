"""/metrics in Prometheus text format, fed by a real chat through the consumer."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.inprocess import pair

from tests.support.raw import asgi_get

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


async def scrape() -> dict:
    status, headers, body = await asgi_get("/metrics")
    assert status == 200
    assert headers[b"content-type"].startswith(b"text/plain")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_follow_the_chat(chat):
    before = await scrape()
    waiting = await chat()
    await waiting.start("de")
    a, b = await chat(), await chat()
    event_a, _ = await pair(a, b)
    ids = {"chatUUID": event_a["chatUUID"], "senderUUID": event_a["senderUUID"]}
    await a.send_json("/message", {**ids, "content": "hello"})
    await a.event(), await b.event()
    await a.send_json("/message", {**ids, "content": ""})
    assert (await a.event())["serviceContent"]["error"] == "empty_content"
    await a.send("FOO")
    await a.expect_error("Unknown command")
    after = await scrape()

    assert value(after, "randomchat_waiting_users", language="de") == 1
    assert value(after, "randomchat_active_dialogs") == 1
    assert value(after, "randomchat_open_connections") - value(before, "randomchat_open_connections") == 3
    delta = lambda name, **labels: value(after, name, **labels) - value(before, name, **labels)  # noqa: E731
    assert delta("randomchat_messages_delivered_total") == 2
    assert delta("randomchat_events_delivered_total", code="10") == 2
    assert delta("randomchat_refusals_total", error="empty_content") == 1
    assert delta("randomchat_pairing_wait_seconds_count") == 2
    assert delta("randomchat_rejected_frames_total", reason="unknown_command") == 1
