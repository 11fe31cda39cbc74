"""randomchat.daphne_hooks: one install() for the wraps of daphne's WebSocketProtocol."""

from __future__ import annotations

import logging
import sys
import types

import pytest

from randomchat import daphne_hooks


def fake_daphne(monkeypatch, protocol: type) -> None:
    module = types.ModuleType("daphne.ws_protocol")
    module.WebSocketProtocol = protocol
    monkeypatch.setitem(sys.modules, "daphne.ws_protocol", module)


def test_install_wraps_once(monkeypatch):
    calls = []

    class Protocol:
        pass

    for name in daphne_hooks.WRAPPED:
        setattr(Protocol, name, lambda self, *a: None)
    fake_daphne(monkeypatch, Protocol)
    monkeypatch.setattr(daphne_hooks.backpressure, "wrap", lambda p: calls.append(("backpressure", p)))
    monkeypatch.setattr(daphne_hooks.inbound, "wrap", lambda p: calls.append(("inbound", p)))
    daphne_hooks.install()
    daphne_hooks.install()
    assert calls == [("backpressure", Protocol), ("inbound", Protocol)]


def test_a_protocol_without_the_wrapped_methods_stops_the_server(monkeypatch):
    class Protocol:
        def serverSend(self):
            pass

    fake_daphne(monkeypatch, Protocol)
    with pytest.raises(RuntimeError, match="check_timeouts"):
        daphne_hooks.install()


def test_another_version_than_written_for_is_said(monkeypatch, caplog):
    monkeypatch.setitem(daphne_hooks.WRITTEN_FOR, "daphne", "0.1")
    with caplog.at_level(logging.WARNING, logger="randomchat.daphne_hooks"):
        daphne_hooks._check_versions()
    assert "package=daphne" in caplog.text and "written_for=0.1" in caplog.text


def test_the_installed_versions_are_the_ones_written_for(caplog):
    with caplog.at_level(logging.WARNING, logger="randomchat.daphne_hooks"):
        daphne_hooks._check_versions()
    assert caplog.text == ""
