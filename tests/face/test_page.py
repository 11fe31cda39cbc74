"""The chat page at /: its HTML and static files, and two real browsers chatting through it."""

from __future__ import annotations

import contextlib
import os
import time
import urllib.request

import pytest

from tests.support.live import ARTIFACTS, REPO
from tests.support.proxy import CuttableProxy
from tests.support.skip import npm_missing, skip_or_fail

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
NON_ASCII = "Привет, мир 👋"
HTML_LOOKING = "<b>bold</b><script>alert(1)</script>"
TIMEOUT_MS = 15_000


def test_page_html(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in response["Content-Security-Policy"]
    html = response.content.decode()
    for needle in ('id="start-form"', 'id="language"', 'id="want-age-min"', 'id="waiting"', 'id="partner-name"',
                   'id="send"', 'id="stop"', 'id="next"', "/static/vendor/stompjs/stomp.umd.min.js",
                   "/static/randomchat/chat.js", "/static/randomchat/chat.css"):
        assert needle in html, needle
    assert "//cdn" not in html and "https://" not in html  # nothing from elsewhere at run time


def test_page_script_writes_text_only():
    script = (REPO / "randomchat" / "static" / "randomchat" / "chat.js").read_text(encoding="utf-8")
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "document.write" not in script


@pytest.mark.django_db(transaction=True)
def test_static_files_are_served_by_daphne(daphne_server):
    bundle = REPO / "web" / "node_modules" / "@stomp" / "stompjs" / "bundles" / "stomp.umd.min.js"
    if not bundle.is_file():
        skip_or_fail(npm_missing("web/node_modules", "web"))
    for path, marker in (("/static/vendor/stompjs/stomp.umd.min.js", b"StompJs"),
                         ("/static/randomchat/chat.js", b"/user/dialog"),
                         ("/static/randomchat/chat.css", b".log")):
        with urllib.request.urlopen(daphne_server.http_url + path, timeout=10) as response:
            assert response.status == 200, path
            assert marker in response.read(), path


# The browser test


@pytest.fixture
def browser():
    missing = []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("the playwright package is not installed (requirements-test.txt)")
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} is missing (apt-get install chromium; .ci/run does)")
    if not (REPO / "web" / "node_modules" / "@stomp" / "stompjs").is_dir():
        missing.append(npm_missing("web/node_modules", "web"))
    if missing:
        skip_or_fail("browser test: " + "; ".join(missing))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


class Person:
    """One browser context with the page open; collects page errors and alert() calls."""

    def __init__(self, browser, url: str, label: str) -> None:
        self.label = label
        self.context = browser.new_context(viewport={"width": 760, "height": 820}, locale="en-US")
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.problems: list[str] = []
        self.page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        self.page.on("console", lambda msg: msg.type == "error" and self.problems.append(f"console: {msg.text}"))
        self.page.on("dialog", lambda dialog: (self.problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
        self.page.goto(url)
        self.page.wait_for_selector('#status[data-online="true"]')

    def state(self, name: str) -> None:
        self.page.wait_for_selector(f'body[data-state="{name}"]')

    def start(self, *, name, language, gender, age, want_gender="", want_min="", want_max="") -> None:
        page = self.page
        page.fill("#name", name)
        page.fill("#language", language)
        page.select_option("#gender", gender)
        page.fill("#age", str(age))
        page.select_option("#want-gender", want_gender)
        page.fill("#want-age-min", str(want_min))
        page.fill("#want-age-max", str(want_max))
        page.click("#start")

    def say(self, text: str) -> None:
        self.page.fill("#message", text)
        self.page.click("#send")

    def wait_line(self, kind: str, text: str) -> None:
        """A log line of `kind` (me, partner, system) whose text is exactly `text`."""
        self.page.wait_for_function(
            "([kind, text]) => [...document.querySelectorAll('#log li.' + kind)].some(li => li.textContent === text)",
            arg=[kind, text],
        )

    def system_lines(self) -> list[str]:
        return self.page.eval_on_selector_all("#log li.system", "items => items.map(li => li.textContent)")

    def problems_besides_drops(self) -> list[str]:
        """Its problems, but the failed WebSocket handshakes the browser reports while the network is cut."""
        return [p for p in self.problems if not (p.startswith("console: WebSocket connection to") and "failed" in p)]

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"page-{name}.png"), full_page=True)


@contextlib.contextmanager
def watched(people: list[Person]):
    """Close the people's browsers after the test; a failure first shows what each one saw."""
    try:
        yield people
    except Exception:
        for person in people:
            person.shot(f"failed-{person.label}")
            print(f"{person.label}: state={person.page.get_attribute('body', 'data-state')} "
                  f"log={person.page.inner_text('#log')!r} problems={person.problems}")
        raise
    finally:
        for person in people:
            person.context.close()


@pytest.mark.django_db(transaction=True)
def test_two_browsers_chat(daphne_server, browser):
    url = daphne_server.http_url + "/"
    alice, boris = Person(browser, url, "alice"), Person(browser, url, "boris")
    with watched([alice, boris]):
        alice.shot("01-form")
        alice.start(name="Alice", language="en", gender="female", age=30, want_gender="male", want_min=25, want_max=40)
        alice.state("waiting")
        alice.shot("02-waiting")
        boris.start(name="Борис", language="EN", gender="male", age=35, want_gender="female")

        for person, partner in ((alice, "Борис"), (boris, "Alice")):
            person.state("chatting")
            assert person.page.text_content("#partner-name") == partner

        alice.say(NON_ASCII)
        alice.wait_line("me", NON_ASCII)
        boris.wait_line("partner", NON_ASCII)
        boris.say(HTML_LOOKING)
        boris.wait_line("me", HTML_LOOKING)
        alice.wait_line("partner", HTML_LOOKING)
        for person in (alice, boris):
            # Shown as literal text: no element was made from it, and no script ran.
            assert person.page.locator("#log b, #log script").count() == 0
            assert "&lt;b&gt;bold&lt;/b&gt;&lt;script&gt;" in person.page.inner_html("#log")
        alice.shot("03-dialog-alice")
        boris.shot("03-dialog-boris")

        # Next: Alice leaves and waits again; Boris sees her leave, then Next pairs them again.
        alice.page.click("#next")
        alice.state("waiting")
        boris.state("ended")
        boris.wait_line("system", "Alice left the chat.")
        boris.page.click("#next")
        for person in (alice, boris):
            person.state("chatting")
        alice.say("again")
        boris.wait_line("partner", "again")

        # Stop: both dialogs end; the log stays readable.
        boris.page.click("#stop")
        boris.state("ended")
        alice.state("ended")
        alice.wait_line("system", "Борис left the chat.")
        boris.wait_line("system", "You left the chat.")
        # The dialog just ended can still be reported, once, with a reason.
        boris.page.fill("#report-reason", "rude")
        boris.page.click("#report")
        boris.page.wait_for_selector("#notice:has-text('a moderator will read this dialog')")
        assert boris.page.is_hidden("#report-form") and alice.page.is_visible("#report-form")
        assert alice.page.is_disabled("#message") and alice.page.is_visible("#next")
        alice.shot("04-stopped-alice")

        # Waiting can be cancelled, and the form comes back.
        alice.page.click("#back")
        alice.state("idle")
        alice.page.click("#start")
        alice.state("waiting")
        alice.page.click("#cancel")
        alice.state("idle")

        for person in (alice, boris):
            assert person.problems == [], (person.label, person.problems)


# Resume after a network drop (PROTOCOL.md §7.1): one person reaches daphne through a proxy that is cut.


def paired_through_proxy(browser, server, proxy: CuttableProxy, people: list[Person]) -> tuple[Person, Person]:
    """Alice (behind the proxy) and Boris (direct), in a dialog, each having said a line;
    both join `people`."""
    alice = Person(browser, proxy.url(server.http_url) + "/", "alice")
    people.append(alice)
    boris = Person(browser, server.http_url + "/", "boris")
    people.append(boris)
    alice.start(name="Alice", language="en", gender="female", age=30)
    boris.start(name="Boris", language="en", gender="male", age=35)
    for person in (alice, boris):
        person.state("chatting")
    alice.say("before the drop")
    boris.wait_line("partner", "before the drop")
    return alice, boris


def reconnecting(person: Person) -> None:
    """The page shows that it lost the network and holds the dialog, inputs off."""
    person.state("reconnecting")
    person.page.wait_for_selector('#status[data-online="false"]:text-is("reconnecting…")')
    assert person.page.is_visible("#dialog") and person.page.is_visible("#notice")
    for control in ("#message", "#send", "#stop", "#next", "#report"):
        assert person.page.is_disabled(control), control


@pytest.mark.django_db(transaction=True)
def test_a_cut_network_resumes_the_dialog(daphne_server, browser):
    with CuttableProxy("127.0.0.1", daphne_server.port) as proxy, watched([]) as people:
        alice, boris = paired_through_proxy(browser, daphne_server, proxy, people)
        proxy.set_cut(True)
        reconnecting(alice)
        boris.say("while you were away")
        boris.wait_line("me", "while you were away")
        time.sleep(2.5)  # a few of the page's reconnects fail on the cut link
        reconnecting(alice)
        alice.shot("05-reconnecting")

        proxy.set_cut(False)
        alice.state("chatting")
        alice.wait_line("partner", "while you were away")
        alice.page.wait_for_selector('#status[data-online="true"]:text-is("online")')
        assert alice.page.is_hidden("#notice") and alice.page.is_enabled("#message")
        assert alice.page.eval_on_selector_all("#log li", "items => items.map(li => li.className)") == [
            "system", "me", "system", "partner"]  # the transcript goes on: greeting, before, reconnected, missed
        alice.say("back")
        boris.wait_line("partner", "back")
        boris.say("welcome back")
        alice.wait_line("partner", "welcome back")
        alice.shot("06-resumed")
        assert boris.system_lines() == ["You are now talking to Alice. Say hi!"]  # never told of the drop
        assert boris.page.get_attribute("body", "data-state") == "chatting"
        assert alice.problems_besides_drops() == [] and boris.problems == [], (alice.problems, boris.problems)


@pytest.mark.django_db(transaction=True)
def test_a_cut_longer_than_the_grace_ends_the_dialog_and_says_so(start_daphne, browser):
    server = start_daphne(env={"RANDOMCHAT_RESUME_GRACE_MAX": "1", "RANDOMCHAT_REMATCH_WINDOW": "0"})
    with CuttableProxy("127.0.0.1", server.port) as proxy, watched([]) as people:
        alice, boris = paired_through_proxy(browser, server, proxy, people)
        proxy.set_cut(True)
        cut_at = time.monotonic()
        reconnecting(alice)
        boris.state("ended")  # the grace of 1 s ran out
        boris.wait_line("system", "Alice was disconnected.")
        time.sleep(max(0.0, 4 - (time.monotonic() - cut_at)))
        reconnecting(alice)

        proxy.set_cut(False)
        alice.state("idle")
        alice.page.wait_for_selector("#error:has-text('The connection was lost for too long: the chat has ended.')")
        alice.page.wait_for_selector('#status[data-online="true"]')
        assert alice.page.is_visible("#start-form") and alice.page.is_enabled("#start")
        assert alice.page.is_hidden("#dialog") and alice.page.is_hidden("#notice")
        alice.shot("07-resume-failed")
        assert alice.problems_besides_drops() == [] and boris.problems == [], (alice.problems, boris.problems)
