"""Encrypted-model registrations and the seed's /search-encrypted-models: parse, call a service, answer."""

import json

from django.urls import reverse
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import exceptions, status, viewsets
from rest_framework.response import Response

from gridnode.auth import READ, WRITE, requires
from gridnode.errors import BadRequest
from gridnode.http import check_object_id
from gridnode.schema import EXAMPLE_ENCRYPTED_MODEL_ID, errors, id_parameter
from smpc_app import registrations
from smpc_app.serializers import INVALID_PAYLOAD, EncryptedModelSerializer, RegisterBody, SearchBody

_URLS = {"type": "array", "items": {"type": "string", "format": "uri"}}
_MODEL_ID = id_parameter("model_id", EXAMPLE_ENCRYPTED_MODEL_ID, "The encrypted model's id")
_INVALID_PAYLOAD = 'Not JSON, no `model_id`, or not a string: `{"error": "Invalid payload format"}`.'


class EncryptedModelViewSet(viewsets.ViewSet):
    """Register, list, show and delete encrypted models, and tell clients where their pieces are."""

    @extend_schema(
        operation_id="register_encrypted_model",
        summary="Register a model's workers and crypto provider(s) (group: write).",
        tags=["encrypted models"],
        request=RegisterBody,
        examples=[
            OpenApiExample(
                "Two workers and a crypto provider",
                value={
                    "model_id": "shared-2",
                    "workers": ["http://alice:5000", "http://bob:5000"],
                    "crypto_provider": ["http://crypto:5000"],
                    "description": "a shared model",
                },
                request_only=True,
                media_type="application/json",
            )
        ],
        responses={201: EncryptedModelSerializer, **errors(400, 401, 409, 411, 413, 415)},
    )
    @requires(WRITE)
    def create(self, request):
        """POST /encrypted-models: register a model's workers and crypto provider(s)."""
        body = RegisterBody.parse(request.data)
        model_id = body["model_id"]
        registration = registrations.encrypted_model_register(
            model_id=model_id,
            workers=body["workers"],
            crypto_provider=body["crypto_provider"],
            description=body["description"],
        )
        location = reverse("encrypted-model", kwargs={"model_id": model_id})
        return Response(
            EncryptedModelSerializer(registration).data, status=status.HTTP_201_CREATED, headers={"Location": location}
        )

    @extend_schema(
        operation_id="list_encrypted_models",
        summary="Every registration, oldest first (group: read).",
        tags=["encrypted models"],
        responses={
            200: {
                "type": "object",
                "properties": {
                    "encrypted_models": {"type": "array", "items": {"$ref": "#/components/schemas/EncryptedModel"}}
                },
                "required": ["encrypted_models"],
            },
            **errors(401),
        },
    )
    @requires(READ)
    def list(self, request):
        """GET /encrypted-models: every registration, oldest first."""
        every = registrations.encrypted_models()
        return Response({"encrypted_models": EncryptedModelSerializer(every, many=True).data})

    @extend_schema(
        operation_id="get_encrypted_model",
        summary="One registration (group: read).",
        tags=["encrypted models"],
        parameters=[_MODEL_ID],
        responses={200: EncryptedModelSerializer, **errors(400, 401, 404)},
    )
    @requires(READ)
    def retrieve(self, request, model_id):
        """GET /encrypted-models/<id>: one registration."""
        registration = registrations.encrypted_model_get(model_id=check_object_id(model_id, "model_id"))
        return Response(EncryptedModelSerializer(registration).data)

    @extend_schema(
        operation_id="delete_encrypted_model",
        summary="Remove a registration (group: write).",
        tags=["encrypted models"],
        parameters=[_MODEL_ID],
        responses={204: OpenApiResponse(description="Deleted."), **errors(400, 401, 404)},
    )
    @requires(WRITE)
    def destroy(self, request, model_id):
        """DELETE /encrypted-models/<id>: remove a registration (the worker nodes themselves are not told)."""
        registrations.encrypted_model_delete(model_id=check_object_id(model_id, "model_id"))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        operation_id="search_encrypted_models",
        summary="The worker and crypto-provider URLs of a model, in registration order (group: read).",
        tags=["encrypted models"],
        request=SearchBody,
        examples=[
            OpenApiExample(
                "A registered id",
                value={"model_id": EXAMPLE_ENCRYPTED_MODEL_ID},
                request_only=True,
                media_type="application/json",
            )
        ],
        responses={
            200: {
                "type": "object",
                "properties": {"workers": _URLS, "crypto_provider": _URLS},
                "required": ["workers", "crypto_provider"],
            },
            **errors(400, 401, 404, 411, 413, e400=_INVALID_PAYLOAD),
        },
    )
    @requires(READ)
    def search(self, request):
        """POST /search-encrypted-models: the worker and crypto-provider URLs of a model, in order."""
        model_id = SearchBody.parse(_search_body(request))["model_id"]
        nodes = registrations.encrypted_model_nodes(model_id=model_id)
        return Response({"workers": nodes.workers, "crypto_provider": nodes.crypto_provider})


# Bodies DRF parses as forms; every other body (JSON, or no Content-Type at all) is read as JSON.
_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def _search_body(request):
    """The parsed search body: a form as DRF parses it, anything else as JSON whatever its Content-Type.

    Grid gateways forward this body raw with no Content-Type (requests' `data=`), as for /search.
    """
    try:
        if request.content_type.split(";", 1)[0].strip().lower() in _FORM_TYPES:
            return request.data
        # Strict UTF-8, as DRF's JSON parser reads it (json.loads would guess UTF-16 and pass surrogates).
        return json.loads(request.body.decode("utf-8"))
    except (exceptions.ParseError, exceptions.UnsupportedMediaType, ValueError, RecursionError):
        # The contract has one answer for every body that is not what it asks for.
        raise BadRequest(INVALID_PAYLOAD) from None
