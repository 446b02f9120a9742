"""Shared pieces of the OpenAPI document at /api/schema/ (drf-spectacular): the error shapes, the
responses every endpoint shares, and the plain Django views (probes, /metrics) that DRF does not see.

The views describe themselves with `extend_schema`; this module only holds what more than one app uses.
"""

import copy

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import build_media_type_object, force_instance
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse

from gridnode.fields import OBJECT_ID_SCHEMA, RequestBody
from gridnode.http import OBJECT_ID_RULE

ERROR_REF = {"$ref": "#/components/schemas/Error"}

# Every error on every path: `error` always, plus the keys some seed endpoints put beside it
# (`success`, `status`); the node never sends anything else in an error body but readiness `checks`.
ERROR_SCHEMA = {
    "type": "object",
    "description": 'The one error shape: `{"error": "<what was wrong>"}`; never echoes the request.',
    "properties": {
        "error": {"type": "string"},
        "success": {"type": "boolean", "enum": [False]},
        "status": {"type": "boolean", "enum": [False]},
    },
    "required": ["error"],
}

# What each status means on this node (api.md: "Every error").
_MEANINGS = {
    400: "Bad input: a missing or malformed field, an id outside the rules, content that does not load.",
    401: "This endpoint's group needs a token (GRIDNODE_AUTH_*), or the token sent is wrong.",
    403: "The owner does not allow it.",
    404: "No such model, dataset or registration.",
    409: "The id is taken.",
    411: "A body without Content-Length (chunked) is refused.",
    413: "Larger than this node accepts.",
    415: "Unsupported Content-Type (or Content-Encoding): send JSON, multipart or a form.",
    502: "Another node this request needed (an SMPC peer or crypto provider) failed or broke the protocol.",
    503: "This node is not set up for this (SMPC needs GRIDNODE_SMPC_SECRET).",
    504: "Another node this request needed did not answer within GRIDNODE_SMPC_TIMEOUT.",
}

# Example ids the document offers (and the schemathesis run seeds), so generated requests reach the happy
# paths as well as the 404s.
EXAMPLE_MODEL_ID = "demo"
EXAMPLE_DATASET_ID = "demo-rows"
EXAMPLE_ENCRYPTED_MODEL_ID = "shared"

# Paths that are older clients' spellings of a seed route (api.md: "Paths").
ALIASES = {
    "/delete_model": "/delete-model",
    "/models/{model_id}": "/model/{model_id}",
    "/data_centric/serve-model": "/serve-model",
    "/data-centric/serve-model": "/serve-model",
}
# Operation id suffixes where one seed route has more than one alias (the rest take `_alias`).
_ALIAS_SUFFIXES = {"/data_centric/serve-model": "_data_centric", "/data-centric/serve-model": "_data_centric_dash"}


def errors(*codes: int, schema: dict = ERROR_REF, **descriptions: str) -> dict:
    """`extend_schema` responses for the given error codes, each in the one error shape."""
    return {
        (code, "application/json"): OpenApiResponse(schema, description=descriptions.get(f"e{code}", _MEANINGS[code]))
        for code in codes
    }


def error_with(**fields: bool) -> dict:
    """The error shape with fixed extra keys that the contract puts beside `error` on some endpoints."""
    return {
        "allOf": [
            ERROR_REF,
            {
                "type": "object",
                "properties": {name: {"type": "boolean", "enum": [value]} for name, value in fields.items()},
                "required": list(fields),
            },
        ]
    }


def id_parameter(name: str, example: str, description: str) -> OpenApiParameter:
    """A model or dataset id in the path, with the id rules and an id that the example node holds."""
    return OpenApiParameter(
        name,
        {"type": "string", "pattern": OBJECT_ID_SCHEMA["pattern"]},
        OpenApiParameter.PATH,
        description=f"{description} ({OBJECT_ID_RULE}).",
        examples=[OpenApiExample(example, value=example)],
    )


def json_form_and_multipart(json_schema: dict, *, files: tuple[str, ...] = ()) -> dict:
    """The request bodies of a write endpoint: JSON, multipart and a form carry the same fields.

    In a form or multipart body every field is text (a list is the field repeated); `files` name the
    fields that may be a multipart file part (raw bytes, no encoding).
    """
    form_properties = {}
    for name, field in json_schema["properties"].items():
        form_properties[name] = _as_form_field(field)
    form: dict = {"type": "object", "properties": form_properties}
    if json_schema.get("required"):  # OpenAPI 3.0 refuses an empty list (a body whose fields are all optional)
        form["required"] = json_schema["required"]
    multipart_properties = dict(form_properties)
    for name in files:
        multipart_properties[name] = {
            "description": f"{form_properties[name].get('description', '')} Or a file part: raw bytes.".strip(),
            "type": "string",
            "format": "binary",
        }
    multipart = {**form, "properties": multipart_properties}
    return {
        "application/json": json_schema,
        "multipart/form-data": multipart,
        "application/x-www-form-urlencoded": form,
    }


def _as_form_field(field: dict) -> dict:
    if field.get("type") == "array":
        return {"type": "array", "items": {"type": "string"}, "description": field.get("description", "")}
    if "oneOf" in field:  # booleans as text
        return {"type": "string", "description": field.get("description", "")}
    if field.get("type") in ("string", None):
        return {**field, "type": "string"} if "type" in field else {"type": "string"}
    return {"type": "string", "description": field.get("description", "")}


class GridAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, giving an alias path its own operation id (`<seed route's id>_alias`),
    and describing a RequestBody (gridnode.fields) as its JSON, multipart and form bodies, inline."""

    def _get_request_body(self, direction="request"):
        body = force_instance(self.get_request_serializer()) if self.method in ("PUT", "PATCH", "POST") else None
        if not isinstance(body, RequestBody):
            return super()._get_request_body(direction)
        # The fields' own schemas (gridnode.fields.BodyFieldSchema), inline rather than as a component: the
        # form and multipart bodies differ from the JSON one (text fields, file parts).
        json_schema = self._map_serializer(body, direction)
        bodies = (
            json_form_and_multipart(json_schema, files=body.file_fields())
            if body.forms
            else {"application/json": json_schema}
        )
        return {
            "content": {
                media_type: build_media_type_object(schema, self._get_examples(schema, direction, media_type))
                for media_type, schema in bodies.items()
            }
        }

    def _is_list_view(self, serializer=None):
        # A list action described by a raw JSON schema (`{"models": [...]}`) is that object, not an array of it.
        responses = self.get_response_serializers() if serializer is None else serializer
        if isinstance(responses, dict) and responses and "type" not in responses and "$ref" not in responses:
            main = min(responses.items(), key=lambda item: str(item[0][0] if isinstance(item[0], tuple) else item[0]))
            responses = main[1]
        if isinstance(responses, OpenApiResponse):
            responses = responses.response
        if isinstance(responses, dict):
            return False
        return super()._is_list_view(serializer)

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        seed_path = ALIASES.get(path.rstrip("/"))
        if operation and seed_path:
            suffix = _ALIAS_SUFFIXES.get(path.rstrip("/"), "_alias")
            operation["operationId"] = f"{operation['operationId']}{suffix}"
            operation["description"] = f"An older clients' spelling of {seed_path}, served the same way."
        return operation


def one_spelling_per_route(endpoints):
    """Preprocessing hook: list each route once, spelled as the seed does (without the trailing slash)."""
    return [(path.rstrip("/") or "/", path_regex, method, callback) for path, path_regex, method, callback in endpoints]


def _plain_operation(
    operation_id: str, summary: str, tag: str, ok: dict, *, ok_media: str = "application/json", more: dict | None = None
) -> dict:
    responses = {"200": {"description": summary, "content": {ok_media: {"schema": ok}}}}
    responses["405"] = {
        "description": "Only GET and HEAD.",
        "content": {"application/json": {"schema": ERROR_REF}},
    }
    for code, response in (more or {}).items():
        responses[str(code)] = response
    return {"operationId": operation_id, "summary": summary, "tags": [tag], "responses": responses}


_CHECKS = {
    "type": "object",
    "properties": {name: {"type": "string", "enum": ["ok", "failed"]} for name in ("database", "storage")},
}


def _not_ready(**fields) -> dict:
    schema = {
        "allOf": [
            ERROR_REF,
            {"type": "object", "properties": {**fields, "checks": _CHECKS}, "required": [*fields, "checks"]},
        ]
    }
    return {
        "description": "The database does not answer or the storage is not writable (named in `error`).",
        "content": {"application/json": {"schema": schema}},
    }


def plain_view_paths() -> dict:
    """The OpenAPI paths of the plain Django views (outside DRF): probes and metrics."""
    return {
        "/healthz": {
            "get": _plain_operation(
                "healthz",
                "Liveness: the process answers (touches nothing). Always open.",
                "probes",
                {"type": "object", "properties": {"status": {"enum": ["live"]}}, "required": ["status"]},
            )
        },
        "/readyz": {
            "get": _plain_operation(
                "readyz",
                "Readiness: the database answers and the storage takes a write. Always open.",
                "probes",
                {
                    "type": "object",
                    "properties": {"status": {"enum": ["ready"]}, "checks": _CHECKS},
                    "required": ["status", "checks"],
                },
                more={"503": _not_ready(status={"enum": ["not ready"]})},
            )
        },
        "/v2/health/live": {
            "get": _plain_operation(
                "v2_health_live",
                "Open Inference Protocol liveness. Always open.",
                "v2",
                {"type": "object", "properties": {"live": {"enum": [True]}}, "required": ["live"]},
            )
        },
        "/v2/health/ready": {
            "get": _plain_operation(
                "v2_health_ready",
                "Open Inference Protocol readiness, with the same checks as /readyz. Always open.",
                "v2",
                {
                    "type": "object",
                    "properties": {"ready": {"enum": [True]}, "checks": _CHECKS},
                    "required": ["ready", "checks"],
                },
                more={"503": _not_ready(ready={"enum": [False]})},
            )
        },
        "/api/schema/swagger-ui": {
            "get": _plain_operation(
                "schema_ui",
                "Swagger UI for this document, its JS and CSS served by the node (group: read).",
                "schema",
                {"type": "string"},
                ok_media="text/html",
                more={"401": {"description": _MEANINGS[401], "content": {"application/json": {"schema": ERROR_REF}}}},
            )
        },
        "/metrics": {
            "get": _plain_operation(
                "metrics",
                "Every metric in Prometheus' text format (group: metrics, GRIDNODE_AUTH_METRICS).",
                "operations",
                {"type": "string"},
                ok_media="text/plain",
                more={
                    "401": {
                        "description": _MEANINGS[401],
                        "content": {"application/json": {"schema": ERROR_REF}},
                    }
                },
            )
        },
    }


V2_MODEL = "/v2/models/{model_id}"


def _versioned_v2_paths(paths: dict) -> dict:
    """The v2 model paths again with `/versions/{version}` after the id, as v2 clients may spell them."""
    versioned = {}
    for path, operations in paths.items():
        if not path.startswith(V2_MODEL):
            continue
        copies = {}
        for method, operation in operations.items():
            operation = copy.deepcopy(operation)
            operation["operationId"] += "_version"
            operation["description"] = f"{path} naming the model's version: hosted models have the one version 1."
            operation.setdefault("parameters", []).append(
                {
                    "in": "path",
                    "name": "version",
                    "required": True,
                    "schema": {"type": "string"},
                    "description": "The model's version: 1 (any other is a 404).",
                    "examples": {"One": {"value": "1"}},
                }
            )
            copies[method] = operation
        versioned[V2_MODEL + "/versions/{version}" + path.removeprefix(V2_MODEL)] = copies
    return versioned


def add_plain_views(result, generator, request, public):
    """Postprocessing hook: the error components, the reusable 405 answer, and the plain views' paths."""
    components = result.setdefault("components", {})
    components.setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    components.setdefault("responses", {})["MethodNotAllowed"] = {
        "description": "405 on any path, for a method it does not serve (its Allow header lists those it does).",
        "content": {"application/json": {"schema": ERROR_REF}},
    }
    for scheme in components.get("securitySchemes", {}).values():
        scheme["description"] = (
            "`Authorization: Token <key>` (manage.py create_token). Needed only by the groups an operator"
            " closed (GRIDNODE_AUTH_READ, _WRITE, _INFERENCE, _DOWNLOAD, _METRICS); a token sent is always checked."
        )
    paths = result.setdefault("paths", {})
    for operations in paths.values():
        for operation in operations.values():
            # Every group is open by default: no token is a valid way to call until the operator says otherwise.
            if operation.get("security") and {} not in operation["security"]:
                operation["security"].append({})
    paths.update(_versioned_v2_paths(paths))
    paths.update(plain_view_paths())
    result["paths"] = dict(sorted(paths.items()))
    return result
