"""Root URLconf (composition root: the only orchestrator module that names ``portal``)."""
from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny

from orchestrator.health import healthz
from portal import urls as portal_urls

# The schema and its viewer are public documents.
_public = {"authentication_classes": [], "permission_classes": [AllowAny]}

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("api/v1/", include("orchestrator.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(**_public), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema", **_public), name="api-docs"),
    path("admin/", admin.site.urls),
    path("", include(portal_urls)),
]

if settings.ORCH_BENCH_ENDPOINTS:
    from orchestrator.bench_views import floor

    urlpatterns.append(path("bench/floor", floor))

handler400 = "orchestrator.api.errors.json_400"
handler404 = "orchestrator.api.errors.json_404"
handler500 = "orchestrator.api.errors.json_500"
