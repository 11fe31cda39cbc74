"""Keeps client-supplied text and client addresses out of the log lines of Django and daphne."""

from __future__ import annotations

import logging
import re

# A peer as daphne and Twisted write it: tcp4:1.2.3.4:5678, ['1.2.3.4', 5678], tcp6:[::1]:5678.
_PEER = re.compile(r"(?:tcp[46]:)?(?:\d{1,3}(?:\.\d{1,3}){3}|[\['][0-9a-fA-F]*:[0-9a-fA-F:.]*[\]']?)'?(?:(?::|,\s*)\d+)?")


class ClientTextFilter(logging.Filter):
    """Rewrites the records that would quote a request's path or Host, or a peer's address.

    django.request and django.security name the path and the Host ("Not Found: /...",
    "Invalid HTTP_HOST header: '...'"): what stays is the status and the kind of refusal,
    and a server error's traceback. daphne names connections by their peer (and passes
    Twisted's own log on from -v 2): the addresses are cut out.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if name == "django.request" or name.startswith("django.security."):
            status = getattr(record, "status_code", None)
            record.msg = "event=http_refused status=%s kind=%s"
            record.args = (status, name.rpartition(".")[2])
            if status is None or status < 500:
                record.exc_info = record.exc_text = None
        elif name.startswith("daphne.") and name != "daphne.cli":  # the CLI names the listening address
            record.msg, record.args = _PEER.sub("-", record.getMessage()), ()
        return True
