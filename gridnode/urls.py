"""Mounts each app's routes and the admin; the apps own their paths."""

from django.contrib import admin
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt

from gridnode import auth, health, observability
from gridnode.schema_views import SchemaUIView, SchemaView

admin.site.site_header = "Grid Node administration"
admin.site.site_title = "Grid Node"
admin.site.index_title = "Models, datasets and encrypted models on this node"

urlpatterns = [
    path("admin/", admin.site.urls),
    re_path(r"^healthz/?$", health.liveness, name="healthz"),
    re_path(r"^readyz/?$", health.readiness, name="readyz"),
    # Probes stay open whatever the auth switches say; metrics have their own (GRIDNODE_AUTH_METRICS).
    # Exempt from CSRF like the probes: a POST is a 405, not the admin's CSRF 403 (found by tests/schema's fuzzing).
    re_path(r"^metrics/?$", csrf_exempt(auth.protect(observability.metrics, auth.METRICS)), name="metrics"),
    re_path(r"^api/schema/?$", SchemaView.as_view(), name="schema"),
    re_path(r"^api/schema/swagger-ui/?$", SchemaUIView.as_view(url_name="schema"), name="swagger-ui"),
    path("", include("models_app.v2_urls")),
    path("", include("models_app.urls")),
    path("", include("datasets_app.urls")),
    path("", include("smpc_app.urls")),
]

handler400 = "gridnode.errors.bad_request"
handler403 = "gridnode.errors.permission_denied"
handler404 = "gridnode.errors.page_not_found"
handler500 = "gridnode.errors.server_error"
