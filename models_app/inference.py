"""One inference request, from its parsed body to the answer the contract gives, shared by the DRF
view (`POST /model/<id>`) and the WSGI fast path in front of it (models_app/fastpath.py)."""

import json
from collections.abc import Callable

import torch
from django.conf import settings

from gridnode.errors import BadRequest, GridError
from gridnode.http import (
    JSON,
    LATIN1,
    body_field,
    check_object_id,
    decode_text,
    encode_bytes,
    is_upload,
    parse_bool,
    parse_encoding,
)
from gridnode.tensors import dump_tensors, load_tensors, tensor_from_json, tensor_to_json
from models_app import services
from models_app.archives import LoadedModel


def answer(*, model_id: str, body: Callable[[], object]) -> dict:
    """The success body for running a model on a request's data; errors carry `success`/`status` false.

    `body` parses the request lazily, so an unknown or private model is a 404/403 whatever was sent.
    """
    try:
        loaded = services.model_for_inference(model_id=check_object_id(model_id, "model_id"))
        data = body()
        all_outputs = parse_bool(body_field(data, "all_outputs"), "all_outputs")
        inputs, encoding = inference_inputs(data, loaded)
        for position, tensor in enumerate(inputs):
            if tensor.dim() > 0:
                batch_check(rows=tensor.shape[0], what="'data'" if len(inputs) == 1 else f"Input {position} of 'data'")
        output = loaded.run(inputs, all_outputs=all_outputs)
        prediction = prediction_payload(output, encoding)
    except GridError as exc:
        exc.fields.update(success=False, status=False)
        raise
    return {"success": True, "status": True, "prediction": prediction}


def batch_check(*, rows: int, what: str) -> None:
    """A 400 when an input has more rows (its first dimension) than GRIDNODE_MAX_INFERENCE_BATCH allows."""
    limit = settings.GRIDNODE_MAX_INFERENCE_BATCH
    if rows > limit:
        raise BadRequest(f"{what} has {rows} rows, over this node's batch size limit of {limit} rows per inference.")


def inference_inputs(data, loaded: LoadedModel) -> tuple[list, str]:
    """The model's input tensors from `data`, and the encoding the prediction should answer in."""
    value = body_field(data, "data")
    if value is None or value == "":
        raise BadRequest("'data' is required.")
    encoding = parse_encoding(body_field(data, "encoding"), allow_json=True)
    if is_upload(value):
        return _as_inputs(load_tensors(value.read(), "data")), encoding if encoding != JSON else LATIN1
    if encoding != JSON:
        if not isinstance(value, str):
            raise BadRequest(f"'data' must be text under the {encoding} encoding.")
        return _as_inputs(load_tensors(decode_text(value, encoding, "data"), "data")), encoding
    if isinstance(value, str):
        # Forms carry the JSON array as text.
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
            raise BadRequest("'data' is neither a JSON array nor text under an 'encoding'.") from None
    # JSON numbers carry no dtype: follow the archive's declared input dtypes (torch.export states
    # them), else float32, what models take far more often than integers.
    dtypes = [dtype or torch.float32 for dtype in loaded.input_dtypes]
    if loaded.input_count > 1:
        if not isinstance(value, list) or len(value) != loaded.input_count:
            raise BadRequest(
                f"This model takes {loaded.input_count} inputs: send 'data' as a list of that many arrays."
            )
        tensors = [tensor_from_json(item, "data", dtype) for item, dtype in zip(value, dtypes, strict=True)]
    else:
        tensors = [tensor_from_json(value, "data", dtypes[0] if dtypes else torch.float32)]
    return tensors, JSON


def _as_inputs(value) -> list:
    return value if isinstance(value, list) else [value]


def prediction_payload(output, encoding: str):
    """The model's output in the form the data came in: nested JSON lists or encoded torch.save bytes."""
    if encoding == JSON:
        try:
            return tensor_to_json(output)
        except TypeError:
            raise BadRequest("The model's output is not tensors, so it cannot be sent as JSON.") from None
    return encode_bytes(dump_tensors(output), encoding)
