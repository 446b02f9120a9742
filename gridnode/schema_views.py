"""The view that serves the OpenAPI document (kept apart from gridnode/schema.py, which drf-spectacular's own
views import through DRF's DEFAULT_SCHEMA_CLASS)."""

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from gridnode.schema import errors


class SchemaView(SpectacularAPIView):
    """GET /api/schema/: this document, YAML by default, JSON with ?format=json or Accept (group: read)."""

    @extend_schema(
        operation_id="openapi_schema",
        summary="This OpenAPI 3 document (group: read).",
        tags=["schema"],
        parameters=[OpenApiParameter("format", str, enum=["yaml", "json"], description="Default: yaml.")],
        responses={
            (200, "application/vnd.oai.openapi"): OpenApiResponse({"type": "object"}, description="YAML."),
            (200, "application/vnd.oai.openapi+json"): OpenApiResponse({"type": "object"}, description="JSON."),
            **errors(401, 404, e404="A ?format= other than yaml or json."),
        },
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class SchemaUIView(SpectacularSwaggerView):
    """GET /api/schema/swagger-ui/: Swagger UI over the document, its assets served locally (group: read)."""

    # The page is an HTML template: DRF's OPTIONS answer would go through the same renderer without a
    # template and fail with a 500 (found by tests/schema's fuzzing), so only GET and HEAD are served.
    http_method_names = ["get", "head"]
