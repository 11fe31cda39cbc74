"""daphne's access log (one line per request, with the client's address), only when asked.

daphne's command line writes it to stdout unless told otherwise, so a plain
`daphne randomchat.asgi:application` would log every client's IP address. The
application decides instead: RANDOMCHAT_ACCESS_LOG names a file, or `-` for stdout, and
empty (the default) turns it off, whatever daphne's `--access-log` or `-v` say.
"""

from __future__ import annotations

import sys

from django.conf import settings


def wrap(Server) -> None:
    """Replace daphne's access logger with the one the setting names, or none."""
    from daphne.access import AccessLogGenerator

    target = settings.RANDOMCHAT_ACCESS_LOG
    action_logger = None
    if target:
        action_logger = AccessLogGenerator(sys.stdout if target == "-" else open(target, "a", 1))

    def log_action(self, protocol, action, details) -> None:
        if action_logger is not None:
            action_logger(protocol, action, details)

    Server.log_action = log_action
