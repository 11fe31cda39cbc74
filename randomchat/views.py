"""The HTTP side: the chat page and the AsyncAPI document (/healthz and /metrics: probes.py)."""

from __future__ import annotations

from django.conf import settings
from django.http import FileResponse, Http404
from django.shortcuts import render
from django.views.decorators.http import require_safe

ASYNCAPI_PATH = settings.BASE_DIR / "docs" / "asyncapi.yaml"
# The page loads only its own files and talks only to its own host (ws/wss included).
PAGE_CSP = (
    "default-src 'self'; connect-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@require_safe
def index(request):
    """The chat page."""
    response = render(request, "randomchat/index.html")
    response["Content-Security-Policy"] = PAGE_CSP
    return response


@require_safe
def asyncapi(request):
    """docs/asyncapi.yaml, the machine-readable description of the STOMP API."""
    try:
        handle = open(ASYNCAPI_PATH, "rb")
    except FileNotFoundError:
        raise Http404("docs/asyncapi.yaml is missing") from None
    return FileResponse(handle, content_type="application/yaml; charset=utf-8")
