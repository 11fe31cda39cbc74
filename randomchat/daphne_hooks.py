"""Where randomchat reaches into daphne: its WebSocket protocol class and its Server, wrapped once.

ASGI shows an application neither the socket's read side nor its unsent bytes, so the
slow-reader guard (backpressure.py) and the inbound pacing (inbound.py) wrap methods of
daphne's WebSocketProtocol, which come from Twisted and autobahn; the access log
(accesslog.py) replaces the Server's. They were written against
the versions in WRITTEN_FOR; another version is said at import, and a protocol without the
wrapped methods stops the server rather than leave it unguarded.
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version

from . import accesslog, backpressure, inbound

logger = logging.getLogger(__name__)

WRITTEN_FOR = {"daphne": "4.2", "twisted": "26.10", "autobahn": "26.11"}
WRAPPED = ("serverSend", "check_timeouts", "processData", "onFrameEnd", "onMessage")


def _check_versions() -> None:
    for package, written_for in WRITTEN_FOR.items():
        try:
            installed = version(package)
        except PackageNotFoundError:
            continue
        if not (installed == written_for or installed.startswith(written_for + ".")):
            logger.warning(
                "event=daphne_hooks_version package=%s installed=%s written_for=%s: check randomchat/daphne_hooks.py",
                package, installed, written_for,
            )


def install() -> None:
    """Wrap daphne's WebSocketProtocol for the slow-reader guard and inbound pacing, and its
    Server for the access log; idempotent. Nothing to do outside daphne (tests with
    channels' communicators)."""
    try:
        from daphne.server import Server
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:
        return
    if not getattr(Server, "_randomchat_wrapped", False):
        Server._randomchat_wrapped = True
        accesslog.wrap(Server)
    if getattr(WebSocketProtocol, "_randomchat_wrapped", False):
        return
    missing = [name for name in WRAPPED if not callable(getattr(WebSocketProtocol, name, None))]
    if missing:
        raise RuntimeError(f"daphne's WebSocketProtocol lacks {', '.join(missing)}: randomchat/daphne_hooks.py needs updating")
    WebSocketProtocol._randomchat_wrapped = True
    backpressure.wrap(WebSocketProtocol)
    inbound.wrap(WebSocketProtocol)


_check_versions()
