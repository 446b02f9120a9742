"""The Open Inference Protocol (KServe v2) REST endpoints over the hosted models.

Stock v2 clients (`tritonclient[http]`, KServe's) speak to the node without glue. Permissions are those
of `POST /model/<id>`: model metadata, model readiness and inference all need `allow_remote_inference`
(404 for an unknown id, 403 when not allowed), so a private model's inputs and outputs are not shown to
callers who may not run it. A request body is JSON whatever its Content-Type says (stock clients send
none); it is read in an inference process (models_app/v2_inference.py), as the model runs there.
"""

import tomllib
from functools import cache

import orjson
from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import viewsets
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.response import Response

from gridnode.auth import INFERENCE, READ, requires
from gridnode.errors import NotFound
from gridnode.http import FastJSONRenderer, check_object_id
from gridnode.schema import EXAMPLE_MODEL_ID, errors, id_parameter
from models_app import executor, services
from models_app.executor import ModelRef
from models_app.v2_inference import HEADER_LENGTH, MODEL_VERSION
from models_app.v2_signatures import PLATFORMS

SERVER_NAME = "gridnode"
EXTENSIONS = ["binary_tensor_data"]


@cache
def server_version() -> str:
    """The node's version, as pyproject.toml states it."""
    try:
        with open(settings.BASE_DIR / "pyproject.toml", "rb") as source:
            return tomllib.load(source)["project"]["version"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


class JSONOnlyNegotiation(BaseContentNegotiation):
    """v2 answers JSON (or JSON followed by binary tensors) whatever the Accept header asks for."""

    def select_parser(self, request, parsers):
        return None  # bodies are read by the views themselves

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


_TENSOR_METADATA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}, "description": "-1: any size."},
    },
    "required": ["name", "datatype", "shape"],
}
_PARAMETERS = {"type": "object", "additionalProperties": True}
_INFER_REQUEST = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "parameters": _PARAMETERS,
        "inputs": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "example": "input__0"},
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "datatype": {"type": "string", "example": "FP32"},
                    "parameters": _PARAMETERS,
                    "data": {"type": "array", "description": "Flat or nested, row-major."},
                },
                "required": ["name", "shape", "datatype"],
            },
        },
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "parameters": _PARAMETERS},
                "required": ["name"],
            },
        },
    },
    "required": ["inputs"],
}
_INFER_RESPONSE = {
    "type": "object",
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "datatype": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer"}},
                    "data": {"type": "array", "description": "Flat, row-major."},
                    "parameters": {
                        "type": "object",
                        "properties": {"binary_data_size": {"type": "integer"}},
                    },
                },
                "required": ["name", "datatype", "shape"],
            },
        },
    },
    "required": ["model_name", "model_version", "outputs"],
}
_MODEL_ID = id_parameter("model_id", EXAMPLE_MODEL_ID, "The model's id")


class OpenInferenceViewSet(viewsets.ViewSet):
    """Server metadata, model metadata and readiness, and inference, as the Open Inference Protocol says."""

    renderer_classes = [FastJSONRenderer]
    content_negotiation_class = JSONOnlyNegotiation

    @extend_schema(
        operation_id="v2_server_metadata",
        summary="Open Inference Protocol server metadata (group: read).",
        tags=["v2"],
        responses={
            200: {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "version": {"type": "string"},
                    "extensions": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["name", "version", "extensions"],
            },
            **errors(401),
        },
    )
    @requires(READ)
    def server_metadata(self, request):
        """GET /v2: the server's name, version and protocol extensions."""
        return Response({"name": SERVER_NAME, "version": server_version(), "extensions": EXTENSIONS})

    @extend_schema(
        operation_id="v2_model_metadata",
        summary="A model's platform, versions, inputs and outputs; needs allow_remote_inference (group: read).",
        tags=["v2"],
        parameters=[_MODEL_ID],
        responses={
            200: {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "versions": {"type": "array", "items": {"type": "string"}},
                    "platform": {"type": "string", "enum": sorted(PLATFORMS.values())},
                    "inputs": {"type": "array", "items": _TENSOR_METADATA},
                    "outputs": {"type": "array", "items": _TENSOR_METADATA},
                },
                "required": ["name", "versions", "platform", "inputs", "outputs"],
            },
            **errors(400, 401, 403, 404),
        },
    )
    @requires(READ)
    def model_metadata(self, request, model_id, version=None):
        """GET /v2/models/<id>: platform, versions, and the inputs and outputs the archive records."""
        return Response(orjson.Fragment(_described(model_id, version)))

    @extend_schema(
        operation_id="v2_model_ready",
        summary="200 once the model is loaded; needs allow_remote_inference (group: read).",
        tags=["v2"],
        parameters=[_MODEL_ID],
        responses={
            200: {
                "type": "object",
                "properties": {"name": {"type": "string"}, "ready": {"type": "boolean", "enum": [True]}},
                "required": ["name", "ready"],
            },
            **errors(400, 401, 403, 404),
        },
    )
    @requires(READ)
    def model_ready(self, request, model_id, version=None):
        """GET /v2/models/<id>/ready: 200 once the model is loaded (this loads it, warming the cache)."""
        _described(model_id, version)
        return Response({"name": model_id, "ready": True})

    @extend_schema(
        operation_id="v2_infer",
        summary="Run the model on v2 tensors (group: inference). The body is JSON whatever its Content-Type,"
        " maybe followed by binary tensor data (Inference-Header-Content-Length says where the JSON ends).",
        tags=["v2"],
        parameters=[_MODEL_ID],
        request={"application/json": _INFER_REQUEST},
        examples=[
            OpenApiExample(
                "One FP32 row",
                value={"inputs": [{"name": "input__0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
                request_only=True,
            )
        ],
        responses={
            (200, "application/json"): _INFER_RESPONSE,
            (200, "application/octet-stream"): OpenApiResponse(
                {"type": "string", "format": "binary"},
                description="When an output asked for binary_data: the JSON response (its length in"
                " Inference-Header-Content-Length), then the outputs' raw bytes.",
            ),
            **errors(400, 401, 403, 404, 411, 413, 415),
        },
    )
    @requires(INFERENCE)
    def infer(self, request, model_id, version=None):
        """POST /v2/models/<id>/infer: run the model on v2 tensors and answer v2 tensors."""
        model = _runnable_model(model_id, version)
        headers = {
            "content_encoding": request.headers.get("Content-Encoding"),
            "header_length": request.headers.get(HEADER_LENGTH),
        }
        outcome = executor.run("v2_infer", model, headers, [request.body])
        outcome.raise_for_error()
        response = HttpResponse(outcome.payload, content_type=outcome.content_type)
        if HEADER_LENGTH in outcome.headers:
            response[HEADER_LENGTH] = outcome.headers[HEADER_LENGTH]
        return response


def _runnable_model(model_id: str, version: str | None) -> ModelRef:
    """The model behind an id (and version), under the inference permission."""
    model = services.model_for_inference(model_id=check_object_id(model_id, "model_id"))
    if version is not None and version != MODEL_VERSION:
        raise NotFound(f"Model version not found: hosted models have the one version {MODEL_VERSION}.")
    return model


def _described(model_id: str, version: str | None) -> bytes:
    """The model's metadata (JSON), from an inference process that loads it (and keeps it for inference)."""
    outcome = executor.run("v2_metadata", _runnable_model(model_id, version), {}, [])
    outcome.raise_for_error()
    return outcome.payload
