"""The Open Inference Protocol (KServe v2) in an inference process: a request's tensors decoded, the model
run, its outputs encoded; and a model's metadata (models_app/executor_pool.py runs these).

A request body is JSON, optionally followed by raw tensor bytes (Triton's binary tensor data extension,
which tritonclient uses by default): the `Inference-Header-Content-Length` header then says where the
JSON ends.
"""

import math
import zlib
from typing import cast

import numpy as np
import orjson
import torch
from django.conf import settings

from gridnode.errors import BadRequest, GridError, PayloadTooLarge
from models_app.archives import LoadedModel
from models_app.inference import answer_bytes, answer_size_check, batch_check
from models_app.v2_signatures import (
    DATATYPE_BY_TORCH,
    DATATYPE_NAMES,
    DATATYPES,
    PLATFORMS,
    Datatype,
    Signature,
    TensorSpec,
    model_signature,
)

HEADER_LENGTH = "Inference-Header-Content-Length"
# Hosted models have one version each; v2 clients that name a version must name this one.
MODEL_VERSION = "1"


def infer_answer(loaded: LoadedModel, model_id: str, headers: dict, blobs: list[bytes]) -> tuple[int, str, dict, bytes]:
    """In an inference process: v2 tensors in, the model run, v2 tensors out (status, type, headers, body)."""
    body, binary = _read_request(blobs[0], headers.get("content_encoding"), headers.get("header_length"))
    signature = model_signature(loaded)
    inputs = _input_tensors(body, binary, signature, loaded)
    outputs = loaded.run(inputs, all_outputs=True)
    return _infer_answer(model_id, body, signature, outputs)


def metadata_answer(loaded: LoadedModel, model_id: str, body: dict, blobs: list[bytes]) -> tuple[int, str, dict, bytes]:
    """In an inference process: platform, versions, and the inputs and outputs the archive records."""
    signature = model_signature(loaded)
    metadata = {
        "name": model_id,
        "versions": [MODEL_VERSION],
        "platform": PLATFORMS[loaded.kind],
        "inputs": [spec.as_json() for spec in signature.inputs],
        "outputs": [spec.as_json() for spec in signature.outputs],
    }
    # A 5 KB archive whose forward returns a tuple of 200,000 tensors described itself in 11 MB.
    rendered = orjson.dumps(metadata)
    answer_size_check(len(rendered))
    return 200, "application/json", {}, rendered


def _read_request(raw: bytes, content_encoding: str | None, header_length: str | None) -> tuple[dict, memoryview]:
    """The JSON part of an inference request and the binary tensor bytes after it (maybe none)."""
    raw = _decompressed_body(raw, content_encoding)
    view = memoryview(raw)
    if header_length is None:
        header, binary = view, view[len(view) :]
    else:
        try:
            length = int(header_length)
        except ValueError:
            length = -1
        if not 0 <= length <= len(raw):
            raise BadRequest(f"{HEADER_LENGTH} must be the length in bytes of the body's JSON part.")
        header, binary = view[:length], view[length:]
    try:
        body = orjson.loads(header)
    except orjson.JSONDecodeError:
        raise BadRequest("The body is not a JSON inference request.") from None
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object with 'inputs'.")
    return body, binary


def _decompressed_body(raw: bytes, content_encoding: str | None) -> bytes:
    """The request body, inflated when tritonclient compressed it (Content-Encoding gzip or deflate)."""
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "deflate"):
        raise GridError("Content-Encoding must be gzip, deflate or absent.", status=415)
    limit = settings.GRIDNODE_MAX_BODY_BYTES
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
    try:
        body = inflater.decompress(raw, limit + 1)
    except zlib.error:
        raise BadRequest(f"The body is not valid {encoding} data.") from None
    if len(body) > limit:
        raise PayloadTooLarge(f"The inflated body is larger than this node accepts ({limit} bytes).")
    if not inflater.eof:
        raise BadRequest(f"The {encoding} body is truncated.")
    return body


def _input_tensors(body: dict, binary: memoryview, signature: Signature, loaded: LoadedModel) -> list[torch.Tensor]:
    """The model's inputs, in its order, from the request's named v2 tensors."""
    items = body.get("inputs")
    if not isinstance(items, list) or not items:
        raise BadRequest("'inputs' must be a non-empty list of tensors.")
    tensors: list[torch.Tensor | None] = [None] * len(signature.inputs)
    offset = 0
    for item in items:
        if not isinstance(item, dict):
            raise BadRequest("Every entry of 'inputs' must be an object with name, shape, datatype and data.")
        position = signature.input_position(item.get("name"))
        if position is None:
            raise BadRequest(
                "Every input must be named after one of this model's inputs: "
                f"{signature.names(signature.inputs)} (or input__0, input__1, ... by position)."
            )
        spec = signature.inputs[position]
        if tensors[position] is not None:
            raise BadRequest(f"Input {spec.name} is given twice.")
        datatype = _datatype(item.get("datatype"), spec)
        shape = _shape(item.get("shape"), spec)
        if shape:
            batch_check(rows=shape[0], what=f"Input {spec.name}")
        parameters = _parameters(item, f"input {spec.name}")
        size = parameters.get("binary_data_size")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= len(binary) - offset:
                raise BadRequest(f"Input {spec.name}: binary_data_size does not fit the bytes after the JSON part.")
            tensors[position] = _tensor_from_bytes(binary[offset : offset + size], datatype, shape, spec)
            offset += size
        else:
            tensors[position] = _tensor_from_json(item.get("data"), datatype, shape, spec)
    missing = [spec.name for spec, tensor in zip(signature.inputs, tensors, strict=True) if tensor is None]
    if missing:
        raise BadRequest(f"Input {missing[0]} is missing: this model takes {signature.names(signature.inputs)}.")
    if offset != len(binary):
        raise BadRequest("The body has more binary data than the inputs' binary_data_size values add up to.")
    return cast(list[torch.Tensor], tensors)  # none is missing


def _datatype(value, spec: TensorSpec) -> Datatype:
    datatype = DATATYPES.get(value) if isinstance(value, str) else None
    if datatype is None:
        raise BadRequest(f"Input {spec.name}: 'datatype' must be one of {DATATYPE_NAMES}.")
    if spec.declared and datatype.name != spec.datatype:
        raise BadRequest(f"Input {spec.name} is {spec.datatype} for this model; send it as {spec.datatype}.")
    return datatype


# What a tensor's shape may be: numpy's most dimensions, and at most 2**56 elements (counting the non-zero
# sizes, so an empty tensor cannot declare sizes no array has; numpy refuses (0, 2**60) of FP64, whose bytes
# would pass 2**63). Unbounded, 100,000 dimensions of 2**63 - 1 took `math.prod` 35 s in an inference
# process (past its deadline) for a 2 MB request, and shapes numpy or torch cannot make failed inside the
# node (500s).
MAX_DIMENSIONS = 64
MAX_ELEMENTS = 2**56


def _shape(value, spec: TensorSpec) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value):
        raise BadRequest(f"Input {spec.name}: 'shape' must be a list of sizes (whole numbers, 0 or more).")
    if len(value) > MAX_DIMENSIONS:
        raise BadRequest(f"Input {spec.name}: 'shape' has more than {MAX_DIMENSIONS} dimensions.")
    elements = 1
    for size in value:
        elements *= max(size, 1)
        if elements > MAX_ELEMENTS:
            raise BadRequest(f"Input {spec.name}: 'shape' is larger than any tensor ({MAX_ELEMENTS} elements at most).")
    shape = tuple(value)
    if spec.declared and (
        len(shape) != len(spec.shape) or any(want not in (-1, got) for want, got in zip(spec.shape, shape, strict=True))
    ):
        raise BadRequest(f"Input {spec.name} has shape {list(spec.shape)} for this model (-1: any size).")
    return shape


def _parameters(item: dict, what: str) -> dict:
    parameters = item.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise BadRequest(f"The {what}: 'parameters' must be an object.")
    for unsupported, extension in (("shared_memory_region", "shared memory"), ("classification", "classification")):
        if unsupported in parameters:
            raise BadRequest(f"The {what} asks for the {extension} extension, which this node does not offer.")
    return parameters


def _tensor_from_bytes(raw: memoryview, datatype: Datatype, shape: tuple[int, ...], spec: TensorSpec) -> torch.Tensor:
    """A tensor from raw little-endian element bytes (the binary tensor data extension)."""
    count = math.prod(shape)
    if len(raw) != count * datatype.itemsize:
        raise BadRequest(
            f"Input {spec.name}: its shape of {datatype.name} takes {count * datatype.itemsize} bytes, "
            f"binary_data_size says {len(raw)}."
        )
    if count == 0:
        return torch.empty(shape, dtype=datatype.torch)
    # A writable copy: torch would share (and warn about) the read-only request buffer otherwise.
    return torch.frombuffer(bytearray(raw), dtype=datatype.torch).reshape(shape)


def _tensor_from_json(data, datatype: Datatype, shape: tuple[int, ...], spec: TensorSpec) -> torch.Tensor:
    """A tensor from a v2 `data` array, flat or nested in row-major order."""
    if not isinstance(data, list):
        raise BadRequest(f"Input {spec.name}: 'data' must be a JSON array, flat or nested.")
    try:
        array = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        raise BadRequest(f"Input {spec.name}: 'data' must be a rectangular array of {datatype.json_words}.") from None
    count = math.prod(shape)
    if array.size != count:
        raise BadRequest(f"Input {spec.name}: its shape holds {count} values, 'data' holds {array.size}.")
    if count and array.dtype.kind not in datatype.json_kinds:
        raise BadRequest(f"Input {spec.name}: {datatype.name} data must be {datatype.json_words}.")
    bounds = datatype.bounds
    if count and bounds is not None and (array.min() < bounds[0] or array.max() > bounds[1]):
        raise BadRequest(f"Input {spec.name}: a value is outside the range of {datatype.name}.")
    if datatype.numpy is None:
        return torch.from_numpy(array.astype(np.float32).reshape(shape)).to(datatype.torch)
    with np.errstate(over="ignore"):  # a float too large for FP16/FP32 becomes infinity, as a cast does
        array = array.astype(datatype.numpy, copy=False)
    return torch.from_numpy(np.ascontiguousarray(array).reshape(shape))


def _requested_outputs(body: dict, signature: Signature, count: int) -> list[tuple[int, str, bool]]:
    """Which outputs to answer, in order, under which name, and whether each goes as binary data.

    An output asked for by an alias (`output__N`) answers under that alias, so the caller finds it.
    """
    parameters = _parameters(body, "request")
    binary_default = parameters.get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise BadRequest("'binary_data_output' must be true or false.")
    requested = body.get("outputs")
    if requested is None:
        return [(position, signature.output_name(position), binary_default) for position in range(count)]
    if not isinstance(requested, list) or not requested:
        raise BadRequest("'outputs' must be a non-empty list of objects with a name.")
    chosen = []
    names = ", ".join(signature.output_name(position) for position in range(count))
    for item in requested:
        position = signature.output_position(item.get("name"), count) if isinstance(item, dict) else None
        if position is None:
            raise BadRequest(
                f"Every requested output must be named after one of this model's outputs: {names} "
                "(or output__0, output__1, ... by position)."
            )
        binary = _parameters(item, f"output {signature.output_name(position)}").get("binary_data", binary_default)
        if not isinstance(binary, bool):
            raise BadRequest("An output's 'binary_data' must be true or false.")
        chosen.append((position, item["name"], binary))
    return chosen


def _infer_answer(model_id: str, body: dict, signature: Signature, outputs: list) -> tuple[int, str, dict, bytes]:
    """The v2 inference answer: JSON, followed by binary tensor data when any output asked for it."""
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("'id' must be a string.")
    entries, blobs = [], []
    chosen = _requested_outputs(body, signature, len(outputs))
    answer_size_check(sum(answer_bytes(outputs[position], json_numbers=not binary) for position, _, binary in chosen))
    for position, name, binary in chosen:
        tensor = outputs[position]
        if not isinstance(tensor, torch.Tensor):
            raise BadRequest(f"The model's output {name} is not a tensor, so v2 cannot carry it.")
        datatype = DATATYPE_BY_TORCH.get(tensor.dtype)
        if datatype is None:
            raise BadRequest(f"The model's output {name} is {tensor.dtype}, which v2 cannot carry.")
        tensor = tensor.detach().cpu().contiguous()
        entry: dict[str, object] = {"name": name, "datatype": datatype.name, "shape": list(tensor.shape)}
        if binary:
            raw = (tensor.view(torch.int16) if datatype.numpy is None else tensor).numpy().tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = tensor.reshape(-1).tolist()
        entries.append(entry)
    result: dict[str, object] = {"model_name": model_id, "model_version": MODEL_VERSION}
    if request_id is not None:
        result["id"] = request_id
    result["outputs"] = entries
    header = orjson.dumps(result)
    if not blobs:
        answer_size_check(len(header))
        return 200, "application/json", {}, header
    payload = b"".join([header, *blobs])
    answer_size_check(len(payload))
    return 200, "application/octet-stream", {HEADER_LENGTH: str(len(header))}, payload
