from django.contrib import admin
from django.urls import path

from . import views
from .metrics import metrics_view

urlpatterns = [
    path("", views.index, name="index"),
    path("healthz", views.healthz, name="healthz"),
    path("asyncapi.yaml", views.asyncapi, name="asyncapi"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
]
