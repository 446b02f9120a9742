"""The Open Inference Protocol (KServe v2) REST endpoints over the hosted models.

Stock v2 clients (`tritonclient[http]`, KServe's) speak to the node without glue. Tensor names follow
api.md: a TorchScript model's tensors are `input__N` / `output__N` (Triton's PyTorch convention); a
torch.export model's are the names in its export signature, and `input__N` / `output__N` work too.

Permissions are those of `POST /model/<id>`: model metadata, model readiness and inference all need
`allow_remote_inference` (404 for an unknown id, 403 when not allowed), so a private model's inputs and
outputs are not shown to callers who may not run it.

A request body is JSON whatever its Content-Type says (stock clients send none), optionally followed by
raw tensor bytes (Triton's binary tensor data extension, which tritonclient uses by default): the
`Inference-Header-Content-Length` header then says where the JSON ends.
"""

import math
import tomllib
import zlib
from dataclasses import dataclass
from functools import cache
from weakref import WeakKeyDictionary

import numpy as np
import orjson
import torch
from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import viewsets
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.response import Response

from gridnode.auth import INFERENCE, READ, requires
from gridnode.errors import BadRequest, GridError, NotFound, PayloadTooLarge
from gridnode.http import FastJSONRenderer, check_object_id
from gridnode.schema import EXAMPLE_MODEL_ID, errors, id_parameter
from models_app import executor, services
from models_app.archives import PLAN, LoadedModel
from models_app.executor import ModelRef
from models_app.inference import answer_bytes, answer_size_check, batch_check

SERVER_NAME = "gridnode"
EXTENSIONS = ["binary_tensor_data"]
HEADER_LENGTH = "Inference-Header-Content-Length"
# Hosted models have one version each; v2 clients that name a version must name this one.
MODEL_VERSION = "1"
PLATFORMS = {PLAN: "pytorch_export", "jit": "pytorch_torchscript"}
# What the metadata says for a tensor whose archive does not record it (TorchScript records neither
# dtypes nor shapes): FP32, the datatype the node assumes for untyped data, and "any shape".
UNDECLARED_DATATYPE = "FP32"
UNDECLARED_SHAPE = (-1,)


@dataclass(frozen=True)
class Datatype:
    """A v2 tensor datatype and how it maps onto torch and numpy."""

    name: str
    torch: torch.dtype
    numpy: np.dtype | None  # None for BF16, which numpy lacks
    itemsize: int
    json_kinds: str  # numpy dtype kinds accepted from JSON data
    json_words: str

    @property
    def bounds(self) -> tuple[int, int] | None:
        if self.numpy is None or self.numpy.kind not in "iu":
            return None
        info = np.iinfo(self.numpy)
        return int(info.min), int(info.max)


def _datatypes() -> dict[str, Datatype]:
    numbers, integers = ("iuf", "numbers"), ("iu", "whole numbers")
    table = [
        ("BOOL", torch.bool, np.dtype(np.bool_), ("b", "true/false values")),
        ("UINT8", torch.uint8, np.dtype(np.uint8), integers),
        ("INT8", torch.int8, np.dtype(np.int8), integers),
        ("INT16", torch.int16, np.dtype(np.int16), integers),
        ("INT32", torch.int32, np.dtype(np.int32), integers),
        ("INT64", torch.int64, np.dtype(np.int64), integers),
        ("FP16", torch.float16, np.dtype(np.float16), numbers),
        ("FP32", torch.float32, np.dtype(np.float32), numbers),
        ("FP64", torch.float64, np.dtype(np.float64), numbers),
        ("BF16", torch.bfloat16, None, numbers),
    ]
    return {
        name: Datatype(name, dtype, np_dtype, torch.empty(0, dtype=dtype).element_size(), *json_rule)
        for name, dtype, np_dtype, json_rule in table
    }


DATATYPES = _datatypes()
DATATYPE_BY_TORCH = {datatype.torch: datatype for datatype in DATATYPES.values()}
DATATYPE_NAMES = ", ".join(DATATYPES)


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as the metadata describes it; `declared` is whether the archive said so."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    declared: bool

    def as_json(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Signature:
    """A model's inputs and outputs, and the names each may be called by (own name or `input__N`)."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def input_position(self, name) -> int | None:
        return _position(name, self.inputs, "input__")

    def output_position(self, name, count: int) -> int | None:
        position = _position(name, self.outputs, "output__")
        return position if position is not None and position < count else None

    def output_name(self, position: int) -> str:
        return self.outputs[position].name if position < len(self.outputs) else f"output__{position}"

    def names(self, specs: tuple[TensorSpec, ...]) -> str:
        return ", ".join(spec.name for spec in specs) or "none"


def _position(name, specs: tuple[TensorSpec, ...], prefix: str) -> int | None:
    if not isinstance(name, str):
        return None
    for position, spec in enumerate(specs):
        if spec.name == name:
            return position
    if name.startswith(prefix) and name[len(prefix) :].isdigit():
        position = int(name[len(prefix) :])
        # Outputs past the metadata's count (a model may return more than its schema shows) are allowed.
        return position if position < len(specs) or prefix == "output__" else None
    return None


# Keyed by the loaded module, so an entry goes when the model cache lets the model go.
_signatures: "WeakKeyDictionary[torch.nn.Module, Signature]" = WeakKeyDictionary()


def model_signature(loaded: LoadedModel) -> Signature:
    """The inputs and outputs of a loaded model, as far as its archive records them."""
    signature = _signatures.get(loaded.module)
    if signature is None:
        signature = _plan_signature(loaded.module) if loaded.kind == PLAN else _jit_signature(loaded.module)
        _signatures[loaded.module] = signature
    return signature


def _jit_signature(module) -> Signature:
    schema = module.forward.schema
    inputs = tuple(
        TensorSpec(f"input__{position}", UNDECLARED_DATATYPE, UNDECLARED_SHAPE, declared=False)
        for position in range(len(schema.arguments) - 1)  # less `self`
    )
    returned = schema.returns[0].type if len(schema.returns) == 1 else None
    count = len(returned.elements()) if isinstance(returned, torch.TupleType) else max(len(schema.returns), 1)
    outputs = tuple(
        TensorSpec(f"output__{position}", UNDECLARED_DATATYPE, UNDECLARED_SHAPE, declared=False)
        for position in range(count)
    )
    return Signature(inputs, outputs)


def _plan_signature(module: torch.nn.Module) -> Signature:
    # The unlifted program keeps torch.export's placeholder metadata: the signature's input names as
    # targets, and a fake tensor with dtype and shape (symbolic dimensions where export made them dynamic).
    inputs, outputs = [], []
    for node in module.graph.nodes:
        if node.op == "placeholder":
            inputs.append(_spec(str(node.target), node.meta.get("val")))
        elif node.op == "output":
            returned = node.args[0] if node.args else ()
            for position, value in enumerate(returned if isinstance(returned, list | tuple) else [returned]):
                if isinstance(value, torch.fx.Node):
                    outputs.append(_spec(value.name, value.meta.get("val")))
                else:
                    outputs.append(_spec(f"output__{position}", None))
    return Signature(tuple(inputs), tuple(outputs))


def _spec(name: str, value) -> TensorSpec:
    datatype = DATATYPE_BY_TORCH.get(getattr(value, "dtype", None))
    if not isinstance(value, torch.Tensor) or datatype is None:
        return TensorSpec(name, UNDECLARED_DATATYPE, UNDECLARED_SHAPE, declared=False)
    shape = tuple(size if isinstance(size, int) else -1 for size in value.shape)
    return TensorSpec(name, datatype.name, shape, declared=True)


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


def infer_answer(loaded: LoadedModel, model_id: str, headers: dict, blobs: list[bytes]) -> tuple[int, str, dict, bytes]:
    """In an inference process: v2 tensors in, the model run, v2 tensors out (status, type, headers, body)."""
    body, binary = _read_request(blobs[0], headers.get("content_encoding"), headers.get("header_length"))
    signature = model_signature(loaded)
    inputs = _input_tensors(body, binary, signature, loaded)
    outputs = loaded.run(inputs, all_outputs=True)
    return _infer_answer(model_id, body, signature, outputs)


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
    return 200, "application/json", {}, orjson.dumps(metadata)


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
    return tensors


def _datatype(value, spec: TensorSpec) -> Datatype:
    datatype = DATATYPES.get(value) if isinstance(value, str) else None
    if datatype is None:
        raise BadRequest(f"Input {spec.name}: 'datatype' must be one of {DATATYPE_NAMES}.")
    if spec.declared and datatype.name != spec.datatype:
        raise BadRequest(f"Input {spec.name} is {spec.datatype} for this model; send it as {spec.datatype}.")
    return datatype


def _shape(value, spec: TensorSpec) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value):
        raise BadRequest(f"Input {spec.name}: 'shape' must be a list of sizes (whole numbers, 0 or more).")
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
            f"Input {spec.name}: shape {list(shape)} of {datatype.name} takes {count * datatype.itemsize} bytes, "
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
        raise BadRequest(f"Input {spec.name}: shape {list(shape)} holds {count} values, 'data' holds {array.size}.")
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
        entry = {"name": name, "datatype": datatype.name, "shape": list(tensor.shape)}
        if binary:
            raw = (tensor.view(torch.int16) if datatype.numpy is None else tensor).numpy().tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = tensor.reshape(-1).tolist()
        entries.append(entry)
    result = {"model_name": model_id, "model_version": MODEL_VERSION}
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
