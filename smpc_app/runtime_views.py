"""Encrypted inference endpoints: a client's request to a worker, and the two node-to-node calls.

Bodies are packed SMPC messages (`smpc_protocol.wire`, application/octet-stream), not JSON: they carry
int64 tensors, and a 784-input share is 6 KiB raw. Errors are JSON in the one error shape like
everywhere else.
"""

from typing import cast

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import renderers, viewsets
from rest_framework.settings import api_settings

from gridnode.auth import INFERENCE, NODES, requires
from gridnode.http import check_object_id
from gridnode.schema import EXAMPLE_ENCRYPTED_MODEL_ID, errors, id_parameter
from smpc_app import channels, nodeauth, runtime

MESSAGE_TYPE = "application/octet-stream"
_MESSAGE = {MESSAGE_TYPE: {"type": "string", "format": "binary"}}
_BUSY = "This node is running GRIDNODE_SMPC_MAX_SESSIONS evaluations per process: try again shortly."
_UNKNOWN_FORMAT = "An unknown ?format= (json and smpc are known)."
_MODEL_ID = id_parameter("model_id", EXAMPLE_ENCRYPTED_MODEL_ID, "The encrypted model's id")


def _message_response(raw: bytes) -> HttpResponse:
    return HttpResponse(raw, content_type=MESSAGE_TYPE)


def _content_length(request) -> int | None:
    value = request.META.get("CONTENT_LENGTH") or ""
    return int(value) if value.isascii() and value.isdigit() and len(value) < 16 else None


def _signed_label(request, purpose: str, limit: int) -> nodeauth.MessageLabel:
    """The request's checked label, from its headers alone (the body is not read yet)."""
    return nodeauth.check_request(
        purpose=purpose,
        header=request.headers.get(nodeauth.MESSAGE_HEADER, ""),
        signature=request.headers.get(nodeauth.SIGNATURE_HEADER, ""),
        content_length=_content_length(request),
        limit=limit,
    )


def _signed_body(request, label: nodeauth.MessageLabel) -> bytes:
    body = request.body
    nodeauth.check_body(label, body)
    return body


def _signed_response(request, raw: bytes) -> HttpResponse:
    response = _message_response(raw)
    signature = request.headers.get(nodeauth.SIGNATURE_HEADER, "")
    for name, value in nodeauth.sign_reply(request_signature=signature, status=200, body=raw).items():
        response[name] = value
    return response


class MessageRenderer(renderers.BaseRenderer):
    """Lets clients ask for `Accept: application/octet-stream`, what these endpoints answer."""

    media_type = MESSAGE_TYPE
    format = "smpc"
    charset = None
    render_style = "binary"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data


# DRF has imported the setting's dotted names into classes by now; the stubs type the setting as the names.
DEFAULT_RENDERERS = cast("list[type[renderers.BaseRenderer]]", api_settings.DEFAULT_RENDERER_CLASSES)


class EncryptedInferenceViewSet(viewsets.ViewSet):
    """Run an encrypted model: the client's entry point on each worker, and the workers' own calls."""

    renderer_classes = [*DEFAULT_RENDERERS, MessageRenderer]

    @extend_schema(
        operation_id="run_encrypted_inference",
        summary="Evaluate this worker's share of an encrypted model on the client's input share (group: inference).",
        description=(
            "The body is a packed SMPC message holding `x` (this worker's share of the input, int64, "
            "[batch, *input_shape]) with meta `session` (32 hex characters, fresh per inference) and optionally "
            "`party`. The answer holds `y`, this worker's share of the output, with meta `rounds`, `bytes_sent` "
            "and `bytes_received` (this answer not counted). `gridclient` does all of this "
            "(README: Encrypted inference)."
        ),
        tags=["encrypted models"],
        parameters=[_MODEL_ID],
        request=_MESSAGE,
        responses={
            (200, MESSAGE_TYPE): OpenApiResponse({"type": "string", "format": "binary"}, "This worker's output share."),
            **errors(400, 401, 403, 404, 409, 411, 413, 502, 503, 504, e503=_BUSY),
        },
    )
    @requires(INFERENCE)
    def evaluate(self, request, model_id):
        """POST /encrypted-models/<id>/inference: this worker's output share for the client's input share."""
        model_id = check_object_id(model_id, "model_id")
        return _message_response(runtime.worker_evaluate(model_id=model_id, body=request.body))

    @extend_schema(
        operation_id="deal_smpc_randomness",
        summary="The crypto provider's randomness for one worker and session (signed node-to-node call).",
        tags=["encrypted models"],
        parameters=[_MODEL_ID],
        request=_MESSAGE,
        responses={
            (200, MESSAGE_TYPE): OpenApiResponse({"type": "string", "format": "binary"}, "One party's bundle."),
            **errors(400, 401, 403, 404, 409, 411, 413),
        },
    )
    @requires(NODES)
    def deal(self, request, model_id):
        """POST /encrypted-models/<id>/randomness: one worker's half of a session's randomness.

        Judged by its signed headers (sender, recipient, model, session, party) before the body is read.
        """
        label = _signed_label(request, nodeauth.RANDOMNESS, nodeauth.MAX_RANDOMNESS_REQUEST_BYTES)
        model_id = check_object_id(model_id, "model_id")
        runtime.provider_authorize(model_id=model_id, label=label)
        reply = runtime.provider_deal(model_id=model_id, label=label, body=_signed_body(request, label))
        return _signed_response(request, reply)

    @extend_schema(
        operation_id="exchange_smpc_round",
        summary="Party 0's message for one round, answered with party 1's (signed node-to-node call).",
        tags=["encrypted models"],
        request=_MESSAGE,
        responses={
            (200, MESSAGE_TYPE): OpenApiResponse({"type": "string", "format": "binary"}, "Party 1's message."),
            **errors(400, 401, 403, 404, 409, 411, 413, 502, 504, e404=_UNKNOWN_FORMAT),
        },
    )
    @requires(NODES)
    def exchange(self, request):
        """POST /smpc/exchange: pass party 0's message to this node's evaluation and answer its reply.

        The same steps as the WSGI fast path (`smpc_app.fastpath`), which answers most of these.
        """
        label = _signed_label(request, nodeauth.EXCHANGE, settings.GRIDNODE_MAX_BODY_BYTES)
        runtime.exchange_authorize(label)
        reply, reply_headers = channels.deliver(
            label=label,
            header=request.headers.get(nodeauth.MESSAGE_HEADER, ""),
            signature=request.headers.get(nodeauth.SIGNATURE_HEADER, ""),
            read_body=lambda: _signed_body(request, label),
        )
        if not reply_headers:
            return _signed_response(request, reply)
        response = _message_response(reply)
        for name, value in reply_headers.items():
            response[name] = value
        return response
