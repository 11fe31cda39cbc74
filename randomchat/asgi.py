"""ASGI entry point: `daphne randomchat.asgi:application`."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "randomchat.settings")
django_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from . import daphne_hooks  # noqa: E402
from .origins import OriginGuard  # noqa: E402
from .probes import Probes  # noqa: E402
from .routing import websocket_urlpatterns  # noqa: E402

daphne_hooks.install()

application = ProtocolTypeRouter(
    {
        "http": Probes(django_application),
        "websocket": OriginGuard(URLRouter(websocket_urlpatterns)),
    }
)
