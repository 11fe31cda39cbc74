from django.urls import re_path

from .consumers import ChatConsumer

websocket_urlpatterns = [re_path(r"^connect/?$", ChatConsumer.as_asgi())]
