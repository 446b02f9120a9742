"""Encrypted-model registrations and the seed's /search-encrypted-models: parse, call a service, answer."""

from django.http import QueryDict
from django.urls import reverse
from rest_framework import exceptions, status, viewsets
from rest_framework.response import Response

from gridnode.auth import READ, WRITE, requires
from gridnode.errors import BadRequest
from gridnode.http import body_field, check_object_id
from smpc_app import services
from smpc_app.serializers import EncryptedModelSerializer

INVALID_PAYLOAD = "Invalid payload format"


def _list_field(data, name: str):
    """A list field of a JSON object, or every value of a repeated form field (None when absent)."""
    if isinstance(data, QueryDict):
        return data.getlist(name) if name in data else None
    return body_field(data, name)


def _description(data) -> str:
    """The optional description: a string, empty when absent."""
    value = body_field(data, "description")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest("'description' must be a string.")
    return value


class EncryptedModelViewSet(viewsets.ViewSet):
    """Register, list, show and delete encrypted models, and tell clients where their pieces are."""

    @requires(WRITE)
    def create(self, request):
        """POST /encrypted-models: register a model's workers and crypto provider(s)."""
        data = request.data
        model_id = check_object_id(body_field(data, "model_id"), "model_id")
        registration = services.encrypted_model_register(
            model_id=model_id,
            workers=_list_field(data, "workers"),
            crypto_provider=_list_field(data, "crypto_provider"),
            description=_description(data),
        )
        location = reverse("encrypted-model", kwargs={"model_id": model_id})
        return Response(
            EncryptedModelSerializer(registration).data, status=status.HTTP_201_CREATED, headers={"Location": location}
        )

    @requires(READ)
    def list(self, request):
        """GET /encrypted-models: every registration, oldest first."""
        registrations = services.encrypted_models()
        return Response({"encrypted_models": EncryptedModelSerializer(registrations, many=True).data})

    @requires(READ)
    def retrieve(self, request, model_id):
        """GET /encrypted-models/<id>: one registration."""
        registration = services.encrypted_model_get(model_id=check_object_id(model_id, "model_id"))
        return Response(EncryptedModelSerializer(registration).data)

    @requires(WRITE)
    def destroy(self, request, model_id):
        """DELETE /encrypted-models/<id>: remove a registration (the worker nodes themselves are not told)."""
        services.encrypted_model_delete(model_id=check_object_id(model_id, "model_id"))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @requires(READ)
    def search(self, request):
        """POST /search-encrypted-models: the worker and crypto-provider URLs of a model, in order."""
        try:
            data = request.data
        except (exceptions.ParseError, exceptions.UnsupportedMediaType):
            # The contract has one answer for every body that is not what it asks for.
            raise BadRequest(INVALID_PAYLOAD) from None
        model_id = data.get("model_id") if isinstance(data, dict) else None
        if not isinstance(model_id, str):
            raise BadRequest(INVALID_PAYLOAD)
        nodes = services.encrypted_model_nodes(model_id=model_id)
        return Response({"workers": nodes.workers, "crypto_provider": nodes.crypto_provider})
