"""One inference request, from its parsed body to the answer the contract gives, shared by the DRF
view (`POST /model/<id>`) and the WSGI fast path in front of it (models_app/fastpath.py).

The web side (`answer`) checks the model id and its permission, then hands the request's data to an
inference process (models_app/executor.py); the inference side (`predict`, and `v2.infer_answer` for the
Open Inference Protocol) parses it, runs the model and renders the prediction there, under that
process's deadline and memory cap.
"""

import json
from collections.abc import Callable

import orjson
import torch
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.utils.encoders import JSONEncoder

from gridnode.errors import BadRequest, GridError
from gridnode.http import (
    JSON,
    LATIN1,
    ascii_json,
    body_field,
    check_object_id,
    decode_text,
    encode_bytes,
    is_upload,
    parse_bool,
    parse_encoding,
)
from gridnode.tensors import dump_tensors, load_tensors, tensor_from_json, tensor_to_json
from models_app import executor, services
from models_app.archives import LoadedModel

ANSWER_TOO_LARGE_STATUS = 422


# The WSGI environ key under which the fast path hands Django the outcome of a request it ran and that
# failed, so Django answers the error without running the model again (a client cannot set such a key).
FAST_PATH_OUTCOME = "gridnode.inference_outcome"


def answer(*, model_id: str, body: Callable[[], tuple[dict, list[bytes]]], ran: executor.Outcome | None = None) -> dict:
    """The success body for running a model on a request's data (its errors get `success`/`status` false
    from the view's declared error fields).

    `body` gives the request's data as an inference process reads it (`json_body`, `form_body`), lazily,
    so an unknown or private model is a 404/403 whatever was sent. The prediction comes back rendered.
    `ran` is the outcome of this very request when it already ran (see FAST_PATH_OUTCOME).
    """
    outcome = ran
    if outcome is None:
        model = services.model_for_inference(model_id=check_object_id(model_id, "model_id"))
        request_body, blobs = body()
        outcome = executor.run("predict", model, request_body, blobs)
    outcome.raise_for_error()
    return {"success": True, "status": True, "prediction": orjson.Fragment(outcome.payload)}


def json_body(raw: bytes, *, charset: str | None = None) -> tuple[dict, list[bytes]]:
    """A JSON request body as it travels to an inference process (parsed there, in its `charset`)."""
    return {"json": 0, "charset": charset}, [raw]


def form_body(data) -> tuple[dict, list[bytes]]:
    """A parsed body (JSON object, form or multipart) as it travels to an inference process.

    Form fields keep the last value of each name (what `body_field` reads); file parts travel as bytes.
    """
    try:
        if not hasattr(data, "get") or not hasattr(data, "keys"):
            return {"value": 0}, [json.dumps(data).encode()]
        fields, files, blobs = {}, {}, [b""]
        for name in data:
            value = data.get(name)
            if is_upload(value):
                files[name] = len(blobs)
                blobs.append(value.read())
            else:
                fields[name] = value
        blobs[0] = json.dumps(fields).encode()
    except RecursionError:  # within the parser's depth, past the encoder's
        raise BadRequest("'data' is nested too deeply.") from None
    return {"fields": 0, "files": files}, blobs


def _request_data(body: dict, blobs: list[bytes]):
    """The inference side: the request's data as the view parsed it (see `json_body`, `form_body`)."""
    if "json" in body:
        raw, charset = blobs[body["json"]], body.get("charset")
        try:
            if charset and charset.lower().replace("_", "-") not in ("utf-8", "utf8"):
                raw = raw.decode(charset).encode()
            return orjson.loads(raw)
        except (orjson.JSONDecodeError, LookupError, UnicodeError):
            raise BadRequest("The request body could not be parsed as its Content-Type says.") from None
    if "value" in body:
        return json.loads(blobs[body["value"]])
    data = json.loads(blobs[body["fields"]])
    for name, index in (body.get("files") or {}).items():
        data[name] = SimpleUploadedFile(name, blobs[index])
    return data


def predict(loaded: LoadedModel, model_id: str, body: dict, blobs: list[bytes]) -> tuple[int, str, dict, bytes]:
    """The inference side of `answer`: parse the data, run the model, render the prediction (JSON bytes)."""
    data = _request_data(body, blobs)
    all_outputs = parse_bool(body_field(data, "all_outputs"), "all_outputs")
    inputs, encoding = inference_inputs(data, loaded)
    for position, tensor in enumerate(inputs):
        if tensor.dim() > 0:
            batch_check(rows=tensor.shape[0], what="'data'" if len(inputs) == 1 else f"Input {position} of 'data'")
    output = loaded.run(inputs, all_outputs=all_outputs)
    answer_size_check(answer_bytes(output, json_numbers=encoding == JSON))
    # ASCII-escaped: torch.save bytes as ISO-8859-1 text read right whatever charset the client decodes
    # the answer in (JSON numbers are ASCII already, and come back as orjson renders them).
    rendered = ascii_json(orjson.dumps(prediction_payload(output, encoding), default=JSONEncoder().default))
    answer_size_check(len(rendered))
    return 200, "application/json", {}, rendered


# What one number of a tensor may take in a JSON answer ("-1.2345678901234567e-05," is 24): counted before
# rendering, so a JSON answer past the cap is refused without being built (rendering one several times the
# cap, orjson asked for more memory than the inference's cap and crashed its process).
JSON_BYTES_PER_NUMBER = 20


def answer_bytes(value, *, json_numbers: bool = False) -> int:
    """What an answer takes: rendered bytes, or tensors before rendering (their bytes, or
    JSON_BYTES_PER_NUMBER a number when they will be rendered as JSON)."""
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, torch.Tensor):
        return value.numel() * (JSON_BYTES_PER_NUMBER if json_numbers else value.element_size())
    if isinstance(value, list | tuple):
        return sum(answer_bytes(item, json_numbers=json_numbers) for item in value)
    if isinstance(value, dict):
        return sum(answer_bytes(item, json_numbers=json_numbers) for item in value.values())
    return 0


def answer_size_check(size: int) -> None:
    """A 422 when an answer of `size` bytes (see `answer_bytes`) is over GRIDNODE_MAX_ANSWER_BYTES."""
    limit = settings.GRIDNODE_MAX_ANSWER_BYTES
    if size > limit:
        raise GridError(
            f"The model's answer would be larger than this node sends ({limit} bytes, GRIDNODE_MAX_ANSWER_BYTES).",
            status=ANSWER_TOO_LARGE_STATUS,
        )


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


def _v2_infer(loaded: LoadedModel, model_id: str, body: dict, blobs: list[bytes]) -> tuple[int, str, dict, bytes]:
    from models_app import v2_inference  # it imports this module

    return v2_inference.infer_answer(loaded, model_id, body, blobs)


def _v2_metadata(loaded: LoadedModel, model_id: str, body: dict, blobs: list[bytes]) -> tuple[int, str, dict, bytes]:
    from models_app import v2_inference

    return v2_inference.metadata_answer(loaded, model_id, body, blobs)


# What an inference process can be asked to do (models_app/executor_pool.py): name -> function of the
# loaded model, its id, the request's body and blobs, answering (status, content type, headers, payload).
OPERATIONS = {"predict": predict, "v2_infer": _v2_infer, "v2_metadata": _v2_metadata}
