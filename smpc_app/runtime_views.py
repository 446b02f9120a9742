"""Encrypted inference endpoints: a client's request to a worker, and the two node-to-node calls.

Bodies are packed SMPC messages (`smpc_protocol.wire`, application/octet-stream), not JSON: they carry
int64 tensors, and a 784-input share is 6 KiB raw. Errors are JSON in the one error shape like
everywhere else.
"""

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
_BUSY_OR_UNSET = (
    "This node has no GRIDNODE_SMPC_SECRET, or is running GRIDNODE_SMPC_MAX_SESSIONS evaluations per process."
)
_UNKNOWN_FORMAT = "An unknown ?format= (json and smpc are known)."
_MODEL_ID = id_parameter("model_id", EXAMPLE_ENCRYPTED_MODEL_ID, "The encrypted model's id")


def _message_response(raw: bytes) -> HttpResponse:
    return HttpResponse(raw, content_type=MESSAGE_TYPE)


class MessageRenderer(renderers.BaseRenderer):
    """Lets clients ask for `Accept: application/octet-stream`, what these endpoints answer."""

    media_type = MESSAGE_TYPE
    format = "smpc"
    charset = None
    render_style = "binary"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data


class EncryptedInferenceViewSet(viewsets.ViewSet):
    """Run an encrypted model: the client's entry point on each worker, and the workers' own calls."""

    renderer_classes = [*api_settings.DEFAULT_RENDERER_CLASSES, MessageRenderer]

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
            **errors(400, 401, 403, 404, 409, 411, 413, 502, 503, 504, e503=_BUSY_OR_UNSET),
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
            **errors(400, 401, 403, 404, 409, 411, 413, 503),
        },
    )
    @requires(NODES)
    def deal(self, request, model_id):
        """POST /encrypted-models/<id>/randomness: one worker's half of a session's randomness."""
        body = request.body
        nodeauth.verify_request(request, body)
        model_id = check_object_id(model_id, "model_id")
        return _message_response(runtime.provider_deal(model_id=model_id, body=body))

    @extend_schema(
        operation_id="exchange_smpc_round",
        summary="Party 0's message for one round, answered with party 1's (signed node-to-node call).",
        tags=["encrypted models"],
        request=_MESSAGE,
        responses={
            (200, MESSAGE_TYPE): OpenApiResponse({"type": "string", "format": "binary"}, "Party 1's message."),
            **errors(400, 401, 404, 409, 411, 413, 502, 503, 504, e404=_UNKNOWN_FORMAT),
        },
    )
    @requires(NODES)
    def exchange(self, request):
        """POST /smpc/exchange: pass party 0's message to this node's evaluation and answer its reply."""
        body = request.body
        nodeauth.verify_request(request, body)
        return _message_response(channels.deliver(session_id=runtime.message_session_id(body), message=body))
