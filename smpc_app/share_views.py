"""This node's part of an encrypted model at /encrypted-models/<model_id>/share: parse, call a service, answer."""

import io

import torch
from django.conf import settings
from django.http import FileResponse
from django.urls import reverse
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import renderers, status, viewsets
from rest_framework.response import Response

from gridnode.auth import DOWNLOAD, READ, WRITE, requires
from gridnode.errors import BadRequest
from gridnode.http import BASE64, FastJSONRenderer, check_object_id, encode_bytes, is_upload
from gridnode.schema import EXAMPLE_ENCRYPTED_MODEL_ID, errors, id_parameter
from gridnode.uploads import limit_file_parts
from smpc_app import shares
from smpc_app.serializers import ModelShareSerializer, SharePermissionsBody, UploadShareBody
from smpc_protocol.hosting import expected_part_shapes
from smpc_protocol.spec import ModelSpec


class ShareBytesRenderer(renderers.BaseRenderer):
    """Lets a client that sends `Accept: application/octet-stream` reach the raw download."""

    media_type = "application/octet-stream"
    format = "bin"
    charset = None
    render_style = "binary"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        """The bytes as they are (the download answers a FileResponse; this only makes the type acceptable)."""
        return data


def _example_spec() -> dict:
    """The spec of a small model (Linear 4->3, ReLU, Linear 3->2), as clients send it."""
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    return ModelSpec.from_sequential(module, (4,)).to_json()


def _example_provider_part(spec: dict) -> str:
    """A crypto provider's part for `spec` (masks of zeros), torch.save bytes as base64: a valid upload."""
    shapes = expected_part_shapes(ModelSpec.from_json(spec), "crypto_provider")
    buffer = io.BytesIO()
    torch.save({name: torch.zeros(shape, dtype=torch.int64) for name, shape in shapes.items()}, buffer)
    return encode_bytes(buffer.getvalue(), BASE64)


# A real part in the document's example, so that generated requests (tests/schema) reach the happy path.
_EXAMPLE_SPEC = _example_spec()
_MODEL_ID = id_parameter("model_id", EXAMPLE_ENCRYPTED_MODEL_ID, "The encrypted model's id")
_NOT_FOUND = "No registration with this id, or no share of it on this node (the error says which)."


class EncryptedModelShareViewSet(viewsets.ViewSet):
    """Upload, show, re-permission, download and delete this node's part of an encrypted model."""

    def get_renderers(self):
        """JSON everywhere; the download also takes `Accept: application/octet-stream`."""
        if getattr(self, "action", None) == "data":
            return [FastJSONRenderer(), ShareBytesRenderer()]
        return super().get_renderers()

    @extend_schema(
        operation_id="upload_encrypted_model_share",
        summary="Store this node's part of a registered encrypted model, checked against its spec (group: write).",
        tags=["encrypted models"],
        parameters=[_MODEL_ID],
        request=UploadShareBody,
        examples=[
            OpenApiExample(
                "The crypto provider's part of a small model",
                value={
                    "role": "crypto_provider",
                    "spec": _EXAMPLE_SPEC,
                    "encoding": "base64",
                    "share": _example_provider_part(_EXAMPLE_SPEC),
                    "allow_remote_inference": True,
                },
                request_only=True,
                media_type="application/json",
            )
        ],
        responses={201: ModelShareSerializer, **errors(400, 401, 404, 409, 411, 413, 415, e404=_NOT_FOUND)},
    )
    @requires(WRITE)
    def create(self, request, model_id):
        """POST /encrypted-models/<id>/share: store this node's part of the model."""
        limit_file_parts(request, limit=settings.GRIDNODE_MAX_MODEL_BYTES, what="share")
        model_id = check_object_id(model_id, "model_id")
        body = UploadShareBody.parse(request.data)
        part = body["share"]
        share = shares.share_store(
            model_id=model_id,
            role=body["role"],
            party=body["party"],
            spec_json=body["spec"],
            upload=part if is_upload(part) else None,
            content=None if is_upload(part) else part,
            allow_remote_inference=body["allow_remote_inference"],
            allow_download=body["allow_download"],
            uploaded_by=request.user,
        )
        location = reverse("encrypted-model-share", kwargs={"model_id": model_id})
        return Response(
            ModelShareSerializer(share).data, status=status.HTTP_201_CREATED, headers={"Location": location}
        )

    @extend_schema(
        operation_id="get_encrypted_model_share",
        summary="What this node holds of an encrypted model: role, party, spec, size, permissions (group: read).",
        tags=["encrypted models"],
        parameters=[_MODEL_ID],
        responses={200: ModelShareSerializer, **errors(400, 401, 404, e404=_NOT_FOUND)},
    )
    @requires(READ)
    def retrieve(self, request, model_id):
        """GET /encrypted-models/<id>/share: the share's metadata (never its bytes)."""
        share = shares.share_get(model_id=check_object_id(model_id, "model_id"))
        return Response(ModelShareSerializer(share).data)

    @extend_schema(
        operation_id="update_encrypted_model_share",
        summary="Change who may run or download the share; a flag left out keeps its value (group: write).",
        tags=["encrypted models"],
        parameters=[_MODEL_ID],
        request=SharePermissionsBody,
        examples=[
            OpenApiExample(
                "Allow inference",
                value={"allow_remote_inference": True},
                request_only=True,
                media_type="application/json",
            )
        ],
        responses={200: ModelShareSerializer, **errors(400, 401, 404, 411, 413, 415, e404=_NOT_FOUND)},
    )
    @requires(WRITE)
    def partial_update(self, request, model_id):
        """PATCH /encrypted-models/<id>/share: set allow_remote_inference and/or allow_download."""
        model_id = check_object_id(model_id, "model_id")
        body = SharePermissionsBody.parse(request.data)
        if body["allow_remote_inference"] is None and body["allow_download"] is None:
            raise BadRequest("Send 'allow_remote_inference', 'allow_download' or both.")
        share = shares.share_set_permissions(
            model_id=model_id,
            allow_remote_inference=body["allow_remote_inference"],
            allow_download=body["allow_download"],
        )
        return Response(ModelShareSerializer(share).data)

    @extend_schema(
        operation_id="download_encrypted_model_share",
        summary="The share's stored bytes (torch.save), if its owner allows downloads (group: download).",
        tags=["encrypted models"],
        parameters=[_MODEL_ID],
        responses={
            (200, "application/octet-stream"): OpenApiResponse(
                {"type": "string", "format": "binary"}, description="The part's exact bytes, as uploaded."
            ),
            **errors(400, 401, 403, 404, e404=f"{_NOT_FOUND} Or an unknown ?format= (json and bin are known)."),
        },
    )
    @requires(DOWNLOAD)
    def data(self, request, model_id):
        """GET /encrypted-models/<id>/share/data: the part's bytes, streamed from storage."""
        share = shares.share_for_download(model_id=check_object_id(model_id, "model_id"))
        # The type is stated: guessed from the file name, a .pt file was application/vnd.snesdev-page-table.
        return FileResponse(
            share.open_stored(),
            as_attachment=True,
            filename=f"{share.registration.model_id}.share.pt",
            content_type=ShareBytesRenderer.media_type,
        )

    @extend_schema(
        operation_id="delete_encrypted_model_share",
        summary="Delete this node's part of an encrypted model and its file; the registration stays (group: write).",
        tags=["encrypted models"],
        parameters=[_MODEL_ID],
        responses={204: OpenApiResponse(description="Deleted."), **errors(400, 401, 404, e404=_NOT_FOUND)},
    )
    @requires(WRITE)
    def destroy(self, request, model_id):
        """DELETE /encrypted-models/<id>/share: remove the share (its file goes once the deletion commits)."""
        shares.share_delete(model_id=check_object_id(model_id, "model_id"))
        return Response(status=status.HTTP_204_NO_CONTENT)
