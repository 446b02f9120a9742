"""The seed's model endpoints: parse the request, call a service, answer in the contract's shape."""

import codecs
import json

import orjson
from django.conf import settings
from django.http import FileResponse
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import renderers, viewsets
from rest_framework.response import Response

from gridnode.auth import DOWNLOAD, INFERENCE, READ, WRITE, requires
from gridnode.errors import BadRequest
from gridnode.http import LATIN1, FastJSONRenderer, check_object_id, encode_bytes, is_upload, parse_encoding
from gridnode.schema import EXAMPLE_MODEL_ID, error_with, errors, id_parameter
from gridnode.uploads import limit_file_parts
from models_app import inference, services
from models_app.archives import PLAN
from models_app.serializers import DeleteModelBody, InferenceBody, ServeModelBody


class ArchiveRenderer(renderers.BaseRenderer):
    """Lets `Accept: application/octet-stream` (or `?format=bin`) select the raw archive download.

    It renders nothing but an archive: offered on any other action, DRF would pick it for those requests
    and render a JSON answer as the concatenation of its keys (`successstatusprediction`), with a 200.
    """

    media_type = "application/octet-stream"
    format = "bin"
    charset = None
    render_style = "binary"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data


def _message(text: str) -> dict:
    return {
        "type": "object",
        "properties": {"success": {"type": "boolean", "enum": [True]}, "message": {"type": "string"}},
        "required": ["success", "message"],
        "description": text,
    }


_PREDICTION = {
    "type": "object",
    "properties": {
        "success": {"type": "boolean", "enum": [True]},
        "status": {"type": "boolean", "enum": [True]},
        "prediction": {
            "description": "Nested JSON arrays for JSON data (NaN and infinity as null); torch.save bytes as"
            " text under the request's encoding for serialized data; a list of outputs with all_outputs.",
        },
    },
    "required": ["success", "status", "prediction"],
}
_MODEL_ID = id_parameter("model_id", EXAMPLE_MODEL_ID, "The model's id")
_NOT_SUCCESS = error_with(success=False)
# DRF reads `?format=` on this view to pick its renderer: json everywhere, bin only on the archive download
# (HostedModelViewSet.get_renderers); any other value is a 404.
_MODEL_OR_FORMAT = "No model with this id, or an unknown ?format= (only json is known)."
_MODEL_OR_DOWNLOAD_FORMAT = "No model with this id, or an unknown ?format= (json and bin are known)."
_NOT_SUCCESS_NOR_STATUS = error_with(success=False, status=False)
# A chunked body is refused before Django (gridnode.uploads), in the plain error shape.
_CHUNKED = errors(411)
_UNKNOWN_FORMAT_NOT_SUCCESS = errors(404, schema=_NOT_SUCCESS, e404="An unknown ?format= (only json is known).")


class HostedModelViewSet(viewsets.ViewSet):
    """Serve, list, delete, download and run the models hosted on this node."""

    # Both are declared so that every answer says `Vary: Accept` (DRF adds it for more than one renderer
    # class, and the inference fast path's answer carries it too); get_renderers narrows them per action.
    renderer_classes = [FastJSONRenderer, ArchiveRenderer]
    # Every error answer carries `"success": false` beside the seed's `error` (the inference action adds
    # `"status": false`): the 2019 PyGrid client reads `success` before `error` (gridnode.errors adds them).
    error_fields = {"success": False}

    def get_renderers(self):
        """JSON on every action; the raw archive as well only where an archive is answered (the download).

        Elsewhere `?format=bin` is then DRF's 404 for an unknown format, and `Accept:
        application/octet-stream` its 406, as for any format or type that JSON cannot satisfy.
        """
        if getattr(self, "action", None) == "download":
            return super().get_renderers()
        return [FastJSONRenderer()]

    @extend_schema(
        operation_id="serve_model",
        summary="Store a TorchScript (jit) or torch.export (plan) archive under a new id (group: write).",
        tags=["models"],
        request=ServeModelBody,
        responses={
            200: _message("Model saved with id: <id>"),
            **errors(400, 401, 409, 413, 415, schema=_NOT_SUCCESS),
            **_CHUNKED,
            **_UNKNOWN_FORMAT_NOT_SUCCESS,
        },
    )
    @requires(WRITE)
    def serve(self, request):
        """POST /serve-model: store a TorchScript or torch.export archive under a new id."""
        limit_file_parts(request, limit=settings.GRIDNODE_MAX_MODEL_BYTES, what="model")
        body = ServeModelBody.parse(request.data)
        model_id, model, model_type = body["model_id"], body["model"], body["model_type"]
        services.model_id_available(model_id=model_id)
        if is_upload(model):
            staged = _stage_file_part(model, encoding=body["encoding"], model_type=model_type)
        else:
            staged = services.archive_stage(content=model, model_type=model_type)
        services.model_serve(
            model_id=model_id,
            staged=staged,
            allow_download=body["allow_download"],
            allow_remote_inference=body["allow_remote_inference"],
            uploaded_by=request.user,
        )
        return Response({"success": True, "message": f"Model saved with id: {model_id}"})

    @extend_schema(
        operation_id="delete_model",
        summary="Delete a model and its archive (group: write).",
        tags=["models"],
        request=DeleteModelBody,
        responses={
            200: _message("Model deleted with success!"),
            **errors(400, 401, 404, 413, 415, schema=_NOT_SUCCESS, e404=_MODEL_OR_FORMAT),
            **_CHUNKED,
        },
    )
    @requires(WRITE)
    def remove(self, request):
        """POST /delete-model: remove a model and its archive."""
        model_id = DeleteModelBody.parse(request.data)["model_id"]
        services.model_delete(model_id=model_id)
        return Response({"success": True, "message": "Model deleted with success!"})

    @extend_schema(
        operation_id="list_models",
        summary="The ids of every hosted model, oldest first (group: read).",
        tags=["models"],
        responses={
            200: {
                "type": "object",
                "properties": {
                    "success": {"type": "boolean", "enum": [True]},
                    "models": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["success", "models"],
            },
            **errors(401, schema=_NOT_SUCCESS),
            **_UNKNOWN_FORMAT_NOT_SUCCESS,
        },
    )
    @requires(READ)
    def list(self, request):
        """GET /models: the ids of every hosted model."""
        return Response({"success": True, "models": services.model_ids()})

    @extend_schema(
        operation_id="is_model_copy_allowed",
        summary="Whether the owner lets others download the model (group: read).",
        tags=["models"],
        parameters=[_MODEL_ID],
        responses={
            200: {
                "type": "object",
                "properties": {"success": {"type": "boolean", "enum": [True]}},
                "required": ["success"],
            },
            **errors(400, 401, 403, schema=_NOT_SUCCESS),
            **errors(404, schema=_NOT_SUCCESS, e404=_MODEL_OR_FORMAT),
        },
    )
    @requires(READ)
    def copy_allowed(self, request, model_id):
        """GET /is_model_copy_allowed/<id>: whether the owner lets others download the model."""
        services.model_for_download(model_id=check_object_id(model_id, "model_id"))
        return Response({"success": True})

    @extend_schema(
        operation_id="get_model",
        summary="Download a model's archive: text in JSON, or raw with Accept: application/octet-stream"
        " (group: download).",
        tags=["models"],
        parameters=[
            _MODEL_ID,
            OpenApiParameter(
                "encoding",
                str,
                description="How the archive is made text: ISO-8859-1 (default) or base64.",
                enum=["ISO-8859-1", "latin-1", "latin1", "base64"],
            ),
        ],
        responses={
            (200, "application/json"): OpenApiResponse(
                {
                    "type": "object",
                    "properties": {"serialized_model": {"type": "string"}},
                    "required": ["serialized_model"],
                },
                description="The archive's exact bytes as text under the encoding.",
            ),
            (200, "application/octet-stream"): OpenApiResponse(
                {"type": "string", "format": "binary"}, description="The archive's exact bytes."
            ),
            **errors(400, 401, 403, 404, schema=_NOT_SUCCESS, e404=_MODEL_OR_DOWNLOAD_FORMAT),
        },
    )
    @requires(DOWNLOAD)
    def download(self, request, model_id):
        """GET /get_model/<id>: the archive, as text in JSON or raw with Accept: application/octet-stream."""
        hosted = services.model_for_download(model_id=check_object_id(model_id, "model_id"))
        if request.accepted_renderer.format == ArchiveRenderer.format:
            suffix = ".pt2" if hosted.kind == PLAN else ".pt"
            # The type is stated: guessed from the file name, a .pt archive was application/vnd.snesdev-page-table.
            return FileResponse(
                hosted.open_stored(),
                as_attachment=True,
                filename=f"{hosted.model_id}{suffix}",
                content_type=ArchiveRenderer.media_type,
            )
        encoding = parse_encoding(request.query_params.get("encoding") or LATIN1, allow_json=False)
        raw = hosted.read_stored()
        # ASCII-escaped (`\u00e9`), as the old node's json.dumps answered: the 2019 client decodes the answer
        # as ISO-8859-1, and raw UTF-8 came back to it as a corrupt archive.
        return Response({"serialized_model": orjson.Fragment(json.dumps(encode_bytes(raw, encoding)).encode())})

    @extend_schema(
        operation_id="run_inference",
        summary="Run the model on the caller's data and answer its prediction (group: inference).",
        tags=["models"],
        parameters=[_MODEL_ID],
        request=InferenceBody,
        examples=[
            OpenApiExample(
                "One row as JSON",
                value={"data": [[1, 2, 3, 4]]},
                request_only=True,
                media_type="application/json",
            )
        ],
        responses={
            200: _PREDICTION,
            # Every error the view answers adds success and status false (error_fields, requires).
            **errors(400, 401, 403, 413, 415, schema=_NOT_SUCCESS_NOR_STATUS),
            **_CHUNKED,
            **errors(404, schema=_NOT_SUCCESS_NOR_STATUS, e404=_MODEL_OR_FORMAT),
        },
    )
    @requires(INFERENCE, status=False)
    def infer(self, request, model_id):
        """POST /model/<id>: run the model on the caller's data and answer its prediction."""
        # A multipart part is read into memory to run the model, like a JSON body: the same bound.
        limit_file_parts(request, limit=settings.GRIDNODE_MAX_BODY_BYTES, what="inference data")
        # A request the fast path ran and that failed comes here with its outcome: the model runs once.
        ran = request.META.get(inference.FAST_PATH_OUTCOME)
        return Response(inference.answer(model_id=model_id, body=lambda: _inference_body(request), ran=ran))


def _stage_file_part(upload, *, encoding, model_type: str | None) -> services.StagedArchive:
    """A multipart file part as an archive; with `encoding=ISO-8859-1` beside it, when it is not an archive
    as sent, as the UTF-8 encoding of the archive's latin-1 text.

    The 2019 PyGrid client sent models over 100 MB that way (a MultipartEncoder part holding the latin-1
    text, which it encodes as UTF-8) and its node decoded it back. The part is transcoded while it is
    staged, chunk by chunk, never held whole; the part's own size limit and the model limit stay.
    """
    try:
        return services.archive_stage(upload=upload, model_type=model_type)
    except BadRequest as refused:
        if not encoding or parse_encoding(encoding, allow_json=False) != LATIN1:
            raise
        try:
            return services.archive_stage(upload=_Utf8OfLatin1(upload), model_type=model_type)
        except (BadRequest, UnicodeError):
            raise refused from None  # neither: the refusal of the part as sent


class _Utf8OfLatin1:
    """A file part read as UTF-8 text and encoded as ISO-8859-1, in chunks (see `_stage_file_part`)."""

    def __init__(self, upload):
        self.upload = upload

    def chunks(self):
        decoder = codecs.getincrementaldecoder("utf-8")()
        for chunk in self.upload.chunks():
            yield decoder.decode(chunk).encode("latin-1")
        yield decoder.decode(b"", final=True).encode("latin-1")


def _inference_body(request) -> tuple[dict, list[bytes]]:
    """The request's data for the inference process: a JSON body as it came (the process parses it, under
    its memory cap, never this one), any other body as DRF parsed it."""
    if request.content_type.split(";", 1)[0].strip().lower() == "application/json":
        return inference.json_body(request._request.body, charset=request._request.encoding)
    return inference.form_body(request.data)
